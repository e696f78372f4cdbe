"""fnn._special: erf, erfc and the normal CDF/density against the standard library's math.erf and
math.erfc, in float64 and float32, over the whole range (tails, tiny and huge arguments)."""

import math
import warnings

import numpy as np
import pytest

from fnn import _special

DTYPES = [np.float64, np.float32]


def grid(dtype, limit=30.0):
    """Dense points on [-limit, limit], powers of ten down to the smallest normals, both signs,
    the region bounds of the approximations, and random normal draws."""
    tiny = np.finfo(dtype).tiny
    bounds = [0.5, 10.5, 27.5, 27.5 * math.sqrt(2), 10.5 * math.sqrt(2)]
    positive = np.concatenate([np.logspace(np.log10(tiny), 0, 400), bounds, np.nextafter(np.array(bounds), 0)])
    x = np.concatenate([np.linspace(-limit, limit, 24001), positive, -positive, [0.0, -0.0],
                        np.random.default_rng(0).standard_normal(2000) * 3])
    return x.astype(dtype)


def reference(fn, x):
    """``fn`` (a ``math`` function) at each value of ``x``, exactly converted to float64."""
    return np.array([fn(float(v)) for v in x.astype(np.float64)])


def relative_error(got, ref):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(got.astype(np.float64) - ref) / np.abs(ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_erf_matches_math_erf_to_a_few_ulps_everywhere(dtype):
    """Relative to its value, near 0 as well (erf(1e-300) is 1.13e-300, not 0 from 1 - erfc)."""
    x = grid(dtype)
    got = _special.erf(x)
    ref = reference(math.erf, x)
    assert got.dtype == dtype
    nonzero = ref != 0
    assert (relative_error(got, ref)[nonzero] <= 4 * np.finfo(dtype).eps).all()
    assert (got[~nonzero] == 0).all()
    assert np.signbit(_special.erf(np.array([-0.0], dtype)))[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_erfc_matches_math_erfc_relative_to_its_value_in_the_tails(dtype):
    """A few ulps for |x| <= 1; in the right tail the error grows like x^2 ulps, within erfc's own
    conditioning (d log erfc / d log x = -2 x^2 there: the result is exact for an input one ulp away);
    where erfc underflows past the smallest normal number, within that number."""
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    x = grid(dtype)
    got = _special.erfc(x)
    ref = reference(math.erfc, x)
    assert got.dtype == dtype
    x64 = x.astype(np.float64)
    normal = ref >= tiny
    err = relative_error(got, ref)
    assert (err[normal & (np.abs(x64) <= 1)] <= 4 * eps).all()
    assert (err[normal] <= 4 * eps * (1 + 2 * x64[normal] ** 2)).all()
    assert (np.abs(got[~normal] - ref[~normal]) <= tiny).all()
    assert (got[x64 >= 30] == 0).all() and (got[x64 <= -30] == 2).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_cdf_and_pdf_match_math_without_cancellation_in_the_left_tail(dtype):
    """Phi(x) = erfc(-x / sqrt(2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi), relative to their
    values (Phi(-30) is 4.9e-198 in float64, where (1 + erf) / 2 would give 0); the tolerance
    grows like x^2 ulps, the functions' own conditioning, past |x| = 1."""
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    x = grid(dtype, limit=40.0)
    x64 = x.astype(np.float64)
    cdf, pdf = _special.normal_cdf_and_pdf(x)
    assert cdf.dtype == pdf.dtype == dtype
    np.testing.assert_array_equal(_special.normal_cdf(x), cdf)
    ref_cdf = reference(lambda v: 0.5 * math.erfc(-v / math.sqrt(2)), x)
    ref_pdf = reference(lambda v: math.exp(-v * v / 2) / math.sqrt(2 * math.pi), x)
    for got, ref in [(cdf, ref_cdf), (pdf, ref_pdf)]:
        normal = ref >= tiny
        assert (relative_error(got, ref)[normal] <= 4 * eps * (1 + x64[normal] ** 2)).all()
        assert (np.abs(got[~normal] - ref[~normal]) <= tiny).all()
    if dtype == np.float64:
        assert _special.normal_cdf(np.array([-30.0]))[0] == pytest.approx(4.906713927148187e-198, rel=1e-13)  # mpmath
    assert (cdf[x64 >= 40] == 1).all() and (cdf[x64 <= -40] == 0).all() and (pdf[np.abs(x64) >= 40] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_infinite_and_nan_inputs_give_limits_and_nan_without_warnings(dtype):
    big = np.finfo(dtype).max
    x = np.array([[np.nan, np.inf, -np.inf], [big, -big, 0.0]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        erf, erfc = _special.erf(x), _special.erfc(x)
        cdf, pdf = _special.normal_cdf_and_pdf(x)
    np.testing.assert_array_equal(erf, np.array([[np.nan, 1, -1], [1, -1, 0]], dtype))
    np.testing.assert_array_equal(erfc, np.array([[np.nan, 0, 2], [0, 2, 1]], dtype))
    np.testing.assert_array_equal(cdf, np.array([[np.nan, 1, 0], [1, 0, 0.5]], dtype))
    np.testing.assert_array_equal(pdf, np.array([[np.nan, 0, 0], [0, 0, _special.INV_SQRT_2PI]], dtype))
    assert erf.shape == erfc.shape == cdf.shape == pdf.shape == x.shape


def test_inputs_are_not_modified_and_any_shape_works():
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)[:, ::2]  # not contiguous
    x.setflags(write=False)
    before = x.copy()
    for fn in (_special.erf, _special.erfc, _special.normal_cdf):
        assert fn(x).shape == x.shape
    assert _special.erf(np.array(0.5)).shape == ()
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.complex128])
def test_other_dtypes_raise_type_error(dtype):
    with pytest.raises(TypeError, match=f"expected a float32 or float64 array, got dtype {np.dtype(dtype)}"):
        _special.erf(np.zeros(3, dtype))


@pytest.mark.parametrize("coefficients", [_special._FLOAT64, _special._FLOAT32])
def test_erfc_rational_has_positive_coefficients(coefficients):
    """All positive: P(a) and Q(a) are sums of positive terms for a >= 0, so Horner's rule adds no
    cancellation and Q never vanishes."""
    assert min(coefficients.p) > 0 and min(coefficients.q) > 0
