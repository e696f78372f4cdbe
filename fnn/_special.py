"""The error function and the normal distribution's CDF, vectorized in NumPy (which has no ``erf``).

Private: GELU's maths (:mod:`fnn.layers.activations`). Each function takes a float32 or
float64 array of any shape and returns an array of its shape and dtype, computed in that dtype (float32 with
coefficient sets of its own, so no float64 temporaries). NaN gives NaN; no input, however
large, raises a floating-point warning.

The method, with coefficients fitted for this module (relative-error minimax, by
Lawson-reweighted least squares against 50-digit values from mpmath):

- ``erfc(a) = exp(-a^2) * P(a) / Q(a)`` for ``a >= 0``: one rational function, all of whose
  coefficients are positive (so its evaluation is stable), on ``[0, 27.5]`` in float64
  (degrees 9 and 10, fit error 5.1e-17) and on ``[0, 10.5]`` in float32 (degrees 4 and 5,
  6.2e-9). Past those bounds ``erfc`` underflows to 0 in the dtype, so ``a`` is clipped
  there. ``erfc(-a) = 2 - erfc(a)``.
- ``erf(z) = z * S(z^2)`` for ``|z| < 0.5`` (degree 8, fit error 3.9e-18; float32: degree 4,
  1.4e-9), else ``sign(z) * (1 - erfc(|z|))``, so ``erf`` is accurate relative to its value
  near 0 too.

Accuracy: a few ulps of the dtype for ``erf`` everywhere and for ``erfc`` where ``|x| <= 1``
(tested against ``math.erf``/``math.erfc``); in ``erfc``'s tail the relative error grows
like ``x^2`` ulps, from rounding ``x^2`` in ``exp(-x^2)``. That is within the function's own
conditioning (``d log erfc(x) / d log x ~ -2 x^2``): the result is exact for an input less
than one ulp away.

>>> erf(np.array([0.0, 0.5, -2.0]))
array([ 0.        ,  0.52049988, -0.99532227])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["erf", "erfc", "normal_cdf", "normal_cdf_and_pdf", "normal_tail_and_pdf", "select", "int_kind"]

Arr = np.ndarray

SQRT1_2 = 0.7071067811865476
"""``1 / sqrt(2)``."""
INV_SQRT_2PI = 0.3989422804014327
"""``1 / sqrt(2 pi)``, the standard normal density at 0."""


class _Coefficients(NamedTuple):
    """One dtype's approximations; polynomial coefficients from the constant term up."""

    p: tuple[float, ...]  # exp(a^2) erfc(a) = P(a) / (1 + a * Q(a))
    q: tuple[float, ...]
    a_max: float  # erfc(a) is 0 in the dtype for a >= a_max
    s: tuple[float, ...]  # erf(z) / z = S(z^2) for |z| < 0.5


_FLOAT64 = _Coefficients(
    p=(1.0, 2.19149430232793, 2.3758173649223617, 1.6363424153569535, 0.7813606996491876, 0.2671564603416714,
       0.06539886384829273, 0.011090737414131049, 0.0011913481242228712, 6.266055308185226e-05),
    q=(3.319873469423428, 5.121893425213503, 4.848159561080244, 3.127413562212477, 1.4418281437304834,
       0.48329587899787424, 0.11697227273068539, 0.01971335171157507, 0.002111609570499175,
       0.00011106293861013174),
    a_max=27.5,
    s=(1.1283791670955126, -0.37612638903183465, 0.1128379167092483, -0.026866170632719216, 0.00522397737036277,
       -0.0008548297526456566, 0.00012053324372916605, -1.4845584422880721e-05, 1.4723215522127534e-06),
)

_FLOAT32 = _Coefficients(
    p=(1.0000000061557262, 1.2416540159268903, 0.7350068982823968, 0.23084280818330144, 0.033138119264364135),
    q=(2.3700338024980443, 2.4092937148658264, 1.3317213060515665, 0.40918307527330133, 0.058735142204991715),
    a_max=10.5,
    s=(1.128379165571714, -0.37612608590126473, 0.11282822975131175, -0.026757188711753664, 0.004717990296620481),
)


def _coefficients(x: Arr) -> _Coefficients:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"fnn._special: expected a float32 or float64 array, got {type(x).__name__}")
    if x.dtype == np.float64:
        return _FLOAT64
    if x.dtype == np.float32:
        return _FLOAT32
    raise TypeError(f"fnn._special: expected a float32 or float64 array, got dtype {x.dtype}")


def _polynomial(coefs: tuple[float, ...], a: Arr) -> Arr:
    """``sum(coefs[k] * a**k)`` by Horner's rule, in place on one new array of ``a``'s dtype."""
    acc = a * coefs[-1]
    acc += coefs[-2]
    for c in coefs[-3::-1]:
        acc *= a
        acc += c
    return acc


def int_kind(x: Arr) -> type[np.signedinteger]:
    """The signed integer type as wide as ``x``'s float dtype: ``x.view(int_kind(x))`` is its bits."""
    return np.int32 if x.dtype.itemsize == 4 else np.int64


def select(where: Arr, a: Arr, b: Arr) -> Arr:
    """``a`` where ``where`` is set, else ``b`` (one float dtype), bit for bit as ``np.where``, but with
    integer masks on the floats' bits: ``np.where`` and ``np.copyto(where=)`` branch per element and
    are 10x slower on a random mask (half the inputs of GELU are negative)."""
    kind = int_kind(a)
    mask = where.astype(kind)
    np.negative(mask, out=mask)  # all bits set where True
    out = np.bitwise_and(a.view(kind), mask)
    np.invert(mask, out=mask)
    mask &= b.view(kind)
    out |= mask
    return out.view(a.dtype)


