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

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from fnn import random as _random
from fnn import tree as _tree
from fnn.core import Layer, check_is_layer, example_batch, is_index_array, output_shape, shape_of
from fnn.inspection import closure_arrays

__all__ = ["GradientCheckError", "ContractError", "CHECKS", "check_vjp", "check_vjp_fn", "check_layer"]


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

    ``params`` and float ``x`` are cast to float64. An integer ``x`` (indices) is
    left as it is and not differentiated: its ``dx`` must be ``None``. A leaf passes
    when ``|analytic - numeric| <= atol + rtol * max(|numeric|)`` over its entries
    (or directions). Raises :class:`GradientCheckError` with a table otherwise.
    """
    key = _random.key(0) if key is None else key
    indices = is_index_array(x)
    params = _as64(params)
    x = x if indices else _as64(x)
    inputs = {"params": params} if indices else {"params": params, "x": x}
    y, vjp = f(params, x)
    k_dy, k_dir = _random.split(key, 2)
    y_pairs, _ = _tree.flatten(y)
    dy_leaves = [_random.normal(k, np.shape(leaf), np.float64) for k, (_, leaf) in
                 zip(_random.split(k_dy, len(y_pairs)), y_pairs)]
    dy = _tree.flatten(y)[1](dy_leaves)
    dparams, dx = vjp(dy)
    if indices and dx is not None:
        raise GradientCheckError(f"the input is integer indices, so dx must be None; the vjp returned "
                                 f"{type(dx).__name__}")
    analytic = {"params": dparams} if indices else {"params": dparams, "x": dx}
    names = ["params", "dparams"] if indices else ["(params, x)", "(dparams, dx)"]
    _tree.check_same_structure(inputs, analytic, names=names, shapes=True, where="check_vjp")

    pairs, rebuild = _tree.flatten(inputs)
    flat_in = [leaf for _, leaf in pairs]

    def objective(leaves: list[np.ndarray]) -> float:
        t = rebuild(leaves)
        out, _ = f(t["params"], x if indices else t["x"])
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
    """Same structure and close leaves; a ``None`` (no ``dx`` for indices) only matches ``None``."""
    try:
        _tree.check_same_structure(a, b, shapes=True)
    except (ValueError, TypeError):
        return False
    return all(u is None and v is None or u is not None and v is not None and
               np.allclose(u, v, rtol=rtol, atol=atol, equal_nan=True)
               for u, v in zip(_tree.leaves(a), _tree.leaves(b)))


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


CHECKS = ("shapes", "determinism", "gradients", "need_dx", "inference", "purity", "vjp_twice", "aliasing", "state",
          "dtype", "batch_independence", "layouts")
"""The properties :func:`check_layer` checks, in order; each can be chosen or skipped by name."""


class _Subject(NamedTuple):
    """What every check reads: the layer, its inputs and one application of it."""

    layer: Layer
    params: Any
    x: Any
    options: dict[str, Any]
    out: Any
    dy: Any
    batch_size: int
    batch_coupled: bool
    shape: Any
    k_init: _random.Key
    k_fd: _random.Key
    rtol: float
    atol: float
    memo: dict[str, Any]  # results several checks read, computed once

    def run(self, params: Any, x: Any, **options: Any) -> Any:
        return self.layer.apply(params, x, **{**self.options, **options})

    def fail(self, prop: str, detail: str) -> None:
        raise ContractError(f"check_layer({self.layer.kind}): {prop}: {detail}")

    def grads(self) -> Any:
        """``vjp(dy)`` of the subject's application."""
        if "grads" not in self.memo:
            self.memo["grads"] = self.out[1](self.dy)
        return self.memo["grads"]


