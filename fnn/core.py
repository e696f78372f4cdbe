"""The layer protocol, its helpers, and ``serial``.

The protocol
------------
A layer is a pair of pure functions, made by a constructor such as ``Dense(128)``::

    params = init(key, shape, dtype=np.float32)
    y, vjp = apply(params, x, *, train=False, key=None, state=None, world=None)
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
global batch, Dropout folds the rank into its key). ``apply`` returns an :class:`Output`:
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

import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from fnn import random as _random
from fnn import tree as _tree
from fnn import validate as _validate
from fnn.distributed import World

__all__ = [
    "Layer",
    "Output",
    "Options",
    "Shape",
    "make_layer",
    "apply_child",
    "NonFiniteError",
    "INITIAL_STATE",
    "InitialState",
    "parameterless",
    "check_params",
    "check_is_layer",
    "check_no_params",
    "check_cotangent",
    "ShapeDtype",
    "like",
    "output_shape",
    "batch_of",
    "example_batch",
    "shape_of",
    "is_index_array",
    "INPUT_KINDS",
    "name_layers",
    "split_options",
    "serial",
]

Shape = tuple[int, ...]
VJP = Callable[..., tuple[Any, Any]]
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Options(NamedTuple):
    """The keyword options of ``apply``, as passed to a layer's inner apply function."""

    train: bool = False
    key: _random.Key | None = None
    state: Any = None
    check_finite: bool = False
    world: World | None = None


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
                    state: Any = None, check_finite: bool = False, world: World | None = None) -> Output:
        train = _validate.boolean(kind, "option train", train)
        check_finite = _validate.boolean(kind, "option check_finite", check_finite)
        x = _check_input(x, kind, inputs)
        if key is not None:
            _validate.key(f"{kind}: option key", key)
        if world is not None and not isinstance(world, World):
            raise TypeError(f"{kind}: option world must be an fnn.distributed.World (fnn.distributed.world()) "
                            f"or None, got {type(world).__name__}")
        if check_finite and not _finite(x):
            nan, inf = _count_nonfinite(x)
            raise NonFiniteError(f"{kind}: check_finite: the input already has {nan} NaN and {inf} inf values")
        out = apply(params, x, Options(train, key, state, check_finite, world))
        out = out if isinstance(out, Output) else Output(*out)
        if check_finite and not _finite(out[0]):
            nan, inf = _count_nonfinite(out[0])
            raise NonFiniteError(f"{kind}: check_finite: this layer produced {nan} NaN and {inf} inf values "
                                 f"from a finite input")
        return out

    layer_init.__doc__ = f"Initialize the parameters of {kind} for examples of the given shape."
    layer_apply.__doc__ = f"Apply {kind}; returns (y, vjp) with the new state as .state."
    return Layer(layer_init, layer_apply, kind, children, inputs, index_range)


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


def parameterless(kind: str, forward: Callable[[Any], tuple[Any, Callable[[Any], Any]]],
                  tuple_input: bool = False) -> Layer:
    """A layer without params from ``forward(x) -> (y, backward)`` where ``backward(dy) -> dx``.

    ``y`` may be an array or a tuple of arrays (``dy`` is checked against it); so
    may ``x`` when ``tuple_input`` is set.
    """

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
        return {}

    def apply(params: Any, x: np.ndarray, opts: Options) -> Any:
        check_no_params(kind, params)
        y, backward = forward(x)
        out = like(y)

        def vjp(dy: Any, need_dx: bool = True) -> tuple[dict[str, Any], Any]:
            dy = check_cotangent(kind, dy, out)
            return {}, backward(dy) if need_dx else None

        return y, vjp

    return make_layer(kind, init, apply, tuple_input=tuple_input)


def _snake(kind: str) -> str:
    name = kind.split("(", 1)[0]
    return re.sub(r"(?<=[a-z])(?=[A-Z][a-z])", "_", name).lower()


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


def _reraise(err: Exception, prefix: str) -> Exception:
    """An exception of the same type as ``err`` with ``prefix`` before its message."""
    try:
        return type(err)(f"{prefix}: {err}")
    except Exception:  # an exception type whose constructor takes other arguments
        return err


def output_shape(layer: Layer, params: Any, shape: Any, dtype: Any = np.float32) -> Any:
    """The per-example output shape of ``layer`` for inputs of per-example ``shape``.

    Found by applying the layer, in evaluation mode, to a batch of one zero example
    (index 0 for a layer that takes integer indices).
    """
    check_is_layer(layer, "output_shape")
    y, _ = layer.apply(params, example_batch(layer, shape, dtype), state=INITIAL_STATE)
    return shape_of(y)


def _sq_norms_of(vjp: Callable[..., Any], where: str) -> Callable[[Any], np.ndarray]:
    """The per-example squared-norm function of a vjp, or a ``TypeError`` naming the layer."""
    fn = getattr(vjp, "sq_norms", None)
    if fn is None:
        raise TypeError(f"{where}: per-example gradient norms are not available for this layer "
                        f"(supported: Dense, Conv2D, and serial/parallel/residual of them and parameterless layers)")
    return fn


def apply_child(layer: Layer, params: Any, x: Any, opts: Options, key: _random.Key | None, state: Any) -> Output:
    """Apply a combinator's sub-layer with the combinator's options, its own key and state.

    A non-empty ``state`` given to a sub-layer that has no state is a ``ValueError``
    rather than silently ignored: it was saved for another layer or architecture.
    """
    out = layer.apply(params, x, train=opts.train, key=key, state=state, check_finite=opts.check_finite,
                      world=opts.world)
    if state is not None and state is not INITIAL_STATE and not (isinstance(state, dict) and not state) \
            and not out.state:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{layer.kind}: has no state but was given state {got} "
                         f"(state saved for another layer or architecture?)")
    return out


