"""A transformer encoder's train step and inference: fnn against PyTorch (CPU), at one BLAS/PyTorch thread and at
two, side by side; fnn's train step per sub-layer (attention, feed-forward, GELU, LayerNorm, ...).

    python benchmarks/transformer.py                     # batch 64; --threads 1 2; 5 warm-up + 30 timed rounds
    python benchmarks/transformer.py --batch-sizes 32 64 128
    python benchmarks/transformer.py --quick             # a smoke run: 1 warm-up + 5 timed rounds, rough numbers

The model of examples/transformer_digits.py on (N, 28, 28) inputs, each image row a token: Dense(64) per token, a
learned PositionEmbedding(28), 2 pre-LN TransformerEncoderLayer(4 heads, feed-forward 128, GELU, dropout 0.1),
LayerNorm, MeanOverTime, Dense(10); against the identical PyTorch model (``nn.TransformerEncoderLayer(64, 4, 128,
dropout=0.1, activation="gelu", batch_first=True, norm_first=True)``), from the same parameters. A train step is
forward (dropout on), cross-entropy, backward and an AdamW update. See benchmarks/README.md.
"""

from __future__ import annotations

from typing import Any

import _harness as H


def flags(p: Any) -> None:
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64], metavar="N", help="batch sizes (default 64)")
    p.add_argument("--breakdown-batch", type=int, default=64, metavar="N",
                   help="batch of the per-layer breakdown (default 64; 0 leaves it out)")
    p.add_argument("--width", type=int, default=64, metavar="E", help="features per token (default 64)")
    p.add_argument("--heads", type=int, default=4, metavar="H", help="attention heads (default 4)")
    p.add_argument("--feedforward", type=int, default=128, metavar="F", help="feed-forward width (default 128)")
    p.add_argument("--blocks", type=int, default=2, metavar="B", help="encoder blocks (default 2)")
    p.add_argument("--dropout", type=float, default=0.1, metavar="P", help="dropout rate in training (default 0.1)")
    p.add_argument("--no-memory", action="store_true", help="leave out fnn's peak-memory table")


ARGS = H.setup(__doc__, flags, threads=[1, 2])
import _steps as S
import numpy as np

import fnn
from fnn.layers import Dense, LayerNorm, MeanOverTime, PositionEmbedding, TransformerEncoderLayer

TORCH_NOTE = H.import_torch(ARGS)
SEED, CLASSES, SHAPE = 0, 10, (28, 28)  # SHAPE: one example, 28 tokens (image rows) of 28 pixels
LR, WEIGHT_DECAY = 1e-3, 1e-2  # AdamW, PyTorch's defaults, weight decay on every parameter (as PyTorch's default)
CHECK_LR = 0.01  # SGD of the agreement check (see check)
LABELS = {"train": "train step", "infer": "inference"}


def model(rate: float) -> fnn.Layer:
    """fnn's model, dropout rate ``rate``; named as :func:`torch_model`'s modules, so ``fnn.interop`` pairs them."""
    return fnn.serial(("embed", Dense(ARGS.width)), ("pos", PositionEmbedding(SHAPE[0])),
                      *[(f"blocks.{i}", TransformerEncoderLayer(ARGS.heads, ARGS.feedforward, dropout=rate,
                                                                activation="gelu", norm_first=True))
                        for i in range(ARGS.blocks)],
                      ("norm", LayerNorm()), ("mean", MeanOverTime()), ("head", Dense(CLASSES)))


def torch_model(rate: float) -> Any:
    """The identical PyTorch model (its ``pos`` an ``nn.Embedding`` whose first T rows are added, as fnn's)."""
    nn, (tokens, pixels), e = H.torch.nn, SHAPE, ARGS.width

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.pos = nn.Linear(pixels, e), nn.Embedding(tokens, e)
            self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(
                e, ARGS.heads, ARGS.feedforward, dropout=rate, activation="gelu", batch_first=True, norm_first=True)
                for _ in range(ARGS.blocks)])
            self.norm, self.head = nn.LayerNorm(e), nn.Linear(e, CLASSES)

        def forward(self, x: Any) -> Any:
            h = self.embed(x) + self.pos.weight[: x.shape[1]]
            for block in self.blocks:
                h = block(h)
            return self.head(self.norm(h).mean(dim=1))

    return Twin()


