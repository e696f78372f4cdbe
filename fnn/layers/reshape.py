"""Layers that only move data: Flatten and Identity. Neither has parameters."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn.core import Layer, parameterless

__all__ = ["Flatten", "Identity"]


def _fresh(a: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``a``, copied if it may share memory with ``base`` (outputs never alias inputs)."""
    return a.copy() if np.may_share_memory(a, base) else a


def _memory_order(a: np.ndarray) -> tuple[int, ...]:
    """``a``'s axes from the largest stride to the smallest (its layout in memory)."""
    return tuple(sorted(range(a.ndim), key=lambda i: -abs(a.strides[i])))


def _empty_in_order(shape: tuple[int, ...], dtype: np.dtype, order: tuple[int, ...]) -> np.ndarray:
    """An empty array of ``shape`` whose memory is laid out in axis ``order``."""
    return np.empty([shape[i] for i in order], dtype).transpose(np.argsort(order))


def Flatten() -> Layer:
    """Flatten every axis but the batch axis: ``x: (N, d1, d2, ...) -> y: (N, d1 * d2 * ...)``.

    ``dx`` comes back in the memory layout ``x`` had (batch-last after a Conv2D), so the
    layers before it read and write along matching strides.
    """

    def forward(x: np.ndarray) -> Any:
        shape, order = x.shape, _memory_order(x)
        y = _fresh(x.reshape(shape[0], int(np.prod(shape[1:]))), x)

        def backward(dy: np.ndarray) -> np.ndarray:
            dx = _empty_in_order(shape, dy.dtype, order)
            dx[...] = dy.reshape(shape)
            return dx

        return y, backward

    return parameterless("Flatten()", forward)


def Identity() -> Layer:
    """``y = x`` (a copy, so the output never aliases the input)."""

    def forward(x: np.ndarray) -> Any:
        return x.copy(), lambda dy: dy.copy()

    return parameterless("Identity()", forward)
