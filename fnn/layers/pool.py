"""Pooling over the spatial axes of ``(N, C, H, W)`` inputs. None of these layers has parameters."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from fnn.core import Layer, Options, check_cotangent, like, make_layer, parameterless
from fnn.layers._spatial import as_padding, as_pair, check_fits, check_nchw
from fnn.ops import Pair, Padding, col2img, pad2d, windows

__all__ = ["MaxPool2D", "AvgPool2D", "GlobalAvgPool2D"]


def _pool_args(name: str, kernel_size: Any, stride: Any, padding: Any) -> tuple[str, Pair, Pair, Padding]:
    extras = [f"{n}={v!r}" for n, v, default in (("stride", stride, None), ("padding", padding, 0)) if v != default]
    kind = f"{name}({', '.join([repr(kernel_size)] + extras)})"
    k = as_pair(kind, "kernel_size", kernel_size)
    s = k if stride is None else as_pair(kind, "stride", stride)
    pads = cast(Padding, as_padding(kind, padding, allow_same=False))
    if pads[0] > k[0] // 2 or pads[1] > k[0] // 2 or pads[2] > k[1] // 2 or pads[3] > k[1] // 2:
        raise ValueError(f"{kind}: padding must be at most half the kernel ({k[0] // 2}, {k[1] // 2}), "
                         f"got {padding!r}")
    return kind, k, s, pads


def _pool_layer(kind: str, k: Pair, s: Pair, pads: Padding, forward: Any) -> Layer:
    """A pooling layer from ``forward(x, oh, ow) -> (y, backward)``; checks shapes and params."""

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
        if len(shape) != 3:
            raise ValueError(f"{kind}: init shape must be (C, H, W), got {shape}")
        check_fits(kind, shape[1:], pads, k, (1, 1), s)
        return {}

    def apply(params: Any, x: np.ndarray, opts: Options) -> Any:
        if not (isinstance(params, dict) and not params):
            raise ValueError(f"{kind}: has no parameters and expects params {{}}, got {params!r:.80}")
        check_nchw(kind, x)
        y, backward = forward(x, *check_fits(kind, x.shape[2:], pads, k, (1, 1), s))
        out = like(y)

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, Any], np.ndarray | None]:
            dy = check_cotangent(kind, dy, out)
            return {}, backward(dy) if need_dx else None

        return y, vjp

    return make_layer(kind, init, apply)


def _crop(xp: np.ndarray, pads: Padding, h: int, w: int) -> np.ndarray:
    return xp[:, :, pads[0]:pads[0] + h, pads[2]:pads[2] + w]


def MaxPool2D(kernel_size: int | Pair, stride: int | Pair | None = None, padding: Any = 0) -> Layer:
    """Maximum over each window: ``(N, C, H, W) -> (N, C, OH, OW)``, as ``torch.nn.MaxPool2d``.

    ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the kernel) pads
    with ``-inf``. The vjp keeps only the arg-max offset of each window (``uint8``
    for kernels up to 16 x 16) and routes ``dy`` to it; on ties the first maximum
    in row-major window order gets the gradient. NaN inputs propagate.

    >>> pool = MaxPool2D(2)
    >>> y, _ = pool.apply({}, np.arange(16.0).reshape(1, 1, 4, 4))
    >>> y[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    kind, k, s, pads = _pool_args("MaxPool2D", kernel_size, stride, padding)
    offsets = k[0] * k[1]
    index_dtype = np.uint8 if offsets <= 256 else np.int32

    def forward(x: np.ndarray, oh: int, ow: int) -> Any:
        n, c, h, w = x.shape
        xp = pad2d(x, pads, value=-np.inf)
        xp_shape = xp.shape
        v = windows(xp, k, s)
        best = v[:, :, 0, 0].copy()
        arg = np.zeros(best.shape, index_dtype)
        has_nan = bool(np.isnan(x).any())
        for off in range(1, offsets):
            cand = v[:, :, off // k[1], off % k[1]]
            better = cand > best
            if has_nan:
                better |= np.isnan(cand) & ~np.isnan(best)
            np.copyto(best, cand, where=better)
            np.copyto(arg, off, where=better)

        def backward(dy: np.ndarray) -> np.ndarray:
            route = arg[:, :, None, None] == np.arange(offsets, dtype=index_dtype).reshape(k)[:, :, None, None]
            dcols = route * dy[:, :, None, None]
            return _crop(col2img(dcols, xp_shape, k, s), pads, h, w)

        return best, backward

    return _pool_layer(kind, k, s, pads, forward)


def AvgPool2D(kernel_size: int | Pair, stride: int | Pair | None = None, padding: Any = 0,
              count_include_pad: bool = True) -> Layer:
    """Mean over each window: ``(N, C, H, W) -> (N, C, OH, OW)``, as ``torch.nn.AvgPool2d``.

    ``stride`` defaults to ``kernel_size``; zero ``padding`` (at most half the kernel)
    counts in the mean when ``count_include_pad`` (PyTorch's default) and is left out
    of it otherwise.
    """
    kind, k, s, pads = _pool_args("AvgPool2D", kernel_size, stride, padding)
    if not count_include_pad:
        kind = kind[:-1] + ", count_include_pad=False)"

    def forward(x: np.ndarray, oh: int, ow: int) -> Any:
        n, c, h, w = x.shape
        xp = pad2d(x, pads)
        xp_shape = xp.shape
        if count_include_pad or not any(pads):
            div: Any = x.dtype.type(k[0] * k[1])
        else:
            ones = pad2d(np.ones((1, 1, h, w), x.dtype), pads)
            div = windows(ones, k, s).sum(axis=(2, 3))
        y = windows(xp, k, s).sum(axis=(2, 3)) / div

        def backward(dy: np.ndarray) -> np.ndarray:
            share = np.broadcast_to((dy / div)[:, :, None, None], (n, c, *k, oh, ow))
            return _crop(col2img(share, xp_shape, k, s), pads, h, w)

        return y, backward

    return _pool_layer(kind, k, s, pads, forward)


def GlobalAvgPool2D() -> Layer:
    """Mean over the whole spatial extent: ``(N, C, H, W) -> (N, C)``."""
    kind = "GlobalAvgPool2D()"

    def forward(x: np.ndarray) -> Any:
        check_nchw(kind, x)
        h, w = x.shape[2:]
        if h * w == 0:
            raise ValueError(f"{kind}: input has an empty spatial extent, shape {x.shape}")
        y = x.mean(axis=(2, 3))
        return y, lambda dy: np.broadcast_to((dy / (h * w))[:, :, None, None], x.shape).copy()

    return parameterless(kind, forward)
