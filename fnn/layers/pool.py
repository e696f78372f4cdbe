"""Pooling over the spatial axes of ``(N, C, H, W)`` inputs. None of these layers has parameters.

Each pool's maths is a pair of module-level functions on checked arguments (a kernel and a
stride as pairs, padding as ``(top, bottom, left, right)``): ``*_forward(x, ...) -> (y, cache)``
and ``*_backward(cache, dy) -> dx``; the constructors validate, build the layer on
:func:`fnn.core.parameterless` and close over them.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import numpy as np

from fnn import validate
from fnn.core import Layer, Options, layer_kind, parameterless
from fnn.layers._spatial import check_fits, check_nchw
from fnn.ops import Padding, Pair, col2img, pad2d, windows

__all__ = [
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "MaxPool2DCache",
    "AvgPool2DCache",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "global_avg_pool2d_forward",
    "global_avg_pool2d_backward",
]


def _zeros(shape: tuple[int, ...], dtype: np.dtype, batch_last: bool, fill: Any = np.zeros) -> np.ndarray:
    """Zeros of ``(N, C, H, W)`` shape, laid out batch-last in memory when ``batch_last``
    (the order Conv2D produces), so the pools read and write along the same strides."""
    if not batch_last:
        return np.asarray(fill(shape, dtype))
    n, c, h, w = shape
    return np.asarray(fill((c, h, w, n), dtype)).transpose(3, 0, 1, 2)


def _empty(shape: tuple[int, ...], dtype: np.dtype, batch_last: bool) -> np.ndarray:
    """:func:`_zeros` without the zeros, for a buffer every element of which will be written."""
    return _zeros(shape, dtype, batch_last, np.empty)


def _max_by_offset(v: np.ndarray, index_dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """The maximum of each window of ``v: (N, C, kh, kw, OH, OW)`` and the row-major offset of its
    first maximum, one kernel offset at a time (NaN propagates to the maximum)."""
    kh, kw = v.shape[2:4]
    first = [v[:, :, off // kw, off % kw] for off in range(min(kh * kw, 2))]
    best = np.maximum(*first) if len(first) > 1 else first[0].copy()
    arg = (first[-1] > first[0]).astype(index_dtype)
    for off in range(2, kh * kw):
        cand = v[:, :, off // kw, off % kw]
        np.copyto(arg, off, where=cand > best)
        np.maximum(best, cand, out=best)
    return best, arg


def _max_2x2(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_max_by_offset` for 2 x 2 windows as a tournament: the maxima of the two rows, then
    of the two winners; the offset of the first maximum is put together from the three
    comparisons in byte arithmetic instead of masked copies (about 1.6x faster)."""
    a, b, c, d = v[:, :, 0, 0], v[:, :, 0, 1], v[:, :, 1, 0], v[:, :, 1, 1]
    top, bottom = np.maximum(a, b), np.maximum(c, d)
    right_top, right_bottom, lower = b > a, d > c, bottom > top
    column = right_top ^ (lower & (right_top ^ right_bottom))  # right_bottom where lower, else right_top
    arg = lower.view(np.uint8) << np.uint8(1)
    arg |= column.view(np.uint8)
    return np.maximum(top, bottom, out=top), arg


def _crop(xp: np.ndarray, pads: Padding, h: int, w: int) -> np.ndarray:
    return xp[:, :, pads[0]:pads[0] + h, pads[2]:pads[2] + w]


class MaxPool2DCache(NamedTuple):
    """What :func:`max_pool2d_backward` needs: the arg-max offset of each window, ``(N, C, OH, OW)``
    (not ``x``), and the geometry."""

    arg: np.ndarray
    padded_shape: tuple[int, ...]
    batch_last: bool
    size: tuple[int, int]
    kernel: Pair
    stride: Pair
    padding: Padding


