"""What tests/training/test_loop_mpi.py runs under ``mpiexec``, and in one process to compare with.

``python tests/training/loop_worker.py OUTDIR`` trains on every rank and each rank writes
``OUTDIR/fit-rank<r>.fnn``: a tiny MLP with synchronized BatchNorm, and one without it
with gradient accumulation, fitted for 2 epochs on 37 examples in global batches of 10
(uneven shards), then evaluated; and the first one again, stopped after epoch 1 and resumed
from rank 0's checkpoint. No bias before BatchNorm: its gradient is exactly zero, and Adam would
scale the rounding noise computed for it up to a full step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

import fnn
from fnn.layers import BatchNorm, Dense, ReLU, Tanh

CE = fnn.losses.softmax_cross_entropy


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    kx, ky = fnn.random.split(fnn.random.key(seed))
    x = fnn.random.normal(kx, (n, 5), np.float64)
    return x, (fnn.random.permutation(ky, n) % 3).astype(np.int64)


def fit(world: fnn.distributed.World, batchnorm: bool, epochs: int = 2, **kwargs: Any) -> fnn.training.FitState:
    net = (fnn.serial(Dense(12, bias=False), BatchNorm(), ReLU(), Dense(3)) if batchnorm
           else fnn.serial(Dense(12), Tanh(), Dense(3)))
    params = net.init(fnn.random.key(7 + world.rank), (5,), np.float64)  # rank 0's params are broadcast
    return fnn.fit(net, params, fnn.optim.adam(1e-2), data(37, 0), epochs=epochs, batch_size=10, loss_fn=CE,
                   key=fnn.random.key(1), eval_data=data(23, 1), world=world, **kwargs)


def evaluation(world: fnn.distributed.World, run: fnn.training.FitState) -> dict[str, Any]:
    net = fnn.serial(Dense(12, bias=False), BatchNorm(), ReLU(), Dense(3))
    got = fnn.evaluate(net, run.params, *data(23, 1), loss_fn=CE, state=run.state, batch_size=4, world=world,
                       metrics=["loss", "accuracy", "top_k_accuracy", "confusion_matrix"], top_k=2)
    return {name: np.asarray(value) for name, value in got.items()}


def history(run: fnn.training.FitState) -> dict[str, np.ndarray]:
    return {name: np.array(values) for name, values in run.history.items() if name != "time"}


def result(run: fnn.training.FitState) -> dict[str, Any]:
    return {"params": run.params, "opt_state": run.opt_state, "state": run.state, "history": history(run)}


def main(outdir: Path) -> None:
    world = fnn.distributed.world()
    fnn.distributed.abort_on_error(world)
    bn = fit(world, True, progress="plain")
    plain = fit(world, False, accumulate=2, progress=False)
    fit(world, True, epochs=1, callbacks=[fnn.training.Checkpoint(outdir / "ckpt")], progress=False)
    resumed = fit(world, True, callbacks=[fnn.training.Checkpoint(outdir / "ckpt")], progress=False,
                  resume=outdir / "ckpt" / "last.fnn")
    fnn.save(outdir / f"fit-rank{world.rank}.fnn", {"bn": result(bn), "plain": result(plain),
                                                    "resumed": result(resumed), "eval": evaluation(world, bn)})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
