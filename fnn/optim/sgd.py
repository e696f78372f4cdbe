"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

import numpy as np

from fnn import validate
from fnn.optim.base import DecayMask, Optimizer, Schedule, leafwise

__all__ = ["sgd"]


def _axpy(a: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A new array ``a * x + y``, built with one temporary."""
    out = np.multiply(x, a)
    out += y
    return out


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
    momentum = validate.number(where, "momentum", momentum, low=0.0)
    nesterov = validate.boolean(where, "nesterov", nesterov)
    weight_decay = validate.number(where, "weight_decay", weight_decay, low=0.0)
    dampening = validate.number(where, "dampening", dampening, low=0.0, high=1.0)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError("sgd: nesterov needs momentum > 0 and dampening = 0")

    def rule(p: np.ndarray, g: np.ndarray, bufs: dict[str, np.ndarray], t: int, lr: float,
             wd: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        # Each new array is made once and then updated in place (never the caller's arrays):
        # half the memory traffic of writing every expression out.
        if wd:
            g = _axpy(wd, p, g)
        if not momentum:
            return _axpy(-lr, g, p), {}
        if t == 1:
            b = np.copy(g)
        else:
            b = bufs["momentum"] * momentum
            b += g if dampening == 0 else (1 - dampening) * g
        step = _axpy(momentum, b, g) if nesterov else b
        return _axpy(-lr, step, p), {"momentum": b}

    return leafwise(where, lr, ("momentum",) if momentum else (), rule, weight_decay, decay_mask)
