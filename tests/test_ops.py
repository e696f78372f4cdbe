"""fnn.ops: img2col against the loop reference, col2img as its adjoint, windows as a view, pad2d, and the
products matmul_last, matmul_wide and matmul_nt."""

import numpy as np
import pytest
import reference
from hypothesis import given
from hypothesis import strategies as st

from fnn.ops import (
    batch_last_padded,
    col2img,
    column_view,
    img2col,
    matmul_last,
    matmul_nt,
    matmul_wide,
    out_size,
    pad2d,
    windows,
)

ints = st.integers


@st.composite
def image_cases(draw, max_batch=3):
    """``(x_shape, kernel, stride, dilation)`` with the (dilated) kernel fitting inside ``x``."""
    k = (draw(ints(1, 3)), draw(ints(1, 3)))
    s = (draw(ints(1, 3)), draw(ints(1, 3)))
    d = (draw(ints(1, 2)), draw(ints(1, 2)))
    span = [dd * (kk - 1) + 1 for kk, dd in zip(k, d)]
    shape = (draw(ints(1, max_batch)), draw(ints(1, 3)), draw(ints(span[0], span[0] + 4)),
             draw(ints(span[1], span[1] + 4)))
    return shape, k, s, d


def _rng(seed):
    return np.random.default_rng(seed)


def _out_hw(shape, k, s, d):
    return out_size(shape[2], k[0], s[0], d[0]), out_size(shape[3], k[1], s[1], d[1])


def batch_last(cols):
    """The loop reference's ``(N, C*kh*kw, OH*OW)`` columns in fnn's ``(C*kh*kw, OH*OW*N)`` layout."""
    return cols.transpose(1, 2, 0).reshape(cols.shape[1], -1)


@given(image_cases(), ints(0, 2**16))
def test_img2col_matches_loop_reference(case, seed):
    shape, k, s, d = case
    x = _rng(seed).standard_normal(shape)
    np.testing.assert_array_equal(img2col(x, k, s, 0, d), batch_last(reference.img2col(x, k, s, d)))


@given(image_cases(), st.tuples(ints(0, 2), ints(0, 2), ints(0, 2), ints(0, 2)), ints(0, 2**16))
def test_img2col_pads_with_zeros(case, pads, seed):
    shape, k, s, d = case
    x = _rng(seed).standard_normal(shape)
    want = batch_last(reference.img2col(pad2d(x, pads), k, s, d))
    np.testing.assert_array_equal(img2col(x, k, s, pads, d), want)


def test_img2col_accepts_ints_for_kernel_stride_padding_dilation():
    x = np.arange(2 * 3 * 7 * 7, dtype=np.float64).reshape(2, 3, 7, 7)
    want = batch_last(reference.img2col(pad2d(x, (1, 1, 1, 1)), (3, 3), (2, 2), (2, 2)))
    np.testing.assert_array_equal(img2col(x, 3, 2, 1, 2), want)


def test_img2col_and_col2img_take_numpy_ints_and_every_padding_form():
    x = np.arange(2 * 3 * 7 * 6, dtype=np.float64).reshape(2, 3, 7, 6)
    want = img2col(x, (3, 2), (2, 1), (1, 0, 2, 1), (1, 2))
    for pads in [(1, 0, 2, 1), [1, 0, 2, 1], ((1, 0), (2, 1)), (np.int64(1), 0, np.uint8(2), np.int32(1))]:
        cols = img2col(x, (np.int64(3), 2), (np.int32(2), np.int8(1)), pads, (1, np.int64(2)))
        np.testing.assert_array_equal(cols, want)
        back = col2img(cols, x.shape, (np.int64(3), 2), (np.int32(2), 1), pads, (np.int16(1), 2))
        np.testing.assert_array_equal(back, col2img(want, x.shape, (3, 2), (2, 1), (1, 0, 2, 1), (1, 2)))
    np.testing.assert_array_equal(img2col(x, 3, padding="valid"), img2col(x, 3))


