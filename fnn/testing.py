"""Gradient checking: compare a vjp with float64 central finite differences.

``check_vjp(layer, params, x, **options)`` checks a layer;
``check_vjp_fn(f, params, x)`` checks any ``f(params, x) -> (y, vjp)``. Both draw a
random cotangent ``dy``, compute ``dparams, dx = vjp(dy)`` and compare every
leaf with the finite-difference gradient of ``<dy, f(params, x)>``. Leaves of
up to ``max_entries`` elements are checked entry by entry; larger ones along
random directions (``<grad, v>`` against the directional derivative). The
worst relative error per leaf, with its key path, comes back as a dict; over
tolerance a :class:`GradientCheckError` shows them all as a table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import random as _random
from fnn import tree as _tree
from fnn.core import Layer

__all__ = ["GradientCheckError", "check_vjp", "check_vjp_fn"]


class GradientCheckError(AssertionError):
    """A vjp disagrees with finite differences."""


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
    settings = {k: options.pop(k) for k in ("rtol", "atol", "eps", "max_entries", "directions") if k in options}
    if "check_key" in options:
        settings["key"] = options.pop("check_key")
    return check_vjp_fn(lambda p, v: layer.apply(p, v, **options), params, x, **settings)
