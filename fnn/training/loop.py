"""``fit``: epochs of :func:`~fnn.training.train_step` over seeded batches, held-out evaluation, callbacks,
progress, exact resume. A convenience on top of the step; the loop it runs is::

    step = fnn.train_step(net, loss_fn, opt, world=world)
    for epoch in range(epochs):
        order_key, step_key = fnn.random.split(fnn.random.fold_in(key, epoch))
        for i, shard in enumerate(fnn.distributed.batches(world, order_key, (x, y), batch_size)):
            params, opt_state, state, metrics = step(params, opt_state, state, shard,
                                                     fnn.random.fold_in(step_key, i))
        print(epoch + 1, fnn.evaluate(net, params, x_held, y_held, loss_fn=loss_fn, state=state, world=world))
"""

from __future__ import annotations

import importlib
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fnn import distributed as _dist
from fnn import random as _random
from fnn import tree as _tree
from fnn import validate
from fnn.core import Layer, check_is_layer
from fnn.training.callbacks import Callback
from fnn.training.evaluation import evaluate
from fnn.training.state import FitState, load_fit_state
from fnn.training.step import LossFn, Metrics, resolve_world, train_step

__all__ = ["fit"]

PROGRESS = ("auto", "tqdm", "plain")


class _Progress:
    """Rank 0's output: a tqdm bar over each epoch's steps (``"auto"`` when tqdm is installed,
    on a terminal; ``"tqdm"`` always), and one line per epoch unless ``progress`` is False."""

    def __init__(self, progress: Any, world: _dist.World, epochs: int) -> None:
        if progress is not False:
            validate.choice("fit", "progress", progress, PROGRESS)
        self.on = progress is not False and world.is_root
        self.epochs, self.tqdm, self.disable = epochs, None, None if progress == "auto" else False
        if progress in ("auto", "tqdm"):  # on every rank, so that every rank raises alike
            try:
                tqdm = importlib.import_module("tqdm").tqdm
            except ImportError:
                if progress == "tqdm":
                    raise ImportError("fit: progress='tqdm' needs tqdm (pip install tqdm); "
                                      "progress='plain' prints one line per epoch without it") from None
            else:
                self.tqdm = tqdm if self.on else None

    def print(self, text: str) -> None:
        if self.on:
            print(text, flush=True)

    def bar(self, steps: int, epoch: int) -> Any:
        if self.tqdm is None:
            return None
        return self.tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="batch", leave=False,
                         disable=self.disable)

    def epoch(self, epoch: int, logs: dict[str, float]) -> None:
        parts = [f"{name} {value:.2%}" if "accuracy" in name else f"{name} {value:g}" if name == "lr_multiplier"
                 else f"{name} {value:.4f}" for name, value in logs.items() if name != "time"]
        self.print(f"epoch {epoch:{len(str(self.epochs))}}/{self.epochs}  " + "  ".join(parts)
                   + f"  ({logs['time']:.1f} s)")


def _data(where: str, name: str, data: Any) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"{where}: {name} must be a pair (x, y) of arrays, got {type(data).__name__}")
    (x, y), n = validate.aligned_arrays(f"{where}: {name}", data)
    if n == 0:
        raise ValueError(f"{where}: {name} holds no examples")
    return x, y


def _resumed(where: str, path: str | os.PathLike[str], run: FitState, callbacks: Sequence[Callback],
             w: _dist.World) -> FitState:
    """The run saved at ``path``, after checking it against the one ``fit`` was asked to start."""
    saved = load_fit_state(path, w)
    _tree.check_same_structure(run.params, saved.params, names=["params", "the checkpoint's params"], shapes=True,
                               where=f"{where}: resume")
    _tree.check_same_structure(run.opt_state, saved.opt_state, names=["opt.init(params)", "the checkpoint's opt_state"],
                               shapes=True, where=f"{where}: resume")
    if saved.key is None or run.key is None or not np.array_equal(saved.key, run.key):
        raise ValueError(f"{where}: resume: the checkpoint {os.fspath(path)} was trained with key {saved.key}, "
                         f"not {run.key}; pass the same key to continue the same run")
    if len(saved.callbacks) != len(callbacks):
        raise ValueError(f"{where}: resume: the checkpoint has the state of {len(saved.callbacks)} callbacks but "
                         f"{len(callbacks)} were given; pass the same callbacks, in the same order")
    for cb, fresh, mine in zip(callbacks, run.callbacks, saved.callbacks):
        _tree.check_same_structure(fresh, mine, names=[f"{cb!r}'s state", "the checkpoint's"],
                                   where=f"{where}: resume")
    return saved


