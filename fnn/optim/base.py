"""What every optimizer shares: the ``(init, update)`` pair, learning-rate schedules as
functions of the step count, and the checks on hyperparameters and trees."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from fnn import tree as _tree

__all__ = ["Optimizer", "Schedule", "as_schedule", "check_hyper", "check_update_args", "step_of"]

Schedule = Callable[[int], float]


class Optimizer(NamedTuple):
    """A pure optimizer: ``state = init(params)``; ``params, state = update(params, grads, state)``.

    ``state`` is a tree of arrays holding the step count under ``"step"`` (so a
    checkpoint of it resumes schedules exactly) and the optimizer's buffers,
    each with the structure of ``params``.
    """

    init: Callable[[Any], dict[str, Any]]
    update: Callable[[Any, Any, dict[str, Any]], tuple[Any, dict[str, Any]]]


def check_hyper(where: str, name: str, value: Any, low: float = 0.0, high: float = math.inf,
                high_open: bool = False) -> float:
    """``value`` as a float after checking it is a finite number in ``[low, high]`` (or ``[low, high)``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    v = float(value)
    too_high = v >= high if high_open else v > high
    if math.isnan(v) or v < low or too_high or (math.isinf(v)):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{where}: {name} must be in [{low}, {high}{bracket}, got {value!r}")
    return v


def as_schedule(where: str, lr: float | Schedule) -> Schedule:
    """Turn a number into a constant schedule; check a number is a valid learning rate."""
    if callable(lr):
        return lr
    value = check_hyper(where, "lr", lr)
    return lambda step: value


def check_update_args(where: str, params: Any, grads: Any, state: Any, buffers: tuple[str, ...]) -> None:
    """Check ``grads`` and every buffer in ``state`` match ``params`` in structure and shapes."""
    _tree.check_same_structure(params, grads, names=["params", "grads"], shapes=True, where=where)
    if not isinstance(state, dict) or "step" not in state or any(b not in state for b in buffers):
        raise ValueError(f"{where}: state must be the dict made by this optimizer's init, "
                         f"with keys {sorted(('step',) + buffers)}")
    for b in buffers:
        _tree.check_same_structure(params, state[b], names=["params", f"state[{b!r}]"], shapes=True, where=where)


def step_of(state: dict[str, Any]) -> int:
    """The number of updates already applied."""
    return int(state["step"])
