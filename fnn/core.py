"""The layer protocol: its types (``Layer``, ``Output``, ``Options``, the typed ``VJP``),
``make_layer``, and the checks and example batches every layer shares. ``serial`` and the
other combinators live in :mod:`fnn.combinators`; argument checks in :mod:`fnn.validate`.

The protocol
------------
A layer is a pair of pure functions, made by a constructor such as ``Dense(128)``::

    params = init(key, shape, dtype=np.float32)
    y, vjp = apply(params, x, *, train=False, key=None, state=None, world=None, need_vjp=True)
    dparams, dx = vjp(dy)

``shape`` is the shape of *one example*, without the batch axis; ``x`` carries a
leading batch axis, ``x.shape == (N, *shape)``. ``params`` is a tree of arrays
(nested dicts); a layer without parameters has ``{}``. ``vjp(dy)`` takes the
gradient of a scalar loss with respect to ``y`` and returns ``dparams``, with
exactly the structure of ``params``, and ``dx``, with the shape of ``x``. Its
closure keeps what backward needs and nothing else; it may be called any number
of times and gives the same result each time. ``apply`` and ``vjp`` never
modify their arguments and never read or write global state. In turn, callers
must not modify ``x`` or ``y`` in place while a ``vjp`` that may read them is
alive (a vjp keeps references, not copies, where a copy would cost time).

``vjp(dy, need_dx=False)`` skips the input gradient where that saves work
(Conv2D then never runs col2img) and returns ``dx = None``; ``serial`` then
stops backward at its first layer with parameters. A combinator's vjp lists
its sub-layers' vjps as ``vjp.children``, ``(name, vjp, output ShapeDtype)``
triples, which :func:`fnn.summary` reads. Dense, Conv2D and the combinators
also give their vjp a ``sq_norms(dy)`` attribute: each example's squared norm
of ``dparams`` (see :mod:`fnn.per_example`).

Every ``apply`` takes the same keyword options, and ``serial`` passes them to
every layer it holds: ``train`` selects training behaviour (Dropout masks,
BatchNorm batch statistics); ``key`` is an ``fnn.random`` key for layers that
draw random numbers (``serial`` splits it so each layer gets its own);
``state`` is the layer's non-trainable state (BatchNorm running statistics),
``None`` meaning the layer's initial state in training (in evaluation BatchNorm
refuses it: its running statistics were forgotten; :data:`INITIAL_STATE` asks for
the initial state on purpose); ``check_finite=True`` makes the
first layer whose output holds NaN or inf raise :class:`NonFiniteError` (NaN
otherwise propagates, as in numpy: nothing is ever masked); ``world``, a
:class:`fnn.distributed.World`, says that ``x`` is this rank's shard of a
global batch split across processes (BatchNorm then uses the statistics of the
global batch, Dropout folds the rank into its key); ``need_vjp=False`` is inference:
the caller will not differentiate, so no layer keeps anything for backward (the
returned vjp raises if called) and peak memory is that of the largest single layer,
not the sum (:func:`fnn.predict` runs a model so, in batches); ``key_padding_mask``, a bool
array ``(N, S)``, marks the keys that are padding (``True``: ignored, PyTorch's convention) for
every attention layer inside (:class:`fnn.layers.MultiHeadAttention` checks its shape; every
other layer ignores it). ``apply`` returns an :class:`Output`:
a 2-tuple ``(y, vjp)`` that also has ``.state``, the layer's updated state
(``{}`` for layers without state). State never lives in ``params``, so the
optimizer and weight decay never see it. See ``docs/design.md``.

Each layer declares the inputs it takes (``Layer.inputs``): float32 or float64
arrays (``"float"``, the default; integer, bool, float16 and object arrays raise
``TypeError``), integer index arrays (``"int"``, such as Embedding's; ``dx`` is then
``None``), float arrays or tuples of them (``"tuple"``), or anything a sub-layer
takes (``"any"``, for combinators, which leave the check to their children).
``serial`` takes what its first layer takes. Outputs and gradients keep the input's
dtype.
``docs/errors.md`` catalogues bad inputs and the errors they get.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol, cast

import numpy as np

from fnn import random as _random
from fnn import validate as _validate
from fnn.distributed import World

__all__ = [
    "Layer",
    "Output",
    "Options",
    "Shape",
    "make_layer",
    "NonFiniteError",
    "INITIAL_STATE",
    "InitialState",
    "parameterless",
    "check_params",
    "check_is_layer",
    "is_default",
    "layer_kind",
    "check_no_params",
    "check_cotangent",
    "check_key_padding_mask",
    "ShapeDtype",
    "like",
    "output_shape",
    "batch_of",
    "example_batch",
    "shape_of",
    "is_index_array",
    "INPUT_KINDS",
    "VJP",
    "InspectableVJP",
    "vjp_with",
    "no_vjp",
]

Shape = tuple[int, ...]
"""The shape of one example, without the batch axis (what ``init`` takes)."""


class VJP(Protocol):
    """What ``apply`` returns beside ``y``: ``vjp(dy, need_dx=True) -> (dparams, dx)``."""

    def __call__(self, dy: Any, need_dx: bool = True) -> tuple[Any, Any]: ...


class InspectableVJP(VJP, Protocol):
    """A vjp that also exposes, for :func:`fnn.summary` and :mod:`fnn.per_example`, its
    sub-layers' vjps (``children``: ``(name, vjp, output ShapeDtype)`` triples, for
    combinators) and each example's squared norm of ``dparams`` (``sq_norms(dy) -> (N,)``,
    for Dense, Conv2D and the combinators of them). Either may be absent: read them with
    ``getattr(vjp, "children", ())``."""

    children: list[tuple[str, VJP, Any]]
    sq_norms: Callable[[Any], np.ndarray]


def vjp_with(vjp: Callable[..., tuple[Any, Any]], *, children: list[tuple[str, Any, Any]] | None = None,
             sq_norms: Callable[[Any], np.ndarray] | None = None) -> InspectableVJP:
    """``vjp`` with the :class:`InspectableVJP` attributes that are given set on it."""
    if children is not None:
        setattr(vjp, "children", children)  # noqa: B010 (a function object: setattr keeps mypy honest)
    if sq_norms is not None:
        setattr(vjp, "sq_norms", sq_norms)  # noqa: B010
    return cast(InspectableVJP, vjp)


FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Options(NamedTuple):
    """The keyword options of ``apply``, as passed to a layer's inner apply function."""

    train: bool = False
    key: _random.Key | None = None
    state: Any = None
    check_finite: bool = False
    world: World | None = None
    need_vjp: bool = True
    key_padding_mask: np.ndarray | None = None


