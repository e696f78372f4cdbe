"""Combinators: ``serial``, branches, merges, residual connections and user pointwise functions.

Each is a layer (an ``(init, apply)`` pair whose vjp returns ``(dparams, dx)``).
Tuple-valued inputs and outputs flow through ``serial`` like arrays: an example's
``shape`` is then a tuple of shapes, and ``dx``/``dy`` are tuples too.

>>> from fnn.layers import Dense, ReLU
>>> block = fnn.serial(fan_out(2), parallel(Dense(4), ReLU()), fan_in_concat(axis=-1))
>>> params = block.init(fnn.random.key(0), (3,))
>>> block.apply(params, np.ones((2, 3), np.float32))[0].shape
(2, 7)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from fnn import random as _random
from fnn import tree as _tree
from fnn import validate
from fnn.core import (
    INITIAL_STATE,
    Layer,
    Options,
    Output,
    check_cotangent,
    check_is_layer,
    like,
    make_layer,
    output_shape,
    parameterless,
    vjp_with,
)

__all__ = ["serial", "parallel", "fan_out", "fan_in_sum", "fan_in_concat", "residual", "elementwise",
           "apply_child", "name_layers", "split_options", "snake_case", "reraise_with", "sq_norms_of"]


# --- what every combinator shares, and serial --------------------------------------------------

def snake_case(kind: str) -> str:
    """The default name of a sub-layer of this kind: ``"MaxPool2D(2)"`` -> ``"max_pool2d"``."""
    name = kind.split("(", 1)[0]
    return re.sub(r"(?<=[a-z])(?=[A-Z][a-z])", "_", name).lower()


def reraise_with(err: Exception, prefix: str) -> Exception:
    """An exception of the same type as ``err`` with ``prefix`` before its message."""
    try:
        return type(err)(f"{prefix}: {err}")
    except Exception:  # an exception type whose constructor takes other arguments
        return err


def sq_norms_of(vjp: Callable[..., Any], where: str) -> Callable[[Any], np.ndarray]:
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
                      world=opts.world, need_vjp=opts.need_vjp, key_padding_mask=opts.key_padding_mask)
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
            base = snake_case(item.kind)
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
                raise reraise_with(err, f"{where(i)} with input shape {shape}") from err
        return params

    def apply(params: Any, x: Any, opts: Options) -> Output:
        keys, state = split_options(kind, params, opts, names)
        vjps, outs, new_state = [], [], {}
        for i, ((name, layer), k) in enumerate(zip(named, keys)):
            try:
                out = apply_child(layer, params[name], x, opts, k, state.get(name))
            except (ValueError, TypeError) as err:
                raise reraise_with(err, where(i)) from err
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
                    raise reraise_with(err, where(i)) from err
            return dict(zip(names, grads)), dy if stop == 0 else None

        def sq_norms(dy: Any) -> np.ndarray:
            total: Any = 0.0
            for i in range(len(named) - 1, first_trainable - 1, -1):
                if _tree.leaves(params[names[i]]):
                    total = total + sq_norms_of(vjps[i], where(i))(dy)
                if i > first_trainable:
                    dy = vjps[i](dy)[1]
            return np.asarray(total)

        return Output(x, vjp_with(vjp, children=list(zip(names, vjps, outs)), sq_norms=sq_norms), new_state)

    # Integer indices are checked here, so that an example batch for init is made of indices;
    # anything else is left to the first layer, whose error then names its position.
    first = named[0][1]
    inputs = "int" if first.inputs == "int" else "any"
    return make_layer(kind, init, apply, children=named, inputs=inputs, index_range=first.index_range)


# --- branches, merges, residual connections, pointwise functions ----------------------------------

def _tuple_input(kind: str, x: Any, n: int | None = None) -> tuple[np.ndarray, ...]:
    if not isinstance(x, tuple) or (n is not None and len(x) != n) or not x:
        want = f"a tuple of {n} arrays" if n is not None else "a non-empty tuple of arrays"
        got = f"a tuple of {len(x)}" if isinstance(x, tuple) else f"an array of shape {np.shape(x)}"
        raise ValueError(f"{kind}: input must be {want}, got {got}")
    return x


def _merge_input(kind: str, x: Any) -> tuple[np.ndarray, ...]:
    """A non-empty tuple of arrays of one dtype (a merge never casts silently)."""
    x = _tuple_input(kind, x)
    dtypes = [v.dtype for v in x]
    if len(set(dtypes)) != 1:
        raise TypeError(f"{kind}: inputs must share one dtype, got {[str(d) for d in dtypes]} "
                        f"(shapes {[v.shape for v in x]})")
    return x


def parallel(*layers: Layer | tuple[str, Layer]) -> Layer:
    """Apply layer ``i`` to element ``i`` of a tuple input; return the tuple of outputs.

    ``x: (x_0, ..., x_{n-1}) -> y: (y_0, ..., y_{n-1})``. Params and state are dicts
    keyed by layer name, named as in ``serial``; options reach every branch.
    """
    if not layers:
        raise ValueError("parallel: needs at least one layer")
    named = name_layers("parallel", layers)
    names = [n for n, _ in named]
    kind = f"parallel({len(named)})"

    def init(key: _random.Key, shape: Any, dtype: np.dtype) -> dict[str, Any]:
        if not (isinstance(shape, tuple) and len(shape) == len(named) and all(isinstance(s, tuple) for s in shape)):
            raise ValueError(f"{kind}: init shape must be a tuple of {len(named)} shapes, got {shape}")
        params = {}
        for i, (k, (name, layer), s) in enumerate(zip(_random.split(key, len(named)), named, shape)):
            try:
                params[name] = layer.init(k, s, dtype)
            except (ValueError, TypeError) as err:
                raise reraise_with(err, f"{kind} branch {i} {name!r} ({layer.kind}) with input shape {s}") from err
        return params

    def apply(params: Any, x: Any, opts: Options) -> Output:
        x = _tuple_input(kind, x, len(named))
        keys, state = split_options(kind, params, opts, names)
        outs, vjps, new_state = [], [], {}
        for i, ((name, layer), k, xi) in enumerate(zip(named, keys, x)):
            try:
                out = apply_child(layer, params[name], xi, opts, k, state.get(name))
            except (ValueError, TypeError) as err:
                raise reraise_with(err, f"{kind} branch {i} {name!r} ({layer.kind})") from err
            outs.append(out[0])
            vjps.append(out[1])
            if out.state:
                new_state[name] = out.state
        y = tuple(outs)
        spec = like(y)

        def vjp(dy: Any, need_dx: bool = True) -> tuple[dict[str, Any], Any]:
            dy = check_cotangent(kind, dy, spec)
            results = [f(d, need_dx=need_dx) for f, d in zip(vjps, dy)]
            grads = {name: g for name, (g, _) in zip(names, results)}
            return grads, tuple(dx for _, dx in results) if need_dx else None

        def sq_norms(dy: Any) -> np.ndarray:
            dy = check_cotangent(kind, dy, spec)
            total: Any = 0.0
            for i, (f, d) in enumerate(zip(vjps, dy)):
                if _tree.leaves(params[names[i]]):
                    total = total + sq_norms_of(f, f"{kind} branch {i} {names[i]!r}")(d)
            return np.asarray(total)

        vjp_with(vjp, children=list(zip(names, vjps, spec)), sq_norms=sq_norms)
        return Output(y, vjp, new_state)

    return make_layer(kind, init, apply, children=named, inputs="any")


def fan_out(n: int) -> Layer:
    """``x -> (x, ..., x)``: ``n`` copies (not views); the vjp sums their gradients."""
    n = validate.integer("fan_out", "n", n, low=1)
    kind = f"fan_out({n})"

    def forward(x: np.ndarray) -> Any:
        y = tuple(x.copy() for _ in range(n))

        def backward(dy: tuple[np.ndarray, ...]) -> np.ndarray:
            total = dy[0].copy()
            for d in dy[1:]:
                total += d
            return total

        return y, backward

    return parameterless(kind, forward)


def fan_in_sum() -> Layer:
    """``(x_0, ..., x_{n-1}) -> x_0 + ... + x_{n-1}``; every input must have the same shape (no broadcasting)."""
    kind = "fan_in_sum()"

    def forward(x: Any) -> Any:
        x = _merge_input(kind, x)
        shapes = [v.shape for v in x]
        if len(set(shapes)) != 1:
            raise ValueError(f"{kind}: inputs must all have the same shape (no broadcasting), got {shapes}")
        y = x[0].copy()
        for v in x[1:]:
            y += v
        n = len(x)  # the vjp keeps the count, not the inputs
        return y, lambda dy: tuple(dy.copy() for _ in range(n))

    return parameterless(kind, forward, tuple_input=True)


def fan_in_concat(axis: int = -1) -> Layer:
    """Concatenate a tuple of arrays along ``axis`` (an axis of the batched arrays, not 0).

    Every other axis must agree; the vjp splits ``dy`` back into the pieces.
    """
    axis = validate.integer("fan_in_concat", "axis", axis)
    kind = f"fan_in_concat(axis={axis})"

    def forward(x: Any) -> Any:
        x = _merge_input(kind, x)
        ndim = x[0].ndim
        if any(v.ndim != ndim for v in x) or not -ndim <= axis < ndim or axis % ndim == 0:
            raise ValueError(f"{kind}: needs inputs of equal rank and a non-batch axis, got shapes "
                             f"{[v.shape for v in x]}")
        ax = axis % ndim
        others = {v.shape[:ax] + v.shape[ax + 1:] for v in x}
        if len(others) != 1:
            raise ValueError(f"{kind}: inputs differ outside axis {axis}: shapes {[v.shape for v in x]}")
        bounds = np.cumsum([v.shape[ax] for v in x])[:-1]
        y = np.concatenate(x, axis=ax)
        return y, lambda dy: tuple(p.copy() for p in np.split(dy, bounds, axis=ax))

    return parameterless(kind, forward, tuple_input=True)


def residual(layer: Layer) -> Layer:
    """``y = x + layer(x)``; ``layer`` must keep the shape. Params and state are ``{"inner": ...}``."""
    if not isinstance(layer, Layer):
        raise TypeError(f"residual: expected a layer, got {layer!r:.80}")
    kind = f"residual({layer.kind})"

    def init(key: _random.Key, shape: Any, dtype: np.dtype) -> dict[str, Any]:
        params = layer.init(key, shape, dtype)
        out = output_shape(layer, params, shape, dtype)
        if out != shape:
            raise ValueError(f"{kind}: the inner layer maps shape {shape} to {out}; a residual needs the same shape")
        return {"inner": params}

    def apply(params: Any, x: Any, opts: Options) -> Output:
        (key,), state = split_options(kind, params, opts, ["inner"])
        out = apply_child(layer, params["inner"], x, opts, key, state.get("inner"))
        inner, inner_vjp = out
        if not isinstance(inner, np.ndarray) or inner.shape != x.shape:
            raise ValueError(f"{kind}: the inner layer maps shape {x.shape} to {np.shape(inner)}; "
                             f"a residual needs the same shape")
        y = x + inner
        spec = like(y)

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, Any], Any]:
            dy = check_cotangent(kind, dy, spec)
            grads, dx = inner_vjp(dy, need_dx=need_dx)
            return {"inner": grads}, dx + dy if need_dx else None

        def sq_norms(dy: np.ndarray) -> np.ndarray:
            dy = check_cotangent(kind, dy, spec)
            if not _tree.leaves(params["inner"]):
                return np.zeros(len(dy))
            return sq_norms_of(inner_vjp, kind)(dy)

        vjp_with(vjp, children=[("inner", inner_vjp, like(inner))], sq_norms=sq_norms)
        return Output(y, vjp, {"inner": out.state} if out.state else {})

    return make_layer(kind, init, apply, children=[("inner", layer)])


def elementwise(fn: Callable[[np.ndarray], np.ndarray], dfn: Callable[[np.ndarray], np.ndarray],
                name: str | None = None) -> Layer:
    """A layer from a pointwise function and its derivative: ``y = fn(x)``, ``dx = dy * dfn(x)``.

    Both are called on whole arrays and must return arrays of ``x``'s shape.

    >>> softplus = elementwise(lambda x: np.logaddexp(0, x), lambda x: 0.5 * (1 + np.tanh(x / 2)))
    >>> softplus.apply({}, np.zeros((1, 2)))[0]
    array([[0.69314718, 0.69314718]])
    """
    validate.function("elementwise", "fn", fn, "a callable taking and returning arrays")
    validate.function("elementwise", "dfn", dfn, "a callable taking and returning arrays")
    kind = f"elementwise({name or getattr(fn, '__name__', 'fn')})"

    def forward(x: np.ndarray) -> Any:
        y = np.asarray(fn(x))
        if y.shape != x.shape:
            raise ValueError(f"{kind}: fn mapped shape {x.shape} to {y.shape}; it must be pointwise")
        y = y.astype(x.dtype, copy=False)
        if np.may_share_memory(y, x):
            y = y.copy()
        return y, lambda dy: (dy * np.asarray(dfn(x))).astype(x.dtype, copy=False)

    return parameterless(kind, forward)

