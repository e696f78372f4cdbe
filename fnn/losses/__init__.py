"""Losses and metrics, each fused with its gradient.

A loss returns ``(value, grad)``: ``grad`` is the gradient of ``value`` with respect to the
first argument, of its shape and dtype (float32 stays float32). The other arguments are
data, never differentiated; every option is keyword-only. Inputs are never modified.

PyTorch's semantics, with two differences of layout and one of edge case:

- **Classes on the last axis.** ``softmax_cross_entropy`` and ``nll_loss`` take ``(N, C)``
  or ``(N, ..., C)`` scores, so sequence logits ``(N, T, C)`` come straight from a
  ``Dense`` layer. PyTorch puts the classes on axis 1: compare ``fnn`` on ``x`` with
  ``torch`` on ``np.moveaxis(x, -1, 1)`` (the labels ``(N, ...)`` are the same).
- **No silent broadcast or cast.** Prediction and target must have the same shape and dtype;
  a class ``weight`` has the scores' dtype. The explicit broadcasts are PyTorch's
  ``pos_weight`` (over the last axis) and ``binary_cross_entropy_with_logits``'s ``weight``.
- **reduction**: ``"mean"`` (the default) and ``"sum"`` give a Python ``float``; ``"none"``
  gives the per-position losses and the gradient of their *sum*: multiply it by per-example
  weights ``v`` (``v[..., None]`` for the class losses) to get the gradient of ``sum(v * losses)``.
  ``kl_div`` also has ``"batchmean"``. The cross-entropies' ``"mean"`` is PyTorch's weighted
  mean: ``sum w[y] l / sum w[y]`` over the positions not ignored.
- **Nothing to average.** An empty batch gives ``(0.0, zeros)`` (PyTorch gives NaN). A batch
  whose every position is ignored or has class weight 0 gives PyTorch's ``nan`` under
  ``"mean"``, with a zero gradient, so a step on it changes nothing.

>>> loss, grad = fnn.losses.mse(np.array([1.0, 3.0], np.float32), np.zeros(2, np.float32))
>>> loss, grad.dtype
(5.0, dtype('float32'))
"""

from fnn.losses.binary import binary_cross_entropy_with_logits
from fnn.losses.cross_entropy import accuracy, nll_loss, softmax_cross_entropy
from fnn.losses.divergence import kl_div
from fnn.losses.penalty import l2_penalty
from fnn.losses.regression import huber_loss, l1_loss, mse, smooth_l1_loss

__all__ = [
    "softmax_cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "mse",
    "l1_loss",
    "huber_loss",
    "smooth_l1_loss",
    "kl_div",
    "l2_penalty",
    "accuracy",
]
