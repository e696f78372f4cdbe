"""fnn: a functional, stateless neural-network library on NumPy.

Every layer is a pair of pure functions ``init(key, shape) -> params`` and
``apply(params, x) -> (y, vjp)``; see :mod:`fnn.core` for the protocol.
"""

from fnn import (
    data,
    distributed,
    inference,
    init,
    inspection,
    interop,
    layers,
    losses,
    metrics,
    ops,
    optim,
    per_example,
    random,
    runtime,
    testing,
    training,
    tree,
)
from fnn.checkpoint import CheckpointError, load, load_metadata, save
from fnn.combinators import elementwise, fan_in_concat, fan_in_sum, fan_out, parallel, residual, serial
from fnn.core import INITIAL_STATE, Layer, NonFiniteError, Output, output_shape
from fnn.inference import predict
from fnn.inspection import summary
from fnn.training import evaluate, fit, train_step, value_and_grad
from fnn.tying import tie

__version__ = "0.2.0"

__all__ = [
    "INITIAL_STATE",
    "CheckpointError",
    "Layer",
    "NonFiniteError",
    "Output",
    "data",
    "distributed",
    "elementwise",
    "evaluate",
    "fan_in_concat",
    "fan_in_sum",
    "fan_out",
    "fit",
    "inference",
    "init",
    "inspection",
    "interop",
    "layers",
    "load",
    "load_metadata",
    "losses",
    "metrics",
    "ops",
    "optim",
    "output_shape",
    "parallel",
    "per_example",
    "predict",
    "random",
    "residual",
    "runtime",
    "save",
    "serial",
    "summary",
    "testing",
    "tie",
    "train_step",
    "training",
    "tree",
    "value_and_grad",
]
