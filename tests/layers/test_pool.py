"""MaxPool2D, AvgPool2D, GlobalAvgPool2D: the loop reference, PyTorch, finite differences, ties, NaN,
purity, memory layouts, dtypes, empty batches and errors."""

import importlib.util
from typing import Any, NamedTuple

import numpy as np
import pytest
import reference
from hypothesis import example, given
from hypothesis import strategies as st

import fnn
from fnn.layers import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from fnn.testing import check_vjp

# Skipped before hypothesis runs (pytest.importorskip inside @given skips from inside hypothesis).
requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")

ints = st.integers
KEY = fnn.random.key(0)


class Case(NamedTuple):
    """One drawn pooling: input shape, layer arguments and a seed for the data."""

    shape: tuple[int, int, int, int]
    kernel: Any
    stride: Any
    padding: Any
    seed: int

    def pads(self) -> tuple[int, int, int, int]:
        return reference.explicit_padding(self.padding)

    def x(self, dtype: Any = np.float64, distinct: bool = False) -> np.ndarray:
        """Random input; with ``distinct``, all values differ by at least 0.1 (no ties, no kinks)."""
        rng = np.random.default_rng(self.seed)
        if distinct:
            size = int(np.prod(self.shape))
            return ((rng.permutation(size) - size / 2) * 0.1).reshape(self.shape).astype(dtype)
        return rng.standard_normal(self.shape).astype(dtype)


def int_or_pair(lo, hi):
    return st.one_of(ints(lo, hi), st.tuples(ints(lo, hi), ints(lo, hi)))


