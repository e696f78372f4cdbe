"""Inference: run a model forward only, keeping nothing for backward, in batches.

``fnn.predict(net, params, x, state=state)`` is ``net.apply(params, x, state=state,
need_vjp=False)[0]`` for ``x`` split into batches of ``batch_size`` examples: evaluation
mode (``train=False``), no layer keeps a column matrix, mask or arg-max beyond its own
call, and peak memory is that of the largest single layer on one batch rather than the
sum over the layers. It is the way to evaluate a trained model. An attention model's
``key_padding_mask: (N, S)`` is split into the same batches as ``x``.

>>> from fnn.layers import Dense, ReLU
>>> net = fnn.serial(Dense(8), ReLU(), Dense(2))
>>> params = net.init(fnn.random.key(0), (3,))
>>> predict(net, params, np.ones((1000, 3), np.float32), batch_size=256).shape
(1000, 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import tree as _tree
from fnn import validate
from fnn.core import Layer, check_is_layer, check_key_padding_mask

__all__ = ["predict"]


def rows(x: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of ``x``, an array or a tuple of arrays with one batch axis."""
    return tuple(v[start:stop] for v in x) if isinstance(x, tuple) else x[start:stop]


def batch_length(where: str, x: Any) -> int:
    """The number of examples in ``x``, an array or a tuple of arrays with a batch axis (the
    first array's); ``TypeError`` naming ``where`` for anything else."""
    first = x[0] if isinstance(x, tuple) and x else x
    if not isinstance(first, np.ndarray) or first.ndim == 0:
        raise TypeError(f"{where}: x must be a batch (an array with a batch axis, or a tuple of them), "
                        f"got {type(first).__name__}")
    return len(first)


def _mask(mask: Any, n: int) -> np.ndarray | None:
    """``key_padding_mask`` checked against ``x``'s ``n`` examples: it is split along with them."""
    if check_key_padding_mask("predict: key_padding_mask", mask) is None:
        return None
    if mask.ndim != 2 or len(mask) != n:
        raise ValueError(f"predict: key_padding_mask must be (N, S) with one row for each of x's N={n} examples, "
                         f"got shape {mask.shape}")
    return mask


def predict(layer: Layer, params: Any, x: Any, *, state: Any = None, batch_size: int | None = None,
            world: Any = None, check_finite: bool = False, key_padding_mask: np.ndarray | None = None) -> Any:
    """``layer``'s outputs for ``x: (N, ...)`` in evaluation mode, computed ``batch_size``
    examples at a time (all at once for ``None``) with ``need_vjp=False``, and concatenated.

    ``state`` is the layer's state (BatchNorm's running statistics, as training returned
    them). ``x`` and the output may be tuples of arrays. ``key_padding_mask``, a bool
    ``(N, S)`` array (``True`` where a key is padding, see ``MultiHeadAttention``), is
    passed to ``apply`` sliced to each batch's rows. Returns the outputs only: nothing for
    backward is kept, during or after the call.
    """
    check_is_layer(layer, "predict")
    n = batch_length("predict", x)
    step = n if batch_size is None else validate.integer("predict", "batch_size", batch_size, low=1)
    mask = _mask(key_padding_mask, n)
    options = {"state": state, "world": world, "check_finite": check_finite, "need_vjp": False}
    if n <= step:
        return layer.apply(params, x, key_padding_mask=mask, **options)[0]
    parts = [layer.apply(params, rows(x, i, i + step), key_padding_mask=None if mask is None else mask[i:i + step],
                         **options)[0] for i in range(0, n, step)]
    pairs, rebuild = _tree.flatten(parts[0])
    leaves = [np.concatenate([_tree.leaves(p)[i] for p in parts]) for i in range(len(pairs))]
    return rebuild(leaves)
