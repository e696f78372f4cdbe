"""Fully connected layer."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn import validate
from fnn.core import Layer, Options, check_cotangent, check_params, layer_kind, like, make_layer, vjp_with
from fnn.ops import matmul_last

__all__ = ["Dense", "DenseCache", "dense_forward", "dense_backward", "dense_sq_norms"]


class DenseCache(NamedTuple):
    """What :func:`dense_backward` needs: the input ``x: (N, ..., in)`` and ``w: (in, out)``."""

    x: np.ndarray
    w: np.ndarray
    bias: bool


def dense_forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, DenseCache]:
    """``x: (N, ..., in)``, params ``{"w": (in, out), "b": (out,)}`` (``"b"`` optional) ->
    ``y = x @ w + b: (N, ..., out)`` and the cache."""
    w = params["w"]
    y = matmul_last(x, w)
    if "b" in params:
        y += params["b"]
    return y, DenseCache(x, w, "b" in params)


def dense_backward(cache: DenseCache, dy: np.ndarray, need_dx: bool = True
                   ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``dy: (N, ..., out)`` -> ``({"w": (in, out), "b": (out,)}, dx: (N, ..., in))``; ``dx`` is
    ``None`` unless ``need_dx``."""
    x, w, bias = cache
    n_in, n_out = w.shape
    x2, dy2 = x.reshape(-1, n_in), dy.reshape(-1, n_out)
    grads = {"w": x2.T @ dy2}
    if bias:
        grads["b"] = np.einsum("rf->f", dy2)
    return grads, matmul_last(dy, w.T) if need_dx else None


def dense_sq_norms(cache: DenseCache, dy: np.ndarray) -> np.ndarray:
    """``(N,)``: each example's squared norm of ``dparams`` without forming per-example gradients:
    ``|x_n|^2 |dy_n|^2`` for ``(N, F)`` inputs, Gram matrices over the middle axes otherwise."""
    x, w, bias = cache
    n_in, n_out = w.shape
    n, mid = x.shape[0], int(np.prod(x.shape[1:-1]))  # explicit: -1 is ambiguous for an empty batch
    x3, dy3 = x.reshape(n, mid, n_in), dy.reshape(n, mid, n_out)
    if x3.shape[1] == 1:
        sq = np.einsum("nf,nf->n", x3[:, 0], x3[:, 0]) * np.einsum("no,no->n", dy3[:, 0], dy3[:, 0])
    else:
        sq = np.einsum("nst,nst->n", x3 @ x3.transpose(0, 2, 1), dy3 @ dy3.transpose(0, 2, 1))
    if bias:
        db = dy3.sum(axis=1)
        sq = sq + np.einsum("no,no->n", db, db)
    return sq


def Dense(out_features: int, bias: bool = True, w_init: _init.Initializer = _init.fan_in_uniform,
          b_init: _init.Initializer = _init.zeros) -> Layer:
    """Affine map ``y = x @ w + b`` over the last axis.

    ``x: (N, ..., in) -> y: (N, ..., out_features)``. Params ``{"w": (in, out), "b": (out,)}``
    (no ``"b"`` when ``bias=False``). Default init: ``w`` from
    :func:`fnn.init.fan_in_uniform` (PyTorch's Linear default), ``b`` zeros. The vjp keeps
    ``x`` and ``w``; it has ``sq_norms`` (see :mod:`fnn.per_example`).

    >>> layer = Dense(3)
    >>> params = layer.init(fnn.random.key(0), (4,))
    >>> y, vjp = layer.apply(params, np.ones((2, 4), np.float32))
    >>> y.shape
    (2, 3)
    """
    where = layer_kind("Dense", [repr(out_features)], [("bias", bias, True)])
    n_out = validate.integer(where, "out_features", out_features, low=1)
    bias = validate.boolean(where, "bias", bias)
    kind = layer_kind("Dense", [str(n_out)], [("bias", bias, True)])

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
        if len(shape) < 1 or shape[-1] == 0:
            raise ValueError(f"{kind}: init shape must end with a non-zero feature axis, got {shape}")
        kw, kb = _random.split(key, 2)
        params = {"w": w_init(kw, (shape[-1], n_out), dtype)}
        if bias:
            params["b"] = b_init(kb, (n_out,), dtype)
        return params

    def apply(params: dict[str, np.ndarray], x: np.ndarray, opts: Options) -> Any:
        if x.ndim < 2:
            raise ValueError(f"{kind}: input x must be (N, ..., features), got shape {x.shape}")
        check_params(kind, params, {"w": (x.shape[-1], n_out), **({"b": (n_out,)} if bias else {})}, x.dtype)
        y, cache = dense_forward(params, x)
        out = like(y)

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
            return dense_backward(cache, check_cotangent(kind, dy, out), need_dx)

        return y, vjp_with(vjp, sq_norms=lambda dy: dense_sq_norms(cache, check_cotangent(kind, dy, out)))

    return make_layer(kind, init, apply)
