"""Binary (multi-label) cross-entropy on logits."""

from __future__ import annotations

from typing import Literal, overload

import numpy as np

from fnn.losses._reduce import MeanOrSum, float_array, matching, reduce, reduction_choice, weight_array

__all__ = ["binary_cross_entropy_with_logits"]


@overload
def binary_cross_entropy_with_logits(logits: np.ndarray, targets: np.ndarray, *, weight: np.ndarray | None = ...,
                                     pos_weight: np.ndarray | None = ...,
                                     reduction: MeanOrSum = ...) -> tuple[float, np.ndarray]: ...
@overload
def binary_cross_entropy_with_logits(logits: np.ndarray, targets: np.ndarray, *, weight: np.ndarray | None = ...,
                                     pos_weight: np.ndarray | None = ...,
                                     reduction: Literal["none"]) -> tuple[np.ndarray, np.ndarray]: ...
def binary_cross_entropy_with_logits(logits: np.ndarray, targets: np.ndarray, *, weight: np.ndarray | None = None,
                                     pos_weight: np.ndarray | None = None,
                                     reduction: str = "mean") -> tuple[float | np.ndarray, np.ndarray]:
    """``-w * (pos_weight * t * log sigmoid(x) + (1 - t) * log(1 - sigmoid(x)))`` elementwise, PyTorch's
    ``binary_cross_entropy_with_logits``.

    ``logits``: any shape, for example ``(N, C)`` for ``C`` independent labels; ``targets``:
    the same shape and dtype, probabilities in ``[0, 1]`` (soft targets welcome).
    ``weight``: an array of ``logits``' dtype that broadcasts to ``logits``' shape (``(N, 1)``
    per example, ``(C,)`` per label, or the full shape). ``pos_weight: (C,)`` weighs the
    positive term of each label and broadcasts over the last axis, as in PyTorch.
    ``reduction``: ``"mean"`` over every element (the default), ``"sum"``, or ``"none"``
    (the elementwise losses and the gradient of their sum). Stable for any finite logits
    (``log sigmoid`` through ``log1p(exp(-|x|))``). Returns ``(loss, dlogits)``.

    >>> loss, grad = binary_cross_entropy_with_logits(np.zeros((1, 2)), np.array([[1.0, 0.0]]))
    >>> round(loss, 4), grad  # ln 2
    (0.6931, array([[-0.25,  0.25]]))
    """
    where = "binary_cross_entropy_with_logits"
    x = float_array(where, "logits", logits)
    t = matching(where, "targets", targets, "logits", x)
    w = None if weight is None else weight_array(where, "weight", weight, "logits", x)
    if pos_weight is not None:
        if x.ndim == 0:
            raise ValueError(f"{where}: pos_weight needs logits with a last axis of labels, got shape ()")
        pos_weight = weight_array(where, "pos_weight", pos_weight, "logits", x, shape=x.shape[-1:])
    reduction = reduction_choice(where, reduction)
    e = np.exp(-np.abs(x))
    log1p_e = np.log1p(e)
    inv = 1 / (1 + e)
    sig = np.where(x >= 0, inv, e * inv)  # sigmoid(x) without overflow
    if pos_weight is None:  # softplus(x) - t * x
        loss = np.maximum(x, 0) - t * x + log1p_e
        grad = sig - t
    else:  # pw * t * softplus(-x) + (1 - t) * softplus(x)
        pt = pos_weight * t
        loss = pt * (np.maximum(-x, 0) + log1p_e) + (1 - t) * (np.maximum(x, 0) + log1p_e)
        grad = (1 - t) * sig - pt * np.where(x >= 0, e * inv, inv)
    if w is not None:
        loss = loss * w
        grad = grad * w
    return reduce(loss, grad, reduction)