def name_layers(where: str, layers: Iterable[Layer | tuple[str, Layer]]) -> list[tuple[str, Layer]]:
    """Give every layer a name: its own for ``(name, layer)`` pairs, else ``kind_index``
    counted per kind from 0 (``dense_0``, ``relu_0``, ``dense_1``). Names must be unique."""
    named: list[tuple[str, Layer]] = []
    counts: dict[str, int] = {}
    for i, item in enumerate(layers):
        if isinstance(item, Layer):
            base = _snake(item.kind)
            named.append((f"{base}_{counts.get(base, 0)}", item))
            counts[base] = counts.get(base, 0) + 1
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            named.append((item[0], check_is_layer(item[1], f"{where}: argument {i} ({item[0]!r}, ...)")))
        else:
            check_is_layer(item, f"{where}: argument {i}")
    names = [n for n, _ in named]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: layer names must be unique, got duplicates {dupes}")
    return named


def split_options(kind: str, params: Any, opts: Options, names: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """Check a combinator's ``params`` and ``state`` are keyed by its layer names; return
    one key per layer (split from ``opts.key``, or ``None``) and the state dict."""
    if not isinstance(params, dict) or set(params) != set(names):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{kind}: params has keys {got} but this {kind} expects {sorted(names)} "
                         f"(params from a different architecture?)")
    keys = list(_random.split(opts.key, len(names))) if opts.key is not None else [None] * len(names)
    if opts.state is INITIAL_STATE:
        return keys, dict.fromkeys(names, INITIAL_STATE)
    if opts.state is not None and not isinstance(opts.state, dict):
        raise TypeError(f"{kind}: state must be a dict keyed by layer name, fnn.INITIAL_STATE or None, "
                        f"got {type(opts.state).__name__}")
    state = opts.state or {}
    unknown = sorted(set(state) - set(names))
    if unknown:
        raise ValueError(f"{kind}: state has entries {unknown} for layers this {kind} does not have")
    return keys, state


def serial(*layers: Layer | tuple[str, Layer]) -> Layer:
    """Compose layers in sequence; the result is itself a layer.

    Each argument is a layer or a ``(name, layer)`` pair; unnamed layers are named
    by :func:`name_layers` (``dense_0``, ``relu_0``, ``dense_1``). ``params`` (and
    ``state``) are dicts with one entry per layer under that name. ``init`` threads
    the example shape through the layers; a shape error names the layer's position,
    name and kind. ``apply`` passes ``train``, a key split per layer, and each
    layer's state on to it.

    >>> from fnn.layers import Dense, ReLU
    >>> net = serial(Dense(8), ReLU(), ("out", Dense(2)))
    >>> sorted(net.init(fnn.random.key(0), (4,)))
    ['dense_0', 'out', 'relu_0']
    """
    if not layers:
        raise ValueError("serial: needs at least one layer")
    named = name_layers("serial", layers)
    names = [n for n, _ in named]
    kind = "serial"

    def where(i: int) -> str:
        return f"serial layer {i} {named[i][0]!r} ({named[i][1].kind})"

    def init(key: _random.Key, shape: Any, dtype: np.dtype) -> dict[str, Any]:
        params = {}
        for i, (k, (name, layer)) in enumerate(zip(_random.split(key, len(named)), named)):
            try:
                params[name] = layer.init(k, shape, dtype)
                shape = output_shape(layer, params[name], shape, dtype)
            except (ValueError, TypeError) as err:
                raise _reraise(err, f"{where(i)} with input shape {shape}") from err
        return params

    def apply(params: Any, x: Any, opts: Options) -> Output:
        keys, state = split_options(kind, params, opts, names)
        vjps, outs, new_state = [], [], {}
        for i, ((name, layer), k) in enumerate(zip(named, keys)):
            try:
                out = apply_child(layer, params[name], x, opts, k, state.get(name))
            except (ValueError, TypeError) as err:
                raise _reraise(err, where(i)) from err
            x, vjp_i = out
            vjps.append(vjp_i)
            outs.append(like(x))
            if out.state:
                new_state[name] = out.state
        # Without need_dx, backward stops at the first layer that has parameters.
        first_trainable = next((i for i, n in enumerate(names) if _tree.leaves(params[n])), len(names))

        def vjp(dy: Any, need_dx: bool = True) -> tuple[dict[str, Any], Any]:
            stop = 0 if need_dx else first_trainable
            grads: list[Any] = [_tree.zeros_like(params[n]) for n in names[:stop]] + [None] * (len(names) - stop)
            for i in range(len(named) - 1, stop - 1, -1):
                try:
                    grads[i], dy = vjps[i](dy, need_dx=need_dx or i > stop)
                except (ValueError, TypeError) as err:
                    raise _reraise(err, where(i)) from err
            return dict(zip(names, grads)), dy if stop == 0 else None

        def sq_norms(dy: Any) -> np.ndarray:
            total: Any = 0.0
            for i in range(len(named) - 1, first_trainable - 1, -1):
                if _tree.leaves(params[names[i]]):
                    total = total + _sq_norms_of(vjps[i], where(i))(dy)
                if i > first_trainable:
                    dy = vjps[i](dy)[1]
            return np.asarray(total)

        vjp.children = list(zip(names, vjps, outs))  # type: ignore[attr-defined]
        vjp.sq_norms = sq_norms  # type: ignore[attr-defined]
        return Output(x, vjp, new_state)

    # Integer indices are checked here, so that an example batch for init is made of indices;
    # anything else is left to the first layer, whose error then names its position.
    first = named[0][1]
    inputs = "int" if first.inputs == "int" else "any"
    return make_layer(kind, init, apply, children=named, inputs=inputs, index_range=first.index_range)