def no_vjp(kind: str) -> VJP:
    """The vjp of an output computed with ``need_vjp=False``: it holds nothing, and says so if called."""

    def vjp(dy: Any, need_dx: bool = True) -> tuple[Any, Any]:
        raise ValueError(f"{kind}: this output was computed with need_vjp=False (inference), which keeps nothing "
                         f"for backward; apply again without need_vjp=False to differentiate")

    return vjp


class InitialState:
    """The type of :data:`INITIAL_STATE`."""

    def __repr__(self) -> str:
        return "fnn.INITIAL_STATE"


INITIAL_STATE = InitialState()
"""``state=INITIAL_STATE`` asks every layer for its initial state on purpose (BatchNorm: mean 0,
variance 1), where ``state=None`` in evaluation would be a mistake: the statistics of training
were forgotten."""


class NonFiniteError(ValueError):
    """Raised under ``check_finite=True`` by the first layer whose output has NaN or inf."""


def _count_nonfinite(x: Any) -> tuple[int, int]:
    if isinstance(x, tuple):
        counts = [_count_nonfinite(v) for v in x]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)
    return int(np.isnan(x).sum()), int(np.isinf(x).sum())


def _finite(x: Any) -> bool:
    return all(bool(np.isfinite(v).all()) for v in (x if isinstance(x, tuple) else (x,)))


class Output(tuple):
    """What ``apply`` returns: the pair ``(y, vjp)``, with the updated layer state as ``.state``."""

    state: Any

    def __new__(cls, y: Any, vjp: VJP, state: Any = None) -> Output:
        self = super().__new__(cls, (y, vjp))
        self.state = {} if state is None else state
        return self

    @property
    def y(self) -> Any:
        return self[0]

    @property
    def vjp(self) -> VJP:
        return self[1]


INPUT_KINDS = ("float", "int", "tuple", "any")
"""What a layer may declare it takes (``Layer.inputs``): float arrays, integer index arrays, float
arrays or tuples of them, or anything a sub-layer takes (combinators)."""


