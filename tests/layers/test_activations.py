"""Activations: hand-computed values and gradients, numerical stability, and argument errors.

The protocol (finite differences, purity, dtypes, input and cotangent errors) is checked for
every activation in test_contract.py.
"""

import math
import re
import warnings

import numpy as np
import pytest

from fnn import random
from fnn.layers import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh, activations


def run(layer, x, dy=None):
    x = np.asarray(x, np.float64)
    y, vjp = layer.apply({}, x)
    dparams, dx = vjp(np.ones_like(y) if dy is None else np.asarray(dy, np.float64))
    assert dparams == {}
    return y, dx


def test_relu_by_hand_with_zero_gradient_at_zero():
    y, dx = run(ReLU(), [[-2.0, 0.0, 3.0]], [[5.0, 5.0, 5.0]])
    assert y.tolist() == [[0.0, 0.0, 3.0]] and dx.tolist() == [[0.0, 0.0, 5.0]]


def test_leaky_relu_by_hand():
    y, dx = run(LeakyReLU(0.25), [[-2.0, 0.0, 3.0]], [[4.0, 4.0, 4.0]])
    assert y.tolist() == [[-0.5, 0.0, 3.0]] and dx.tolist() == [[1.0, 1.0, 4.0]]
    assert LeakyReLU().kind == "LeakyReLU(0.01)"  # PyTorch's default slope
    y, _ = run(LeakyReLU(), [[-100.0]])
    assert y.tolist() == [[-1.0]]


def test_sigmoid_by_hand():
    y, dx = run(Sigmoid(), [[0.0, math.log(3.0)]])
    np.testing.assert_allclose(y, [[0.5, 0.75]], rtol=1e-15)
    np.testing.assert_allclose(dx, [[0.25, 0.75 * 0.25]], rtol=1e-15)


def test_tanh_by_hand():
    y, dx = run(Tanh(), [[0.0, math.atanh(0.5)]], [[2.0, 2.0]])
    np.testing.assert_allclose(y, [[0.0, 0.5]], atol=1e-15)
    np.testing.assert_allclose(dx, [[2.0, 2.0 * 0.75]], rtol=1e-15)