def _check_shapes(s: _Subject) -> Any:
    y = s.out[0]
    batch_sizes = {np.shape(a)[0] for a in _arrays(y)}
    if batch_sizes != {s.batch_size}:
        s.fail("shapes", f"output batch sizes {sorted(batch_sizes)}, expected {s.batch_size}")
    predicted = output_shape(s.layer, s.params, tuple(s.shape), np.float64)
    if predicted != shape_of(y):
        s.fail("shapes", f"output_shape() says {predicted} but apply gave {shape_of(y)}")
    return shape_of(y)


def _check_determinism(s: _Subject) -> Any:
    if not _same_bits(s.layer.init(s.k_init, s.shape, np.float64), s.layer.init(s.k_init, s.shape, np.float64)):
        s.fail("determinism", "init with the same key gave different params")
    if not _same_bits(s.run(s.params, s.x)[0], s.out[0]):
        s.fail("determinism", "apply with the same inputs and options gave a different output")
    return True


def _check_gradients(s: _Subject) -> Any:
    return check_vjp_fn(s.run, s.params, s.x, key=s.k_fd, rtol=s.rtol, atol=s.atol)


def _check_need_dx(s: _Subject) -> Any:
    full = s.grads()
    try:
        dparams, dx = s.out[1](s.dy, need_dx=False)
    except TypeError as err:
        s.fail("need_dx", f"vjp(dy, need_dx=False) failed ({err}); serial calls it so in every training step, "
                          f"so a vjp must take need_dx")
    if dx is not None:
        s.fail("need_dx", f"vjp(dy, need_dx=False) must return dx = None, got {type(dx).__name__}")
    if not _close(dparams, full[0], rtol=1e-12, atol=0):
        s.fail("need_dx", "vjp(dy, need_dx=False) gave other dparams than vjp(dy)")
    return True


def _check_inference(s: _Subject) -> Any:
    """``need_vjp=False`` gives the same output and state and keeps nothing for backward."""
    out = s.run(s.params, s.x, need_vjp=False)
    if not (_same_bits(out[0], s.out[0]) and _same_bits(out.state, s.out.state)):
        s.fail("inference", "apply(..., need_vjp=False) gave another output or state than apply(...)")
    kept = closure_arrays(out[1])
    if kept:
        s.fail("inference", f"the vjp of apply(..., need_vjp=False) keeps {len(kept)} arrays alive")
    try:
        out[1](s.dy)
    except ValueError as err:
        if "need_vjp=False" not in str(err):
            raise
    else:
        s.fail("inference", "the vjp of apply(..., need_vjp=False) ran instead of raising")
    return True


def _frozen_run(s: _Subject) -> tuple[dict[str, Any], dict[str, Any], Any, Any, Any]:
    """One application and two vjp calls on read-only copies of the inputs (computed once, for
    the purity, vjp-twice and aliasing checks): the copies, their values before, the output
    and the two gradients."""
    if "frozen" not in s.memo:
        frozen = {"params": _readonly_copy(s.params), "x": _readonly_copy(s.x), "dy": _readonly_copy(s.dy),
                  "state": _readonly_copy(s.options.get("state"))}
        before = {k: _tree.map(lambda a: a.copy() if isinstance(a, np.ndarray) else a, v) for k, v in frozen.items()}
        try:
            out = s.run(frozen["params"], frozen["x"], state=frozen["state"])
            grads_1, grads_2 = out[1](frozen["dy"]), out[1](frozen["dy"])
        except ValueError as err:
            if "read-only" in str(err):
                s.fail("purity", f"apply or vjp wrote into a read-only input ({err})")
            raise
        s.memo["frozen"] = (frozen, before, out, grads_1, grads_2)
    result: tuple[dict[str, Any], dict[str, Any], Any, Any, Any] = s.memo["frozen"]
    return result


def _check_purity(s: _Subject) -> Any:
    frozen, before, _, _, _ = _frozen_run(s)
    for name, value in frozen.items():
        if not _same_bits(value, before[name]):
            s.fail("purity", f"{name} changed during apply or vjp")
    return True