def fit(net: Layer, params: Any, opt: Any, train_data: tuple[np.ndarray, np.ndarray], *, epochs: int,
        batch_size: int, loss_fn: LossFn, key: _random.Key, opt_state: Any = None, state: Any = None,
        eval_data: tuple[np.ndarray, np.ndarray] | None = None, callbacks: Sequence[Callback] = (),
        progress: Any = "auto", world: _dist.World | None = None, accumulate: int = 1, metrics: Metrics = None,
        eval_batch_size: int = 256, drop_last: bool = False,
        resume: str | os.PathLike[str] | None = None) -> FitState:
    """Train ``net`` for ``epochs`` passes over ``train_data = (x, y)`` (``x: (N, ...)``,
    ``y: (N, ...)``); return the :class:`~fnn.training.FitState` with the final ``params``,
    ``opt_state``, ``state`` and the ``history``.

    Epoch ``e`` (from 0) shuffles with, and draws each step's key (Dropout) from,
    ``fold_in(key, e)`` alone: the same arguments give bitwise the same run, and a
    resumed run continues as the uninterrupted one. Each step is :func:`~fnn.training.train_step`
    (``loss_fn``, ``accumulate``, ``metrics``) on a batch of ``batch_size`` examples
    (the last one shorter unless ``drop_last``). ``opt_state`` defaults to
    ``opt.init(params)`` and ``state`` (the layer state) to the initial one.

    After each epoch: the training metrics (the mean over the epoch's steps, in training
    mode, weighted by batch size), then :func:`~fnn.training.evaluate` on ``eval_data`` (as ``eval_loss``,
    ``eval_accuracy``, ...), the optimizer's ``lr_multiplier`` if it has one (see
    ``fnn.optim.lr_multiplier``) and the epoch's seconds (``time``) are appended to the
    history; then the ``callbacks`` run (:mod:`fnn.training.callbacks`); a callback may
    stop the run.

    ``progress``: ``"auto"`` prints a line per epoch, with a tqdm bar over its steps when
    tqdm is installed and the output is a terminal; ``"tqdm"`` always shows the bar (and
    needs tqdm); ``"plain"`` the lines alone; ``False`` nothing.

    ``world``: data parallel (:mod:`fnn.distributed`). Every rank passes the same
    arguments and the whole data; ``batch_size`` is the global batch, each rank takes its
    share, rank 0's params and optimizer state are broadcast first, only rank 0 prints
    and writes checkpoints, and the run equals one process's up to rounding (Dropout
    aside: each rank draws its own masks).

    ``resume``: a checkpoint written by :class:`~fnn.training.Checkpoint` (or :func:`~fnn.training.save_fit_state`);
    the run continues after its epoch with its params, optimizer and layer state, history
    and callback states (``params`` and ``opt_state`` given here only fix the structure
    it must have). Pass the same key, data, batch size and callbacks: the result is then
    bitwise that of the uninterrupted run (all but the ``time`` entries).
    """
    where = "fit"
    check_is_layer(net, where)
    w = resolve_world(where, world)
    x, y = _data(where, "train_data", train_data)
    held = None if eval_data is None else _data(where, "eval_data", eval_data)
    epochs = validate.integer(where, "epochs", epochs, low=0)
    batch_size = validate.integer(where, "batch_size", batch_size, low=1)
    key = _random.check_key(key, f"{where}: key")
    drop_last = validate.boolean(where, "drop_last", drop_last)
    if drop_last and len(x) < batch_size:
        raise ValueError(f"{where}: drop_last=True with {len(x)} examples and batch_size={batch_size} leaves no batch")
    callbacks = tuple(callbacks)
    for cb in callbacks:
        validate.instance(where, "a callback", cb, Callback, "a Callback such as fnn.training.EarlyStopping()")
    step = train_step(net, loss_fn, opt, world=world, accumulate=accumulate, metrics=metrics)
    eval_metrics: Metrics = None if metrics is None else ["loss", *metrics]
    out = _Progress(progress, w, epochs)

    params = _dist.broadcast(w, params)
    opt_state = opt.init(params) if opt_state is None else _dist.broadcast(w, opt_state)
    state = None if state is None else _dist.broadcast(w, state)
    run = FitState(params, opt_state, state, {}, 0, key)
    run = run._replace(callbacks=tuple(cb.init(run) for cb in callbacks))
    if resume is not None:
        run = _resumed(where, resume, run, callbacks, w)
        out.print(f"resumed from {os.fspath(resume)} after epoch {run.epoch}")
    steps = len(x) // batch_size if drop_last else math.ceil(len(x) / batch_size)
    params, opt_state, state = run.params, run.opt_state, run.state
    for epoch in range(run.epoch, epochs):
        if run.stop:
            break
        start = time.perf_counter()
        order_key, step_key = _random.split(_random.fold_in(key, epoch))
        sums: dict[str, float] = {}
        seen = 0
        bar = out.bar(steps, epoch + 1)
        for i, shard in enumerate(_dist.batches(w, order_key, (x, y), batch_size, drop_last=drop_last)):
            params, opt_state, state, metrics_i = step(params, opt_state, state, shard, _random.fold_in(step_key, i))
            for name, value in metrics_i.items():
                sums[name] = sums.get(name, 0.0) + value * shard.total
            seen += shard.total
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{metrics_i['loss']:.4f}", refresh=False)
        if bar is not None:
            bar.close()
        logs = {name: value / seen for name, value in sums.items()}
        if held is not None:
            scores = evaluate(net, params, *held, loss_fn=loss_fn, state=state, batch_size=eval_batch_size,
                              world=world, metrics=eval_metrics)
            logs.update({f"eval_{name}": value for name, value in scores.items()})
        if isinstance(opt_state, dict) and "lr_multiplier" in opt_state:
            logs["lr_multiplier"] = float(opt_state["lr_multiplier"])
        logs["time"] = time.perf_counter() - start
        history = {name: list(values) for name, values in run.history.items()}
        for name, value in logs.items():
            history.setdefault(name, []).append(value)
        run = FitState(params, opt_state, state, history, epoch + 1, key, run.callbacks)
        for i, cb in enumerate(callbacks):
            mine, run = cb.on_epoch_end(run.callbacks[i], run)
            run = run._replace(callbacks=(*run.callbacks[:i], mine, *run.callbacks[i + 1:]))
        for cb, mine in zip(callbacks, run.callbacks):
            cb.after_epoch(mine, run, w)
        params, opt_state, state = run.params, run.opt_state, run.state
        out.epoch(epoch + 1, logs)
        if run.stop:
            out.print(f"stopped after epoch {epoch + 1} by a callback")
    return run
