"""fnn.init: fans, initializer shapes, dtypes, scales and determinism."""

import math
from functools import partial

import numpy as np
import pytest

from fnn import init, random

KEY = random.key(0)
RANDOM_INITS = [init.normal, init.uniform, init.glorot_uniform, init.glorot_normal,
                init.he_uniform, init.he_normal, init.fan_in_uniform]
ALL_INITS = [init.zeros, init.ones, partial(init.constant, value=0.5), *RANDOM_INITS]


@pytest.mark.parametrize("shape, expected", [
    ((), (1, 1)),
    ((7,), (7, 7)),
    ((784, 128), (784, 128)),            # Dense (in, out)
    ((16, 3, 5, 5), (3 * 25, 16 * 25)),  # PyTorch conv (out, in, kh, kw)
    ((8, 4, 3), (12, 24)),
])
def test_fans(shape, expected):
    assert init.fans(shape) == expected


@pytest.mark.parametrize("fn", ALL_INITS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_dtype_and_determinism(fn, dtype):
    a, b = fn(KEY, (4, 3), dtype), fn(KEY, (4, 3), dtype)
    assert a.shape == (4, 3) and a.dtype == dtype
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("fn", RANDOM_INITS)
def test_random_initializers_depend_on_the_key(fn):
    assert fn(random.key(0), (5, 5)).tobytes() != fn(random.key(1), (5, 5)).tobytes()


@pytest.mark.parametrize("fn", ALL_INITS)
def test_default_dtype_is_float32(fn):
    assert fn(KEY, (2,)).dtype == np.float32


@pytest.mark.parametrize("fn", ALL_INITS)
@pytest.mark.parametrize("dtype", [np.int32, np.float16, bool])
def test_non_float_dtypes_raise(fn, dtype):
    with pytest.raises(TypeError, match="^fnn.init.[a-z_]+: dtype must be float32 or float64"):
        fn(KEY, (2, 2), dtype)


@pytest.mark.parametrize("call, match", [
    (lambda: init.normal(KEY, (2,), std="0.1"), "^fnn.init.normal: std must be a number, got str '0.1'"),
    (lambda: init.normal(KEY, (2,), std=None), "^fnn.init.normal: std must be a number, got NoneType None"),
    (lambda: init.uniform(KEY, (2,), scale=True), "^fnn.init.uniform: scale must be a number, got bool True"),
    (lambda: init.uniform(KEY, (2,), scale=[0.1]), "^fnn.init.uniform: scale must be a number, got list"),
    (lambda: init.constant(KEY, (2,), value="1"), "^fnn.init.constant: value must be a number, got str '1'"),
    (lambda: init.constant(KEY, (2,), value=np.ones(2)), "^fnn.init.constant: value must be a number, got ndarray"),
])
def test_hyperparameters_of_the_wrong_kind_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: init.normal(KEY, (2,), std=-0.1), r"^fnn.init.normal: std must be in \[0, inf\], got -0.1"),
    (lambda: init.normal(KEY, (2,), std=math.nan), "^fnn.init.normal: std must be a finite number, got nan"),
    (lambda: init.uniform(KEY, (2,), scale=-1), r"^fnn.init.uniform: scale must be in \[0, inf\], got -1"),
    (lambda: init.constant(KEY, (2,), value=math.inf), "^fnn.init.constant: value must be a finite number, got inf"),
])
def test_hyperparameters_with_a_bad_value_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_scalar_hyperparameters_give_the_python_number_results(dtype):
    got = init.normal(KEY, (3, 4), dtype, std=np.float32(0.5))
    assert got.dtype == dtype and got.tobytes() == init.normal(KEY, (3, 4), dtype, std=float(np.float32(0.5))).tobytes()
    got = init.uniform(KEY, (3, 4), dtype, scale=np.float64(0.25))
    assert got.dtype == dtype and got.tobytes() == init.uniform(KEY, (3, 4), dtype, scale=0.25).tobytes()
    got = init.constant(KEY, (3,), dtype, value=np.int64(-2))
    assert got.dtype == dtype and got.tolist() == [-2.0] * 3


def test_constant_values():
    assert not init.zeros(KEY, (3,)).any()
    assert (init.ones(KEY, (3,)) == 1).all()
    assert (init.constant(KEY, (3,), value=-2.5) == -2.5).all()


SHAPE = (200, 300)  # fan_in 200, fan_out 300; 60,000 draws


@pytest.mark.parametrize("fn, bound", [
    (init.uniform, 1e-2),
    (partial(init.uniform, scale=0.5), 0.5),
    (init.glorot_uniform, math.sqrt(6 / 500)),
    (init.he_uniform, math.sqrt(6 / 200)),
    (init.fan_in_uniform, 1 / math.sqrt(200)),
])
def test_uniform_initializers_fill_their_interval(fn, bound):
    w = fn(KEY, SHAPE, np.float64)
    assert -bound <= w.min() and w.max() < bound
    assert w.min() < -0.99 * bound and w.max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


@pytest.mark.parametrize("fn, std", [
    (init.normal, 1e-2),
    (partial(init.normal, std=0.3), 0.3),
    (init.glorot_normal, math.sqrt(2 / 500)),
    (init.he_normal, math.sqrt(2 / 200)),
])
def test_normal_initializers_have_their_std(fn, std):
    w = fn(KEY, SHAPE, np.float64)
    assert abs(w.mean()) < 0.02 * std * 5
    assert w.std() == pytest.approx(std, rel=0.02)


def test_conv_layout_fans_set_the_scale():
    w = init.he_normal(KEY, (64, 8, 5, 5), np.float64)  # fan_in = 8 * 25 = 200
    assert w.std() == pytest.approx(math.sqrt(2 / 200), rel=0.03)