class Layer(tuple):
    """A layer: the pair ``(init, apply)``, also reachable as ``.init`` and ``.apply``.

    ``kind`` is a short description such as ``"Dense(128)"`` used in error
    messages and summaries; ``children`` lists ``(name, layer)`` for combinators;
    ``inputs`` is what it takes (one of :data:`INPUT_KINDS`, see the module
    docstring), and ``index_range`` the exclusive upper bound of valid integer
    inputs for an ``"int"`` layer (``None`` otherwise).
    """

    kind: str
    children: tuple[tuple[str, Layer], ...]
    inputs: str
    index_range: int | None

    def __new__(cls, init: Callable[..., Any], apply: Callable[..., Output], kind: str,
                children: Iterable[tuple[str, Layer]] = (), inputs: str = "float",
                index_range: int | None = None) -> Layer:
        self = super().__new__(cls, (init, apply))
        self.kind = kind
        self.children = tuple(children)
        self.inputs = inputs
        self.index_range = index_range
        return self

    @property
    def init(self) -> Callable[..., Any]:
        return self[0]

    @property
    def apply(self) -> Callable[..., Output]:
        return self[1]

    def __repr__(self) -> str:
        return self.kind


def check_key_padding_mask(where: str, mask: Any) -> np.ndarray | None:
    """``mask`` as it is when it is ``None`` or a bool numpy array (a key-padding mask ``(N, S)``,
    ``True`` where a key is padding); ``TypeError`` starting with ``where`` otherwise. Its shape
    is checked where ``N`` and ``S`` are known (``MultiHeadAttention``, :func:`fnn.predict`)."""
    if mask is not None and not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_):
        got = f"an array of dtype {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"{where} must be None or a bool numpy array (N, S), True where a key is padding, got {got}")
    return mask


def is_index_array(x: Any) -> bool:
    """True for a numpy array of integers (not bool): what an ``"int"`` layer takes."""
    return isinstance(x, np.ndarray) and x.dtype.kind in "iu"


def _check_input(x: Any, where: str, inputs: str) -> Any:
    if isinstance(x, tuple):
        if inputs not in ("tuple", "any"):
            raise TypeError(f"{where}: input must be one array, got a tuple of {len(x)}")
        return tuple(_check_input(v, where, "any" if inputs == "any" else "float") for v in x)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: input x must be a numpy array, got {type(x).__name__}")
    if inputs == "int" and not is_index_array(x):
        raise TypeError(f"{where}: input x must be an array of integer indices, got dtype {x.dtype} "
                        f"(cast with x.astype(np.int64) if the values are indices)")
    if inputs != "int" and x.dtype not in FLOAT_DTYPES and not (inputs == "any" and is_index_array(x)):
        raise TypeError(
            f"{where}: input x has dtype {x.dtype}; fnn layers take float32 or float64 "
            f"(cast with x.astype(np.float32))"
        )
    if x.ndim == 0:
        raise ValueError(f"{where}: input x must have a batch axis, got a 0-d array")
    return x


def make_layer(
    kind: str,
    init: Callable[[_random.Key, Any, np.dtype], Any],
    apply: Callable[[Any, Any, Options], Any],
    children: Iterable[tuple[str, Layer]] = (),
    tuple_input: bool = False,
    inputs: str | None = None,
    index_range: int | None = None,
) -> Layer:
    """Build a :class:`Layer` from inner functions, adding the checks every layer shares.

    ``init(key, shape, dtype)`` receives a validated key, shape and dtype (the dtype
    of the params). ``apply(params, x, opts)`` receives an input validated against
    ``inputs`` (one of :data:`INPUT_KINDS`; ``"float"`` by default, ``"tuple"`` when
    ``tuple_input`` is set) and an :class:`Options`, and returns ``(y, vjp)`` or an
    :class:`Output`. ``index_range`` is the bound of valid indices of an ``"int"`` layer.
    """
    inputs = inputs or ("tuple" if tuple_input else "float")
    if inputs not in INPUT_KINDS:
        raise ValueError(f"make_layer({kind}): inputs must be one of {INPUT_KINDS}, got {inputs!r}")

    def layer_init(key: _random.Key, shape: Any, dtype: Any = np.float32) -> Any:
        _validate.key(f"{kind}.init: key", key)
        return init(key, _validate.example_shape(f"{kind}.init", shape), _validate.float_dtype(f"{kind}.init", dtype))

    def layer_apply(params: Any, x: Any, *, train: bool = False, key: _random.Key | None = None,
                    state: Any = None, check_finite: bool = False, world: World | None = None,
                    need_vjp: bool = True, key_padding_mask: np.ndarray | None = None) -> Output:
        train = _validate.boolean(kind, "option train", train)
        need_vjp = _validate.boolean(kind, "option need_vjp", need_vjp)
        check_finite = _validate.boolean(kind, "option check_finite", check_finite)
        x = _check_input(x, kind, inputs)
        if key is not None:
            _validate.key(f"{kind}: option key", key)
        if world is not None:
            _validate.instance(kind, "option world", world, World,
                               "an fnn.distributed.World (fnn.distributed.world()) or None")
        check_key_padding_mask(f"{kind}: option key_padding_mask", key_padding_mask)
        if check_finite and not _finite(x):
            nan, inf = _count_nonfinite(x)
            raise NonFiniteError(f"{kind}: check_finite: the input already has {nan} NaN and {inf} inf values")
        out = apply(params, x, Options(train, key, state, check_finite, world, need_vjp, key_padding_mask))
        out = out if isinstance(out, Output) else Output(*out)
        if not need_vjp:  # drop the closure, and with it everything the layer kept for backward
            out = Output(out[0], no_vjp(kind), out.state)
        if check_finite and not _finite(out[0]):
            nan, inf = _count_nonfinite(out[0])
            raise NonFiniteError(f"{kind}: check_finite: this layer produced {nan} NaN and {inf} inf values "
                                 f"from a finite input")
        return out

    layer_init.__doc__ = f"Initialize the parameters of {kind} for examples of the given shape."
    layer_apply.__doc__ = f"Apply {kind}; returns (y, vjp) with the new state as .state."
    return Layer(layer_init, layer_apply, kind, children, inputs, index_range)


