"""Conv2D: the loop reference, PyTorch, finite differences, both dx methods, purity, layouts, errors."""

import importlib.util
import math
from typing import Any, NamedTuple

import numpy as np
import pytest
import reference
from hypothesis import example, given
from hypothesis import strategies as st

import fnn
from fnn.layers import Conv2D
from fnn.testing import check_vjp

# Skipped before hypothesis runs (pytest.importorskip inside @given skips from inside hypothesis).
requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")

ints = st.integers
DX_METHODS = ["col2img", "flipped"]
KEY = fnn.random.key(0)


class Case(NamedTuple):
    """One drawn convolution: input shape, layer arguments and a seed for the data."""

    shape: tuple[int, int, int, int]
    out_channels: int
    kernel: Any
    stride: Any
    padding: Any
    dilation: Any
    bias: bool
    seed: int

    def layer(self, dx_method: str = "col2img") -> fnn.Layer:
        return Conv2D(self.out_channels, self.kernel, self.stride, self.padding, self.dilation, self.bias,
                      dx_method=dx_method)

    def data(self, dtype: Any = np.float64) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Random ``params``, ``x`` and a cotangent ``dy`` of the output's shape."""
        rng = np.random.default_rng(self.seed)
        c = self.shape[1]
        params = {"w": rng.standard_normal((self.out_channels, c, *reference.pair(self.kernel)))}
        if self.bias:
            params["b"] = rng.standard_normal(self.out_channels)
        x = rng.standard_normal(self.shape)
        dy = rng.standard_normal(self.out_shape())
        return fnn.tree.astype(params, dtype), x.astype(dtype), dy.astype(dtype)

    def pads(self) -> tuple[int, int, int, int]:
        return reference.explicit_padding(self.padding, self.shape[2:], self.kernel, self.stride, self.dilation)

    def out_shape(self) -> tuple[int, int, int, int]:
        (kh, kw), (sh, sw), (dh, dw) = (reference.pair(v) for v in (self.kernel, self.stride, self.dilation))
        t, b, left, r = self.pads()
        return (self.shape[0], self.out_channels,
                reference.output_size(self.shape[2], t, b, kh, sh, dh),
                reference.output_size(self.shape[3], left, r, kw, sw, dw))


def int_or_pair(lo, hi):
    return st.one_of(ints(lo, hi), st.tuples(ints(lo, hi), ints(lo, hi)))


paddings = st.one_of(
    st.sampled_from(["valid", "same", "SAME"]),
    ints(0, 2),
    st.tuples(ints(0, 2), ints(0, 2)),
    st.tuples(st.tuples(ints(0, 2), ints(0, 2)), st.tuples(ints(0, 2), ints(0, 2))),
)


@st.composite
def conv_cases(draw, max_batch=3, max_channels=3, max_kernel=3, max_stride=3, max_dilation=2, min_batch=1,
               padding=paddings, extra=4):
    """A valid convolution: the (dilated) kernel always fits the padded input."""
    kernel = draw(int_or_pair(1, max_kernel))
    stride = draw(int_or_pair(1, max_stride))
    dilation = draw(int_or_pair(1, max_dilation))
    pad = draw(padding)
    (kh, kw), (dh, dw) = reference.pair(kernel), reference.pair(dilation)
    t, b, left, r = (0, 0, 0, 0) if isinstance(pad, str) else reference.explicit_padding(pad)
    h = draw(ints(max(1, dh * (kh - 1) + 1 - t - b), max(1, dh * (kh - 1) + 1 - t - b) + extra))
    w = draw(ints(max(1, dw * (kw - 1) + 1 - left - r), max(1, dw * (kw - 1) + 1 - left - r) + extra))
    shape = (draw(ints(min_batch, max_batch)), draw(ints(1, max_channels)), h, w)
    return Case(shape, draw(ints(1, max_channels)), kernel, stride, pad, dilation, draw(st.booleans()),
                draw(ints(0, 2**16)))


small_cases = conv_cases(max_batch=2, max_channels=2, extra=3)


def run(layer, params, x, dy):
    y, vjp = layer.apply(params, x)
    return (y, *vjp(dy))


# --- forward -------------------------------------------------------------------------------------------


