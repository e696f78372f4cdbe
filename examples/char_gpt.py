"""A small GPT learns to write like Python's help pages, one character at a time, then writes some.

The text is the help that ships with every Python, ``pydoc_data.topics`` (the pages
``help("assert")`` and the like show; its topics joined in sorted order), or any UTF-8 file
with ``--text FILE``. The vocabulary is the text's characters; the last 10 % of the text is
held out. The model, a decoder-only transformer (``docs/attention.md``)::

    tok       Embedding(vocab, 128), tied to the output layer below
    pos       PositionEmbedding(64): a learned vector per position, added
    blocks    2 x TransformerEncoderLayer(4 causal heads, MLP 512, exact GELU, no dropout, pre-LN)
    ln_f      LayerNorm
    head      Dense(vocab, bias=False), whose weight is tok's table transposed (fnn.tie)

initialized as GPT-2 is (every matrix from N(0, 0.02^2), the two projections back into the
residual stream of each block scaled down by sqrt(2 x blocks), biases 0). ``fnn.tie`` keeps
one table for the embedding and the output layer: the optimizer, the weight decay, the
clipping and the checkpoints see it once, and its gradient is the sum of both uses.

Each step draws a batch of 32 windows of 65 characters at random offsets of the training
text (from ``fold_in(key, step)``, so a resumed run draws the same ones); position t of a
window predicts character t + 1. As the windows are drawn afresh at each step rather than
taken from a fixed data set in epochs, the loop is written out with ``fnn.train_step``
(the pure step ``fnn.fit`` runs) instead of ``fnn.fit``. The optimizer is
``fnn.optim.chain(clip_by_global_norm(1.0), adamw(...))``: AdamW with betas (0.9, 0.99) and
weight decay 0.1 on the matrices only, 100 steps of linear warm-up, then cosine decay to 0
at the last step. Every ``--eval-every`` steps it evaluates the held-out text in
non-overlapping windows of 64 characters (``fnn.evaluate``, inference mode) and prints the
training and held-out loss, in nats and in bits per character (nats / ln 2).

At the end it prints the held-out bits per character beside the unigram entropy of the
training text (what a model that ignores the context would get), and a sample: characters
drawn one at a time from the model's softmax at ``--temperature`` after ``--prompt``, with
``fnn.predict`` and keys from ``fnn.random`` only.

``--save DIR`` writes the run to ``DIR/last.fnn`` at every evaluation and to ``DIR/best.fnn``
at the lowest held-out loss (``fnn.training.Checkpoint``, called from the loop; the flags go
to ``DIR/config.fnn``); ``--resume DIR`` continues it exactly, and ``--stop-after K`` ends a
run after step K as if it had been interrupted. ``fnn.load("DIR/best.fnn")["params"]``
gives the best params.

    python examples/char_gpt.py                                   # Python's help texts
    python examples/char_gpt.py --text FILE --steps 5000          # any text
    python examples/char_gpt.py --prompt "The for statement" --temperature 0.5
    python examples/char_gpt.py --plot runs/char_gpt.png --save runs/gpt

It prints the text's size, the model summary, a line per evaluation, the held-out loss and
bits per character, the unigram entropy and a sample. The README lists measured figures.
Data parallel with the same flags (``--batch-size`` is the global batch)::

    mpiexec -n 2 python examples/char_gpt.py
"""

import math
import time

import common
import numpy as np

import fnn
from fnn.layers import Dense, Embedding, LayerNorm, PositionEmbedding, TransformerEncoderLayer

# Hyperparameters
CONTEXT = 64  # characters a position can see (itself and those before it)
WIDTH = 128
HEADS = 4
BLOCKS = 2
MLP = 4 * WIDTH
STEPS = 2000
BATCH_SIZE = 32  # windows per step
LR = 1e-3  # peak of the schedule
BETAS = (0.9, 0.99)
WEIGHT_DECAY = 0.1  # AdamW's, on the matrices only (the tied table included; not biases or LayerNorm)
WARMUP = 100  # steps
CLIP_NORM = 1.0
HELD_OUT = 0.1  # the last tenth of the text
EVAL_EVERY = 250
PROMPT = "The "
TEMPERATURE = 0.8
SAMPLE = 500  # characters

