"""Penalties on parameter trees."""

from __future__ import annotations

from typing import Any

from fnn import tree as _tree
from fnn import validate

__all__ = ["l2_penalty"]


def l2_penalty(params: Any, weight: float) -> tuple[float, Any]:
    """``weight / 2 * sum of squares of every leaf``, and its gradient ``weight * params`` (a tree
    like ``params``, each leaf in its own dtype).

    >>> value, grad = l2_penalty({"w": np.array([3.0, 4.0])}, 0.5)
    >>> value, grad
    (6.25, {'w': array([1.5, 2. ])})
    """
    weight = validate.number("l2_penalty", "weight", weight, low=0.0)
    value = 0.5 * weight * _tree.global_norm(params) ** 2
    return value, _tree.map(lambda p: p * p.dtype.type(weight), params)
