"""2-D convolution by img2col and matrix products (NCHW, PyTorch's weight layout).

The maths is module-level, on checked arguments (pairs, explicit ``(top, bottom, left,
right)`` padding): :func:`conv2d_forward` ``-> (y, cache)``, :func:`conv2d_backward`
``(cache, dy, need_dx) -> (grads, dx)``, :func:`conv2d_sq_norms` and
:func:`conv2d_dx_flipped`; :func:`Conv2D` validates its arguments and closes over them.

Both directions walk the output in *bands* of whole output rows, each band's columns
``(C * kh * kw, rows * OW * N)`` a quarter of the whole column matrix (but 256 KiB to 2 MiB,
and at least one row): the forward fills a band of columns and multiplies it while it is in
cache, the backward accumulates ``dw`` band by band and adds each band's ``w.T @ dy`` back
onto the image. Only the column matrix the vjp keeps with ``recompute=False`` is ever whole
(by default, ``recompute=True``, and in inference the vjp keeps none); every other column
matrix exists one band at a time (but ``dx_method="flipped"``'s, over the dilated ``dy``).
The kept matrix is stored band after band, each band's block contiguous, so that a kept band
and a rebuilt one (``recompute``, inference) have one layout and give bitwise the same
products.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn import validate
from fnn.core import Layer, Options, check_cotangent, check_params, layer_kind, like, make_layer, vjp_with
from fnn.layers._spatial import check_fits, check_nchw, resolve_padding
from fnn.ops import Padding, Pair, add_columns, column_view, img2col, matmul_nt, matmul_wide

__all__ = ["Conv2D", "Conv2DCache", "conv2d_forward", "conv2d_backward", "conv2d_sq_norms", "conv2d_dx_flipped",
           "DX_METHODS"]

DX_METHODS = ("col2img", "flipped")
"""The ways ``Conv2D(dx_method=...)`` computes the input gradient: scatter the column gradient back
with ``col2img``, or convolve ``dy`` with the flipped kernel (:func:`conv2d_dx_flipped`)."""

# A band of columns holds a quarter of the whole column matrix, but at least _BAND_MIN bytes
# (fewer, larger numpy calls on small inputs) and at most _BAND_MAX (about one core's L2 cache
# here, so that a band is still in cache when its product reads it), and at least one output row.
_BAND_MIN, _BAND_MAX = 1 << 18, 2 << 20


class Conv2DCache(NamedTuple):
    """What the backward needs: ``kept``, the column matrix (not the padded input) stored band
    after band (flat; each band's ``(C * kh * kw, rows * OW * N)`` block C-contiguous, as the
    module docstring says), or with ``recompute`` the input ``x`` to rebuild the bands from;
    ``w: (F, C, kh, kw)``, the shapes of ``x`` and of the output, and the geometry."""

    kept: np.ndarray
    recompute: bool
    w: np.ndarray
    bias: bool
    x_shape: tuple[int, int, int, int]
    out_hw: tuple[int, int]
    kernel: Pair
    stride: Pair
    padding: Padding
    dilation: Pair


def _column_source(x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding, dilation: Pair
                   ) -> tuple[tuple[int, ...], np.ndarray | None, np.ndarray | None]:
    """``(shape6, cols, v)`` for the columns of ``x``: ``shape6`` is ``(C, kh, kw, OH, OW, N)``;
    ``cols`` the whole column matrix ``(C * kh * kw, OH * OW * N)`` as a view of ``x``'s memory
    when it is laid out so already (a 1 x 1 kernel at stride 1 over a batch-last input), else
    ``None``; ``v`` the window view (:func:`fnn.ops.column_view`) the bands are copied from
    when there is no such ``cols``, else ``None``."""
    v = column_view(x, kernel, stride, padding, dilation)
    if v.flags.c_contiguous:
        return v.shape, v.reshape(v.shape[0] * v.shape[1] * v.shape[2], -1), None
    return v.shape, None, v


def _band_rows(shape6: tuple[int, ...], itemsize: int) -> int:
    """Output rows per band of a ``(C, kh, kw, OH, OW, N)`` column matrix (see ``_BAND_MIN``)."""
    c, kh, kw, oh, ow, n = shape6
    row = c * kh * kw * ow * n * itemsize
    return max(1, min(_BAND_MAX, max(_BAND_MIN, row * oh // 4)) // max(1, row))


def _buffer(shape6: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Flat scratch for the largest band's columns."""
    c, kh, kw, oh, ow, n = shape6
    return np.empty(c * kh * kw * min(oh, _band_rows(shape6, dtype.itemsize)) * ow * n, dtype)