@st.composite
def pool_cases(draw, max_batch=3, max_channels=3, max_kernel=4, extra=4, symmetric=False, min_batch=1):
    """A valid pooling: padding at most half the kernel on each side, kernel fits the padded input."""
    kernel = draw(int_or_pair(1, max_kernel))
    kh, kw = reference.pair(kernel)
    stride = draw(st.one_of(st.none(), int_or_pair(1, 3)))
    t, left = draw(ints(0, kh // 2)), draw(ints(0, kw // 2))
    b, r = (t, left) if symmetric else (draw(ints(0, kh // 2)), draw(ints(0, kw // 2)))
    forms = [(t, left)] + ([t] if t == left else []) + (["valid"] if t == left == 0 else [])
    if not symmetric:
        forms.append(((t, b), (left, r)))
    padding = draw(st.sampled_from(forms))
    t, b, left, r = reference.explicit_padding(padding)
    h = draw(ints(max(1, kh - t - b), max(1, kh - t - b) + extra))
    w = draw(ints(max(1, kw - left - r), max(1, kw - left - r) + extra))
    shape = (draw(ints(min_batch, max_batch)), draw(ints(1, max_channels)), h, w)
    return Case(shape, kernel, stride, padding, draw(ints(0, 2**16)))


def max_layer(case):
    return MaxPool2D(case.kernel, case.stride, case.padding)


def avg_layer(case, count_include_pad=True):
    return AvgPool2D(case.kernel, case.stride, case.padding, count_include_pad)


def run(layer, x, dy):
    y, vjp = layer.apply({}, x)
    grads, dx = vjp(dy)
    assert grads == {}
    return y, dx


# --- forward: hand cases, the loop reference, PyTorch ------------------------------------------------------


def test_hand_computed():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y, vjp = MaxPool2D(2).apply({}, x)
    np.testing.assert_array_equal(y, [[[[5, 7], [13, 15]]]])
    _, dx = vjp(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0, 0], [0, 1, 0, 2], [0, 0, 0, 0], [0, 3, 0, 4]])
    y, vjp = AvgPool2D(2).apply({}, x)
    np.testing.assert_array_equal(y, [[[[2.5, 4.5], [10.5, 12.5]]]])
    np.testing.assert_array_equal(vjp(np.ones((1, 1, 2, 2)))[1], np.full((1, 1, 4, 4), 0.25))
    # Padding 1 around a 3 x 3 kernel: a corner window holds 4 real pixels out of 9.
    ones = np.ones((1, 1, 3, 3))
    np.testing.assert_allclose(AvgPool2D(3, 1, 1).apply({}, ones)[0][0, 0, 0, 0], 4 / 9)
    np.testing.assert_array_equal(AvgPool2D(3, 1, 1, count_include_pad=False).apply({}, ones)[0], np.ones((1, 1, 3, 3)))
    y, vjp = GlobalAvgPool2D().apply({}, x)
    np.testing.assert_array_equal(y, [[7.5]])
    np.testing.assert_array_equal(vjp(np.array([[16.0]]))[1], np.ones((1, 1, 4, 4)))


@given(pool_cases())
@example(Case((1, 2, 5, 4), (3, 2), (2, 1), ((1, 0), (0, 1)), 0))  # N=1, asymmetric padding
def test_max_pool_matches_loop_reference(case):
    x = case.x() - 3.0  # mostly negative, so -inf padding (not zero padding) matters
    y, _ = max_layer(case).apply({}, x)
    np.testing.assert_array_equal(y, reference.max_pool2d(x, case.kernel, case.stride, case.padding))


@pytest.mark.parametrize("count_include_pad", [True, False])
@given(case=pool_cases())
def test_avg_pool_matches_loop_reference(case, count_include_pad):
    x = case.x()
    y, _ = avg_layer(case, count_include_pad).apply({}, x)
    want = reference.avg_pool2d(x, case.kernel, case.stride, case.padding, count_include_pad)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@given(pool_cases(max_kernel=1, extra=6))
def test_global_avg_pool_matches_loop_reference(case):
    x = case.x()
    y, _ = GlobalAvgPool2D().apply({}, x)
    np.testing.assert_allclose(y, reference.global_avg_pool2d(x), rtol=1e-12, atol=1e-12)


@requires_torch
@given(pool_cases(symmetric=True), st.sampled_from(["max", "avg", "avg_exclude"]))
def test_matches_torch(case, kind):
    """Forward and dx against torch.nn.functional.max_pool2d / avg_pool2d and autograd, in float64."""
    import torch

    tf = torch.nn.functional
    x = case.x(distinct=True)
    layer = {"max": max_layer(case), "avg": avg_layer(case), "avg_exclude": avg_layer(case, False)}[kind]
    y, vjp = layer.apply({}, x)
    dy = np.random.default_rng(case.seed + 1).standard_normal(y.shape)
    _, dx = vjp(dy)
    tx = torch.tensor(x, requires_grad=True)
    t, _, left, _ = case.pads()
    stride = case.kernel if case.stride is None else case.stride
    if kind == "max":
        ty = tf.max_pool2d(tx, case.kernel, stride, (t, left))
    else:
        ty = tf.avg_pool2d(tx, case.kernel, stride, (t, left), count_include_pad=kind == "avg")
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_global_avg_pool_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 6))
    np.testing.assert_allclose(GlobalAvgPool2D().apply({}, x)[0],
                               torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), 1).numpy()[..., 0, 0],
                               rtol=1e-12, atol=1e-12)


# --- gradients ------------------------------------------------------------------------------------------


@given(pool_cases(max_batch=2, max_channels=2, extra=3))
def test_max_pool_gradient_matches_finite_differences(case):
    check_vjp(max_layer(case), {}, case.x(distinct=True), check_key=fnn.random.key(case.seed))


@pytest.mark.parametrize("count_include_pad", [True, False])
@given(case=pool_cases(max_batch=2, max_channels=2, extra=3))
def test_avg_pool_gradient_matches_finite_differences(case, count_include_pad):
    check_vjp(avg_layer(case, count_include_pad), {}, case.x(), check_key=fnn.random.key(case.seed))


@given(pool_cases(max_batch=2, max_kernel=1, extra=4))
def test_global_avg_pool_gradient_matches_finite_differences(case):
    check_vjp(GlobalAvgPool2D(), {}, case.x(), check_key=fnn.random.key(case.seed))


