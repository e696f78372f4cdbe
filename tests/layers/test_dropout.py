"""Dropout: rate is the drop probability, masks come from the key, evaluation is the identity, and
the vjp reuses the mask; finite differences, purity, dtypes and argument errors."""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fnn import random, serial
from fnn.layers import Dense, Dropout
from fnn.testing import check_vjp

KEY = random.key(0)


@st.composite
def dropout_case(draw):
    rate = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9]), label="rate")
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), label="shape")
    x = draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)), label="x")
    key = random.key(draw(st.integers(0, 10_000), label="seed"))
    return Dropout(rate), x, key


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@settings(deadline=None)
@given(case=dropout_case())
def test_vjp_matches_finite_differences(train, case):
    layer, x, key = case
    errors = check_vjp(layer, {}, x, train=train, key=key)
    assert set(errors) == {"['x']"}


@given(case=dropout_case(), train=st.booleans())
def test_apply_and_vjp_are_pure(case, train):
    layer, x, key = case
    dy = random.normal(random.key(1), x.shape, np.float64)
    copies = (x.copy(), dy.copy())
    x.setflags(write=False)
    dy.setflags(write=False)
    (y1, vjp1), (y2, vjp2) = layer.apply({}, x, train=train, key=key), layer.apply({}, x, train=train, key=key)
    assert y1.tobytes() == y2.tobytes()
    (p1, dx1), (p2, dx2), (p3, dx3) = vjp1(dy), vjp1(dy), vjp2(dy)
    assert p1 == p2 == p3 == {}
    assert dx1.tobytes() == dx2.tobytes() == dx3.tobytes()
    assert x.tobytes() == copies[0].tobytes() and dy.tobytes() == copies[1].tobytes()
    for out in (y1, dx1):
        assert not np.shares_memory(out, x) and not np.shares_memory(out, dy)
    assert layer.apply({}, x, train=train, key=key).state == {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=dropout_case(), train=st.booleans())
def test_dtype_is_preserved(dtype, case, train):
    layer, x, key = case
    x = x.astype(dtype)
    y, vjp = layer.apply({}, x, train=train, key=key)
    assert y.dtype == dtype and y.shape == x.shape
    _, dx = vjp(np.ones(x.shape, dtype))
    assert dx.dtype == dtype and dx.shape == x.shape


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.8])
def test_rate_is_the_drop_probability_and_kept_entries_are_scaled(rate):
    x = np.ones((400, 500))
    y, _ = Dropout(rate).apply({}, x, train=True, key=random.key(7))
    dropped = float(np.mean(y == 0))
    # 200k Bernoulli draws: the standard deviation of the fraction is below 0.0012
    assert abs(dropped - rate) < 0.01
    kept = y[y != 0]
    assert np.all(kept == np.float64(1) * np.float64(1 / (1 - rate)))
    assert abs(float(y.mean()) - 1.0) < 0.03  # inverted dropout keeps the expectation


def test_float32_scale_is_applied_in_float32():
    x = np.full((50, 50), 3.0, np.float32)
    y, _ = Dropout(0.25).apply({}, x, train=True, key=KEY)
    assert y.dtype == np.float32
    assert set(np.unique(y).tolist()) == {0.0, float(np.float32(3.0) * np.float32(1 / 0.75))}


def test_same_key_same_mask_different_keys_different_masks():
    x = np.ones((20, 30))
    drop = Dropout(0.5)
    a, _ = drop.apply({}, x, train=True, key=random.key(1))
    b, _ = drop.apply({}, x, train=True, key=random.key(1))
    c, _ = drop.apply({}, x, train=True, key=random.key(2))
    d, _ = drop.apply({}, x, train=True, key=random.split(random.key(1))[0])
    assert a.tobytes() == b.tobytes()
    assert (a == 0).tolist() != (c == 0).tolist()
    assert (a == 0).tolist() != (d == 0).tolist()


def test_mask_depends_on_the_key_only_not_on_the_values():
    drop = Dropout(0.4)
    x1 = random.normal(random.key(1), (10, 10), np.float64) + 10  # no zeros
    x2 = random.normal(random.key(2), (10, 10), np.float64) + 10
    y1, _ = drop.apply({}, x1, train=True, key=KEY)
    y2, _ = drop.apply({}, x2, train=True, key=KEY)
    assert ((y1 == 0) == (y2 == 0)).all()


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9])
def test_evaluation_is_the_identity(rate):
    x = random.normal(KEY, (4, 5), np.float64)
    for key in (None, random.key(3)):
        y, vjp = Dropout(rate).apply({}, x, key=key)
        assert y.tobytes() == x.tobytes() and not np.shares_memory(y, x)
        dy = random.normal(random.key(4), x.shape, np.float64)
        _, dx = vjp(dy)
        assert dx.tobytes() == dy.tobytes() and not np.shares_memory(dx, dy)


