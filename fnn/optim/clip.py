"""Gradient clipping as tree functions, applied to ``grads`` before ``update``."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import tree as _tree
from fnn import validate

__all__ = ["clip_by_global_norm", "clip_by_value"]


def clip_by_global_norm(grads: Any, max_norm: float, eps: float = 1e-6) -> Any:
    """Scale every leaf by ``max_norm / (norm + eps)`` when the global L2 norm exceeds
    ``max_norm`` (``torch.nn.utils.clip_grad_norm_``'s rule); otherwise return ``grads`` unchanged.

    The norm itself is :func:`fnn.tree.global_norm` of ``grads``.
    """
    max_norm = validate.number("clip_by_global_norm", "max_norm", max_norm, low=0.0)
    eps = validate.number("clip_by_global_norm", "eps", eps, low=0.0)
    norm = _tree.global_norm(grads)
    if not np.isfinite(norm) or norm <= max_norm:
        return grads if np.isfinite(norm) else _tree.scale(float("nan"), grads)
    return _tree.scale(max_norm / (norm + eps), grads)


def clip_by_value(grads: Any, max_value: float) -> Any:
    """Clip every entry to ``[-max_value, max_value]``."""
    max_value = validate.number("clip_by_value", "max_value", max_value, low=0.0)
    return _tree.map(lambda g: np.clip(g, -max_value, max_value), grads)
