"""The loss and its gradients in one call, and a pure training step built on it.

:func:`~fnn.training.value_and_grad` runs the forward pass, the loss and the backward pass::

    loss, grads, state, logits = fnn.value_and_grad(net, fnn.losses.softmax_cross_entropy)(params, x, y)

:func:`~fnn.training.train_step` adds the optimizer: ``step(params, opt_state, model_state, (x, y), key)``
returns the updated ``(params, opt_state, model_state, metrics)``. Both take a
``world`` (:mod:`fnn.distributed`): each rank then passes its shard of the global
batch, differentiates its share of the global mean loss (the loss's mean over its
examples times its share of the examples, ``n_local / total``), and the gradients
are summed across ranks, so every rank gets the gradient of the global batch's mean
loss and makes the same update.

The loss is ``loss_fn(outputs, targets) -> (value, doutputs)`` with the mean over the
examples (the default reduction of every loss in :mod:`fnn.losses`). Data parallelism
and gradient accumulation weight each part's mean by its number of examples, which is
the global mean for every loss that averages over examples or elements alike; a mean
weighted by class weights or with ``ignore_index`` is normalized by the weights *of
each part* instead, so it is then only close to the single-batch value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from fnn import distributed as _dist
from fnn import random as _random
from fnn import tree as _tree
from fnn import validate
from fnn.core import Layer, check_is_layer
from fnn.inference import batch_length, rows
from fnn.metrics import count_correct

__all__ = ["LossFn", "MetricFn", "Metrics", "LossAndGrads", "value_and_grad", "train_step", "Step"]

LossFn = Callable[[Any, Any], tuple[float, Any]]
"""``loss_fn(outputs, targets) -> (value, doutputs)``: the mean loss and its gradient."""
MetricFn = Callable[[Any, Any], float]
"""``fn(outputs, targets) -> float``: a metric's mean over the examples it is given."""
Metrics = Sequence[str | tuple[str, MetricFn]] | None
"""Metrics by name (``"accuracy"``; :func:`fnn.evaluate` knows more) or as ``(name, fn)`` pairs;
``None`` picks them: accuracy when the outputs are class scores ``(N, C)`` and the targets
integer classes ``(N,)``."""


class LossAndGrads(NamedTuple):
    """What :func:`~fnn.training.value_and_grad`'s function returns: the mean loss (a float), the gradients
    (a tree shaped like ``params``), the layer's updated state, and its outputs (the logits)."""

    loss: float
    grads: Any
    state: Any
    outputs: Any


def check_targets(where: str, y: Any, n: int) -> np.ndarray:
    """``y``, the targets of ``n`` examples: an array with a batch axis of length ``n``."""
    if not isinstance(y, np.ndarray) or y.ndim == 0:
        raise TypeError(f"{where}: targets must be a numpy array with a batch axis, got {type(y).__name__}")
    if len(y) != n:
        raise ValueError(f"{where}: x has {n} examples but the targets have {len(y)}")
    return y


def resolve_world(where: str, world: Any) -> _dist.World:
    """``world`` checked, or the single-process world for ``None``."""
    if world is None:
        return _dist.World()
    return validate.instance(where, "world", world, _dist.World, "an fnn.distributed.World or None")


def _global_total(w: _dist.World, n: int) -> int:
    """The examples in the global batch: ``n`` alone, else the sum of every rank's ``n``."""
    return n if w.size == 1 else int(_dist.reduce_metrics(w, {"n": n})["n"])


def _share(where: str, net: Layer, loss_fn: LossFn, params: Any, x: Any, y: Any, total: int,
           opts: dict[str, Any]) -> LossAndGrads:
    """This part's share of the mean loss over ``total`` examples, and its gradients (not reduced)."""
    out = net.apply(params, x, **opts)
    outputs, vjp = out
    result = loss_fn(outputs, y)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"{where}: loss_fn must return (value, doutputs), got {type(result).__name__}")
    value, dout = result
    n = len(y)
    if n == 0:  # an empty shard or micro-batch adds nothing (a loss may give NaN for a mean over nothing)
        value = 0.0
    elif n != total:  # each part's mean, weighted by its share of the examples
        share = n / total
        value, dout = float(value) * share, _tree.map(lambda d: d * d.dtype.type(share), dout)
    grads, _ = vjp(dout, need_dx=False)
    return LossAndGrads(float(value), grads, out.state, outputs)


