"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

import numpy as np

from fnn.optim.base import DecayMask, Optimizer, Schedule, check_hyper, leafwise

__all__ = ["sgd"]


def sgd(lr: float | Schedule, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
        dampening: float = 0.0, decay_mask: DecayMask | None = None) -> Optimizer:
    """SGD with ``torch.optim.SGD``'s documented update rule and defaults.

    With ``g = grad + weight_decay * p``: when ``momentum`` is non-zero,
    ``b = g`` on the first step and ``b = momentum * b + (1 - dampening) * g`` after,
    then ``g = g + momentum * b`` with ``nesterov``, else ``g = b``. Finally
    ``p = p - lr * g``. ``lr`` is a number or a schedule ``step -> lr``;
    ``decay_mask`` picks the leaves that get weight decay (see :func:`fnn.optim.leafwise`).
    State: ``{"step", "momentum"}`` (``"momentum"`` only when ``momentum > 0``).
    """
    where = "sgd"
    momentum = check_hyper(where, "momentum", momentum)
    weight_decay = check_hyper(where, "weight_decay", weight_decay)
    dampening = check_hyper(where, "dampening", dampening, high=1.0)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("sgd: nesterov needs momentum > 0 and dampening = 0")

    def rule(p: np.ndarray, g: np.ndarray, bufs: dict[str, np.ndarray], t: int, lr: float,
             wd: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if wd:
            g = g + wd * p
        if not momentum:
            return p - lr * g, {}
        b = np.copy(g) if t == 1 else momentum * bufs["momentum"] + (1 - dampening) * g  # never the caller's g
        step = g + momentum * b if nesterov else b
        return p - lr * step, {"momentum": b}

    return leafwise(where, lr, ("momentum",) if momentum else (), rule, weight_decay, decay_mask)
