"""Pointwise activations and the softmax family. None of them has parameters.

Each layer's maths is a pair of module-level functions on arrays, ``<layer>_forward(x, ...)
-> (y, cache)`` and ``<layer>_backward(cache, dy, ...) -> dx``; the constructor validates its
arguments and its vjp keeps only the cache. GELU and SiLU cache their derivative ``dy/dx``
(one array, computed with ``y`` from shared terms, and not at all under ``need_vjp=False``),
so their backward is one multiplication.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import validate
from fnn._special import int_kind, normal_tail_and_pdf, select
from fnn.core import Layer, Options, layer_kind, parameterless

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "GELU", "SiLU",
           "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
           "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
           "gelu_forward", "gelu_backward", "silu_forward", "silu_backward"]

Arr = np.ndarray


def relu_forward(x: Arr) -> tuple[Arr, Arr]:
    """``x -> y = max(x, 0)``, any shape; the cache is ``y``."""
    y = np.maximum(x, 0)
    return y, y


def relu_backward(y: Arr, dy: Arr) -> Arr:
    """``dx = dy`` where ``y > 0``, else 0 (the gradient at 0 is 0, as in PyTorch). The mask is written
    straight into ``dx``'s buffer as 0/1, so no boolean array of ``y``'s size is ever allocated."""
    dx = np.greater(y, 0, out=np.empty_like(dy))
    dx *= dy
    return dx


def leaky_relu_forward(x: Arr, slope: float) -> tuple[Arr, Arr]:
    """``x -> y = x`` where ``x > 0``, else ``slope * x``, any shape; the cache is the boolean mask ``x > 0``."""
    pos = x > 0
    return np.where(pos, x, x * x.dtype.type(slope)), pos


def leaky_relu_backward(pos: Arr, dy: Arr, slope: float) -> Arr:
    """``dx = dy`` where the mask ``pos`` is set, else ``slope * dy``."""
    return np.where(pos, dy, dy * dy.dtype.type(slope))


def sigmoid_forward(x: Arr) -> tuple[Arr, Arr]:
    """``x -> y = 1 / (1 + exp(-x))``, any shape, as ``(1 + tanh(x / 2)) / 2`` (never overflows); the cache is ``y``."""
    y = 0.5 * (1 + np.tanh(0.5 * x))
    return y, y


def sigmoid_backward(y: Arr, dy: Arr) -> Arr:
    """``dx = dy * y * (1 - y)``."""
    return dy * y * (1 - y)


def tanh_forward(x: Arr) -> tuple[Arr, Arr]:
    """``x -> y = tanh(x)``, any shape; the cache is ``y``."""
    y = np.tanh(x)
    return y, y


def tanh_backward(y: Arr, dy: Arr) -> Arr:
    """``dx = dy * (1 - y^2)``."""
    return dy * (1 - y * y)


def softmax_forward(x: Arr, axis: int) -> tuple[Arr, Arr]:
    """``x -> y = exp(x) / sum(exp(x))`` along ``axis``, same shape, with the max subtracted first; the
    cache is ``y``. An empty ``axis`` gives an empty ``y`` (as PyTorch does), not the max reduction's error."""
    if x.shape[axis] == 0:
        y = np.empty_like(x)
        return y, y
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return y, y