def value_and_grad(net: Layer, loss_fn: LossFn) -> Callable[..., LossAndGrads]:
    """A function ``(params, x, y, *, state=None, key=None, train=True, world=None, total=None)
    -> (loss, grads, state, outputs)`` for ``net`` and ``loss_fn``.

    ``x: (N, ...)`` (or a tuple of such arrays), ``y: (N, ...)`` the targets. It runs
    ``net.apply(params, x, train=train, key=key, state=state, world=world)``, then
    ``loss_fn(outputs, y) -> (mean loss, doutputs)`` and the vjp (without the input
    gradient), and returns a :class:`~fnn.training.LossAndGrads`: the mean loss, ``grads`` shaped like
    ``params``, the updated layer state (BatchNorm's statistics) and the outputs.

    With a ``world`` of several ranks, ``x`` and ``y`` are this rank's shard of a global
    batch of ``total`` examples (summed over the ranks when ``None``, with one small
    collective): the gradients are those of the global mean loss, summed across
    ranks, and ``loss`` is the global mean, the same on every rank.

    >>> from fnn.layers import Dense
    >>> net = Dense(3)
    >>> params = net.init(fnn.random.key(0), (4,))
    >>> loss, grads, state, logits = value_and_grad(net, fnn.losses.softmax_cross_entropy)(
    ...     params, np.ones((2, 4), np.float32), np.array([0, 2]))
    >>> logits.shape, sorted(grads)
    ((2, 3), ['b', 'w'])
    """
    where = "value_and_grad"
    check_is_layer(net, where)
    validate.function(where, "loss_fn", loss_fn, "a loss (outputs, targets) -> (value, doutputs)")

    def fn(params: Any, x: Any, y: Any, *, state: Any = None, key: _random.Key | None = None, train: bool = True,
           world: _dist.World | None = None, total: int | None = None) -> LossAndGrads:
        w = resolve_world(where, world)
        n = batch_length(where, x)
        y = check_targets(where, y, n)
        total = _global_total(w, n) if total is None else validate.integer(where, "total", total, low=n)
        opts = {"train": train, "key": key, "state": state, "world": world}
        loss, grads, new_state, outputs = _share(where, net, loss_fn, params, x, y, total, opts)
        if w.size > 1:
            grads = _dist.allreduce(w, grads)
            loss = _dist.reduce_metrics(w, {"loss": loss})["loss"]
        return LossAndGrads(loss, grads, new_state, outputs)

    return fn


# --- metrics ------------------------------------------------------------------------------------

def _looks_like_classes(outputs: Any, y: Any) -> bool:
    return (isinstance(outputs, np.ndarray) and outputs.ndim == 2 and outputs.dtype.kind == "f"
            and isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "iu" and len(y) == len(outputs))


def resolve_metrics(where: str, metrics: Metrics, names: Sequence[str]) -> list[tuple[str, MetricFn | None]]:
    """``metrics`` as ``(name, fn)`` pairs, ``fn`` ``None`` for the built-in ``names``; ``None`` stays
    to be decided by ``metric_sums`` on the first outputs (``[("auto", None)]``)."""
    if metrics is None:
        return [("auto", None)]
    if isinstance(metrics, (str, dict)) or not isinstance(metrics, Sequence):
        raise TypeError(f"{where}: metrics must be a list of names and (name, fn) pairs, or None, "
                        f"got {type(metrics).__name__}")
    out: list[tuple[str, MetricFn | None]] = []
    for m in metrics:
        if isinstance(m, str):
            if m not in names:
                raise ValueError(f"{where}: unknown metric {m!r}; the built-in ones are {list(names)}, or pass "
                                 f"a pair (name, fn) with fn(outputs, targets) -> the mean over the examples")
            out.append((m, None))
        elif isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) and callable(m[1]):
            out.append(m)
        else:
            raise TypeError(f"{where}: a metric must be a name or a pair (name, fn), got {m!r:.80}")
    seen = [name for name, _ in out]
    if len(set(seen)) != len(seen) or "loss" in [n for n, f in out if f is not None]:
        raise ValueError(f"{where}: metric names must be distinct and a custom one may not be called 'loss', "
                         f"got {seen}")
    return out


def metric_sums(specs: list[tuple[str, MetricFn | None]], outputs: Any, y: Any, top_k: int = 5) -> dict[str, float]:
    """Each metric's *sum* over this batch (a count of correct rows, or ``fn``'s mean times ``len(y)``),
    ready to be summed over batches and ranks and divided by the number of examples.
    ``("auto", None)`` gives accuracy for class scores and integer classes, else nothing."""
    sums: dict[str, float] = {}
    for name, fn in specs:
        if fn is not None:
            sums[name] = float(fn(outputs, y)) * len(y) if len(y) else 0.0
        elif name == "accuracy" or (name == "auto" and _looks_like_classes(outputs, y)):
            sums["accuracy"] = float(count_correct(outputs, y))
        elif name == "top_k_accuracy":
            sums[name] = float(count_correct(outputs, y, top_k))
    return sums


# --- the step -----------------------------------------------------------------------------------

Step = Callable[[Any, Any, Any, Any, Any], tuple[Any, Any, Any, dict[str, float]]]
"""``step(params, opt_state, model_state, batch, key) -> (params, opt_state, model_state, metrics)``."""


