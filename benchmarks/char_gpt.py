"""examples/char_gpt.py's train step: fnn against PyTorch (CPU), at one BLAS/PyTorch thread and at two, side by side.

    python benchmarks/char_gpt.py                # batch 32 of 64 characters; --threads 1 2; 5 warm-up + 30 rounds
    python benchmarks/char_gpt.py --quick        # a smoke run: 1 warm-up + 5 timed rounds, rough numbers

The model of examples/char_gpt.py (418k parameters on Python's help texts): a token Embedding(vocab, 128) tied to
the output layer, a learned PositionEmbedding(64), 2 pre-LN causal TransformerEncoderLayer(4 heads, MLP 512, exact
GELU, no dropout), LayerNorm; GPT-2's init. Its PyTorch twin is built from ``nn.Embedding``,
``nn.TransformerEncoderLayer(128, 4, 512, dropout=0, activation="gelu", batch_first=True, norm_first=True)`` with a
causal mask, ``nn.LayerNorm`` and a bias-free ``nn.Linear`` sharing the embedding's weight, and gets fnn's
parameters through ``fnn.interop``. A train step is the example's recipe: forward, cross-entropy over every
character, backward, clipping at global norm 1.0 and AdamW (betas (0.9, 0.99), weight decay 0.1 on the matrices
only): ``fnn.train_step`` against ``zero_grad``, ``backward``, ``clip_grad_norm_`` and ``AdamW.step``. Each round
both train on the same fresh batch of random windows. With PyTorch, each thread count then times every matrix
product of the step alone in NumPy and in PyTorch (what the two BLAS libraries cost before any other work). See
benchmarks/README.md.
"""

from __future__ import annotations

import math
from typing import Any

import _harness as H

ARGS = H.setup(__doc__, threads=[1, 2])
import _steps as S
import numpy as np

import fnn
from fnn.layers import Dense, Embedding, LayerNorm, PositionEmbedding, TransformerEncoderLayer

TORCH_NOTE = H.import_torch(ARGS)
SEED, BATCH, CONTEXT, WIDTH, HEADS, MLP, BLOCKS = 0, 32, 64, 128, 4, 512, 2
LR, BETAS, WEIGHT_DECAY, CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0


def text_ids() -> tuple[np.ndarray, int]:
    """Python's help texts as character ids (the example's default text) and the vocabulary's size."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[name] for name in sorted(topics))
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return np.array([index[c] for c in text], np.int64), len(vocab)


def model(vocab: int) -> fnn.Layer:
    """The example's GPT, named as :func:`torch_model`'s modules so that ``fnn.interop`` pairs them."""
    blocks = [(f"blocks.{i}", TransformerEncoderLayer(HEADS, MLP, dropout=0.0, activation="gelu", norm_first=True,
                                                      causal=True)) for i in range(BLOCKS)]
    return fnn.tie(fnn.serial(("tok", Embedding(vocab, WIDTH)), ("pos", PositionEmbedding(CONTEXT)), *blocks,
                              ("ln_f", LayerNorm()), ("head", Dense(vocab, bias=False))),
                   target="head/w", source="tok/weight", transpose=True)


def gpt2_params(net: fnn.Layer) -> Any:
    """``net``'s params with GPT-2's init, as the example's: matrices from N(0, 0.02^2), the two projections into
    the residual stream with std 0.02 / sqrt(2 * blocks)."""
    key = fnn.random.key(SEED)
    pairs, rebuild = fnn.tree.flatten(net.init(key, (CONTEXT,)))
    leaves = []
    for i, (path, leaf) in enumerate(pairs):
        if leaf.ndim >= 2:
            residual = path[-2:] in (("out_proj", "weight"), ("linear2", "w"))
            leaf = fnn.random.normal(fnn.random.fold_in(key, i), leaf.shape, leaf.dtype,
                                     std=0.02 / math.sqrt(2 * BLOCKS) if residual else 0.02)
        leaves.append(leaf)
    return rebuild(leaves)


def torch_model(vocab: int) -> Any:
    """The PyTorch twin: the same layers and the tied output, a causal mask on every block."""
    torch = H.torch
    nn = torch.nn

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, WIDTH), nn.Embedding(CONTEXT, WIDTH)
            self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(WIDTH, HEADS, MLP, dropout=0.0, activation="gelu",
                                                                   batch_first=True, norm_first=True)
                                        for _ in range(BLOCKS))
            self.ln_f, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, vocab, bias=False)
            self.head.weight = self.tok.weight
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(CONTEXT), persistent=False)

        def forward(self, idx: Any) -> Any:
            h = self.tok(idx) + self.pos.weight[: idx.shape[1]]
            for block in self.blocks:
                h = block(h, src_mask=self.mask, is_causal=True)
            return self.head(self.ln_f(h))

    return GPT()


class FnnGPTStep:
    """The example's step: ``fnn.train_step`` with clipping and AdamW (decay on the matrices only)."""

    def __init__(self, net: fnn.Layer, params: Any, batches: Any) -> None:
        opt = fnn.optim.chain(fnn.optim.clip_by_global_norm(CLIP),
                              fnn.optim.adamw(LR, betas=BETAS, weight_decay=WEIGHT_DECAY,
                                              decay_mask=fnn.optim.weights_only))
        self.step, self.batches = fnn.train_step(net, fnn.losses.softmax_cross_entropy, opt), batches
        self.params, self.opt_state = params, opt.init(params)

    def train(self) -> float:
        self.params, self.opt_state, _, metrics = self.step(self.params, self.opt_state, None, self.batches.now, None)
        return float(metrics["loss"])


