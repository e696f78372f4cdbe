"""What :func:`fnn.fit` calls at the end of every epoch: early stopping, a plateau schedule,
checkpoints of the best and the last epoch.

A callback keeps no state of its own: its counters live in a dict of arrays that ``fit``
threads through the run (``FitState.callbacks``) and saves in checkpoints, so a resumed
run continues exactly. ``fit`` calls, after each epoch and its evaluation, every
callback's :meth:`~fnn.training.Callback.on_epoch_end` in order (which may change the run: stop it,
change the optimizer state), then every callback's :meth:`~fnn.training.Callback.after_epoch` (which
sees the final state of all of them: where checkpoints are written).

Each decision also exists as a pure function of one value (``EarlyStopping.update``,
``ReduceLROnPlateau.update``), to drive by hand or in a loop of your own.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from fnn import distributed as _dist
from fnn import validate
from fnn.training.state import FitState, save_fit_state

__all__ = ["Callback", "EarlyStopping", "ReduceLROnPlateau", "Checkpoint", "monitored"]


class Callback:
    """The base class of ``fit``'s callbacks; each hook does nothing unless overridden."""

    def init(self, run: FitState) -> dict[str, Any]:
        """This callback's state at the start of a run (a dict of arrays); may check ``run``."""
        return {}

    def on_epoch_end(self, mine: dict[str, Any], run: FitState) -> tuple[dict[str, Any], FitState]:
        """After epoch ``run.epoch`` (counted from 1) and its evaluation: the new state of this
        callback and the run, possibly changed (``run._replace(stop=True)``)."""
        return mine, run

    def after_epoch(self, mine: dict[str, Any], run: FitState, world: _dist.World) -> None:
        """After every callback's ``on_epoch_end``: side effects such as writing files."""


def _mode(where: str, monitor: str, mode: str) -> str:
    mode = validate.choice(where, "mode", mode, ("auto", "min", "max"))
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def monitored(where: str, monitor: str, run: FitState) -> float:
    """The value of ``monitor`` for the last epoch of ``run``'s history."""
    values = run.history.get(monitor)
    if not values:
        raise ValueError(f"{where}: monitor {monitor!r} is not in the history, which has {sorted(run.history)} "
                         f"(eval_* needs fit's eval_data)")
    return values[-1]


