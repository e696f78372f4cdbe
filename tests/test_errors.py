"""The bad-input catalogue (``docs/errors.md``): one test per entry.

Every user mistake raises ``ValueError``/``TypeError`` (or a documented subclass:
``CheckpointError``, ``NonFiniteError``) whose message names the layer or function,
the argument, and the shape, value or key path received. Each ``match=`` below checks
both: ``m(...)`` joins literal fragments (escaped) with ``.*``, the first fragment
naming the layer/function and a later one the offending shape/value/key path.
Entries that are not errors (NaN propagation, empty batches, ``allclose``) check the
defined behaviour instead.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from registry import FIXED

import fnn
from fnn import losses, optim, random, tree
from fnn.layers import (
    GRU,
    LSTM,
    RNN,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    LastStep,
    LayerNorm,
    LeakyReLU,
    MaxPool2D,
    MultiHeadAttention,
    PositionEmbedding,
    ReLU,
    SinusoidalPositionEmbedding,
    Softmax,
    Tanh,
    TransformerEncoderLayer,
)

KEY = random.key(0)


def m(*parts: str) -> str:
    """A regex matching the literal ``parts`` in order, anything in between."""
    return ".*".join(re.escape(p) for p in parts)


def ones(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.ones(shape, dtype)


# One row per layer taking one array, from the registry: (id, constructor, example shape).
# Used by the dtype, NaN and empty-batch entries.
LAYERS = FIXED
LAYER_IDS = [row[0] for row in LAYERS]


def build(make, shape, dtype=np.float32):
    layer = make()
    return layer, layer.init(KEY, shape, dtype)


# ------------------------------------------------------------------------------------ inputs

@pytest.mark.parametrize("make, shape, x, error, match", [
    (lambda: Dense(3), (4,), ones(2, 5), ValueError, m("Dense(3)", "params['w'] has shape (4, 3)", "needs (5, 3)")),
    (lambda: Dense(3), (4,), ones(4), ValueError, m("Dense(3)", "input x must be (N, ..., features)", "shape (4,)")),
    (lambda: Conv2D(2, 3), (3, 8, 8), ones(2, 4, 8, 8), ValueError,
     m("Conv2D(2, 3)", "input has 4 channels but params expect 3", "(2, 4, 8, 8)")),
    (lambda: Conv2D(2, 3), (3, 8, 8), ones(2, 3, 8), ValueError, m("Conv2D(2, 3)", "(N, C, H, W)", "shape (2, 3, 8)")),
    (lambda: BatchNorm(), (3,), ones(2, 4), ValueError, m("BatchNorm()", "params['gamma'] has shape (3,)", "(4,)")),
    (lambda: BatchNorm(), (3,), ones(2), ValueError, m("BatchNorm()", "input must be (N, C)", "shape (2,)")),
    (lambda: BatchNorm(), (3,), ones(2, 3, 2, 2, 2), ValueError, m("BatchNorm()", "shape (2, 3, 2, 2, 2)")),
    (lambda: LayerNorm(), (3,), ones(2, 4), ValueError, m("LayerNorm(1)", "params['gamma'] has shape (3,)", "(4,)")),
    (lambda: LSTM(4), (5, 3), ones(2, 5, 4), ValueError,
     m("LSTM(4) params['l0']", "params['w_ih'] has shape (3, 16)", "needs (4, 16)")),
    (lambda: LSTM(4), (5, 3), ones(2, 3), ValueError, m("LSTM(4)", "input must be (N, T, F)", "shape (2, 3)")),
    (lambda: LSTM(4), (5, 3), ones(2, 0, 3), ValueError, m("LSTM(4)", "no time steps", "(2, 0, 3)")),
    (lambda: GRU(4), (5, 3), ones(2, 5, 2), ValueError, m("GRU(4) params['l0']", "(3, 12)", "needs (2, 12)")),
    (lambda: RNN(4), (5, 3), ones(2, 5, 2), ValueError, m("RNN(4) params['l0']", "(3, 4)", "needs (2, 4)")),
    (lambda: MaxPool2D(2), (3, 4, 4), ones(2, 3, 4), ValueError, m("MaxPool2D(2)", "(N, C, H, W)", "(2, 3, 4)")),
    (lambda: GlobalAvgPool2D(), (3, 4, 4), ones(2, 3), ValueError, m("GlobalAvgPool2D()", "(2, 3)")),
    (lambda: Softmax(), (4,), ones(4), ValueError, m("Softmax()", "axis -1", "shape (4,)")),
    (lambda: LastStep(), (5, 2), ones(2, 2), ValueError, m("LastStep()", "(N, T, F)", "shape (2, 2)")),
    (lambda: fnn.serial(Dense(4), ReLU(), Dense(2)), (3,), ones(2, 5), ValueError,
     m("serial layer 0 'dense_0' (Dense(4))", "params['w'] has shape (3, 4)", "needs (5, 4)")),
    (lambda: Dense(3), (4,), np.float32(1.0), TypeError, m("Dense(3)", "numpy array", "float32")),
    (lambda: Dense(3), (4,), np.array(1.0, np.float32), ValueError, m("Dense(3)", "batch axis", "0-d")),
])
def test_input_rank_or_features_differ_from_init(make, shape, x, error, match):
    layer, params = build(make, shape)
    with pytest.raises(error, match=match):
        layer.apply(params, x)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.mse(ones(4), ones(4, 1)), m("mse: pred has shape (4,) but target has shape (4, 1)")),
    (lambda: losses.mse(ones(4, 1), ones(4)), m("mse: pred has shape (4, 1) but target has shape (4,)")),
    (lambda: losses.mse(ones(4, 3), ones(1, 3)), m("mse", "(4, 3)", "(1, 3)")),
    (lambda: losses.softmax_cross_entropy(ones(4, 3), np.zeros((4, 1), np.int64)),
     m("softmax_cross_entropy: integer labels must have shape (4,)", "got (4, 1)", "squeeze")),
    (lambda: losses.accuracy(ones(4, 3), np.zeros((4, 1), np.int64)), m("accuracy", "labels", "got (4, 1)")),
    (lambda: fnn.fan_in_sum().apply({}, (ones(2, 3), ones(2, 1))), m("fan_in_sum()", "[(2, 3), (2, 1)]")),
    (lambda: tree.add({"a": ones(3)}, {"a": ones(1)}), m("fnn.tree.add", "at ['a']: (3,) vs (1,)")),
    (lambda: Dense(2).apply(Dense(2).init(KEY, (3,)), ones(4, 3))[1](ones(1, 2)),
     m("Dense(2).vjp: dy has shape (1, 2)", "(4, 2)")),
])
def test_silent_broadcast_traps_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.bool_, object, np.float16, np.complex64])
@pytest.mark.parametrize("make, shape", [row[1:] for row in LAYERS], ids=LAYER_IDS)
def test_non_float_inputs_to_layers(make, shape, dtype):
    layer, params = build(make, shape)
    x = np.zeros((2, *shape), dtype)
    # serial passes integer arrays on to its first layer, whose message then names it
    with pytest.raises(TypeError, match=m(layer.kind, f"input x has dtype {np.dtype(dtype)}", "float32 or float64")):
        layer.apply(params, x, train=True, key=KEY)


def test_list_input_to_a_layer():
    layer, params = build(lambda: Dense(3), (4,))
    with pytest.raises(TypeError, match=m("Dense(3): input x must be a numpy array", "list")):
        layer.apply(params, [[1.0] * 4])


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("make, shape", [row[1:] for row in LAYERS], ids=LAYER_IDS)
def test_nan_propagates_through_every_layer(make, shape, train):
    layer, params = build(make, shape)
    x = random.normal(KEY, (3, *shape))
    x.flat[-1] = np.nan  # the last time step / last window: every layer reads it
    with np.errstate(invalid="ignore"):
        out = layer.apply(params, x, train=train, key=KEY, state=None if train else fnn.INITIAL_STATE)
        _, dx = out.vjp(np.ones_like(out.y))
    assert np.isnan(out.y).any(), "a NaN input was masked"
    assert dx.shape == x.shape


def log_layer():
    return fnn.elementwise(np.log, lambda x: 1 / x, name="log")


def huge_dense():
    return Dense(3, w_init=lambda k, s, dt: np.full(s, 1e38, dt))


@pytest.mark.parametrize("make, x, match", [
    (lambda: fnn.serial(Dense(3), log_layer(), Dense(2)), -ones(2, 4),
     m("serial layer 1 'elementwise_0' (elementwise(log))", "check_finite", "produced 2 NaN and 0 inf")),
    (lambda: fnn.serial(huge_dense(), Dense(2)), ones(2, 4),
     m("serial layer 0 'dense_0' (Dense(3))", "produced 0 NaN and 6 inf")),
    (lambda: fnn.serial(("block", fnn.serial(Dense(3), log_layer())), Dense(2)), -ones(2, 4),
     m("serial layer 0 'block' (serial): serial layer 1 'elementwise_0'", "produced 4 NaN")),
    (lambda: fnn.serial(Dense(3), Dense(2)), np.array([[np.nan, 1, 1, 1]], np.float32),
     m("serial: check_finite: the input already has 1 NaN and 0 inf")),
])
def test_check_finite_names_the_first_nonfinite_layer(make, x, match):
    layer = make()
    with np.errstate(all="ignore"):
        params = layer.init(KEY, (4,))  # init applies the layers to zeros: log(0) = -inf
        with pytest.raises(fnn.NonFiniteError, match=match):
            layer.apply(params, x, check_finite=True)
        assert not np.isfinite(layer.apply(params, x)[0]).all()  # off by default: NaN/inf propagate


def empty_batch_rows():
    for name, make, shape in LAYERS:
        yield pytest.param(make, shape, id=name)
    yield pytest.param(lambda: fnn.serial(LSTM(3), LastStep()), (4, 2), id="serial-LSTM")


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("make, shape", list(empty_batch_rows()))
def test_empty_batch_gives_a_defined_output(make, shape, train):
    layer, params = build(make, shape)
    out_shape = fnn.output_shape(layer, params, shape)
    given = None if train else fnn.INITIAL_STATE
    if layer.kind.startswith("BatchNorm"):
        given = {"mean": np.full(shape[0], 0.5, np.float32), "var": np.full(shape[0], 2.0, np.float32)}
    x = np.zeros((0, *shape), np.float32)
    with np.errstate(all="raise"):  # no 0/0 statistics
        out = layer.apply(params, x, train=train, key=KEY, state=given)
        grads, dx = out.vjp(np.zeros_like(out.y))
    assert out.y.shape == (0, *out_shape) and out.y.dtype == np.float32
    assert dx.shape == x.shape
    assert tree.allclose(grads, tree.zeros_like(params), atol=0)
    for leaf in tree.leaves(out.state):
        assert np.isfinite(leaf).all()
    if isinstance(given, dict):  # running statistics unchanged
        assert tree.allclose(out.state, given, atol=0, rtol=0)
    if layer.kind == "serial":
        initial = layer.apply(params, ones(1, *shape), state=fnn.INITIAL_STATE).state
        assert tree.allclose(out.state, initial, atol=0, rtol=0)
    if layer.kind.startswith(("Dense", "Conv2D", "residual")):  # per-example gradient norms
        assert fnn.per_example.grad_norms(out.vjp, np.zeros_like(out.y)).shape == (0,)


@pytest.mark.parametrize("call, grad_shape", [
    (lambda: losses.softmax_cross_entropy(np.zeros((0, 3), np.float32), np.zeros(0, np.int64)), (0, 3)),
    (lambda: losses.softmax_cross_entropy(np.zeros((0, 3)), np.zeros((0, 3)), label_smoothing=0.1), (0, 3)),
    (lambda: losses.softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64), reduction="sum"), (0, 3)),
    (lambda: losses.mse(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)), (0, 2)),
    (lambda: losses.mse(np.zeros((0,)), np.zeros((0,)), reduction="sum"), (0,)),
    (lambda: (losses.accuracy(np.zeros((0, 3)), np.zeros(0, np.int64)), np.zeros((0, 3))), (0, 3)),
])
def test_empty_batch_losses_are_zero(call, grad_shape):
    with np.errstate(all="raise"):
        value, grad = call()
    assert value == 0.0 and isinstance(value, float)
    assert grad.shape == grad_shape and not np.isnan(grad).any()


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_batchnorm_training_on_one_value_per_channel(shape):
    bn = BatchNorm()
    params = bn.init(KEY, shape[1:])
    with pytest.raises(ValueError, match=m("BatchNorm()", "more than one value per channel", f"shape {shape}")):
        bn.apply(params, ones(*shape), train=True)
    net = fnn.serial(BatchNorm())
    with pytest.raises(ValueError, match=m("serial layer 0 'batch_norm_0' (BatchNorm())", f"shape {shape}")):
        net.apply(net.init(KEY, shape[1:]), ones(*shape), train=True)
    assert bn.apply(params, ones(*shape), state=fnn.INITIAL_STATE).y.shape == shape  # evaluation is fine


LOGITS = ones(4, 3)


@pytest.mark.parametrize("fn", [losses.softmax_cross_entropy, losses.accuracy], ids=["sce", "accuracy"])
@pytest.mark.parametrize("labels, error, match", [
    (np.array([0, 1, 2, 3]), ValueError, m("labels must be in [0, 3) for 3 classes, got 3")),
    (np.array([0, -1, 2, 1]), ValueError, m("labels must be in [0, 3)", "got -1")),
    (np.array([0.0, 1.0, 2.0, 1.0]), ValueError, m("float labels are probability rows of shape (4, 3), got (4,)",
                                                   "integer array")),
    (np.array([0, 1, 2]), ValueError, m("integer labels must have shape (4,)", "got (3,)")),
    (np.zeros((4, 3, 1), np.int64), ValueError, m("integer labels must have shape (4,)", "got (4, 3, 1)")),
    (np.ones((4, 2)), ValueError, m("probability rows of shape (4, 3), got (4, 2)")),
    (np.array([True, False, True, True]), TypeError, m("labels must be integer classes", "dtype bool")),
    (np.array([0, 1, 2, None]), TypeError, m("labels must be integer classes", "dtype object")),
])
def test_bad_labels(fn, labels, error, match):
    with pytest.raises(error, match=m(fn.__name__ + ": ") + ".*" + match):
        fn(LOGITS, labels)


@pytest.mark.parametrize("call, match", [
    (lambda: Conv2D(2, 5).init(KEY, (1, 3, 3)), m("Conv2D(2, 5)", "kernel (5, 5)", "padded input (3, 3)")),
    (lambda: Conv2D(2, 5).apply(Conv2D(2, 5).init(KEY, (1, 8, 8)), ones(1, 1, 3, 3)),
     m("Conv2D(2, 5)", "kernel (5, 5)", "larger than the padded input (3, 3)")),
    (lambda: Conv2D(2, 3, dilation=3).init(KEY, (1, 5, 5)), m("Conv2D(2, 3, dilation=3)", "span (7, 7)", "(5, 5)")),
    (lambda: Conv2D(2, (3, 6), padding=1).init(KEY, (1, 5, 3)), m("Conv2D", "kernel (3, 6)", "padded input (7, 5)")),
    (lambda: MaxPool2D(4).init(KEY, (1, 3, 3)), m("MaxPool2D(4)", "kernel (4, 4)", "(3, 3)")),
    (lambda: MaxPool2D(4).apply({}, ones(1, 1, 3, 3)), m("MaxPool2D(4)", "kernel (4, 4)", "(3, 3)")),
    (lambda: AvgPool2D(4, padding=1).apply({}, ones(1, 1, 1, 1)), m("AvgPool2D(4, padding=1)", "padded input (3, 3)")),
    (lambda: fnn.serial(Conv2D(2, 3), MaxPool2D(4)).init(KEY, (1, 5, 5)),
     m("serial layer 1 'max_pool2d_0' (MaxPool2D(4)) with input shape (2, 3, 3)", "kernel (4, 4)")),
])
def test_kernel_larger_than_padded_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: Conv2D(2, 0), ValueError, m("Conv2D(2, 0): kernel_size must be >= 1, got 0")),
    (lambda: Conv2D(2, (3, -1)), ValueError, m("kernel_size must be >= 1, got (3, -1)")),
    (lambda: Conv2D(2, 3, stride=0), ValueError, m("Conv2D(2, 3, stride=0): stride must be >= 1, got 0")),
    (lambda: Conv2D(2, 3, stride=(1, -2)), ValueError, m("stride must be >= 1, got (1, -2)")),
    (lambda: Conv2D(2, 3, dilation=0), ValueError, m("Conv2D(2, 3, dilation=0): dilation must be >= 1, got 0")),
    (lambda: Conv2D(2, 3, dilation=-1), ValueError, m("dilation must be >= 1, got -1")),
    (lambda: MaxPool2D(0), ValueError, m("MaxPool2D(0): kernel_size must be >= 1, got 0")),
    (lambda: MaxPool2D(2, stride=0), ValueError, m("MaxPool2D(2, stride=0): stride must be >= 1, got 0")),
    (lambda: AvgPool2D(-2), ValueError, m("AvgPool2D(-2): kernel_size must be >= 1, got -2")),
    (lambda: Conv2D(2, 2.5), TypeError, m("Conv2D(2, 2.5): kernel_size must be an int or a pair of ints, got 2.5")),
    (lambda: Conv2D(2, (1, 2, 3)), TypeError, m("kernel_size must be an int or a pair", "(1, 2, 3)")),
    (lambda: Conv2D(2, None), TypeError, m("kernel_size", "got None")),
    (lambda: MaxPool2D(True), TypeError, m("kernel_size", "got True")),
])
def test_nonpositive_kernel_stride_or_dilation(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: Conv2D(2, 3, padding=-1), ValueError, m("Conv2D(2, 3, padding=-1): padding must be >= 0, got -1")),
    (lambda: Conv2D(2, 3, padding=(0, -2)), ValueError, m("padding must be >= 0, got (0, -2)")),
    (lambda: Conv2D(2, 3, padding=((0, -1), (0, 0))), ValueError, m("padding must be >= 0, got (0, -1)")),
    (lambda: MaxPool2D(2, padding=-1), ValueError, m("MaxPool2D(2, padding=-1): padding must be >= 0, got -1")),
    (lambda: AvgPool2D(2, padding=2), ValueError, m("AvgPool2D(2, padding=2)", "at most half the kernel", "got 2")),
    (lambda: Conv2D(2, 3, padding="full"), ValueError, m("Conv2D", "padding must be", "got 'full'")),
    (lambda: MaxPool2D(2, padding="same"), ValueError, m("MaxPool2D", "padding must be \"valid\"", "got 'same'")),
    (lambda: Conv2D(2, 3, padding=1.5), TypeError, m("Conv2D", "padding must be an int or a pair of ints, got 1.5")),
])
def test_negative_or_malformed_padding(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("rate, error, match", [
    (-0.1, ValueError, "must be in [0, 1), got -0.1"),
    (1, ValueError, "must be in [0, 1), got 1"),
    (1.5, ValueError, "must be in [0, 1), got 1.5"),
    (float("nan"), ValueError, "must be a finite number, got nan"),
    (float("inf"), ValueError, "must be a finite number, got inf"),
    ("0.5", TypeError, "must be a number, got str '0.5'"),
    (None, TypeError, "must be a number, got NoneType None"),
    (True, TypeError, "must be a number, got bool True"),
])
def test_dropout_rate_outside_zero_one(rate, error, match):
    with pytest.raises(error, match=m(f"Dropout({rate!r}): rate (the probability of dropping) ", match)):
        Dropout(rate)


# ------------------------------------------------------------------------------------ trees and optimizers

def make_params():
    return {"a": {"b": np.zeros(3, np.float32), "w": np.ones((2, 3), np.float32)}, "c": np.ones(2, np.float32)}


def missing_key(t):
    del t["a"]["b"]
    return t


def extra_key(t):
    t["a"]["z"] = np.ones(1, np.float32)
    return t


def wrong_shape(t):
    t["a"]["w"] = np.ones((3, 2), np.float32)
    return t


MISMATCHES = [
    pytest.param(missing_key, "differ in structure at ['a']: missing key(s) 'b'", id="missing-key"),
    pytest.param(extra_key, "differ in structure at ['a']: unexpected key(s) 'z'", id="extra-key"),
    pytest.param(wrong_shape, "differ in shape at ['a']['w']: (2, 3) vs (3, 2)", id="wrong-shape"),
]
OPTIMIZERS = [
    pytest.param("sgd", lambda: optim.sgd(0.1), id="sgd"),
    pytest.param("sgd", lambda: optim.sgd(0.1, momentum=0.9, nesterov=True), id="sgd-nesterov"),
    pytest.param("adagrad", lambda: optim.adagrad(), id="adagrad"),
    pytest.param("rmsprop", lambda: optim.rmsprop(centered=True, momentum=0.5), id="rmsprop"),
    pytest.param("adam", lambda: optim.adam(amsgrad=True), id="adam"),
    pytest.param("adamw", lambda: optim.adamw(), id="adamw"),
]


@pytest.mark.parametrize("mutate, match", MISMATCHES)
@pytest.mark.parametrize("name, make", OPTIMIZERS)
def test_grads_not_matching_params_in_every_optimizer(name, make, mutate, match):
    opt = make()
    params = make_params()
    with pytest.raises(ValueError, match=f"^{name}: params and grads " + m(match)):
        opt.update(params, mutate(make_params()), opt.init(params))


@pytest.mark.parametrize("call, error, match", [
    (lambda o, p: o.update(p, {**p, "c": np.ones(2, np.int64)}, o.init(p)), TypeError,
     m("grads leaf at ['c'] must be a float numpy array, got dtype int64")),
    (lambda o, p: o.update(p, {**p, "c": np.array([1.0, None])}, o.init(p)), TypeError,
     m("grads leaf at ['c']", "dtype object")),
    (lambda o, p: o.init({**p, "c": 1.0}), TypeError, m("params leaf at ['c'] must be a float numpy array, got float")),
    (lambda o, p: o.init({**p, "c": np.ones(2, np.int32)}), TypeError, m("params leaf at ['c']", "dtype int32")),
    (lambda o, p: o.update(p, p, {"step": np.array(0)}), ValueError,
     m("state must be the dict made by this optimizer's init", "got ['step']")),
    (lambda o, p: o.update(p, p, None), ValueError, m("state must be the dict", "got NoneType")),
    (lambda o, p: o.update(p, p, {**o.init(p), "step": np.array(-1)}), ValueError,
     m("state['step'] must be a non-negative integer", "array(-1)")),
    (lambda o, p: o.update(p, p, {**o.init(p), "step": None}), ValueError, m("state['step']", "got None")),
    (lambda o, p: o.update(p, p, o.init(missing_key(make_params()))), ValueError,
     m("params and state['exp_avg'] differ in structure at ['a']: missing key(s) 'b'")),
])
def test_optimizer_params_and_state_malformed(call, error, match):
    opt = optim.adam()
    with pytest.raises(error, match="^adam: " + match):
        call(opt, make_params())


TREE_FUNCTIONS = [
    pytest.param("map", lambda a, b: tree.map(lambda x, y: x + y, a, b), id="map"),
    pytest.param("map_with_path", lambda a, b: tree.map_with_path(lambda p, x, y: x - y, a, b), id="map_with_path"),
    pytest.param("add", tree.add, id="add"),
    pytest.param("sub", tree.sub, id="sub"),
    pytest.param("axpy", lambda a, b: tree.axpy(2.0, a, b), id="axpy"),
    pytest.param("vdot", tree.vdot, id="vdot"),
    pytest.param("", lambda a, b: tree.check_same_structure(a, b, shapes=True), id="check_same_structure"),
]


@pytest.mark.parametrize("mutate, match", MISMATCHES)
@pytest.mark.parametrize("name, fn", TREE_FUNCTIONS)
def test_tree_functions_taking_several_trees(name, fn, mutate, match):
    where = "fnn.tree" + (f".{name}" if name else "")
    if mutate is wrong_shape and name.startswith("map"):
        # map does not compare leaf shapes (fn may combine a leaf with a per-leaf scalar); the
        # error fn raises is re-raised with the key path and both leaves' shapes.
        match = "fn failed at ['a']['w'] (leaves (2, 3), (3, 2))"
    with pytest.raises(ValueError, match="^" + m(where + ": ", match)):
        fn(make_params(), mutate(make_params()))


@pytest.mark.parametrize("mutate", [missing_key, extra_key, wrong_shape, lambda t: [t], lambda t: t["c"]])
def test_tree_allclose_is_false_for_mismatched_trees(mutate):
    assert tree.allclose(make_params(), make_params())
    assert tree.allclose(make_params(), mutate(make_params())) is False
    assert tree.allclose(mutate(make_params()), make_params()) is False


@pytest.mark.parametrize("call, error, match", [
    (lambda: tree.vdot({"a": None}, {"a": None}), TypeError, m("fnn.tree.vdot: the leaf at ['a'] is NoneType")),
    (lambda: tree.global_norm({"a": {"b": "x"}}), TypeError, m("fnn.tree.global_norm: the leaf at ['a']['b'] is str")),
    (lambda: tree.add({1: ones(1), "a": ones(1)}, {1: ones(1), "a": ones(1)}), TypeError,
     m("fnn.tree: dict keys must be sortable", "[1, 'a']")),
    (lambda: tree.map(lambda x, y: x, [ones(1)], (ones(1),)), ValueError,
     m("fnn.tree.map", "at <root>: list vs tuple")),
])
def test_tree_leaves_and_keys_that_are_not_allowed(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------------ params, keys, hyperparameters

def replace(params, path, value):
    params = tree.map(lambda a: a, params)
    node = params
    for k in path[:-1]:
        node = node[k]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return params


NET = lambda: fnn.serial(Dense(4), ReLU(), Dense(2))  # noqa: E731


@pytest.mark.parametrize("make, shape, params, x, error, match", [
    (NET, (3,), lambda: fnn.serial(Dense(4), Tanh(), Dense(2)).init(KEY, (3,)), ones(2, 3), ValueError,
     m("serial: params has keys ['dense_0', 'dense_1', 'tanh_0']", "expects ['dense_0', 'dense_1', 'relu_0']")),
    (NET, (3,), lambda: None, ones(2, 3), ValueError, m("serial: params has keys NoneType", "expects ['dense_0'")),
    (NET, (3,), lambda: replace(NET().init(KEY, (3,)), ("dense_1", "w"), ones(5, 2)), ones(2, 3), ValueError,
     m("serial layer 2 'dense_1' (Dense(2)): Dense(2): params['w'] has shape (5, 2)", "needs (4, 2)")),
    (NET, (3,), lambda: replace(NET().init(KEY, (3,)), ("dense_0", "b"), None), ones(2, 3), ValueError,
     m("serial layer 0 'dense_0'", "params has keys ['w'] but this layer expects ['b', 'w']")),
    (NET, (3,), lambda: replace(NET().init(KEY, (3,)), ("dense_0", "w"), [[0.0] * 4] * 3), ones(2, 3), TypeError,
     m("Dense(4): params['w'] must be a numpy array, got list")),
    (NET, (3,), lambda: replace(NET().init(KEY, (3,)), ("relu_0",), {"w": ones(1)}), ones(2, 3), ValueError,
     m("serial layer 1 'relu_0' (ReLU()): ReLU(): has no parameters and expects params {}, got {'w'")),
    (lambda: Dense(3), (4,), lambda: {"w": ones(3, 4), "b": ones(3)}, ones(2, 4), ValueError,
     m("Dense(3): params['w'] has shape (3, 4)", "needs (4, 3)")),
    (lambda: Dense(3), (4,), lambda: None, ones(2, 4), TypeError,
     m("Dense(3): params must be a dict with keys ['b', 'w'], got NoneType")),
    (lambda: Dense(3), (4,), lambda: tree.astype(Dense(3).init(KEY, (4,)), np.float64), ones(2, 4), TypeError,
     m("Dense(3): params['w'] has dtype float64 but x has dtype float32")),
    (lambda: Conv2D(4, 3), (2, 6, 6), lambda: Conv2D(4, 3).init(KEY, (3, 6, 6)), ones(2, 2, 6, 6), ValueError,
     m("Conv2D(4, 3): input has 2 channels but params expect 3", "(2, 2, 6, 6)")),
    (lambda: Conv2D(4, 3), (2, 6, 6), lambda: Conv2D(5, 3).init(KEY, (2, 6, 6)), ones(2, 2, 6, 6), ValueError,
     m("Conv2D(4, 3): params['w'] has shape (5, 2, 3, 3)", "needs (4, 2, 3, 3)")),
    (lambda: Conv2D(4, 3), (2, 6, 6), lambda: Conv2D(4, 5).init(KEY, (2, 6, 6)), ones(2, 2, 6, 6), ValueError,
     m("Conv2D(4, 3): params['w'] has shape (4, 2, 5, 5)", "needs (4, 2, 3, 3)")),
    (lambda: Conv2D(4, 3), (2, 6, 6), lambda: {"w": ones(4, 18), "b": ones(4)}, ones(2, 2, 6, 6), ValueError,
     m("Conv2D(4, 3): params['w'] has shape (4, 18)", "needs (4, 2, 3, 3)")),
    (lambda: LSTM(4), (5, 3), lambda: GRU(4).init(KEY, (5, 3)), ones(2, 5, 3), ValueError,
     m("LSTM(4) params['l0']: params['w_ih'] has shape (3, 12)", "needs (3, 16)")),
    (lambda: LSTM(4), (5, 3), lambda: LSTM(4, num_layers=2).init(KEY, (5, 3)), ones(2, 5, 3), ValueError,
     m("LSTM(4): params has entries ['l0', 'l1'] but this layer expects ['l0']")),
    (lambda: BatchNorm(), (3,), lambda: LayerNorm().init(KEY, (4,)), ones(2, 3), ValueError,
     m("BatchNorm(): params['gamma'] has shape (4,)", "needs (3,)")),
])
def test_params_from_another_architecture(make, shape, params, x, error, match):
    layer = make()
    with pytest.raises(error, match=match):
        layer.apply(params(), x)


BAD_KEYS = [
    pytest.param(np.zeros(4, np.int64), ValueError, "got an array of dtype int64 and shape (4,)", id="int64"),
    pytest.param(np.zeros(4, np.float32), ValueError, "got an array of dtype float32 and shape (4,)", id="float32"),
    pytest.param(np.zeros(3, np.uint32), ValueError, "got an array of dtype uint32 and shape (3,)", id="short"),
    pytest.param(np.zeros((2, 2), np.uint32), ValueError, "dtype uint32 and shape (2, 2)", id="2-d"),
    pytest.param(random.split(KEY, 2)[0][None], ValueError, "shape (1, 4)", id="batched"),
    pytest.param(7, TypeError, "(uint32 array of shape (4,)), got int", id="python-int"),
    pytest.param([0, 0, 0, 0], TypeError, "got list", id="list"),
]
KEY_USERS = [
    pytest.param(lambda k: Dense(3).init(k, (4,)), "Dense(3).init: key: expected a key made by fnn.random.key",
                 id="init"),
    pytest.param(lambda k: fnn.serial(Dense(3)).init(k, (4,)), "serial.init: key", id="serial.init"),
    pytest.param(lambda k: Dense(3).apply(Dense(3).init(KEY, (4,)), ones(2, 4), key=k), "Dense(3): option key",
                 id="apply"),
    pytest.param(lambda k: Dropout(0.5).apply({}, ones(2, 4), train=True, key=k), "Dropout(0.5): option key",
                 id="Dropout"),
    pytest.param(lambda k: fnn.serial(Dropout(0.5)).apply({"dropout_0": {}}, ones(2, 4), train=True, key=k),
                 "serial: option key", id="serial.apply"),
    pytest.param(lambda k: random.split(k), "fnn.random.split: expected a key", id="split"),
    pytest.param(lambda k: random.fold_in(k, 1), "fnn.random.fold_in: expected a key", id="fold_in"),
    pytest.param(lambda k: random.normal(k, (2,)), "fnn.random.generator: expected a key", id="normal"),
    pytest.param(lambda k: fnn.data.batches(k, (ones(4),), 2), "fnn.random.generator: expected a key", id="batches"),
]


@pytest.mark.parametrize("bad, error, got", BAD_KEYS)
@pytest.mark.parametrize("use, where", KEY_USERS)
def test_malformed_key(use, where, bad, error, got):
    with pytest.raises(error, match=m(where, got)):
        use(bad)


@pytest.mark.parametrize("call, error, match", [
    (lambda: Dense(3).init(None, (4,)), TypeError, m("Dense(3).init: key: expected a key", "got NoneType")),
    (lambda: random.split(None), TypeError, m("fnn.random.split", "got NoneType")),
    (lambda: Dropout(0.5).apply({}, ones(2, 4), train=True), ValueError, m("Dropout(0.5): train=True needs a key")),
    (lambda: fnn.serial(Dense(2), Dropout(0.5)).apply(fnn.serial(Dense(2), Dropout(0.5)).init(KEY, (4,)), ones(2, 4),
                                                       train=True),
     ValueError, m("serial layer 1 'dropout_0' (Dropout(0.5)): Dropout(0.5): train=True needs a key")),
    (lambda: fnn.data.batches(None, (ones(4),), 2), ValueError, m("batches: shuffle=True needs a key")),
])
def test_missing_key_where_one_is_required(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: random.key(-1), ValueError, m("fnn.random.key: seed must be >= 0, got -1")),
    (lambda: random.key(1.5), TypeError, m("fnn.random.key: seed must be an int, got float")),
    (lambda: random.split(KEY, -1), ValueError, m("fnn.random.split: n must be >= 0, got -1")),
    (lambda: random.split(KEY, True), TypeError, m("fnn.random.split: n must be an int, got bool True")),
    (lambda: random.split(KEY, 2.0), TypeError, m("fnn.random.split: n must be an int, got float 2.0")),
    (lambda: random.fold_in(KEY, None), TypeError, m("fnn.random.fold_in: data must be an int, got NoneType None")),
    (lambda: random.normal(KEY, (-1,)), ValueError, m("fnn.random.normal: shape", "got (-1,)")),
    (lambda: random.uniform(KEY, None), TypeError, m("fnn.random.uniform: shape", "got None")),
    (lambda: random.bernoulli(KEY, None, (2,)), TypeError, m("fnn.random.bernoulli: p must be a number, got NoneType")),
    (lambda: random.bernoulli(KEY, 1.5, (2,)), ValueError, m("fnn.random.bernoulli: p", "got 1.5")),
    (lambda: random.permutation(KEY, True), TypeError, m("fnn.random.permutation: n must be an int, got bool True")),
])
def test_random_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: optim.sgd(-0.1), ValueError, m("sgd: lr must be in [0, inf], got -0.1")),
    (lambda: optim.sgd(float("nan")), ValueError, m("sgd: lr", "got nan")),
    (lambda: optim.sgd(float("inf")), ValueError, m("sgd: lr", "got inf")),
    (lambda: optim.sgd(None), TypeError, m("sgd: lr must be a number, got NoneType None")),
    (lambda: optim.sgd("0.1"), TypeError, m("sgd: lr must be a number, got str '0.1'")),
    (lambda: optim.sgd(0.1, momentum=-0.9), ValueError, m("sgd: momentum", "got -0.9")),
    (lambda: optim.sgd(0.1, weight_decay=-1e-4), ValueError, m("sgd: weight_decay", "got -0.0001")),
    (lambda: optim.sgd(0.1, dampening=1.5), ValueError, m("sgd: dampening must be in [0, 1], got 1.5")),
    (lambda: optim.sgd(0.1, nesterov=True), ValueError, m("sgd: nesterov needs momentum > 0")),
    (lambda: optim.adagrad(lr=-1), ValueError, m("adagrad: lr", "got -1")),
    (lambda: optim.adagrad(eps=float("nan")), ValueError, m("adagrad: eps", "got nan")),
    (lambda: optim.rmsprop(alpha=1.5), ValueError, m("rmsprop: alpha must be in [0, 1], got 1.5")),
    (lambda: optim.rmsprop(momentum=-1), ValueError, m("rmsprop: momentum", "got -1")),
    (lambda: optim.adam(betas=(1.0, 0.999)), ValueError, m("adam: betas[0] must be in [0, 1), got 1.0")),
    (lambda: optim.adam(betas=(0.9, 1.0)), ValueError, m("adam: betas[1] must be in [0, 1), got 1.0")),
    (lambda: optim.adam(betas=(-0.1, 0.9)), ValueError, m("adam: betas[0]", "got -0.1")),
    (lambda: optim.adam(betas=(float("nan"), 0.9)), ValueError, m("adam: betas[0]", "got nan")),
    (lambda: optim.adam(betas=0.9), TypeError, m("adam: betas must be a pair of numbers, got float 0.9")),
    (lambda: optim.adam(amsgrad="no"), TypeError, m("adam: amsgrad must be True or False, got str 'no'")),
    (lambda: optim.adam(eps=-1e-8), ValueError, m("adam: eps", "got -1e-08")),
    (lambda: optim.adamw(weight_decay=-0.01), ValueError, m("adamw: weight_decay", "got -0.01")),
    (lambda: optim.adamw(lr=float("nan")), ValueError, m("adamw: lr", "got nan")),
    (lambda: optim.adam(decay_mask="weights"), TypeError, m("adam: decay_mask must be a predicate", "got str")),
    (lambda: optim.sgd(lambda step: -1.0).update(make_params(), make_params(), optim.sgd(0.1).init(make_params())),
     ValueError, m("sgd: the learning-rate schedule gave -1.0 at step 0")),
    (lambda: optim.clip_by_global_norm(make_params(), -1.0), ValueError,
     m("clip_by_global_norm: max_norm", "got -1.0")),
    (lambda: optim.cosine(0.1, total_steps=0), ValueError, m("cosine: total_steps must be >= 1, got 0")),
])
def test_invalid_optimizer_hyperparameters(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: Dense(0), ValueError, m("Dense(0): out_features must be >= 1, got 0")),
    (lambda: Dense("3"), TypeError, m("Dense('3'): out_features must be an int, got str '3'")),
    (lambda: Dense(True), TypeError, m("Dense(True): out_features must be an int, got bool True")),
    (lambda: Conv2D(2.0, 3), TypeError, m("Conv2D(2.0, 3): out_channels must be an int, got float 2.0")),
    (lambda: Conv2D(2, 3, dx_method="fft"), ValueError, m("Conv2D(2, 3, dx_method='fft'): dx_method", "got 'fft'")),
    (lambda: BatchNorm(momentum=1.5), ValueError, m("BatchNorm(momentum=1.5", "momentum", "got 1.5")),
    (lambda: BatchNorm(eps=0), ValueError, m("BatchNorm(", "eps must be in (0, inf], got 0")),
    (lambda: LayerNorm(0), ValueError, m("LayerNorm(0): normalized_ndim must be >= 1, got 0")),
    (lambda: LeakyReLU(float("nan")), ValueError, m("LeakyReLU(nan): slope must be a finite number, got nan")),
    (lambda: LeakyReLU("0.1"), TypeError, m("LeakyReLU('0.1'): slope must be a number, got str '0.1'")),
    (lambda: Softmax(axis="x"), TypeError, m("Softmax(axis='x'): axis must be an int, got str 'x'")),
    (lambda: LSTM(0), ValueError, m("LSTM(0): hidden_size must be >= 1, got 0")),
    (lambda: LSTM(4, bidirectional="no"), TypeError, m("bidirectional must be True or False, got str 'no'")),
    (lambda: GRU(4, num_layers=0), ValueError, m("GRU(4, num_layers=0): num_layers must be >= 1, got 0")),
    (lambda: RNN(4, nonlinearity="sigmoid"), ValueError,
     m("nonlinearity must be one of ['tanh', 'relu'], got 'sigmoid'")),
    (lambda: fnn.fan_out(0), ValueError, m("fan_out: n must be >= 1, got 0")),
    (lambda: fnn.fan_in_concat(axis=1.0), TypeError, m("fan_in_concat: axis must be an int, got float 1.0")),
    (lambda: losses.softmax_cross_entropy(LOGITS, np.zeros(4, np.int64), label_smoothing=2),
     ValueError, m("softmax_cross_entropy: label_smoothing must be in [0, 1], got 2")),
    (lambda: losses.mse(ones(2), ones(2), reduction="batchmean"), ValueError, m("mse: reduction", "got 'batchmean'")),
    (lambda: losses.l2_penalty(make_params(), -1), ValueError, m("l2_penalty: weight", "got -1")),
])
def test_invalid_layer_and_loss_hyperparameters(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_numpy_scalars_are_accepted_wherever_numbers_are():
    """The rule's third line, once per kind of argument (each module's tests check its own)."""
    labels = np.zeros(4, np.int64)
    assert losses.softmax_cross_entropy(LOGITS, labels, label_smoothing=np.float32(0.1)) is not None
    assert Dropout(np.float64(0.5)).kind.startswith("Dropout(")
    assert Dense(np.int64(3)).init(KEY, (2,))["w"].shape == (2, 3)
    assert optim.sgd(np.float32(0.1), momentum=np.float64(0.9)) is not None
    assert len(list(fnn.data.batches(KEY, (ones(5, 2),), np.int64(2)))) == 3


@pytest.mark.parametrize("shape, dtype, error, match", [
    (4, np.float32, TypeError, m("Dense(3).init: shape must be a tuple such as (4,), got the int 4")),
    ((-4,), np.float32, ValueError, m("Dense(3).init: shape must hold non-negative ints", "got (-4,)")),
    ((4.0,), np.float32, TypeError, m("Dense(3).init: shape must hold ints", "got (4.0,)")),
    (None, np.float32, TypeError, m("Dense(3).init: shape must be a tuple of ints", "got None")),
    ((0,), np.float32, ValueError, m("Dense(3): init shape must end with a non-zero feature axis, got (0,)")),
    ((4,), np.int32, TypeError, m("Dense(3).init: dtype must be float32 or float64, got int32")),
    ((4,), np.float16, TypeError, m("Dense(3).init: dtype", "got float16")),
    ((4,), "foo", TypeError, m("Dense(3).init: dtype", "got 'foo'")),
])
def test_invalid_init_shape_or_dtype(shape, dtype, error, match):
    with pytest.raises(error, match=match):
        Dense(3).init(KEY, shape, dtype)


# ------------------------------------------------------------------------------------ checkpoints

@pytest.mark.parametrize("like, match", [
    (lambda p: missing_key(p), "like and the checkpoint differ in structure at ['a']: unexpected key(s) 'b'"),
    (lambda p: extra_key(p), "like and the checkpoint differ in structure at ['a']: missing key(s) 'z'"),
    (lambda p: wrong_shape(p), "at ['a']['w'] the checkpoint has float32 (2, 3) but like= has float32 (3, 2)"),
    (lambda p: tree.astype(p, np.float64), "at ['a']['b'] the checkpoint has float32 (3,) but like= has float64 (3,)"),
    (lambda p: {**p, "c": 1.0}, "at ['c'] the checkpoint has float32 (2,) but like= has float64 ()"),
    (lambda p: [p], "like and the checkpoint differ in structure at <root>: list vs dict"),
])
def test_checkpoint_not_matching_like(tmp_path, like, match):
    path = os.path.join(tmp_path, "ckpt.fnn")
    fnn.save(path, make_params())
    with pytest.raises(fnn.CheckpointError, match=m(f"load: {path}: ", match)):
        fnn.load(path, like=like(make_params()))


# ------------------------------------------------------------------------------------ vjp, combinators, state

@pytest.mark.parametrize("make, shape", [
    (lambda: Dense(3), (4,)),
    (lambda: Conv2D(2, 3), (1, 5, 5)),
    (lambda: MaxPool2D(2), (1, 4, 4)),
    (lambda: BatchNorm(), (3,)),
    (lambda: LayerNorm(), (3,)),
    (lambda: LSTM(3), (4, 2)),
    (lambda: Dropout(0.5), (3,)),
    (lambda: ReLU(), (3,)),
    (lambda: Flatten(), (3, 2)),
    (lambda: fnn.residual(Dense(3)), (3,)),
], ids=["Dense", "Conv2D", "MaxPool2D", "BatchNorm", "LayerNorm", "LSTM", "Dropout", "ReLU", "Flatten", "residual"])
def test_wrong_cotangent_to_a_vjp(make, shape):
    layer, params = build(make, shape)
    y, vjp = layer.apply(params, random.normal(KEY, (2, *shape)), train=True, key=KEY)
    wide = y.shape[:-1] + (y.shape[-1] + 1,)
    kind = re.escape(layer.kind + ".vjp: ")
    with pytest.raises(ValueError, match=kind + m(f"dy has shape {wide} but the output y has shape {y.shape}")):
        vjp(np.ones(wide, np.float32))
    with pytest.raises(TypeError, match=kind + m("dy has dtype int64 but the output y has dtype float32")):
        vjp(np.ones(y.shape, np.int64))
    with pytest.raises(TypeError, match=kind + m("dy has dtype float64 but the output y has dtype float32",
                                                 "pass dy.astype(np.float32) (nothing is cast silently)")):
        vjp(np.ones(y.shape, np.float64))
    with pytest.raises(TypeError, match=kind + m(f"dy must be a numpy array of shape {y.shape}, got list")):
        vjp(np.ones(y.shape).tolist())


def test_wrong_cotangent_inside_serial_names_the_layer():
    net = NET()
    y, vjp = net.apply(net.init(KEY, (3,)), ones(2, 3))
    with pytest.raises(ValueError, match=m("serial layer 2 'dense_1' (Dense(2)): Dense(2).vjp: dy has shape (2, 3)",
                                           "(2, 2)")):
        vjp(ones(2, 3))


PAR = lambda: fnn.parallel(Dense(2), ReLU())  # noqa: E731


def par_vjp():
    layer = PAR()
    return layer.apply(layer.init(KEY, ((3,), (4,))), (ones(2, 3), ones(2, 4)))[1]


@pytest.mark.parametrize("call, error, match", [
    (lambda: PAR().apply(PAR().init(KEY, ((3,), (4,))), (ones(2, 3),) * 3), ValueError,
     m("parallel(2): input must be a tuple of 2 arrays, got a tuple of 3")),
    (lambda: PAR().apply(PAR().init(KEY, ((3,), (4,))), ones(2, 3)), ValueError,
     m("parallel(2): input must be a tuple of 2 arrays, got an array of shape (2, 3)")),
    (lambda: PAR().init(KEY, ((3,),)), ValueError,
     m("parallel(2): init shape must be a tuple of 2 shapes, got ((3,),)")),
    (lambda: par_vjp()((ones(2, 2),)), ValueError, m("parallel(2).vjp: dy must be a tuple of 2 arrays")),
    (lambda: par_vjp()((ones(2, 2), ones(2, 3))), ValueError,
     m("parallel(2).vjp: dy has shape (2, 3) but the output y has shape (2, 4)")),
    (lambda: fnn.fan_out(2).apply({}, ones(2, 3))[1]((ones(2, 3),)), ValueError,
     m("fan_out(2).vjp: dy must be a tuple of 2 arrays")),
    (lambda: fnn.fan_out(2).apply({}, (ones(2, 3),) * 2), TypeError,
     m("fan_out(2): input must be one array, got a tuple of 2")),
    (lambda: fnn.fan_in_sum().apply({}, ones(2, 3)), ValueError,
     m("fan_in_sum(): input must be a non-empty tuple of arrays, got an array of shape (2, 3)")),
    (lambda: fnn.fan_in_sum().apply({}, ()), ValueError,
     m("fan_in_sum(): input must be a non-empty tuple", "a tuple of 0")),
    (lambda: fnn.fan_in_concat().apply({}, ()), ValueError, m("fan_in_concat(axis=-1): input must be a non-empty tuple",
                                                              "a tuple of 0")),
    (lambda: LSTM(3).apply(LSTM(3).init(KEY, (4, 2)), (ones(2, 4, 2), ones(2, 1, 3))), ValueError,
     m("LSTM(3): a tuple input must be (x, h0, c0), got a tuple of 2")),
    (lambda: Dense(3).apply(Dense(3).init(KEY, (4,)), (ones(2, 4),)), TypeError,
     m("Dense(3): input must be one array, got a tuple of 1")),
])
def test_wrong_tuple_arity_to_combinators(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("make, x, error, match", [
    (lambda: fnn.fan_in_concat(), (ones(2, 3), ones(3, 3)), ValueError,
     m("fan_in_concat(axis=-1): inputs differ outside axis -1: shapes [(2, 3), (3, 3)]")),
    (lambda: fnn.fan_in_concat(axis=1), (ones(2, 3, 4), ones(2, 3, 5)), ValueError,
     m("fan_in_concat(axis=1): inputs differ outside axis 1: shapes [(2, 3, 4), (2, 3, 5)]")),
    (lambda: fnn.fan_in_concat(), (ones(2, 3), ones(2, 3, 1)), ValueError,
     m("fan_in_concat(axis=-1): needs inputs of equal rank", "[(2, 3), (2, 3, 1)]")),
    (lambda: fnn.fan_in_concat(axis=0), (ones(2, 3), ones(2, 3)), ValueError,
     m("fan_in_concat(axis=0): needs inputs of equal rank and a non-batch axis", "[(2, 3), (2, 3)]")),
    (lambda: fnn.fan_in_concat(), (ones(2, 3), ones(2, 3, dtype=np.float64)), TypeError,
     m("fan_in_concat(axis=-1): inputs must share one dtype, got ['float32', 'float64']")),
    (lambda: fnn.fan_in_sum(), (ones(2, 3), ones(2, 3, dtype=np.float64)), TypeError,
     m("fan_in_sum(): inputs must share one dtype, got ['float32', 'float64']")),
])
def test_concat_of_incompatible_shapes(make, x, error, match):
    with pytest.raises(error, match=match):
        make().apply({}, x)


def bn_net():
    net = fnn.serial(Dense(3), BatchNorm(), ReLU())
    params = net.init(KEY, (3,))
    return net, params, net.apply(params, random.normal(KEY, (4, 3)), train=True).state


@pytest.mark.parametrize("state, error, match", [
    (lambda s: {"bn": s["batch_norm_0"]}, ValueError,
     m("serial: state has entries ['bn'] for layers this serial does not have")),
    (lambda s: {"dense_0": s["batch_norm_0"]}, ValueError,
     m("serial layer 0 'dense_0' (Dense(3)): Dense(3): has no state but was given state ['mean', 'var']")),
    (lambda s: [s], TypeError,
     m("serial: state must be a dict keyed by layer name, fnn.INITIAL_STATE or None, got list")),
    (lambda s: {"batch_norm_0": s}, ValueError,
     m("serial layer 1 'batch_norm_0' (BatchNorm()): BatchNorm(): state must be {'mean': (3,), 'var': (3,)}",
       "got ['batch_norm_0']")),
    (lambda s: {"batch_norm_0": {"mean": np.zeros(4), "var": np.ones(4)}}, ValueError,
     m("BatchNorm(): state['mean'] must have shape (3,) for 3 channels, got (4,)")),
    (lambda s: {"batch_norm_0": {"mean": np.zeros(3), "var": np.array([1, None, 1])}}, TypeError,
     m("BatchNorm(): state['var'] must be a float array, got dtype object")),
])
def test_state_for_the_wrong_layers(state, error, match):
    net, params, good = bn_net()
    with pytest.raises(error, match=match):
        net.apply(params, ones(2, 3), state=state(good))


# ------------------------------------------------------------------------------------ losses, data, interop

@pytest.mark.parametrize("call, error, match", [
    (lambda: losses.mse(np.ones(2, np.int64), ones(2)), TypeError,
     m("mse: pred must be a float32 or float64 array, got int64")),
    (lambda: losses.mse([1.0, 2.0], ones(2)), TypeError, m("mse: pred", "got list")),
    (lambda: losses.mse(ones(2), np.array([1.0, None])), TypeError,
     m("mse: target must be a real numeric array, got dtype object")),
    (lambda: losses.mse(ones(2), np.array(["a", "b"])), TypeError, m("mse: target", "got dtype <U1")),
    (lambda: losses.mse(ones(2), np.array([1, 2])), TypeError,
     m("mse: target has dtype int64 but pred has dtype float32; pass target.astype(np.float32)")),
    (lambda: losses.mse(ones(2), np.ones(2)), TypeError, m("mse: target has dtype float64 but pred has dtype float32")),
    (lambda: losses.softmax_cross_entropy(ones(3), np.array([0])), ValueError,
     m("softmax_cross_entropy: logits must have shape (N, C) with C > 0, got (3,)")),
    (lambda: losses.softmax_cross_entropy(np.ones((2, 3), np.int64), np.array([0, 1])), TypeError,
     m("softmax_cross_entropy: logits must be float32 or float64, got int64")),
    (lambda: fnn.data.one_hot(np.array([0, 5]), 3), ValueError,
     m("one_hot: labels must be in [0, 3), got values from 0 to 5")),
    (lambda: fnn.data.one_hot(np.array([0.0, 1.0]), 3), TypeError,
     m("one_hot: labels must be integers, got dtype float64")),
    (lambda: fnn.data.batches(KEY, (ones(3), ones(4)), 2), ValueError,
     m("batches: arrays must share their first axis length, got lengths [3, 4]")),
])
def test_loss_and_data_argument_types(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: fnn.interop.to_torch_state_dict(fnn.serial(Dense(2)), {"x": {}}, (3,)),
     m("to_torch_state_dict: the layer's params and params differ in structure at <root>: missing key(s) 'dense_0'")),
    (lambda: fnn.interop.to_torch_state_dict(Dense(2), {"w": ones(4, 2), "b": ones(2)}, (3,)),
     m("to_torch_state_dict", "differ in shape at ['w']: (3, 2) vs (4, 2)")),
    (lambda: fnn.interop.from_torch_state_dict(Dense(2), {"w": ones(2, 3)}, (3,)),
     m("from_torch_state_dict: fnn layer", "(Dense) needs ['bias', 'weight']", "has ['w']")),
    (lambda: fnn.interop.from_torch_state_dict(Dense(2), {"weight": ones(3, 3), "bias": ones(2)}, (3,)),
     m("from_torch_state_dict: ", "weight has shape (3, 3)", "of shape (3, 2) (transposed)")),
])
def test_interop_state_dict_mismatch(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------- attention, positions and weight tying

def attention(heads=2, shape=(3, 4)):
    layer = MultiHeadAttention(heads)
    return layer, layer.init(KEY, shape)


def encoder_block():
    layer = TransformerEncoderLayer(2, 8)
    return layer, layer.init(KEY, (3, 4))


def tied_pair():
    return fnn.serial(("embed", Embedding(10, 4)), ("head", Dense(10, bias=False)))


@pytest.mark.parametrize("make, x, mask, error, match", [
    (attention, ones(2, 3, 4), np.zeros((2, 3), np.int64), TypeError,
     m("MultiHeadAttention(2): option key_padding_mask must be None or a bool numpy array (N, S), True where a key "
       "is padding, got an array of dtype int64")),
    (attention, ones(2, 3, 4), [[False] * 3] * 2, TypeError,
     m("MultiHeadAttention(2): option key_padding_mask", "got list")),
    (attention, ones(2, 3, 4), np.zeros((2, 4), bool), ValueError,
     m("MultiHeadAttention(2): option key_padding_mask has shape (2, 4) but the keys need (N, S) = (2, 3) (True "
       "where a key is padding)")),
    (attention, (ones(2, 3, 4), ones(2, 5, 4)), np.zeros((2, 3), bool), ValueError,
     m("MultiHeadAttention(2): option key_padding_mask has shape (2, 3)", "(N, S) = (2, 5)")),  # S: the keys
    (encoder_block, ones(2, 3, 4), np.zeros((2, 3), np.uint8), TypeError,
     m("TransformerEncoderLayer(2, 8): option key_padding_mask must be None or a bool numpy array", "dtype uint8")),
    (encoder_block, ones(2, 3, 4), np.zeros((3, 3), bool), ValueError,
     m("TransformerEncoderLayer(2, 8): serial layer 0 'sa_block' (residual(serial))", "'self_attn'",
       "option key_padding_mask has shape (3, 3) but the keys need (N, S) = (2, 3)")),
])
def test_bad_key_padding_mask(make, x, mask, error, match):
    layer, params = make()
    with pytest.raises(error, match=match):
        layer.apply(params, x, key_padding_mask=mask)


@pytest.mark.parametrize("call", [
    lambda: attention(3, (5, 4)),
    lambda: attention(3, ((5, 4), (2, 4))),
    lambda: attention(3)[0].apply(attention(2)[1], ones(2, 3, 4)),
    lambda: TransformerEncoderLayer(3, 8).init(KEY, (5, 4)),
], ids=["init", "init-cross", "apply", "encoder-init"])
def test_features_not_a_multiple_of_num_heads(call):
    with pytest.raises(ValueError, match=m("MultiHeadAttention(3", "): the feature size E must be a positive multiple "
                                           "of num_heads=3 (each head gets E / num_heads features), got E=4 in the")):
        call()


def cross(*x):
    layer, params = attention()
    return lambda: layer.apply(params, x)


@pytest.mark.parametrize("call, error, match", [
    (cross(ones(2, 3, 4), ones(3, 5, 4)), ValueError,
     m("MultiHeadAttention(2): q, kv must have one batch size and one feature size E, and k and v one length, got "
       "shapes (2, 3, 4), (3, 5, 4) (PyTorch's kdim/vdim are not supported)")),
    (cross(ones(2, 3, 4), ones(2, 5, 6)), ValueError, m("MultiHeadAttention(2): q, kv must", "(2, 3, 4), (2, 5, 6)")),
    (cross(ones(2, 3, 4), ones(2, 5, 4), ones(2, 6, 4)), ValueError,
     m("MultiHeadAttention(2): q, k, v must", "k and v one length", "(2, 5, 4), (2, 6, 4)")),
    (cross(ones(2, 3, 4), ones(2, 5, 4, dtype=np.float64)), TypeError,
     m("MultiHeadAttention(2): inputs must share one dtype, got ['float32', 'float64']")),
    (cross(*(ones(2, 3, 4),) * 4), ValueError,
     m("MultiHeadAttention(2): input must be x (N, T, E) or a tuple (q, kv) or (q, k, v), got a tuple of 4")),
    (lambda: attention(2, ((3, 4), (5, 6))), ValueError,
     m("MultiHeadAttention(2): init shape must be (T, E) or a tuple of 2 or 3 (L, E) shapes with one E, got "
       "((3, 4), (5, 6))")),
])
def test_cross_attention_inputs_that_do_not_fit(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_more_positions_than_max_len():
    learned, fixed = PositionEmbedding(4), SinusoidalPositionEmbedding(4)
    with pytest.raises(ValueError, match=m("PositionEmbedding(4): init shape (5, 8) has T = 5 positions but max_len "
                                           "is 4")):
        learned.init(KEY, (5, 8))
    for layer in (learned, fixed):
        with pytest.raises(ValueError, match=m(f"{layer.kind}: input has T = 5 positions but max_len is 4 (shape "
                                               "(2, 5, 8)); use a larger max_len or shorter sequences")):
            layer.apply(layer.init(KEY, (4, 8)), ones(2, 5, 8))


@pytest.mark.parametrize("target, source, transpose, error, match", [
    ("head/weight", "embed/weight", True, ValueError,
     m("tie(serial, target='head/weight', source='embed/weight', transpose=True): the target 'head/weight' is not a "
       "parameter of serial, whose parameters are ['embed/weight', 'head/w']")),
    ("head/w", "emb/weight", True, ValueError, m("the source 'emb/weight' is not a parameter of serial")),
    ("head/w", "embed/weight", False, ValueError,
     m("tie(serial, target='head/w', source='embed/weight'): the target 'head/w' has shape (4, 10) but the source "
       "'embed/weight' has shape (10, 4); they must agree (transpose=True?)")),
    ("head/w", "head/w", False, ValueError, m("target and source must be two different leaves, got 'head/w' and")),
    (("head", "w"), "embed/weight", False, TypeError,
     m("target=('head', 'w')", "target must be a parameter path such as 'head/w', got tuple")),
    ("head//w", "embed/weight", False, ValueError, m("target must be a parameter path", "got 'head//w'")),
])
def test_tie_paths_that_do_not_fit(target, source, transpose, error, match):
    with pytest.raises(error, match=match):
        fnn.tie(tied_pair(), target=target, source=source, transpose=transpose).init(KEY, (3,))


def test_tied_model_given_untied_params():
    net = tied_pair()
    tied = fnn.tie(net, target="head/w", source="embed/weight", transpose=True)
    with pytest.raises(ValueError, match=m("params must hold head without the tied target 'w' (its value is the "
                                           "source's; use the params tie's init makes)")):
        tied.apply(net.init(KEY, (3,)), np.zeros((1, 3), np.int64))


# ------------------------------------------------------------- class weights, ignore_index, pos_weight

SEQ_LOGITS = np.zeros((2, 3, 4))


@pytest.mark.parametrize("call, error, match", [
    (lambda: losses.softmax_cross_entropy(SEQ_LOGITS, np.zeros((2, 3), np.int64), weight=np.ones(3)), ValueError,
     m("softmax_cross_entropy: weight must have shape (4,) for logits of shape (2, 3, 4), got (3,)")),
    (lambda: losses.softmax_cross_entropy(SEQ_LOGITS, np.zeros((2, 3), np.int64), weight=np.ones(4, np.float32)),
     TypeError, m("softmax_cross_entropy: weight has dtype float32 but logits has dtype float64; pass "
                  "weight.astype(np.float64) (nothing is cast silently)")),
    (lambda: losses.softmax_cross_entropy(SEQ_LOGITS, np.full((2, 3, 4), 0.25), ignore_index=-100), ValueError,
     m("softmax_cross_entropy: ignore_index=-100 applies to integer class labels only, got float probability rows "
       "(PyTorch refuses it too)")),
    (lambda: losses.softmax_cross_entropy(SEQ_LOGITS, np.zeros((2, 3), np.int64), ignore_index=1.5), TypeError,
     m("softmax_cross_entropy: ignore_index must be an int, got float 1.5")),
    (lambda: losses.softmax_cross_entropy(SEQ_LOGITS, np.full((2, 3), 7), ignore_index=-100), ValueError,
     m("softmax_cross_entropy: labels must be in [0, 4) for 4 classes or equal ignore_index=-100, got 7")),
    (lambda: losses.binary_cross_entropy_with_logits(np.zeros((4, 3)), np.zeros((4, 3)), pos_weight=np.ones(4)),
     ValueError, m("binary_cross_entropy_with_logits: pos_weight must have shape (3,) for logits of shape (4, 3), "
                   "got (4,)")),
    (lambda: losses.binary_cross_entropy_with_logits(np.zeros(()), np.zeros(()), pos_weight=np.ones(1)), ValueError,
     m("binary_cross_entropy_with_logits: pos_weight needs logits with a last axis of labels, got shape ()")),
])
def test_class_weight_ignore_index_and_pos_weight_that_do_not_fit(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------- optimizer combinators

MT_PARAMS = {"a": {"w": np.ones((2, 2))}, "b": {"w": np.ones(2)}}


@pytest.mark.parametrize("call, error, match", [
    (lambda: optim.chain(optim.adamw(1e-3), optim.clip_by_global_norm(1.0)), TypeError,
     m("chain: part 0 is an Optimizer, which returns new params rather than updates, so it can only be the last "
       "part; got 2 parts")),
    (lambda: optim.chain(), ValueError, m("chain: needs at least one transform or optimizer, got none")),
    (lambda: optim.multi_transform({"x": optim.adamw(1e-3), "y": optim.sgd(0.1)},
                                   {"a": {"w": "x"}, "b": {"w": "z"}}).init(MT_PARAMS), ValueError,
     m("multi_transform: the label 'z' of the leaf at ['b']['w'] is not one of the groups ['x', 'y']")),
    (lambda: optim.multi_transform({"x": optim.adamw(1e-3), "y": optim.sgd(0.1)},
                                   lambda path, leaf: "z" if leaf.ndim == 1 else "x").init(MT_PARAMS), ValueError,
     m("multi_transform: the label 'z' of the leaf at ['b']['w'] is not one of the groups ['x', 'y']")),
    (lambda: optim.multi_transform({"x": optim.adamw(1e-3), "y": optim.scale(0.1)}, lambda path, leaf: "x"),
     TypeError, m("multi_transform: transforms must be all optimizers or all transforms, got optimizers for ['x'] "
                  "and transforms for ['y']")),
])
def test_optimizer_combinators_put_together_wrongly(call, error, match):
    with pytest.raises(error, match=match):
        call()
