"""Evaluation in batches, in inference mode, with metrics summed across batches and ranks."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import distributed as _dist
from fnn import validate
from fnn.core import Layer, check_is_layer
from fnn.inference import batch_length, predict, rows
from fnn.metrics import confusion_matrix
from fnn.training.step import LossFn, Metrics, check_targets, metric_sums, resolve_metrics, resolve_world

__all__ = ["evaluate", "EVALUATE_METRICS"]

EVALUATE_METRICS = ("loss", "accuracy", "top_k_accuracy", "confusion_matrix")
"""The metrics :func:`~fnn.training.evaluate` knows by name."""


def evaluate(net: Layer, params: Any, x: Any, y: np.ndarray, *, loss_fn: LossFn | None = None, state: Any = None,
             batch_size: int = 256, world: _dist.World | None = None, metrics: Metrics = None,
             top_k: int = 5) -> dict[str, Any]:
    """``net``'s metrics on ``x: (N, ...)`` (or a tuple of such arrays) and targets ``y: (N, ...)``,
    in evaluation mode, ``batch_size`` examples at a time.

    Each batch runs through :func:`fnn.predict` (``need_vjp=False``: no layer keeps
    anything for backward), with ``state``, the layer state training returned (BatchNorm's
    running statistics). ``metrics`` names what to compute:

    - ``"loss"``: the mean of ``loss_fn`` over the ``N`` examples (``loss_fn`` required);
    - ``"accuracy"`` and ``"top_k_accuracy"`` (label among the ``top_k`` highest outputs) for
      class scores ``(N, C)`` and integer classes (see :mod:`fnn.metrics`);
    - ``"confusion_matrix"``: ``(C, C)`` int64 counts, rows the true class;
    - ``(name, fn)``: the mean of ``fn(outputs, y)``, weighted by the examples of each batch.

    By default: ``"loss"`` when ``loss_fn`` is given, and ``"accuracy"`` when the outputs are
    class scores and ``y`` integer classes. Returns a dict from those names to floats (the
    confusion matrix to its array).

    With a ``world``, every rank passes the whole set; each evaluates its shard
    (:func:`fnn.distributed.shard`) and the loss sums, the counts of correct rows and the
    confusion matrices are summed across ranks before dividing by ``N``, so every rank
    gets the metrics of the whole set.

    >>> from fnn.layers import Dense
    >>> net = Dense(3)
    >>> params = net.init(fnn.random.key(0), (4,))
    >>> x, y = np.ones((10, 4), np.float32), np.arange(10) % 3
    >>> m = evaluate(net, params, x, y, loss_fn=fnn.losses.softmax_cross_entropy, batch_size=4)
    >>> sorted(m)
    ['accuracy', 'loss']
    """
    where = "evaluate"
    check_is_layer(net, where)
    w = resolve_world(where, world)
    n = batch_length(where, x)
    y = check_targets(where, y, n)
    if n == 0:
        raise ValueError(f"{where}: x holds no examples; there is nothing to average over")
    batch_size = validate.integer(where, "batch_size", batch_size, low=1)
    top_k = validate.integer(where, "top_k", top_k, low=1)
    if loss_fn is not None:
        validate.function(where, "loss_fn", loss_fn, "a loss (outputs, targets) -> (value, doutputs)")
    specs = resolve_metrics(where, metrics, EVALUATE_METRICS)
    if metrics is None and loss_fn is not None:
        specs = [("loss", None), *specs]
    if ("loss", None) in specs and loss_fn is None:
        raise ValueError(f"{where}: metric 'loss' needs a loss_fn, such as fnn.losses.softmax_cross_entropy")
    names = [name for name, _ in specs]
    part = _dist.shard(w, (np.arange(n),)).arrays[0]  # this rank's rows (all of them alone)
    lo, hi = (int(part[0]), int(part[-1]) + 1) if len(part) else (0, 0)
    sums: dict[str, float] = {}
    confusion = None
    for start in range(lo, hi, batch_size) if hi > lo else [lo]:  # an empty shard still takes part in the sums
        stop = min(start + batch_size, hi)
        xb, yb = rows(x, start, stop), y[start:stop]
        outputs = predict(net, params, xb, state=state)
        batch = metric_sums(specs, outputs, yb, top_k=top_k)
        if "loss" in names and loss_fn is not None:
            batch["loss"] = float(loss_fn(outputs, yb)[0]) * len(yb) if len(yb) else 0.0
        if "confusion_matrix" in names:
            if not (isinstance(outputs, np.ndarray) and outputs.ndim == 2):
                raise ValueError(f"{where}: a confusion matrix needs class scores (N, C) as outputs, "
                                 f"got {getattr(outputs, 'shape', type(outputs).__name__)}")
            c = confusion_matrix(yb, outputs.argmax(axis=1), outputs.shape[1])
            confusion = c if confusion is None else confusion + c
        for name, v in batch.items():
            sums[name] = sums.get(name, 0.0) + v
    if w.size > 1:
        sums = _dist.reduce_metrics(w, sums)
        if confusion is not None:
            confusion = _dist.allreduce(w, confusion)
    result: dict[str, Any] = {}
    for name in ("accuracy" if name == "auto" else name for name in names):
        if name == "confusion_matrix":
            result[name] = confusion
        elif name in sums:
            result[name] = sums[name] / n
    return result