def test_hand_computed():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    params = {"w": np.ones((1, 1, 2, 2)), "b": np.array([0.5])}
    y, _ = Conv2D(1, 2).apply(params, x)
    np.testing.assert_array_equal(y, [[[[8.5, 12.5], [20.5, 24.5]]]])
    for method in DX_METHODS:
        grads, dx = Conv2D(1, 2, dx_method=method).apply(params, x)[1](np.ones((1, 1, 2, 2)))
        np.testing.assert_array_equal(dx, [[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]])
        np.testing.assert_array_equal(grads["w"], [[[[8, 12], [20, 24]]]])
        np.testing.assert_array_equal(grads["b"], [4.0])


@given(conv_cases())
@example(Case((1, 2, 5, 6), 3, (2, 4), 2, "same", (1, 2), True, 0))  # N=1, even kernel, stride 2, dilation
@example(Case((1, 1, 3, 3), 1, 3, 1, "valid", 1, False, 1))  # a single output position
def test_forward_matches_loop_reference(case):
    params, x, _ = case.data()
    y, _ = case.layer().apply(params, x)
    assert y.shape == case.out_shape()
    want = reference.conv2d(x, params["w"], params.get("b"), case.stride, case.pads(), case.dilation)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@given(conv_cases(padding=st.just("same")))
def test_same_padding_gives_ceil_size_with_the_extra_row_at_bottom_right(case):
    """PyTorch/TensorFlow/JAX rule: ceil(H / stride) outputs; total padding split with the odd one after."""
    (sh, sw) = reference.pair(case.stride)
    (kh, kw), (dh, dw) = reference.pair(case.kernel), reference.pair(case.dilation)
    n, _, h, w = case.shape
    params, x, _ = case.data()
    y, _ = case.layer().apply(params, x)
    assert y.shape == (n, case.out_channels, math.ceil(h / sh), math.ceil(w / sw))
    pads = []
    for size, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw)):
        total = max((math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    want = reference.conv2d(x, params["w"], params.get("b"), case.stride, tuple(pads), case.dilation)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_same_padding_puts_the_odd_row_and_column_at_bottom_right():
    # kernel 4, stride 2 on 5 x 5: 3 outputs, total padding 3 = 1 before + 2 after.
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    params = {"w": np.random.default_rng(1).standard_normal((1, 1, 4, 4))}
    y, _ = Conv2D(1, 4, stride=2, padding="same", bias=False).apply(params, x)
    after, _ = Conv2D(1, 4, stride=2, padding=((1, 2), (1, 2)), bias=False).apply(params, x)
    before, _ = Conv2D(1, 4, stride=2, padding=((2, 1), (2, 1)), bias=False).apply(params, x)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(y, after)
    assert not np.allclose(y, before)
    # Even kernel at stride 1: one row of padding, at the bottom.
    y, _ = Conv2D(1, (2, 1), padding="same", bias=False).apply({"w": np.ones((1, 1, 2, 1))}, x)
    np.testing.assert_array_equal(y[0, 0, :4], x[0, 0, :4] + x[0, 0, 1:])
    np.testing.assert_array_equal(y[0, 0, 4], x[0, 0, 4])


@requires_torch
@given(conv_cases(padding=st.one_of(paddings, st.just("same"))), st.booleans())
def test_matches_torch(case, torch_same):
    """Forward and every gradient against torch.nn.functional.conv2d and autograd, in float64."""
    import torch

    tf = torch.nn.functional
    params, x, dy = case.data()
    y, vjp = case.layer().apply(params, x)
    grads, dx = vjp(dy)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(params["w"], requires_grad=True)
    tb = torch.tensor(params["b"], requires_grad=True) if case.bias else None
    stride, dilation = reference.pair(case.stride), reference.pair(case.dilation)
    if isinstance(case.padding, str) and case.padding.lower() == "same" and stride == (1, 1) and torch_same:
        ty = tf.conv2d(tx, tw, tb, stride, "same", dilation)  # torch's own "same" (stride 1 only)
    else:
        t, b, left, r = case.pads()
        ty = tf.conv2d(tf.pad(tx, (left, r, t, b)), tw, tb, stride, 0, dilation)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["w"], tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    if case.bias:
        np.testing.assert_allclose(grads["b"], tb.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_torch_same_with_even_kernel_and_dilation():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 4, 2)), rng.standard_normal(4)
    for dilation in [1, 2, (2, 3)]:
        y, _ = Conv2D(4, (4, 2), padding="same", dilation=dilation).apply({"w": w, "b": b}, x)
        want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), 1, "same",
                                          reference.pair(dilation))
        np.testing.assert_allclose(y, want.numpy(), rtol=1e-10, atol=1e-12)