def torch_twin(params: Any, rate: float) -> Any:
    """:func:`torch_model` with fnn's parameters copied in through ``fnn.interop``."""
    return S.load_twin(torch_model(rate), model(rate), params, SHAPE)


def make_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, n])
    return rng.standard_normal((n, *SHAPE)).astype(np.float32), rng.integers(0, CLASSES, n).astype(np.int64)


def adamw() -> fnn.optim.Optimizer:
    return fnn.optim.adamw(LR, weight_decay=WEIGHT_DECAY)


def check(params: Any, x: np.ndarray, labels: np.ndarray) -> str:
    """One SGD step of both models without dropout (whose masks cannot agree) from ``params``: loss and parameters
    compared. Not AdamW: the key bias's gradient is zero up to rounding (softmax ignores a shift common to a query's
    scores), and Adam's first step ``lr * g / |g|`` turns that rounding into ``±lr``, in fnn and PyTorch alike."""
    f = S.FnnStep(model(0.0), params, x, labels, CHECK_LR, need_dx=False)
    t = S.TorchStep(torch_twin(params, 0.0), x, labels, CHECK_LR)
    losses = {"fnn": f.train(), "torch": t.train()}
    return S.agreement(losses, {"fnn": f.params, "torch": t.fnn_params(model(0.0), SHAPE)})


def bench(n: int, params: Any) -> tuple[str, H.Times]:
    """fnn and PyTorch on the same batch from ``params``: the agreement check, then the interleaved rounds."""
    x, labels = make_data(n)
    f = S.FnnStep(model(ARGS.dropout), params, x, labels, LR, need_dx=False, opt=adamw(), key=fnn.random.key(SEED))
    steps, agree = {"fnn": {"train": f.train, "infer": f.infer}}, "not checked (no PyTorch)"
    if H.torch is not None:
        agree = check(params, x, labels)
        t = S.TorchStep(torch_twin(params, ARGS.dropout), x, labels, LR, eval_infer=True,
                        opt=lambda ps: H.torch.optim.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY))
        steps["torch"] = {"train": t.train, "infer": t.infer}
    return agree, H.interleave(steps, ARGS.warmup, ARGS.repeats)


def side_by_side(by_threads: dict[int, list[tuple[int, str, H.Times]]]) -> None:
    """fnn/torch median per-round ratios, a column per thread count."""
    times = {t: {n: times for n, _, times in runs} for t, runs in by_threads.items()}
    H.side_by_side(["batch", "step"], "rl", [([str(n), LABELS[kind]], kind, {t: times[t][n] for t in times})
                                              for n in ARGS.batch_sizes for kind in LABELS])


def report_memory(params: Any) -> None:
    """fnn's tracemalloc peak of one train step and one inference, and what the train step's vjp holds."""
    def mib(nbytes: float) -> str:
        return f"{nbytes / 2**20:.1f} MiB"

    net, rows = model(ARGS.dropout), []
    param_ids = set(map(id, fnn.tree.leaves(params)))
    for n in sorted({*ARGS.batch_sizes, ARGS.breakdown_batch} - {0}):
        x, labels = make_data(n)
        f = S.FnnStep(net, params, x, labels, LR, need_dx=False, opt=adamw(), key=fnn.random.key(SEED))
        train, infer = S.traced_peak(f.train), S.traced_peak(f.infer)
        vjp = net.apply(params, x, train=True, key=fnn.random.key(SEED))[1]
        held = sum(a.nbytes for i, a in fnn.inspection.closure_arrays(vjp).items() if i not in param_ids)
        rows.append([str(n), mib(x.nbytes), mib(train), mib(infer), mib(held), f"{train / held:.2f}"])
    print(H.table(["batch", "input x", "fnn train, no input dx", "fnn inference", "vjps hold", "train / vjps hold"],
                  rows))
    print(f"\nParameters: {fnn.tree.size(params)} floats ({fnn.tree.nbytes(params) / 1024:.0f} KiB). tracemalloc: the "
          "peak of one call's allocations above what was live before it (the train step's includes the new parameters "
          "and AdamW moments its update allocates); inference is `fnn.predict`. vjps hold: the buffers one train "
          "step's vjp keeps for backward, parameters excluded (`fnn.inspection.closure_arrays`). PyTorch's memory is "
          "not measured here (see lenet.py's RSS probe).\n")