def _erfc_scaled(c: _Coefficients, a: Arr) -> Arr:
    """``exp(a^2) * erfc(a)`` for ``0 <= a <= c.a_max`` (NaN stays NaN)."""
    q = _polynomial((0.0, *c.q), a)
    q += 1.0
    r = _polynomial(c.p, a)
    r /= q
    return r


def _erfc_abs(c: _Coefficients, x: Arr) -> Arr:
    """``erfc(|x|)`` (``|x|`` clipped to ``c.a_max``), a new array; ``x`` has at least one axis."""
    a = np.minimum(np.abs(x), c.a_max)  # np.minimum keeps NaN
    e = a * a
    np.negative(e, out=e)
    np.exp(e, out=e)
    t = _erfc_scaled(c, a)
    t *= e
    return t


def erfc(x: Arr) -> Arr:
    """The complementary error function ``1 - erf(x)``, accurate relative to its value also
    where it is tiny (``x`` large); 0 where it underflows. ``x``: float32 or float64, any shape.

    >>> erfc(np.array([-1.0, 0.0, 10.0]))
    array([1.84270079e+00, 1.00000000e+00, 2.08848758e-45])
    """
    c = _coefficients(x)
    if x.ndim == 0:
        return erfc(x.reshape(1)).reshape(())
    t = _erfc_abs(c, x)
    return select(x < 0, np.subtract(2.0, t, dtype=t.dtype), t)


def erf(x: Arr) -> Arr:
    """The error function ``2 / sqrt(pi) * integral from 0 to x of exp(-t^2) dt``, accurate
    relative to its value (near 0 too). ``x``: float32 or float64, any shape.

    >>> erf(np.array([1e-20, 1.0], np.float32))
    array([1.12837905e-20, 8.42700779e-01], dtype=float32)
    """
    c = _coefficients(x)
    if x.ndim == 0:
        return erf(x.reshape(1)).reshape(())
    t = _erfc_abs(c, x)
    np.subtract(1.0, t, out=t)
    np.copysign(t, x, out=t)
    small = np.abs(x) < 0.5
    if small.any():
        z = x[small]
        t[small] = z * _polynomial(c.s, z * z)
    return t


class _TailCoefficients(NamedTuple):
    """:class:`_Coefficients` rescaled to ``u = |x|`` for ``Phi(-u) = exp(-u^2 / 2) * H(u) / K(u)``:
    ``H(u) = P(u / sqrt 2) / 2`` and ``K(u) = 1 + (u / sqrt 2) * Q(u / sqrt 2)``, which saves two passes."""

    h: tuple[float, ...]
    k: tuple[float, ...]
    u_max: float  # Phi(-u) is 0 in the dtype for u >= u_max


def _tail(c: _Coefficients) -> _TailCoefficients:
    return _TailCoefficients(h=tuple(0.5 * p * SQRT1_2 ** i for i, p in enumerate(c.p)),
                             k=(1.0, *(q * SQRT1_2 ** (i + 1) for i, q in enumerate(c.q))), u_max=c.a_max / SQRT1_2)


_TAILS = {np.dtype(np.float64): _tail(_FLOAT64), np.dtype(np.float32): _tail(_FLOAT32)}


def normal_tail_and_pdf(x: Arr) -> tuple[Arr, Arr, Arr]:
    """``(Phi(-|x|), phi(x), u)`` for ``x`` with at least one axis, ``u = |x|`` clipped where
    ``Phi(-|x|)`` underflows to 0: the lower tail probability, accurate relative to its value, the
    density, and the clipped ``|x|``; three new arrays. ``Phi(x)`` is ``Phi(-|x|)`` for ``x < 0``
    and ``1 - Phi(-|x|)`` otherwise."""
    _coefficients(x)  # checks the dtype
    c = _TAILS[x.dtype]
    u = np.abs(x)
    np.minimum(u, c.u_max, out=u)  # np.minimum keeps NaN; beyond u_max Phi(-u) and phi are 0
    e = u * -0.5
    e *= u
    np.exp(e, out=e)  # exp(-x^2 / 2), from x^2 with no rounding of x / sqrt(2)
    t = _polynomial(c.h, u)
    t /= _polynomial(c.k, u)
    t *= e
    e *= INV_SQRT_2PI
    return t, e, u


def normal_cdf_and_pdf(x: Arr) -> tuple[Arr, Arr]:
    """``(Phi(x), phi(x))``: the standard normal distribution's CDF ``(1 + erf(x / sqrt(2))) / 2``
    and density ``exp(-x^2 / 2) / sqrt(2 pi)``, both accurate relative to their values (``Phi``
    in the left tail is computed from ``erfc``, with no cancellation). ``x``: float32 or
    float64, any shape.

    >>> normal_cdf_and_pdf(np.array([-10.0, 0.0, 1.0]))
    (array([7.61985302e-24, 5.00000000e-01, 8.41344746e-01]), array([7.69459863e-23, 3.98942280e-01, 2.41970725e-01]))
    """
    _coefficients(x)
    if x.ndim == 0:
        cdf, pdf = normal_cdf_and_pdf(x.reshape(1))
        return cdf.reshape(()), pdf.reshape(())
    t, pdf, _ = normal_tail_and_pdf(x)
    return select(x < 0, t, np.subtract(1.0, t, dtype=t.dtype)), pdf


def normal_cdf(x: Arr) -> Arr:
    """The standard normal distribution's CDF ``Phi(x)``; see :func:`normal_cdf_and_pdf`.

    >>> normal_cdf(np.array([-1.0, 0.0], np.float32))
    array([0.15865526, 0.5       ], dtype=float32)
    """
    return normal_cdf_and_pdf(x)[0]
