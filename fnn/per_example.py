"""Per-example gradient norms and per-example clipping (DP-SGD style).

For a batch loss ``L = sum_n l_n`` the vjp is linear in ``dy``, so the parameter
gradient is the sum of per-example contributions ``g_n = vjp(dy restricted to
example n)``. :func:`grad_norms` returns ``|g_n|`` for every example from what the
forward cached and the output gradients, without forming the ``g_n``: Dense uses
``|x_n|^2 |dy_n|^2`` (Gram matrices for inputs with extra axes) and Conv2D reads
the batched product it computes for ``dw`` anyway. :func:`clipped_grads` then
rescales each row of ``dy`` so that every ``g_n`` has norm at most ``max_norm``
and runs the vjp once more: ``sum_n min(1, max_norm / |g_n|) g_n``.

Supported: Dense, Conv2D, parameterless layers, and ``serial``/``parallel``/``residual``
built from them; other layers with parameters raise ``TypeError``.

>>> from fnn.layers import Dense, ReLU
>>> net = fnn.serial(Dense(4), ReLU(), Dense(2))
>>> params = net.init(fnn.random.key(0), (3,), np.float64)
>>> y, vjp = net.apply(params, np.ones((5, 3)))
>>> grad_norms(vjp, np.ones_like(y)).shape
(5,)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import tree as _tree
from fnn import validate
from fnn.combinators import sq_norms_of

__all__ = ["grad_norms", "clipped_grads"]


def grad_norms(vjp: Callable[..., Any], dy: Any) -> np.ndarray:
    """``(N,)`` L2 norms of each example's contribution to ``dparams`` for cotangent ``dy``."""
    sq = np.asarray(sq_norms_of(vjp, "grad_norms")(dy))
    n = len(_tree.leaves(dy)[0])  # a model without parameters gives a scalar 0: one per example instead
    return np.sqrt(np.maximum(np.broadcast_to(sq, (n,)), 0))


def clipped_grads(vjp: Callable[..., Any], dy: Any, max_norm: float) -> tuple[Any, np.ndarray]:
    """``(dparams, norms)``: the sum of per-example gradients, each clipped to ``max_norm``.

    ``dy`` is an array ``(N, ...)`` (or a tuple of them, for a tuple output); its rows are
    scaled by ``min(1, max_norm / norm_n)`` and the vjp is called again (the input
    gradient is skipped).
    """
    max_norm = validate.number("clipped_grads", "max_norm", max_norm, low=0.0)
    norms = grad_norms(vjp, dy)
    with np.errstate(divide="ignore"):
        factor = np.minimum(1.0, max_norm / norms)
    scaled = _tree.map(lambda d: d * factor.astype(d.dtype).reshape((-1,) + (1,) * (d.ndim - 1)), dy)
    grads, _ = vjp(scaled, need_dx=False)
    return grads, norms