def _check_vjp_twice(s: _Subject) -> Any:
    _, _, _, grads_1, grads_2 = _frozen_run(s)
    if not _same_bits(grads_1, grads_2):
        s.fail("vjp twice", "calling vjp twice with the same dy gave different results")
    return True


def _check_aliasing(s: _Subject) -> Any:
    frozen, _, out, grads_1, _ = _frozen_run(s)
    inputs = [a for v in frozen.values() for a in _arrays(v)]
    for name, value in {"y": out[0], "dparams": grads_1[0], "dx": grads_1[1], "state": out.state}.items():
        if any(np.shares_memory(a, b) for a in _arrays(value) for b in inputs):
            s.fail("aliasing", f"{name} shares memory with an input, a parameter, the state or dy")
    return True


def _check_state(s: _Subject) -> Any:
    """A stateful layer's output state goes back in: same structure, shapes and dtypes, and the
    input state is not needed again (threading it twice works)."""
    state = s.out.state
    if not _arrays(state):
        return "stateless"
    again = s.run(s.params, s.x, state=state)
    try:
        _tree.check_same_structure(state, again.state, names=["state", "the state it gives back"], shapes=True,
                                   where="check_layer")
    except ValueError as err:
        s.fail("state", f"applying with the state it returned gave a state of another structure ({err})")
    wrong = [str(b.dtype) for a, b in zip(_arrays(state), _arrays(again.state)) if a.dtype != b.dtype]
    if wrong:
        s.fail("state", f"the state changed dtype to {wrong} when threaded back in")
    return "threaded"


def _check_dtype(s: _Subject) -> Any:
    for dtype in (np.float32, np.float64):
        p_d = _tree.astype(s.params, dtype)
        x_d = s.x if is_index_array(s.x) else _tree.astype(s.x, dtype)
        state = s.options.get("state")
        out_d = s.run(p_d, x_d, state=_tree.astype(state, dtype) if state else state)
        wrong = sorted({str(a.dtype) for a in _arrays(out_d[0]) if a.dtype != dtype})
        if wrong:
            s.fail("dtype", f"{np.dtype(dtype)} inputs gave y of dtype {wrong}")
        grads = out_d[1](_tree.astype(s.dy, dtype))
        for name, value in (("dparams", grads[0]), ("dx", grads[1])):
            wrong = sorted({str(a.dtype) for a in _arrays(value) if a.dtype != dtype})
            if wrong:
                s.fail("dtype", f"{np.dtype(dtype)} inputs gave {name} of dtype {wrong}")
    return True


def _check_batch_independence(s: _Subject) -> Any:
    if s.batch_coupled or s.batch_size == 1:
        return "skipped (batch-coupled)" if s.batch_coupled else "skipped (batch of 1)"
    y, grads = s.out[0], s.grads()
    total = _tree.zeros_like(grads[0])
    for n in range(s.batch_size):
        def row(t: Any, n: int = n) -> Any:
            return _tree.map(lambda a: a[n:n + 1], t)

        mask = s.options.get("key_padding_mask")  # (N, S): one row per example, like x
        out_n = s.run(s.params, row(s.x), **({} if mask is None else {"key_padding_mask": mask[n:n + 1]}))
        if not _close(out_n[0], row(y)):
            s.fail("batch independence", f"example {n} alone gives a different output than in the batch")
        g_n, dx_n = out_n[1](row(s.dy))
        if not _close(dx_n, grads[1] if grads[1] is None else row(grads[1])):
            s.fail("batch independence", f"example {n} alone gives a different dx than in the batch")
        total = _tree.add(total, g_n)
    if not _close(total, grads[0], rtol=1e-8, atol=1e-10):
        s.fail("batch independence", "per-example dparams do not sum to the batch's dparams")
    return True


