"""Losses and metrics. A loss returns ``(value, grad)``: the scalar mean loss and its gradient
with respect to the first argument (same shape and dtype)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import tree as _tree
from fnn import validate

__all__ = ["softmax_cross_entropy", "mse", "l2_penalty", "accuracy"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_logits(where: str, logits: Any) -> np.ndarray:
    if not isinstance(logits, np.ndarray):
        raise TypeError(f"{where}: logits must be a numpy array of shape (N, C), got {type(logits).__name__}")
    if logits.dtype not in _FLOATS:
        raise TypeError(f"{where}: logits must be float32 or float64, got {logits.dtype}")
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"{where}: logits must have shape (N, C) with C > 0, got {logits.shape}")
    return logits


def _check_labels(where: str, labels: Any, logits: np.ndarray) -> np.ndarray:
    """Validate labels; return them as integer classes ``(N,)`` or probability rows ``(N, C)``."""
    n, c = logits.shape
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        if labels.shape != (n,):
            hint = " (squeeze the trailing axis)" if labels.shape == (n, 1) else ""
            raise ValueError(f"{where}: integer labels must have shape ({n},) for logits {logits.shape}, "
                             f"got {labels.shape}{hint}")
        if n and (labels.min() < 0 or labels.max() >= c):
            bad = labels[(labels < 0) | (labels >= c)][0]
            raise ValueError(f"{where}: labels must be in [0, {c}) for {c} classes, got {bad}")
        return labels
    if labels.dtype.kind == "f":
        if labels.shape != (n, c):
            hint = " (class indices must be an integer array)" if labels.shape in ((n,), (n, 1)) else ""
            raise ValueError(f"{where}: float labels are probability rows of shape ({n}, {c}), "
                             f"got {labels.shape}{hint}")
        return labels.astype(logits.dtype, copy=False)
    raise TypeError(f"{where}: labels must be integer classes (N,) or float probability rows (N, C), "
                    f"got dtype {labels.dtype}")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0,
                          reduction: str = "mean") -> tuple[float, np.ndarray]:
    """Cross-entropy of ``softmax(logits)`` against ``labels``, fused with its gradient.

    ``logits: (N, C)``; ``labels``: integer classes ``(N,)`` or probability rows
    ``(N, C)``. With ``label_smoothing = eps`` the target becomes
    ``(1 - eps) * target + eps / C`` (PyTorch's rule, for both kinds of label).
    ``reduction`` is ``"mean"`` over the batch (the default, PyTorch's) or ``"sum"``.
    Stable for any finite logits (the row maximum is subtracted). Returns
    ``(loss, dlogits)``; an empty batch gives ``(0.0, zeros)``.

    >>> loss, grad = softmax_cross_entropy(np.zeros((2, 10)), np.array([3, 7]))
    >>> round(loss, 4)  # ln 10
    2.3026
    """
    where = "softmax_cross_entropy"
    logits = _check_logits(where, logits)
    labels = _check_labels(where, labels, logits)
    label_smoothing = validate.probability(where, "label_smoothing", label_smoothing)
    scale = logits.shape[0] if validate.choice(where, "reduction", reduction, ("mean", "sum")) == "mean" else 1
    n, c = logits.shape
    if n == 0:
        return 0.0, np.zeros_like(logits)
    logp = _log_softmax(logits)
    if labels.ndim == 1:
        target = np.zeros_like(logits)
        target[np.arange(n), labels] = 1
    else:
        target = labels
    if label_smoothing:
        target = (1 - label_smoothing) * target + label_smoothing / c
    loss = -float(np.einsum("nc,nc->", target, logp, dtype=np.float64)) / scale
    # (softmax - target) / N when target rows sum to 1; the row sum keeps it exact for other rows
    grad = (np.exp(logp) * target.sum(axis=1, keepdims=True) - target) / logits.dtype.type(scale)
    return loss, grad.astype(logits.dtype, copy=False)


def mse(pred: np.ndarray, target: np.ndarray, reduction: str = "mean") -> tuple[float, np.ndarray]:
    """Squared error over all elements, averaged (``reduction="mean"``, the default) or summed;
    shapes and dtypes must match exactly (no broadcasting, no cast). Returns ``(loss, dpred)``.
    """
    if not isinstance(pred, np.ndarray) or pred.dtype not in _FLOATS:
        got = getattr(pred, "dtype", type(pred).__name__)
        raise TypeError(f"mse: pred must be a float32 or float64 array, got {got}")
    target = np.asarray(target)
    if target.dtype.kind not in "biuf":  # object arrays would turn None into NaN, strings fail inside numpy
        raise TypeError(f"mse: target must be a real numeric array, got dtype {target.dtype}")
    if target.dtype != pred.dtype:
        raise TypeError(f"mse: target has dtype {target.dtype} but pred has dtype {pred.dtype}; pass "
                        f"target.astype(np.{pred.dtype}) (nothing is cast silently)")
    if target.shape != pred.shape:
        raise ValueError(f"mse: pred has shape {pred.shape} but target has shape {target.shape}; "
                         f"they must match exactly (no broadcasting)")
    scale = pred.size if validate.choice("mse", "reduction", reduction, ("mean", "sum")) == "mean" else 1
    if pred.size == 0:
        return 0.0, np.zeros_like(pred)
    diff = pred - target
    return float(np.vdot(diff, diff)) / scale, (2 / scale) * diff


def l2_penalty(params: Any, weight: float) -> tuple[float, Any]:
    """``weight / 2 * sum of squares of every leaf``, and its gradient ``weight * params``."""
    weight = validate.number("l2_penalty", "weight", weight, low=0.0)
    value = 0.5 * weight * _tree.global_norm(params) ** 2
    return value, _tree.map(lambda p: p * p.dtype.type(weight), params)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the integer label (``labels: (N,)``); 0.0 for N = 0."""
    logits = _check_logits("accuracy", logits)
    labels = _check_labels("accuracy", labels, logits)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if len(labels) == 0:
        return 0.0
    return float(np.mean(logits.argmax(axis=1) == labels))
