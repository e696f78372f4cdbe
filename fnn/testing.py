"""Checks users can run on any layer: gradients against finite differences, and the whole protocol.

``check_vjp(layer, params, x, **options)`` checks a layer;
``check_vjp_fn(f, params, x)`` checks any ``f(params, x) -> (y, vjp)``. Both draw a
random cotangent ``dy``, compute ``dparams, dx = vjp(dy)`` and compare every
leaf with the finite-difference gradient of ``<dy, f(params, x)>``. Leaves of
up to ``max_entries`` elements are checked entry by entry; larger ones along
random directions (``<grad, v>`` against the directional derivative). The
worst relative error per leaf, with its key path, comes back as a dict; over
tolerance a :class:`GradientCheckError` shows them all as a table.

``check_layer(layer, shape)`` checks the whole contract in one call (see its
docstring) and raises :class:`ContractError` naming the property that failed.

>>> from fnn.layers import Dense
>>> report = check_layer(Dense(3), (4,))
>>> sorted(report)[:3]
['aliasing', 'batch_independence', 'determinism']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import random as _random
from fnn import tree as _tree
from fnn.core import Layer, _shape_of, batch_of, output_shape

__all__ = ["GradientCheckError", "ContractError", "check_vjp", "check_vjp_fn", "check_layer"]


class GradientCheckError(AssertionError):
    """A vjp disagrees with finite differences."""


class ContractError(AssertionError):
    """A layer breaks the protocol of :mod:`fnn.core`; the message names the property."""


def _as64(t: Any) -> Any:
    return _tree.map(lambda a: np.asarray(a, dtype=np.float64), t)


def check_vjp_fn(
    f: Callable[[Any, Any], tuple[Any, Callable[[Any], tuple[Any, Any]]]],
    params: Any,
    x: Any,
    *,
    key: _random.Key | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    max_entries: int = 400,
    directions: int = 8,
) -> dict[str, float]:
    """Check ``f``'s vjp in float64; return ``{path: worst relative error}``.

    ``params`` and ``x`` are cast to float64. A leaf passes when
    ``|analytic - numeric| <= atol + rtol * max(|numeric|)`` over its entries
    (or directions). Raises :class:`GradientCheckError` with a table otherwise.
    """
    key = _random.key(0) if key is None else key
    params, x = _as64(params), _as64(x)
    inputs = {"params": params, "x": x}
    y, vjp = f(params, x)
    k_dy, k_dir = _random.split(key, 2)
    y_pairs, _ = _tree.flatten(y)
    dy_leaves = [_random.normal(k, np.shape(leaf), np.float64) for k, (_, leaf) in
                 zip(_random.split(k_dy, len(y_pairs)), y_pairs)]
    dy = _tree.flatten(y)[1](dy_leaves)
    dparams, dx = vjp(dy)
    analytic = {"params": dparams, "x": dx}
    _tree.check_same_structure(inputs, analytic, names=["(params, x)", "(dparams, dx)"], shapes=True,
                               where="check_vjp")

    pairs, rebuild = _tree.flatten(inputs)
    flat_in = [leaf for _, leaf in pairs]

    def objective(leaves: list[np.ndarray]) -> float:
        out, _ = f(*(lambda t: (t["params"], t["x"]))(rebuild(leaves)))
        return sum(float(np.vdot(d, o)) for d, o in zip(dy_leaves, _tree.leaves(out)))

    def directional(i: int, v: np.ndarray) -> float:
        plus = [a + eps * v if j == i else a for j, a in enumerate(flat_in)]
        minus = [a - eps * v if j == i else a for j, a in enumerate(flat_in)]
        return (objective(plus) - objective(minus)) / (2 * eps)

    errors: dict[str, float] = {}
    failures = []
    dir_keys = _random.split(k_dir, len(pairs))
    for i, ((path, leaf), grad) in enumerate(zip(pairs, _tree.leaves(analytic))):
        name = _tree.path_str(path)
        if leaf.size == 0:
            errors[name] = 0.0
            continue
        if leaf.size <= max_entries:
            numeric = np.empty(leaf.size)
            for j in range(leaf.size):
                v = np.zeros(leaf.size)
                v[j] = 1.0
                numeric[j] = directional(i, v.reshape(leaf.shape))
            got = np.asarray(grad, np.float64).ravel()
        else:
            vs = [_random.normal(k, leaf.shape, np.float64) for k in _random.split(dir_keys[i], directions)]
            numeric = np.array([directional(i, v) for v in vs])
            got = np.array([float(np.vdot(grad, v)) for v in vs])
        scale = float(np.max(np.abs(numeric)))
        diff = float(np.max(np.abs(got - numeric)))
        errors[name] = diff / max(scale, atol)
        if diff > atol + rtol * scale:
            failures.append((name, diff, scale))
    if failures:
        rows = "\n".join(f"  {name:<40} {diff:12.3e} {scale:12.3e} {diff / max(scale, atol):12.3e}"
                         for name, diff, scale in failures)
        raise GradientCheckError(
            f"vjp disagrees with finite differences (rtol={rtol}, atol={atol}):\n"
            f"  {'leaf':<40} {'max |diff|':>12} {'max |fd|':>12} {'rel':>12}\n{rows}"
        )
    return errors


def check_vjp(layer: Layer, params: Any, x: Any, **options: Any) -> dict[str, float]:
    """:func:`check_vjp_fn` for ``layer.apply`` called with the apply ``options``
    (``train``, ``key``, ``state``); checker settings (``rtol``, ``atol``,
    ``eps``, ``max_entries``, ``directions``, ``check_key``) are taken out first."""
    settings: dict[str, Any] = {k: options.pop(k) for k in ("rtol", "atol", "eps", "max_entries", "directions")
                                if k in options}
    if "check_key" in options:
        settings["key"] = options.pop("check_key")
    return check_vjp_fn(lambda p, v: layer.apply(p, v, **options), params, x, **settings)


def _arrays(t: Any) -> list[np.ndarray]:
    return [a for a in _tree.leaves(t) if isinstance(a, np.ndarray)]


def _same_bits(a: Any, b: Any) -> bool:
    try:
        _tree.check_same_structure(a, b, shapes=True)
    except ValueError:
        return False
    return all(u.dtype == v.dtype and u.tobytes() == v.tobytes() for u, v in zip(_arrays(a), _arrays(b)))


def _close(a: Any, b: Any, rtol: float = 1e-10, atol: float = 1e-12) -> bool:
    return _tree.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


def _readonly_copy(t: Any) -> Any:
    def freeze(a: Any) -> Any:
        if not isinstance(a, np.ndarray):
            return a
        c = a.copy()
        c.setflags(write=False)
        return c

    return _tree.map(freeze, t)


def _layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    """The same values as ``a`` in other memory layouts: Fortran order, a strided view, negative strides."""
    strided = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
    strided[..., ::2] = a
    flipped = np.ascontiguousarray(a[..., ::-1])
    return {"Fortran-ordered": np.asfortranarray(a), "non-contiguous": strided[..., ::2],
            "negative-stride": flipped[..., ::-1]}


def check_layer(
    layer: Layer,
    shape: Any,
    *,
    batch_size: int = 3,
    key: _random.Key | None = None,
    x: Any = None,
    params: Any = None,
    options: dict[str, Any] | None = None,
    batch_coupled: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-8,
) -> dict[str, Any]:
    """Check the layer protocol of :mod:`fnn.core` for ``layer`` on examples of ``shape``.

    In order: ``init``/``apply`` shape agreement (and ``fnn.output_shape``), determinism
    under the same key, the float64 gradient check of ``dparams`` and ``dx``
    (:func:`check_vjp_fn`), purity on read-only inputs, ``vjp`` called twice, no
    output, gradient or state aliasing an input or the cotangent, dtype preservation
    (float32 and float64), batched results equal to per-example results (skipped
    with ``batch_coupled=True``, for BatchNorm in training or Dropout), and
    Fortran-ordered, non-contiguous and negative-stride inputs giving the results of
    contiguous ones.

    ``x`` (a float64 batch, or a tuple of them) and ``params`` default to draws from
    ``key``; ``options`` are passed to ``apply`` (``train``, ``key``, ``state``).
    Returns ``{property: detail}``; raises :class:`ContractError` (or
    :class:`GradientCheckError`) on the first failure.
    """
    options = dict(options or {})
    key = _random.key(0) if key is None else key
    k_init, k_x, k_dy, k_fd = _random.split(key, 4)
    report: dict[str, Any] = {}

    def fail(prop: str, detail: str) -> None:
        raise ContractError(f"check_layer({layer.kind}): {prop}: {detail}")

    params = layer.init(k_init, shape, np.float64) if params is None else _as64(params)
    x = batch_of(tuple(shape), np.float64, batch_size, k_x) if x is None else _as64(x)

    def run(p: Any, v: Any) -> Any:
        return layer.apply(p, v, **options)

    def cotangent(y: Any) -> Any:
        pairs, rebuild = _tree.flatten(y)
        return rebuild([_random.normal(k, np.shape(a), np.asarray(a).dtype)
                        for k, (_, a) in zip(_random.split(k_dy, len(pairs)), pairs)])

    # 1. shapes
    out = run(params, x)
    y, vjp = out
    batch_sizes = {np.shape(a)[0] for a in _arrays(y)}
    if batch_sizes != {batch_size}:
        fail("shapes", f"output batch sizes {sorted(batch_sizes)}, expected {batch_size}")
    predicted = output_shape(layer, params, tuple(shape), np.float64)
    if predicted != _shape_of(y):
        fail("shapes", f"output_shape() says {predicted} but apply gave {_shape_of(y)}")
    report["shapes"] = _shape_of(y)

    # 2. determinism under the same key
    if not _same_bits(layer.init(k_init, shape, np.float64), layer.init(k_init, shape, np.float64)):
        fail("determinism", "init with the same key gave different params")
    if not _same_bits(run(params, x)[0], y):
        fail("determinism", "apply with the same inputs and options gave a different output")
    report["determinism"] = True

    # 3. gradients
    report["gradients"] = check_vjp_fn(run, params, x, key=k_fd, rtol=rtol, atol=atol)

    # 4, 5, 6. purity, vjp twice, aliasing
    dy = cotangent(y)
    frozen = {"params": _readonly_copy(params), "x": _readonly_copy(x), "dy": _readonly_copy(dy),
              "state": _readonly_copy(options.get("state"))}
    before = {k: _tree.map(lambda a: a.copy() if isinstance(a, np.ndarray) else a, v) for k, v in frozen.items()}
    try:
        out_ro = layer.apply(frozen["params"], frozen["x"], **{**options, "state": frozen["state"]})
        grads_1 = out_ro[1](frozen["dy"])
        grads_2 = out_ro[1](frozen["dy"])
    except ValueError as err:
        if "read-only" in str(err):
            fail("purity", f"apply or vjp wrote into a read-only input ({err})")
        raise
    for name, value in frozen.items():
        if not _same_bits(value, before[name]):
            fail("purity", f"{name} changed during apply or vjp")
    report["purity"] = True
    if not _same_bits(grads_1, grads_2):
        fail("vjp twice", "calling vjp twice with the same dy gave different results")
    report["vjp_twice"] = True
    inputs = _arrays(frozen["params"]) + _arrays(frozen["x"]) + _arrays(frozen["dy"]) + _arrays(frozen["state"])
    outputs = {"y": out_ro[0], "dparams": grads_1[0], "dx": grads_1[1], "state": out_ro.state}
    for name, value in outputs.items():
        for a in _arrays(value):
            if any(np.shares_memory(a, b) for b in inputs):
                fail("aliasing", f"{name} shares memory with an input, a parameter, the state or dy")
    report["aliasing"] = True

    # 7. dtypes
    for dtype in (np.float32, np.float64):
        p_d, x_d = _tree.astype(params, dtype), _tree.astype(x, dtype)
        state = options.get("state")
        out_d = layer.apply(p_d, x_d, **{**options, "state": _tree.astype(state, dtype) if state else state})
        grads = out_d[1](_tree.astype(dy, dtype))
        for name, value in (("y", out_d[0]), ("dparams", grads[0]), ("dx", grads[1])):
            wrong = sorted({str(a.dtype) for a in _arrays(value) if a.dtype != dtype})
            if wrong:
                fail("dtype", f"{np.dtype(dtype)} inputs gave {name} of dtype {wrong}")
    report["dtype"] = True

    # 8. batch independence
    grads = vjp(dy)
    if not batch_coupled and batch_size > 1:
        total = _tree.zeros_like(grads[0])
        for n in range(batch_size):
            row = _tree.map(lambda a, n=n: a[n:n + 1], x)
            out_n = run(params, row)
            dy_n = _tree.map(lambda a, n=n: a[n:n + 1], dy)
            if not _close(out_n[0], _tree.map(lambda a, n=n: a[n:n + 1], y)):
                fail("batch independence", f"example {n} alone gives a different output than in the batch")
            g_n, dx_n = out_n[1](dy_n)
            if not _close(dx_n, _tree.map(lambda a, n=n: a[n:n + 1], grads[1])):
                fail("batch independence", f"example {n} alone gives a different dx than in the batch")
            total = _tree.add(total, g_n)
        if not _close(total, grads[0], rtol=1e-8, atol=1e-10):
            fail("batch independence", "per-example dparams do not sum to the batch's dparams")
        report["batch_independence"] = True
    else:
        report["batch_independence"] = "skipped (batch-coupled)" if batch_coupled else "skipped (batch of 1)"

    # 9. memory layouts
    for name in ("Fortran-ordered", "non-contiguous", "negative-stride"):
        x_l = _tree.map(lambda a, name=name: _layouts(a)[name] if a.ndim >= 2 else a, x)
        out_l = run(params, x_l)
        if not (_close(out_l[0], y) and _close(out_l[1](dy), grads)):
            fail("memory layout", f"a {name} input gives different results than a contiguous one")
    report["layouts"] = True
    return report
