"""Dropout with an explicit key."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import random as _random
from fnn import validate
from fnn.core import Layer, Options, parameterless
from fnn.distributed import rank_key

__all__ = ["Dropout", "dropout_forward", "dropout_backward"]


def dropout_forward(x: np.ndarray, rate: float, key: _random.Key) -> tuple[np.ndarray, np.ndarray]:
    """``x: (N, ...)`` -> ``y = x * mask / (1 - rate)`` (same shape and dtype) and ``mask``, a bool
    array of ``x``'s shape drawn from ``key``, ``False`` with probability ``rate``: the cache."""
    mask = _random.bernoulli(key, 1 - rate, x.shape)
    y = x * x.dtype.type(1 / (1 - rate))
    y *= mask  # a product, not np.where: a dropped NaN or inf stays NaN (nothing is masked), as in PyTorch
    return y, mask


def dropout_backward(mask: np.ndarray, dy: np.ndarray, rate: float) -> np.ndarray:
    """``dy: (N, ...)`` -> ``dx = dy * mask / (1 - rate)``, the shape and dtype of ``dy``."""
    dx = dy * dy.dtype.type(1 / (1 - rate))
    dx *= mask
    return dx


def Dropout(rate: float) -> Layer:
    """Zero each entry with probability ``rate`` in training; identity in evaluation.

    ``x: (N, ...) -> y: (N, ...)``, the same shape and dtype. **``rate`` is the probability
    of DROPPING an entry** (as in PyTorch and Keras; ``stax.Dropout`` takes the keep
    probability instead). Kept entries are scaled by ``1 / (1 - rate)`` (inverted dropout),
    so evaluation needs no rescaling. ``train=True`` needs ``key=``; the same key gives the
    same mask. The mask lives in the vjp closure. ``rate`` must be in ``[0, 1)``. The mask
    multiplies, so a dropped NaN or inf stays NaN (as in PyTorch): nothing is masked. Given
    ``world=`` (data parallel), the mask comes from ``fnn.distributed.rank_key(world, key)``,
    so ranks, which hold different examples, never share a mask by accident.

    >>> drop = Dropout(0.5)
    >>> y, _ = drop.apply({}, np.ones((2, 4)), train=True, key=fnn.random.key(0))
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
    """
    kind = f"Dropout({rate!r})"
    p = validate.probability(kind, "rate (the probability of dropping)", rate, high_open=True)

    def forward(x: np.ndarray, opts: Options) -> tuple[np.ndarray, Any]:
        if not opts.train or p == 0:
            return x.copy(), lambda dy: dy.copy()
        if opts.key is None:
            raise ValueError(f"{kind}: train=True needs a key (apply(..., train=True, key=fnn.random.key(seed)))")
        y, mask = dropout_forward(x, p, opts.key if opts.world is None else rank_key(opts.world, opts.key))
        return y, lambda dy: dropout_backward(mask, dy, p)

    return parameterless(kind, forward, with_options=True)
