"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import tree as _tree
from fnn.optim.base import Optimizer, Schedule, as_schedule, check_hyper, check_update_args, step_of

__all__ = ["sgd"]


def sgd(lr: float | Schedule, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
        dampening: float = 0.0) -> Optimizer:
    """SGD following ``torch.optim.SGD``'s documented update rule and defaults.

    With ``g = grad + weight_decay * p``: if ``momentum`` is non-zero,
    ``b = g`` on the first step and ``b = momentum * b + (1 - dampening) * g``
    after; ``g = g + momentum * b`` with ``nesterov`` else ``g = b``. Then
    ``p = p - lr * g``. ``lr`` is a number or a schedule ``step -> lr`` (step
    counts from 0). State: ``{"step": int64 scalar, "momentum": tree or {}}``.
    """
    where = "sgd"
    schedule = as_schedule(where, lr)
    momentum = check_hyper(where, "momentum", momentum)
    weight_decay = check_hyper(where, "weight_decay", weight_decay)
    dampening = check_hyper(where, "dampening", dampening, high=1.0)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("sgd: nesterov needs momentum > 0 and dampening = 0")
    buffers = ("momentum",) if momentum else ()

    def init(params: Any) -> dict[str, Any]:
        state: dict[str, Any] = {"step": np.array(0, np.int64)}
        if momentum:
            state["momentum"] = _tree.zeros_like(params)
        return state

    def update(params: Any, grads: Any, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        check_update_args(where, params, grads, state, buffers)
        step = step_of(state)
        rate = schedule(step)
        if weight_decay:
            grads = _tree.map(lambda g, p: g + weight_decay * p, grads, params)
        new_state: dict[str, Any] = {"step": np.array(step + 1, np.int64)}
        if momentum:
            if step == 0:
                buf = _tree.map(np.copy, grads)
            else:
                buf = _tree.map(lambda b, g: momentum * b + (1 - dampening) * g, state["momentum"], grads)
            new_state["momentum"] = buf
            grads = _tree.map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        new_params = _tree.map(lambda p, g: (p - rate * g).astype(p.dtype, copy=False), params, grads)
        return new_params, new_state

    return Optimizer(init, update)
