"""Elementwise regression losses: squared error, absolute error, Huber and smooth L1."""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np

from fnn import validate
from fnn.losses._reduce import MeanOrSum, float_array, matching, reduce, reduction_choice

__all__ = ["mse", "l1_loss", "huber_loss", "smooth_l1_loss"]


def _difference(where: str, pred: Any, target: Any) -> np.ndarray:
    """``pred - target`` after checking that both are arrays of the same float dtype and shape."""
    pred = float_array(where, "pred", pred)
    return pred - matching(where, "target", target, "pred", pred)


@overload
def mse(pred: np.ndarray, target: np.ndarray, *, reduction: MeanOrSum = ...) -> tuple[float, np.ndarray]: ...
@overload
def mse(pred: np.ndarray, target: np.ndarray, *, reduction: Literal["none"]) -> tuple[np.ndarray, np.ndarray]: ...
def mse(pred: np.ndarray, target: np.ndarray, *, reduction: str = "mean") -> tuple[float | np.ndarray, np.ndarray]:
    """Squared error ``(pred - target) ** 2`` per element, PyTorch's ``mse_loss``.

    ``pred``, ``target``: any shape, the same shape and dtype (no broadcasting, no cast).
    ``reduction``: ``"mean"`` over every element (the default), ``"sum"``, or ``"none"``
    (the elementwise losses and the gradient of their sum). Returns ``(loss, dpred)``.

    >>> mse(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    (5.0, array([1., 3.]))
    """
    d = _difference("mse", pred, target)
    reduction = reduction_choice("mse", reduction)
    return reduce(d * d, 2 * d, reduction)


@overload
def l1_loss(pred: np.ndarray, target: np.ndarray, *, reduction: MeanOrSum = ...) -> tuple[float, np.ndarray]: ...
@overload
def l1_loss(pred: np.ndarray, target: np.ndarray, *,
            reduction: Literal["none"]) -> tuple[np.ndarray, np.ndarray]: ...
def l1_loss(pred: np.ndarray, target: np.ndarray, *,
            reduction: str = "mean") -> tuple[float | np.ndarray, np.ndarray]:
    """Absolute error ``|pred - target|`` per element, PyTorch's ``l1_loss``; its gradient is
    ``sign(pred - target)`` (0 where they are equal). Shapes and ``reduction`` as in :func:`mse`.

    >>> l1_loss(np.array([1.0, -3.0]), np.array([0.0, 0.0]), reduction="sum")
    (4.0, array([ 1., -1.]))
    """
    d = _difference("l1_loss", pred, target)
    reduction = reduction_choice("l1_loss", reduction)
    return reduce(np.abs(d), np.sign(d), reduction)


@overload
def huber_loss(pred: np.ndarray, target: np.ndarray, *, delta: float = ...,
               reduction: MeanOrSum = ...) -> tuple[float, np.ndarray]: ...
@overload
def huber_loss(pred: np.ndarray, target: np.ndarray, *, delta: float = ...,
               reduction: Literal["none"]) -> tuple[np.ndarray, np.ndarray]: ...
def huber_loss(pred: np.ndarray, target: np.ndarray, *, delta: float = 1.0,
               reduction: str = "mean") -> tuple[float | np.ndarray, np.ndarray]:
    """Huber loss per element, PyTorch's ``huber_loss``: ``d ** 2 / 2`` where ``|d| < delta``,
    else ``delta * (|d| - delta / 2)``, with ``d = pred - target`` and ``delta > 0`` (default 1,
    PyTorch's). It equals ``delta * smooth_l1_loss(beta=delta)``. Shapes and ``reduction`` as in
    :func:`mse`.

    >>> huber_loss(np.array([0.5, 3.0]), np.zeros(2), delta=1.0, reduction="none")
    (array([0.125, 2.5  ]), array([0.5, 1. ]))
    """
    d = _difference("huber_loss", pred, target)
    delta = validate.number("huber_loss", "delta", delta, low=0.0, low_open=True)
    reduction = reduction_choice("huber_loss", reduction)
    a = np.abs(d)
    small = a < delta
    loss = np.where(small, 0.5 * d * d, delta * (a - 0.5 * delta))
    return reduce(loss, np.where(small, d, delta * np.sign(d)), reduction)


@overload
def smooth_l1_loss(pred: np.ndarray, target: np.ndarray, *, beta: float = ...,
                   reduction: MeanOrSum = ...) -> tuple[float, np.ndarray]: ...
@overload
def smooth_l1_loss(pred: np.ndarray, target: np.ndarray, *, beta: float = ...,
                   reduction: Literal["none"]) -> tuple[np.ndarray, np.ndarray]: ...
def smooth_l1_loss(pred: np.ndarray, target: np.ndarray, *, beta: float = 1.0,
                   reduction: str = "mean") -> tuple[float | np.ndarray, np.ndarray]:
    """Smooth L1 loss per element, PyTorch's ``smooth_l1_loss``: ``d ** 2 / (2 * beta)`` where
    ``|d| < beta``, else ``|d| - beta / 2``, with ``d = pred - target`` and ``beta >= 0``
    (default 1, PyTorch's; ``beta = 0`` is :func:`l1_loss`). Shapes and ``reduction`` as in
    :func:`mse`.

    >>> smooth_l1_loss(np.array([0.5, 3.0]), np.zeros(2), beta=1.0, reduction="none")
    (array([0.125, 2.5  ]), array([0.5, 1. ]))
    """
    d = _difference("smooth_l1_loss", pred, target)
    beta = validate.number("smooth_l1_loss", "beta", beta, low=0.0)
    reduction = reduction_choice("smooth_l1_loss", reduction)
    if beta == 0:
        return reduce(np.abs(d), np.sign(d), reduction)
    a = np.abs(d)
    small = a < beta
    loss = np.where(small, (0.5 / beta) * d * d, a - 0.5 * beta)
    return reduce(loss, np.where(small, d / d.dtype.type(beta), np.sign(d)), reduction)
