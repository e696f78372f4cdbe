"""Classification metrics on a batch of outputs: accuracy, top-k accuracy, the confusion matrix.

``outputs: (N, C)`` are class scores (logits, log-probabilities or probabilities: only
their order matters); ``labels`` are integer classes ``(N,)`` or probability rows
``(N, C)``, whose arg-max is then the class. :func:`~fnn.metrics.count_correct` gives the *count*
behind the accuracies, which is what to sum across batches and across ranks
(``fnn.distributed.reduce_metrics``) before dividing by the total.

A row is correct at ``k`` when its label is among its ``k`` highest scores, ties
broken towards the lower class index (as ``argmax`` does), so ``k = 1`` is the
arg-max rule. A row that holds a NaN is never correct.

>>> logits = np.array([[0.1, 2.0, 0.3], [1.0, 0.2, 0.5], [0.0, 0.1, 0.2]])
>>> labels = np.array([1, 2, 0])
>>> accuracy(logits, labels), top_k_accuracy(logits, labels, k=2)
(0.3333333333333333, 0.6666666666666666)
>>> confusion_matrix(labels, logits.argmax(axis=1), 3)
array([[0, 0, 1],
       [0, 1, 0],
       [1, 0, 0]])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import validate
from fnn.losses._labels import class_labels, class_scores

__all__ = ["accuracy", "top_k_accuracy", "count_correct", "confusion_matrix"]


def _check(where: str, outputs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``outputs`` as a float ``(N, C)`` array and ``labels`` as integer classes ``(N,)`` (probability
    rows give their arg-max), checked as the losses check their labels."""
    outputs = class_scores(where, outputs, "outputs")
    if outputs.ndim != 2:
        raise ValueError(f"{where}: outputs must have shape (N, C), got {outputs.shape}")
    labels = class_labels(where, labels, outputs, "outputs")
    return outputs, labels.argmax(axis=1) if labels.dtype.kind == "f" else labels


def _correct(outputs: np.ndarray, labels: np.ndarray, k: int) -> int:
    """:func:`count_correct` on checked ``outputs: (N, C)``, integer ``labels: (N,)`` and ``k``."""
    n, c = outputs.shape
    if n == 0:
        return 0
    true = np.take_along_axis(outputs, labels[:, None], axis=1)
    before = (outputs > true) | ((outputs == true) & (np.arange(c) < labels[:, None]))
    rank = before.sum(axis=1)  # how many classes come before the label in the sorted order
    return int(np.count_nonzero((rank < k) & ~np.isnan(outputs).any(axis=1)))


def count_correct(outputs: np.ndarray, labels: np.ndarray, k: int = 1) -> int:
    """How many rows of ``outputs: (N, C)`` have their label among their ``k`` highest scores.

    ``labels``: integer ``(N,)`` or probability rows ``(N, C)``. Ties go to the lower
    class index, so ``k=1`` counts ``outputs.argmax(axis=1) == labels``; rows with a NaN
    never count. ``k`` is in ``[1, C]``.
    """
    outputs, labels = _check("count_correct", outputs, labels)
    return _correct(outputs, labels, validate.integer("count_correct", "k", k, low=1, high=outputs.shape[1]))


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows of ``outputs: (N, C)`` whose arg-max is the label (0.0 for N = 0).

    ``labels``: integer ``(N,)`` or probability rows ``(N, C)``. The same as
    ``fnn.losses.accuracy`` except that a row holding a NaN is never correct.
    """
    outputs, labels = _check("accuracy", outputs, labels)
    return _correct(outputs, labels, 1) / len(labels) if len(labels) else 0.0


def top_k_accuracy(outputs: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """The fraction of rows of ``outputs: (N, C)`` whose label is among their ``k`` highest
    scores (0.0 for N = 0); ``k`` in ``[1, C]``, 5 by default (ImageNet's top-5)."""
    outputs, labels = _check("top_k_accuracy", outputs, labels)
    k = validate.integer("top_k_accuracy", "k", k, low=1, high=outputs.shape[1])
    return _correct(outputs, labels, k) / len(labels) if len(labels) else 0.0


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts: row = true class, column = predicted class.

    ``labels`` and ``predictions`` are integer classes ``(N,)`` in ``[0, n_classes)``
    (take ``outputs.argmax(axis=1)`` for the predictions). The trace is the number of
    correct rows; matrices of several batches or ranks add up.
    """
    where = "confusion_matrix"
    n_classes = validate.integer(where, "n_classes", n_classes, low=1)
    arrays = []
    for name, a in (("labels", labels), ("predictions", predictions)):
        a = np.asarray(a)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{where}: {name} must be integer classes, got dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"{where}: {name} must have shape (N,), got {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{where}: {name} must be in [0, {n_classes}), got values from {a.min()} to {a.max()}")
        arrays.append(a.astype(np.int64))
    if len(arrays[0]) != len(arrays[1]):
        raise ValueError(f"{where}: labels has {len(arrays[0])} entries but predictions has {len(arrays[1])}")
    counts = np.bincount(arrays[0] * n_classes + arrays[1], minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)
