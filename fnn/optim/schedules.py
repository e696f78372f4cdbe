"""Learning-rate schedules: functions ``step -> lr`` with ``step`` counting updates from 0.

Pass one as ``lr`` to any optimizer; the step count lives in the optimizer state.

>>> s = cosine(0.1, total_steps=100, warmup_steps=10)
>>> round(s(0), 4), round(s(10), 4), round(s(100), 4)
(0.01, 0.1, 0.0)
"""

from __future__ import annotations

import math

from fnn import validate
from fnn.optim.base import Schedule

__all__ = ["constant", "step_decay", "exponential", "cosine"]


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    value = validate.number("constant", "lr", lr, low=0.0)
    return lambda step: value


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** (step // step_size)`` (``torch.optim.lr_scheduler.StepLR`` counted in updates)."""
    value = validate.number("step_decay", "lr", lr, low=0.0)
    size = validate.integer("step_decay", "step_size", step_size, low=1)
    gamma = validate.number("step_decay", "gamma", gamma, low=0.0)
    return lambda step: value * gamma ** (step // size)


def exponential(lr: float, gamma: float) -> Schedule:
    """``lr * gamma ** step``."""
    value = validate.number("exponential", "lr", lr, low=0.0)
    gamma = validate.number("exponential", "gamma", gamma, low=0.0)
    return lambda step: value * gamma ** step


def cosine(lr: float, total_steps: int, min_lr: float = 0.0, warmup_steps: int = 0) -> Schedule:
    """Linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` updates, then
    cosine decay to ``min_lr`` at ``total_steps`` (and ``min_lr`` after)."""
    value = validate.number("cosine", "lr", lr, low=0.0)
    low = validate.number("cosine", "min_lr", min_lr, low=0.0, high=value)
    total = validate.integer("cosine", "total_steps", total_steps, low=1)
    warm = validate.integer("cosine", "warmup_steps", warmup_steps, low=0)
    if warm >= total:
        raise ValueError(f"cosine: warmup_steps ({warm}) must be less than total_steps ({total})")

    def schedule(step: int) -> float:
        if step < warm:
            return value * (step + 1) / warm
        progress = min((step - warm) / (total - warm), 1.0)
        return low + (value - low) * 0.5 * (1 + math.cos(math.pi * progress))

    return schedule
