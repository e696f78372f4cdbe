"""Layers that only move data: Flatten and Identity. Neither has parameters.

Each layer's maths is a pair of module-level functions on arrays, ``<layer>_forward(x)
-> (y, cache)`` and ``<layer>_backward(cache, dy) -> dx``; the vjp keeps only the cache
(for both, no array at all).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn.core import Layer, parameterless

__all__ = ["Flatten", "Identity", "flatten_forward", "flatten_backward", "identity_forward", "identity_backward"]

Arr = np.ndarray


def _fresh(a: Arr, base: Arr) -> Arr:
    """``a``, copied if it may share memory with ``base`` (outputs never alias inputs)."""
    return a.copy() if np.may_share_memory(a, base) else a


def _memory_order(a: Arr) -> tuple[int, ...]:
    """``a``'s axes from the largest stride to the smallest (its layout in memory)."""
    return tuple(sorted(range(a.ndim), key=lambda i: -abs(a.strides[i])))


def _empty_in_order(shape: tuple[int, ...], dtype: np.dtype, order: tuple[int, ...]) -> Arr:
    """An empty array of ``shape`` whose memory is laid out in axis ``order``."""
    return np.empty([shape[i] for i in order], dtype).transpose(np.argsort(order))


def flatten_forward(x: Arr) -> tuple[Arr, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``x: (N, d1, d2, ...) -> y: (N, d1 * d2 * ...)``, in C order and never a view of ``x``;
    the cache is ``x``'s shape and memory order of axes."""
    shape = x.shape
    return _fresh(x.reshape(shape[0], int(np.prod(shape[1:]))), x), (shape, _memory_order(x))


def flatten_backward(cache: tuple[tuple[int, ...], tuple[int, ...]], dy: Arr) -> Arr:
    """``dy: (N, d1 * d2 * ...) -> dx: (N, d1, d2, ...)``, laid out in memory as ``x`` was."""
    shape, order = cache
    dx = _empty_in_order(shape, dy.dtype, order)
    dx[...] = dy.reshape(shape)
    return dx


def identity_forward(x: Arr) -> tuple[Arr, None]:
    """``y = x``, a copy; no cache."""
    return x.copy(), None


def identity_backward(cache: None, dy: Arr) -> Arr:
    """``dx = dy``, a copy."""
    return dy.copy()


def Flatten() -> Layer:
    """Flatten every axis but the batch axis: ``x: (N, d1, d2, ...) -> y: (N, d1 * d2 * ...)``.

    ``dx`` comes back in the memory layout ``x`` had (batch-last after a Conv2D), so the
    layers before it read and write along matching strides.

    >>> Flatten().apply({}, np.zeros((2, 3, 4)))[0].shape
    (2, 12)
    """

    def forward(x: Arr) -> Any:
        y, cache = flatten_forward(x)
        return y, lambda dy: flatten_backward(cache, dy)

    return parameterless("Flatten()", forward)


def Identity() -> Layer:
    """``y = x`` (a copy, so the output never aliases the input), any shape."""

    def forward(x: Arr) -> Any:
        y, cache = identity_forward(x)
        return y, lambda dy: identity_backward(cache, dy)

    return parameterless("Identity()", forward)