# --- gradients -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dx_method", DX_METHODS)
@given(case=small_cases)
def test_gradients_match_finite_differences(case, dx_method):
    params, x, _ = case.data()
    check_vjp(case.layer(dx_method), params, x, check_key=fnn.random.key(case.seed))


@given(conv_cases())
def test_dx_methods_agree(case):
    params, x, dy = case.data()
    y1, g1, dx1 = run(case.layer("col2img"), params, x, dy)
    y2, g2, dx2 = run(case.layer("flipped"), params, x, dy)
    np.testing.assert_array_equal(y1, y2)
    assert dx1.shape == dx2.shape == x.shape
    np.testing.assert_allclose(dx1, dx2, rtol=1e-12, atol=1e-12)
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])


# --- purity, memory layout, dtype, empty batch ----------------------------------------------------------


def _read_only(tree):
    tree = fnn.tree.map(np.copy, tree)
    fnn.tree.map(lambda a: a.setflags(write=False), tree)
    return tree


@pytest.mark.parametrize("dx_method", DX_METHODS)
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (1, 1, 0, 1),  # the window view of x is already a column matrix: no copy in img2col
    (3, 2, 1, 1),
    ((2, 3), (1, 2), "same", (2, 1)),
    (2, 1, ((0, 1), (2, 0)), 1),
])
def test_pure(dx_method, kernel, stride, padding, dilation):
    case = Case((2, 3, 6, 7), 4, kernel, stride, padding, dilation, True, 0)
    params, x, dy = _read_only(case.data())
    saved = fnn.tree.map(np.copy, (params, x, dy))
    layer = case.layer(dx_method)
    y, vjp = layer.apply(params, x)
    grads, dx = vjp(dy)
    grads2, dx2 = vjp(dy)
    assert fnn.tree.allclose(saved, (params, x, dy), rtol=0, atol=0)
    np.testing.assert_array_equal(dx, dx2)
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads2[name])
        for other in (x, dy, y, dx, *params.values()):
            assert not np.shares_memory(grads[name], other)
    for out in (y, dx):
        assert not np.shares_memory(out, x)
        assert not np.shares_memory(out, dy)
    assert not np.shares_memory(y, dx)
    y_again, _ = layer.apply(params, x)
    np.testing.assert_array_equal(y, y_again)


def _layouts(a):
    """Views of the same values as ``a`` in other memory layouts: stepped slices, Fortran order, negative strides."""
    big = np.zeros((a.shape[0], a.shape[1], 2 * a.shape[2], 3 * a.shape[3]), a.dtype)
    big[:, :, ::2, ::3] = a
    flipped = np.ascontiguousarray(a[..., ::-1])
    return {"step": big[:, :, ::2, ::3], "fortran": np.asfortranarray(a), "negative": flipped[..., ::-1]}


