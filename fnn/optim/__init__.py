"""Pure optimizers as ``(init, update)`` pairs on parameter trees."""

from fnn.optim.base import Optimizer, Schedule
from fnn.optim.sgd import sgd

__all__ = ["Optimizer", "Schedule", "sgd"]
