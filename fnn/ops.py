"""Image-to-column helpers shared by Conv2D and the pooling layers.

``img2col`` turns every kernel window of an image batch into a column, so that a
convolution becomes one matrix product; ``col2img`` is its adjoint: it adds every
column back onto the pixels its window covers. ``windows`` is the strided view
both are built on, which the pools use directly.

Columns are laid out *batch last*: for ``x: (N, C, H, W)``, kernel ``(kh, kw)``,
stride ``(sh, sw)``, dilation ``(dh, dw)`` and padding ``(top, bottom, left, right)``::

    OH = (H + top + bottom - dh * (kh - 1) - 1) // sh + 1        (likewise OW)
    windows(x, ...)  -> (N, C, kh, kw, OH, OW)     a read-only strided view, no copy
    img2col(x, ...)  -> (C * kh * kw, OH * OW * N) row c*kh*kw + i*kw + j, column (oh*OW + ow)*N + n
    col2img(cols, (N, C, H, W), ...) -> (N, C, H, W)

With the batch innermost, ``w.reshape(F, -1) @ cols`` is one matrix product for the
whole batch, its result ``(F, OH * OW * N)`` is the output in batch-last memory
order, and both the copy into columns and the adding back run along long
contiguous rows of ``N`` values. ``col2img`` loops over the ``kh * kw`` kernel
offsets only.

>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> img2col(x, (2, 2), stride=2)
array([[ 0.,  2.,  8., 10.],
       [ 1.,  3.,  9., 11.],
       [ 4.,  6., 12., 14.],
       [ 5.,  7., 13., 15.]])
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from numpy.lib.stride_tricks import as_strided

from fnn import validate
from fnn.validate import Padding, Pair

__all__ = ["Pair", "Padding", "out_size", "pad2d", "windows", "batch_last_padded", "column_view", "img2col", "col2img",
           "add_columns", "matmul_wide", "matmul_nt", "matmul_last"]


def out_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Number of window positions along one axis of an (already padded) input."""
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def pad2d(x: np.ndarray, padding: Padding, value: float = 0.0) -> np.ndarray:
    """``x: (N, C, H, W)`` padded on the last two axes by ``(top, bottom, left, right)`` with ``value``
    (``x`` itself when there is no padding)."""
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


def batch_last_padded(x: np.ndarray, padding: Padding) -> np.ndarray:
    """``x: (N, C, H, W)`` copied, zero-padded, into batch-last memory order, returned as a
    ``(N, C, H', W')`` view of a C-contiguous ``(C, H', W', N)`` buffer; ``x`` itself when it
    is laid out so already and there is no padding (the caller only reads it)."""
    n, c, h, w = x.shape
    t, b, left, r = padding
    if not any(padding) and x.transpose(1, 2, 3, 0).flags.c_contiguous:
        return x  # batch-last already (a Conv2D's or a pool's output): the windows can be read in place
    buf = np.zeros((c, h + t + b, w + left + r, n), x.dtype) if any(padding) else np.empty((c, h, w, n), x.dtype)
    buf[:, t:t + h, left:left + w] = x.transpose(1, 2, 3, 0)
    return buf.transpose(3, 0, 1, 2)


def _geometry(where: str, kernel: Any, stride: Any, padding: Any, dilation: Any) -> tuple[Pair, Pair, Padding, Pair]:
    """``kernel``, ``stride`` and ``dilation`` (an int or a pair, each ``>= 1``) and ``padding``
    (an int, a pair, ``((top, bottom), (left, right))`` or ``(top, bottom, left, right)``,
    each ``>= 0``) as pairs and ``(top, bottom, left, right)``, checked by :mod:`fnn.validate`."""
    pads = cast(Padding, validate.padding(where, padding, allow_same=False, explicit=True))
    return (validate.pair(where, "kernel", kernel), validate.pair(where, "stride", stride), pads,
            validate.pair(where, "dilation", dilation))


def img2col(x: np.ndarray, kernel: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1) -> np.ndarray:
    """Columns ``(C * kh * kw, OH * OW * N)`` of ``x: (N, C, H, W)`` (see the module docstring).

    Row ``c * kh * kw + i * kw + j`` holds kernel offset ``(i, j)`` of channel ``c``,
    matching a PyTorch-layout weight ``(F, C, kh, kw)`` reshaped to ``(F, C * kh * kw)``.
    ``padding`` is an int, a pair, ``((top, bottom), (left, right))`` or ``(top, bottom, left,
    right)``, checked by :mod:`fnn.validate`. The result is one padded, batch-last copy of
    ``x`` and one copy of its windows.
    """
    k, s, pads, d = _geometry("img2col", kernel, stride, padding, dilation)
    v = column_view(x, k, s, pads, d)
    c, kh, kw, oh, ow, n = v.shape
    return np.ascontiguousarray(v).reshape(c * kh * kw, oh * ow * n)


