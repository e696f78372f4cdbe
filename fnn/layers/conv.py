"""2-D convolution by img2col and one matrix product (NCHW, PyTorch's weight layout)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn.core import Layer, Options, check_cotangent, check_params, like, make_layer, vjp_with
from fnn.layers._spatial import as_padding, as_pair, check_fits, check_nchw, resolve_padding
from fnn.ops import Pair, col2img, img2col, matmul_nt, matmul_wide

__all__ = ["Conv2D"]

_DX_METHODS = ("col2img", "flipped")


def Conv2D(out_channels: int, kernel_size: int | Pair, stride: int | Pair = 1, padding: Any = 0,
           dilation: int | Pair = 1, bias: bool = True, dx_method: str = "col2img",
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
    ``(N, C * kh * kw, OH * OW)`` that the vjp keeps; ``dw`` comes from it. ``dx_method``
    chooses how ``dx`` is computed: ``"col2img"`` (default) multiplies by ``w`` and adds the
    columns back onto the image, looping over the ``kh * kw`` kernel offsets;
    ``"flipped"`` convolves the stride-dilated, zero-padded ``dy`` with the 180°-rotated
    kernel, input and output channels swapped. Both give the same result; see
    ``docs/conv.md`` for when each is faster.

    >>> conv = Conv2D(4, 3, padding="same")
    >>> params = conv.init(fnn.random.key(0), (2, 8, 8))
    >>> y, vjp = conv.apply(params, np.ones((5, 2, 8, 8), np.float32))
    >>> y.shape
    (5, 4, 8, 8)
    """
    if isinstance(out_channels, bool) or not isinstance(out_channels, (int, np.integer)) or out_channels <= 0:
        raise ValueError(f"Conv2D: out_channels must be a positive int, got {out_channels!r}")
    extras = [f"{n}={v!r}" for n, v, default in (("stride", stride, 1), ("padding", padding, 0),
                                                 ("dilation", dilation, 1), ("bias", bias, True),
                                                 ("dx_method", dx_method, "col2img")) if v != default]
    kind = f"Conv2D({', '.join([str(out_channels), repr(kernel_size)] + extras)})"
    k = as_pair(kind, "kernel_size", kernel_size)
    s = as_pair(kind, "stride", stride)
    d = as_pair(kind, "dilation", dilation)
    pad = as_padding(kind, padding)
    if dx_method not in _DX_METHODS:
        raise ValueError(f"{kind}: dx_method must be one of {_DX_METHODS}, got {dx_method!r}")
    f_out = int(out_channels)

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
        n, c, h, wd = x.shape
        check_params(kind, params, {"w": (f_out, c, *k), **({"b": (f_out,)} if bias else {})}, x.dtype)
        pads = resolve_padding(pad, (h, wd), k, s, d)
        oh, ow = check_fits(kind, (h, wd), pads, k, d, s)
        cols = img2col(x, k, s, pads, d)  # (C * kh * kw, OH * OW * N)
        w = params["w"]
        w2 = w.reshape(f_out, -1)
        y_t = matmul_wide(w2, cols)
        if bias:
            y_t += params["b"][:, None]
        y = y_t.reshape(f_out, oh, ow, n).transpose(3, 0, 1, 2)  # batch-last memory, (N, F, OH, OW) view
        out, x_shape = like(y), x.shape  # the vjp keeps the shape of x, not x

        def batch_last(dy: np.ndarray) -> np.ndarray:
            """``dy`` as ``(F, OH * OW * N)``: free when it is batch-last already, as ``y`` is."""
            return check_cotangent(kind, dy, out).transpose(1, 2, 3, 0).reshape(f_out, oh * ow * n)

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
            dy_t = batch_last(dy)
            grads = {"w": np.ascontiguousarray(matmul_nt(dy_t, cols)).reshape(w.shape)}
            if bias:
                grads["b"] = dy_t.sum(axis=1)
            if not need_dx:
                return grads, None
            if dx_method == "col2img":
                return grads, col2img(matmul_wide(w2.T, dy_t), x_shape, k, s, pads, d)
            return grads, _dx_flipped(dy_t.reshape(f_out, oh, ow, n), w, x_shape, k, s, pads, d)

        def sq_norms(dy: np.ndarray) -> np.ndarray:
            """Each example's squared norm of ``dparams``, from the per-example products
            ``dy_n @ cols_n.T`` (one ``(out_channels, C * kh * kw)`` matrix per example)."""
            dy_t = batch_last(dy).reshape(f_out, oh * ow, n)
            per = np.matmul(dy_t.transpose(2, 0, 1), cols.reshape(len(cols), oh * ow, n).transpose(2, 1, 0))
            sq = np.einsum("nfk,nfk->n", per, per)
            if bias:
                db = dy_t.sum(axis=1)
                sq = sq + np.einsum("fn,fn->n", db, db)
            return sq

        vjp_with(vjp, sq_norms=sq_norms)
        return y, vjp

    return make_layer(kind, init, apply)


def _dx_flipped(dy_t: np.ndarray, w: np.ndarray, shape: tuple[int, ...], k: Pair, s: Pair,
                pads: tuple[int, int, int, int], d: Pair) -> np.ndarray:
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
