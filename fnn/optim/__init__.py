"""Pure optimizers as ``(init, update)`` pairs on parameter trees, learning-rate schedules
and gradient clipping. Update rules and defaults follow PyTorch's documentation."""

from fnn.optim.adaptive import adagrad, adam, adamw, rmsprop
from fnn.optim.base import DecayMask, Optimizer, Schedule, leafwise, weights_only
from fnn.optim.clip import clip_by_global_norm, clip_by_value
from fnn.optim.schedules import constant, cosine, exponential, step_decay
from fnn.optim.sgd import sgd

__all__ = [
    "DecayMask",
    "Optimizer",
    "Schedule",
    "adagrad",
    "adam",
    "adamw",
    "clip_by_global_norm",
    "clip_by_value",
    "constant",
    "cosine",
    "exponential",
    "leafwise",
    "rmsprop",
    "sgd",
    "step_decay",
    "weights_only",
]