def _check_layouts(s: _Subject) -> Any:
    grads = s.grads()
    for name in ("Fortran-ordered", "non-contiguous", "negative-stride"):
        x_l = _tree.map(lambda a, name=name: _layouts(a)[name] if a.ndim >= 2 else a, s.x)
        out_l = s.run(s.params, x_l)
        if not (_close(out_l[0], s.out[0]) and _close(out_l[1](s.dy), grads)):
            s.fail("memory layout", f"a {name} input gives different results than a contiguous one")
    return True


_CHECK_FUNCTIONS: dict[str, Callable[[_Subject], Any]] = {
    "shapes": _check_shapes,
    "determinism": _check_determinism,
    "gradients": _check_gradients,
    "need_dx": _check_need_dx,
    "inference": _check_inference,
    "purity": _check_purity,
    "vjp_twice": _check_vjp_twice,
    "aliasing": _check_aliasing,
    "state": _check_state,
    "dtype": _check_dtype,
    "batch_independence": _check_batch_independence,
    "layouts": _check_layouts,
}


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
    checks: Iterable[str] | None = None,
    skip: Iterable[str] = (),
) -> dict[str, Any]:
    """Check the layer protocol of :mod:`fnn.core` for ``layer`` on examples of ``shape``.

    The checks, by name (:data:`CHECKS`), in order: ``shapes`` (``init``/``apply``
    agreement and ``fnn.output_shape``), ``determinism`` under the same key,
    ``gradients`` (the float64 finite-difference check of ``dparams`` and ``dx``,
    :func:`check_vjp_fn`), ``need_dx`` (``vjp(dy, need_dx=False)`` gives the same
    ``dparams`` and ``dx = None``, as ``serial`` needs), ``inference`` (``need_vjp=False``
    gives the same output and keeps nothing for backward), ``purity`` on read-only
    inputs, ``vjp_twice``, ``aliasing`` (no output, gradient or state sharing memory
    with an input or the cotangent), ``state`` (a stateful layer's output state
    threads back in), ``dtype`` (float32 and float64 are kept), ``batch_independence``
    (batched results equal per-example ones; skipped with ``batch_coupled=True``, for
    BatchNorm in training or Dropout) and ``layouts`` (Fortran-ordered, non-contiguous
    and negative-stride inputs give the results of contiguous ones). ``checks`` runs
    only those named, ``skip`` leaves some out.

    ``x`` (a float64 batch, a tuple of them, or integer indices for a layer that takes
    them) and ``params`` default to draws from ``key``: for an integer-input layer,
    indices in ``[0, layer.index_range)``, which are not differentiated. ``options``
    are passed to ``apply`` (``train``, ``key``, ``state``, ``key_padding_mask``, whose rows the
    batch-independence check gives each example with it). Returns
    ``{check: detail}``; raises :class:`ContractError` (or :class:`GradientCheckError`)
    on the first failure.
    """
    check_is_layer(layer, "check_layer")
    chosen = list(CHECKS if checks is None else checks)
    unknown = sorted(set(chosen) - set(CHECKS)) + sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError(f"check_layer: unknown checks {unknown}; the checks are {list(CHECKS)}")
    options = dict(options or {})
    key = _random.key(0) if key is None else key
    k_init, k_x, k_dy, k_fd = _random.split(key, 4)
    params = layer.init(k_init, shape, np.float64) if params is None else _as64(params)
    if x is None:
        x = example_batch(layer, tuple(shape), np.float64, batch_size, k_x)
    elif not is_index_array(x):
        x = _as64(x)
    out = layer.apply(params, x, **options)
    pairs, rebuild = _tree.flatten(out[0])
    dy = rebuild([_random.normal(k, np.shape(a), np.asarray(a).dtype)
                  for k, (_, a) in zip(_random.split(k_dy, len(pairs)), pairs)])
    subject = _Subject(layer, params, x, options, out, dy, batch_size, batch_coupled, shape, k_init, k_fd,
                       rtol, atol, {})
    return {name: _CHECK_FUNCTIONS[name](subject) for name in CHECKS if name in chosen and name not in set(skip)}