def softmax_backward(y: Arr, dy: Arr, axis: int) -> Arr:
    """``dx = y * (dy - sum(dy * y))``, the sum along ``axis``."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def log_softmax_forward(x: Arr, axis: int) -> tuple[Arr, Arr]:
    """``x -> y = x - logsumexp(x)`` along ``axis``, same shape, with the max subtracted first; the cache
    is ``y``. An empty ``axis`` gives an empty ``y``."""
    if x.shape[axis] == 0:
        y = np.empty_like(x)
        return y, y
    z = x - x.max(axis=axis, keepdims=True)
    y = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return y, y


def log_softmax_backward(y: Arr, dy: Arr, axis: int) -> Arr:
    """``dx = dy - softmax(x) * sum(dy)``, the sum along ``axis`` (``softmax(x) = exp(y)``)."""
    return dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)


def ReLU() -> Layer:
    """``y = max(x, 0)``, any shape. The gradient at 0 is 0 (as in PyTorch). The vjp keeps ``y``."""

    def forward(x: Arr) -> Any:
        y, cache = relu_forward(x)
        return y, lambda dy: relu_backward(cache, dy)

    return parameterless("ReLU()", forward)


def LeakyReLU(slope: float = 0.01) -> Layer:
    """``y = x`` for ``x > 0`` else ``slope * x``, any shape. Default slope 0.01 (PyTorch's); any
    finite number. The vjp keeps the boolean mask ``x > 0``.

    >>> LeakyReLU(0.5).apply({}, np.array([[-2.0, 3.0]]))[0]
    array([[-1.,  3.]])
    """
    slope = validate.number(f"LeakyReLU({slope!r})", "slope", slope)

    def forward(x: Arr) -> Any:
        y, cache = leaky_relu_forward(x, slope)
        return y, lambda dy: leaky_relu_backward(cache, dy, slope)

    return parameterless(f"LeakyReLU({slope})", forward)


def Sigmoid() -> Layer:
    """Logistic function ``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x / 2)) / 2`` so it never overflows."""

    def forward(x: Arr) -> Any:
        y, cache = sigmoid_forward(x)
        return y, lambda dy: sigmoid_backward(cache, dy)

    return parameterless("Sigmoid()", forward)


def Tanh() -> Layer:
    """Hyperbolic tangent, any shape."""

    def forward(x: Arr) -> Any:
        y, cache = tanh_forward(x)
        return y, lambda dy: tanh_backward(cache, dy)

    return parameterless("Tanh()", forward)


def _softmax_kind(name: str, axis: Any) -> str:
    return layer_kind(name, [], [("axis", axis, -1)])


def _check_axis(kind: str, axis: int, x: Arr) -> None:
    if not -x.ndim <= axis < x.ndim or axis in (0, -x.ndim):
        raise ValueError(f"{kind}: axis {axis} is not a feature axis of input with shape {x.shape}")


def Softmax(axis: int = -1) -> Layer:
    """Softmax along ``axis`` (default the last), stable for large inputs (the max is subtracted).

    ``x: (N, ...) -> y`` of the same shape; an empty ``axis`` gives an empty ``y`` (and ``dx``).
    ``axis`` is an int naming a feature axis (not the batch axis 0).
    """
    axis = validate.integer(_softmax_kind("Softmax", axis), "axis", axis)
    kind = _softmax_kind("Softmax", axis)

    def forward(x: Arr) -> Any:
        _check_axis(kind, axis, x)
        y, cache = softmax_forward(x, axis)
        return y, lambda dy: softmax_backward(cache, dy, axis)

    return parameterless(kind, forward)


def LogSoftmax(axis: int = -1) -> Layer:
    """Log of the softmax along ``axis`` (default the last), computed as ``x - logsumexp(x)``.

    ``x: (N, ...) -> y`` of the same shape; an empty ``axis`` gives an empty ``y`` (and ``dx``).
    ``axis`` is an int naming a feature axis (not the batch axis 0).
    """
    axis = validate.integer(_softmax_kind("LogSoftmax", axis), "axis", axis)
    kind = _softmax_kind("LogSoftmax", axis)

    def forward(x: Arr) -> Any:
        _check_axis(kind, axis, x)
        y, cache = log_softmax_forward(x, axis)
        return y, lambda dy: log_softmax_backward(cache, dy, axis)

    return parameterless(kind, forward)


def _logistic(v: Arr) -> tuple[Arr, Arr]:
    """``(sigmoid(v), sigmoid(v) * sigmoid(-v))``, both accurate relative to their values for every
    ``v`` (no ``1 - sigmoid`` cancellation) and never overflowing: from ``s = exp(-|v|)``, the
    sigmoid is ``1 / (1 + s)`` for ``v >= 0`` and ``s / (1 + s)`` below, and the product ``s / (1 + s)^2``."""
    s = np.abs(v)
    np.negative(s, out=s)
    np.exp(s, out=s)
    r = s + 1.0
    np.reciprocal(r, out=r)
    sig = select(v >= 0, r, s * r)
    s *= r
    s *= r
    return sig, s


_GELU_FORMS = ("none", "tanh")
_TANH_C = 0.7978845608028654  # sqrt(2 / pi)
_TANH_K = 0.044715
_TANH_LIMIT = 30.0  # past it the tanh form's sigmoid is exactly 0 or 1 in float32 and float64, and x^3 cannot overflow


# Elementwise maths of a dozen passes or more runs over blocks of this many values, so that its
# temporaries stay in a core's L2 cache: GELU's forward on 1M float32 values, 10.8 -> 6.2 ms at one thread.
_CHUNK = 32768

# The bits, as the integer of int_kind, of -0.0 (the sign bit alone) and of 1.0.
_SIGN_BIT = {np.dtype(np.float32): np.int32(-2 ** 31), np.dtype(np.float64): np.int64(-2 ** 63)}
_ONE_BITS = {np.dtype(np.float32): np.float32(1).view(np.int32), np.dtype(np.float64): np.float64(1).view(np.int64)}


Chunk = Callable[[Arr, Arr, "Arr | None"], None]
"""``fn(x, y, grad)``: an elementwise function writing its value into ``y`` and, unless ``grad`` is
``None``, its derivative into ``grad`` (both shaped as ``x``)."""


def _in_chunks(fn: Chunk, x: Arr, need_grad: bool) -> tuple[Arr, Arr | None]:
    """``(y, dy/dx)`` of the elementwise ``fn`` over blocks of ``_CHUNK`` values of ``x``; bit for
    bit one call on the whole of ``x``, as every value goes through the same operations."""
    y = np.empty(x.shape, x.dtype)
    grad = np.empty(x.shape, x.dtype) if need_grad else None
    if x.size <= 2 * _CHUNK:
        fn(x, y, grad)
        return y, grad
    flat, flat_y = x.reshape(-1), y.reshape(-1)
    flat_grad = None if grad is None else grad.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        fn(flat[i:i + _CHUNK], flat_y[i:i + _CHUNK], None if flat_grad is None else flat_grad[i:i + _CHUNK])
    return y, grad


def _gelu_exact(x: Arr, y: Arr, grad: Arr | None) -> None:
    # With t = Phi(-|x|): y = x Phi(x) = max(x, 0) - |x| t, and Phi(x) = t for x < 0, 1 - t
    # otherwise; no select, and no 1 - t cancellation for x < 0.
    t, pdf, u = normal_tail_and_pdf(x)
    np.maximum(x, 0, out=y)
    u *= t  # u is |x| clipped where t is 0
    y -= u
    if grad is None:
        return
    bits = x.view(int_kind(x))
    step = np.invert(bits)
    step >>= 8 * bits.itemsize - 1  # all bits set where x >= +0 (-0.0 counts as negative: t = 1 - t = 1/2 there)
    flip = step & _SIGN_BIT[x.dtype]
    flip |= t.view(flip.dtype)  # -t where x >= +0, t elsewhere
    step &= _ONE_BITS[x.dtype]  # 1.0 where x >= +0, 0.0 elsewhere
    np.add(flip.view(x.dtype), step.view(x.dtype), out=grad)  # Phi(x)
    pdf *= x  # dy/dx = Phi(x) + x phi(x)
    grad += pdf


def _gelu_tanh(x: Arr, y: Arr, grad: Arr | None) -> None:
    xc = np.clip(x, -_TANH_LIMIT, _TANH_LIMIT)
    x2 = xc * xc
    v = x2 * (2 * _TANH_C * _TANH_K)
    v += 2 * _TANH_C
    v *= xc  # 2 u
    sig, dsig = _logistic(v)
    np.multiply(x, sig, out=y)
    if grad is None:
        return
    x2 *= 6 * _TANH_C * _TANH_K  # dy/dx = sigmoid(2 u) + x sigmoid'(2 u) 2 u'
    x2 += 2 * _TANH_C
    x2 *= xc
    x2 *= dsig
    np.add(x2, sig, out=grad)


def gelu_forward(x: Arr, approximate: str = "none", need_grad: bool = True) -> tuple[Arr, Arr | None]:
    """``x -> y = x * Phi(x)``, ``Phi`` the standard normal CDF ``(1 + erf(x / sqrt(2))) / 2``
    (``approximate="none"``), or ``y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``
    (``"tanh"``), any shape. The cache is ``dy/dx`` (``None`` unless ``need_grad``).

    Both forms are computed without cancellation, so ``y`` is accurate relative to its value
    for large negative ``x`` too: ``Phi`` from ``erfc`` (``fnn._special``), and the tanh form
    as ``x * sigmoid(2 u)``, ``u`` the tanh's argument, from ``exp(-|2 u|)``. Large arrays are
    computed in cache-sized blocks, with the same bits.
    """
    approximate = validate.choice("gelu_forward", "approximate", approximate, _GELU_FORMS)
    return _in_chunks(_gelu_exact if approximate == "none" else _gelu_tanh, x, need_grad)


def gelu_backward(grad: Arr, dy: Arr) -> Arr:
    """``dx = dy * dy/dx``, the derivative cached by :func:`gelu_forward`."""
    return dy * grad


def silu_forward(x: Arr, need_grad: bool = True) -> tuple[Arr, Arr | None]:
    """``x -> y = x * sigmoid(x)``, any shape, accurate relative to its value for large negative
    ``x`` and never overflowing. The cache is ``dy/dx = sigmoid(x) (1 + x sigmoid(-x))`` (``None``
    unless ``need_grad``)."""
    return _in_chunks(_silu, x, need_grad)


def _silu(x: Arr, y: Arr, grad: Arr | None) -> None:
    sig, dsig = _logistic(x)
    np.multiply(x, sig, out=y)
    if grad is None:
        return
    dsig *= x
    np.add(dsig, sig, out=grad)


def silu_backward(grad: Arr, dy: Arr) -> Arr:
    """``dx = dy * dy/dx``, the derivative cached by :func:`silu_forward`."""
    return dy * grad


def _with_derivative(kind: str, forward: Callable[[Arr, bool], tuple[Arr, Arr | None]],
                     backward: Callable[[Arr, Arr], Arr]) -> Layer:
    """The parameterless layer of an elementwise ``forward(x, need_grad) -> (y, dy/dx)`` whose vjp is
    ``backward(dy/dx, dy)``; under ``need_vjp=False`` the derivative is not computed at all."""

    def apply(x: Arr, opts: Options) -> Any:
        y, grad = forward(x, opts.need_vjp)
        if grad is None:  # need_vjp=False: make_layer's vjp refuses to run
            return y, None
        return y, lambda dy: backward(grad, dy)

    return parameterless(kind, apply, with_options=True)


def GELU(approximate: str = "none") -> Layer:
    """Gaussian error linear unit, as ``torch.nn.GELU``: ``y = x * Phi(x)``, any shape, ``Phi``
    the standard normal CDF; ``approximate="tanh"`` is the tanh approximation
    ``x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`` (GPT-2's). Default ``"none"``
    (exact, PyTorch's default). Both are accurate relative to their values for large negative
    ``x``, where PyTorch's ``1 + erf``/``1 + tanh`` cancels (see :func:`gelu_forward`). The vjp
    keeps ``dy/dx``.

    >>> GELU().apply({}, np.array([[-1.0, 0.0, 2.0]]))[0]
    array([[-0.15865525,  0.        ,  1.95449974]])
    """
    kind = layer_kind("GELU", [], [("approximate", approximate, "none")])
    approximate = validate.choice(kind, "approximate", approximate, _GELU_FORMS)
    return _with_derivative(kind, lambda x, need_grad: gelu_forward(x, approximate, need_grad), gelu_backward)


def SiLU() -> Layer:
    """Sigmoid linear unit (swish), as ``torch.nn.SiLU``: ``y = x * sigmoid(x)``, any shape,
    never overflowing. The vjp keeps ``dy/dx``.

    >>> SiLU().apply({}, np.array([[-1.0, 0.0, 2.0]]))[0]
    array([[-0.26894142,  0.        ,  1.76159416]])
    """
    return _with_derivative("SiLU()", silu_forward, silu_backward)