@pytest.mark.parametrize("fn", ["img2col", "col2img"])
@pytest.mark.parametrize("kwargs, error, match", [
    ({"kernel": 2.0}, TypeError, "kernel must be an int or a pair of ints, got 2.0"),
    ({"kernel": True}, TypeError, "kernel must be an int or a pair of ints, got True"),
    ({"kernel": "2"}, TypeError, "kernel must be an int or a pair of ints, got '2'"),
    ({"kernel": (2, 2, 2)}, TypeError, "kernel must be an int or a pair of ints"),
    ({"stride": None}, TypeError, "stride must be an int or a pair of ints, got None"),
    ({"dilation": (1, 1.5)}, TypeError, "dilation must be an int or a pair of ints"),
    ({"padding": 1.0}, TypeError, "padding must be an int or a pair of ints, got 1.0"),
    ({"padding": (1, 1, 1)}, TypeError, "padding must be an int or a pair of ints"),
    ({"padding": (1, 1, True, 1)}, TypeError, "padding must hold ints"),
    ({"kernel": 0}, ValueError, "kernel must be >= 1, got 0"),
    ({"stride": (1, 0)}, ValueError, r"stride must be >= 1, got \(1, 0\)"),
    ({"dilation": -1}, ValueError, "dilation must be >= 1, got -1"),
    ({"padding": -1}, ValueError, "padding must be >= 0, got -1"),
    ({"padding": (0, 0, -1, 0)}, ValueError, "padding must be >= 0"),
    ({"padding": ((0, 0), (0, -1))}, ValueError, "padding must be >= 0"),
    ({"padding": "same"}, ValueError, 'padding must be "valid", an int or a pair'),
])
def test_img2col_and_col2img_check_their_arguments(fn, kwargs, error, match):
    args = {"kernel": 2, "stride": 1, "padding": 0, "dilation": 1, **kwargs}
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(error, match=f"^{fn}: {match}"):
        if fn == "img2col":
            img2col(x, **args)
        else:
            col2img(np.zeros((4, 9)), x.shape, **args)


@given(image_cases(), ints(0, 2**16))
def test_col2img_is_the_adjoint_of_img2col(case, seed):
    """<img2col(x), c> == <x, col2img(c)> for random x and c."""
    shape, k, s, d = case
    rng = _rng(seed)
    x = rng.standard_normal(shape)
    oh, ow = _out_hw(shape, k, s, d)
    c = rng.standard_normal((shape[1] * k[0] * k[1], oh * ow * shape[0]))
    lhs = np.vdot(img2col(x, k, s, 0, d), c)
    rhs = np.vdot(x, col2img(c, shape, k, s, 0, d))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@given(image_cases(), ints(0, 2**16))
def test_col2img_takes_six_axis_and_broadcast_columns(case, seed):
    shape, k, s, d = case
    oh, ow = _out_hw(shape, k, s, d)
    c6 = _rng(seed).standard_normal((shape[1], *k, oh, ow, shape[0]))
    want = col2img(c6.reshape(shape[1] * k[0] * k[1], -1), shape, k, s, 0, d)
    np.testing.assert_array_equal(col2img(c6, shape, k, s, 0, d), want)
    ones = np.broadcast_to(np.float64(1.0), c6.shape)  # a read-only broadcast view
    counts = col2img(ones, shape, k, s, 0, d)
    # Each pixel receives one count per window tap that reads it.
    np.testing.assert_array_equal(counts, col2img(np.ones(c6.shape), shape, k, s, 0, d))
    np.testing.assert_array_equal(counts.sum(), shape[0] * shape[1] * k[0] * k[1] * oh * ow)


def test_col2img_keeps_dtype():
    c = np.ones((4, 4), np.float32)
    assert col2img(c, (1, 1, 3, 3), 2).dtype == np.float32


@given(image_cases(), ints(0, 2**16))
def test_windows_is_a_read_only_view(case, seed):
    shape, k, s, d = case
    x = _rng(seed).standard_normal(shape)
    v = windows(x, k, s, d)
    oh, ow = _out_hw(shape, k, s, d)
    assert v.shape == (shape[0], shape[1], k[0], k[1], oh, ow)
    assert np.shares_memory(v, x)  # no copy
    assert not v.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        v[(0,) * 6] = 1.0
    np.testing.assert_array_equal(v.reshape(shape[0], -1, oh * ow), reference.img2col(x, k, s, d))


@given(image_cases(), st.tuples(ints(0, 2), ints(0, 2), ints(0, 2), ints(0, 2)), ints(0, 2**16))
def test_column_view_is_img2col_before_its_copy(case, pads, seed):
    shape, k, s, d = case
    x = _rng(seed).standard_normal(shape)
    v = column_view(x, k, s, pads, d)
    oh, ow = out_size(shape[2] + pads[0] + pads[1], k[0], s[0], d[0]), out_size(shape[3] + pads[2] + pads[3], k[1],
                                                                                    s[1], d[1])
    assert v.shape == (shape[1], k[0], k[1], oh, ow, shape[0]) and not v.flags.writeable
    np.testing.assert_array_equal(np.ascontiguousarray(v).reshape(-1, oh * ow * shape[0]), img2col(x, k, s, pads, d))