def test_softmax_and_log_softmax_by_hand():
    x = [[0.0, math.log(3.0)], [5.0, 5.0]]
    y, dx = run(Softmax(), x, [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(y, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-15)
    # y * (dy - <dy, y>)
    np.testing.assert_allclose(dx, [[0.25 * 0.75, -0.75 * 0.25], [0.25, -0.25]], rtol=1e-15)
    y, dx = run(LogSoftmax(), x, [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(y, np.log([[0.25, 0.75], [0.5, 0.5]]), rtol=1e-15)
    # dy - softmax * sum(dy)
    np.testing.assert_allclose(dx, [[0.75, -0.75], [0.5, -0.5]], rtol=1e-15)


@pytest.mark.parametrize("axis", [1, 2, -1, -2])
@pytest.mark.parametrize("constructor, formula", [
    (Softmax, lambda v: np.exp(v) / np.exp(v).sum()),
    (LogSoftmax, lambda v: v - np.log(np.exp(v).sum())),
])
def test_softmax_family_along_any_feature_axis_matches_a_loop(constructor, formula, axis):
    x = np.arange(24.0).reshape(2, 3, 4) / 7 - 1
    y, _ = run(constructor(axis=axis), x)
    moved_x, moved_y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    for idx in np.ndindex(moved_x.shape[:-1]):
        np.testing.assert_allclose(moved_y[idx], formula(moved_x[idx]), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("layer, expected", [
    (Sigmoid(), [[1.0, 0.0, 0.5]]),
    (Tanh(), [[1.0, -1.0, 0.0]]),
    (Softmax(), [[1.0, 0.0, 0.0]]),
    (LogSoftmax(), [[0.0, -2e30, -1e30]]),
    (ReLU(), [[1e30, 0.0, 0.0]]),
    (GELU(), [[1e30, 0.0, 0.0]]),
    (GELU("tanh"), [[1e30, 0.0, 0.0]]),
    (SiLU(), [[1e30, 0.0, 0.0]]),
])
def test_extreme_float32_inputs_stay_finite_without_warnings(layer, expected):
    x = np.array([[1e30, -1e30, 0.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, vjp = layer.apply({}, x)
        _, dx = vjp(np.ones_like(y))
    assert y.dtype == np.float32 and np.isfinite(y).all() and np.isfinite(dx).all()
    np.testing.assert_allclose(y, expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis, shape", [(-1, (2, 0)), (1, (2, 0)), (-1, (0, 0)), (1, (3, 0, 4)), (-2, (3, 0, 4))])
@pytest.mark.parametrize("constructor", [Softmax, LogSoftmax])
def test_softmax_family_over_an_empty_axis_gives_empty_y_and_dx_not_a_reduction_error(constructor, axis, shape,
                                                                                      dtype):
    # Regression: x.max over the empty axis raised numpy's "zero-size array to reduction operation maximum".
    x = np.ones(shape, dtype)
    x.setflags(write=False)
    y, vjp = constructor(axis=axis).apply({}, x)
    assert y.shape == shape and y.dtype == dtype and not np.shares_memory(y, x)
    dparams, dx = vjp(np.ones(shape, dtype))
    assert dparams == {} and dx.shape == shape and dx.dtype == dtype
    assert vjp(np.ones(shape, dtype), need_dx=False) == ({}, None)


@pytest.mark.parametrize("constructor", [Softmax, LogSoftmax])
def test_softmax_family_on_an_empty_batch_gives_empty_y_and_dx(constructor):
    for shape in [(0, 3), (0, 3, 2)]:
        x = np.ones(shape, np.float32)
        y, vjp = constructor().apply({}, x)
        assert y.shape == shape and y.dtype == np.float32
        _, dx = vjp(np.ones(shape, np.float32))
        assert dx.shape == shape and dx.dtype == np.float32


@pytest.mark.parametrize("constructor", [Softmax, LogSoftmax])
def test_softmax_family_kinds(constructor):
    name = constructor.__name__
    assert constructor().kind == f"{name}()" and constructor(axis=1).kind == f"{name}(axis=1)"


@pytest.mark.parametrize("constructor", [Softmax, LogSoftmax])
@pytest.mark.parametrize("axis", ["a", "1", 1.0, True, np.bool_(True), None])
def test_softmax_family_non_int_axis_raises(constructor, axis):
    """Strings and bools are not ints: a TypeError whose message starts with the layer's kind."""
    name = constructor.__name__
    msg = f"{name}(axis={axis!r}): axis must be an int, got {type(axis).__name__} {axis!r}"
    with pytest.raises(TypeError, match="^" + re.escape(msg)):
        constructor(axis=axis)


@pytest.mark.parametrize("constructor", [Softmax, LogSoftmax])
def test_softmax_family_takes_numpy_int_axes(constructor):
    name = constructor.__name__
    assert constructor(axis=np.int64(-1)).kind == f"{name}()"
    assert constructor(axis=np.int32(1)).kind == f"{name}(axis=1)"
    y, _ = run(constructor(axis=np.int8(1)), [[0.0, 0.0]])
    assert y.shape == (1, 2)


@pytest.mark.parametrize("constructor", [Softmax, LogSoftmax])
@pytest.mark.parametrize("axis, shape", [(0, (2, 3)), (-2, (2, 3)), (2, (2, 3)), (-3, (2, 3)), (-1, (4,))])
def test_softmax_family_axis_that_is_not_a_feature_axis_raises(constructor, axis, shape):
    """The batch axis, an axis out of range, and an input without feature axes (wrong rank) all raise."""
    with pytest.raises(ValueError, match=f"axis {axis} is not a feature axis of input with shape"):
        constructor(axis=axis).apply({}, np.ones(shape, np.float32))


@pytest.mark.parametrize("slope", [math.nan, math.inf, -math.inf, np.float32(np.nan)])
def test_leaky_relu_non_finite_slope_raises(slope):
    with pytest.raises(ValueError, match=r"^" + re.escape(f"LeakyReLU({slope!r}): slope must be a finite number")):
        LeakyReLU(slope)


@pytest.mark.parametrize("slope", ["0.1", None, [0.1], True, np.bool_(False)])
def test_leaky_relu_slope_of_wrong_type_raises(slope):
    """A string or a bool is not a number: TypeError, starting with the layer's kind."""
    msg = f"LeakyReLU({slope!r}): slope must be a number, got {type(slope).__name__}"
    with pytest.raises(TypeError, match="^" + re.escape(msg)):
        LeakyReLU(slope)


@pytest.mark.parametrize("slope", [np.float32(0.25), np.float64(0.25), np.int64(0), 0])
def test_leaky_relu_takes_numpy_scalars_and_ints(slope):
    layer = LeakyReLU(slope)
    assert layer.kind == f"LeakyReLU({float(slope)})"
    y, dx = run(layer, [[-4.0, 2.0]])
    assert y.tolist() == [[-4.0 * float(slope), 2.0]] and dx.tolist() == [[float(slope), 1.0]]


def test_module_level_functions_are_the_maths():
    """Each layer runs its <layer>_forward(x) -> (y, cache) and <layer>_backward(cache, dy) -> dx."""
    x = np.array([[-1.5, 0.0, 2.0]])
    dy = np.array([[1.0, 2.0, 3.0]])
    for layer, forward, backward, args in [
        (ReLU(), activations.relu_forward, activations.relu_backward, ()),
        (LeakyReLU(0.1), activations.leaky_relu_forward, activations.leaky_relu_backward, (0.1,)),
        (Sigmoid(), activations.sigmoid_forward, activations.sigmoid_backward, ()),
        (Tanh(), activations.tanh_forward, activations.tanh_backward, ()),
        (Softmax(), activations.softmax_forward, activations.softmax_backward, (-1,)),
        (LogSoftmax(), activations.log_softmax_forward, activations.log_softmax_backward, (-1,)),
    ]:
        y, cache = forward(x, *args)
        got_y, vjp = layer.apply({}, x)
        assert got_y.tolist() == y.tolist(), layer
        assert vjp(dy)[1].tolist() == backward(cache, dy, *args).tolist(), layer


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(), Sigmoid(), Tanh(), Softmax(), LogSoftmax(), GELU(),
                                   GELU("tanh"), SiLU()])
def test_parameterless_layers_reject_params(layer):
    x = np.ones((2, 3), np.float32)
    assert layer.init(random.key(0), (3,)) == {}
    for params in ({"w": np.ones(3, np.float32)}, None, [], {"b": {}}):
        with pytest.raises(ValueError, match=f"^{re.escape(layer.kind)}: has no parameters"):
            layer.apply(params, x)


# ------------------------------------------------------------------------------ GELU and SiLU

GELU_SILU = [("none", lambda: GELU()), ("tanh", lambda: GELU("tanh")), ("silu", lambda: SiLU())]
WIDE = np.concatenate([np.linspace(-40, 40, 8001), np.random.default_rng(0).standard_normal(2000) * 3,
                       [-1e-300, 0.0, 1e-300]])


def test_gelu_and_silu_by_hand():
    phi1 = 0.5 * math.erfc(-1 / math.sqrt(2))  # Phi(1)
    y, dx = run(GELU(), [[0.0, 1.0, -1.0]])
    np.testing.assert_allclose(y, [[0.0, phi1, -(1 - phi1)]], rtol=1e-15)
    density = math.exp(-0.5) / math.sqrt(2 * math.pi)  # phi(1)
    np.testing.assert_allclose(dx, [[0.5, phi1 + density, 1 - phi1 - density]], rtol=1e-15)
    # tanh form at 1: u = sqrt(2 / pi) * 1.044715
    u = math.sqrt(2 / math.pi) * 1.044715
    y, dx = run(GELU("tanh"), [[0.0, 1.0]])
    du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715)
    np.testing.assert_allclose(y, [[0.0, 0.5 * (1 + math.tanh(u))]], rtol=1e-15)
    np.testing.assert_allclose(dx, [[0.5, 0.5 * (1 + math.tanh(u)) + 0.5 * (1 - math.tanh(u) ** 2) * du]], rtol=1e-15)
    y, dx = run(SiLU(), [[0.0, math.log(3.0), -math.log(3.0)]])  # sigmoid(log 3) = 3 / 4
    np.testing.assert_allclose(y, [[0.0, 0.75 * math.log(3.0), -0.25 * math.log(3.0)]], rtol=1e-15)
    np.testing.assert_allclose(dx, [[0.5, 0.75 * (1 + 0.25 * math.log(3.0)), 0.25 * (1 - 0.75 * math.log(3.0))]],
                               rtol=1e-15)


@pytest.mark.parametrize("form, make", GELU_SILU, ids=[f[0] for f in GELU_SILU])
def test_gelu_and_silu_match_pytorch_in_float64_over_a_wide_range(form, make):
    """Forward and dx to rtol 1e-10 over [-40, 40], and +-1e300 except for the tanh form (PyTorch's
    x^3 overflows there: a NaN gradient; see the next test). GELU's atol 1e-14: PyTorch computes
    x / 2 * (1 + erf(x / sqrt(2))) and x / 2 * (1 + tanh(u)), whose 1 + erf and 1 + tanh cancel in the
    left tail (absolute error ~1e-16, times |x u'| <= ~10 in the tanh form's dx), where fnn computes
    without cancellation (checked against math in the next test). SiLU has no such term: rtol alone."""
    torch = pytest.importorskip("torch")
    module = {"none": torch.nn.GELU(), "tanh": torch.nn.GELU(approximate="tanh"), "silu": torch.nn.SiLU()}[form]
    x = (WIDE if form == "tanh" else np.concatenate([WIDE, [-1e300, 1e300]])).reshape(1, -1)
    dy = np.cos(3 * x)
    y, dx = run(make(), x, dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    yt.backward(torch.tensor(dy))
    atol = 0.0 if form == "silu" else 1e-14
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=atol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=atol)


def test_gelu_left_tail_is_accurate_relative_to_its_value():
    """Exact form: y = x Phi(x) and dy/dx = Phi(x) + x phi(x) against math.erfc down to x = -37
    (y = -1e-300 there), to 4 ulps times (1 + x^2), the conditioning of Phi; tanh form: x sigmoid(2 u)
    against math.exp down to x = -8 (y = -1e-21), where PyTorch's 1 + tanh(u) has lost 6 digits."""
    x = np.linspace(-37, -3, 3401)
    y, dx = run(GELU(), x.reshape(1, -1))
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    density = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    tol = 4 * np.finfo(np.float64).eps * (1 + x * x)
    assert (np.abs(y[0] - x * cdf) <= tol * np.abs(x * cdf)).all()
    assert (np.abs(dx[0] - (cdf + x * density)) <= tol * np.abs(cdf + x * density)).all()
    x = np.linspace(-8, -1, 701)
    v = 2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)  # 2 u
    y, _ = run(GELU("tanh"), x.reshape(1, -1))
    np.testing.assert_allclose(y[0], x / (1 + np.exp(-v)), rtol=1e-12)


@pytest.mark.parametrize("form, make", GELU_SILU, ids=[f[0] for f in GELU_SILU])
def test_gelu_and_silu_in_float32_match_float64_to_a_few_ulps(form, make):
    """Computed in float32 (no float64 temporaries), y within 4 ulps times (1 + x^2) of the float64
    result at the same inputs and dy/dx within 4 ulps of its scale (it cancels to 0 at the minimum)."""
    x32 = np.concatenate([np.linspace(-12, 12, 4801), random.normal(random.key(1), (2000,)) * 3]).astype(np.float32)
    x64 = x32.astype(np.float64)
    eps = np.finfo(np.float32).eps
    y32, vjp32 = make().apply({}, x32.reshape(1, -1))
    y64, vjp64 = make().apply({}, x64.reshape(1, -1))
    g32, g64 = vjp32(np.ones_like(y32))[1][0], vjp64(np.ones_like(y64))[1][0]
    assert y32.dtype == g32.dtype == np.float32
    assert (np.abs(y32[0] - y64[0]) <= 4 * eps * (1 + x64 ** 2) * np.abs(y64[0]) + np.finfo(np.float32).tiny).all()
    assert (np.abs(g32 - g64) <= 4 * eps * (1 + np.abs(g64))).all()


@pytest.mark.parametrize("form, make", GELU_SILU, ids=[f[0] for f in GELU_SILU])
def test_gelu_and_silu_at_huge_inputs_reach_their_limits_without_warnings(form, make):
    """y = x and dy/dx = 1 far right, y = -0 and dy/dx = 0 far left (no x^3 overflow in the tanh form)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, dx = run(make(), [[-1e300, -1e30, 1e30, 1e300]])
    assert y.tolist() == [[0.0, 0.0, 1e30, 1e300]] and dx.tolist() == [[0.0, 0.0, 1.0, 1.0]]


@pytest.mark.parametrize("form, make", GELU_SILU, ids=[f[0] for f in GELU_SILU])
def test_gelu_and_silu_propagate_nan(form, make):
    y, dx = run(make(), [[np.nan, 1.0]])
    assert np.isnan(y[0, 0]) and np.isnan(dx[0, 0]) and np.isfinite(y[0, 1]) and np.isfinite(dx[0, 1])


def test_gelu_and_silu_module_level_functions_are_the_maths():
    """<layer>_forward(x, ..., need_grad) -> (y, dy/dx) and <layer>_backward(dy/dx, dy) -> dx; without
    need_grad (inference: apply(..., need_vjp=False)) the derivative is not computed."""
    x = np.array([[-1.5, 0.0, 2.0]])
    dy = np.array([[1.0, 2.0, 3.0]])
    for layer, forward, backward, args in [
        (GELU(), activations.gelu_forward, activations.gelu_backward, ("none",)),
        (GELU("tanh"), activations.gelu_forward, activations.gelu_backward, ("tanh",)),
        (SiLU(), activations.silu_forward, activations.silu_backward, ()),
    ]:
        y, grad = forward(x, *args)
        got_y, vjp = layer.apply({}, x)
        assert got_y.tolist() == y.tolist(), layer
        assert vjp(dy)[1].tolist() == backward(grad, dy).tolist(), layer
        y_only, none = forward(x, *args, need_grad=False)
        assert none is None and y_only.tolist() == y.tolist()
        assert layer.apply({}, x, need_vjp=False)[0].tolist() == y.tolist()
    assert activations.gelu_forward(x)[0].tolist() == GELU().apply({}, x)[0].tolist()  # "none" by default


def test_gelu_kinds():
    assert GELU().kind == "GELU()" and GELU("none").kind == "GELU()"
    assert GELU("tanh").kind == "GELU(approximate='tanh')" and SiLU().kind == "SiLU()"


@pytest.mark.parametrize("approximate", ["erf", "Tanh", "", "exact"])
def test_gelu_unknown_approximate_raises_value_error(approximate):
    msg = f"GELU(approximate={approximate!r}): approximate must be one of ['none', 'tanh'], got {approximate!r}"
    with pytest.raises(ValueError, match="^" + re.escape(msg)):
        GELU(approximate)
    with pytest.raises(ValueError, match=re.escape("gelu_forward: approximate must be one of ['none', 'tanh']")):
        activations.gelu_forward(np.zeros((1, 2)), approximate)


@pytest.mark.parametrize("approximate", [None, True, 1, ["tanh"]])
def test_gelu_approximate_of_wrong_type_raises_type_error(approximate):
    got = type(approximate).__name__
    msg = f"GELU(approximate={approximate!r}): approximate must be one of ['none', 'tanh'], got {got}"
    with pytest.raises(TypeError, match="^" + re.escape(msg)):
        GELU(approximate)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["gelu", "gelu-tanh", "silu"])
def test_large_arrays_run_in_blocks_with_the_same_bits(form, dtype):
    """Above 2 * 32768 values GELU and SiLU run block by block (cache-sized temporaries); every value
    still goes through the same operations, so each equals the result for that value alone."""
    x = (np.random.default_rng(1).standard_normal((3, 50_001)) * 4).astype(dtype)[:, ::2]  # strided too
    fn = {"gelu": activations.gelu_forward, "gelu-tanh": lambda v: activations.gelu_forward(v, "tanh"),
          "silu": activations.silu_forward}[form]
    y, grad = fn(x)
    assert y.shape == grad.shape == x.shape and y.dtype == grad.dtype == dtype
    for i in (0, 1, 2):
        for j in (0, 17_000, 25_000):
            y1, g1 = fn(x[i:i + 1, j:j + 1])
            assert y[i, j] == y1[0, 0] and grad[i, j] == g1[0, 0]
    small_y, small_grad = fn(x[:, :1000])
    np.testing.assert_array_equal(y[:, :1000], small_y)
    np.testing.assert_array_equal(grad[:, :1000], small_grad)
