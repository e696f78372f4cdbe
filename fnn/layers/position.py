"""Positional information for batch-first sequences ``x: (N, T, E)``: a learned position
embedding, or the fixed sinusoidal table of "Attention is all you need", added to ``x``.

Each layer's maths is a pair of module-level functions on arrays, ``<layer>_forward(...)
-> (y, cache)`` and ``<layer>_backward(cache, dy, ...)``; the constructor validates its
arguments and closes over the cache (here no array: both layers' gradients are ``dy``
itself, summed over the batch for the learned table).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn import validate
from fnn.core import Layer, Options, check_cotangent, check_params, layer_kind, like, make_layer, parameterless

__all__ = ["PositionEmbedding", "SinusoidalPositionEmbedding", "position_embedding_forward",
           "position_embedding_backward", "sinusoidal_table", "sinusoidal_position_forward",
           "sinusoidal_position_backward", "gpt2_normal"]

Arr = np.ndarray


def _check_sequence(kind: str, x: Arr, max_len: int | None) -> None:
    """``x`` is ``(N, T, E)`` with ``T <= max_len`` (``None``: any ``T``)."""
    if x.ndim != 3:
        raise ValueError(f"{kind}: input must be (N, T, E), got shape {x.shape}")
    if max_len is not None and x.shape[1] > max_len:
        raise ValueError(f"{kind}: input has T = {x.shape[1]} positions but max_len is {max_len} "
                         f"(shape {x.shape}); use a larger max_len or shorter sequences")


def gpt2_normal(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """``N(0, 0.02^2)`` draws: GPT-2's initialization of embedding tables, as reproduced by
    nanoGPT and Hugging Face's ``GPT2Model``."""
    return _init.normal(key, shape, dtype, std=0.02)


def position_embedding_forward(weight: Arr, x: Arr) -> tuple[Arr, int]:
    """``weight: (max_len, E)``, ``x: (N, T, E)`` with ``T <= max_len`` -> ``y = x + weight[:T]``
    (the same row ``t`` added to every example's position ``t``); the cache is ``max_len``."""
    return x + weight[: x.shape[1]], weight.shape[0]


def position_embedding_backward(max_len: int, dy: Arr, need_dx: bool = True) -> tuple[dict[str, Arr], Arr | None]:
    """``({"weight": dweight}, dx)`` of :func:`position_embedding_forward` for ``dy: (N, T, E)``:
    ``dweight[t]`` is ``dy[:, t]`` summed over the batch for ``t < T`` and 0 for the rows not
    used; ``dx = dy`` (a copy), or ``None`` without ``need_dx``."""
    steps, features = dy.shape[1:]
    dweight = np.zeros((max_len, features), dy.dtype)
    np.sum(dy, axis=0, out=dweight[:steps])
    return {"weight": dweight}, dy.copy() if need_dx else None


def PositionEmbedding(max_len: int, w_init: _init.Initializer = gpt2_normal) -> Layer:
    """A learned vector for each position ``t < max_len``, added to the sequence:
    ``x: (N, T, E) -> y = x + weight[:T]`` of the same shape, ``T <= max_len`` (as GPT-2's
    ``wpe``; ``T`` may differ from call to call).

    ``init``'s ``shape`` is one sequence's ``(T, E)``. Params ``{"weight": (max_len, E)}``,
    drawn from ``N(0, 0.02^2)`` (:func:`gpt2_normal`; GPT-2's own code drew positions with
    std 0.01), or by ``w_init(key, shape, dtype)``. The vjp keeps nothing: ``dweight[:T]``
    is ``dy`` summed over the batch, the other rows 0, and ``dx = dy``. ``max_len`` is an int
    ``>= 1``; a longer sequence is a ``ValueError``.

    >>> pos = PositionEmbedding(16)
    >>> params = pos.init(fnn.random.key(0), (10, 4))
    >>> y, vjp = pos.apply(params, np.zeros((2, 10, 4), np.float32))
    >>> params["weight"].shape, bool((y[1] == params["weight"][:10]).all()), vjp(np.ones_like(y))[0]["weight"][9:11]
    ((16, 4), True, array([[2., 2., 2., 2.],
           [0., 0., 0., 0.]], dtype=float32))
    """
    length = validate.integer(layer_kind("PositionEmbedding", [repr(max_len)], []), "max_len", max_len, low=1)
    kind = layer_kind("PositionEmbedding", [repr(length)], [])

    def init(key: _random.Key, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Arr]:
        if len(shape) != 2 or shape[1] == 0:
            raise ValueError(f"{kind}: init shape must be (T, E) with E > 0 (one sequence, no batch axis), got {shape}")
        if shape[0] > length:
            raise ValueError(f"{kind}: init shape {shape} has T = {shape[0]} positions but max_len is {length}")
        return {"weight": np.asarray(w_init(key, (length, shape[1]), dtype))}

    def apply(params: Any, x: Arr, opts: Options) -> Any:
        _check_sequence(kind, x, length)
        check_params(kind, params, {"weight": (length, x.shape[2])}, x.dtype)
        y, cache = position_embedding_forward(params["weight"], x)
        out = like(y)

        def vjp(dy: Arr, need_dx: bool = True) -> tuple[dict[str, Arr], Arr | None]:
            return position_embedding_backward(cache, check_cotangent(kind, dy, out), need_dx)

        return y, vjp

    return make_layer(kind, init, apply)


