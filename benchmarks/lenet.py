"""Convnets: LeNet-5 and a wider convnet, train step and inference, fnn against PyTorch (CPU) and (LeNet-5) a
tutorial-style loop reference, at one BLAS/PyTorch thread and at two, side by side.

    python benchmarks/lenet.py              # LeNet-5 at batch 32, 128, 256, the convnet at 64; --threads 1 2
    python benchmarks/lenet.py --quick      # a smoke run: 1 warm-up + 5 timed rounds, rough numbers
    python benchmarks/lenet.py --memory-only  # LeNet-5's peak-memory table alone: nothing timed

From the same parameters: train step (with and without the input's dx) and inference of fnn, the identical
``nn.Sequential`` and ``_loop_reference.py``; with PyTorch, each step's matrix products alone; fnn per layer; peak
memory. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import _harness as H


def flags(p: Any) -> None:
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256], metavar="N", help="LeNet-5's batches")
    p.add_argument("--breakdown-batch", type=int, default=128, metavar="N",
                   help="batch of the per-layer breakdown (0: none)")
    p.add_argument("--convnet-batch", type=int, default=64, metavar="N", help="the convnet's batch (0: none)")
    p.add_argument("--no-reference", action="store_true", help="leave the loop reference out")
    p.add_argument("--memory-only", action="store_true", help="only LeNet-5's peak-memory table (nothing timed)")
    p.add_argument("--_rss-probe", dest="rss_probe", choices=["fnn", "torch"], help=argparse.SUPPRESS)


ARGS = H.setup(__doc__, flags, threads=[1, 2])
import _loop_reference as loopref
import _steps as S
import numpy as np

import fnn
from fnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

TORCH_NOTE = H.import_torch(ARGS)
LR, SEED, SHAPE = 0.01, 0, (1, 28, 28)
REFERENCE_BUDGET_S = 60.0  # the reference's timed steps per batch size are capped to about this much time
RECOMPUTE = "recompute" in inspect.signature(Conv2D).parameters  # Conv2D can keep x (default) or its columns
LABELS = {"train": "train", "train_no_dx": "train, no input dx", "train_keep": "train, no input dx, columns kept",
          "infer": "inference"}


def lenet(**conv: Any) -> fnn.Layer:
    return fnn.serial(Conv2D(6, 5, padding=2, **conv), ReLU(), MaxPool2D(2), Conv2D(16, 5, **conv), ReLU(),
                      MaxPool2D(2), Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))


def convnet() -> fnn.Layer:
    """Nonzero biases, as PyTorch's: after one step a zero bias is its update alone, a sum of 65,536 nearly cancelling
    float32 terms whose relative rounding error would exceed the agreement check's 1e-4."""
    c = {"padding": 1, "b_init": partial(fnn.init.uniform, scale=0.1)}
    return fnn.serial(Conv2D(32, 3, **c), ReLU(), Conv2D(32, 3, **c), ReLU(), MaxPool2D(2), Conv2D(64, 3, **c), ReLU(),
                      Conv2D(64, 3, **c), ReLU(), MaxPool2D(2), Flatten(), Dense(10))


MODELS: dict[str, tuple[Callable[[], fnn.Layer], tuple[int, ...], Callable[[Any], list[Any]]]] = {
    # name: fnn's model, one example's shape, the identical PyTorch modules
    "LeNet-5": (lenet, SHAPE, lambda nn: [
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)]),
    "convnet": (convnet, (3, 32, 32), lambda nn: [
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4096, 10)])}


def torch_twin(name: str, params: Any) -> Any:
    """The identical ``nn.Sequential``, with fnn's parameters copied in through ``fnn.interop``."""
    make, shape, modules = MODELS[name]
    return S.load_twin(H.torch.nn.Sequential(*modules(H.torch.nn)), make(), params, shape)


def make_data(n: int, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, n, *shape])
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


