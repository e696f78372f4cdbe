"""Kullback-Leibler divergence on log-probabilities."""

from __future__ import annotations

from typing import Literal, overload

import numpy as np

from fnn import validate
from fnn.losses._reduce import float_array, matching, reduce, reduction_choice

__all__ = ["kl_div"]


@overload
def kl_div(log_input: np.ndarray, target: np.ndarray, *, reduction: Literal["mean", "batchmean", "sum"] = ...,
           log_target: bool = ...) -> tuple[float, np.ndarray]: ...
@overload
def kl_div(log_input: np.ndarray, target: np.ndarray, *, reduction: Literal["none"],
           log_target: bool = ...) -> tuple[np.ndarray, np.ndarray]: ...
def kl_div(log_input: np.ndarray, target: np.ndarray, *, reduction: str = "mean",
           log_target: bool = False) -> tuple[float | np.ndarray, np.ndarray]:
    """PyTorch's ``kl_div``: pointwise ``target * (log target - log_input)``, with ``0 * log 0 = 0``.

    ``log_input``: log-probabilities ``log q``, any shape; ``target``: the same shape and dtype,
    probabilities ``p >= 0`` or, with ``log_target=True``, log-probabilities (the pointwise
    term is then ``exp(target) * (target - log_input)``, and 0 where ``target = -inf``, the log of
    probability 0, where PyTorch gives NaN). ``reduction``:

    - ``"mean"`` (PyTorch's default): the mean over **every element**, which is not the KL
      divergence (PyTorch warns about it);
    - ``"batchmean"``: the sum divided by the batch size ``log_input.shape[0]``, the true
      ``KL(p || q)`` per example when the rows are distributions;
    - ``"sum"``, or ``"none"`` (the pointwise terms and the gradient of their sum).

    Returns ``(loss, dlog_input)``; the gradient is ``-target`` (``-exp(target)`` with
    ``log_target``) scaled by the reduction.

    >>> p = np.array([[0.5, 0.5, 0.0]])
    >>> round(kl_div(np.log(np.array([[0.25, 0.25, 0.5]])), p, reduction="batchmean")[0], 6)  # ln 2
    0.693147
    """
    where = "kl_div"
    x = float_array(where, "log_input", log_input)
    t = matching(where, "target", target, "log_input", x)
    reduction = reduction_choice(where, reduction, ("mean", "batchmean", "sum", "none"))
    if validate.boolean(where, "log_target", log_target):
        p = np.exp(t)
        loss = p * (np.where(p > 0, t, x) - x)  # 0 where target = -inf (PyTorch: NaN)
    else:
        if (t < 0).any():
            raise ValueError(f"{where}: target must hold probabilities >= 0 (or pass log_target=True for "
                             f"log-probabilities), got {t[t < 0].flat[0]}")
        p = t
        loss = p * np.log(np.where(p > 0, p, 1)) - p * x  # xlogy: 0 where p == 0
    total = (x.shape[0] if x.ndim else 1) if reduction == "batchmean" else None
    return reduce(loss, -p, reduction, total)
