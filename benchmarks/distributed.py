"""Data-parallel scaling: images/s of the LeNet-5 train step on 1..P MPI ranks at a fixed global batch,
fnn against PyTorch DDP (gloo on loopback) with the same ranks and the same split.

    python benchmarks/distributed.py                       # ranks 1, 2, 4, ... up to the CPUs; global batch 512
    python benchmarks/distributed.py --ranks 1 2 4 8 16 --batch 2048
    python benchmarks/distributed.py --quick               # a smoke run: 1 round of 2 warm-up + 5 timed steps

Each (library, P) is its own job, ``mpiexec -n P python benchmarks/distributed.py --_worker LIB``: see the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _harness as H


def flags(p: Any) -> None:
    p.add_argument("--ranks", type=int, nargs="+", metavar="P",
                   help="world sizes (default: 1, 2, 4, ... up to the usable CPUs, and the CPU count itself)")
    p.add_argument("--batch", type=int, default=512, help="global batch (default 512), split across the ranks")
    p.add_argument("--rounds", type=int, help="interleaved rounds of jobs (default 3; 1 with --quick)")
    p.add_argument("--_worker", dest="worker", choices=["fnn", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--_port", dest="port", type=int, default=0, help=argparse.SUPPRESS)


ARGS = H.setup(__doc__, flags, defaults=(20, 5), quick=(5, 2), threads=1)  # threads per rank
import numpy as np

import fnn
from fnn import distributed as dist
from fnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

LR = 0.01


def fnn_worker(args: Any) -> dict[str, Any]:
    world = dist.world()
    dist.abort_on_error(world)
    net = fnn.serial(Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(16, 5), ReLU(), MaxPool2D(2),
                     Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))
    rng = np.random.default_rng(0)
    shard = dist.shard(world, (rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32),
                               rng.integers(0, 10, args.batch)))
    x, y = shard.arrays
    params = dist.broadcast(world, net.init(fnn.random.key(0), (1, 28, 28)))
    opt = fnn.optim.sgd(LR)
    opt_state = opt.init(params)
    steps, reduces = [], []
    for i in range(args.warmup + args.repeats):
        world.barrier()
        t0 = time.perf_counter()
        logits, vjp = net.apply(params, x, train=True, world=world)
        _, dlogits = fnn.losses.softmax_cross_entropy(logits, y, reduction="sum")
        grads, _ = vjp(dlogits / np.float32(shard.total), need_dx=False)
        t1 = time.perf_counter()
        grads = dist.allreduce(world, grads)
        t2 = time.perf_counter()
        params, opt_state = opt.update(params, grads, opt_state)
        if i >= args.warmup:
            steps.append(time.perf_counter() - t0)
            reduces.append(t2 - t1)
    slowest = dist.allgather(world, np.array(steps)).max(axis=0)
    return {"steps": slowest.tolist(), "allreduce": reduces, "rank": world.rank}


def torch_worker(args: Any) -> dict[str, Any]:
    import torch
    import torch.distributed as tdist
    from torch import nn

    torch.set_num_threads(args.threads)
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1")))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port), GLOO_SOCKET_IFNAME="lo")
    tdist.init_process_group("gloo", rank=rank, world_size=size)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                          nn.ReLU(), nn.Linear(84, 10))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, args.batch)
    lo, hi = rank * args.batch // size, (rank + 1) * args.batch // size
    x, y = torch.from_numpy(xs[lo:hi]), torch.from_numpy(ys[lo:hi])
    steps = []
    for i in range(args.warmup + args.repeats):
        tdist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()  # DDP averages the gradients over the ranks
        opt.step()
        if i >= args.warmup:
            steps.append(time.perf_counter() - t0)
    gathered = [torch.zeros(len(steps), dtype=torch.float64) for _ in range(size)]
    tdist.all_gather(gathered, torch.tensor(steps, dtype=torch.float64))
    tdist.destroy_process_group()
    return {"steps": torch.stack(gathered).max(dim=0).values.tolist(), "allreduce": [], "rank": rank}


def mpiexec() -> list[str]:
    exe = shutil.which("mpiexec")
    if exe is None:
        raise SystemExit("mpiexec is not on PATH: pip install -e '.[mpi]' (or load your cluster's MPI)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    if "Open MPI" not in version:
        return [exe]
    return [exe, "--oversubscribe", "--bind-to", "none"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])


def run_job(lib: str, ranks: int, args: Any) -> dict[str, Any]:
    with socket.socket() as s:  # a free port for gloo's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [*mpiexec(), "-n", str(ranks), sys.executable, str(Path(__file__).resolve()), "--_worker", lib, "--batch",
           str(args.batch), "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads",
           str(args.threads), "--_port", str(port)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{lib} on {ranks} ranks failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return dict(json.loads(lines[0][len("RESULT "):]))


def main(args: Any) -> None:
    note = H.import_torch(args)
    if H.torch is not None and not H.torch.distributed.is_available():
        H.torch, note = None, "without torch.distributed"
    libs = ["fnn"] + (["torch"] if H.torch is not None else [])
    run = H.header("LeNet-5 data-parallel scaling over MPI ranks", args, note,
                   f"Train step (float32, no input gradient, SGD), global batch {args.batch} split over P ranks, "
                   f"{args.threads} BLAS thread(s) per rank, {args.rounds} round(s) of {args.warmup} warm-up + "
                   f"{args.repeats} timed steps per job" + (", against PyTorch DDP (gloo)." if len(libs) > 1 else "."))
    cpus = run["cpus"]
    ranks = args.ranks or sorted({p for p in (1, 2, 4, 8, 16, 32, 64) if p <= cpus} | {cpus})
    results: dict[tuple[str, int], list[list[float]]] = {(lib, p): [] for lib in libs for p in ranks}
    shares: dict[int, list[float]] = {p: [] for p in ranks}
    for _ in range(args.rounds):
        for p in ranks:
            for lib in libs:
                out = run_job(lib, p, args)
                results[lib, p].append(out["steps"])
                shares[p] += [r / s for r, s in zip(out["allreduce"], out["steps"])]
    base = {lib: args.batch / H.med([t for r in results[lib, ranks[0]] for t in r]) / ranks[0] for lib in libs}
    header = ["P", "fnn step ms [IQR]", "fnn images/s", "fnn efficiency", "fnn all-reduce share"]
    header += ["torch step ms [IQR]", "torch images/s", "torch efficiency", "fnn/torch step"] if "torch" in libs else []
    rows = []
    for p in ranks:
        row = [str(p)]
        for lib in libs:
            times = [t for r in results[lib, p] for t in r]
            throughput = args.batch / H.med(times)
            row += [H.spread(times), f"{throughput:,.0f}", f"{throughput / (p * base[lib]):.2f}"]
            row += [f"{H.med(shares[p]):.1%}"] if lib == "fnn" else []
        if "torch" in libs:
            per_round = [H.med(f) / H.med(t) for f, t in zip(results["fnn", p], results["torch", p])]
            row.append(f"**{H.med(per_round):.2f}**")
        rows.append(row)
    print(H.table(header, rows, "r" * len(header)))
    print(f"\nEfficiency is throughput(P) / (P x throughput({ranks[0]})) per library (1.00: perfect scaling). The "
          "all-reduce share bounds what overlapping communication with backward could save. Step times are the "
          "slowest rank's; fnn/torch is the median over rounds of the ratio of median step times.\n")
    H.footer(run)


if __name__ == "__main__":
    ARGS.rounds = ARGS.rounds or (1 if ARGS.quick else 3)
    if ARGS.batch < 1 or ARGS.rounds < 1 or (ARGS.ranks and min(ARGS.ranks) < 1):
        raise SystemExit("--batch, --rounds and --ranks must be >= 1")
    if ARGS.worker:
        result = (fnn_worker if ARGS.worker == "fnn" else torch_worker)(ARGS)
        if result["rank"] == 0:
            print("RESULT " + json.dumps(result), flush=True)
        if ARGS.worker == "torch":
            sys.stderr.flush()
            os._exit(0)  # PyTorch's gloo threads sometimes abort the interpreter's shutdown after the work is done
    else:
        main(ARGS)