def _start(mode: str) -> np.ndarray:
    return np.array(math.inf if mode == "min" else -math.inf)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs in a row.

    An epoch improves when its value beats the best so far by more than ``min_delta``
    (``value < best - min_delta`` for ``mode="min"``; ``mode="auto"`` is ``"max"`` for a
    name with "acc" in it, else ``"min"``); a NaN never improves. The run stops at the end
    of the ``patience``-th consecutive epoch without improvement (Keras' rule): with
    ``patience=2``, eval losses ``1.0, 0.8, 0.9, 0.85, 0.7`` stop after epoch 4. The
    state holds ``best``, ``best_epoch`` and ``wait`` (epochs since the best).

    >>> es = EarlyStopping(patience=2)
    >>> mine, stops = es.init(None), []
    >>> for epoch, value in enumerate([1.0, 0.8, 0.9, 0.85, 0.7], 1):
    ...     mine, stop = es.update(mine, value, epoch)
    ...     stops.append(stop)
    >>> stops
    [False, False, False, True, False]
    """

    def __init__(self, monitor: str = "eval_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto") -> None:
        where = "EarlyStopping"
        self.monitor = validate.instance(where, "monitor", monitor, str, "a history name such as 'eval_loss'")
        self.patience = validate.integer(where, "patience", patience, low=0)
        self.min_delta = validate.number(where, "min_delta", min_delta, low=0.0)
        self.mode = _mode(where, monitor, mode)

    def __repr__(self) -> str:
        return (f"EarlyStopping({self.monitor!r}, patience={self.patience}, min_delta={self.min_delta}, "
                f"mode={self.mode!r})")

    def init(self, run: FitState | None) -> dict[str, Any]:
        return {"best": _start(self.mode), "best_epoch": np.array(0), "wait": np.array(0)}

    def update(self, mine: dict[str, Any], value: float, epoch: int) -> tuple[dict[str, Any], bool]:
        """The state after an epoch whose monitored value is ``value``, and whether to stop."""
        best = float(mine["best"])
        better = value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta
        if better:
            return {"best": np.array(float(value)), "best_epoch": np.array(epoch), "wait": np.array(0)}, False
        wait = int(mine["wait"]) + 1
        return {**mine, "wait": np.array(wait)}, wait >= max(self.patience, 1)

    def on_epoch_end(self, mine: dict[str, Any], run: FitState) -> tuple[dict[str, Any], FitState]:
        mine, stop = self.update(mine, monitored("EarlyStopping", self.monitor, run), run.epoch)
        return mine, run._replace(stop=run.stop or stop)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has stopped improving:
    PyTorch's ``torch.optim.lr_scheduler.ReduceLROnPlateau``, epoch by epoch.

    It changes ``opt_state["lr_multiplier"]``, so the optimizer must be wrapped with
    ``fnn.optim.lr_multiplier(opt)``. The rules are PyTorch's: a value improves when it
    beats the best by the ``threshold`` (``threshold_mode="rel"``: ``value < best * (1 -
    threshold)`` for ``mode="min"``; ``"abs"``: ``value < best - threshold``); after more
    than ``patience`` epochs in a row without improvement the multiplier becomes
    ``max(multiplier * factor, min_multiplier)`` (kept if that changes it by ``eps`` or
    less), the count restarts, and the next ``cooldown`` epochs count no bad epochs.
    ``min_multiplier`` and ``eps`` are PyTorch's ``min_lr`` and ``eps`` for a base learning
    rate of 1: they apply to the multiplier. ``mode="auto"`` is ``"max"`` for a name with
    "acc" in it, else ``"min"`` (PyTorch's default).

    >>> plateau = ReduceLROnPlateau(factor=0.5, patience=1)
    >>> mine, multiplier, seen = plateau.init(None), 1.0, []
    >>> for value in [1.0, 1.0, 1.0, 0.5, 0.6, 0.6]:
    ...     mine, multiplier = plateau.update(mine, value, multiplier)
    ...     seen.append(multiplier)
    >>> seen
    [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    """

    def __init__(self, monitor: str = "eval_loss", factor: float = 0.1, patience: int = 10, *, mode: str = "auto",
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_multiplier: float = 0.0,
                 eps: float = 1e-8) -> None:
        where = "ReduceLROnPlateau"
        self.monitor = validate.instance(where, "monitor", monitor, str, "a history name such as 'eval_loss'")
        self.factor = validate.number(where, "factor", factor, low=0.0, high=1.0, high_open=True)
        self.patience = validate.integer(where, "patience", patience, low=0)
        self.mode = _mode(where, monitor, mode)
        self.threshold = validate.number(where, "threshold", threshold, low=0.0)
        self.threshold_mode = validate.choice(where, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = validate.integer(where, "cooldown", cooldown, low=0)
        self.min_multiplier = validate.number(where, "min_multiplier", min_multiplier, low=0.0)
        self.eps = validate.number(where, "eps", eps, low=0.0)

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau({self.monitor!r}, factor={self.factor}, patience={self.patience}, "
                f"mode={self.mode!r})")

    def init(self, run: FitState | None) -> dict[str, Any]:
        if run is not None:
            _multiplier(run.opt_state)
        return {"best": _start(self.mode), "bad_epochs": np.array(0), "cooldown": np.array(0)}

    def _better(self, value: float, best: float) -> bool:
        if self.threshold_mode == "rel":
            return value < best * (1 - self.threshold) if self.mode == "min" else value > best * (1 + self.threshold)
        return value < best - self.threshold if self.mode == "min" else value > best + self.threshold

    def update(self, mine: dict[str, Any], value: float, multiplier: float) -> tuple[dict[str, Any], float]:
        """The state and the multiplier after an epoch whose monitored value is ``value``."""
        best, bad, cooldown = float(mine["best"]), int(mine["bad_epochs"]), int(mine["cooldown"])
        if self._better(value, best):
            best, bad = float(value), 0
        else:
            bad += 1
        if cooldown > 0:
            cooldown, bad = cooldown - 1, 0
        if bad > self.patience:
            reduced = max(multiplier * self.factor, self.min_multiplier)
            if multiplier - reduced > self.eps:
                multiplier = reduced
            cooldown, bad = self.cooldown, 0
        return {"best": np.array(best), "bad_epochs": np.array(bad), "cooldown": np.array(cooldown)}, multiplier

    def on_epoch_end(self, mine: dict[str, Any], run: FitState) -> tuple[dict[str, Any], FitState]:
        old = _multiplier(run.opt_state)
        mine, new = self.update(mine, monitored("ReduceLROnPlateau", self.monitor, run), float(old))
        if new != float(old):
            run = run._replace(opt_state={**run.opt_state, "lr_multiplier": np.array(new, old.dtype)})
        return mine, run


def _multiplier(opt_state: Any) -> np.ndarray:
    if not isinstance(opt_state, dict):
        raise TypeError(f"ReduceLROnPlateau: the optimizer state must be the dict of fnn.optim.lr_multiplier(opt), "
                        f"got {type(opt_state).__name__}")
    if "lr_multiplier" not in opt_state:
        raise ValueError(f"ReduceLROnPlateau: the optimizer state has no 'lr_multiplier' (its keys are "
                         f"{sorted(opt_state)}); wrap the optimizer as fnn.optim.lr_multiplier(opt) so that its "
                         f"learning rate can be reduced")
    return np.asarray(opt_state["lr_multiplier"])


class Checkpoint(Callback):
    """Write the run to ``directory/last.fnn`` after every epoch and to ``directory/best.fnn``
    after every epoch whose ``monitor`` beats the best so far (strictly; ``mode`` as in
    :class:`~fnn.training.EarlyStopping`); ``best=False`` or ``last=False`` skips one.

    Both files hold the whole :class:`~fnn.training.FitState` (:func:`~fnn.training.save_fit_state`), so
    ``fit(..., resume=checkpoint.last_path)`` continues an interrupted run bitwise, and
    ``fnn.load(checkpoint.best_path)["params"]`` gives the best params. Under a ``world``
    rank 0 writes them (:func:`fnn.distributed.save`). The folder is created if missing.
    """

    def __init__(self, directory: str | os.PathLike[str], *, monitor: str = "eval_loss", mode: str = "auto",
                 best: bool = True, last: bool = True) -> None:
        where = "Checkpoint"
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{where}: directory must be a path, got {type(directory).__name__}")
        self.directory = os.fspath(directory)
        self.monitor = validate.instance(where, "monitor", monitor, str, "a history name such as 'eval_loss'")
        self.mode = _mode(where, monitor, mode)
        self.best = validate.boolean(where, "best", best)
        self.last = validate.boolean(where, "last", last)
        self.best_path = os.path.join(self.directory, "best.fnn")
        self.last_path = os.path.join(self.directory, "last.fnn")

    def __repr__(self) -> str:
        return f"Checkpoint({self.directory!r}, monitor={self.monitor!r}, best={self.best}, last={self.last})"

    def init(self, run: FitState | None) -> dict[str, Any]:
        os.makedirs(self.directory, exist_ok=True)
        return {"best": _start(self.mode), "best_epoch": np.array(0)}

    def on_epoch_end(self, mine: dict[str, Any], run: FitState) -> tuple[dict[str, Any], FitState]:
        if self.best:
            value, best = monitored("Checkpoint", self.monitor, run), float(mine["best"])
            if value < best if self.mode == "min" else value > best:
                mine = {"best": np.array(float(value)), "best_epoch": np.array(run.epoch)}
        return mine, run

    def after_epoch(self, mine: dict[str, Any], run: FitState, world: _dist.World) -> None:
        if self.last:
            save_fit_state(self.last_path, run, world)
        if self.best and int(mine["best_epoch"]) == run.epoch:
            save_fit_state(self.best_path, run, world, metadata={"monitor": self.monitor})
