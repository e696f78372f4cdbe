"""Data-parallel scaling: images/s of the LeNet-5 train step on 1..P MPI ranks at a fixed global batch,
fnn against PyTorch DDP (gloo) with the same ranks and the same split.

    python benchmarks/distributed.py                       # ranks 1, 2, 4, ... up to the CPUs; global batch 512
    python benchmarks/distributed.py --ranks 1 2 4 8 16 --batch 2048
    python benchmarks/distributed.py --quick               # a smoke run: rough numbers

Each configuration (library, P) runs as its own job, ``mpiexec -n P python
benchmarks/distributed.py --_worker LIB``, with one BLAS/OpenMP thread per rank
(``OPENBLAS_NUM_THREADS=1``; with more threads than cores the ranks' BLAS threads
would wait for each other). Every rank takes ``batch / P`` examples of the same
global batch of random ``(1, 28, 28)`` images; a step is forward, loss, backward
without the input gradient, the gradient all-reduce and an SGD update, on each
rank. Before each timed step the ranks meet at a barrier, and the step's time is
the slowest rank's. The jobs run in ``--rounds`` interleaved rounds (every
configuration once per round), so that machine noise hits all of them alike.

Printed (markdown): per P, the median step time [IQR] over all timed steps,
images/s, the scaling efficiency ``throughput(P) / (P * throughput(1))``, the
share of fnn's step spent in its gradient all-reduce, and fnn/torch step-time
ratios (median of the per-round ratios). PyTorch is used when ``import torch``
works: ``DistributedDataParallel`` over gloo on the loopback interface
(``GLOO_SOCKET_IFNAME=lo``), launched by the same ``mpiexec`` with the same ranks.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LR = 0.01


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", metavar="P", help="world sizes (default: 1, 2, 4, ... up to the "
                   "usable CPUs, and the CPU count itself)")
    p.add_argument("--batch", type=int, default=512, help="global batch (default 512), split across the ranks")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per job (default 20; 5 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; 2 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds of jobs (default 3; 1 with --quick)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch DDP out")
    p.add_argument("--quick", action="store_true", help="few steps and one round: checks the script works")
    p.add_argument("--_worker", dest="worker", choices=["fnn", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--_port", dest="port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.batch < 1 or args.repeats < 1 or args.rounds < 1 or (args.ranks and min(args.ranks) < 1):
        p.error("--batch, --repeats, --rounds and --ranks must be >= 1")
    return args


# --- the workers (one per rank, under mpiexec) ------------------------------------------------------

def fnn_worker(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import fnn
    from fnn import distributed as dist
    from fnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

    world = dist.world()
    dist.abort_on_error(world)
    net = fnn.serial(Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(16, 5), ReLU(), MaxPool2D(2),
                     Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, args.batch))
    shard = dist.shard(world, batch)
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
        t3 = time.perf_counter()
        if i >= args.warmup:
            steps.append(t3 - t0)
            reduces.append(t2 - t1)
    slowest = dist.allgather(world, np.array(steps)).max(axis=0)
    return {"steps": slowest.tolist(), "allreduce": reduces, "size": world.size, "rank": world.rank}


def torch_worker(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.distributed as tdist
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(1)
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
        F.cross_entropy(ddp(x), y).backward()  # DDP averages the gradients over the ranks
        opt.step()
        if i >= args.warmup:
            steps.append(time.perf_counter() - t0)
    gathered = [torch.zeros(len(steps), dtype=torch.float64) for _ in range(size)]
    tdist.all_gather(gathered, torch.tensor(steps, dtype=torch.float64))
    tdist.destroy_process_group()
    return {"steps": torch.stack(gathered).max(dim=0).values.tolist(), "allreduce": [], "size": size, "rank": rank}


# --- the driver -----------------------------------------------------------------------------------

def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def mpiexec() -> list[str]:
    exe = shutil.which("mpiexec")
    if exe is None:
        raise SystemExit("mpiexec is not on PATH: pip install -e '.[mpi]' (or load your cluster's MPI)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    if "Open MPI" not in version:
        return [exe]
    return [exe, "--oversubscribe", "--bind-to", "none"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_job(lib: str, ranks: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [*mpiexec(), "-n", str(ranks), sys.executable, str(Path(__file__).resolve()), "--_worker", lib,
           "--batch", str(args.batch), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--_port", str(free_port())]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{lib} on {ranks} ranks failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return dict(json.loads(lines[0][len("RESULT "):]))


def median(v: Sequence[float]) -> float:
    s = sorted(v)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def quartiles(v: Sequence[float]) -> tuple[float, float]:
    s = sorted(v)
    return s[len(s) // 4], s[(3 * len(s)) // 4]


def torch_available() -> str | None:
    probe = subprocess.run([sys.executable, "-c", "import torch, torch.distributed; print(torch.__version__)"],
                           capture_output=True, text=True, check=False)
    return probe.stdout.strip() if probe.returncode == 0 else None


def main(args: argparse.Namespace) -> None:
    cpus = usable_cpus()
    ranks = args.ranks or sorted({p for p in (1, 2, 4, 8, 16, 32, 64) if p <= cpus} | {cpus})
    torch_version = None if args.no_torch else torch_available()
    libs = ["fnn"] + (["torch"] if torch_version else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"LeNet-5 train step (float32, no input gradient, SGD), global batch {args.batch} split over P ranks; "
          f"{cpus} usable CPUs, load {load:.2f} at start; one BLAS thread per rank; {args.rounds} round(s) of "
          f"{args.warmup} warm-up + {args.repeats} timed steps per job; "
          + (f"PyTorch {torch_version} DDP (gloo)." if torch_version else "PyTorch not available: fnn only."))
    results: dict[tuple[str, int], list[list[float]]] = {(lib, p): [] for lib in libs for p in ranks}
    shares: dict[int, list[float]] = {p: [] for p in ranks}
    for _ in range(args.rounds):
        for p in ranks:
            for lib in libs:
                out = run_job(lib, p, args)
                results[lib, p].append(out["steps"])
                if lib == "fnn":
                    shares[p] += [r / s for r, s in zip(out["allreduce"], out["steps"])]
    base = {lib: args.batch / median([t for r in results[lib, ranks[0]] for t in r]) / ranks[0] for lib in libs}
    header = ["P", "fnn step ms [IQR]", "fnn images/s", "fnn efficiency", "fnn all-reduce share"]
    if "torch" in libs:
        header += ["torch step ms [IQR]", "torch images/s", "torch efficiency", "fnn/torch step"]
    print("\n| " + " | ".join(header) + " |\n|" + "---:|" * len(header))
    for p in ranks:
        row = [str(p)]
        for lib in libs:
            times = [t for r in results[lib, p] for t in r]
            lo, hi = quartiles(times)
            throughput = args.batch / median(times)
            row += [f"{median(times) * 1e3:.1f} [{lo * 1e3:.1f}–{hi * 1e3:.1f}]", f"{throughput:,.0f}",
                    f"{throughput / (p * base[lib]):.2f}"]
            if lib == "fnn":
                row.append(f"{median(shares[p]):.1%}")
        if "torch" in libs:
            ratios = [median(f) / median(t) for f, t in zip(results["fnn", p], results["torch", p])]
            row.append(f"**{median(ratios):.2f}**")
        print("| " + " | ".join(row) + " |")
    print(f"\nEfficiency is throughput(P) / (P x throughput({ranks[0]})) per library (1.00: perfect scaling). "
          "Step times are the slowest rank's; fnn/torch is the median over rounds of the ratio of median step times. "
          "Compare ratios within this run, never absolute times across runs or machines.")


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        result = (fnn_worker if ARGS.worker == "fnn" else torch_worker)(ARGS)
        if result["rank"] == 0:
            print("RESULT " + json.dumps(result), flush=True)
        if ARGS.worker == "torch":
            sys.stderr.flush()
            os._exit(0)  # PyTorch's gloo threads sometimes abort the interpreter's shutdown after the work is done
    else:
        main(ARGS)