class TorchGPTStep:
    """PyTorch's: zero_grad, forward, cross-entropy, backward, clip_grad_norm_, AdamW.step (two parameter groups)."""

    def __init__(self, twin: Any, batches: Any) -> None:
        decay = [p for p in twin.parameters() if p.ndim >= 2]
        rest = [p for p in twin.parameters() if p.ndim < 2]
        self.opt = H.torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                        {"params": rest, "weight_decay": 0.0}], lr=LR, betas=BETAS)
        self.twin, self.batches = twin, batches

    def train(self) -> float:
        torch = H.torch
        x, y = (torch.from_numpy(a) for a in self.batches.now)
        self.opt.zero_grad(set_to_none=True)
        logits = self.twin(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.twin.parameters(), CLIP)
        self.opt.step()
        return float(loss.item())


class Batches:
    """The current batch of random windows (inputs and next characters), the same for both contenders; ``draw``
    moves on to a fresh one."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids, self.rng, self.offsets = ids, np.random.default_rng(SEED), np.arange(CONTEXT + 1)
        self.draw()

    def draw(self) -> None:
        window = self.ids[self.rng.integers(0, len(self.ids) - CONTEXT, BATCH)[:, None] + self.offsets]
        self.now = (window[:, :-1], window[:, 1:])


def check(net: fnn.Layer, params: Any, twin: Any, batch: tuple[np.ndarray, np.ndarray]) -> str:
    """The loss and every gradient of fnn and the twin from the same parameters on one batch (gradients, not an
    AdamW step: Adam's first step ``lr * g / |g|`` turns the rounding of a gradient that is zero in exact
    arithmetic, the key projection's bias's, into ``±lr``)."""
    torch = H.torch
    loss, grads, _, _ = fnn.value_and_grad(net, fnn.losses.softmax_cross_entropy)(params, *batch)
    twin.zero_grad(set_to_none=True)
    logits = twin(torch.from_numpy(batch[0]))
    t_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               torch.from_numpy(batch[1]).reshape(-1))
    t_loss.backward()
    t_grads = fnn.interop.from_torch_state_dict(
        net, {k: p.grad.numpy().copy() for k, p in twin.state_dict(keep_vars=True).items()}, (CONTEXT,))[0]
    rel = fnn.tree.map(lambda a, b: float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)), grads, t_grads)
    d_loss, d_grad = abs(float(loss) - t_loss.item()), max(fnn.tree.leaves(rel))
    verdict = "agree" if d_loss < 1e-4 and d_grad < 1e-3 else "**DISAGREE**"
    return f"{verdict} — loss {float(loss):.6f}, |Δloss| {d_loss:.1e}, max rel. |Δgrads| {d_grad:.1e}"


def bench(net: fnn.Layer, params: Any, ids: np.ndarray, vocab: int) -> tuple[str, H.Times]:
    """The agreement check from ``params``, then interleaved rounds, each on a fresh batch."""
    batches = Batches(ids)
    steps: dict[str, dict[str, Any]] = {"fnn": {"train": FnnGPTStep(net, params, batches).train}}
    agree = "not checked (no PyTorch)"
    if H.torch is not None:
        twin = S.load_twin(torch_model(vocab), net, params, (CONTEXT,))
        agree = check(net, params, twin, batches.now)
        steps["torch"] = {"train": TorchGPTStep(twin, batches).train}
    steps["data"] = {"train": batches.draw}  # a fresh batch for the next round (timed, not compared)
    return agree, H.interleave(steps, ARGS.warmup, ARGS.repeats)


def products(vocab: int) -> list[H.Product]:
    """Every matrix product of one train step of the example's GPT, as fnn computes it (the weight gradients as
    ``x.T @ dy``; the attention's per head, batched over ``N H``)."""
    m, e, f, bh, t, d = BATCH * CONTEXT, WIDTH, MLP, BATCH * HEADS, CONTEXT, WIDTH // HEADS
    per_block = [("in_proj", e, 3 * e), ("out_proj", e, e), ("linear1", e, f), ("linear2", f, e)]
    rows = []
    for name, n_in, n_out in per_block:
        rows += [H.Product(f"{name} forward", (m, n_in), (n_in, n_out), BLOCKS),
                 H.Product(f"{name} dx", (m, n_out), (n_out, n_in), BLOCKS),
                 H.Product(f"{name} dw", (n_in, m), (m, n_out), BLOCKS, a_t=True)]
    return rows + [H.Product("scores, dP", (bh, t, d), (bh, d, t), 2 * BLOCKS),
                   H.Product("P V, dV, dq, dk", (bh, t, t), (bh, t, d), 4 * BLOCKS),
                   H.Product("head forward", (m, e), (e, vocab), 1), H.Product("head dx", (m, vocab), (vocab, e), 1),
                   H.Product("head dw", (e, m), (m, vocab), 1, a_t=True)]


