"""Multi-class losses on scores with the classes on the last axis: softmax cross-entropy, NLL,
and the accuracy metric."""

from __future__ import annotations

from typing import Literal, overload

import numpy as np

from fnn import validate
from fnn.losses._labels import class_labels, class_scores, class_weight, gather_targets, ignore_index_option
from fnn.losses._reduce import MeanOrSum, reduce, reduction_choice

__all__ = ["softmax_cross_entropy", "nll_loss", "accuracy"]


def _softmax_parts(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, log_s, p)``: ``z = logits - max`` over the last axis, ``log_s = log sum exp z``
    ``(..., 1)`` and the softmax ``p``, so that ``log_softmax = z - log_s``; stable for any finite logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    s = p.sum(axis=-1, keepdims=True)
    p /= s
    return z, np.log(s), p


def _index_targets(logits: np.ndarray, labels: np.ndarray, weight: np.ndarray | None, ignore_index: int | None,
                   eps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-position loss, the gradient of its sum, and the weighted count that ``"mean"`` divides by.

    PyTorch's smoothing: ``(1 - eps) * w[y] * -log p[y] + eps / C * sum_c w[c] * -log p[c]`` at each
    position not ignored, so the gradient is ``p * (hard + soft * sum(w)) - hard * onehot(y) - soft * w``
    with ``hard = (1 - eps) * w[y]`` and ``soft = eps / C`` (0 where ignored)."""
    c = logits.shape[-1]
    safe, wy, keep = gather_targets(labels, weight, ignore_index, logits.dtype)
    z, log_s, p = _softmax_parts(logits)
    log_s = log_s[..., 0]
    at = safe[..., None]
    hard = (1 - eps) * wy if eps else wy
    loss = hard * (log_s - np.take_along_axis(z, at, axis=-1)[..., 0])
    coef = hard
    if eps:
        wc = np.ones(c, logits.dtype) if weight is None else weight
        soft = np.full(wy.shape, eps / c, logits.dtype) if keep is None else keep * logits.dtype.type(eps / c)
        loss = loss + soft * (wc.sum() * log_s - z @ wc)
        coef = hard + soft * wc.sum()
    grad = p
    grad *= coef[..., None]
    np.put_along_axis(grad, at, np.take_along_axis(grad, at, axis=-1) - hard[..., None], axis=-1)
    if eps:
        grad -= soft[..., None] * wc
    return loss, grad, float(wy.sum(dtype=np.float64))


def _probability_targets(logits: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
                         eps: float) -> tuple[np.ndarray, np.ndarray, None]:
    """Per-position loss ``-sum_c w[c] t[c] log p[c]`` and the gradient of its sum; ``"mean"`` counts positions."""
    if eps:
        target = (1 - eps) * target + eps / logits.shape[-1]
    if weight is not None:
        target = target * weight
    z, log_s, p = _softmax_parts(logits)
    rows = target.sum(axis=-1)
    loss = rows * log_s[..., 0] - np.einsum("...c,...c->...", z, target)
    # p - target when rows sum to 1; the row sum keeps it exact for other non-negative rows
    return loss, p * rows[..., None] - target, None


@overload
def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, *, weight: np.ndarray | None = ...,
                          ignore_index: int | None = ..., reduction: MeanOrSum = ...,
                          label_smoothing: float = ...) -> tuple[float, np.ndarray]: ...
@overload
def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, *, weight: np.ndarray | None = ...,
                          ignore_index: int | None = ..., reduction: Literal["none"],
                          label_smoothing: float = ...) -> tuple[np.ndarray, np.ndarray]: ...
def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, *, weight: np.ndarray | None = None,
                          ignore_index: int | None = None, reduction: str = "mean",
                          label_smoothing: float = 0.0) -> tuple[float | np.ndarray, np.ndarray]:
    """Cross-entropy of ``softmax(logits)`` against ``labels``, fused with its gradient.

    ``logits: (N, C)`` or ``(N, ..., C)``, the classes on the **last** axis (sequences are
    ``(N, T, C)``; PyTorch puts them on axis 1: compare ``np.moveaxis(logits, -1, 1)`` with
    ``torch.nn.functional.cross_entropy``). ``labels``: integer classes ``(N, ...)``, or float
    probability rows of ``logits``' shape (cast to its dtype).

    PyTorch's options and semantics:

    - ``weight: (C,)`` (``logits``' dtype): position ``i`` counts ``weight[y_i]`` times, and
      ``"mean"`` is ``sum_i w[y_i] loss_i / sum_i w[y_i]`` over positions not ignored. With
      probability rows the loss is ``-sum_c w[c] t[c] log p[c]`` and ``"mean"`` divides by the
      number of positions.
    - ``ignore_index``: positions whose label equals it add nothing and are not counted
      (integer labels only).
    - ``label_smoothing = eps``: ``(1 - eps) * nll + eps / C * sum_c w[c] * -log p[c]`` per
      position, divided by the same weighted count.
    - ``reduction``: ``"mean"`` (the default), ``"sum"`` (both give a Python ``float``) or
      ``"none"``: the per-position losses ``(N, ...)`` (times their class weight, 0 where
      ignored) and the gradient of their **sum**, so ``grad * v[..., None]`` is the gradient of
      ``sum(v * losses)`` for per-example weights ``v``.

    Returns ``(loss, dlogits)``, ``dlogits`` of ``logits``' shape and dtype. Stable for any
    finite logits. An empty batch gives ``(0.0, zeros)`` (PyTorch: NaN). When every position
    is ignored or has class weight 0, ``"mean"`` is ``nan`` as in PyTorch, with a zero
    gradient (PyTorch's is zero for ignored positions and NaN for zero weights).

    >>> loss, grad = softmax_cross_entropy(np.zeros((2, 10)), np.array([3, 7]))
    >>> round(loss, 4)  # ln 10
    2.3026
    >>> losses, grad = softmax_cross_entropy(np.zeros((2, 3, 4)), np.array([[0, 1, -1], [2, -1, -1]]),
    ...                                      ignore_index=-1, reduction="none")
    >>> losses.round(4)
    array([[1.3863, 1.3863, 0.    ],
           [1.3863, 0.    , 0.    ]])
    """
    where = "softmax_cross_entropy"
    logits = class_scores(where, logits)
    ignore_index = ignore_index_option(where, ignore_index)
    labels = class_labels(where, labels, logits, ignore_index=ignore_index)
    weight = class_weight(where, weight, logits)
    eps = validate.probability(where, "label_smoothing", label_smoothing)
    reduction = reduction_choice(where, reduction)
    if labels.ndim == logits.ndim:
        loss, grad, total = _probability_targets(logits, labels, weight, eps)
    else:
        loss, grad, total = _index_targets(logits, labels, weight, ignore_index, eps)
    return reduce(loss, grad, reduction, total)


@overload
def nll_loss(log_probs: np.ndarray, labels: np.ndarray, *, weight: np.ndarray | None = ...,
             ignore_index: int | None = ..., reduction: MeanOrSum = ...) -> tuple[float, np.ndarray]: ...
@overload
def nll_loss(log_probs: np.ndarray, labels: np.ndarray, *, weight: np.ndarray | None = ...,
             ignore_index: int | None = ..., reduction: Literal["none"]) -> tuple[np.ndarray, np.ndarray]: ...
def nll_loss(log_probs: np.ndarray, labels: np.ndarray, *, weight: np.ndarray | None = None,
             ignore_index: int | None = None, reduction: str = "mean") -> tuple[float | np.ndarray, np.ndarray]:
    """Negative log-likelihood ``-w[y] * log_probs[..., y]`` of integer labels, PyTorch's ``nll_loss``.

    ``log_probs: (N, C)`` or ``(N, ..., C)``, classes on the last axis (for example the output
    of ``LogSoftmax``); ``labels: (N, ...)`` integers in ``[0, C)`` or ``ignore_index``.
    ``weight``, ``ignore_index`` and ``reduction`` mean what they do in
    :func:`softmax_cross_entropy` (weighted mean; ``nan`` with a zero gradient when nothing
    counts; ``"none"`` gives ``(N, ...)``). Returns ``(loss, dlog_probs)``.

    >>> loss, grad = nll_loss(np.log(np.array([[0.5, 0.25, 0.25]])), np.array([1]))
    >>> round(loss, 4), grad  # ln 4
    (1.3863, array([[ 0., -1.,  0.]]))
    """
    where = "nll_loss"
    log_probs = class_scores(where, log_probs, "log_probs")
    ignore_index = ignore_index_option(where, ignore_index)
    labels = class_labels(where, labels, log_probs, "log_probs", ignore_index=ignore_index, probabilities=False)
    weight = class_weight(where, weight, log_probs, "log_probs")
    reduction = reduction_choice(where, reduction)
    safe, wy, keep = gather_targets(labels, weight, ignore_index, log_probs.dtype)
    at = safe[..., None]
    picked = np.take_along_axis(log_probs, at, axis=-1)[..., 0]
    if keep is not None:  # an ignored position adds 0 even where its stand-in class has log p = -inf
        picked = np.where(keep, picked, 0)
    loss = -wy * picked
    grad = np.zeros_like(log_probs)
    np.put_along_axis(grad, at, -wy[..., None], axis=-1)
    return reduce(loss, grad, reduction, float(wy.sum(dtype=np.float64)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of positions whose arg-max over the last axis equals the label.

    ``logits: (N, C)`` or ``(N, ..., C)``; ``labels``: integer classes ``(N, ...)`` or
    probability rows (their arg-max is the class). 0.0 for an empty batch.
    """
    logits = class_scores("accuracy", logits)
    labels = class_labels("accuracy", labels, logits)
    if labels.ndim == logits.ndim:
        labels = labels.argmax(axis=-1)
    if labels.size == 0:
        return 0.0
    return float(np.mean(logits.argmax(axis=-1) == labels))
