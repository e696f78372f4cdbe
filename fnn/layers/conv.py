"""2-D convolution by img2col and one matrix product (NCHW, PyTorch's weight layout)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn.core import Layer, Options, check_cotangent, check_params, like, make_layer
from fnn.layers._spatial import as_padding, as_pair, check_fits, check_nchw, resolve_padding
from fnn.ops import Pair, col2img, img2col, pad2d

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
        xp = pad2d(x, pads)
        cols = img2col(xp, k, s, d)
        w = params["w"]
        w2 = w.reshape(f_out, -1)
        y = np.matmul(w2, cols)
        if bias:
            y += params["b"][:, None]
        y = y.reshape(n, f_out, oh, ow)
        out, xp_shape = like(y), xp.shape

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
            dy3 = check_cotangent(kind, dy, out).reshape(n, f_out, oh * ow)
            grads = {"w": np.matmul(dy3, cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)}
            if bias:
                grads["b"] = dy3.sum(axis=(0, 2))
            if not need_dx:
                return grads, None
            if dx_method == "col2img":
                dxp = col2img(np.matmul(w2.T, dy3), xp_shape, k, s, d)
            else:
                dxp = _dx_flipped(dy3.reshape(out.shape), w, xp_shape, k, s, d)
            t, _, left, _ = pads
            return grads, dxp[:, :, t:t + h, left:left + wd]

        def sq_norms(dy: np.ndarray) -> np.ndarray:
            """Each example's squared norm of ``dparams``, read from the batched product
            ``(N, out_channels, C * kh * kw)`` that ``dw`` is the batch sum of."""
            dy3 = check_cotangent(kind, dy, out).reshape(n, f_out, oh * ow)
            per = np.matmul(dy3, cols.transpose(0, 2, 1))
            sq = np.einsum("nfk,nfk->n", per, per)
            if bias:
                db = dy3.sum(axis=2)
                sq = sq + np.einsum("nf,nf->n", db, db)
            return sq

        vjp.sq_norms = sq_norms  # type: ignore[attr-defined]
        return y, vjp

    return make_layer(kind, init, apply)


def _dx_flipped(dy: np.ndarray, w: np.ndarray, padded_shape: tuple[int, ...], k: Pair, s: Pair,
                d: Pair) -> np.ndarray:
    """``dx`` of the padded input as a stride-1 convolution of the dilated, padded ``dy``
    with the rotated kernel ``w[:, :, ::-1, ::-1]`` whose channel axes are swapped."""
    n, f, oh, ow = dy.shape
    c, hp, wp = padded_shape[1:]
    (kh, kw), (sh, sw), (dh, dw) = k, s, d
    ph, pw = dh * (kh - 1), dw * (kw - 1)
    # Room for a full convolution whose output is exactly the padded input's size.
    big = np.zeros((n, f, hp + ph, wp + pw), dy.dtype)
    big[:, :, ph:ph + sh * (oh - 1) + 1:sh, pw:pw + sw * (ow - 1) + 1:sw] = dy
    rotated = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, -1)
    return np.matmul(rotated, img2col(big, k, 1, d)).reshape(n, c, hp, wp)