def bench(name: str, n: int, params: Any, reference: bool) -> tuple[str, H.Times, dict[str, int]]:
    """One train step of each contender from ``params`` (compared), then the interleaved rounds."""
    make, shape, _ = MODELS[name]
    x, labels = make_data(n, shape)
    variants = {"train": (make(), True)} if name == "LeNet-5" else {}
    variants["train_no_dx"] = (make(), False)
    variants.update({"train_keep": (lenet(recompute=False), False)} if RECOMPUTE and name == "LeNet-5" else {})
    fnn_steps = {kind: S.FnnStep(net, params, x, labels, LR, need_dx) for kind, (net, need_dx) in variants.items()}
    losses, got = {}, {}
    for i, (kind, step) in enumerate(fnn_steps.items()):
        key = "fnn" if i == 0 else f"fnn {LABELS[kind]}"
        losses[key], got[key] = step.train(), step.params
    steps = {"fnn": {kind: step.train for kind, step in fnn_steps.items()} | {"infer": fnn_steps["train_no_dx"].infer}}
    if H.torch is not None:
        torch_step = S.TorchStep(torch_twin(name, params), x, labels, LR)
        losses["torch"], got["torch"] = torch_step.train(), torch_step.fnn_params(make(), shape)
        steps["torch"] = {"train": torch_step.train, "infer": torch_step.infer}
    every = {}
    if reference:
        ref = loopref.LoopLeNet(params)
        t0 = time.perf_counter()
        losses["reference"], got["reference"] = ref.train_step(x, labels, LR), ref.params()
        # A slow reference runs on every k-th round only (train + inference take about 1.5 train steps).
        every["reference"] = max(1, math.ceil(1.5 * (time.perf_counter() - t0) * ARGS.repeats / REFERENCE_BUDGET_S))
        steps["reference"] = {"train": lambda: ref.train_step(x, labels, LR), "infer": lambda: ref.forward(x)}
    return S.agreement(losses, got), H.interleave(steps, ARGS.warmup, ARGS.repeats, every), every


def products(name: str, params: Any, n: int) -> list[H.Product]:
    """Every matrix product of one train step without the input's dx, as fnn computes it but each whole (fnn runs a
    convolution's in bands of output rows, and a small weight's in blocks of columns): per Conv2D ``w (F, C kh kw) @
    columns (C kh kw, N OH OW)``, ``dw`` as ``columns @ dy.T`` and, after the first layer, ``dx``'s columns as
    ``w.T @ dy``; per Dense ``x @ w``, ``x.T @ dy`` and ``dy @ w.T``."""
    make, shape, _ = MODELS[name]
    rows: list[H.Product] = []
    for row in fnn.summary(make(), shape, n, params=params, print_fn=None)[1:]:
        w, dx = params.get(row.name, {}).get("w"), bool(rows)  # serial's backward stops at the first layer with w
        if w is not None and row.kind.startswith("Conv2D"):
            f, k, m = w.shape[0], w[0].size, n * row.output_shape[2] * row.output_shape[3]
            rows += [H.Product(f"{row.name} forward", (f, k), (k, m), 1),
                     H.Product(f"{row.name} dw", (k, m), (m, f), 1, b_t=True)]
            rows += [H.Product(f"{row.name} dx", (k, f), (f, m), 1, a_t=True)] * dx
        elif w is not None and row.kind.startswith("Dense"):
            i, o = w.shape
            rows += [H.Product(f"{row.name} forward", (n, i), (i, o), 1),
                     H.Product(f"{row.name} dw", (i, n), (n, o), 1, a_t=True)]
            rows += [H.Product(f"{row.name} dx", (n, o), (o, i), 1, b_t=True)] * dx
    return rows


def product_floor(name: str, params: Any, n: int, times: H.Times) -> None:
    """The step's matrix products alone, in NumPy and in PyTorch, against PyTorch's whole train step in ``times``."""
    numpy, torch = H.product_floor(products(name, params, n), ARGS.warmup, ARGS.repeats)
    step = H.med([t for _, t in times["torch", "train"]])
    print(f"\n{name} at batch {n}: each product timed alone (medians of {ARGS.repeats}), float32. fnn's products alone "
          f"take {H.ms(numpy)} ms, {numpy / step:.2f}x PyTorch's whole train step ({H.ms(step)} ms, median of the "
          f"rounds above), which runs its convolutions as oneDNN's direct kernels, not as these products "
          f"(PyTorch's BLAS on the same products: {H.ms(torch)} ms).\n")


def against(other: str, kind: str) -> str | None:
    """fnn without input dx is set against torch's train step, which never computes it either; the reference's does."""
    return kind if kind in ("train", "infer") else "train" if other == "torch" else None


def high_water() -> int:
    """The resident high-water mark in bytes: /proc's VmHWM, which clear_refs resets. (``ru_maxrss`` is never below
    the parent's resident size at fork: exec carries that into it.)"""
    with open("/proc/self/status") as fh:
        return 1024 * int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])


