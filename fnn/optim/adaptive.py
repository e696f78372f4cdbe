"""Adaptive optimizers: Adagrad, RMSprop, Adam and AdamW, each with PyTorch's documented
update rule and default hyperparameters, so a ported training script follows the same
trajectory."""

from __future__ import annotations

import math

import numpy as np

from fnn import validate
from fnn.optim.base import DecayMask, Optimizer, Schedule, leafwise

__all__ = ["adagrad", "rmsprop", "adam", "adamw"]

Bufs = dict[str, np.ndarray]


def rms_moments(bufs: Bufs, g: np.ndarray, alpha: float, centered: bool) -> tuple[Bufs, np.ndarray]:
    """RMSprop's running averages after gradient ``g`` and the variance estimate they give:
    ``square_avg = alpha s + (1 - alpha) g²``, with ``centered`` also ``grad_avg = alpha a + (1 - alpha) g``
    and ``v = square_avg - grad_avg²`` (else ``v = square_avg``). Shared by :func:`rmsprop` and
    :func:`fnn.optim.scale_by_rms`."""
    out = {"square_avg": alpha * bufs["square_avg"] + (1 - alpha) * g * g}
    v = out["square_avg"]
    if centered:
        out["grad_avg"] = alpha * bufs["grad_avg"] + (1 - alpha) * g
        v = v - out["grad_avg"] * out["grad_avg"]
    return out, v


def adam_moments(bufs: Bufs, g: np.ndarray, t: int, b1: float, b2: float, eps: float,
                 amsgrad: bool) -> tuple[Bufs, np.ndarray]:
    """Adam's moments after gradient ``g`` at step ``t`` (from 1) and ``torch.optim.Adam``'s denominator
    ``sqrt(v) / sqrt(1 - b2^t) + eps`` (``v`` the running max of the second moment with ``amsgrad``).
    Shared by :func:`adam`, :func:`adamw` and :func:`fnn.optim.scale_by_adam`."""
    out = {"exp_avg": b1 * bufs["exp_avg"] + (1 - b1) * g,
           "exp_avg_sq": b2 * bufs["exp_avg_sq"] + (1 - b2) * g * g}
    v = out["exp_avg_sq"]
    if amsgrad:
        out["max_exp_avg_sq"] = v = np.maximum(bufs["max_exp_avg_sq"], v)
    return out, np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps


def adagrad(lr: float | Schedule = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            decay_mask: DecayMask | None = None) -> Optimizer:
    """``torch.optim.Adagrad``: ``g += wd * p``; ``s += g²``;
    ``p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)``. State: ``{"step", "sum"}``, where
    ``"sum"`` starts at ``initial_accumulator_value`` (as ``init`` returns it).

    >>> opt = fnn.optim.adagrad(initial_accumulator_value=0.5)
    >>> opt.init({"w": np.zeros(2)})["sum"]["w"].tolist()
    [0.5, 0.5]
    """
    where = "adagrad"
    lr_decay = validate.number(where, "lr_decay", lr_decay, low=0.0)
    weight_decay = validate.number(where, "weight_decay", weight_decay, low=0.0)
    init_acc = validate.number(where, "initial_accumulator_value", initial_accumulator_value, low=0.0)
    eps = validate.number(where, "eps", eps, low=0.0)

    def rule(p: np.ndarray, g: np.ndarray, bufs: Bufs, t: int, lr: float, wd: float) -> tuple[np.ndarray, Bufs]:
        if wd:
            g = g + wd * p
        s = bufs["sum"] + g * g
        clr = lr / (1 + (t - 1) * lr_decay)
        return p - clr * g / (np.sqrt(s) + eps), {"sum": s}

    return leafwise(where, lr, ("sum",), rule, weight_decay, decay_mask, initial={"sum": init_acc})


