"""Checks for class scores (classes on the last axis), class labels and class weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import validate
from fnn.losses._reduce import FLOATS, weight_array


def class_scores(where: str, x: Any, name: str = "logits") -> np.ndarray:
    """``x: (N, C)`` or ``(N, ..., C)``, float32 or float64, ``C > 0``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: {name} must be a numpy array of shape (N, C) or (N, ..., C), "
                        f"got {type(x).__name__}")
    if x.dtype not in FLOATS:
        raise TypeError(f"{where}: {name} must be float32 or float64, got {x.dtype}")
    if x.ndim < 2 or x.shape[-1] == 0:
        raise ValueError(f"{where}: {name} must have shape (N, C) with C > 0, got {x.shape}; sequence "
                         f"{name} are (N, ..., C), with the classes on the last axis")
    return x


def ignore_index_option(where: str, ignore_index: Any) -> int | None:
    return None if ignore_index is None else validate.integer(where, "ignore_index", ignore_index)


def class_labels(where: str, labels: Any, x: np.ndarray, name: str = "logits", *, ignore_index: int | None = None,
                 probabilities: bool = True) -> np.ndarray:
    """Integer classes of shape ``x.shape[:-1]`` (each in ``[0, C)`` or ``ignore_index``), or, with
    ``probabilities``, float probability rows of ``x``'s shape (returned in ``x``'s dtype)."""
    labels = np.asarray(labels)
    lead, c = x.shape[:-1], x.shape[-1]
    if labels.dtype.kind in "iu":
        if labels.shape != lead:
            hint = " (squeeze the trailing axis)" if labels.shape == (*lead, 1) else ""
            raise ValueError(f"{where}: integer labels must have shape {lead} for {name} {x.shape}, "
                             f"got {labels.shape}{hint}")
        bad = (labels < 0) | (labels >= c)
        if ignore_index is not None:
            bad &= labels != ignore_index
        if bad.any():
            also = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
            raise ValueError(f"{where}: labels must be in [0, {c}) for {c} classes{also}, got {labels[bad][0]}")
        return labels
    if labels.dtype.kind == "f" and probabilities:
        if labels.shape != x.shape:
            hint = " (class indices must be an integer array)" if labels.shape in (lead, (*lead, 1)) else ""
            raise ValueError(f"{where}: float labels are probability rows of shape {x.shape}, "
                             f"got {labels.shape}{hint}")
        if ignore_index is not None:
            raise ValueError(f"{where}: ignore_index={ignore_index} applies to integer class labels only, "
                             f"got float probability rows (PyTorch refuses it too)")
        return labels.astype(x.dtype, copy=False)
    if probabilities:
        raise TypeError(f"{where}: labels must be integer classes of shape {lead} or float probability rows of "
                        f"shape {x.shape}, got dtype {labels.dtype}")
    raise TypeError(f"{where}: labels must be integer class indices of shape {lead}, got dtype {labels.dtype}")


def class_weight(where: str, weight: Any, x: np.ndarray, name: str = "logits") -> np.ndarray | None:
    """``None``, or a weight per class ``(C,)`` of ``x``'s dtype."""
    return None if weight is None else weight_array(where, "weight", weight, name, x, shape=x.shape[-1:])


def gather_targets(labels: np.ndarray, weight: np.ndarray | None, ignore_index: int | None,
                   dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(safe, wy, keep)``: the labels with ignored positions set to class 0; each position's
    weight ``weight[label]`` (1 without weights) in ``dtype``, 0 where ignored; and the mask of
    positions not ignored (``None`` without ``ignore_index``)."""
    if ignore_index is None:
        wy = np.ones(labels.shape, dtype) if weight is None else weight[labels]
        return labels, wy, None
    keep = labels != ignore_index
    safe = np.where(keep, labels, 0)
    wy = keep.astype(dtype) if weight is None else weight[safe] * keep
    return safe, wy, keep