parser = common.basic_parser(__doc__, lr=LR)
parser.add_argument("--text", metavar="FILE", help="train on this UTF-8 text instead of Python's help texts")
parser.add_argument("--limit", type=common.positive_int, metavar="N",
                    help="use only the first N characters of the text (smoke tests)")
parser.add_argument("--steps", type=common.positive_int, default=STEPS, help="training steps")
parser.add_argument("--batch-size", type=common.positive_int, default=BATCH_SIZE,
                    help="windows per step (the global batch under mpiexec)")
parser.add_argument("--warmup", type=int, default=WARMUP, metavar="K",
                    help="steps of linear warm-up before the cosine decay")
parser.add_argument("--eval-every", type=common.positive_int, default=EVAL_EVERY, metavar="K",
                    help="evaluate on the held-out text (and save, with --save) every K steps")
parser.add_argument("--prompt", default=PROMPT, help="the text the sample starts from")
parser.add_argument("--temperature", type=common.positive_float, default=TEMPERATURE,
                    help="divides the logits before sampling: lower is more conservative")
parser.add_argument("--sample", type=int, default=SAMPLE, metavar="N", help="characters to generate (0: none)")
parser.add_argument("--plot", default="", metavar="PATH",
                    help="write a PNG of the training curves to PATH, creating its folder (runs/ is git-ignored: "
                         "say --plot runs/NAME.png); by default no plot and no file is written")
common.add_run_flags(parser, every="at every evaluation", best="at the lowest held-out loss so far", unit="step",
                     schedule="--steps")
args = parser.parse_args()
if not 0 <= args.warmup < args.steps:
    parser.error(f"--warmup must be at least 0 and less than --steps ({args.steps}), got {args.warmup}")
if args.sample < 0:
    parser.error(f"--sample must be at least 0, got {args.sample}")
world = common.world()
threads = common.set_threads(args.threads, world)  # the BLAS limit holds while this is alive
start = time.perf_counter()

# --- the text, as integer tokens -----------------------------------------------------------------
if args.text:
    try:
        with open(args.text, encoding="utf-8") as f:
            text, source = f.read(), args.text
    except (OSError, UnicodeDecodeError) as err:
        parser.error(f"--text: cannot read {args.text} as UTF-8 text: {err}")
else:
    from pydoc_data.topics import topics

    text, source = "\n".join(topics[name] for name in sorted(topics)), f"Python's help texts ({len(topics)} topics)"
text = text[:args.limit]
vocab = sorted(set(text))
if len(text) < 10 * (CONTEXT + 1):
    raise SystemExit(f"the text has {len(text):,} characters; it needs at least {10 * (CONTEXT + 1):,} "
                     f"(a held-out tenth of at least one window of {CONTEXT + 1})")
missing = sorted(set(args.prompt) - set(vocab))
if missing or not args.prompt:
    parser.error("--prompt must not be empty" if not args.prompt else
                 f"--prompt may only use characters of the text, and {missing} are not in it")
index = {c: i for i, c in enumerate(vocab)}
ids = np.array([index[c] for c in text], np.int64)
split = int(len(ids) * (1 - HELD_OUT))
train, held = ids[:split], ids[split:]
# the held-out text in non-overlapping windows: inputs held[64 i : 64 i + 64], targets one character on
windows = (len(held) - 1) // CONTEXT
x_held = held[:windows * CONTEXT].reshape(windows, CONTEXT)
y_held = held[1:windows * CONTEXT + 1].reshape(windows, CONTEXT)
counts = np.bincount(train, minlength=len(vocab))
p = counts[counts > 0] / len(train)
unigram_bits = float(-(p * np.log2(p)).sum())
print(f"text: {source}, {len(text):,} characters, a vocabulary of {len(vocab)}; {len(train):,} for training, "
      f"the last {len(held):,} held out ({windows:,} windows of {CONTEXT})")