def rss_probe(which: str) -> None:
    """In a fresh process (glibc's mmap threshold fixed by the parent): per batch, the rise of the resident
    high-water mark (reset through /proc/self/clear_refs) during one LeNet-5 step after a warm-up."""
    params, out = lenet().init(fnn.random.key(SEED), SHAPE), {}
    for n in ARGS.batch_sizes:
        x, labels = make_data(n)
        step = (S.FnnStep(lenet(), params, x, labels, LR, need_dx=False) if which == "fnn"
                else S.TorchStep(torch_twin("LeNet-5", params), x, labels, LR))
        for kind, fn in (("train", step.train), ("infer", step.infer)):
            rises = []
            for _ in range(3):
                fn()
                gc.collect()
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # the high-water mark restarts from the resident size
                before = high_water()
                fn()
                rises.append(high_water() - before)
            out[f"{n} {kind}"] = float(np.median(rises))
    print(json.dumps(out))


def rss_rise(which: str, batches: list[int]) -> dict[str, float] | str:
    cmd = [sys.executable, __file__, "--_rss-probe", which, "--threads", str(ARGS.threads), "--batch-sizes",
           *map(str, batches)] + (["--no-torch"] if which == "fnn" else [])
    proc = subprocess.run(cmd, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}, capture_output=True, text=True,
                          timeout=600, check=False)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return f"{which}'s probe failed: " + (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]


def memory_batches() -> list[int]:
    """The batches of the peak-memory table: ``--batch-sizes`` and the breakdown's, if any."""
    return sorted({*ARGS.batch_sizes, ARGS.breakdown_batch} - {0})


def report_memory(params: Any) -> None:
    def mib(nbytes: float) -> str:
        return f"{nbytes / 2**20:.1f} MiB"

    net, batches = lenet(), memory_batches()
    param_ids, probes = set(map(id, fnn.tree.leaves(params))), ["fnn"] + ["torch"] * (H.torch is not None)
    rss = {w: rss_rise(w, batches) for w in probes} if sys.platform == "linux" else {}
    rows = []
    for n in batches:
        x, labels = make_data(n)
        f, ref = S.FnnStep(net, params, x, labels, LR), loopref.LoopLeNet(params)
        keep = S.FnnStep(lenet(recompute=False), params, x, labels, LR, need_dx=False) if RECOMPUTE else None
        fns = [f.train, partial(f.train, need_dx=False)] + ([keep.train] if keep else []) + [f.infer]
        fns += [partial(ref.train_step, x, labels, LR)] * (not ARGS.no_reference)
        peaks = [S.traced_peak(fn) for fn in fns]
        held = sum(a.nbytes for i, a in fnn.inspection.closure_arrays(net.apply(params, x, train=True)[1]).items()
                   if i not in param_ids)
        rows.append([str(n), mib(x.nbytes), *map(mib, peaks), mib(held), f"{peaks[0] / held:.2f}"]
                    + [mib(r[f"{n} {k}"]) if isinstance(r, dict) else "–" for r in rss.values() for k in ("train",
                                                                                                          "infer")])
    print(H.table(["batch", "input x", "fnn train", "fnn train, no input dx"]
                  + ["fnn train, no input dx, columns kept"] * RECOMPUTE + ["fnn inference"]
                  + ["reference train"] * (not ARGS.no_reference) + ["vjps hold", "fnn train / vjps hold"]
                  + [f"{w} {k} (RSS)" for w in rss for k in ("train, no input dx", "inference")], rows))
    print(f"\nParameters: {fnn.tree.size(params)} floats ({fnn.tree.nbytes(params) / 1024:.0f} KiB). fnn and reference "
          "columns: tracemalloc, the peak of one step's allocations above what was live before it, exact for NumPy's "
          "buffers but blind to PyTorch's allocator; fnn inference is `fnn.predict` (need_vjp=False). vjps hold: the "
          "buffers one train step's vjp keeps for backward, parameters excluded (`fnn.inspection.closure_arrays`)."
          + (" Columns kept: LeNet-5 with `Conv2D(..., recompute=False)`, whose vjp keeps the column matrix;"
             " by default it keeps x and rebuilds the columns band by band."
             if RECOMPUTE else "") + (" RSS: the rise of the resident high-water mark during one step after a warm-up "
          f"(median of 3) in a fresh process per library at --threads {ARGS.threads}, glibc's mmap threshold fixed at "
          "64 KiB (MALLOC_MMAP_THRESHOLD_) so freed arrays leave the resident set; page-granular, it also counts BLAS "
          "and thread scratch. Compare fnn and torch through their RSS columns." if rss else ""))
    print("".join(f"- {r}\n" for r in rss.values() if not isinstance(r, dict)))