def sinusoidal_table(length: int, features: int, base: float = 10000.0, dtype: Any = np.float64) -> Arr:
    """The ``(length, features)`` table of "Attention is all you need", interleaved:
    ``table[t, 2i] = sin(t * w_i)`` and ``table[t, 2i + 1] = cos(t * w_i)`` with frequencies
    ``w_i = base ** (-2i / features)``, ``i = 0, 1, ...`` (PyTorch tutorials' ``pe[:, 0::2]``,
    ``pe[:, 1::2]`` layout). An odd ``features`` ends with a sine column with no cosine beside
    it (frequency ``base ** (-(features - 1) / features)``). Computed in float64, then rounded
    to ``dtype``.

    >>> sinusoidal_table(2, 3, base=100.0)
    array([[0.        , 1.        , 0.        ],
           [0.84147098, 0.54030231, 0.04639922]])
    """
    freq = base ** (-2.0 * np.arange((features + 1) // 2) / features)
    angle = np.arange(length, dtype=np.float64)[:, None] * freq
    table = np.empty((length, features))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : features // 2])
    return table.astype(dtype, copy=False)


def sinusoidal_position_forward(x: Arr, base: float = 10000.0) -> tuple[Arr, None]:
    """``x: (N, T, E) -> y = x + sinusoidal_table(T, E, base)``, the table in ``x``'s dtype; no cache."""
    return x + sinusoidal_table(x.shape[1], x.shape[2], base, x.dtype), None


def sinusoidal_position_backward(cache: None, dy: Arr) -> Arr:
    """``dx = dy`` (a copy)."""
    return dy.copy()


def _sinusoidal_kind(max_len: Any, base: Any) -> str:
    return layer_kind("SinusoidalPositionEmbedding", [], [("max_len", max_len, None), ("base", base, 10000.0)])


def SinusoidalPositionEmbedding(max_len: int | None = None, base: float = 10000.0) -> Layer:
    """The fixed sinusoidal position encoding of "Attention is all you need", added to the
    sequence: ``x: (N, T, E) -> y = x + sinusoidal_table(T, E, base)`` of the same shape and
    dtype (the table's layout, odd ``E`` included, is :func:`sinusoidal_table`'s).

    No params. ``max_len`` (an int ``>= 1``, or ``None``, the default: any ``T``) only bounds
    ``T``, as a check. ``base`` (a number ``> 0``; default 10000, the paper's) sets the
    frequencies. The table is computed at each call, in float64, rounded to ``x``'s dtype;
    ``dx = dy``. Scale ``x`` first if you want the paper's ``sqrt(E)`` factor on embeddings.

    >>> y, _ = SinusoidalPositionEmbedding().apply({}, np.zeros((1, 2, 4)))
    >>> y[0]
    array([[0.        , 1.        , 0.        , 1.        ],
           [0.84147098, 0.54030231, 0.00999983, 0.99995   ]])
    """
    where = _sinusoidal_kind(max_len, base)
    length = None if max_len is None else validate.integer(where, "max_len", max_len, low=1)
    base = validate.number(where, "base", base, low=0.0, low_open=True)
    kind = _sinusoidal_kind(length, base)

    def forward(x: Arr) -> Any:
        _check_sequence(kind, x, length)
        y, cache = sinusoidal_position_forward(x, base)
        return y, lambda dy: sinusoidal_position_backward(cache, dy)

    return parameterless(kind, forward)