# --- MaxPool2D ties and NaN -------------------------------------------------------------------------------


def test_max_pool_tie_sends_the_gradient_to_the_first_maximum_in_row_major_order():
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    _, dx = run(MaxPool2D(2), x, np.array([[[[5.0]]]]))
    np.testing.assert_array_equal(dx[0, 0], [[0, 5], [0, 0]])
    x = np.array([[[[0.0, 7.0], [7.0, 7.0]]]])
    _, dx = run(MaxPool2D(2), x, np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(dx[0, 0], [[0, 1], [0, 0]])
    # A constant 3 x 3 window: the top-left offset wins.
    _, dx = run(MaxPool2D(3), np.full((1, 2, 3, 3), 4.0), np.ones((1, 2, 1, 1)))
    np.testing.assert_array_equal(dx, np.eye(1, 9).reshape(1, 1, 3, 3).repeat(2, axis=1))
    # Overlapping windows (stride 1) over a constant row: each window picks its own first element.
    y, dx = run(MaxPool2D((1, 2), 1), np.full((1, 1, 1, 4), 2.0), np.array([[[[1.0, 10.0, 100.0]]]]))
    np.testing.assert_array_equal(y, np.full((1, 1, 1, 3), 2.0))
    np.testing.assert_array_equal(dx[0, 0, 0], [1, 10, 100, 0])


def test_max_pool_tie_rule_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).integers(0, 3, (2, 3, 7, 7)).astype(np.float64)  # many ties
    dy = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    _, dx = run(MaxPool2D(3, 2, 1), x, dy)
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 3, 2, 1).backward(torch.tensor(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-14, atol=1e-15)  # summation order may differ


def test_max_pool_nan_propagates():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan  # last window position, after smaller values
    x[0, 0, 0, 2] = np.nan  # first window position, before larger values
    y, vjp = MaxPool2D(2).apply({}, x)
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 0, 1])
    np.testing.assert_array_equal(y[0, 0, 1], [13, 15])
    _, dx = vjp(np.ones((1, 1, 2, 2)))
    want = np.zeros((4, 4))
    want[1, 1] = want[0, 2] = want[3, 1] = want[3, 3] = 1  # NaN windows route to their NaN (as PyTorch)
    np.testing.assert_array_equal(dx[0, 0], want)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference.max_pool2d(x, 2)))
    # Overlapping windows and padding: every window that holds the NaN gives NaN, no other does.
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    x[0, 0, 2, 3] = np.nan
    y, _ = MaxPool2D(3, 1, 1).apply({}, x)
    np.testing.assert_array_equal(np.isnan(y[0, 0]), np.isnan(reference.max_pool2d(x, 3, 1, 1)[0, 0]))
    assert np.isnan(y).sum() == 9