def _bands(shape6: tuple[int, ...], dtype: np.dtype, cols: np.ndarray | None, v: np.ndarray | None
           ) -> Iterator[tuple[int, int, np.ndarray, bool]]:
    """``(a, b, band, scratch)`` for the bands of output rows ``a:b`` in order, ``band`` their columns
    ``(C * kh * kw, (b - a) * OW * N)``, filled from the window view ``v`` unless it is ``None``;
    ``scratch`` when ``band`` may be overwritten once used.

    ``cols`` is the whole column matrix: flat, band after band, each band's block C-contiguous
    (then every band has the layout of a band of scratch, and the products give bitwise the
    same results from either), or a ``(C * kh * kw, OH * OW * N)`` view of the input (no copy:
    the bands are its slices). Without ``cols`` the bands share one scratch buffer.
    """
    c, kh, kw, oh, ow, n = shape6
    rows, k, m = _band_rows(shape6, dtype.itemsize), c * kh * kw, ow * n
    flat = cols if cols is not None else _buffer(shape6, dtype)
    for a in range(0, oh, rows):
        b = min(a + rows, oh)
        if flat.ndim == 2:
            yield a, b, flat[:, a * m:b * m], False
            continue
        start = k * a * m if cols is not None else 0
        band = flat[start:start + k * (b - a) * m].reshape(k, (b - a) * m)
        if v is not None:
            np.copyto(band.reshape(c, kh, kw, b - a, ow, n), v[:, :, :, a:b])
        yield a, b, band, cols is None


def conv2d_forward(params: dict[str, np.ndarray], x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding,
                   dilation: Pair, recompute: bool = True) -> tuple[np.ndarray, Conv2DCache]:
    """``x: (N, C, H, W)``, params ``{"w": (F, C, kh, kw), "b": (F,)}`` (``"b"`` optional) ->
    ``y: (N, F, OH, OW)`` (a view of a batch-last buffer) and the cache.

    Band by band, the padded input's windows are copied into columns and multiplied by ``w``.
    The cache keeps the whole column matrix, or with ``recompute`` (as in inference, where the
    cache is dropped) a reference to ``x``: then the columns exist one band at a time.
    """
    w = params["w"]
    f = w.shape[0]
    shape6, cols, source = _column_source(x, kernel, stride, padding, dilation)
    c, kh, kw, oh, ow, n = shape6
    if cols is None and not recompute:
        cols = np.empty(c * kh * kw * oh * ow * n, x.dtype)  # the columns the vjp keeps, filled band by band
    y_t, w2, m = np.empty((f, oh * ow * n), x.dtype), w.reshape(f, -1), ow * n
    for a, b, band, _ in _bands(shape6, x.dtype, cols, source):
        out = y_t[:, a * m:b * m]
        matmul_wide(w2, band, out)
        if "b" in params:
            out += params["b"][:, None]
    y = y_t.reshape(f, oh, ow, n).transpose(3, 0, 1, 2)  # batch-last memory, (N, F, OH, OW) view
    kept = x if recompute or cols is None else cols
    return y, Conv2DCache(kept, recompute, w, "b" in params, x.shape, (oh, ow), kernel, stride, padding, dilation)


def _columns(cache: Conv2DCache, shape6: tuple[int, ...], dtype: np.dtype
             ) -> Iterator[tuple[int, int, np.ndarray, bool]]:
    """The bands of the column matrix (see :func:`_bands`): kept, or rebuilt from the kept input."""
    if not cache.recompute:
        return _bands(shape6, dtype, cache.kept, None)
    _, cols, source = _column_source(cache.kept, cache.kernel, cache.stride, cache.padding, cache.dilation)
    return _bands(shape6, dtype, cols, source)


def _batch_last(cache: Conv2DCache, dy: np.ndarray) -> np.ndarray:
    """``dy: (N, F, OH, OW)`` as ``(F, OH * OW * N)``: free when it is batch-last already, as ``y`` is."""
    (oh, ow), n = cache.out_hw, cache.x_shape[0]
    return dy.transpose(1, 2, 3, 0).reshape(len(cache.w), oh * ow * n)