def test_column_view_reads_a_batch_last_unpadded_input_in_place():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(3, 4, 5, 2).transpose(3, 0, 1, 2)  # batch-last memory
    assert batch_last_padded(x, (0, 0, 0, 0)) is x
    v = column_view(x, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    assert np.shares_memory(v, x) and v.flags.c_contiguous  # a 1 x 1 kernel's columns are x's memory
    assert not np.shares_memory(column_view(x, (1, 1), (1, 1), (1, 0, 0, 0), (1, 1)), x)  # padding copies


@pytest.mark.parametrize("layout", ["step", "fortran", "negative"])
def test_windows_and_img2col_of_any_memory_layout(layout):
    rng = _rng(0)
    base = rng.standard_normal((2, 3, 14, 16))
    x = {"step": base[:, :, ::2, 1::2], "fortran": np.asfortranarray(base[:, :, :7, :8]),
         "negative": base[:, :, :7, ::-2]}[layout]
    contiguous = np.ascontiguousarray(x)
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(windows(x, (3, 2), (2, 1), (1, 2)), windows(contiguous, (3, 2), (2, 1), (1, 2)))
    want = batch_last(reference.img2col(contiguous, (3, 2), (2, 1), (1, 2)))
    np.testing.assert_array_equal(img2col(x, (3, 2), (2, 1), 0, (1, 2)), want)


def test_windows_rejects_a_kernel_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        windows(np.zeros((1, 1, 4, 4)), (3, 3), dilation=(2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        img2col(np.zeros((1, 1, 4, 2)), 3)


def test_empty_batch():
    x = np.zeros((0, 2, 5, 5))
    assert img2col(x, 3).shape == (18, 0)
    assert col2img(np.zeros((18, 0)), x.shape, 3).shape == x.shape


@given(ints(1, 12), ints(1, 4), ints(1, 3), ints(1, 3))
def test_out_size_counts_the_windows(size, kernel, stride, dilation):
    want = reference.output_size(size, 0, 0, kernel, stride, dilation)
    got = out_size(size, kernel, stride, dilation)
    assert max(got, 0) == want


@given(st.tuples(ints(0, 2), ints(0, 2), ints(0, 2), ints(0, 2)), st.sampled_from([0.0, -np.inf, 2.5]),
       st.sampled_from([np.float32, np.float64]))
def test_pad2d_matches_numpy_pad(pads, value, dtype):
    x = _rng(1).standard_normal((2, 3, 4, 5)).astype(dtype)
    t, b, left, r = pads
    got = pad2d(x, pads, value)
    want = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=value)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    if any(pads):
        assert not np.shares_memory(got, x)


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3), (2, 0, 3), (2, 3, 4, 3), (0, 3)])
def test_matmul_last_is_matmul_over_the_last_axis(shape):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape), rng.standard_normal((3, 6))
    got = matmul_last(a, b)
    assert got.shape == (*shape[:-1], 6)
    np.testing.assert_allclose(got, a @ b, rtol=1e-13, atol=1e-13)
    strided = rng.standard_normal((*shape[:-1], 6))[..., ::2]  # not contiguous: reshaped by a copy
    np.testing.assert_allclose(matmul_last(strided, b), strided @ b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("small, m", [((6, 25), 10000), ((6, 25), 4096), ((80, 90), 9000), ((3, 4), 0)])
def test_matmul_wide_and_nt_are_the_products_in_column_blocks_or_not(small, m):
    """A small side (at most 4096 elements) goes in blocks of 4096 columns, a larger one in one
    product; either way the result is the product, into ``out`` or onto ``acc`` when given."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(small), rng.standard_normal((small[1], m))
    np.testing.assert_allclose(matmul_wide(a, b), a @ b, rtol=1e-12, atol=1e-12)
    out = np.full((small[0], m + 3), 7.0)
    assert matmul_wide(a, b, out[:, 3:]).base is out
    np.testing.assert_allclose(out[:, 3:], a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out[:, :3], 7.0)
    c, d = rng.standard_normal((small[1], m)), rng.standard_normal((small[0], m))
    np.testing.assert_allclose(matmul_nt(c, d), c @ d.T, rtol=1e-12, atol=1e-10)
    acc = np.ones((small[1], small[0]))
    assert matmul_nt(c, d, acc) is acc
    np.testing.assert_allclose(acc, 1 + c @ d.T, rtol=1e-12, atol=1e-10)
