"""The one reduction every loss shares, and the array checks the losses have in common."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from fnn import validate

MeanOrSum = Literal["mean", "sum"]
"""The reductions that give a Python ``float``; ``"none"`` gives the per-position array."""

REDUCTIONS = ("mean", "sum", "none")
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def reduction_choice(where: str, reduction: Any, options: tuple[str, ...] = REDUCTIONS) -> str:
    """``reduction`` checked against ``options`` (``TypeError`` for a non-string)."""
    return validate.choice(where, "reduction", reduction, options)


def reduce(loss: np.ndarray, grad: np.ndarray, reduction: str,
           total: float | None = None) -> tuple[float | np.ndarray, np.ndarray]:
    """Reduce per-position losses, given ``grad``, the gradient of ``loss.sum()``.

    ``"none"`` returns both as they are; ``"sum"`` the float64 sum and ``grad``; any other
    reduction (``"mean"``, ``"batchmean"``) divides both by ``total`` (``loss.size`` by
    default). An empty ``loss`` gives ``(0.0, zeros)`` (fnn's empty-batch rule, where
    PyTorch gives NaN); a zero ``total`` with positions present (every target ignored or
    of class weight 0) gives PyTorch's ``nan`` and a zero gradient. ``grad`` is the
    caller's own array and may be scaled in place.
    """
    loss, grad = np.asarray(loss), np.asarray(grad)  # 0-d arithmetic gives numpy scalars
    if reduction == "none":
        return loss, grad
    if loss.size == 0:
        return 0.0, np.zeros_like(grad)
    value = float(loss.sum(dtype=np.float64))
    if reduction == "sum":
        return value, grad
    total = loss.size if total is None else total
    if total == 0:
        return math.nan, np.zeros_like(grad)
    grad /= grad.dtype.type(total)
    return value / total, grad


def float_array(where: str, name: str, x: Any) -> np.ndarray:
    """``x`` as it is when it is a float32 or float64 numpy array; ``TypeError`` otherwise."""
    if not isinstance(x, np.ndarray) or x.dtype not in FLOATS:
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{where}: {name} must be a float32 or float64 array, got {got}")
    return x


def matching(where: str, name: str, y: Any, like_name: str, like: np.ndarray) -> np.ndarray:
    """``y`` as an array of exactly ``like``'s dtype and shape: nothing is cast or broadcast."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":  # object arrays would turn None into NaN, strings fail inside numpy
        raise TypeError(f"{where}: {name} must be a real numeric array, got dtype {y.dtype}")
    if y.dtype != like.dtype:
        raise TypeError(f"{where}: {name} has dtype {y.dtype} but {like_name} has dtype {like.dtype}; pass "
                        f"{name}.astype(np.{like.dtype}) (nothing is cast silently)")
    if y.shape != like.shape:
        raise ValueError(f"{where}: {like_name} has shape {like.shape} but {name} has shape {y.shape}; "
                         f"they must match exactly (no broadcasting)")
    return y


def weight_array(where: str, name: str, w: Any, like_name: str, like: np.ndarray,
                 shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A weight array of ``like``'s dtype: of exactly ``shape``, or (``shape=None``) of any shape
    that broadcasts to ``like.shape`` without changing it."""
    if not isinstance(w, np.ndarray):
        raise TypeError(f"{where}: {name} must be a numpy array, got {type(w).__name__}")
    if w.dtype != like.dtype:
        raise TypeError(f"{where}: {name} has dtype {w.dtype} but {like_name} has dtype {like.dtype}; pass "
                        f"{name}.astype(np.{like.dtype}) (nothing is cast silently)")
    if shape is not None:
        if w.shape != shape:
            raise ValueError(f"{where}: {name} must have shape {shape} for {like_name} of shape {like.shape}, "
                             f"got {w.shape}")
        return w
    try:
        fits = w.ndim <= like.ndim and np.broadcast_shapes(w.shape, like.shape) == like.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{where}: {name} of shape {w.shape} does not broadcast to the shape {like.shape} of "
                         f"{like_name} (it may have fewer axes, each 1 or equal)")
    return w