def is_default(value: Any, default: Any) -> bool:
    """Whether an argument is its default: equal and of the same type (``1`` is not ``True``,
    ``np.float64(0.1)`` not ``0.1``), so a kind shows an argument passed in another type."""
    return type(value) is type(default) and bool(value == default)


def layer_kind(name: str, args: Iterable[str], options: Iterable[tuple[str, Any, Any]]) -> str:
    """A layer's ``kind``: ``name(args, option=value, ...)`` with the ``(option, value, default)``
    that are not their default (:func:`is_default`), as ``repr``: ``"Conv2D(6, 5, padding=2)"``."""
    extras = [f"{n}={v!r}" for n, v, default in options if not is_default(v, default)]
    return f"{name}({', '.join([*args, *extras])})"


def check_is_layer(obj: Any, where: str) -> Layer:
    """``obj`` if it is a :class:`Layer`, else a ``TypeError`` naming ``where``; a stax-style
    ``(init, apply)`` pair of plain functions is told how to become one."""
    if isinstance(obj, Layer):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2 and all(callable(f) for f in obj):
        raise TypeError(f"{where}: expected an fnn Layer, got a plain (init, apply) tuple (stax style); make it a "
                        f"Layer with fnn.core.make_layer('MyLayer', init, apply), where init(key, shape, dtype) "
                        f"returns params and apply(params, x, opts) returns (y, vjp)")
    raise TypeError(f"{where}: expected an fnn Layer (made by a constructor such as Dense(3)), "
                    f"got {type(obj).__name__}")


def check_params(kind: str, params: Any, spec: dict[str, Shape], dtype: np.dtype) -> None:
    """Check that ``params`` is a dict with exactly the keys of ``spec``, those shapes and ``dtype``."""
    if not isinstance(params, dict):
        raise TypeError(f"{kind}: params must be a dict with keys {sorted(spec)}, got {type(params).__name__}")
    if set(params) != set(spec):
        raise ValueError(
            f"{kind}: params has keys {sorted(params)} but this layer expects {sorted(spec)} "
            f"(params from a different architecture?)"
        )
    for name, shape in spec.items():
        p = params[name]
        if not isinstance(p, np.ndarray):
            raise TypeError(f"{kind}: params[{name!r}] must be a numpy array, got {type(p).__name__}")
        if p.shape != shape:
            raise ValueError(
                f"{kind}: params[{name!r}] has shape {p.shape} but the input needs {shape} "
                f"(params from a different architecture or init shape?)"
            )
        if p.dtype != dtype:
            raise TypeError(
                f"{kind}: params[{name!r}] has dtype {p.dtype} but x has dtype {dtype}; "
                f"use one dtype (fnn.tree.astype(params, x.dtype))"
            )


class ShapeDtype(NamedTuple):
    """The shape and dtype of an output: what a vjp needs to check its cotangent, without
    keeping the output itself alive."""

    shape: tuple[int, ...]
    dtype: np.dtype


def like(y: Any) -> Any:
    """:class:`ShapeDtype` of an array, or a tuple of them for a tuple."""
    if isinstance(y, tuple):
        return tuple(like(v) for v in y)
    return ShapeDtype(y.shape, y.dtype)


