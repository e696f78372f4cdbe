"""What every optimizer shares: the :class:`Optimizer` and :class:`GradientTransformation`
pairs, learning rates that may be schedules, weight-decay masks, and :func:`leafwise`, which
turns a per-leaf *rule* into an optimizer (hyperparameters are checked with :mod:`fnn.validate`,
trees with :mod:`fnn.optim.checks`).

``leafwise`` owns the step count, the structure checks, the learning-rate schedule, the
``lr_scale`` keyword and the weight-decay mask; a rule sees one leaf at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from fnn import tree as _tree
from fnn import validate
from fnn.optim import checks

__all__ = ["Optimizer", "GradientTransformation", "Schedule", "DecayMask", "Mask", "Rule", "leafwise",
           "as_schedule", "weights_only"]

Schedule = Callable[[int], float]
"""A learning rate as a function of the number of updates already done (from 0)."""
DecayMask = Callable[[tuple[Any, ...], np.ndarray], bool] | dict[str, Any]
"""A predicate ``(key_path, leaf) -> bool`` or a tree of bools with the structure of params."""
Mask = Callable[[tuple[Any, ...], np.ndarray], bool] | Any
"""A predicate ``(key_path, leaf) -> bool`` or a tree of bools with the structure of params."""
Rule = Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray], int, float, float],
                tuple[np.ndarray, dict[str, np.ndarray]]]
"""``rule(p, g, buffers, t, lr, weight_decay) -> (new_p, new_buffers)`` for one leaf;
``t`` counts updates from 1 (PyTorch's ``step``)."""


class Optimizer(NamedTuple):
    """A pure optimizer: ``state = init(params)``; ``params, state = update(params, grads, state)``.

    fnn's optimizers keep their state as a dict of arrays: the number of updates done under
    ``"step"`` (so a checkpoint of it resumes schedules and bias corrections exactly) and one
    tree per buffer (``"momentum"``, ``"exp_avg"``, …) with the structure of ``params``.
    Combinators nest states (``chain``: a tuple, ``multi_transform``: a dict by group,
    ``lr_multiplier``: ``{"inner", "lr_multiplier"}``).

    Two conventions every optimizer and transform in :mod:`fnn.optim` follows:

    - a ``None`` leaf in ``grads`` means *no gradient* (PyTorch's ``p.grad is None``): that
      leaf gets no update, no weight decay, and its buffers are returned as they were;
    - ``update`` takes an optional keyword ``lr_scale`` (default ``None``, meaning 1) that
      multiplies every learning rate of that call, as changing the ``lr`` of PyTorch's param
      groups does; :func:`fnn.optim.lr_multiplier` keeps it in the state.

    A hand-written ``Optimizer(init, update)`` works anywhere an optimizer is expected; it
    needs these two only when used under ``freeze``/``masked`` (``None`` gradients) or
    ``lr_multiplier`` (``lr_scale``).
    """

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class GradientTransformation(NamedTuple):
    """A pure gradient transformation: ``state = init(params)``;
    ``updates, state = update(updates, state, params)``.

    ``updates`` are gradients on the way in and the changes to *add* to the params on the way
    out of a whole chain (``scale_by_learning_rate`` flips the sign). They take the optional
    keyword ``lr_scale`` and pass ``None`` leaves through untouched, as :class:`Optimizer` does.
    :func:`fnn.optim.chain` composes them (ending with an optimizer, or not), and
    :func:`fnn.optim.as_optimizer` makes one an optimizer: ``params + updates``.
    """

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


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


def decay_flags(where: str, mask: DecayMask | None, params: Any) -> list[bool]:
    """One bool per leaf: does it get weight decay (``mask`` as in :func:`leafwise`)."""
    if mask is None:
        return [True] * len(_tree.leaves(params))
    return [bool(flag) for _, flag in checks.per_leaf(where, "decay_mask", mask, params)]


def check_decay_mask(where: str, mask: Any) -> None:
    """A decay mask is ``None``, a predicate or a dict tree of bools."""
    if mask is not None and not isinstance(mask, dict):
        validate.function(where, "decay_mask", mask, "a predicate (path, leaf) -> bool or a tree of bools")


def full_like(value: float) -> Callable[[np.ndarray], np.ndarray]:
    """``p -> np.full_like(p, value)``: a buffer's starting value."""
    return lambda p: np.full_like(p, value)


def update_leaves(where: str, params: Any, grads: Any, state: dict[str, Any], buffers: tuple[str, ...],
                  fn: Callable[[int, np.ndarray, Any, dict[str, np.ndarray]], tuple[Any, dict[str, np.ndarray]]],
                  skipped: Callable[[np.ndarray], Any]) -> tuple[Any, dict[str, Any]]:
    """The per-leaf loop of :func:`leafwise` and :func:`fnn.optim.leafwise_transform`: after checking
    that each buffer tree in ``state`` has the structure and shapes of ``params``, ``fn(i, p, g,
    bufs) -> (out, new_bufs)`` for leaf ``i`` (in ``fnn.tree.flatten`` order) whose gradient ``g``
    is not ``None``; a ``None`` gradient gives ``skipped(p)`` and the buffers as they were (the same
    arrays). Returns the outputs and each buffer as trees shaped like ``params``, every array in
    its param's dtype."""
    for b in buffers:
        _tree.check_same_structure(params, state[b], names=["params", f"state[{b!r}]"], shapes=True, where=where)
    pairs, rebuild = _tree.flatten(params)
    g_leaves = _tree.leaves(grads)
    b_leaves = {b: _tree.leaves(state[b]) for b in buffers}
    out: list[Any] = []
    new_b: dict[str, list[np.ndarray]] = {b: [] for b in buffers}
    for i, (_, p) in enumerate(pairs):
        g = g_leaves[i]
        if g is None:  # no gradient: nothing moves, not even the buffers
            out.append(skipped(p))
            for b in buffers:
                new_b[b].append(b_leaves[b][i])
            continue
        v, bufs = fn(i, p, g, {b: b_leaves[b][i] for b in buffers})
        out.append(np.asarray(v, p.dtype))  # asarray: arithmetic on 0-d arrays gives numpy scalars
        for b in buffers:
            new_b[b].append(np.asarray(bufs[b], p.dtype))
    return rebuild(out), {b: rebuild(new_b[b]) for b in buffers}


def leafwise(where: str, lr: float | Schedule, buffers: tuple[str, ...], rule: Rule,
             weight_decay: float = 0.0, decay_mask: DecayMask | None = None,
             initial: Mapping[str, float] | None = None) -> Optimizer:
    """Build an :class:`Optimizer` from a per-leaf ``rule`` and buffer names.

    Buffers start at zero, or at ``initial[name]`` (Adagrad's ``initial_accumulator_value``):
    the state right after ``init`` is the state before the first step.
    ``decay_mask`` selects the leaves that get weight decay: a predicate
    ``(key_path, leaf) -> bool`` such as :func:`weights_only`, or a tree of bools
    with the structure of ``params``. ``None`` decays every leaf (PyTorch's default).
    A ``None`` gradient leaf skips the rule: the param and its buffers come back as they were
    (the same arrays). ``update(..., lr_scale=s)`` multiplies the learning rate by ``s``.
    """
    schedule = as_schedule(where, lr)
    check_decay_mask(where, decay_mask)
    start = dict(initial or {})

    def init(params: Any) -> dict[str, Any]:
        checks.float_leaves(where, "params", params, arrays_only=True)
        return {"step": np.array(0, np.int64), **{b: _tree.map(full_like(start.get(b, 0.0)), params) for b in buffers}}

    def update(params: Any, grads: Any, state: dict[str, Any], *,
               lr_scale: float | None = None) -> tuple[Any, dict[str, Any]]:
        checks.grads_like_params(where, params, grads)
        checks.state_dict(where, state, ("step", *buffers))
        step = checks.step(where, state["step"])
        rate = checks.rate(where, schedule, step, checks.lr_scale(where, lr_scale))
        decay = decay_flags(where, decay_mask, params)
        new_params, new_buffers = update_leaves(
            where, params, grads, state, buffers,
            lambda i, p, g, bufs: rule(p, g, bufs, step + 1, rate, weight_decay if decay[i] else 0.0), lambda p: p)
        return new_params, {"step": np.array(step + 1, np.int64), **new_buffers}

    return Optimizer(init, update)