def rmsprop(lr: float | Schedule = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False, decay_mask: DecayMask | None = None) -> Optimizer:
    """``torch.optim.RMSprop``: ``v = alpha v + (1 - alpha) g²``; with ``centered`` the
    running mean ``m`` of ``g`` is tracked and ``v - m²`` used; the step
    ``g / (sqrt(v) + eps)`` goes through a momentum buffer when ``momentum > 0``.
    State: ``{"step", "square_avg"}`` plus ``"grad_avg"`` and ``"momentum"`` when used."""
    where = "rmsprop"
    alpha = validate.number(where, "alpha", alpha, low=0.0, high=1.0)
    eps = validate.number(where, "eps", eps, low=0.0)
    weight_decay = validate.number(where, "weight_decay", weight_decay, low=0.0)
    momentum = validate.number(where, "momentum", momentum, low=0.0)
    centered = validate.boolean(where, "centered", centered)
    buffers = ("square_avg",) + (("grad_avg",) if centered else ()) + (("momentum",) if momentum else ())

    def rule(p: np.ndarray, g: np.ndarray, bufs: Bufs, t: int, lr: float, wd: float) -> tuple[np.ndarray, Bufs]:
        if wd:
            g = g + wd * p
        out, v = rms_moments(bufs, g, alpha, centered)
        step = g / (np.sqrt(v) + eps)
        if momentum:
            out["momentum"] = momentum * bufs["momentum"] + step
            step = out["momentum"]
        return p - lr * step, out

    return leafwise(where, lr, buffers, rule, weight_decay, decay_mask)


def _adam_rule(b1: float, b2: float, eps: float, amsgrad: bool, decoupled: bool):  # type: ignore[no-untyped-def]
    def rule(p: np.ndarray, g: np.ndarray, bufs: Bufs, t: int, lr: float, wd: float) -> tuple[np.ndarray, Bufs]:
        if wd and decoupled:
            p = p * (1 - lr * wd)
        elif wd:
            g = g + wd * p
        out, denom = adam_moments(bufs, g, t, b1, b2, eps, amsgrad)
        return p - (lr / (1 - b1 ** t)) * out["exp_avg"] / denom, out

    return rule


def _adam_args(where: str, betas: tuple[float, float], eps: float, weight_decay: float,
               amsgrad: bool) -> tuple[float, float, float, float, bool]:
    """The checked hyperparameters of Adam and AdamW: each beta a number in ``[0, 1)``."""
    b1, b2 = validate.number_pair(where, "betas", betas, low=0.0, high=1.0, high_open=True)
    return (b1, b2, validate.number(where, "eps", eps, low=0.0),
            validate.number(where, "weight_decay", weight_decay, low=0.0),
            validate.boolean(where, "amsgrad", amsgrad))


def adam(lr: float | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0, amsgrad: bool = False, decay_mask: DecayMask | None = None) -> Optimizer:
    """``torch.optim.Adam``: ``g += wd * p`` (L2, coupled); ``m = b1 m + (1 - b1) g``;
    ``v = b2 v + (1 - b2) g²`` (``amsgrad``: use the running max of ``v``);
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    State: ``{"step", "exp_avg", "exp_avg_sq"}`` plus ``"max_exp_avg_sq"`` with ``amsgrad``."""
    b1, b2, eps, weight_decay, amsgrad = _adam_args("adam", betas, eps, weight_decay, amsgrad)
    buffers = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
    return leafwise("adam", lr, buffers, _adam_rule(b1, b2, eps, amsgrad, False), weight_decay, decay_mask)


def adamw(lr: float | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 1e-2, amsgrad: bool = False, decay_mask: DecayMask | None = None) -> Optimizer:
    """``torch.optim.AdamW``: Adam with decoupled weight decay, ``p *= 1 - lr * wd`` before
    the Adam step (default ``weight_decay=0.01``, PyTorch's)."""
    b1, b2, eps, weight_decay, amsgrad = _adam_args("adamw", betas, eps, weight_decay, amsgrad)
    buffers = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
    return leafwise("adamw", lr, buffers, _adam_rule(b1, b2, eps, amsgrad, True), weight_decay, decay_mask)
