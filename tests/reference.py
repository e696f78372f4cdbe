"""The loop reference: slow, obviously correct convolution and pooling in plain Python loops.

Every function here loops over the batch, the channels and the output positions
(and over the kernel offsets inside each window) and reads one input element at a
time, so each line can be checked against the textbook definition. Nothing here
uses :mod:`fnn`; the tests compare fnn's vectorized layers with these functions,
and the benchmark imports them as "the loop reference". They are only meant for
small inputs.

Conventions, as in :mod:`fnn`: images are ``(N, C, H, W)``; a conv weight is
``(F, C, kh, kw)`` (PyTorch's layout); ``kernel``, ``stride`` and ``dilation``
are an int or a pair ``(vertical, horizontal)``; ``padding`` is anything
:func:`explicit_padding` accepts. An input position ``(r, c)`` of the *padded*
image maps to ``x[..., r - top, c - left]``; positions outside ``x`` hold the
padding value (``0`` for convolution and average pooling, ``-inf`` for max
pooling). Every window lies fully inside the padded image (PyTorch's
``ceil_mode=False``).

>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> max_pool2d(x, 2)[0, 0]
array([[ 5.,  7.],
       [13., 15.]])
>>> conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0]
array([[10., 18.],
       [42., 50.]])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "avg_pool2d",
    "conv2d",
    "explicit_padding",
    "global_avg_pool2d",
    "img2col",
    "max_pool2d",
    "output_size",
    "padded_value",
    "pair",
    "same_padding",
]


def pair(v: Any) -> tuple[int, int]:
    """``v`` as ``(vertical, horizontal)``: an int ``k`` means ``(k, k)``."""
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """``(before, after)`` padding of ``"same"`` along one axis (PyTorch, TensorFlow and JAX).

    The output has ``ceil(size / stride)`` positions; the total padding is what the
    last window needs, and an odd extra row/column goes *after* (bottom/right).
    """
    out = math.ceil(size / stride)
    span = dilation * (kernel - 1) + 1
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def explicit_padding(padding: Any, size: tuple[int, int] = (0, 0), kernel: Any = 1, stride: Any = 1,
                     dilation: Any = 1) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` for a padding given as fnn's layers take it.

    ``padding`` is an int (all four sides), a pair ``(ph, pw)`` (top = bottom = ph,
    left = right = pw), ``((top, bottom), (left, right))``, the four ints
    ``(top, bottom, left, right)`` (returned as they are), ``"valid"`` (none) or
    ``"same"`` (see :func:`same_padding`; needs ``size = (H, W)``, ``kernel``,
    ``stride`` and ``dilation``).
    """
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0, 0, 0, 0)
        if padding.lower() != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or pairs, got {padding!r}")
        (kh, kw), (sh, sw), (dh, dw) = pair(kernel), pair(stride), pair(dilation)
        top, bottom = same_padding(size[0], kh, sh, dh)
        left, right = same_padding(size[1], kw, sw, dw)
        return (top, bottom, left, right)
    if isinstance(padding, (tuple, list)) and isinstance(padding[0], (tuple, list)):
        (top, bottom), (left, right) = padding
        return (int(top), int(bottom), int(left), int(right))
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return tuple(int(p) for p in padding)  # type: ignore[return-value]
    ph, pw = pair(padding)
    return (ph, ph, pw, pw)


def output_size(size: int, pad_before: int, pad_after: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """How many windows fit along one axis: window ``o`` starts at padded position ``o * stride``
    and its last tap is at ``o * stride + dilation * (kernel - 1)``, which must be inside the padded axis."""
    padded = size + pad_before + pad_after
    count = 0
    while count * stride + dilation * (kernel - 1) < padded:
        count += 1
    return count


def padded_value(x: np.ndarray, n: int, c: int, r: int, col: int, pads: tuple[int, int, int, int],
                 fill: float) -> float:
    """Element ``(r, col)`` of channel ``c`` of example ``n`` of ``x`` padded by ``pads`` with ``fill``."""
    top, _, left, _ = pads
    i, j = r - top, col - left
    if 0 <= i < x.shape[2] and 0 <= j < x.shape[3]:
        return float(x[n, c, i, j])
    return fill


def _geometry(x: np.ndarray, kernel: Any, stride: Any, padding: Any, dilation: Any) -> tuple[Any, ...]:
    k, s, d = pair(kernel), pair(stride), pair(dilation)
    pads = explicit_padding(padding, x.shape[2:], k, s, d)
    oh = output_size(x.shape[2], pads[0], pads[1], k[0], s[0], d[0])
    ow = output_size(x.shape[3], pads[2], pads[3], k[1], s[1], d[1])
    return k, s, d, pads, oh, ow


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1) -> np.ndarray:
    """Cross-correlation like ``torch.nn.functional.conv2d`` (zero padding), in loops.

    ``x: (N, C, H, W)``, ``w: (F, C, kh, kw)``, ``b: (F,)`` or ``None`` -> ``y: (N, F, OH, OW)``::

        y[n, f, oh, ow] = b[f] + sum over c, i, j of
                          w[f, c, i, j] * xpad[n, c, oh * sh + i * dh, ow * sw + j * dw]
    """
    n_, c_, _, _ = x.shape
    f_, _, kh, kw = w.shape
    _, s, d, pads, oh_, ow_ = _geometry(x, (kh, kw), stride, padding, dilation)
    y = np.zeros((n_, f_, oh_, ow_), dtype=np.result_type(x, w))
    for n in range(n_):
        for f in range(f_):
            for oh in range(oh_):
                for ow in range(ow_):
                    total = 0.0 if b is None else float(b[f])
                    for c in range(c_):
                        for i in range(kh):
                            for j in range(kw):
                                r, col = oh * s[0] + i * d[0], ow * s[1] + j * d[1]
                                total += float(w[f, c, i, j]) * padded_value(x, n, c, r, col, pads, 0.0)
                    y[n, f, oh, ow] = total
    return y


