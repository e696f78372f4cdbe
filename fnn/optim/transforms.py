"""Gradient transformations, the pieces optimizers are made of: weight decay, momentum, the
scalings of Adam, RMSprop and Adagrad, and the learning rate. Each is a
:class:`~fnn.optim.GradientTransformation`; :func:`fnn.optim.chain` composes them and
:func:`fnn.optim.as_optimizer` makes a chain an optimizer. Each follows the part of PyTorch's
documented update rule it is named after, so

- ``chain(add_decayed_weights(wd), trace(m), scale_by_learning_rate(lr))`` is ``torch.optim.SGD``,
- ``chain(scale_by_adam(), add_decayed_weights(wd), scale_by_learning_rate(lr))`` is ``AdamW``,
- ``chain(add_decayed_weights(wd), scale_by_adam(), scale_by_learning_rate(lr))`` is ``Adam``,
- ``chain(scale_by_rms(alpha), trace(m), scale_by_learning_rate(lr))`` is ``RMSprop``

up to rounding (the optimizers ``fnn.optim.sgd`` … keep PyTorch's order of operations).

>>> opt = fnn.optim.as_optimizer(fnn.optim.chain(fnn.optim.trace(0.9), fnn.optim.scale_by_learning_rate(0.1)))
>>> params = {"w": np.array([1.0])}
>>> params, state = opt.update(params, {"w": np.array([1.0])}, opt.init(params))
>>> params["w"].tolist()
[0.9]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fnn import tree as _tree
from fnn import validate
from fnn.optim import checks
from fnn.optim.adaptive import adam_moments, rms_moments
from fnn.optim.base import GradientTransformation, Mask, Schedule, as_schedule, full_like, update_leaves

__all__ = ["identity", "scale", "scale_by_learning_rate", "add_decayed_weights", "trace", "scale_by_adam",
           "scale_by_rms", "scale_by_adagrad", "stateless", "leafwise_transform"]

Bufs = dict[str, np.ndarray]
LeafFn = Callable[[np.ndarray, np.ndarray, Bufs, int], tuple[np.ndarray, Bufs]]
"""``fn(u, p, buffers, t) -> (new_u, new_buffers)`` for one leaf whose update ``u`` is not
``None``; ``t`` counts updates from 1."""


def leafwise_transform(where: str, fn: LeafFn, buffers: Mapping[str, float] | None = None, *,
                       counts_steps: bool = False) -> GradientTransformation:
    """A :class:`~fnn.optim.GradientTransformation` from a per-leaf ``fn`` and its buffers (name -> starting
    value). State: ``{"step", *buffers}`` (``"step"`` with ``counts_steps``). A ``None`` update
    leaf skips ``fn``: it stays ``None`` and its buffers come back as they were."""
    start = dict(buffers or {})
    keys = (("step",) if counts_steps else ()) + tuple(start)

    def init(params: Any) -> dict[str, Any]:
        checks.float_leaves(where, "params", params, arrays_only=True)
        state: dict[str, Any] = {"step": np.array(0, np.int64)} if counts_steps else {}
        for b, value in start.items():
            state[b] = _tree.map(full_like(value), params)
        return state

    def update(updates: Any, state: dict[str, Any], params: Any, *,
               lr_scale: float | None = None) -> tuple[Any, dict[str, Any]]:
        checks.grads_like_params(where, params, updates, name="updates")
        checks.state_dict(where, state, keys, made_by="this transform's init")
        t = checks.step(where, state["step"]) + 1 if counts_steps else 0
        new_u, new_buffers = update_leaves(where, params, updates, state, tuple(start),
                                           lambda i, p, u, bufs: fn(np.asarray(u), p, bufs, t), lambda p: None)
        new_state: dict[str, Any] = {"step": np.array(t, np.int64)} if counts_steps else {}
        new_state.update(new_buffers)
        return new_u, new_state

    return GradientTransformation(init, update)


def stateless(where: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> GradientTransformation:
    """A transform without state (``{}``) applying ``fn(u, p)`` to every leaf that is not ``None``."""
    return leafwise_transform(where, lambda u, p, bufs, t: (fn(u, p), {}))


def identity() -> GradientTransformation:
    """Updates pass through unchanged (a group that :func:`fnn.optim.multi_transform` leaves
    as it is)."""
    return stateless("identity", lambda u, p: np.array(u, copy=True))


def scale(factor: float) -> GradientTransformation:
    """``u * factor``."""
    factor = validate.number("scale", "factor", factor)
    return stateless("scale", lambda u, p: u * factor)


def scale_by_learning_rate(lr: float | Schedule) -> GradientTransformation:
    """``u * -lr``: the last step of a chain, turning a direction into the change to add to the
    params. ``lr`` is a number or a schedule ``step -> lr``, and ``update(..., lr_scale=s)``
    multiplies it by ``s``. State: ``{"step"}``.

    >>> t = fnn.optim.scale_by_learning_rate(0.5)
    >>> p = {"w": np.zeros(2)}
    >>> t.update({"w": np.array([1.0, -2.0])}, t.init(p), p)[0]["w"].tolist()
    [-0.5, 1.0]
    """
    where = "scale_by_learning_rate"
    schedule = as_schedule(where, lr)
    inner = leafwise_transform(where, lambda u, p, bufs, t: (u, {}), counts_steps=True)

    def update(updates: Any, state: dict[str, Any], params: Any, *,
               lr_scale: float | None = None) -> tuple[Any, dict[str, Any]]:
        checks.state_dict(where, state, ("step",), made_by="this transform's init")
        rate = checks.rate(where, schedule, checks.step(where, state["step"]), checks.lr_scale(where, lr_scale))
        updates, state = inner.update(updates, state, params)
        return _tree.map(lambda u: None if u is None else np.asarray(u * -rate, u.dtype), updates), state

    return GradientTransformation(inner.init, update)


def add_decayed_weights(weight_decay: float, mask: Mask | None = None) -> GradientTransformation:
    """``u + weight_decay * p`` on the leaves ``mask`` selects (all when ``None``; a predicate
    ``(path, leaf) -> bool`` such as :func:`fnn.optim.weights_only`, or a tree of bools).
    Before a scaling it is L2 regularization (``torch.optim.Adam``'s ``weight_decay``); after
    ``scale_by_adam`` and before ``scale_by_learning_rate`` it is AdamW's decoupled decay.

    >>> t = fnn.optim.add_decayed_weights(0.1, mask=fnn.optim.weights_only)
    >>> p = {"w": np.ones((1, 2)), "b": np.ones(2)}
    >>> u = t.update(fnn.tree.zeros_like(p), t.init(p), p)[0]
    >>> u["w"].tolist(), u["b"].tolist()
    ([[0.1, 0.1]], [0.0, 0.0])
    """
    where = "add_decayed_weights"
    wd = validate.number(where, "weight_decay", weight_decay, low=0.0)
    if mask is not None:
        checks.mask_spec(where, "mask", mask)
    inner = stateless(where, lambda u, p: u + wd * p)

    def update(updates: Any, state: dict[str, Any], params: Any, *,
               lr_scale: float | None = None) -> tuple[Any, dict[str, Any]]:
        if mask is not None:
            checks.grads_like_params(where, params, updates, name="updates")
            on = checks.flags(where, "mask", mask, params)
            pairs, rebuild = _tree.flatten(updates)
            decayed = inner.update(rebuild([u if f else None for (_, u), f in zip(pairs, on)]), state, params)[0]
            return rebuild([d if f else u for (_, u), d, f in zip(pairs, _tree.leaves(decayed), on)]), state
        return inner.update(updates, state, params)

    return GradientTransformation(inner.init, update)


def trace(momentum: float, dampening: float = 0.0, nesterov: bool = False) -> GradientTransformation:
    """Momentum with ``torch.optim.SGD``'s rule: ``b = u`` on the first step and
    ``b = momentum * b + (1 - dampening) * u`` after; the output is ``u + momentum * b`` with
    ``nesterov``, else ``b``. State: ``{"step", "momentum"}``. (The first step is the
    chain's: a leaf frozen then and unfrozen later starts from ``b = 0``.)"""
    where = "trace"
    momentum = validate.number(where, "momentum", momentum, low=0.0)
    dampening = validate.number(where, "dampening", dampening, low=0.0, high=1.0)
    nesterov = validate.boolean(where, "nesterov", nesterov)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("trace: nesterov needs momentum > 0 and dampening = 0")

    def fn(u: np.ndarray, p: np.ndarray, bufs: Bufs, t: int) -> tuple[np.ndarray, Bufs]:
        b = np.array(u, copy=True) if t == 1 else momentum * bufs["momentum"] + (1 - dampening) * u
        return (u + momentum * b if nesterov else b), {"momentum": b}

    return leafwise_transform(where, fn, {"momentum": 0.0}, counts_steps=True)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  amsgrad: bool = False) -> GradientTransformation:
    """Adam's direction (``torch.optim.Adam`` without learning rate and decay):
    ``m = b1 m + (1 - b1) u``; ``v = b2 v + (1 - b2) u²`` (``amsgrad``: the running max of
    ``v``); output ``m / (1 - b1^t) / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    State: ``{"step", "exp_avg", "exp_avg_sq"}`` plus ``"max_exp_avg_sq"`` with ``amsgrad``."""
    where = "scale_by_adam"
    b1 = validate.number(where, "b1", b1, low=0.0, high=1.0, high_open=True)
    b2 = validate.number(where, "b2", b2, low=0.0, high=1.0, high_open=True)
    eps = validate.number(where, "eps", eps, low=0.0)
    amsgrad = validate.boolean(where, "amsgrad", amsgrad)
    buffers = {"exp_avg": 0.0, "exp_avg_sq": 0.0, **({"max_exp_avg_sq": 0.0} if amsgrad else {})}

    def fn(u: np.ndarray, p: np.ndarray, bufs: Bufs, t: int) -> tuple[np.ndarray, Bufs]:
        out, denom = adam_moments(bufs, u, t, b1, b2, eps, amsgrad)
        return out["exp_avg"] / denom / (1 - b1 ** t), out

    return leafwise_transform(where, fn, buffers, counts_steps=True)


def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8, centered: bool = False) -> GradientTransformation:
    """RMSprop's direction (``torch.optim.RMSprop`` without learning rate, decay and momentum):
    ``v = alpha v + (1 - alpha) u²``; with ``centered`` the running mean ``a`` of ``u`` is kept
    and ``v - a²`` used; output ``u / (sqrt(v) + eps)``. State: ``{"square_avg"}`` plus
    ``"grad_avg"`` with ``centered``."""
    where = "scale_by_rms"
    alpha = validate.number(where, "alpha", alpha, low=0.0, high=1.0)
    eps = validate.number(where, "eps", eps, low=0.0)
    centered = validate.boolean(where, "centered", centered)

    def fn(u: np.ndarray, p: np.ndarray, bufs: Bufs, t: int) -> tuple[np.ndarray, Bufs]:
        out, v = rms_moments(bufs, u, alpha, centered)
        return u / (np.sqrt(v) + eps), out

    return leafwise_transform(where, fn, {"square_avg": 0.0, **({"grad_avg": 0.0} if centered else {})})


def scale_by_adagrad(initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> GradientTransformation:
    """Adagrad's direction (``torch.optim.Adagrad`` without learning rate and decay):
    ``s += u²``; output ``u / (sqrt(s) + eps)``. State: ``{"sum"}``, starting at
    ``initial_accumulator_value``. (Adagrad's ``lr_decay`` is the schedule
    ``lambda step: lr / (1 + step * lr_decay)`` given to ``scale_by_learning_rate``.)"""
    where = "scale_by_adagrad"
    start = validate.number(where, "initial_accumulator_value", initial_accumulator_value, low=0.0)
    eps = validate.number(where, "eps", eps, low=0.0)

    def fn(u: np.ndarray, p: np.ndarray, bufs: Bufs, t: int) -> tuple[np.ndarray, Bufs]:
        s = bufs["sum"] + u * u
        return u / (np.sqrt(s) + eps), {"sum": s}

    return leafwise_transform(where, fn, {"sum": start})