def main() -> None:
    if ARGS.dropout < 0 or ARGS.dropout >= 1 or min(ARGS.batch_sizes) < 1 or ARGS.breakdown_batch < 0:
        raise SystemExit("--dropout must be in [0, 1), --batch-sizes >= 1, --breakdown-batch >= 0")
    params = model(ARGS.dropout).init(fnn.random.key(SEED), SHAPE)
    tokens = ARGS.batch_sizes[0] * SHAPE[0]
    run = H.header("Transformer encoder on fnn: train step and inference against PyTorch", ARGS, TORCH_NOTE,
                   f"Batch sizes {ARGS.batch_sizes}, input (N, {SHAPE[0]} tokens, {SHAPE[1]} features), float32. "
                   f"Dense({ARGS.width}) per token, PositionEmbedding({SHAPE[0]}), {ARGS.blocks} pre-LN "
                   f"TransformerEncoderLayer({ARGS.heads} heads, feed-forward {ARGS.feedforward}, GELU, dropout "
                   f"{ARGS.dropout}), LayerNorm, MeanOverTime, Dense({CLASSES}). Train step: dropout on, "
                   f"cross-entropy, backward without the input's gradient, AdamW(lr {LR}, weight decay "
                   f"{WEIGHT_DECAY}); inference: `fnn.predict` against PyTorch's eval mode under no_grad. "
                   f"{ARGS.warmup} warm-up + {ARGS.repeats} timed rounds, threads {ARGS.thread_counts}.",
                   ((tokens, ARGS.width), (ARGS.width, ARGS.feedforward), f"linear1's forward at batch "
                    f"{ARGS.batch_sizes[0]}"))
    by_threads = {}
    for t in ARGS.thread_counts:
        note = H.use_threads(t)
        print(f"### Step times and ratios, --threads {t}{note}\n")
        by_threads[t] = [(n, *bench(n, params)) for n in ARGS.batch_sizes]
        H.step_tables([(str(n), times) for n, _, times in by_threads[t]], "batch", LABELS)
        print("One SGD step from identical parameters, dropout off, before timing (float32: differences ~1e-7 to "
              "1e-6 are rounding):")
        for n, agree, _ in by_threads[t]:
            print(f"- batch {n}: {agree}")
        print()
    if H.torch is not None and len(by_threads) > 1:
        print("### fnn/torch ratios side by side\n")
        side_by_side(by_threads)
    H.use_threads(ARGS.threads)
    if ARGS.breakdown_batch:
        print(f"### Where fnn's train step goes, batch {ARGS.breakdown_batch}, --threads {ARGS.threads}\n")
        S.breakdown(model(ARGS.dropout), params, *make_data(ARGS.breakdown_batch), LR, ARGS.warmup, ARGS.repeats,
                    need_dx=False, opt=adamw(), opt_label=f"adamw({LR})", key=fnn.random.key(SEED), flat=True)
    if not ARGS.no_memory:
        print(f"### fnn's peak memory of one step (beyond the parameters, optimizer state and data already live), "
              f"--threads {ARGS.threads}\n")
        report_memory(params)
    H.footer(run)


if __name__ == "__main__":
    main()
