"""Layer constructors. Each returns a :class:`fnn.Layer`, the pair ``(init, apply)``."""

from fnn.layers.activations import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from fnn.layers.conv import Conv2D
from fnn.layers.dense import Dense
from fnn.layers.pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from fnn.layers.reshape import Flatten, Identity

__all__ = [
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "Flatten",
    "GlobalAvgPool2D",
    "Identity",
    "LeakyReLU",
    "LogSoftmax",
    "MaxPool2D",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]