# --- the model -----------------------------------------------------------------------------------
blocks = [(f"blocks.{i}", TransformerEncoderLayer(HEADS, MLP, dropout=0.0, activation="gelu", norm_first=True,
                                                  causal=True)) for i in range(BLOCKS)]
gpt = fnn.tie(fnn.serial(("tok", Embedding(len(vocab), WIDTH)), ("pos", PositionEmbedding(CONTEXT)), *blocks,
                         ("ln_f", LayerNorm()), ("head", Dense(len(vocab), bias=False))),
              target="head/w", source="tok/weight", transpose=True)


def gpt2_init(key, params):
    """GPT-2's init: every matrix from N(0, 0.02^2), the projections back into the residual stream
    (attention's out_proj, the MLP's linear2) with std 0.02 / sqrt(2 * BLOCKS); biases and
    LayerNorm as they are (0, and scale 1 / shift 0)."""
    pairs, rebuild = fnn.tree.flatten(params)
    leaves = []
    for i, (path, leaf) in enumerate(pairs):
        if leaf.ndim >= 2:
            residual = path[-2:] in (("out_proj", "weight"), ("linear2", "w"))
            std = 0.02 / math.sqrt(2 * BLOCKS) if residual else 0.02
            leaf = fnn.random.normal(fnn.random.fold_in(key, i), leaf.shape, leaf.dtype, std=std)
        leaves.append(leaf)
    return rebuild(leaves)


init_key, train_key, sample_key = fnn.random.split(fnn.random.key(args.seed), 3)
params = gpt2_init(init_key, gpt.init(init_key, (CONTEXT,)))  # fold_in's draws are apart from init's split
fnn.summary(gpt, (CONTEXT,), params=params)  # one example: CONTEXT token ids

schedule = fnn.optim.cosine(args.lr, args.steps, warmup_steps=args.warmup)
opt = fnn.optim.chain(fnn.optim.clip_by_global_norm(CLIP_NORM),
                      fnn.optim.adamw(schedule, betas=BETAS, weight_decay=WEIGHT_DECAY,
                                      decay_mask=fnn.optim.weights_only))
loss_fn = fnn.losses.softmax_cross_entropy  # logits (N, T, vocab), targets (N, T): the mean over N x T characters
step = fnn.train_step(gpt, loss_fn, opt, world=world)  # (params, opt_state, state, batch, key) -> (..., metrics)
offsets = np.arange(CONTEXT + 1)


def batch_for(i):
    """Step i's windows: inputs (batch, 64) and targets shifted by one, from fold_in(train_key, i);
    every rank draws the same global batch and keeps its share."""
    starts = fnn.random.generator(fnn.random.fold_in(train_key, i)).integers(0, len(train) - CONTEXT,
                                                                             args.batch_size)
    window = train[starts[:, None] + offsets]
    return fnn.distributed.shard(world, (window[:, :-1], window[:, 1:]))


def held_out_loss(params):
    """The mean cross-entropy (nats per character) over every held-out window, in inference mode."""
    return fnn.evaluate(gpt, params, x_held, y_held, loss_fn=loss_fn, metrics=["loss"], batch_size=64,
                        world=world)["loss"]


# --- checkpoints: fnn.fit's, written from this loop ----------------------------------------------
config = {k: getattr(args, k) for k in ("text", "limit", "steps", "batch_size", "lr", "warmup", "eval_every",
                                        "seed")}
folder, last = common.run_folder(args, world, config)
checkpoint = fnn.training.Checkpoint(folder) if folder else None  # best.fnn: the lowest eval_loss
# the run as fnn.fit keeps it, with one difference: its `epoch` counts the steps done
run = fnn.training.FitState(fnn.distributed.broadcast(world, params), None, None, {}, 0, train_key)
run = run._replace(opt_state=opt.init(run.params), callbacks=(checkpoint.init(run),) if checkpoint else ())
if last is not None:
    run = fnn.training.load_fit_state(last, world)
    print(f"resumed from {args.resume} after step {run.epoch}")