def check_cotangent(kind: str, dy: Any, y: Any) -> Any:
    """Check that ``dy`` has the shape and dtype of ``y`` (an array, a :class:`ShapeDtype`, or a
    tuple of them, element by element); return it."""
    if isinstance(y, tuple) and not isinstance(y, ShapeDtype):
        if not isinstance(dy, tuple) or len(dy) != len(y):
            raise ValueError(f"{kind}.vjp: dy must be a tuple of {len(y)} arrays like the output y")
        return tuple(check_cotangent(kind, d, v) for d, v in zip(dy, y))
    if not isinstance(dy, np.ndarray):
        raise TypeError(f"{kind}.vjp: dy must be a numpy array of shape {y.shape}, got {type(dy).__name__}")
    if dy.shape != y.shape:
        raise ValueError(f"{kind}.vjp: dy has shape {dy.shape} but the output y has shape {y.shape}")
    if dy.dtype != y.dtype:
        raise TypeError(f"{kind}.vjp: dy has dtype {dy.dtype} but the output y has dtype {y.dtype}; "
                        f"pass dy.astype(np.{y.dtype}) (nothing is cast silently)")
    return dy


def check_no_params(kind: str, params: Any) -> None:
    """A parameterless layer must be given ``{}`` as params."""
    if not (isinstance(params, dict) and not params):
        raise ValueError(f"{kind}: has no parameters and expects params {{}}, got {params!r:.80}")


def parameterless(kind: str, forward: Callable[..., tuple[Any, Callable[[Any], Any]]],
                  tuple_input: bool = False, with_options: bool = False) -> Layer:
    """A layer without params from ``forward(x) -> (y, backward)`` where ``backward(dy) -> dx``.

    ``y`` may be an array or a tuple of arrays (``dy`` is checked against it); so
    may ``x`` when ``tuple_input`` is set. With ``with_options`` the forward is
    ``forward(x, opts)`` and sees the :class:`Options` (``train``, ``key``, ``world``).
    """

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
        return {}

    def apply(params: Any, x: np.ndarray, opts: Options) -> Any:
        check_no_params(kind, params)
        y, backward = forward(x, opts) if with_options else forward(x)
        out = like(y)

        def vjp(dy: Any, need_dx: bool = True) -> tuple[dict[str, Any], Any]:
            dy = check_cotangent(kind, dy, out)
            return {}, backward(dy) if need_dx else None

        return y, vjp

    return make_layer(kind, init, apply, tuple_input=tuple_input)


def batch_of(shape: Any, dtype: Any, batch_size: int = 1, key: _random.Key | None = None,
             index_range: int | None = None) -> Any:
    """A batch for examples of ``shape`` (a tuple of shapes gives a tuple of arrays):
    zeros, or standard normal draws from ``key``; with ``index_range``, int64 indices
    instead (zeros, or uniform draws in ``[0, index_range)``)."""
    if shape and all(isinstance(s, tuple) for s in shape):
        keys = _random.split(key, len(shape)) if key is not None else [None] * len(shape)
        return tuple(batch_of(s, dtype, batch_size, k, index_range) for s, k in zip(shape, keys))
    if index_range is not None:
        if key is None:
            return np.zeros((batch_size, *shape), np.int64)
        return _random.generator(key).integers(0, max(index_range, 1), (batch_size, *shape), dtype=np.int64)
    if key is None:
        return np.zeros((batch_size, *shape), dtype)
    return _random.normal(key, (batch_size, *shape), dtype)


def example_batch(layer: Layer, shape: Any, dtype: Any, batch_size: int = 1, key: _random.Key | None = None) -> Any:
    """:func:`batch_of` of the kind ``layer`` takes: integer indices for an ``"int"`` layer."""
    return batch_of(shape, dtype, batch_size, key, (layer.index_range or 1) if layer.inputs == "int" else None)


def shape_of(y: Any) -> Any:
    """The per-example shape of a batch (a tuple of them for a tuple): every axis but the first."""
    if isinstance(y, tuple):
        return tuple(shape_of(v) for v in y)
    return tuple(y.shape[1:])


def output_shape(layer: Layer, params: Any, shape: Any, dtype: Any = np.float32) -> Any:
    """The per-example output shape of ``layer`` for inputs of per-example ``shape``.

    Found by applying the layer, in evaluation mode, to a batch of one zero example
    (index 0 for a layer that takes integer indices).
    """
    check_is_layer(layer, "output_shape")
    y, _ = layer.apply(params, example_batch(layer, shape, dtype), state=INITIAL_STATE)
    return shape_of(y)
