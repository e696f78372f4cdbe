"""What every optimizer shares: the ``(init, update)`` pair, learning rates that may be
schedules, weight-decay masks, and the checks on trees (hyperparameters are checked with
:mod:`fnn.validate`).

Optimizers are written as a per-leaf *rule* and turned into an :class:`Optimizer`
by :func:`leafwise`, which owns the step count, the structure checks, the
learning-rate schedule and the weight-decay mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from fnn import tree as _tree
from fnn import validate

__all__ = ["Optimizer", "Schedule", "DecayMask", "Rule", "leafwise", "as_schedule", "weights_only"]

Schedule = Callable[[int], float]
DecayMask = Callable[[tuple[Any, ...], np.ndarray], bool] | dict[str, Any]
Rule = Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray], int, float, float],
                tuple[np.ndarray, dict[str, np.ndarray]]]
"""``rule(p, g, buffers, t, lr, weight_decay) -> (new_p, new_buffers)`` for one leaf;
``t`` counts updates from 1 (PyTorch's ``step``)."""


class Optimizer(NamedTuple):
    """A pure optimizer: ``state = init(params)``; ``params, state = update(params, grads, state)``.

    ``state`` is a dict of arrays: the number of updates done under ``"step"`` (so
    a checkpoint of it resumes schedules and bias corrections exactly) and one
    tree per buffer (``"momentum"``, ``"exp_avg"``, …) with the structure of ``params``.
    """

    init: Callable[[Any], dict[str, Any]]
    update: Callable[[Any, Any, dict[str, Any]], tuple[Any, dict[str, Any]]]


def as_schedule(where: str, lr: float | Schedule) -> Schedule:
    """A schedule ``step -> lr``: ``lr`` itself when callable, else a constant checked to be a
    finite number ``>= 0`` (:func:`fnn.validate.number`)."""
    if callable(lr):
        return lr
    value = validate.number(where, "lr", lr, low=0.0)
    return lambda step: value


def weights_only(path: tuple[Any, ...], leaf: np.ndarray) -> bool:
    """Decay mask that decays leaves with two or more axes (Dense and Conv weights) and
    leaves biases and normalization scales and shifts (1-D) alone."""
    return np.ndim(leaf) >= 2


def _decay_flags(where: str, mask: DecayMask | None, params: Any) -> list[bool]:
    pairs = _tree.flatten(params)[0]
    if mask is None:
        return [True] * len(pairs)
    if callable(mask):
        return [bool(mask(path, leaf)) for path, leaf in pairs]
    _tree.check_same_structure(params, mask, names=["params", "decay_mask"], where=where)
    return [bool(flag) for flag in _tree.leaves(mask)]


def _check_float_leaves(where: str, name: str, t: Any, arrays_only: bool) -> None:
    """Every leaf of ``t`` must be a float numpy array or scalar (with ``arrays_only``: not a
    Python float, since updated params keep each leaf's dtype)."""
    for path, leaf in _tree.flatten(t)[0]:
        if isinstance(leaf, (np.ndarray, np.generic)):
            ok, got = leaf.dtype.kind == "f", f"dtype {leaf.dtype}"
        else:
            ok, got = isinstance(leaf, float) and not arrays_only, type(leaf).__name__
        if not ok:
            raise TypeError(f"{where}: {name} leaf at {_tree.path_str(path)} must be a float numpy array, "
                            f"got {got}")


def _check_step(where: str, step: Any) -> int:
    # A bool (or bool array) has dtype kind "b", so it is refused with everything else that is not an integer.
    if not (isinstance(step, (int, np.integer, np.ndarray)) and np.ndim(step) == 0
            and np.asarray(step).dtype.kind in "iu" and int(step) >= 0):
        raise ValueError(f"{where}: state['step'] must be a non-negative integer (0-d array) as made by init, "
                         f"got {step!r:.80}")
    return int(step)


def leafwise(where: str, lr: float | Schedule, buffers: tuple[str, ...], rule: Rule,
             weight_decay: float = 0.0, decay_mask: DecayMask | None = None) -> Optimizer:
    """Build an :class:`Optimizer` from a per-leaf ``rule`` and buffer names (buffers start at zero).

    ``decay_mask`` selects the leaves that get weight decay: a predicate
    ``(key_path, leaf) -> bool`` such as :func:`weights_only`, or a tree of bools
    with the structure of ``params``. ``None`` decays every leaf (PyTorch's default).
    """
    schedule = as_schedule(where, lr)
    if decay_mask is not None and not isinstance(decay_mask, dict):
        validate.function(where, "decay_mask", decay_mask, "a predicate (path, leaf) -> bool or a tree of bools")

    def init(params: Any) -> dict[str, Any]:
        _check_float_leaves(where, "params", params, arrays_only=True)
        return {"step": np.array(0, np.int64), **{b: _tree.zeros_like(params) for b in buffers}}

    def update(params: Any, grads: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        _tree.check_same_structure(params, grads, names=["params", "grads"], shapes=True, where=where)
        _check_float_leaves(where, "params", params, arrays_only=True)
        _check_float_leaves(where, "grads", grads, arrays_only=False)
        if not isinstance(state, dict) or set(state) != {"step", *buffers}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{where}: state must be the dict made by this optimizer's init, with keys "
                             f"{sorted(('step',) + buffers)}; got {got}")
        for b in buffers:
            _tree.check_same_structure(params, state[b], names=["params", f"state[{b!r}]"], shapes=True,
                                       where=where)
        step = _check_step(where, state["step"])
        rate = schedule(step)
        if not (validate.is_number(rate) and math.isfinite(rate) and rate >= 0):
            raise ValueError(f"{where}: the learning-rate schedule gave {rate!r} at step {step}; "
                             f"expected a finite number >= 0")
        pairs, rebuild = _tree.flatten(params)
        g_leaves = _tree.leaves(grads)
        b_leaves = {b: _tree.leaves(state[b]) for b in buffers}
        decay = _decay_flags(where, decay_mask, params)
        new_p: list[np.ndarray] = []
        new_b: dict[str, list[np.ndarray]] = {b: [] for b in buffers}
        for i, (_, p) in enumerate(pairs):
            q, bufs = rule(p, g_leaves[i], {b: b_leaves[b][i] for b in buffers}, step + 1, float(rate),
                           weight_decay if decay[i] else 0.0)
            new_p.append(np.asarray(q, p.dtype))  # asarray: arithmetic on 0-d arrays gives numpy scalars
            for b in buffers:
                new_b[b].append(np.asarray(bufs[b], p.dtype))
        new_state = {"step": np.array(step + 1, np.int64), **{b: rebuild(new_b[b]) for b in buffers}}
        return rebuild(new_p), new_state

    return Optimizer(init, update)
