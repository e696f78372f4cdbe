"""fnn.predict and need_vjp=False: the same outputs, nothing kept for backward, memory of one layer."""

import tracemalloc

import numpy as np
import pytest

import fnn
from fnn.inspection import closure_arrays
from fnn.layers import LSTM, BatchNorm, Conv2D, Dense, Dropout, Flatten, LastStep, MaxPool2D, ReLU

KEY = fnn.random.key(0)


def lenet() -> fnn.Layer:
    return fnn.serial(Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(16, 5), ReLU(), MaxPool2D(2),
                      Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))


def test_predict_equals_apply_in_evaluation_mode_in_any_batch_size():
    net = fnn.serial(Dense(8), BatchNorm(), ReLU(), Dropout(0.5), Dense(3))
    params = net.init(KEY, (4,), np.float64)
    x = fnn.random.normal(KEY, (37, 4), np.float64)
    state = net.apply(params, x, train=True, key=KEY).state
    want = net.apply(params, x, state=state)[0]
    np.testing.assert_array_equal(fnn.predict(net, params, x, state=state), want)
    for batch_size in (1, 10, 37, 100):  # products over fewer rows may round differently
        np.testing.assert_allclose(fnn.predict(net, params, x, state=state, batch_size=batch_size), want,
                                   rtol=1e-13, atol=1e-15)


def test_predict_takes_and_gives_tuples():
    net = fnn.serial(fnn.fan_out(2), fnn.parallel(Dense(3), ReLU()))
    params = net.init(KEY, (4,), np.float64)
    x = fnn.random.normal(KEY, (7, 4), np.float64)
    y = fnn.predict(net, params, x, batch_size=3)
    assert isinstance(y, tuple) and [v.shape for v in y] == [(7, 3), (7, 4)]
    for got, want in zip(y, net.apply(params, x)[0]):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    lstm = fnn.serial(LSTM(3), LastStep())
    lstm_params = lstm.init(KEY, ((5, 2), (1, 3), (1, 3)), np.float64)
    xs = (fnn.random.normal(KEY, (7, 5, 2), np.float64), np.zeros((7, 1, 3)), np.zeros((7, 1, 3)))
    np.testing.assert_allclose(fnn.predict(lstm, lstm_params, xs, batch_size=3), lstm.apply(lstm_params, xs)[0],
                               rtol=1e-13, atol=1e-15)


def test_need_vjp_false_keeps_nothing_and_its_vjp_says_why():
    net = lenet()
    params = net.init(KEY, (1, 28, 28))
    x = fnn.random.normal(KEY, (4, 1, 28, 28))
    y, vjp = net.apply(params, x, need_vjp=False)
    np.testing.assert_array_equal(y, net.apply(params, x)[0])
    assert closure_arrays(vjp) == {}
    with pytest.raises(ValueError, match=r"serial: this output was computed with need_vjp=False \(inference\)"):
        vjp(np.ones_like(y))


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_inference_peak_memory_is_that_of_the_largest_layer_not_the_sum():
    """LeNet-5 at batch 128: a forward that keeps its vjps holds every layer's residuals at once
    (21.5 MB, the column matrix of conv2d_0 alone 10 MB); predict frees each layer's as it goes."""
    net = lenet()
    params = net.init(KEY, (1, 28, 28))
    x = fnn.random.normal(KEY, (128, 1, 28, 28))
    kept = sum(a.nbytes for a in closure_arrays(net.apply(params, x)[1]).values())
    training = peak_bytes(lambda: net.apply(params, x))
    inference = peak_bytes(lambda: fnn.predict(net, params, x))
    conv0_cols = 25 * 28 * 28 * 128 * 4
    assert kept > 2 * conv0_cols
    assert inference < 0.6 * training
    assert inference < 1.5 * conv0_cols  # conv2d_0's column matrix and its output: the largest single layer
    chunked = peak_bytes(lambda: fnn.predict(net, params, x, batch_size=32))
    assert chunked < 0.4 * inference


def test_predict_errors():
    net = fnn.serial(Dense(2), BatchNorm())
    params = net.init(KEY, (3,))
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"predict: batch_size must be >= 1, got 0"):
        fnn.predict(net, params, x, batch_size=0)
    with pytest.raises(TypeError, match=r"predict: batch_size must be an int, got bool True"):
        fnn.predict(net, params, x, batch_size=True)
    with pytest.raises(TypeError, match=r"predict: x must be a batch .*, got list"):
        fnn.predict(net, params, [[1.0, 2.0, 3.0]])
    with pytest.raises(TypeError, match=r"predict: expected an fnn Layer"):
        fnn.predict(lambda x: x, params, x)
    with pytest.raises(ValueError, match=r"BatchNorm\(\): evaluation \(train=False\) needs the running statistics"):
        fnn.predict(net, params, x)
    with pytest.raises(TypeError, match=r"Dense\(2\): option need_vjp must be True or False, got str"):
        Dense(2).apply(Dense(2).init(KEY, (3,)), x, need_vjp="no")