@pytest.mark.parametrize("shape", [(3, 2, 6, 8), (2, 3, 7, 5)])
def test_max_pool_2x2_tournament_matches_the_loop_reference_with_ties(shape):
    """The 2 x 2 fast path: ties everywhere (three values), odd sizes (a row and a column left
    over), batch-last memory as a Conv2D gives; gradients to the first maximum, as the reference."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, shape).astype(np.float64).transpose(1, 2, 3, 0).copy().transpose(3, 0, 1, 2)
    dy = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2))
    y, dx = run(MaxPool2D(2), x, dy)
    np.testing.assert_array_equal(y, reference.max_pool2d(x, 2))
    want = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*dy.shape):
        window = x[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
        r, q = divmod(int(np.argmax(window)), 2)  # np.argmax: the first maximum in row-major order
        want[n, c, 2 * i + r, 2 * j + q] = dy[n, c, i, j]
    np.testing.assert_array_equal(dx, want)


def test_max_pool_stride_beyond_the_kernel_leaves_zeros_between_windows():
    """Regression: non-overlapping windows that do not tile the input must not leave dx unwritten."""
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    _, dx = run(MaxPool2D(1, stride=2), x, np.ones((2, 1, 2, 2)))
    want = np.zeros((4, 4))
    want[::2, ::2] = 1
    np.testing.assert_array_equal(dx, np.broadcast_to(want, x.shape))


@pytest.mark.parametrize("kernel", [16, 17, (1, 300)])
def test_max_pool_large_kernels_route_to_the_arg_max(kernel):
    """256 window offsets still fit the uint8 arg-max index; more switch to int32."""
    kh, kw = reference.pair(kernel)
    x = np.random.default_rng(0).permutation(2 * kh * kw).reshape(1, 2, kh, kw).astype(np.float64)
    y, vjp = MaxPool2D(kernel).apply({}, x)
    np.testing.assert_array_equal(y[:, :, 0, 0], x.max(axis=(2, 3)))
    _, dx = vjp(np.ones(y.shape))
    np.testing.assert_array_equal(dx, (x == x.max(axis=(2, 3), keepdims=True)).astype(np.float64))


# --- purity, memory layout, dtype, empty batch -------------------------------------------------------------

LAYERS = {
    "max": lambda: MaxPool2D(3, 2, 1),
    "max_asymmetric": lambda: MaxPool2D((2, 3), (1, 2), ((1, 0), (0, 1))),
    "max_no_pad": lambda: MaxPool2D(2),
    "avg": lambda: AvgPool2D(3, 2, 1),
    "avg_exclude_pad": lambda: AvgPool2D((3, 2), 1, ((1, 1), (0, 1)), count_include_pad=False),
    "avg_no_pad": lambda: AvgPool2D(2, 1),
    "global_avg": GlobalAvgPool2D,
}


def _out(layer, x):
    return layer.apply({}, x)[0]


@pytest.mark.parametrize("name", LAYERS)
def test_pure(name):
    layer = LAYERS[name]()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 7))
    y = _out(layer, x)
    dy = rng.standard_normal(y.shape)
    saved = (x.copy(), dy.copy())
    x.setflags(write=False)
    dy.setflags(write=False)
    params = {}
    y, vjp = layer.apply(params, x)
    grads, dx = vjp(dy)
    grads2, dx2 = vjp(dy)
    assert params == {} and grads == grads2 == {}
    np.testing.assert_array_equal(x, saved[0])
    np.testing.assert_array_equal(dy, saved[1])
    np.testing.assert_array_equal(dx, dx2)
    for out in (y, dx):
        assert not np.shares_memory(out, x)
        assert not np.shares_memory(out, dy)
    assert not np.shares_memory(y, dx)
    np.testing.assert_array_equal(_out(layer, x), y)


def _layouts(a):
    """Views of the same values as ``a`` in other memory layouts: stepped slices, Fortran order, negative strides."""
    big = np.zeros((a.shape[0], a.shape[1], 2 * a.shape[2], 3 * a.shape[3]), a.dtype)
    big[:, :, ::2, ::3] = a
    flipped = np.ascontiguousarray(a[..., ::-1])
    return {"step": big[:, :, ::2, ::3], "fortran": np.asfortranarray(a), "negative": flipped[..., ::-1]}


@pytest.mark.parametrize("layout", ["step", "fortran", "negative"])
@pytest.mark.parametrize("name", LAYERS)
def test_any_memory_layout_gives_the_same_results(name, layout):
    layer = LAYERS[name]()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 7))
    y, dx = run(layer, x, dy := rng.standard_normal(_out(layer, x).shape))
    x2 = _layouts(x)[layout]
    dy2 = _layouts(dy)[layout] if dy.ndim == 4 else {"step": np.repeat(dy, 2, 1)[:, ::2],
                                                     "fortran": np.asfortranarray(dy),
                                                     "negative": np.ascontiguousarray(dy[:, ::-1])[:, ::-1]}[layout]
    assert not x2.flags.c_contiguous
    y2, dx2 = run(layer, x2, dy2)
    np.testing.assert_allclose(y2, y, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(dx2, dx, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", ["max", "avg", "avg_exclude_pad"])
def test_negative_stride_input_is_the_flipped_image(name):
    """Pooling x[..., ::-1] is pooling x flipped back, when the windows tile W symmetrically."""
    layer = {"max": MaxPool2D((2, 3), 2, 1), "avg": AvgPool2D((2, 3), 2, 1),
             "avg_exclude_pad": AvgPool2D((2, 3), 2, 1, count_include_pad=False)}[name]
    rng = np.random.default_rng(2)
    x = rng.permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7).astype(np.float64)  # W=7, pad 1, k 3, s 2: symmetric
    y, vjp = layer.apply({}, x[..., ::-1])
    dy = rng.standard_normal(y.shape)
    _, dx = vjp(dy)
    y_ref, vjp_ref = layer.apply({}, x)
    _, dx_ref = vjp_ref(np.ascontiguousarray(dy[..., ::-1]))
    np.testing.assert_allclose(y, y_ref[..., ::-1], rtol=1e-14)
    np.testing.assert_allclose(dx, dx_ref[..., ::-1], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", LAYERS)
def test_dtype_is_kept(name, dtype):
    layer = LAYERS[name]()
    assert layer.init(KEY, (3, 6, 7), dtype) == {}
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7)).astype(dtype)
    y, vjp = layer.apply({}, x)
    assert y.dtype == dtype
    grads, dx = vjp(np.ones(y.shape, dtype))
    assert grads == {} and dx.dtype == dtype
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(TypeError, match="dy has dtype .* but the output y has dtype"):
        vjp(np.ones(y.shape, other))  # nothing is cast silently


@pytest.mark.parametrize("name", LAYERS)
def test_empty_batch(name):
    layer = LAYERS[name]()
    one = _out(layer, np.zeros((1, 3, 6, 7)))
    y, vjp = layer.apply({}, np.zeros((0, 3, 6, 7)))
    assert y.shape == (0, *one.shape[1:])
    grads, dx = vjp(np.zeros(y.shape))
    assert grads == {} and dx.shape == (0, 3, 6, 7)


# --- errors ------------------------------------------------------------------------------------------------

POOLS = {"MaxPool2D": MaxPool2D, "AvgPool2D": AvgPool2D}


@pytest.mark.parametrize("pool", POOLS)
def test_kernel_larger_than_the_padded_input(pool):
    make = POOLS[pool]
    with pytest.raises(ValueError, match=f"{pool}.*larger than the padded input"):
        make(5).init(KEY, (1, 4, 4))
    with pytest.raises(ValueError, match="larger than the padded input"):
        make((2, 4), padding=(0, 1)).init(KEY, (2, 3, 1))
    make(5, padding=1).init(KEY, (1, 3, 3))  # fits once padded
    layer = make(3)
    assert layer.init(KEY, (2, 8, 8)) == {}
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer.apply({}, np.zeros((1, 2, 8, 2)))


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_size": 0}, "kernel_size must be >= 1"),
    ({"kernel_size": (2, -1)}, "kernel_size must be >= 1"),
    ({"stride": 0}, "stride must be >= 1"),
    ({"stride": (1, -1)}, "stride must be >= 1"),
    ({"padding": -1}, "padding must be >= 0"),
    ({"padding": ((0, 0), (0, -1))}, "padding must be >= 0"),
    ({"padding": 2}, r"padding must be at most half the kernel \(1, 1\), got 2"),
    ({"padding": (1, 2)}, "padding must be at most half the kernel"),
    ({"padding": ((0, 2), (0, 0))}, "padding must be at most half the kernel"),
    ({"kernel_size": (2, 3), "padding": (0, 2)}, r"at most half the kernel \(1, 1\)"),
    ({"padding": "same"}, 'padding must be "valid", an int or a pair'),
    ({"padding": "full"}, "padding must be"),
])
def test_bad_constructor_arguments_raise_value_error(pool, kwargs, match):
    with pytest.raises(ValueError, match=match):
        POOLS[pool](**{"kernel_size": 3, **kwargs})


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("kwargs", [{"kernel_size": 2.0}, {"stride": "2"}, {"padding": (1, 1, 1)},
                                    {"kernel_size": "3"}, {"kernel_size": None}, {"stride": (2, "2")}])
def test_non_int_arguments_raise_type_error(pool, kwargs):
    with pytest.raises(TypeError, match="must be an int or a pair of ints"):
        POOLS[pool](**{"kernel_size": 3, **kwargs})


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_size": True}, r"^{pool}\(True\): kernel_size must be an int or a pair of ints, got True$"),
    ({"kernel_size": (2, np.False_)}, "kernel_size must be an int or a pair of ints"),
    ({"stride": True}, r"^{pool}\(3, stride=True\): stride must be an int or a pair of ints, got True$"),
    ({"padding": False}, "padding must be an int or a pair of ints, got False"),
])
def test_bool_for_an_int_raises_type_error(pool, kwargs, match):
    with pytest.raises(TypeError, match=match.replace("{pool}", pool)):
        POOLS[pool](**{"kernel_size": 3, **kwargs})


@pytest.mark.parametrize("value, match", [
    (1, r"^AvgPool2D\(3, count_include_pad=1\): count_include_pad must be True or False, got int 1$"),
    ("False", "count_include_pad must be True or False, got str 'False'"),
    (None, "count_include_pad must be True or False, got NoneType None"),
])
def test_count_include_pad_must_be_a_bool(value, match):
    with pytest.raises(TypeError, match=match):
        AvgPool2D(3, count_include_pad=value)


@pytest.mark.parametrize("make", [
    lambda k, s, p: MaxPool2D(k, s, p),
    lambda k, s, p: AvgPool2D(k, s, p),
    lambda k, s, p: AvgPool2D(k, s, p, count_include_pad=np.False_),
])
def test_numpy_scalar_arguments_are_accepted(make):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    plain = make((3, 2), (2, 1), ((1, 0), (1, 1)))
    numpy = make((np.int64(3), np.uint8(2)), (np.int32(2), 1), ((np.int64(1), 0), (np.int8(1), np.int16(1))))
    assert numpy.init(KEY, (3, 7, 6)) == {}
    (y, vjp), (y2, vjp2) = plain.apply({}, x), numpy.apply({}, x)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(vjp2(np.ones(y.shape))[1], vjp(np.ones(y.shape))[1])


@pytest.mark.parametrize("name", ["max", "avg", "global_avg"])
def test_bad_inputs(name):
    layer = LAYERS[name]()
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\), got shape \(3, 6, 7\)"):
        layer.apply({}, np.zeros((3, 6, 7)))
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        layer.apply({}, np.zeros((1, 1, 3, 6, 7)))
    for dtype in (np.int64, np.float16, bool):
        with pytest.raises(TypeError, match=f"dtype {np.dtype(dtype)}"):
            layer.apply({}, np.zeros((1, 3, 6, 7), dtype))
    with pytest.raises(ValueError, match="has no parameters and expects params {}"):
        layer.apply({"w": np.zeros(1)}, np.zeros((1, 3, 6, 7)))
    y, vjp = layer.apply({}, np.zeros((1, 3, 6, 7)))
    bad = (*y.shape[:-1], y.shape[-1] + 1)
    with pytest.raises(ValueError, match=r"dy has shape .* but the output y has shape"):
        vjp(np.zeros(bad))
    with pytest.raises(TypeError, match="dy has dtype int64"):
        vjp(np.zeros(y.shape, np.int64))
    if name != "global_avg":
        with pytest.raises(ValueError, match=r"init shape must be \(C, H, W\)"):
            layer.init(KEY, (6, 7))


def test_global_avg_pool_rejects_an_empty_spatial_extent():
    with pytest.raises(ValueError, match="empty spatial extent"):
        GlobalAvgPool2D().apply({}, np.zeros((1, 2, 0, 3)))


@pytest.mark.parametrize("name", LAYERS)
def test_need_dx_false_gives_no_dx(name):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7))
    y, vjp = LAYERS[name]().apply({}, x)
    assert vjp(np.ones(y.shape), need_dx=False) == ({}, None)
