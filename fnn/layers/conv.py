"""2-D convolution by img2col and one matrix product (NCHW, PyTorch's weight layout).

The maths is module-level, on checked arguments (pairs, explicit ``(top, bottom, left,
right)`` padding): :func:`conv2d_forward` ``-> (y, cache)``, :func:`conv2d_backward`
``(cache, dy, need_dx) -> (grads, dx)``, :func:`conv2d_sq_norms` and
:func:`conv2d_dx_flipped`; :func:`Conv2D` validates its arguments and closes over them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn import validate
from fnn.core import Layer, Options, check_cotangent, check_params, layer_kind, like, make_layer, vjp_with
from fnn.layers._spatial import check_fits, check_nchw, resolve_padding
from fnn.ops import Padding, Pair, col2img, img2col, matmul_nt, matmul_wide, out_size

__all__ = ["Conv2D", "Conv2DCache", "conv2d_forward", "conv2d_backward", "conv2d_sq_norms", "conv2d_dx_flipped",
           "DX_METHODS"]

DX_METHODS = ("col2img", "flipped")


class Conv2DCache(NamedTuple):
    """What the backward needs: the column matrix ``(C * kh * kw, OH * OW * N)`` (not the padded
    input), or with ``recompute`` the input ``x`` to rebuild it from; ``w: (F, C, kh, kw)``,
    the shapes of ``x`` and of the output, and the geometry."""

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


def conv2d_forward(params: dict[str, np.ndarray], x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding,
                   dilation: Pair, recompute: bool = False) -> tuple[np.ndarray, Conv2DCache]:
    """``x: (N, C, H, W)``, params ``{"w": (F, C, kh, kw), "b": (F,)}`` (``"b"`` optional) ->
    ``y: (N, F, OH, OW)`` (a view of a batch-last buffer) and the cache.

    One :func:`fnn.ops.img2col` copy of the padded input's windows, then one matrix product.
    The cache keeps the columns, or with ``recompute`` a reference to ``x`` instead.
    """
    w = params["w"]
    f, n = w.shape[0], x.shape[0]
    oh = out_size(x.shape[2] + padding[0] + padding[1], kernel[0], stride[0], dilation[0])
    ow = out_size(x.shape[3] + padding[2] + padding[3], kernel[1], stride[1], dilation[1])
    cols = img2col(x, kernel, stride, padding, dilation)  # (C * kh * kw, OH * OW * N)
    y_t = matmul_wide(w.reshape(f, -1), cols)
    if "b" in params:
        y_t += params["b"][:, None]
    y = y_t.reshape(f, oh, ow, n).transpose(3, 0, 1, 2)  # batch-last memory, (N, F, OH, OW) view
    return y, Conv2DCache(x if recompute else cols, recompute, w, "b" in params, x.shape, (oh, ow), kernel, stride,
                          padding, dilation)


def _columns(cache: Conv2DCache) -> np.ndarray:
    """The column matrix: kept, or rebuilt from the kept input (``recompute``)."""
    if not cache.recompute:
        return cache.kept
    return img2col(cache.kept, cache.kernel, cache.stride, cache.padding, cache.dilation)


def _batch_last(cache: Conv2DCache, dy: np.ndarray) -> np.ndarray:
    """``dy: (N, F, OH, OW)`` as ``(F, OH * OW * N)``: free when it is batch-last already, as ``y`` is."""
    (oh, ow), n = cache.out_hw, cache.x_shape[0]
    return dy.transpose(1, 2, 3, 0).reshape(len(cache.w), oh * ow * n)


def conv2d_backward(cache: Conv2DCache, dy: np.ndarray, need_dx: bool = True, dx_method: str = "col2img"
                    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``dy: (N, F, OH, OW)`` -> ``({"w": (F, C, kh, kw), "b": (F,)}, dx: (N, C, H, W))``.

    ``dw`` is ``dy @ cols.T``; ``dx`` (``None`` unless ``need_dx``) is ``col2img(w.T @ dy)``
    with ``dx_method="col2img"``, else :func:`conv2d_dx_flipped`.
    """
    _, _, w, bias, x_shape, (oh, ow), k, s, pads, d = cache
    cols = _columns(cache)
    dy_t = _batch_last(cache, dy)
    grads = {"w": np.ascontiguousarray(matmul_nt(dy_t, cols)).reshape(w.shape)}
    if bias:
        grads["b"] = dy_t.sum(axis=1)
    if not need_dx:
        return grads, None
    if dx_method == "col2img":
        return grads, col2img(matmul_wide(w.reshape(len(w), -1).T, dy_t), x_shape, k, s, pads, d)
    return grads, conv2d_dx_flipped(dy_t.reshape(len(w), oh, ow, x_shape[0]), w, x_shape, k, s, pads, d)


def conv2d_sq_norms(cache: Conv2DCache, dy: np.ndarray) -> np.ndarray:
    """``(N,)``: each example's squared norm of ``dparams``, from the per-example products
    ``dy_n @ cols_n.T`` (one ``(F, C * kh * kw)`` matrix per example)."""
    (oh, ow), n, f = cache.out_hw, cache.x_shape[0], len(cache.w)
    dy_t = _batch_last(cache, dy).reshape(f, oh * ow, n)
    cols = _columns(cache)
    per = np.matmul(dy_t.transpose(2, 0, 1), cols.reshape(len(cols), oh * ow, n).transpose(2, 1, 0))
    sq = np.einsum("nfk,nfk->n", per, per)
    if cache.bias:
        db = dy_t.sum(axis=1)
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
           dilation: int | Pair = 1, bias: bool = True, dx_method: str = "col2img", recompute: bool = False,
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

    The forward copies the padded input's windows once into a column matrix
    ``(C * kh * kw, OH * OW * N)`` that the vjp keeps; ``dw`` comes from it. ``dx_method``
    chooses how ``dx`` is computed: ``"col2img"`` (default) multiplies by ``w`` and adds the
    columns back onto the image, looping over the ``kh * kw`` kernel offsets;
    ``"flipped"`` convolves the stride-dilated, zero-padded ``dy`` with the 180°-rotated
    kernel, input and output channels swapped. Both give the same result; see
    ``docs/conv.md`` for when each is faster. The vjp has ``sq_norms`` (see
    :mod:`fnn.per_example`).

    ``recompute=True`` trades time for memory: the vjp keeps a reference to ``x`` instead
    of the column matrix (``kh * kw`` times smaller for stride 1) and rebuilds the columns
    when it runs, at the cost of one more img2col per training step (see ``docs/conv.md``).

    >>> conv = Conv2D(4, 3, padding="same")
    >>> params = conv.init(fnn.random.key(0), (2, 8, 8))
    >>> y, vjp = conv.apply(params, np.ones((5, 2, 8, 8), np.float32))
    >>> y.shape
    (5, 4, 8, 8)
    """
    options = (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1), ("bias", bias, True),
               ("dx_method", dx_method, "col2img"), ("recompute", recompute, False))
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
        y, cache = conv2d_forward(params, x, k, s, pads, d, recompute)
        out = like(y)  # the vjp keeps the shape of x and y, not x

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
            return conv2d_backward(cache, check_cotangent(kind, dy, out), need_dx, dx_method)

        return y, vjp_with(vjp, sq_norms=lambda dy: conv2d_sq_norms(cache, check_cotangent(kind, dy, out)))

    return make_layer(kind, init, apply)
