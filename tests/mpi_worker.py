"""What the MPI tests run under ``mpiexec``, and the same training in one process to compare with.

``python tests/mpi_worker.py SCENARIO OUTDIR [ARGS]`` runs on every rank; each
rank writes what it computed to ``OUTDIR/<scenario>-rank<r>.fnn``, and
tests/test_distributed.py compares it with :func:`train` run in one process.

LeNet-5 at the digits' scale (8x8 images, 3x3 kernels) trains for ``STEPS`` steps
on fixed global batches of ``GLOBAL_BATCH`` examples, a size no world size from 2
to 4 divides, so the shards are uneven.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

import fnn
from fnn import distributed as dist
from fnn.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU

STEPS = 10
GLOBAL_BATCH = 29
SHAPE = (1, 8, 8)


def lenet(batchnorm: bool) -> fnn.Layer:
    """With BatchNorm the layers before it have no bias (as ``bias=False`` in PyTorch): BatchNorm
    subtracts the mean, so such a bias gets an exactly zero gradient, and what is computed for it
    is rounding noise that Adam would scale up to the size of a real update."""
    def bn() -> list[fnn.Layer]:
        return [BatchNorm()] if batchnorm else []

    bias = not batchnorm
    return fnn.serial(Conv2D(6, 3, padding=1, bias=bias), *bn(), ReLU(), MaxPool2D(2),
                      Conv2D(16, 3, padding=1, bias=bias), *bn(), ReLU(), MaxPool2D(2),
                      Flatten(), Dense(120, bias=bias), *bn(), ReLU(), Dense(84, bias=bias), *bn(), ReLU(), Dense(10))


def optimizer(name: str) -> fnn.optim.Optimizer:
    """Adam's step is 1e-3: at 1e-2 the run is chaotic in float32 (a single float32 process ends 6 %
    away from the float64 one on BatchNorm's Adam moments after 10 steps, as near-ties in the max
    pools flip), so no float32 run could match another to 1e-5; at 1e-3 they agree to 2e-6."""
    if name == "sgd":
        return fnn.optim.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    return fnn.optim.adam(1e-3)


def global_batch(step: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """The global batch of a step: the same on every rank and in the single process."""
    kx, ky = fnn.random.split(fnn.random.fold_in(fnn.random.key(123), step))
    x = fnn.random.normal(kx, (GLOBAL_BATCH, *SHAPE), dtype)
    y = fnn.random.permutation(ky, GLOBAL_BATCH) % 10
    return x, y


def start(world: dist.World, batchnorm: bool, opt_name: str, dtype: Any) -> dict[str, Any]:
    """Params, optimizer state and BatchNorm state at step 0. Every rank but 0 initializes from
    another key, so the broadcast is what makes them equal."""
    net, opt = lenet(batchnorm), optimizer(opt_name)
    params = net.init(fnn.random.key(7 if world.rank == 0 else 100 + world.rank), SHAPE, dtype)
    params = dist.broadcast(world, params)
    return {"params": params, "opt_state": opt.init(params), "state": {}}


def train(world: dist.World, run: dict[str, Any], batchnorm: bool, opt_name: str, dtype: Any, steps: range,
          first_grads: bool = False) -> dict[str, Any]:
    """Train ``run`` over ``steps`` with each rank on its shard of every global batch; with
    ``first_grads``, also return the summed gradients of the first step."""
    net, opt = lenet(batchnorm), optimizer(opt_name)
    params, opt_state, state = run["params"], run["opt_state"], run["state"] or None
    out: dict[str, Any] = {}
    for step in steps:
        shard = dist.shard(world, global_batch(step, dtype))
        x, y = shard.arrays
        result = net.apply(params, x, train=True, state=state, world=world)
        logits, vjp = result
        state = result.state
        _, dlogits = fnn.losses.softmax_cross_entropy(logits, y, reduction="sum")
        grads, _ = vjp(dlogits / dtype(shard.total), need_dx=False)
        grads = dist.allreduce(world, grads)
        if first_grads and "grads" not in out:
            out["grads"] = grads
        params, opt_state = opt.update(params, grads, opt_state)
    return {**out, "params": params, "opt_state": opt_state, "state": state or {}}


CONFIGS = [(bn, opt, dtype) for dtype in (np.float64, np.float32) for bn in (False, True) for opt in ("sgd", "adam")]


def config_name(bn: bool, opt: str, dtype: Any) -> str:
    return f"{'bn' if bn else 'plain'}-{opt}-{np.dtype(dtype).name}"


def equivalence(world: dist.World, outdir: Path) -> None:
    results = {}
    for bn, opt, dtype in CONFIGS:
        run = start(world, bn, opt, dtype)
        results[config_name(bn, opt, dtype)] = train(world, run, bn, opt, dtype, range(STEPS), first_grads=True)
    fnn.save(outdir / f"equivalence-rank{world.rank}.fnn", results)


def resume(world: dist.World, outdir: Path, phase: str, ckpt: str) -> None:
    """Phase ``save``: steps 0-4, then a checkpoint from rank 0; phase ``load``: steps 5-9 from it."""
    bn, opt, dtype = True, "adam", np.float64
    run = start(world, bn, opt, dtype)
    if phase == "save":
        run = train(world, run, bn, opt, dtype, range(STEPS // 2))
        dist.save(world, ckpt, run, metadata={"world_size": world.size})
        return
    template_state = lenet(bn).apply(run["params"], np.zeros((1, *SHAPE), dtype), state=fnn.INITIAL_STATE).state
    saved = dist.load(world, ckpt, like={**run, "state": template_state})
    run = train(world, saved, bn, opt, dtype, range(STEPS // 2, STEPS))
    fnn.save(outdir / f"resume-rank{world.rank}.fnn", run)


def mismatch(world: dist.World, outdir: Path) -> None:
    """Rank 1 passes a tree with an extra leaf, rank 2 one with another shape; every rank must raise.
    So must every rank when rank 0 cannot read a checkpoint, or when rank 2 alone passes a leaf
    that is not an array. Then a Dropout mask per rank, to
    show that ranks do not share masks, and a sum over a sub-communicator."""
    grads = {"w": np.ones((3, 2)), "b": np.zeros(2)}
    if world.rank == 1:
        grads["extra"] = np.ones(1)
    if world.rank == 2:
        grads["w"] = np.ones((2, 3))
    messages = {}
    for name, call in (("allreduce", lambda: dist.allreduce(world, grads)),
                       ("broadcast", lambda: dist.broadcast(world, grads)),
                       ("load", lambda: dist.load(world, outdir / "missing.fnn", like=grads)),
                       ("leaf", lambda: dist.allreduce(world, {"w": 1.0 if world.rank == 2 else np.ones(2)}))):
        try:
            call()
            messages[name] = "no error"
        except (ValueError, TypeError, dist.DistributedError) as err:
            messages[name] = f"{type(err).__name__}: {err}"
    y, _ = Dropout(0.5).apply({}, np.ones((4, 64)), train=True, key=fnn.random.key(3), world=world)
    half = dist.world(world.comm.Split(world.rank % 2))  # a sub-communicator: the even and the odd ranks
    ranks_summed = dist.allreduce(half, {"r": np.array([float(world.rank)])})["r"]
    fnn.save(outdir / f"mismatch-rank{world.rank}.fnn", {"dropout": y, "sub": ranks_summed,
                                                         "sub_size": np.array(half.size)}, metadata=messages)


def fault(world: dist.World, outdir: Path) -> None:
    """Rank 1 fails at step 3 while the others go on into the step's all-reduce."""
    run = start(world, False, "sgd", np.float64)
    for step in range(STEPS):
        if world.rank == 1 and step == 3:
            raise RuntimeError("deliberate failure on rank 1 at step 3")
        run = train(world, run, False, "sgd", np.float64, range(step, step + 1))
    raise SystemExit("unreachable: the job should have been aborted at step 3")


def main(argv: list[str]) -> None:
    world = dist.world()
    dist.abort_on_error(world)
    scenario, outdir = argv[0], Path(argv[1])
    if scenario == "equivalence":
        equivalence(world, outdir)
    elif scenario == "resume":
        resume(world, outdir, argv[2], argv[3])
    elif scenario == "mismatch":
        mismatch(world, outdir)
    elif scenario == "fault":
        fault(world, outdir)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
