"""Dense: hand-computed values, a loop reference, init, and its argument and params errors.

The protocol (finite differences, purity, dtypes, input and cotangent errors) is checked for
Dense with every other layer in test_contract.py.
"""

import math
from functools import partial

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fnn import init, random
from fnn.layers import Dense

KEY = random.key(0)


def test_hand_computed_forward_and_backward():
    params = {"w": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), "b": np.array([0.5, -1.0, 2.0])}
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    y, vjp = Dense(3).apply(params, x)
    assert y.tolist() == [[1.5, 1.0, 5.0], [4.5, 4.0, 8.0], [-2.5, -4.0, -1.0]]
    dparams, dx = vjp(np.ones((3, 3)))
    assert dparams["w"].tolist() == [[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]
    assert dparams["b"].tolist() == [3.0, 3.0, 3.0]
    assert dx.tolist() == [[6.0, 15.0]] * 3


def loop_dense(w, b, x, dy):
    """y[n, ..., o] = sum_i x[n, ..., i] w[i, o] + b[o], and its gradients, one entry at a time."""
    n_in, n_out = w.shape
    rows = x.reshape(-1, n_in)
    drows = dy.reshape(-1, n_out)
    y = np.zeros((len(rows), n_out))
    dw, db, dx = np.zeros_like(w), np.zeros(n_out), np.zeros_like(rows)
    for r in range(len(rows)):
        for o in range(n_out):
            y[r, o] = b[o] + sum(rows[r, i] * w[i, o] for i in range(n_in))
            db[o] += drows[r, o]
            for i in range(n_in):
                dw[i, o] += rows[r, i] * drows[r, o]
                dx[r, i] += w[i, o] * drows[r, o]
    return y.reshape(*x.shape[:-1], n_out), dw, db, dx.reshape(x.shape)


@given(batch=st.integers(1, 3), extra=st.lists(st.integers(1, 3), max_size=2), n_in=st.integers(1, 4),
       n_out=st.integers(1, 4), seed=st.integers(0, 100))
def test_matches_loop_reference_over_extra_axes(batch, extra, n_in, n_out, seed):
    k1, k2, k3, k4 = random.split(random.key(seed), 4)
    params = {"w": random.normal(k1, (n_in, n_out), np.float64), "b": random.normal(k2, (n_out,), np.float64)}
    x = random.normal(k3, (batch, *extra, n_in), np.float64)
    dy = random.normal(k4, (batch, *extra, n_out), np.float64)
    y, vjp = Dense(n_out).apply(params, x)
    dparams, dx = vjp(dy)
    ry, rdw, rdb, rdx = loop_dense(params["w"], params["b"], x, dy)
    for got, want in ((y, ry), (dparams["w"], rdw), (dparams["b"], rdb), (dx, rdx)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_without_bias():
    layer = Dense(2, bias=False)
    assert layer.kind == "Dense(2, bias=False)"
    params = layer.init(KEY, (3,))
    assert set(params) == {"w"}
    y, vjp = layer.apply({"w": np.ones((3, 2))}, np.array([[1.0, 2.0, 3.0]]))
    assert y.tolist() == [[6.0, 6.0]]
    assert set(vjp(np.ones((1, 2)))[0]) == {"w"}


def test_default_init_is_pytorch_linear():
    params = Dense(64).init(KEY, (5, 100))  # extra axes: only the last one is in_features
    assert params["w"].shape == (100, 64) and params["b"].shape == (64,)
    assert params["w"].dtype == np.float32 and params["b"].dtype == np.float32
    assert np.abs(params["w"]).max() < 1 / math.sqrt(100) and np.abs(params["w"]).max() > 0.9 / math.sqrt(100)
    assert not params["b"].any()


def test_custom_initializers_get_distinct_keys():
    layer = Dense(3, w_init=partial(init.normal, std=1.0), b_init=partial(init.normal, std=1.0))
    params = layer.init(KEY, (3,), np.float64)
    kw, kb = random.split(KEY, 2)
    assert params["w"].tobytes() == init.normal(kw, (3, 3), np.float64, std=1.0).tobytes()
    assert params["b"].tobytes() == init.normal(kb, (3,), np.float64, std=1.0).tobytes()
    assert params["w"].dtype == np.float64


@pytest.mark.parametrize("out, match", [
    (0, r"^Dense\(0\): out_features must be >= 1, got 0$"),
    (-1, r"^Dense\(-1\): out_features must be >= 1, got -1$"),
    (np.int64(-3), r"^Dense\(np.int64\(-3\)\): out_features must be >= 1, got -3$"),
])
def test_nonpositive_out_features_raise_value_error(out, match):
    with pytest.raises(ValueError, match=match):
        Dense(out)


@pytest.mark.parametrize("out, match", [
    (2.5, r"^Dense\(2.5\): out_features must be an int, got float 2.5$"),
    (3.0, "out_features must be an int, got float 3.0"),
    (True, r"^Dense\(True\): out_features must be an int, got bool True$"),
    (np.True_, "out_features must be an int, got bool"),
    ("3", r"^Dense\('3'\): out_features must be an int, got str '3'$"),
    (None, "out_features must be an int, got NoneType None"),
])
def test_out_features_of_another_kind_raise_type_error(out, match):
    with pytest.raises(TypeError, match=match):
        Dense(out)


@pytest.mark.parametrize("bias, match", [
    (1, r"^Dense\(3, bias=1\): bias must be True or False, got int 1$"),
    ("False", "bias must be True or False, got str 'False'"),
    (None, "bias must be True or False, got NoneType None"),
])
def test_bias_must_be_a_bool(bias, match):
    with pytest.raises(TypeError, match=match):
        Dense(3, bias=bias)


@pytest.mark.parametrize("out", [np.int64(3), np.int32(3), np.uint8(3), np.int16(3)])
def test_numpy_int_out_features_are_accepted(out):
    layer = Dense(out)
    assert layer.kind == "Dense(3)"
    assert layer.init(KEY, (2,))["w"].shape == (2, 3)
    assert Dense(out, bias=np.False_).init(KEY, (2,)).keys() == {"w"}


@pytest.mark.parametrize("shape, error, match", [
    ((), ValueError, "Dense\\(3\\): init shape must end with a non-zero feature axis, got \\(\\)"),
    ((0,), ValueError, "non-zero feature axis, got \\(0,\\)"),
    ((4, 0), ValueError, "non-zero feature axis"),
    (4, TypeError, "shape must be a tuple such as \\(4,\\)"),
])
def test_bad_init_shapes_raise(shape, error, match):
    with pytest.raises(error, match=match):
        Dense(3).init(KEY, shape)


def test_wrong_rank_raises():
    params = Dense(3).init(KEY, (4,))
    with pytest.raises(ValueError, match="Dense\\(3\\): input x must be \\(N, ..., features\\), got shape \\(4,\\)"):
        Dense(3).apply(params, np.ones(4, np.float32))


def test_feature_size_different_from_init_raises():
    params = Dense(3).init(KEY, (4,))
    with pytest.raises(ValueError, match=("Dense\\(3\\): params\\['w'\\] has shape \\(4, 3\\) but the input needs "
                                          "\\(5, 3\\)")):
        Dense(3).apply(params, np.ones((2, 5), np.float32))


@pytest.mark.parametrize("make, error, match", [
    (lambda p: {"w": p["w"]}, ValueError, "params has keys \\['w'\\] but this layer expects \\['b', 'w'\\]"),
    (lambda p: {**p, "gain": p["b"]}, ValueError, "params has keys \\['b', 'gain', 'w'\\]"),
    (lambda p: {**p, "b": np.zeros(4, np.float32)}, ValueError,
     "params\\['b'\\] has shape \\(4,\\) but the input needs \\(3,\\)"),
    (lambda p: {**p, "w": p["w"].T}, ValueError, "params\\['w'\\] has shape \\(3, 4\\)"),
    (lambda p: Dense(5).init(KEY, (4,)), ValueError, "params\\['w'\\] has shape \\(4, 5\\)"),
    (lambda p: {**p, "w": p["w"].astype(np.float64)}, TypeError,
     "params\\['w'\\] has dtype float64 but x has dtype float32; use one dtype"),
    (lambda p: {**p, "w": p["w"].tolist()}, TypeError, "params\\['w'\\] must be a numpy array, got list"),
    (lambda p: [p["w"], p["b"]], TypeError, "params must be a dict"),
])
def test_params_from_another_architecture_raise(make, error, match):
    params = Dense(3).init(KEY, (4,))
    with pytest.raises(error, match=match):
        Dense(3).apply(make(params), np.ones((2, 4), np.float32))


def test_bias_free_layer_rejects_params_with_bias():
    with pytest.raises(ValueError, match="params has keys \\['b', 'w'\\] but this layer expects \\['w'\\]"):
        Dense(3, bias=False).apply(Dense(3).init(KEY, (4,)), np.ones((2, 4), np.float32))