def product_floor(vocab: int) -> None:
    """The step's matrix products alone, in NumPy and in PyTorch (``_harness.product_floor``)."""
    numpy, torch = H.product_floor(products(vocab), ARGS.warmup, ARGS.repeats)
    print(f"\nEach product timed alone (medians of {ARGS.repeats}), float32. Products alone put fnn's step "
          f"{H.ms(numpy - torch)} ms behind PyTorch's before any other work (PyTorch's causal "
          "attention also skips the masked half of the scores).\n")


def main() -> None:
    ids, vocab = text_ids()
    net = model(vocab)
    params = gpt2_params(net)
    run = H.header("examples/char_gpt.py's train step on fnn against PyTorch", ARGS, TORCH_NOTE,
                   f"Batch {BATCH} windows of {CONTEXT} characters, vocabulary {vocab}, "
                   f"{fnn.tree.size(params):,} parameters, float32. {ARGS.warmup} warm-up + {ARGS.repeats} timed "
                   f"rounds, threads {ARGS.thread_counts}.",
                   ((BATCH * CONTEXT, WIDTH), (WIDTH, MLP), "linear1's forward"))
    by_threads = {}
    for threads in ARGS.thread_counts:
        note = H.use_threads(threads)
        print(f"### Step times and ratios, --threads {threads}{note}\n")
        agree, times = bench(net, params, ids, vocab)
        times = {k: v for k, v in times.items() if k[0] != "data"}
        H.step_tables([(str(BATCH), times)], "batch", {"train": "train step"})
        print(f"Loss and gradients from identical parameters on one batch, before timing (float32: relative "
              f"differences up to ~1e-4 are rounding): {agree}\n")
        if H.torch is not None:
            print(f"### The step's matrix products alone, --threads {threads}\n")
            product_floor(vocab)
        by_threads[threads] = times
    if H.torch is not None and len(by_threads) > 1:
        print("### fnn/torch train-step ratios side by side\n")
        H.side_by_side(["batch"], "r", [([str(BATCH)], "train", by_threads)])
    H.use_threads(ARGS.threads)
    H.footer(run)


if __name__ == "__main__":
    main()
