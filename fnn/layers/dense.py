"""Fully connected layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn.core import Layer, Options, check_cotangent, check_params, like, make_layer, vjp_with

__all__ = ["Dense"]


def Dense(out_features: int, bias: bool = True, w_init: _init.Initializer = _init.fan_in_uniform,
          b_init: _init.Initializer = _init.zeros) -> Layer:
    """Affine map ``y = x @ w + b`` over the last axis.

    ``x: (N, ..., in) -> y: (N, ..., out_features)``. Params ``{"w": (in, out), "b": (out,)}``
    (no ``"b"`` when ``bias=False``). Default init: ``w`` from
    :func:`fnn.init.fan_in_uniform` (PyTorch's Linear default), ``b`` zeros.

    >>> layer = Dense(3)
    >>> params = layer.init(fnn.random.key(0), (4,))
    >>> y, vjp = layer.apply(params, np.ones((2, 4), np.float32))
    >>> y.shape
    (2, 3)
    """
    if isinstance(out_features, bool) or not isinstance(out_features, (int, np.integer)) or out_features <= 0:
        raise ValueError(f"Dense: out_features must be a positive int, got {out_features!r}")
    kind = f"Dense({out_features})" if bias else f"Dense({out_features}, bias=False)"

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
        if len(shape) < 1 or shape[-1] == 0:
            raise ValueError(f"{kind}: init shape must end with a non-zero feature axis, got {shape}")
        kw, kb = _random.split(key, 2)
        params = {"w": w_init(kw, (shape[-1], out_features), dtype)}
        if bias:
            params["b"] = b_init(kb, (out_features,), dtype)
        return params

    def apply(params: dict[str, np.ndarray], x: np.ndarray, opts: Options) -> Any:
        if x.ndim < 2:
            raise ValueError(f"{kind}: input x must be (N, ..., features), got shape {x.shape}")
        n_in = x.shape[-1]
        spec = {"w": (n_in, out_features), **({"b": (out_features,)} if bias else {})}
        check_params(kind, params, spec, x.dtype)
        w = params["w"]
        y = x @ w
        if bias:
            y += params["b"]
        out = like(y)

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
            dy = check_cotangent(kind, dy, out)
            x2, dy2 = x.reshape(-1, n_in), dy.reshape(-1, out_features)
            grads = {"w": x2.T @ dy2}
            if bias:
                grads["b"] = dy2.sum(axis=0)
            return grads, dy @ w.T if need_dx else None

        def sq_norms(dy: np.ndarray) -> np.ndarray:
            """Each example's squared norm of ``dparams`` without forming per-example gradients:
            ``|x_n|^2 |dy_n|^2`` for ``(N, F)`` inputs, Gram matrices over the middle axes otherwise."""
            dy = check_cotangent(kind, dy, out)
            n, mid = x.shape[0], int(np.prod(x.shape[1:-1]))  # explicit: -1 is ambiguous for an empty batch
            x3, dy3 = x.reshape(n, mid, n_in), dy.reshape(n, mid, out_features)
            if x3.shape[1] == 1:
                sq = np.einsum("nf,nf->n", x3[:, 0], x3[:, 0]) * np.einsum("no,no->n", dy3[:, 0], dy3[:, 0])
            else:
                sq = np.einsum("nst,nst->n", x3 @ x3.transpose(0, 2, 1), dy3 @ dy3.transpose(0, 2, 1))
            if bias:
                db = dy3.sum(axis=1)
                sq = sq + np.einsum("no,no->n", db, db)
            return sq

        vjp_with(vjp, sq_norms=sq_norms)
        return y, vjp

    return make_layer(kind, init, apply)
