"""A transformer encoder classifies handwritten digits, reading each image as a sequence of rows.

Each image row is a token: 28 tokens of 28 pixels on MNIST (``--mnist DIR``), 8 tokens
of 8 on scikit-learn's 8x8 digits (the default). The model::

    embed     Dense(64) on each row                      (N, T, W) -> (N, T, 64)
    pos       PositionEmbedding(T): a learned vector per row, added
    blocks    2 x TransformerEncoderLayer(4 heads, feed-forward 128, GELU, dropout 0.1, pre-LN)
    norm      LayerNorm
    mean      MeanOverTime: the mean over the T tokens   (N, T, 64) -> (N, 64)
    head      Dense(10)

It shows fnn's attention layers (``docs/attention.md``): multi-head self-attention with
its closed-form backward inside pre-LN blocks built from ``residual``, ``serial``,
``LayerNorm`` and ``Dense``. It trains with AdamW (decoupled weight decay on the weight
matrices only) for 20 epochs of batch 64, the learning rate rising linearly over the first
epoch (``--warmup``) and then decaying to 0 on a cosine, with ``fnn.fit``: a progress bar
on a terminal and a line per epoch with the held-out loss and accuracy. ``--save DIR`` adds ``fnn.training.Checkpoint``
(``DIR/last.fnn`` after every epoch, ``DIR/best.fnn`` at the best held-out accuracy, the
flags in ``DIR/config.fnn``); ``--resume DIR`` continues that run bitwise with
``fnn.fit(..., resume=DIR/last.fnn)``, and ``--stop-after K`` ends a run after epoch K as
if it had been interrupted.

    python examples/transformer_digits.py                          # scikit-learn's 8x8 digits
    python examples/transformer_digits.py --mnist DIR              # MNIST (see --help for the files)
    python examples/transformer_digits.py --plot runs/transformer_digits.png
    python examples/transformer_digits.py --mnist DIR --save runs/tf --stop-after 5   # then --resume runs/tf

It prints the model summary, per-epoch progress, the confusion matrix and the held-out
accuracy: about 97 % on the digits and above 97 % on MNIST's 2,000 held-out test images
when it trains on the other 8,000. The README lists measured figures.

Data parallel with the same flags (``--batch-size`` is the global batch; Dropout draws
its own masks on each process)::

    mpiexec -n 2 python examples/transformer_digits.py --mnist DIR
"""

import time

import common

import fnn
from fnn.layers import Dense, LayerNorm, MeanOverTime, PositionEmbedding, TransformerEncoderLayer

# Hyperparameters (the same for both data sets)
WIDTH = 64  # features per token
HEADS = 4
FEEDFORWARD = 128
BLOCKS = 2
DROPOUT = 0.1
EPOCHS = 20
BATCH_SIZE = 64
LR = 3e-3  # peak of the cosine schedule
WARMUP = 1  # epochs of linear warm-up
WEIGHT_DECAY = 0.1  # AdamW's, on the matrices only (weights and the position table; not biases or LayerNorm)

parser = common.parser(__doc__, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR)
parser.add_argument("--warmup", type=int, default=WARMUP, metavar="K",
                    help="epochs of linear warm-up before the cosine decay (at most --epochs - 1)")
parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY, metavar="WD",
                    help="AdamW's decoupled weight decay, on the weight matrices only")
common.add_run_flags(parser, every="after every epoch", best="after each epoch with the best held-out accuracy so far",
                     unit="epoch", schedule="--epochs")
args = parser.parse_args()
if args.warmup < 0:
    parser.error(f"--warmup must be at least 0, got {args.warmup}")
if not args.weight_decay >= 0:
    parser.error(f"--weight-decay must be at least 0, got {args.weight_decay}")
world = common.world()
threads = common.set_threads(args.threads, world)  # the BLAS limit holds while this is alive
start = time.perf_counter()
data = common.load_data(args.mnist, args.seed, args.limit)
# (N, 1, H, W) images -> (N, H, W) sequences: one token per image row
data = data._replace(x_train=data.x_train[:, 0], x_held=data.x_held[:, 0])
tokens, pixels = data.x_train.shape[1:]
print(f"sequences: {tokens} tokens of {pixels} pixels")

net = fnn.serial(
    ("embed", Dense(WIDTH)),
    ("pos", PositionEmbedding(tokens)),
    *[(f"blocks.{i}", TransformerEncoderLayer(HEADS, FEEDFORWARD, dropout=DROPOUT, activation="gelu",
                                              norm_first=True)) for i in range(BLOCKS)],
    ("norm", LayerNorm()),
    ("mean", MeanOverTime()),
    ("head", Dense(10)),
)
init_key, train_key = fnn.random.split(fnn.random.key(args.seed))
params = net.init(init_key, (tokens, pixels))
fnn.summary(net, (tokens, pixels), params=params)

steps_per_epoch = common.steps_per_epoch(len(data.x_train), args.batch_size)
warmup = min(args.warmup, args.epochs - 1)  # a 1-epoch run has no warm-up
schedule = fnn.optim.cosine(args.lr, args.epochs * steps_per_epoch, warmup_steps=warmup * steps_per_epoch)
opt = fnn.optim.adamw(schedule, weight_decay=args.weight_decay, decay_mask=fnn.optim.weights_only)

config = {k: getattr(args, k) for k in ("mnist", "epochs", "batch_size", "lr", "seed", "limit", "warmup",
                                        "weight_decay")}
folder, resume = common.run_folder(args, world, config)
callbacks = [fnn.training.Checkpoint(folder, monitor="eval_accuracy")] if folder else []

# --stop-after K: the first K epochs of the --epochs schedule, as an interrupted run would have left them
epochs = common.stop_point(args, args.epochs)
run = fnn.fit(net, params, opt, (data.x_train, data.y_train), epochs=epochs, batch_size=args.batch_size,
              loss_fn=fnn.losses.softmax_cross_entropy, key=train_key, eval_data=(data.x_held, data.y_held),
              callbacks=callbacks, world=world, eval_batch_size=500, resume=resume)
common.exit_if_stopped(run.epoch, args.epochs, "epoch", folder)

common.report(net, run.params, run.state, data, run.history, args.plot, start, world=world)