def main() -> None:
    if min(ARGS.batch_sizes) < 1 or ARGS.breakdown_batch < 0 or ARGS.convnet_batch < 0:
        raise SystemExit("lenet.py: --batch-sizes must be >= 1, --breakdown-batch and --convnet-batch >= 0 (0: none)")
    if ARGS.rss_probe:
        return rss_probe(ARGS.rss_probe)
    params = lenet().init(fnn.random.key(SEED), SHAPE)
    if ARGS.memory_only:
        run = H.header("LeNet-5 on fnn: peak memory", ARGS, TORCH_NOTE, f"LeNet-5: batch sizes "
                       f"{memory_batches()}, input (N, 1, 28, 28), float32, SGD lr "
                       f"{LR}; --memory-only: nothing timed.")
        H.use_threads(ARGS.threads)
        print(f"### LeNet-5 peak memory of one step (beyond the parameters, optimizer state and data already live), "
              f"--threads {ARGS.threads}\n")
        report_memory(params)
        return H.footer(run)
    wide = convnet().init(fnn.random.key(SEED), MODELS["convnet"][1]) if ARGS.convnet_batch else None
    run = H.header("LeNet-5 and a wider convnet on fnn: train step and inference", ARGS, TORCH_NOTE,
                   f"LeNet-5: batch sizes {ARGS.batch_sizes}, input (N, 1, 28, 28)" + (
                       f"; convnet: batch {ARGS.convnet_batch}, input (N, 3, 32, 32)" if wide else "")
                   + f"; float32, SGD lr {LR}, {ARGS.warmup} warm-up + {ARGS.repeats} timed rounds, threads "
                   f"{ARGS.thread_counts}." + (" Loop reference left out." if ARGS.no_reference else ""),
                   ((128, 400), (400, 120), "Dense(120)'s forward at batch 128"))
    for t in ARGS.thread_counts:
        note, reference = H.use_threads(t), not ARGS.no_reference and t == ARGS.thread_counts[0]
        print(f"### LeNet-5 step times and ratios, --threads {t}{note}\n")
        results = [(n, *bench("LeNet-5", n, params, reference)) for n in ARGS.batch_sizes]
        H.step_tables([(str(n), times) for n, _, times, _ in results], "batch", LABELS, against)
        print("\"train, no input dx\": vjp(dlogits, need_dx=False), serial stops backward at conv2d_0, which skips "
              "col2img; PyTorch's step never computes the input's gradient either, so that row's fnn/torch ratio is "
              "the like-for-like one. Against fnn's own train step" + (" (and columns kept against no input dx)"
                                                                       if RECOMPUTE else "") + " of the same round:")
        for n, check, times, every in results:
            no_dx = H.ratios(times, "fnn", "train_no_dx", "train")
            rc, k = H.ratios(times, "fnn", "train_keep", "train_no_dx"), every.get("reference", 1)
            print(f"- batch {n}: no-dx step / train step {H.spread(no_dx, True)}"
                  + (f"; columns kept / no-dx {H.spread(rc, True)}" if rc else "")
                  + (f"; the reference ran every {k}-th round" if k > 1 else "")
                  + f". One train step from identical parameters: {check}")
        if H.torch is not None:
            print(f"\n#### LeNet-5's matrix products alone, --threads {t}\n")
            for n, _, times, _ in results:
                product_floor("LeNet-5", params, n, times)
        if wide:
            print(f"\n### Convnet step times and ratios, batch {ARGS.convnet_batch}, --threads {t}{note}\n")
            check, times, _ = bench("convnet", ARGS.convnet_batch, wide, False)
            H.step_tables([(str(ARGS.convnet_batch), times)], "batch", LABELS, against)
            print(f"One train step from identical parameters: {check}")
            if H.torch is not None:
                print(f"\n#### The convnet's matrix products alone, --threads {t}\n")
                product_floor("convnet", wide, ARGS.convnet_batch, times)
        print()
    H.use_threads(ARGS.threads)
    if ARGS.breakdown_batch:
        print(f"### fnn per-layer breakdown, LeNet-5, batch {ARGS.breakdown_batch}, --threads {ARGS.threads}\n")
        S.breakdown(lenet(), params, *make_data(ARGS.breakdown_batch), LR, ARGS.warmup, ARGS.repeats, need_dx=True)
    print("### LeNet-5 peak memory of one step (beyond the parameters, optimizer state and data already live)\n")
    report_memory(params)
    H.footer(run)


if __name__ == "__main__":
    main()
