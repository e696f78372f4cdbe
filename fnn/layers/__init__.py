"""Layer constructors. Each returns a :class:`fnn.Layer`, the pair ``(init, apply)``."""

from fnn.layers.activations import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from fnn.layers.dense import Dense
from fnn.layers.reshape import Flatten, Identity

__all__ = [
    "Dense",
    "Flatten",
    "Identity",
    "LeakyReLU",
    "LogSoftmax",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]