def _pool(x: np.ndarray, kernel: Any, stride: Any, padding: Any, fill: float, reduce: Any) -> np.ndarray:
    """Apply ``reduce(values, real)`` to each window: ``values`` in row-major window order,
    ``real`` the matching flags saying whether a position lies inside ``x`` (not padding)."""
    stride = kernel if stride is None else stride
    k, s, _, pads, oh_, ow_ = _geometry(x, kernel, stride, padding, 1)
    n_, c_, _, _ = x.shape
    y = np.zeros((n_, c_, oh_, ow_), dtype=x.dtype)
    top, _, left, _ = pads
    for n in range(n_):
        for c in range(c_):
            for oh in range(oh_):
                for ow in range(ow_):
                    values, real = [], []
                    for i in range(k[0]):
                        for j in range(k[1]):
                            r, col = oh * s[0] + i, ow * s[1] + j
                            values.append(padded_value(x, n, c, r, col, pads, fill))
                            real.append(0 <= r - top < x.shape[2] and 0 <= col - left < x.shape[3])
                    y[n, c, oh, ow] = reduce(values, real)
    return y


def _max(values: list[float], real: list[bool]) -> float:
    if any(math.isnan(v) for v in values):
        return math.nan  # NaN propagates, as in PyTorch
    return max(values)


def max_pool2d(x: np.ndarray, kernel: Any, stride: Any = None, padding: Any = 0) -> np.ndarray:
    """Maximum of each window like ``torch.nn.functional.max_pool2d``, in loops.

    ``stride`` defaults to ``kernel``; padding positions hold ``-inf``; a window
    holding a NaN gives NaN. ``x: (N, C, H, W) -> (N, C, OH, OW)``.
    """
    return _pool(x, kernel, stride, padding, -math.inf, _max)


def avg_pool2d(x: np.ndarray, kernel: Any, stride: Any = None, padding: Any = 0,
               count_include_pad: bool = True) -> np.ndarray:
    """Mean of each window like ``torch.nn.functional.avg_pool2d``, in loops.

    ``stride`` defaults to ``kernel``; padding positions hold ``0``. With
    ``count_include_pad`` the sum is divided by ``kh * kw``; without it, by the
    number of window positions inside ``x``.
    """
    def mean(values: list[float], real: list[bool]) -> float:
        count = len(values) if count_include_pad else sum(real)
        return sum(values) / count

    return _pool(x, kernel, stride, padding, 0.0, mean)


def global_avg_pool2d(x: np.ndarray) -> np.ndarray:
    """Mean over all of ``H`` and ``W`` of each channel: ``(N, C, H, W) -> (N, C)``."""
    n_, c_, h_, w_ = x.shape
    y = np.zeros((n_, c_), dtype=x.dtype)
    for n in range(n_):
        for c in range(c_):
            total = 0.0
            for r in range(h_):
                for col in range(w_):
                    total += float(x[n, c, r, col])
            y[n, c] = total / (h_ * w_)
    return y


def img2col(x: np.ndarray, kernel: Any, stride: Any = 1, dilation: Any = 1) -> np.ndarray:
    """Columns of an (already padded) ``x: (N, C, H, W)``, in loops: ``(N, C * kh * kw, OH * OW)``.

    ``cols[n, c * kh * kw + i * kw + j, oh * OW + ow] = x[n, c, oh * sh + i * dh, ow * sw + j * dw]``.
    """
    k, s, d, _, oh_, ow_ = _geometry(x, kernel, stride, 0, dilation)
    n_, c_, _, _ = x.shape
    cols = np.zeros((n_, c_ * k[0] * k[1], oh_ * ow_), dtype=x.dtype)
    for n in range(n_):
        for c in range(c_):
            for i in range(k[0]):
                for j in range(k[1]):
                    for oh in range(oh_):
                        for ow in range(ow_):
                            cols[n, c * k[0] * k[1] + i * k[1] + j, oh * ow_ + ow] = \
                                x[n, c, oh * s[0] + i * d[0], ow * s[1] + j * d[1]]
    return cols
