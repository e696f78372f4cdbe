"""LeNet-5 train step and inference: fnn against PyTorch (CPU) and a tutorial-style loop reference.

    python benchmarks/lenet.py            # batch 32, 128, 256; 5 warm-up + 30 timed rounds
    python benchmarks/lenet.py --quick    # a smoke run: 1 warm-up + 5 timed rounds, rough numbers

Train step (with and without the input's dx) and inference of fnn, the identical ``nn.Sequential`` and
``_loop_reference.py``, from the same parameters; fnn per layer; peak memory. See benchmarks/README.md.
"""

from __future__ import annotations

import gc
import math
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

import _harness as H


def flags(p: Any) -> None:
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256], metavar="N")
    p.add_argument("--breakdown-batch", type=int, default=128, metavar="N", help="batch of the per-layer breakdown")
    p.add_argument("--no-reference", action="store_true", help="leave the loop reference out")


ARGS = H.setup(__doc__, flags)
import _loop_reference as loopref
import _steps as S
import numpy as np

import fnn
from fnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

TORCH_NOTE = H.import_torch(ARGS)
LR, SEED, SHAPE = 0.01, 0, (1, 28, 28)
REFERENCE_BUDGET_S = 60.0  # the reference's timed steps per batch size are capped to about this much time
LABELS = {"train": "train", "train_no_dx": "train, no input dx", "infer": "inference"}


def lenet() -> fnn.Layer:
    return fnn.serial(Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(16, 5), ReLU(), MaxPool2D(2),
                      Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))


def torch_lenet(params: Any) -> Any:
    """The identical ``nn.Sequential``, with fnn's parameters copied in through ``fnn.interop``."""
    nn = H.torch.nn
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                          nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    state = fnn.interop.to_torch_state_dict(lenet(), params, SHAPE, template=model.state_dict())
    model.load_state_dict({k: H.torch.from_numpy(v) for k, v in state.items()})
    return model


def make_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, n])
    return rng.standard_normal((n, *SHAPE)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


def bench(n: int, net: fnn.Layer, params: Any) -> tuple[str, H.Times, dict[str, int]]:
    """One train step of each contender from ``params`` (compared), then the interleaved rounds."""
    x, labels = make_data(n)
    fnn_step, no_dx = S.FnnStep(net, params, x, labels, LR), S.FnnStep(net, params, x, labels, LR)
    losses = {"fnn": fnn_step.train(), "fnn with need_dx=False": no_dx.train(need_dx=False)}
    got = {"fnn": fnn_step.params, "fnn with need_dx=False": no_dx.params}
    steps: dict[str, dict[str, Callable[[], Any]]] = {
        "fnn": {"train": fnn_step.train, "train_no_dx": lambda: fnn_step.train(need_dx=False), "infer": fnn_step.infer}}
    if H.torch is not None:
        torch_step = S.TorchStep(torch_lenet(params), x, labels, LR)
        losses["torch"], got["torch"] = torch_step.train(), torch_step.fnn_params(net, SHAPE)
        steps["torch"] = {"train": torch_step.train, "infer": torch_step.infer}
    every = {}
    if not ARGS.no_reference:
        ref = loopref.LoopLeNet(params)
        t0 = time.perf_counter()
        losses["reference"], got["reference"] = ref.train_step(x, labels, LR), ref.params()
        # A slow reference runs on every k-th round only (train + inference take about 1.5 train steps).
        every["reference"] = max(1, math.ceil(1.5 * (time.perf_counter() - t0) * ARGS.repeats / REFERENCE_BUDGET_S))
        steps["reference"] = {"train": lambda: ref.train_step(x, labels, LR), "infer": lambda: ref.forward(x)}
    return S.agreement(losses, got), H.interleave(steps, ARGS.warmup, ARGS.repeats, every), every


def against(other: str, kind: str) -> str | None:
    """fnn without input dx is set against torch's train step, which never computes it either; the reference's does."""
    return kind if kind != "train_no_dx" else "train" if other == "torch" else None


def traced_peak(fn: Callable[[], Any]) -> int:
    """Bytes allocated at the peak of one call of ``fn`` beyond what was live before it (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()  # what this call keeps (new params, caches) is the baseline of the next
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def report_memory(net: fnn.Layer, params: Any) -> None:
    def mib(nbytes: float) -> str:
        return f"{nbytes / 2**20:.1f} MiB"

    rows = []
    for n in ARGS.batch_sizes:
        x, labels = make_data(n)
        f, ref = S.FnnStep(net, params, x, labels, LR), loopref.LoopLeNet(params)
        fns = [f.train, partial(f.train, need_dx=False), f.infer]
        fns += [] if ARGS.no_reference else [partial(ref.train_step, x, labels, LR)]
        rows.append([str(n), mib(x.nbytes)] + [mib(traced_peak(fn)) for fn in fns])
    print(H.table(["batch", "input x", "fnn train", "fnn train, no input dx", "fnn inference"]
                  + ([] if ARGS.no_reference else ["reference train"]), rows))
    print(f"\nParameters: {fnn.tree.size(params)} floats ({fnn.tree.nbytes(params) / 1024:.0f} KiB). tracemalloc: "
          "the peak of one step's allocations above what was live before it. NumPy reports its buffers to "
          "tracemalloc, so this is exact for fnn and the reference; PyTorch's C++ allocator is invisible to it, "
          "so PyTorch is not measured.\n")


def main() -> None:
    net = lenet()
    params = net.init(fnn.random.key(SEED), SHAPE)
    run = H.header("LeNet-5 on fnn: train step and inference", ARGS, TORCH_NOTE,
                   f"Batch sizes {ARGS.batch_sizes}, {ARGS.warmup} warm-up + {ARGS.repeats} timed rounds, float32, "
                   f"input (N, 1, 28, 28), SGD lr {LR}." + (" Loop reference left out." if ARGS.no_reference else ""),
                   ((128, 400), (400, 120), "Dense(120)'s forward at batch 128"))
    print("### Step times and ratios\n")
    results = [(n, *bench(n, net, params)) for n in ARGS.batch_sizes]
    H.step_tables([(str(n), times) for n, _, times, _ in results], "batch", LABELS, against)
    print("\"train, no input dx\" is fnn's step with vjp(dlogits, need_dx=False): serial stops backward at "
          "conv2d_0, which skips col2img. PyTorch's train step never computes the input's gradient either (the "
          "input does not require grad), so that row's fnn/torch ratio, set against torch's train step, is the "
          "like-for-like one; the reference always computes dx. Against fnn's own train step of the same round:")
    for n, _, times, every in results:
        rel = H.ratios(times, "fnn", "train_no_dx", "train")
        print(f"- batch {n}: no-dx step / train step {H.spread(rel, ratio=True)}"
              + (f"; the reference, slow, ran every {every['reference']}-th round" if every.get("reference", 1) > 1
                 else ""))
    print("\nOne train step from identical parameters, before timing (float32: differences ~1e-6 are rounding):")
    for n, check, _, _ in results:
        print(f"- batch {n}: {check}")
    print(f"\n### fnn per-layer breakdown, batch {ARGS.breakdown_batch}\n")
    S.breakdown(net, params, *make_data(ARGS.breakdown_batch), LR, ARGS.warmup, ARGS.repeats, need_dx=True)
    print("### Peak memory of one step (beyond the parameters, optimizer state and data already live)\n")
    report_memory(net, params)
    H.footer(run)


if __name__ == "__main__":
    main()
