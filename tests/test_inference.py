"""fnn.predict and need_vjp=False: the same outputs, nothing kept for backward, memory of one layer."""

import tracemalloc
from typing import Any

import numpy as np
import pytest

import fnn
from fnn.inspection import closure_arrays
from fnn.layers import LSTM, BatchNorm, Conv2D, Dense, Dropout, Flatten, LastStep, MaxPool2D, ReLU

KEY = fnn.random.key(0)


def lenet(**conv: Any) -> fnn.Layer:
    return fnn.serial(Conv2D(6, 5, padding=2, **conv), ReLU(), MaxPool2D(2), Conv2D(16, 5, **conv), ReLU(),
                      MaxPool2D(2), Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))


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
    """LeNet-5 at batch 128 with the column matrices kept (``recompute=False``): a forward that keeps
    its vjps holds every layer's residuals at once (21.5 MB, the column matrix of conv2d_0 alone
    10 MB); predict frees each layer's as it goes, and builds no column matrix whole."""
    net = lenet(recompute=False)
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


def test_inference_peak_memory_with_the_default_convolutions():
    """By default a convolution's vjp keeps its input, so a training forward holds little more than
    the activations (5.0 MB at batch 128); predict's peak is the largest layer's input and output
    (conv2d_0's output and ReLU's, 2.4 MB each), and batches of 32 take about a quarter of it."""
    net = lenet()
    params = net.init(KEY, (1, 28, 28))
    x = fnn.random.normal(KEY, (128, 1, 28, 28))
    activation = 6 * 28 * 28 * 128 * 4
    kept = sum(a.nbytes for a in closure_arrays(net.apply(params, x)[1]).values())
    assert 2 * activation < kept < 2.2 * activation
    inference = peak_bytes(lambda: fnn.predict(net, params, x))
    assert inference < peak_bytes(lambda: net.apply(params, x))
    assert inference < 2.1 * activation
    assert peak_bytes(lambda: fnn.predict(net, params, x, batch_size=32)) < 0.3 * inference


def test_predict_with_a_key_padding_mask_equals_apply_with_it_in_uneven_batches():
    from fnn.layers import Embedding, MultiHeadAttention, TransformerEncoderLayer

    vocab, pad, n, t = 9, 0, 11, 6
    net = fnn.serial(Embedding(vocab, 8, padding_idx=pad), TransformerEncoderLayer(2, 16, dropout=0.1), Dense(3))
    params = net.init(KEY, (t,), np.float64)
    r = np.random.default_rng(0)
    tokens = r.integers(1, vocab, (n, t))
    tokens[np.arange(t) >= r.integers(1, t + 1, (n, 1))] = pad  # each example padded after its own length
    mask = tokens == pad
    assert mask.any() and not mask.all(axis=1).any()
    want = net.apply(params, tokens, key_padding_mask=mask)[0]
    assert not np.allclose(want, net.apply(params, tokens)[0])  # the mask matters
    np.testing.assert_array_equal(fnn.predict(net, params, tokens, key_padding_mask=mask), want)
    for batch_size in (1, 4, 5, 10, 11, 30):  # 4: batches of 4, 4 and 3; 5: of 5, 5 and 1
        np.testing.assert_allclose(fnn.predict(net, params, tokens, batch_size=batch_size, key_padding_mask=mask),
                                   want, rtol=1e-13, atol=1e-14, err_msg=f"batch_size={batch_size}")
    # cross-attention: the mask covers the keys (N, S), sliced with both parts of the tuple input
    mha = MultiHeadAttention(2)
    p2 = mha.init(KEY, ((3, 4), (5, 4)), np.float64)
    q, kv = fnn.random.normal(KEY, (7, 3, 4), np.float64), fnn.random.normal(fnn.random.key(1), (7, 5, 4), np.float64)
    kv_mask = np.arange(5) >= np.array([5, 1, 2, 3, 4, 5, 2])[:, None]
    want = mha.apply(p2, (q, kv), key_padding_mask=kv_mask)[0]
    np.testing.assert_allclose(fnn.predict(mha, p2, (q, kv), batch_size=3, key_padding_mask=kv_mask), want,
                               rtol=1e-13, atol=1e-14)


def test_predict_key_padding_mask_errors():
    from fnn.layers import MultiHeadAttention

    mha = MultiHeadAttention(1)
    params = mha.init(KEY, (3, 2))
    x = np.ones((4, 3, 2), np.float32)
    with pytest.raises(TypeError, match=r"predict: key_padding_mask must be None or a bool numpy array \(N, S\), "
                                        r"True where a key is padding, got an array of dtype int64"):
        fnn.predict(mha, params, x, key_padding_mask=np.zeros((4, 3), np.int64))
    with pytest.raises(TypeError, match=r"predict: key_padding_mask must be None .*, got list"):
        fnn.predict(mha, params, x, key_padding_mask=[[False] * 3] * 4)
    with pytest.raises(ValueError, match=r"predict: key_padding_mask must be \(N, S\) with one row for each of x's "
                                         r"N=4 examples, got shape \(3, 3\)"):
        fnn.predict(mha, params, x, batch_size=2, key_padding_mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match=r"predict: key_padding_mask must be \(N, S\) .*, got shape \(4,\)"):
        fnn.predict(mha, params, x, key_padding_mask=np.zeros(4, bool))
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(1\): option key_padding_mask has shape \(2, 5\) but "
                                         r"the keys need \(N, S\) = \(2, 3\)"):  # S is checked by the layer
        fnn.predict(mha, params, x, batch_size=2, key_padding_mask=np.zeros((4, 5), bool))


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
