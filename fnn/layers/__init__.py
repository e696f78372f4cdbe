"""Layer constructors. Each returns a :class:`fnn.Layer`, the pair ``(init, apply)``."""

from fnn.layers.activations import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from fnn.layers.attention import MultiHeadAttention
from fnn.layers.conv import Conv2D
from fnn.layers.dense import Dense
from fnn.layers.dropout import Dropout
from fnn.layers.embedding import Embedding
from fnn.layers.norm import BatchNorm, LayerNorm
from fnn.layers.pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from fnn.layers.position import PositionEmbedding, SinusoidalPositionEmbedding
from fnn.layers.recurrent import GRU, LSTM, RNN, LastStep, MeanOverTime
from fnn.layers.reshape import Flatten, Identity
from fnn.layers.transformer import TransformerEncoderLayer

__all__ = [
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GELU",
    "GRU",
    "GlobalAvgPool2D",
    "Identity",
    "LSTM",
    "LastStep",
    "LayerNorm",
    "LeakyReLU",
    "LogSoftmax",
    "MaxPool2D",
    "MeanOverTime",
    "MultiHeadAttention",
    "PositionEmbedding",
    "RNN",
    "ReLU",
    "SiLU",
    "Sigmoid",
    "SinusoidalPositionEmbedding",
    "Softmax",
    "Tanh",
    "TransformerEncoderLayer",
]