def conv2d_backward(cache: Conv2DCache, dy: np.ndarray, need_dx: bool = True, dx_method: str = "col2img"
                    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``dy: (N, F, OH, OW)`` -> ``({"w": (F, C, kh, kw), "b": (F,)}, dx: (N, C, H, W))``.

    Band by band: ``dw += dy @ cols.T`` and, with ``dx_method="col2img"``, ``w.T @ dy`` added
    back onto the image (``dx`` is ``None`` unless ``need_dx``); ``dx_method="flipped"`` uses
    :func:`conv2d_dx_flipped` instead. The bands of ``recompute`` are rebuilt from ``x``.
    """
    _, _, w, bias, x_shape, (oh, ow), k, s, pads, d = cache
    n, c, h, wd = x_shape
    f, dtype = len(w), dy.dtype
    shape6 = (c, k[0], k[1], oh, ow, n)
    dy_t, w2, m = _batch_last(cache, dy), w.reshape(f, -1), ow * n
    image = scratch = None
    if need_dx and dx_method == "col2img":
        image = np.zeros((c, h + pads[0] + pads[1], wd + pads[2] + pads[3], n), dtype)
    dw_t = np.zeros((c * k[0] * k[1], f), dtype)
    for a, b, band, spare in _columns(cache, shape6, dtype):
        dy_band = dy_t[:, a * m:b * m]
        matmul_nt(band, dy_band, dw_t)
        if image is not None:
            if not spare:  # the band's columns are kept (or x's own memory): w.T @ dy needs its own scratch
                scratch = _buffer(shape6, dtype) if scratch is None else scratch
                band = scratch[:band.size].reshape(band.shape)
            matmul_wide(w2.T, dy_band, band)
            add_columns(image, band.reshape(c, k[0], k[1], b - a, ow, n), a, s, d)
    grads = {"w": np.ascontiguousarray(dw_t.T).reshape(w.shape)}
    if bias:
        grads["b"] = dy_t.sum(axis=1)
    if not need_dx:
        return grads, None
    if image is not None:
        return grads, image[:, pads[0]:pads[0] + h, pads[2]:pads[2] + wd].transpose(3, 0, 1, 2)
    return grads, conv2d_dx_flipped(dy_t.reshape(f, oh, ow, n), w, x_shape, k, s, pads, d)


def conv2d_sq_norms(cache: Conv2DCache, dy: np.ndarray) -> np.ndarray:
    """``(N,)``: each example's squared norm of ``dparams``, from the per-example products
    ``dy_n @ cols_n.T`` (one ``(F, C * kh * kw)`` matrix per example), summed band by band."""
    (oh, ow), (n, c), f, k = cache.out_hw, cache.x_shape[:2], len(cache.w), cache.kernel
    dy_t, m = _batch_last(cache, dy), ow * n
    per = np.zeros((n, f, c * k[0] * k[1]), dy.dtype)
    for a, b, band, _ in _columns(cache, (c, k[0], k[1], oh, ow, n), dy.dtype):
        dy_band = dy_t[:, a * m:b * m].reshape(f, (b - a) * ow, n)
        per += np.matmul(dy_band.transpose(2, 0, 1), band.reshape(len(band), (b - a) * ow, n).transpose(2, 1, 0))
    sq = np.einsum("nfk,nfk->n", per, per)
    if cache.bias:
        db = dy_t.reshape(f, oh * ow, n).sum(axis=1)
        sq = sq + np.einsum("fn,fn->n", db, db)
    return sq


def conv2d_dx_flipped(dy_t: np.ndarray, w: np.ndarray, shape: tuple[int, ...], k: Pair, s: Pair, pads: Padding,
                      d: Pair) -> np.ndarray:
    """``dx`` as a stride-1 convolution of the stride-dilated, zero-padded ``dy`` with the
    rotated kernel ``w[:, :, ::-1, ::-1]`` whose channel axes are swapped.

    ``dy_t: (F, OH, OW, N)`` batch-last; ``shape`` is ``x``'s ``(N, C, H, W)``.
    """
    f, oh, ow, n = dy_t.shape
    c, hp, wp = shape[1], shape[2] + pads[0] + pads[1], shape[3] + pads[2] + pads[3]
    (kh, kw), (sh, sw), (dh, dw) = k, s, d
    ph, pw = dh * (kh - 1), dw * (kw - 1)
    # Room for a full convolution whose output is exactly the padded input's size.
    big = np.zeros((f, hp + ph, wp + pw, n), dy_t.dtype)
    big[:, ph:ph + sh * (oh - 1) + 1:sh, pw:pw + sw * (ow - 1) + 1:sw] = dy_t
    rotated = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, -1)
    dxp = (rotated @ img2col(big.transpose(3, 0, 1, 2), k, 1, 0, d)).reshape(c, hp, wp, n)
    return dxp[:, pads[0]:pads[0] + shape[2], pads[2]:pads[2] + shape[3]].transpose(3, 0, 1, 2)


def Conv2D(out_channels: int, kernel_size: int | Pair, stride: int | Pair = 1, padding: Any = 0,
           dilation: int | Pair = 1, bias: bool = True, dx_method: str = "col2img", recompute: bool = True,
           w_init: _init.Initializer = _init.fan_in_uniform, b_init: _init.Initializer = _init.zeros) -> Layer:
    """2-D cross-correlation, as ``torch.nn.Conv2d``.

    ``x: (N, C, H, W) -> y: (N, out_channels, OH, OW)`` with
    ``OH = (H + pad_top + pad_bottom - dilation * (kh - 1) - 1) // stride + 1``.
    Params ``{"w": (out_channels, C, kh, kw), "b": (out_channels,)}`` (PyTorch's layout;
    no ``"b"`` when ``bias=False``). ``kernel_size``, ``stride`` and ``dilation`` take an
    int or a pair; ``padding`` an int, a pair, ``((top, bottom), (left, right))``,
    ``"valid"`` (no padding) or ``"same"`` (``ceil(H / stride)`` outputs; an odd extra
    row/column goes at the bottom/right, as in PyTorch, TensorFlow and JAX).
    Default init: ``w`` from :func:`fnn.init.fan_in_uniform` (PyTorch's Kaiming-uniform
    default, bound ``1 / sqrt(C * kh * kw)``), ``b`` zeros.

    The maths is img2col and matrix products, in bands of output rows (each band's column
    matrix ``(C * kh * kw, rows * OW * N)`` a quarter of the whole, 256 KiB to 2 MiB, at least
    one row), so that a band is still in cache when its product reads it. By default
    (``recompute=True``) the vjp keeps a reference to ``x`` and rebuilds the columns band by
    band when it runs, so no column matrix is ever whole: on this project's machines that is
    both lighter (``kh * kw`` times less kept for stride 1) and faster than keeping the columns
    (LeNet-5's and a 3 x 3 convnet's train steps 7-15 % faster; ``docs/conv.md``).
    ``recompute=False`` copies the columns once in the forward and keeps the whole matrix for
    the vjp, one img2col per step fewer; the results are bitwise the same. ``dx_method``
    chooses how ``dx`` is computed: ``"col2img"`` (default) multiplies by ``w`` and adds the
    columns back onto the image, looping over the ``kh * kw`` kernel offsets; ``"flipped"``
    convolves the stride-dilated, zero-padded ``dy`` with the 180°-rotated kernel, input and
    output channels swapped (its column matrix is whole). Both give the same result; see
    ``docs/conv.md`` for when each is faster. Inference (``need_vjp=False``) keeps nothing.
    The vjp has ``sq_norms`` (see :mod:`fnn.per_example`).

    >>> conv = Conv2D(4, 3, padding="same")
    >>> params = conv.init(fnn.random.key(0), (2, 8, 8))
    >>> y, vjp = conv.apply(params, np.ones((5, 2, 8, 8), np.float32))
    >>> y.shape
    (5, 4, 8, 8)
    """
    options = (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1), ("bias", bias, True),
               ("dx_method", dx_method, "col2img"), ("recompute", recompute, True))
    f_out = validate.integer(layer_kind("Conv2D", [repr(out_channels), repr(kernel_size)], options),
                             "out_channels", out_channels, low=1)
    kind = layer_kind("Conv2D", [str(f_out), repr(kernel_size)], options)
    k = validate.pair(kind, "kernel_size", kernel_size)
    s = validate.pair(kind, "stride", stride)
    d = validate.pair(kind, "dilation", dilation)
    pad = validate.padding(kind, padding)
    bias = validate.boolean(kind, "bias", bias)
    dx_method = validate.choice(kind, "dx_method", dx_method, DX_METHODS)
    recompute = validate.boolean(kind, "recompute", recompute)

    def init(key: _random.Key, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
        if len(shape) != 3:
            raise ValueError(f"{kind}: init shape must be (C, H, W), got {shape}")
        c, h, w = shape
        if c == 0:
            raise ValueError(f"{kind}: input must have at least one channel, got shape {shape}")
        check_fits(kind, (h, w), resolve_padding(pad, (h, w), k, s, d), k, d, s)
        kw_, kb = _random.split(key, 2)
        params = {"w": w_init(kw_, (f_out, c, *k), dtype)}
        if bias:
            params["b"] = b_init(kb, (f_out,), dtype)
        return params

    def apply(params: dict[str, np.ndarray], x: np.ndarray, opts: Options) -> Any:
        w = params.get("w") if isinstance(params, dict) else None
        check_nchw(kind, x, w.shape[1] if isinstance(w, np.ndarray) and w.ndim == 4 else None)
        check_params(kind, params, {"w": (f_out, x.shape[1], *k), **({"b": (f_out,)} if bias else {})}, x.dtype)
        pads = resolve_padding(pad, x.shape[2:], k, s, d)
        check_fits(kind, x.shape[2:], pads, k, d, s)
        # Inference keeps nothing, so it never builds the whole column matrix either.
        y, cache = conv2d_forward(params, x, k, s, pads, d, recompute or not opts.need_vjp)
        out = like(y)  # the vjp keeps the shape of x and y, not x

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
            return conv2d_backward(cache, check_cotangent(kind, dy, out), need_dx, dx_method)

        return y, vjp_with(vjp, sq_norms=lambda dy: conv2d_sq_norms(cache, check_cotangent(kind, dy, out)))

    return make_layer(kind, init, apply)
