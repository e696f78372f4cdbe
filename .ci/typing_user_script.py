"""A user's script for CI's typing check (.ci/run): mypy, run on it beside the installed wheel, must
find fnn's annotations (the wheel ships py.typed) and report exactly one error, the ``str`` passed
as ``Dense``'s ``out_features`` below. Everything else here type-checks."""

import numpy as np

import fnn
from fnn.layers import Dense, ReLU

net = fnn.serial(Dense(8), ReLU(), Dense(3))
params = net.init(fnn.random.key(0), (4,))
y, vjp = net.apply(params, np.zeros((2, 4), np.float32))
wrong = Dense("8")  # the error mypy must report: out_features is an int