def max_pool2d_forward(x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding, need_arg: bool = True
                       ) -> tuple[np.ndarray, MaxPool2DCache | None]:
    """``x: (N, C, H, W)`` -> ``y: (N, C, OH, OW)``, the maximum of each window of ``x`` padded
    with ``-inf``, and the cache: the row-major offset of each window's first maximum (of its
    NaN when there is one), ``uint8`` for kernels up to 16 x 16. Without ``need_arg``
    (inference) only the maxima are computed, and the cache is ``None``."""
    xp = pad2d(x, padding, value=-np.inf)
    v = windows(xp, kernel, stride)
    offsets = kernel[0] * kernel[1]
    if not need_arg:
        kw = kernel[1]
        best = np.maximum(v[:, :, 0, 0], v[:, :, 1 // kw, 1 % kw]) if offsets > 1 else v[:, :, 0, 0].copy()
        for off in range(2, offsets):
            np.maximum(best, v[:, :, off // kernel[1], off % kernel[1]], out=best)  # propagates NaN
        return best, None
    if kernel == stride == (2, 2):
        best, arg = _max_2x2(v)
    else:
        best, arg = _max_by_offset(v, np.uint8 if offsets <= 256 else np.int32)
    if np.isnan(best).any():  # route to the NaN, as PyTorch does (its last one in a window)
        for off in range(offsets):
            np.copyto(arg, off, where=np.isnan(v[:, :, off // kernel[1], off % kernel[1]]))
    batch_last = xp.transpose(1, 2, 3, 0).flags.c_contiguous
    return best, MaxPool2DCache(arg, xp.shape, batch_last, x.shape[2:], kernel, stride, padding)


def max_pool2d_backward(cache: MaxPool2DCache, dy: np.ndarray) -> np.ndarray:
    """``dy: (N, C, OH, OW)`` -> ``dx: (N, C, H, W)``: each window's ``dy`` routed to its arg-max
    (summed where windows overlap), laid out in memory as ``x`` was."""
    arg, padded_shape, batch_last, (h, w), k, s, pads = cache
    oh, ow = arg.shape[2:]
    overlapping = s[0] < k[0] or s[1] < k[1]
    # Non-overlapping windows that tile the whole input write every pixel of dx: no zeros needed.
    tiled = k == s and (k[0] * oh, k[1] * ow) == padded_shape[2:]
    dxp = (_empty if tiled else _zeros)(padded_shape, dy.dtype, batch_last)
    for off in range(k[0] * k[1]):
        i, j = divmod(off, k[1])
        part = dxp[:, :, i:i + s[0] * (oh - 1) + 1:s[0], j:j + s[1] * (ow - 1) + 1:s[1]]
        if overlapping:
            np.add(part, dy, out=part, where=arg == off)
        else:
            np.multiply(dy, arg == off, out=part)
    return _crop(dxp, pads, h, w)


class AvgPool2DCache(NamedTuple):
    """What :func:`avg_pool2d_backward` needs: each window's divisor (a scalar, or
    ``(1, 1, OH, OW)`` counts without the padding) and the geometry; not ``x``."""

    div: Any
    x_shape: tuple[int, int, int, int]
    kernel: Pair
    stride: Pair
    padding: Padding


def avg_pool2d_forward(x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding, count_include_pad: bool = True
                       ) -> tuple[np.ndarray, AvgPool2DCache]:
    """``x: (N, C, H, W)`` -> ``y: (N, C, OH, OW)``, the mean of each window of ``x`` zero-padded
    (the padding left out of the count unless ``count_include_pad``), and the cache."""
    h, w = x.shape[2:]
    xp = pad2d(x, padding)
    if count_include_pad or not any(padding):
        div: Any = x.dtype.type(kernel[0] * kernel[1])
    else:
        ones = pad2d(np.ones((1, 1, h, w), x.dtype), padding)
        div = windows(ones, kernel, stride).sum(axis=(2, 3))
    v = windows(xp, kernel, stride)
    total = v[:, :, 0, 0].copy()
    for off in range(1, kernel[0] * kernel[1]):
        total += v[:, :, off // kernel[1], off % kernel[1]]
    total /= div  # in place: total is this call's own sum
    return total, AvgPool2DCache(div, x.shape, kernel, stride, padding)


def avg_pool2d_backward(cache: AvgPool2DCache, dy: np.ndarray) -> np.ndarray:
    """``dy: (N, C, OH, OW)`` -> ``dx: (N, C, H, W)``: each window's share of ``dy`` added back
    onto its pixels (:func:`fnn.ops.col2img` of a broadcast view)."""
    div, x_shape, k, s, pads = cache
    n, c, oh, ow = dy.shape
    share = (dy / div).transpose(1, 2, 3, 0)[:, None, None]  # (C, 1, 1, OH, OW, N)
    return col2img(np.broadcast_to(share, (c, *k, oh, ow, n)), x_shape, k, s, pads)


def global_avg_pool2d_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x: (N, C, H, W)`` with ``H * W > 0`` -> ``y: (N, C)``, the spatial mean, and the cache:
    the shape of ``x`` (not ``x``)."""
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool2d_backward(x_shape: tuple[int, ...], dy: np.ndarray) -> np.ndarray:
    """``dy: (N, C)`` -> ``dx`` of ``x_shape = (N, C, H, W)``: ``dy / (H * W)`` at every pixel."""
    return np.broadcast_to((dy / (x_shape[2] * x_shape[3]))[:, :, None, None], x_shape).copy()


def _pool_args(name: str, kernel_size: Any, stride: Any, padding: Any,
               options: tuple[tuple[str, Any, Any], ...] = ()) -> tuple[str, Pair, Pair, Padding]:
    """The kind, and the kernel, stride and padding checked by :mod:`fnn.validate`; the padding
    must also be at most half the kernel on each side."""
    kind = layer_kind(name, [repr(kernel_size)], (("stride", stride, None), ("padding", padding, 0), *options))
    k = validate.pair(kind, "kernel_size", kernel_size)
    s = k if stride is None else validate.pair(kind, "stride", stride)
    pads = cast(Padding, validate.padding(kind, padding, allow_same=False))
    if pads[0] > k[0] // 2 or pads[1] > k[0] // 2 or pads[2] > k[1] // 2 or pads[3] > k[1] // 2:
        raise ValueError(f"{kind}: padding must be at most half the kernel ({k[0] // 2}, {k[1] // 2}), "
                         f"got {padding!r}")
    return kind, k, s, pads


def _pool_layer(kind: str, k: Pair, s: Pair, pads: Padding, forward: Any, backward: Any) -> Layer:
    """A :func:`fnn.core.parameterless` layer from ``forward(x) -> (y, cache)`` and
    ``backward(cache, dy) -> dx`` that checks the input is ``(N, C, H, W)`` and the kernel fits,
    in ``apply`` and, from the shape of one example, in ``init``."""

    def pool(x: np.ndarray, opts: Options) -> tuple[np.ndarray, Any]:
        check_nchw(kind, x)
        check_fits(kind, x.shape[2:], pads, k, (1, 1), s)
        y, cache = forward(x, opts.need_vjp)
        return y, lambda dy: backward(cache, dy)  # a function, not a partial: fnn.summary reads its closure

    layer = parameterless(kind, pool, with_options=True)

    def init(key: Any, shape: Any, dtype: Any = np.float32) -> dict[str, Any]:
        params = layer.init(key, shape, dtype)  # checks the key, the shape and the dtype
        shape = validate.example_shape(f"{kind}.init", shape)
        if len(shape) != 3:
            raise ValueError(f"{kind}: init shape must be (C, H, W), got {shape}")
        check_fits(kind, shape[1:], pads, k, (1, 1), s)
        return params

    init.__doc__ = layer.init.__doc__
    return Layer(init, layer.apply, kind)


def MaxPool2D(kernel_size: int | Pair, stride: int | Pair | None = None, padding: Any = 0) -> Layer:
    """Maximum over each window: ``(N, C, H, W) -> (N, C, OH, OW)``, as ``torch.nn.MaxPool2d``.

    ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the kernel) pads
    with ``-inf``. The vjp keeps only the arg-max offset of each window (``uint8``
    for kernels up to 16 x 16) and routes ``dy`` to it; on ties the first maximum
    in row-major window order gets the gradient. NaN inputs propagate to the output
    (and its gradient goes to the NaN).

    >>> pool = MaxPool2D(2)
    >>> y, _ = pool.apply({}, np.arange(16.0).reshape(1, 1, 4, 4))
    >>> y[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    kind, k, s, pads = _pool_args("MaxPool2D", kernel_size, stride, padding)
    return _pool_layer(kind, k, s, pads, lambda x, need_vjp: max_pool2d_forward(x, k, s, pads, need_vjp),
                       max_pool2d_backward)


def AvgPool2D(kernel_size: int | Pair, stride: int | Pair | None = None, padding: Any = 0,
              count_include_pad: bool = True) -> Layer:
    """Mean over each window: ``(N, C, H, W) -> (N, C, OH, OW)``, as ``torch.nn.AvgPool2d``.

    ``stride`` defaults to ``kernel_size``; zero ``padding`` (at most half the kernel)
    counts in the mean when ``count_include_pad`` (PyTorch's default) and is left out
    of it otherwise. The vjp keeps the shape of ``x``, not ``x``.

    >>> y, _ = AvgPool2D(2).apply({}, np.arange(16.0).reshape(1, 1, 4, 4))
    >>> y[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    kind, k, s, pads = _pool_args("AvgPool2D", kernel_size, stride, padding,
                                  (("count_include_pad", count_include_pad, True),))
    include_pad = validate.boolean(kind, "count_include_pad", count_include_pad)
    return _pool_layer(kind, k, s, pads, lambda x, need_vjp: avg_pool2d_forward(x, k, s, pads, include_pad),
                       avg_pool2d_backward)


def GlobalAvgPool2D() -> Layer:
    """Mean over the whole spatial extent: ``(N, C, H, W) -> (N, C)``. The vjp keeps the shape
    of ``x``, not ``x``.

    >>> y, _ = GlobalAvgPool2D().apply({}, np.arange(8.0).reshape(1, 2, 2, 2))
    >>> y
    array([[1.5, 5.5]])
    """
    kind = "GlobalAvgPool2D()"

    def forward(x: np.ndarray) -> tuple[np.ndarray, Any]:
        check_nchw(kind, x)
        if x.shape[2] * x.shape[3] == 0:
            raise ValueError(f"{kind}: input has an empty spatial extent, shape {x.shape}")
        y, x_shape = global_avg_pool2d_forward(x)
        return y, lambda dy: global_avg_pool2d_backward(x_shape, dy)

    return parameterless(kind, forward)