def column_view(x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding, dilation: Pair) -> np.ndarray:
    """The columns of :func:`img2col` before their copy: every window of ``x: (N, C, H, W)`` padded,
    as a read-only ``(C, kh, kw, OH, OW, N)`` view (geometry already checked: pairs and ``(top,
    bottom, left, right)``) of ``x``'s own memory when it is batch-last and unpadded, else of one
    padded batch-last copy (:func:`batch_last_padded`). Its C-order is the column matrix's."""
    return windows(batch_last_padded(x, padding), kernel, stride, dilation).transpose(1, 2, 3, 4, 5, 0)


def col2img(cols: np.ndarray, shape: tuple[int, int, int, int], kernel: Any, stride: Any = 1, padding: Any = 0,
            dilation: Any = 1) -> np.ndarray:
    """Adjoint of :func:`img2col`: add ``cols`` back into an image of ``shape = (N, C, H, W)``.

    ``cols`` is ``(C * kh * kw, OH * OW * N)`` or ``(C, kh, kw, OH, OW, N)`` (a broadcast
    view is fine). Loops only over the ``kh * kw`` kernel offsets. The result is a
    ``(N, C, H, W)`` view of a fresh batch-last buffer.
    """
    (kh, kw), (sh, sw), (t, b, left, r), (dh, dw) = _geometry("col2img", kernel, stride, padding, dilation)
    n, c, h, w = shape
    hp, wp = h + t + b, w + left + r
    oh, ow = out_size(hp, kh, sh, dh), out_size(wp, kw, sw, dw)
    out = np.zeros((c, hp, wp, n), dtype=cols.dtype)
    add_columns(out, cols.reshape(c, kh, kw, oh, ow, n), 0, (sh, sw), (dh, dw))
    return out[:, t:t + h, left:left + w].transpose(3, 0, 1, 2)


def add_columns(image: np.ndarray, cols: np.ndarray, row: int, stride: Pair, dilation: Pair) -> None:
    """Add ``cols: (C, kh, kw, R, OW, N)``, the columns of output rows ``row:row + R``, onto the
    pixels their windows cover in the padded batch-last ``image: (C, H', W', N)``, in place: the
    loop of :func:`col2img`, over the ``kh * kw`` kernel offsets only (Conv2D's backward calls it
    band by band)."""
    _, kh, kw, r, ow, _ = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    for i in range(kh):
        top = row * sh + i * dh
        for j in range(kw):
            image[:, top:top + sh * (r - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, i, j]


# OpenBLAS multiplies a small matrix (at most _SKINNY elements: the weight of a convolution with few
# channels, LeNet's) by a wide one twice as fast in blocks of _BLOCK columns as in one call (one
# thread, (6, 25) @ (25, 100352): 0.49 against 0.97 ms); larger ones gain nothing from blocks.
_SKINNY = _BLOCK = 4096


def _block(small: int, m: int) -> int:
    """The column block of a product whose small side has ``small`` elements, over ``m`` columns."""
    return _BLOCK if small <= _SKINNY else max(m, 1)


def matmul_wide(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` for ``a: (F, K)`` and a wide ``b: (K, M)``, in column blocks when ``a`` is small;
    written into ``out`` (``(F, M)``, a view is fine) when given."""
    m = b.shape[1]
    out = np.empty((a.shape[0], m), np.result_type(a, b)) if out is None else out
    step = _block(a.size, m)
    for i in range(0, m, step):
        np.matmul(a, b[:, i:i + step], out=out[:, i:i + step])
    return out


def matmul_nt(a: np.ndarray, b: np.ndarray, acc: np.ndarray | None = None) -> np.ndarray:
    """``a @ b.T`` for wide ``a: (K, M)`` and ``b: (F, M)`` (a sum over the long axis ``M``), in
    column blocks when the ``(K, F)`` result is small; added onto ``acc`` when given."""
    m = a.shape[1]
    acc = np.zeros((a.shape[0], b.shape[0]), np.result_type(a, b)) if acc is None else acc
    step = _block(a.shape[0] * b.shape[0], m)
    for i in range(0, m, step):
        acc += a[:, i:i + step] @ b[:, i:i + step].T
    return acc


def matmul_last(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a: (..., K) @ b: (K, P) -> (..., P)`` as one 2-D product over all the leading axes of ``a``
    (numpy's ``@`` runs one product per leading index: ``(32, 64, 512) @ (512, 128)`` a third slower)."""
    if a.ndim <= 2:
        return a @ b
    return (a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1])
