"""Where a run of :func:`fnn.fit` stands after an epoch, and its checkpoint on disk."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from fnn import checkpoint as _checkpoint
from fnn import distributed as _dist
from fnn import random as _random

__all__ = ["FitState", "save_fit_state", "load_fit_state", "FORMAT"]

FORMAT = "fnn.fit/1"
"""The ``metadata["format"]`` of a checkpoint written by :func:`~fnn.training.save_fit_state`."""


class FitState(NamedTuple):
    """A run of :func:`fnn.fit` at the end of an epoch, and what ``fit`` returns.

    ``params``, ``opt_state`` and ``state`` (the layer state: BatchNorm's statistics;
    ``None`` before the first step) as the steps left them; ``history``, one list of
    floats per metric with one entry per epoch (``loss``, ``accuracy``, ``eval_loss``,
    ``eval_accuracy``, ``lr_multiplier``, ``time``, ...); ``epoch``, the epochs done;
    ``key``, the key every epoch's batch order and Dropout keys derive from;
    ``callbacks``, each callback's state (a dict of arrays, in the order of ``fit``'s
    ``callbacks``); ``stop``, set by a callback (:class:`~fnn.training.EarlyStopping`) to end the run.
    """

    params: Any
    opt_state: Any
    state: Any
    history: dict[str, list[float]]
    epoch: int = 0
    key: _random.Key | None = None
    callbacks: tuple[dict[str, Any], ...] = ()
    stop: bool = False


def _tree(run: FitState) -> dict[str, Any]:
    if run.key is None:
        raise ValueError("save_fit_state: the run has no key; fit always sets one")
    return {"params": run.params, "opt_state": run.opt_state, "state": {} if run.state is None else run.state,
            "history": {name: np.array(values, np.float64) for name, values in run.history.items()},
            "epoch": np.array(run.epoch, np.int64), "key": run.key, "callbacks": list(run.callbacks),
            "stop": np.array(run.stop)}


def save_fit_state(path: str | os.PathLike[str], run: FitState, world: _dist.World | None = None,
                   metadata: dict[str, Any] | None = None) -> None:
    """Write ``run`` to ``path`` with :func:`fnn.save` (rank 0 only under a ``world``): every
    field, so that ``fit(..., resume=path)`` continues bitwise as the run would have.

    The tree holds ``params``, ``opt_state``, ``state``, ``history`` (float64 arrays),
    ``epoch``, ``key``, ``callbacks`` and ``stop``; ``fnn.load(path)["params"]`` reads the
    params alone. ``metadata`` (JSON) is stored beside ``{"format": FORMAT, "epoch": ...}``.
    """
    meta = {"format": FORMAT, "epoch": run.epoch, **(metadata or {})}
    _dist.save(world or _dist.World(), path, _tree(run), metadata=meta)


def _load(w: _dist.World, path: str | os.PathLike[str]) -> tuple[Any, Any]:
    if w.size == 1:
        return _checkpoint.load_metadata(path), _checkpoint.load(path)
    got: tuple[Any, Any] | None = None
    problem = None
    if w.is_root:
        try:
            got = (_checkpoint.load_metadata(path), _checkpoint.load(path))
        except Exception as err:  # told to every rank below, so that none waits for rank 0
            problem = f"{type(err).__name__}: {err}"
    got, problem = w.comm.bcast((got, problem), root=0)  # mpi4py pickles in memory, between this job's ranks
    if problem is not None:
        raise _dist.DistributedError(f"load_fit_state: failed on rank 0: {problem}")
    return got


def load_fit_state(path: str | os.PathLike[str], world: _dist.World | None = None) -> FitState:
    """The :class:`~fnn.training.FitState` that :func:`~fnn.training.save_fit_state` wrote to
    ``path``; under a ``world`` rank 0 reads the file and every rank gets its contents."""
    meta, tree = _load(world or _dist.World(), path)
    keys = {"params", "opt_state", "state", "history", "epoch", "key", "callbacks", "stop"}
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT and isinstance(tree, dict) and set(tree) == keys):
        raise _checkpoint.CheckpointError(f"load_fit_state: {os.fspath(path)} was not written by fnn.fit's "
                                          f"checkpoints (save_fit_state)")
    return FitState(params=tree["params"], opt_state=tree["opt_state"], state=tree["state"],
                    history={name: [float(v) for v in values] for name, values in tree["history"].items()},
                    epoch=int(tree["epoch"]), key=_random.check_key(tree["key"]),
                    callbacks=tuple(tree["callbacks"]), stop=bool(tree["stop"]))