def _unpack(where: str, batch: Any) -> tuple[Any, Any, int | None]:
    if isinstance(batch, _dist.Shard):
        if len(batch.arrays) != 2:
            raise ValueError(f"{where}: a Shard batch must hold (x, y), got {len(batch.arrays)} arrays")
        return batch.arrays[0], batch.arrays[1], batch.total
    if isinstance(batch, tuple) and len(batch) == 2:
        return batch[0], batch[1], None
    raise TypeError(f"{where}: batch must be a pair (x, y) or an fnn.distributed.Shard of (x, y), "
                    f"got {type(batch).__name__}")


def train_step(net: Layer, loss_fn: LossFn, opt: Any, *, world: _dist.World | None = None, accumulate: int = 1,
               metrics: Metrics = None) -> Step:
    """A pure step ``(params, opt_state, model_state, batch, key) -> (params, opt_state,
    model_state, metrics)``: forward in training mode, ``loss_fn``, backward, ``opt.update``.

    ``batch`` is ``(x, y)`` with ``x: (N, ...)`` (or a tuple of such arrays) and ``y:
    (N, ...)``, or a :class:`fnn.distributed.Shard` of ``(x, y)`` as
    :func:`fnn.distributed.batches` yields them. ``model_state`` is the layer state
    (``None`` at the start: BatchNorm's initial statistics); ``key`` feeds Dropout
    (``None`` for a model without randomness). ``opt`` is any ``(init, update)`` pair with
    ``update(params, grads, opt_state) -> (params, opt_state)``.

    ``metrics`` is a dict of floats, the same on every rank: ``"loss"``, the batch's mean
    loss (before the update), and the means of the ``metrics`` asked for (by default
    ``"accuracy"`` when the outputs are class scores ``(N, C)`` and ``y`` integer classes),
    computed on the training-mode outputs.

    ``world``: ``batch`` is this rank's shard of the global batch (a ``Shard`` carries
    the global size; for a plain pair it is summed over the ranks); the gradients of
    the global mean loss are summed across ranks before the update.

    ``accumulate=k`` splits the batch (each rank's shard under a ``world``) into ``k``
    contiguous micro-batches of sizes differing by at most one (rows ``i * N // k`` to
    ``(i + 1) * N // k``), runs forward and backward on one at a time, and sums their
    gradients, each weighted by its share of the examples: the update is that of the whole
    batch (up to rounding) at ``1/k`` of the activation memory. Micro-batch ``i`` draws
    its random numbers from ``fold_in(key, i)``, so Dropout masks differ from the whole
    batch's. BatchNorm normalizes each micro-batch with its own statistics and updates
    its running statistics ``k`` times, so with BatchNorm accumulation is *not* the
    large batch (as in every framework); without it the two agree to rounding.
    """
    where = "train_step"
    check_is_layer(net, where)
    validate.function(where, "loss_fn", loss_fn, "a loss (outputs, targets) -> (value, doutputs)")
    if not (callable(getattr(opt, "init", None)) and callable(getattr(opt, "update", None))):
        raise TypeError(f"{where}: opt must be an optimizer with init and update (such as fnn.optim.adam(1e-3)), "
                        f"got {type(opt).__name__}")
    w = resolve_world(where, world)
    k = validate.integer(where, "accumulate", accumulate, low=1)
    specs = resolve_metrics(where, metrics, ("accuracy",))

    def step(params: Any, opt_state: Any, model_state: Any, batch: Any,
             key: _random.Key | None = None) -> tuple[Any, Any, Any, dict[str, float]]:
        x, y, total = _unpack(where, batch)
        n = batch_length(where, x)
        y = check_targets(where, y, n)
        total = _global_total(w, n) if total is None else total
        if total < k:
            raise ValueError(f"{where}: a batch of {total} examples cannot be split into accumulate={k} "
                             f"micro-batches")
        grads, sums = None, {"loss": 0.0}
        for i in range(k):
            lo, hi = i * n // k, (i + 1) * n // k
            opts = {"train": True, "key": key if k == 1 or key is None else _random.fold_in(key, i),
                    "state": model_state, "world": world}
            part = _share(where, net, loss_fn, params, rows(x, lo, hi), y[lo:hi], total, opts)
            model_state = part.state
            grads = part.grads if grads is None else _tree.add(grads, part.grads)
            sums["loss"] += part.loss
            for name, v in metric_sums(specs, part.outputs, y[lo:hi]).items():
                sums[name] = sums.get(name, 0.0) + v
        if w.size > 1:
            grads = _dist.allreduce(w, grads)
            sums = _dist.reduce_metrics(w, sums)
        params, opt_state = opt.update(params, grads, opt_state)
        return params, opt_state, model_state, {m: v if m == "loss" else v / total for m, v in sums.items()}

    return step
