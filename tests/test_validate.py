"""fnn.validate: the one rule for arguments (TypeError for the kind, ValueError for the value)."""

import math

import numpy as np
import pytest

from fnn import validate as v


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float64(1.0), np.int64(1), np.int8(0)])
def test_numbers_accept_python_and_numpy_scalars(value):
    got = v.number("L", "x", value, low=0, high=1)
    assert type(got) is float and got == float(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), "0.1", None, [0.1], np.array([0.1]), 1j])
def test_numbers_refuse_other_kinds_with_type_error(value):
    with pytest.raises(TypeError, match=r"^L: x must be a number, got "):
        v.number("L", "x", value)


@pytest.mark.parametrize("value, match", [
    (math.nan, r"^L: x must be a finite number, got nan"),
    (np.float32(np.inf), r"^L: x must be a finite number, got"),
    (-0.1, r"^L: x must be in \[0, 1\), got -0.1"),
    (1.0, r"^L: x must be in \[0, 1\), got 1.0"),
])
def test_numbers_out_of_range_raise_value_error(value, match):
    with pytest.raises(ValueError, match=match):
        v.number("L", "x", value, low=0, high=1, high_open=True)


def test_open_lower_bound():
    with pytest.raises(ValueError, match=r"eps must be in \(0, inf\], got 0"):
        v.number("BatchNorm()", "eps", 0, low=0, low_open=True)


def test_integers():
    assert v.integer("L", "n", np.int32(3), low=1) == 3 and type(v.integer("L", "n", np.int32(3))) is int
    with pytest.raises(TypeError, match=r"^L: n must be an int, got bool True"):
        v.integer("L", "n", True)
    with pytest.raises(TypeError, match=r"^L: n must be an int, got float 3.0"):
        v.integer("L", "n", 3.0)
    with pytest.raises(TypeError, match=r"^L: n must be an int, got str '3'"):
        v.integer("L", "n", "3")
    with pytest.raises(ValueError, match=r"^L: n must be >= 1, got 0"):
        v.integer("L", "n", 0, low=1)
    with pytest.raises(ValueError, match=r"^L: n must be <= 4, got 5"):
        v.integer("L", "n", 5, high=4)


def test_probability():
    assert v.probability("Dropout(0.5)", "rate", np.float32(0.5)) == 0.5
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got 1"):
        v.probability("Dropout(1)", "rate", 1, high_open=True)


@pytest.mark.parametrize("value", ["False", "True", 0, 1, None, np.array(True)])
def test_booleans_take_true_and_false_only(value):
    with pytest.raises(TypeError, match=r"^Dense\(3\): train must be True or False, got "):
        v.boolean("Dense(3)", "train", value)


def test_booleans_accept_numpy_bools():
    assert v.boolean("L", "b", np.bool_(True)) is True and v.boolean("L", "b", False) is False


def test_choice():
    assert v.choice("mse", "reduction", "sum", ("mean", "sum")) == "sum"
    with pytest.raises(ValueError, match=r"^mse: reduction must be one of \['mean', 'sum'\], got 'none'"):
        v.choice("mse", "reduction", "none", ("mean", "sum"))
    with pytest.raises(TypeError, match=r"^mse: reduction must be one of \['mean', 'sum'\], got NoneType"):
        v.choice("mse", "reduction", None, ("mean", "sum"))


def test_pairs_and_paddings():
    assert v.pair("C", "stride", 2) == (2, 2) and v.pair("C", "stride", [1, np.int64(3)]) == (1, 3)
    with pytest.raises(TypeError, match=r"^C: stride must be an int or a pair of ints, got \(1, 2, 3\)"):
        v.pair("C", "stride", (1, 2, 3))
    with pytest.raises(ValueError, match=r"^C: stride must be >= 1, got 0"):
        v.pair("C", "stride", 0)
    assert v.padding("C", 1) == (1, 1, 1, 1) and v.padding("C", (1, 2)) == (1, 1, 2, 2)
    assert v.padding("C", ((0, 1), (2, 3))) == (0, 1, 2, 3) and v.padding("C", "SAME") == "same"
    assert v.padding("C", "valid") == (0, 0, 0, 0) and v.padding("f", (0, 1, 2, 3), explicit=True) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match=r'^P: padding must be "valid", an int or a pair, got \'same\''):
        v.padding("P", "same", allow_same=False)
    with pytest.raises(ValueError, match=r"^C: padding must be >= 0, got -1"):
        v.padding("C", -1)


def test_float_dtype():
    assert v.float_dtype("init", "float64") == np.float64
    with pytest.raises(TypeError, match=r"^init: dtype must be float32 or float64, got int64"):
        v.float_dtype("init", np.int64)
    with pytest.raises(TypeError, match=r"^init: dtype must be float32 or float64, got 'nope'"):
        v.float_dtype("init", "nope")


def test_aligned_arrays():
    arrays, n = v.aligned_arrays("f", [np.zeros((3, 2)), [1, 2, 3]])
    assert n == 3 and isinstance(arrays, tuple) and all(isinstance(a, np.ndarray) for a in arrays)
    with pytest.raises(TypeError, match=r"^f: arrays must be a tuple of arrays such as \(x, y\) .*, got ndarray"):
        v.aligned_arrays("f", np.zeros(3))
    with pytest.raises(ValueError, match=r"^f: arrays must share their first axis length, got lengths \[3, None\]"):
        v.aligned_arrays("f", (np.zeros(3), np.array(1.0)))


def test_array_shape():
    assert v.array_shape("f", np.int64(3)) == (3,) and v.array_shape("f", [2, 0]) == (2, 0)
    with pytest.raises(TypeError, match=r"^f: shape must be an int or a tuple of ints, got \(2.0,\)"):
        v.array_shape("f", (2.0,))
    with pytest.raises(ValueError, match=r"^f: shape must be a tuple of non-negative ints, got -2"):
        v.array_shape("f", -2)
