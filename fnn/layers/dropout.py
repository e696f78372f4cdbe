"""Dropout with an explicit key."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import random as _random
from fnn.core import Layer, Options, check_cotangent, check_no_params, like, make_layer
from fnn.distributed import rank_key

__all__ = ["Dropout"]


def Dropout(rate: float) -> Layer:
    """Zero each entry with probability ``rate`` in training; identity in evaluation.

    **``rate`` is the probability of DROPPING an entry** (as in PyTorch and Keras;
    ``stax.Dropout`` takes the keep probability instead). Kept entries are scaled by
    ``1 / (1 - rate)`` (inverted dropout), so evaluation needs no rescaling.
    ``train=True`` needs ``key=``; the same key gives the same mask. The mask lives
    in the vjp closure. ``rate`` must be in ``[0, 1)``. The mask multiplies, so a dropped
    NaN or inf stays NaN (as in PyTorch): nothing is masked. Given ``world=`` (data
    parallel), the mask comes from ``fnn.distributed.rank_key(world, key)``, so ranks,
    which hold different examples, never share a mask by accident.

    >>> drop = Dropout(0.5)
    >>> y, _ = drop.apply({}, np.ones((2, 4)), train=True, key=fnn.random.key(0))
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
        raise ValueError(f"Dropout: rate is the probability of dropping and must be in [0, 1), got {rate!r}")
    kind = f"Dropout({rate!r})"
    rate = float(rate)

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
        return {}

    def apply(params: Any, x: np.ndarray, opts: Options) -> Any:
        check_no_params(kind, params)
        if not opts.train or rate == 0:
            y = x.copy()
            out = like(y)
            return y, lambda dy, need_dx=True: ({}, check_cotangent(kind, dy, out).copy() if need_dx else None)
        if opts.key is None:
            raise ValueError(f"{kind}: train=True needs a key (apply(..., train=True, key=fnn.random.key(seed)))")
        scale = x.dtype.type(1 / (1 - rate))
        key = opts.key if opts.world is None else rank_key(opts.world, opts.key)
        mask = _random.bernoulli(key, 1 - rate, x.shape)
        y = x * scale
        y *= mask  # a product, not np.where: a dropped NaN or inf stays NaN (nothing is masked), as in PyTorch
        out = like(y)

        def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, Any], np.ndarray | None]:
            dy = check_cotangent(kind, dy, out)
            if not need_dx:
                return {}, None
            dx = dy * scale
            dx *= mask
            return {}, dx

        return y, vjp

    return make_layer(kind, init, apply)
