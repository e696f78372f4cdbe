"""Image-to-column helpers shared by Conv2D and the pooling layers.

``img2col`` turns every kernel window of an image batch into a column, so a
convolution becomes one matrix product; ``col2img`` is its adjoint: it adds
every column back onto the pixels its window covers. Both work on an input that
is already padded (see :func:`pad2d`).

Shapes, for ``x: (N, C, H, W)``, kernel ``(kh, kw)``, stride ``(sh, sw)`` and
dilation ``(dh, dw)``::

    OH = (H - dh * (kh - 1) - 1) // sh + 1        (likewise OW)
    windows(x, ...)  -> (N, C, kh, kw, OH, OW)     a strided view, no copy
    img2col(x, ...)  -> (N, C * kh * kw, OH * OW)  one copy of that view
    col2img(cols, (N, C, H, W), ...) -> (N, C, H, W)

>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> img2col(x, (2, 2), stride=2)[0]
array([[ 0.,  2.,  8., 10.],
       [ 1.,  3.,  9., 11.],
       [ 4.,  6., 12., 14.],
       [ 5.,  7., 13., 15.]])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["Pair", "Padding", "out_size", "pad2d", "windows", "img2col", "col2img"]

Pair = tuple[int, int]
Padding = tuple[int, int, int, int]
"""Padding as ``(top, bottom, left, right)``."""


def out_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Number of window positions along one axis of an (already padded) input."""
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def pad2d(x: np.ndarray, padding: Padding, value: float = 0.0) -> np.ndarray:
    """``x: (N, C, H, W)`` padded on the last two axes by ``(top, bottom, left, right)`` with ``value``."""
    t, b, left, r = padding
    if not (t or b or left or r):
        return x
    out = np.full((*x.shape[:2], x.shape[2] + t + b, x.shape[3] + left + r), value, dtype=x.dtype)
    out[:, :, t:t + x.shape[2], left:left + x.shape[3]] = x
    return out


def windows(x: np.ndarray, kernel: Pair, stride: Pair = (1, 1), dilation: Pair = (1, 1)) -> np.ndarray:
    """Read-only strided view ``(N, C, kh, kw, OH, OW)`` of every kernel window of ``x: (N, C, H, W)``."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, dh), out_size(w, kw, sw, dw)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"windows: kernel {kernel} with dilation {dilation} does not fit input {(h, w)}")
    s = x.strides
    return as_strided(x, (n, c, kh, kw, oh, ow), (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw),
                      writeable=False)


def img2col(x: np.ndarray, kernel: Any, stride: Any = 1, dilation: Any = 1) -> np.ndarray:
    """Columns ``(N, C * kh * kw, OH * OW)`` of ``x: (N, C, H, W)`` (one copy of :func:`windows`).

    Row ``c * kh * kw + i * kw + j`` holds kernel offset ``(i, j)`` of channel ``c``,
    matching a PyTorch-layout weight ``(F, C, kh, kw)`` reshaped to ``(F, C * kh * kw)``.
    """
    k, s, d = _pair(kernel), _pair(stride), _pair(dilation)
    v = windows(x, k, s, d)
    n, c, kh, kw, oh, ow = v.shape
    return v.reshape(n, c * kh * kw, oh * ow)


def col2img(cols: np.ndarray, shape: tuple[int, int, int, int], kernel: Any, stride: Any = 1,
            dilation: Any = 1) -> np.ndarray:
    """Adjoint of :func:`img2col`: sum ``cols`` back into an image of ``shape = (N, C, H, W)``.

    ``cols`` may be ``(N, C * kh * kw, OH * OW)`` or ``(N, C, kh, kw, OH, OW)``
    (a broadcast view is fine). Loops only over the ``kh * kw`` kernel offsets.
    """
    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel), _pair(stride), _pair(dilation)
    n, c, h, w = shape
    oh, ow = out_size(h, kh, sh, dh), out_size(w, kw, sw, dw)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    out = np.zeros(shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    return out


def _pair(v: Any) -> Pair:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)
