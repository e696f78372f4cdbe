"""LSTM and MLP train steps and inference: fnn against PyTorch (CPU), and fnn's LSTM step per layer.

    python benchmarks/lstm.py                # batch 128; 5 warm-up + 30 timed rounds
    python benchmarks/lstm.py --threads 1    # one thread each: the cleanest library-to-library comparison
    python benchmarks/lstm.py --quick        # a smoke run: 1 warm-up + 5 timed rounds, rough numbers

``serial(LSTM(128), LastStep(), Dense(10))`` on ``(N, 28, 28)`` sequences and ``serial(Flatten(), Dense(512),
ReLU(), Dense(512), ReLU(), Dense(10))``, each against its PyTorch twin from the same (PyTorch's initial)
weights. See benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import _harness as H


def flags(p: Any) -> None:
    p.add_argument("--batch", type=int, default=128, metavar="N", help="batch size of both models (default 128)")
    p.add_argument("--seq-len", type=int, default=28, metavar="T", help="LSTM time steps (default 28)")
    p.add_argument("--features", type=int, default=28, metavar="F", help="LSTM input features (default 28)")
    p.add_argument("--hidden", type=int, default=128, metavar="H", help="LSTM hidden size (default 128)")
    p.add_argument("--no-mlp", action="store_true", help="leave the MLP out")


ARGS = H.setup(__doc__, flags)
import _steps as S
import numpy as np

import fnn
from fnn.layers import LSTM, Dense, Flatten, LastStep, ReLU

TORCH_NOTE = H.import_torch(ARGS)
LR, SEED, CLASSES, TARGET = 0.01, 0, 10, 1.0  # TARGET: the issue's, fnn's train step <= 1.0x PyTorch's
LABELS = {"train": "train step", "infer": "inference"}


def model(name: str) -> tuple[fnn.Layer, tuple[int, ...], Callable[[], tuple[Any, Any]]]:
    """fnn's model, the shape of one example, and a maker of PyTorch's model and its forward."""
    nn, feat, hid = getattr(H.torch, "nn", None), ARGS.features, ARGS.hidden
    if name == "LSTM":
        def torch_lstm() -> tuple[Any, Any]:
            m = nn.ModuleDict({"lstm": nn.LSTM(feat, hid, batch_first=True), "head": nn.Linear(hid, CLASSES)})
            return m, lambda x: m["head"](m["lstm"](x)[0][:, -1])
        return fnn.serial(LSTM(hid), LastStep(), Dense(CLASSES)), (ARGS.seq_len, feat), torch_lstm

    def torch_mlp() -> tuple[Any, Any]:
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, CLASSES))
        return m, m
    return fnn.serial(Flatten(), Dense(512), ReLU(), Dense(512), ReLU(), Dense(CLASSES)), (1, 28, 28), torch_mlp


def bench(name: str) -> tuple[str, H.Times, tuple[Any, ...]]:
    """fnn (from PyTorch's initial weights) and PyTorch on the same batch: one step compared, then timed."""
    net, shape, make_torch = model(name)
    rng = np.random.default_rng([SEED, len(shape)])
    x = rng.standard_normal((ARGS.batch, *shape)).astype(np.float32)
    labels = rng.integers(0, CLASSES, ARGS.batch).astype(np.int64)
    params, torch_step = net.init(fnn.random.key(SEED), shape), None
    if H.torch is not None:
        H.torch.manual_seed(SEED)
        module, forward = make_torch()
        torch_step = S.TorchStep(module, x, labels, LR, forward)
        params = torch_step.fnn_params(net, shape)
    fnn_step = S.FnnStep(net, params, x, labels, LR, need_dx=False)
    steps = {"fnn": {"train": fnn_step.train, "infer": fnn_step.infer}}
    check = "not checked (no PyTorch)"
    if torch_step is not None:
        losses = {"fnn": fnn_step.train(), "torch": torch_step.train()}
        check = S.agreement(losses, {"fnn": fnn_step.params, "torch": torch_step.fnn_params(net, shape)})
        steps["torch"] = {"train": torch_step.train, "infer": torch_step.infer}
    return check, H.interleave(steps, ARGS.warmup, ARGS.repeats), (net, params, x, labels)


def main() -> None:
    feat, hid, n = ARGS.features, ARGS.hidden, ARGS.batch
    gate_product = ((4 * hid, feat + 1 + hid), (feat + 1 + hid, n), "the LSTM's per-step gate product")
    run = H.header("LSTM and MLP on fnn: train step and inference against PyTorch", ARGS, TORCH_NOTE,
                   f"Batch {n}, float32, SGD lr {LR}, {ARGS.warmup} warm-up + {ARGS.repeats} timed rounds. LSTM({feat} "
                   f"→ {hid}), T = {ARGS.seq_len}, then LastStep and Dense({CLASSES}); MLP 784-512-512-10 on "
                   "(N, 1, 28, 28).", gate_product)
    print("### Step times and ratios\n")
    results = {name: bench(name) for name in ["LSTM"] + ([] if ARGS.no_mlp else ["MLP"])}
    H.step_tables([(name, times) for name, (_, times, _) in results.items()], "model", LABELS)
    print("One train step from identical parameters, before timing (float32: differences ~1e-7 to 1e-6 are rounding):")
    for name, (check, _, _) in results.items():
        print(f"- {name}: {check}")
    print(f"\n### Where fnn's LSTM train step goes, batch {n}\n")
    S.breakdown(*results["LSTM"][2], LR, ARGS.warmup, ARGS.repeats, need_dx=False)
    busy = [why for flagged, why in ((run["load"] > run["cpus"], "the machine was oversubscribed"),
                                     ("stalling" in run["stall"], "threaded BLAS stalled")) if flagged]
    caveat = f" — *unreliable: {' and '.join(busy)}; compare a `--threads 1` run*" if busy and ARGS.threads > 1 else ""
    print(f"### Targets: train step at most {TARGET:.1f}x PyTorch's (median per-round ratio)\n")
    for name, (_, times, _) in results.items():
        ratio = H.med(H.ratios(times, "torch", "train"))
        print(f"- {name}: " + (f"**{'met' if ratio <= TARGET else 'not met'}** ({ratio:.2f} with --threads "
                               f"{ARGS.threads}){caveat}" if ratio else "not judged (no PyTorch)"))
    print()
    H.footer(run)


if __name__ == "__main__":
    main()
