"""Embedding: integer indices to learned vectors, the first layer of a token model."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn import validate
from fnn.core import FLOAT_DTYPES, Layer, Options, check_cotangent, check_params, layer_kind, like, make_layer

__all__ = ["Embedding", "embedding_forward", "embedding_backward", "standard_normal"]


def embedding_forward(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``weight: (V, F)``, ``x: (N, ...)`` indices in ``[0, V)`` -> ``y: (N, ..., F)``, the rows of ``weight``."""
    return weight[x]


def embedding_backward(x: np.ndarray, dy: np.ndarray, num_embeddings: int, padding_idx: int | None) -> np.ndarray:
    """``dweight: (V, F)``: each row the sum of the ``dy`` rows whose index it is (a scatter-add);
    the row ``padding_idx`` gets none."""
    features = dy.shape[-1]
    dweight = np.zeros((num_embeddings, features), dy.dtype)
    # One flat scatter-add over (index * features + feature): the same additions in the same
    # order as np.add.at over rows, and three times faster.
    flat = (x.reshape(-1, 1).astype(np.intp) * features + np.arange(features)).reshape(-1)
    np.add.at(dweight.reshape(-1), flat, dy.reshape(-1))
    if padding_idx is not None:
        dweight[padding_idx] = 0
    return dweight


def standard_normal(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """``N(0, 1)`` draws: PyTorch's initialization of an embedding table."""
    return _init.normal(key, shape, dtype, std=1.0)


def _kind(num_embeddings: Any, features: Any, padding_idx: Any) -> str:
    return layer_kind("Embedding", [repr(num_embeddings), repr(features)], [("padding_idx", padding_idx, None)])


def Embedding(num_embeddings: int, features: int, padding_idx: int | None = None,
              w_init: _init.Initializer = standard_normal) -> Layer:
    """A table of ``num_embeddings`` learned vectors of size ``features``, looked up by index,
    as ``torch.nn.Embedding``.

    ``x: (N, ...)`` integer indices in ``[0, num_embeddings)`` -> ``y: (N, ..., features)``.
    ``init``'s ``shape`` is one example's index shape (``(T,)`` for sequences of ``T``
    tokens, ``()`` for one index per example) and its ``dtype`` the table's. Params
    ``{"weight": (num_embeddings, features)}`` (PyTorch's layout), drawn from ``N(0, 1)``
    (PyTorch's default). The vjp scatter-adds ``dy`` into the rows used (a row used twice
    gets both gradients) and returns ``dx = None``: indices have no gradient. The row
    ``padding_idx`` (in ``[-num_embeddings, num_embeddings)``; negative counts from the end,
    as in PyTorch) starts at zero and never gets a gradient. ``num_embeddings`` and
    ``features`` are ints ``>= 1``. An index out of range or a float input is an error.

    >>> emb = Embedding(10, 3)
    >>> params = emb.init(fnn.random.key(0), (4,))
    >>> y, vjp = emb.apply(params, np.array([[1, 2, 2, 9]]))
    >>> y.shape, vjp(np.ones_like(y))[0]["weight"][2]
    ((1, 4, 3), array([2., 2., 2.], dtype=float32))
    """
    where = _kind(num_embeddings, features, padding_idx)
    num = validate.integer(where, "num_embeddings", num_embeddings, low=1)
    feats = validate.integer(where, "features", features, low=1)
    if padding_idx is not None:
        padding_idx = validate.integer(where, "padding_idx", padding_idx, low=-num, high=num - 1)
    kind = _kind(num, feats, padding_idx)
    pad = None if padding_idx is None else padding_idx % num

    def init(key: _random.Key, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
        weight = np.array(w_init(key, (num, feats), dtype))
        if pad is not None:
            weight[pad] = 0
        return {"weight": weight}

    def apply(params: Any, x: np.ndarray, opts: Options) -> Any:
        weight = params.get("weight") if isinstance(params, dict) else None
        if not isinstance(params, dict) or set(params) != {"weight"}:
            check_params(kind, params, {"weight": (num, feats)}, np.dtype(np.float32))  # names the keys
        if not isinstance(weight, np.ndarray) or weight.dtype not in FLOAT_DTYPES:
            got = type(weight).__name__ if not isinstance(weight, np.ndarray) else f"dtype {weight.dtype}"
            raise TypeError(f"{kind}: params['weight'] must be a float32 or float64 array, got {got}")
        check_params(kind, params, {"weight": (num, feats)}, weight.dtype)
        if x.size and (int(x.min()) < 0 or int(x.max()) >= num):
            raise ValueError(f"{kind}: indices must be in [0, {num}), got values from {int(x.min())} "
                             f"to {int(x.max())}")
        y = embedding_forward(weight, x)
        out = like(y)

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, np.ndarray], None]:
            dy = check_cotangent(kind, dy, out)
            return {"weight": embedding_backward(x, dy, num, pad)}, None

        return y, vjp

    return make_layer(kind, init, apply, inputs="int", index_range=num)
