"""Layers that only move data: Flatten and Identity. Neither has parameters."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn.core import Layer, parameterless

__all__ = ["Flatten", "Identity"]


def _fresh(a: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``a``, copied if it may share memory with ``base`` (outputs never alias inputs)."""
    return a.copy() if np.may_share_memory(a, base) else a


def Flatten() -> Layer:
    """Flatten every axis but the batch axis: ``x: (N, d1, d2, ...) -> y: (N, d1 * d2 * ...)``."""

    def forward(x: np.ndarray) -> Any:
        shape = x.shape
        y = _fresh(x.reshape(shape[0], int(np.prod(shape[1:]))), x)
        return y, lambda dy: _fresh(dy.reshape(shape), dy)

    return parameterless("Flatten()", forward)


def Identity() -> Layer:
    """``y = x`` (a copy, so the output never aliases the input)."""

    def forward(x: np.ndarray) -> Any:
        return x.copy(), lambda dy: dy.copy()

    return parameterless("Identity()", forward)
