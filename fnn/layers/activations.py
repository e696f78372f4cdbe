"""Pointwise activations and the softmax family. None of them has parameters."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn.core import Layer, parameterless

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax"]


def ReLU() -> Layer:
    """``y = max(x, 0)``, any shape. The gradient at 0 is 0 (as in PyTorch). The vjp keeps ``y``."""

    def forward(x: np.ndarray) -> Any:
        y = np.maximum(x, 0)
        return y, lambda dy: dy * (y > 0)

    return parameterless("ReLU()", forward)


def LeakyReLU(slope: float = 0.01) -> Layer:
    """``y = x`` for ``x > 0`` else ``slope * x``, any shape. Default slope 0.01 (PyTorch's)."""
    if isinstance(slope, bool) or not isinstance(slope, (int, float, np.integer, np.floating)):
        raise TypeError(f"LeakyReLU: slope must be a number, got {slope!r}")
    if not np.isfinite(slope):
        raise ValueError(f"LeakyReLU: slope must be a finite number, got {slope!r}")
    slope = float(slope)

    def forward(x: np.ndarray) -> Any:
        pos = x > 0
        y = np.where(pos, x, x * x.dtype.type(slope))
        return y, lambda dy: np.where(pos, dy, dy * dy.dtype.type(slope))

    return parameterless(f"LeakyReLU({slope})", forward)


def Sigmoid() -> Layer:
    """Logistic function ``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x / 2)) / 2`` so it never overflows."""

    def forward(x: np.ndarray) -> Any:
        y = 0.5 * (1 + np.tanh(0.5 * x))
        return y, lambda dy: dy * y * (1 - y)

    return parameterless("Sigmoid()", forward)


def Tanh() -> Layer:
    """Hyperbolic tangent, any shape."""

    def forward(x: np.ndarray) -> Any:
        y = np.tanh(x)
        return y, lambda dy: dy * (1 - y * y)

    return parameterless("Tanh()", forward)


def _check_axis(kind: str, axis: int, x: np.ndarray) -> None:
    if not -x.ndim <= axis < x.ndim or axis in (0, -x.ndim):
        raise ValueError(f"{kind}: axis {axis} is not a feature axis of input with shape {x.shape}")


def _empty_axis(x: np.ndarray) -> Any:
    """The result over an empty softmax axis: an empty ``y`` and ``dx`` of the input's shape and dtype
    (as PyTorch gives), instead of the max reduction's error."""
    return np.empty_like(x), np.zeros_like


def _axis_arg(name: str, axis: Any) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: axis must be an int, got {axis!r}")
    return int(axis)


def Softmax(axis: int = -1) -> Layer:
    """Softmax along ``axis`` (default the last), stable for large inputs (the max is subtracted).

    ``x: (N, ...) -> y`` of the same shape; an empty ``axis`` gives an empty ``y`` (and ``dx``).
    """
    axis = _axis_arg("Softmax", axis)
    kind = "Softmax()" if axis == -1 else f"Softmax(axis={axis})"

    def forward(x: np.ndarray) -> Any:
        _check_axis(kind, axis, x)
        if x.shape[axis] == 0:
            return _empty_axis(x)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        y = e / e.sum(axis=axis, keepdims=True)
        return y, lambda dy: y * (dy - (dy * y).sum(axis=axis, keepdims=True))

    return parameterless(kind, forward)


def LogSoftmax(axis: int = -1) -> Layer:
    """Log of the softmax along ``axis`` (default the last), computed as ``x - logsumexp(x)``.

    ``x: (N, ...) -> y`` of the same shape; an empty ``axis`` gives an empty ``y`` (and ``dx``).
    """
    axis = _axis_arg("LogSoftmax", axis)
    kind = "LogSoftmax()" if axis == -1 else f"LogSoftmax(axis={axis})"

    def forward(x: np.ndarray) -> Any:
        _check_axis(kind, axis, x)
        if x.shape[axis] == 0:
            return _empty_axis(x)
        z = x - x.max(axis=axis, keepdims=True)
        y = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
        return y, lambda dy: dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)

    return parameterless(kind, forward)