def bits(nats):
    """Nats per character in bits per character."""
    return nats / math.log(2)


def progress_bar(total, desc):
    """A tqdm bar over the steps to the next evaluation on a terminal, as fnn.fit shows (None without tqdm)."""
    if not world.is_root:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)  # disable=None: off unless a tty


# --- training ------------------------------------------------------------------------------------
end = common.stop_point(args, args.steps)
params, opt_state, done = run.params, run.opt_state, run.epoch
width = len(str(args.steps))
while done < end:
    begin = time.perf_counter()
    stop = min(end, (done // args.eval_every + 1) * args.eval_every)
    bar = progress_bar(stop - done, f"steps {done + 1}-{stop}")
    losses = []
    for i in range(done, stop):
        params, opt_state, _, metrics = step(params, opt_state, None, batch_for(i))  # no dropout: no key
        losses.append(metrics["loss"])
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
    if bar is not None:
        bar.close()
    done = stop
    logs = {"step": done, "loss": float(np.mean(losses)), "eval_loss": held_out_loss(params), "lr": schedule(done - 1),
            "time": time.perf_counter() - begin}
    history = {name: [*run.history.get(name, []), value] for name, value in logs.items()}
    run = fnn.training.FitState(params, opt_state, None, history, done, train_key, run.callbacks)
    if checkpoint is not None:  # what fnn.fit does with a callback after each epoch
        mine, run = checkpoint.on_epoch_end(run.callbacks[0], run)
        run = run._replace(callbacks=(mine,))
        checkpoint.after_epoch(mine, run, world)
    print(f"step {done:{width}}/{args.steps}  loss {logs['loss']:.4f} ({bits(logs['loss']):.3f} bits/char)  "
          f"eval_loss {logs['eval_loss']:.4f} ({bits(logs['eval_loss']):.3f} bits/char)  ({logs['time']:.1f} s)",
          flush=True)
common.exit_if_stopped(done, args.steps, "step", folder)

# --- what it learned -----------------------------------------------------------------------------
held_loss = run.history["eval_loss"][-1]
print(f"held-out loss: {held_loss:.4f} nats/char = {bits(held_loss):.3f} bits/char over {windows * CONTEXT:,} "
      f"characters; the unigram entropy of the training text is {unigram_bits:.3f} bits/char")


def sample(params, prompt, n, temperature, key):
    """``n`` characters after ``prompt``, each drawn from softmax(logits / temperature) at the last
    position of the (up to) 64 characters before it; draw j uses fold_in(key, j)."""
    tokens = [index[c] for c in prompt]
    for j in range(n):
        logits = fnn.predict(gpt, params, np.array([tokens[-CONTEXT:]]))[0, -1].astype(np.float64)
        z = np.exp((logits - logits.max()) / temperature)
        cdf = np.cumsum(z / z.sum())
        u = fnn.random.uniform(fnn.random.fold_in(key, j), (1,), np.float64)[0]
        tokens.append(min(int(np.searchsorted(cdf, u, side="right")), len(vocab) - 1))
    return "".join(vocab[t] for t in tokens)


if args.sample:
    print(f"sample (temperature {args.temperature:g}):")
    print(sample(params, args.prompt, args.sample, args.temperature, sample_key))
    print("-" * 40)


def save_curves(history, path):
    """A PNG of the training and held-out loss in bits per character against the steps."""
    plt = common.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(history["step"], [bits(v) for v in history["loss"]], label="train (mean since the last point)")
    ax.plot(history["step"], [bits(v) for v in history["eval_loss"]], label="held out")
    ax.axhline(unigram_bits, color="gray", linestyle=":", label="unigram entropy")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend()
    common.write_figure(plt, fig, path)


if args.plot and world.is_root:
    save_curves(run.history, args.plot)
print(f"total time: {time.perf_counter() - start:.1f} s")