@pytest.mark.parametrize("layout", ["step", "fortran", "negative"])
@pytest.mark.parametrize("dx_method", DX_METHODS)
@given(case=conv_cases(max_batch=2, extra=3))
def test_any_memory_layout_gives_the_same_results(case, dx_method, layout):
    params, x, dy = case.data()
    want = run(case.layer(dx_method), params, x, dy)
    x2, dy2 = _layouts(x)[layout], _layouts(dy)[layout]
    params2 = {**params, "w": _layouts(params["w"])[layout]}
    if case.bias:
        params2["b"] = np.repeat(params["b"], 2)[::2]  # a stepped 1-D view
    got = run(case.layer(dx_method), params2, x2, dy2)
    for a, b in zip(fnn.tree.leaves(got), fnn.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dx_method", DX_METHODS)
def test_negative_stride_input_is_the_flipped_image(dx_method):
    """Convolving x[..., ::-1] equals convolving x with the flipped kernel, flipped back (stride 1, symmetric pad)."""
    case = Case((2, 2, 5, 6), 3, (3, 2), 1, (1, 1), 1, True, 5)
    params, x, dy = case.data()
    layer = case.layer(dx_method)
    y, vjp = layer.apply(params, x[..., ::-1])
    grads, dx = vjp(dy)
    flipped_w = {**params, "w": np.ascontiguousarray(params["w"][..., ::-1])}
    y_ref, vjp_ref = layer.apply(flipped_w, x)
    grads_ref, dx_ref = vjp_ref(np.ascontiguousarray(dy[..., ::-1]))
    np.testing.assert_allclose(y, y_ref[..., ::-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref[..., ::-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["w"], grads_ref["w"][..., ::-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["b"], grads_ref["b"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dx_method", DX_METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, dx_method):
    layer = Conv2D(3, 3, stride=2, padding="same", dx_method=dx_method)
    params = layer.init(KEY, (2, 7, 6), dtype)
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 6)).astype(dtype)
    y, vjp = layer.apply(params, x)
    assert y.dtype == dtype
    grads, dx = vjp(np.ones(y.shape, dtype))
    assert dx.dtype == dtype
    assert {name: g.dtype for name, g in grads.items()} == {"w": dtype, "b": dtype}
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(TypeError, match="dy has dtype .* but the output y has dtype"):
        vjp(np.ones(y.shape, other))  # nothing is cast silently
    if dtype == np.float32:
        y64, _ = layer.apply(fnn.tree.astype(params, np.float64), x.astype(np.float64))
        np.testing.assert_allclose(y, y64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dx_method", DX_METHODS)
@pytest.mark.parametrize("padding", [0, "same", ((1, 0), (0, 2))])
def test_empty_batch(dx_method, padding):
    layer = Conv2D(4, (3, 2), stride=(2, 1), padding=padding, dx_method=dx_method)
    params = layer.init(KEY, (3, 6, 5), np.float64)
    params["b"] = np.ones(4)
    x = np.zeros((0, 3, 6, 5))
    y, vjp = layer.apply(params, x)
    _, _, oh, ow = reference.conv2d(np.zeros((1, 3, 6, 5)), params["w"], None, (2, 1),
                                    reference.explicit_padding(padding, (6, 5), (3, 2), (2, 1))).shape
    assert y.shape == (0, 4, oh, ow)
    grads, dx = vjp(np.zeros(y.shape))
    assert dx.shape == x.shape
    np.testing.assert_array_equal(grads["w"], np.zeros((4, 3, 3, 2)))
    np.testing.assert_array_equal(grads["b"], np.zeros(4))


def test_init_shapes_and_bias_false():
    params = Conv2D(5, (3, 2), bias=False).init(KEY, (3, 8, 8))
    assert set(params) == {"w"} and params["w"].shape == (5, 3, 3, 2) and params["w"].dtype == np.float32
    params = Conv2D(5, 3).init(KEY, (2, 8, 8), np.float64)
    assert params["w"].shape == (5, 2, 3, 3) and params["b"].shape == (5,) and params["w"].dtype == np.float64
    assert np.abs(params["w"]).max() <= 1 / math.sqrt(2 * 9)


# --- errors ----------------------------------------------------------------------------------------------


def test_kernel_larger_than_the_padded_input():
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2D(2, 5).init(KEY, (1, 4, 4))
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2D(2, 3, dilation=2).init(KEY, (1, 4, 8))
    Conv2D(2, 5, padding=1).init(KEY, (1, 3, 3))  # fits once padded
    params = Conv2D(2, 3).init(KEY, (1, 8, 8))
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2D(2, 3).apply(params, np.zeros((1, 1, 2, 8), np.float32))


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_size": 0}, "kernel_size must be >= 1"),
    ({"kernel_size": (3, -1)}, "kernel_size must be >= 1"),
    ({"stride": 0}, "stride must be >= 1"),
    ({"stride": (1, -2)}, "stride must be >= 1"),
    ({"dilation": 0}, "dilation must be >= 1"),
    ({"padding": -1}, "padding must be >= 0"),
    ({"padding": (0, -1)}, "padding must be >= 0"),
    ({"padding": ((0, 1), (-1, 0))}, "padding must be >= 0"),
    ({"padding": "full"}, "padding must be"),
    ({"dx_method": "fft"}, "dx_method must be one of"),
    ({"out_channels": 0}, r"^Conv2D\(0, 3\): out_channels must be >= 1, got 0$"),
    ({"out_channels": np.int64(-2)}, r"^Conv2D\(np.int64\(-2\), 3\): out_channels must be >= 1, got -2$"),
])
def test_bad_constructor_arguments_raise_value_error(kwargs, match):
    args = {"out_channels": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        Conv2D(**args)


@pytest.mark.parametrize("kwargs", [{"kernel_size": 2.5}, {"stride": (1, 2, 3)}, {"padding": 1.0},
                                    {"dilation": True}])
def test_non_int_arguments_raise_type_error(kwargs):
    with pytest.raises(TypeError, match="must be an int or a pair of ints"):
        Conv2D(**{"out_channels": 2, "kernel_size": 3, **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    ({"out_channels": True}, r"^Conv2D\(True, 3\): out_channels must be an int, got bool True$"),
    ({"out_channels": np.True_}, "out_channels must be an int, got bool"),
    ({"kernel_size": True}, r"^Conv2D\(2, True\): kernel_size must be an int or a pair of ints, got True$"),
    ({"stride": (1, False)}, "stride must be an int or a pair of ints"),
    ({"padding": True}, "padding must be an int or a pair of ints"),
    ({"bias": 1}, r"^Conv2D\(2, 3, bias=1\): bias must be True or False, got int 1$"),
])
def test_bool_for_an_int_and_int_for_a_bool_raise_type_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        Conv2D(**{"out_channels": 2, "kernel_size": 3, **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    ({"out_channels": "2"}, r"^Conv2D\('2', 3\): out_channels must be an int, got str '2'$"),
    ({"kernel_size": "3"}, r"^Conv2D\(2, '3'\): kernel_size must be an int or a pair of ints, got '3'$"),
    ({"stride": "1"}, "stride must be an int or a pair of ints, got '1'"),
    ({"dilation": ("1", 1)}, "dilation must be an int or a pair of ints"),
    ({"bias": "False"}, "bias must be True or False, got str 'False'"),
    ({"dx_method": None}, r"dx_method must be one of \['col2img', 'flipped'\], got NoneType None"),
])
def test_strings_and_other_objects_raise_type_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        Conv2D(**{"out_channels": 2, "kernel_size": 3, **kwargs})


def test_numpy_scalar_arguments_are_accepted():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    plain = Conv2D(4, (3, 2), stride=2, padding=((1, 0), (1, 1)), dilation=(1, 2), bias=True)
    numpy = Conv2D(np.int64(4), (np.int32(3), np.uint8(2)), stride=np.int16(2),
                   padding=((np.int64(1), 0), (np.int8(1), np.int64(1))), dilation=(np.int64(1), 2), bias=np.True_)
    params = plain.init(KEY, (3, 7, 6), np.float64)
    assert numpy.init(KEY, (3, 7, 6), np.float64)["w"].tobytes() == params["w"].tobytes()
    (y, vjp), (y2, vjp2) = plain.apply(params, x), numpy.apply(params, x)
    np.testing.assert_array_equal(y2, y)
    dy = np.ones(y.shape)
    for a, b in zip(fnn.tree.leaves(vjp(dy)), fnn.tree.leaves(vjp2(dy))):
        np.testing.assert_array_equal(a, b)
    assert numpy.kind.startswith("Conv2D(4, ")
    assert Conv2D(2, 3, bias=np.False_).init(KEY, (1, 4, 4)).keys() == {"w"}


def test_bad_inputs():
    layer = Conv2D(4, 3)
    params = layer.init(KEY, (2, 6, 6))
    with pytest.raises(ValueError, match=r"init shape must be \(C, H, W\)"):
        layer.init(KEY, (6, 6))
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\), got shape \(2, 6, 6\)"):
        layer.apply(params, np.zeros((2, 6, 6), np.float32))
    with pytest.raises(ValueError, match="input has 3 channels but params expect 2"):
        layer.apply(params, np.zeros((1, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        layer.apply(params, np.zeros((1, 1, 2, 6, 6), np.float32))
    for dtype in (np.int64, np.float16, bool):
        with pytest.raises(TypeError, match=f"dtype {np.dtype(dtype)}"):
            layer.apply(params, np.zeros((1, 2, 6, 6), dtype))
    with pytest.raises(TypeError, match="params\\['w'\\] has dtype float32 but x has dtype float64"):
        layer.apply(params, np.zeros((1, 2, 6, 6)))
    with pytest.raises(ValueError, match="params has keys"):
        layer.apply({"w": params["w"]}, np.zeros((1, 2, 6, 6), np.float32))
    y, vjp = layer.apply(params, np.zeros((1, 2, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"dy has shape \(1, 4, 4, 3\) but the output y has shape \(1, 4, 4, 4\)"):
        vjp(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(TypeError, match="dy has dtype int64"):
        vjp(np.zeros(y.shape, np.int64))


@pytest.mark.parametrize("dx_method", DX_METHODS)
def test_need_dx_false_gives_the_same_dparams_and_no_dx(dx_method):
    case = Case((2, 3, 6, 7), 4, (3, 2), 2, "same", 1, True, 0)
    params, x, dy = case.data()
    _, vjp = case.layer(dx_method).apply(params, x)
    grads, _ = vjp(dy)
    grads_only, none = vjp(dy, need_dx=False)
    assert none is None
    for name in grads:
        np.testing.assert_array_equal(grads_only[name], grads[name])


@pytest.mark.parametrize("padding, stride", [(2, 1), (0, 2), ("same", 1)])
def test_recompute_gives_the_same_gradients_and_keeps_the_input_not_the_columns(padding, stride):
    from fnn.inspection import closure_arrays

    x = np.random.default_rng(0).standard_normal((8, 3, 12, 12)).astype(np.float32)
    results = {}
    for recompute in (False, True):
        layer = Conv2D(4, 5, stride=stride, padding=padding, recompute=recompute)
        params = layer.init(KEY, (3, 12, 12))
        y, vjp = layer.apply(params, x)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        kept = sum(a.nbytes for a in closure_arrays(vjp).values() if a is not params["w"])
        results[recompute] = (y, vjp(dy), vjp(dy, need_dx=False)[0], kept)
    (y0, (g0, dx0), h0, kept0), (y1, (g1, dx1), h1, kept1) = results[False], results[True]
    assert y0.tobytes() == y1.tobytes() and dx0.tobytes() == dx1.tobytes()
    assert all(g0[k].tobytes() == g1[k].tobytes() == h1[k].tobytes() == h0[k].tobytes() for k in g0)
    n, _, oh, ow = y0.shape
    assert kept1 == x.nbytes and kept0 == 3 * 25 * oh * ow * n * 4  # the input, not the (C * 25, OH * OW * N) columns



# --- bands of columns: memory ------------------------------------------------------------------------------


def _layer(case, dx_method="col2img", recompute=False):
    return Conv2D(case.out_channels, case.kernel, case.stride, case.padding, case.dilation, case.bias,
                  dx_method=dx_method, recompute=recompute)


@given(conv_cases(max_batch=2, extra=4))
def test_one_row_bands_give_the_results_of_one_band(case):
    """Large inputs split the column matrices into bands of output rows (here every band is one row):
    the same results as one band, bitwise the same with and without recompute and in inference."""
    from fnn.layers import conv as conv_module

    params, x, dy = case.data()
    for dx_method in DX_METHODS:
        whole = run(_layer(case, dx_method), params, x, dy)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(conv_module, "_BAND_MIN", 0)
            mp.setattr(conv_module, "_BAND_MAX", 1)
            banded, again = (run(_layer(case, dx_method, recompute), params, x, dy) for recompute in (False, True))
            inferred, _ = _layer(case, dx_method).apply(params, x, need_vjp=False)
        assert inferred.tobytes() == banded[0].tobytes()
        for a, b, c in zip(fnn.tree.leaves(banded), fnn.tree.leaves(again), fnn.tree.leaves(whole)):
            assert a.tobytes() == b.tobytes()
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def _traced(fn):
    """``fn()`` and the peak of the bytes it allocated beyond what was live before it (tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_no_column_matrix_but_the_kept_one_is_ever_whole():
    """Regression: the vjp built the whole ``w.T @ dy`` columns for dx, and recompute and inference
    built the whole column matrix they do not keep. Now they exist one band at a time."""
    x = np.random.default_rng(0).standard_normal((64, 4, 16, 16)).astype(np.float32)
    whole = 4 * 9 * 16 * 16 * 64 * 4  # (C * kh * kw, OH * OW * N) float32: 2.25 MiB
    padded = 4 * 18 * 18 * 64 * 4  # x or dx, padded and batch-last
    for recompute in (False, True):
        layer = Conv2D(8, 3, padding=1, recompute=recompute)
        params = layer.init(KEY, (4, 16, 16))
        (y, vjp), peak = _traced(lambda: layer.apply(params, x))  # noqa: B023
        assert peak - y.nbytes - (0 if recompute else whole) < padded + whole / 3
        dy = np.ones_like(y)  # batch-last, as y (and a cotangent through ReLU or a pool): no copy
        _, peak = _traced(lambda: vjp(dy))  # noqa: B023
        assert peak < 2 * padded + whole / 2  # dx and, with recompute, x padded; one band of scratch
    (y, _), peak = _traced(lambda: Conv2D(8, 3, padding=1).apply(params, x, need_vjp=False))
    assert peak - y.nbytes < padded + whole / 3