def test_rate_zero_in_training_is_the_identity():
    x = random.normal(KEY, (4, 5), np.float64)
    y, _ = Dropout(0.0).apply({}, x, train=True, key=KEY)
    assert y.tobytes() == x.tobytes()


def test_vjp_reuses_the_mask():
    drop = Dropout(0.5)
    x = random.uniform(KEY, (30, 40), np.float64, 1.0, 2.0)  # no zeros in x
    y, vjp = drop.apply({}, x, train=True, key=random.key(5))
    dy = random.uniform(random.key(6), x.shape, np.float64, 1.0, 2.0)  # no zeros in dy
    _, dx = vjp(dy)
    assert 0 < (y == 0).sum() < y.size
    assert ((dx == 0) == (y == 0)).all()
    np.testing.assert_array_equal(dx[y != 0], dy[y != 0] * 2.0)
    _, dx_again = vjp(dy)
    assert dx_again.tobytes() == dx.tobytes()
    _, no_dx = vjp(dy, need_dx=False)
    assert no_dx is None


def test_missing_key_in_training_raises():
    with pytest.raises(ValueError, match=r"Dropout\(0.5\): train=True needs a key"):
        Dropout(0.5).apply({}, np.ones((2, 3), np.float32), train=True)


def test_bad_key_raises():
    with pytest.raises((TypeError, ValueError), match="key"):
        Dropout(0.5).apply({}, np.ones((2, 3), np.float32), train=True, key=np.array([1, 2, 3]))


@pytest.mark.parametrize("rate", [-0.1, 1, 1.0, 1.5, np.float32(1.0), -1e-300])
def test_rate_outside_zero_one_raises_value_error(rate):
    match = rf"^Dropout\({re.escape(repr(rate))}\): rate \(the probability of dropping\) must be in \[0, 1\), got "
    with pytest.raises(ValueError, match=match):
        Dropout(rate)


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), -math.inf, np.float64("nan")])
def test_rate_nan_or_inf_raises_value_error(rate):
    with pytest.raises(ValueError, match=r"^Dropout\(.*\): rate \(the probability of dropping\) must be a finite "):
        Dropout(rate)


@pytest.mark.parametrize("rate, got", [(True, "bool True"), (False, "bool False"), (np.True_, "bool"),
                                       ("0.5", "str '0.5'"), (None, "NoneType None"), ([0.5], "list")])
def test_rate_of_another_kind_raises_type_error(rate, got):
    match = rf"^Dropout\(.*\): rate \(the probability of dropping\) must be a number, got {re.escape(got)}"
    with pytest.raises(TypeError, match=match):
        Dropout(rate)


@pytest.mark.parametrize("rate", [np.float32(0.25), np.float64(0.5), np.float16(0.5), np.int64(0), 0])
def test_numpy_scalar_and_int_rates_are_accepted(rate):
    x = random.normal(random.key(1), (20, 30), np.float32)
    y, vjp = Dropout(rate).apply({}, x, train=True, key=KEY)
    want, want_vjp = Dropout(float(rate)).apply({}, x, train=True, key=KEY)
    assert y.tobytes() == want.tobytes()
    assert vjp(x)[1].tobytes() == want_vjp(x)[1].tobytes()


def test_params_must_be_empty():
    with pytest.raises(ValueError, match="has no parameters and expects params"):
        Dropout(0.5).apply({"w": np.ones(2)}, np.ones((2, 3)))


def test_dropout_in_serial_gets_its_own_key_and_same_key_gives_same_masks():
    net = serial(Dense(50), Dropout(0.5), Dense(50), Dropout(0.5))
    params = net.init(KEY, (5,), np.float64)
    x = random.normal(random.key(1), (8, 5), np.float64)
    a, _ = net.apply(params, x, train=True, key=random.key(9))
    b, _ = net.apply(params, x, train=True, key=random.key(9))
    c, _ = net.apply(params, x, train=True, key=random.key(10))
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    with pytest.raises(ValueError, match="needs a key"):
        net.apply(params, x, train=True)
    y_eval, _ = net.apply(params, x)
    y_eval2, _ = net.apply(params, x, key=random.key(9))
    assert y_eval.tobytes() == y_eval2.tobytes()
