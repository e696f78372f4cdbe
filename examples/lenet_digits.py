"""LeNet-5 classifies handwritten digits, with optional BatchNorm, Dropout, Adam and exact resume.

On 28x28 MNIST (``--mnist DIR``) the network is LeNet-5: Conv2D 6@5x5 (padding 2), ReLU,
max-pool 2; Conv2D 16@5x5, ReLU, max-pool 2; Dense 120, 84, 10. On scikit-learn's
8x8 digits (the default) the same net is scaled down so the pools still have pixels
to pool: 3x3 kernels with padding 1 keep 8x8 -> 4x4 -> 2x2, so the classifier sees
16x2x2 = 64 features instead of 16x5x5 = 400.

Options: ``--batchnorm`` puts BatchNorm after each convolution and hidden Dense layer;
``--dropout P`` drops with probability P before each hidden Dense layer;
``--optimizer sgd|adam`` (SGD with Nesterov momentum, or Adam; both on a cosine
schedule). Training is ``fnn.fit``, with held-out evaluation after each epoch.
``--save DIR`` adds its ``fnn.training.Checkpoint`` callback: ``DIR/last.fnn`` after
every epoch (the whole run: params, optimizer state, BatchNorm statistics, the key the
data order derives from, the history), ``DIR/best.fnn`` after each epoch with the best
held-out accuracy so far, and the flags in ``DIR/config.fnn``, creating ``DIR``.
``--resume DIR`` continues the run with ``fnn.fit(..., resume=DIR/last.fnn)`` (the flags
must be the same), and ``--stop-after K`` ends a run after epoch K as if it had been
interrupted. A run of 4 epochs and a run stopped after 2 and resumed for 2 more end
with bitwise-identical checkpoints. ``fnn.load("DIR/best.fnn")["params"]`` gives the
best params.

    python examples/lenet_digits.py                                     # scikit-learn's 8x8 digits
    python examples/lenet_digits.py --mnist DIR                         # MNIST (see --help for the files)
    python examples/lenet_digits.py --mnist DIR --optimizer adam --batchnorm
    python examples/lenet_digits.py --save runs/lenet --plot runs/lenet_digits.png
    python examples/lenet_digits.py --save runs/lenet --stop-after 5   # then --resume runs/lenet

It prints the model summary, per-epoch progress, the confusion matrix and the
held-out accuracy: about 98 % on the digits, about 98.5 % on MNIST and about 99 %
with Adam and BatchNorm. The README lists measured figures.

Data parallel on several cores or machines, with the same flags (``--batch-size`` is
the global batch, split across the processes; BatchNorm is synchronized; rank 0
writes the checkpoints, and a run may resume on another number of processes)::

    mpiexec -n 2 python examples/lenet_digits.py --mnist DIR --optimizer adam --batchnorm
"""

import time

import common

import fnn
from fnn.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU

# Hyperparameters
EPOCHS = 20
BATCH_SIZE = 32
LR = {"sgd": 0.05, "adam": 2e-3}  # peaks of the cosine schedule
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4  # weights only, not biases or BatchNorm

parser = common.parser(__doc__, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR)
parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                    help="SGD with Nesterov momentum, or Adam (AdamW's decoupled weight decay)")
parser.add_argument("--batchnorm", action="store_true", help="BatchNorm after each convolution and hidden Dense layer")
parser.add_argument("--dropout", type=float, default=0.0, metavar="P", help="drop probability before Dense layers")
common.add_run_flags(parser, every="after every epoch", best="after each epoch with the best held-out accuracy so far",
                     unit="epoch", schedule="--epochs")
args = parser.parse_args()
world = common.world()
threads = common.set_threads(args.threads, world)  # the BLAS limit holds while this is alive
lr = LR[args.optimizer] if args.lr is None else args.lr
start = time.perf_counter()
data = common.load_data(args.mnist, args.seed, args.limit)
size = data.x_train.shape[-1]
kernel, pad1 = (5, 2) if size >= 28 else (3, 1)  # 8x8 digits: 3x3 kernels, "same" padding in both convs


def block(*layers):
    return [layers[0], *([BatchNorm()] if args.batchnorm else []), *layers[1:]]


def dense(width):
    return [*([Dropout(args.dropout)] if args.dropout else []), Dense(width),
            *([BatchNorm()] if args.batchnorm else []), ReLU()]


net = fnn.serial(
    *block(Conv2D(6, kernel, padding=pad1), ReLU(), MaxPool2D(2)),
    *block(Conv2D(16, kernel, padding=0 if size >= 28 else 1), ReLU(), MaxPool2D(2)),
    Flatten(), *dense(120), *dense(84), Dense(10),
)
init_key, train_key = fnn.random.split(fnn.random.key(args.seed))
params = net.init(init_key, data.x_train.shape[1:])
fnn.summary(net, data.x_train.shape[1:], params=params)

schedule = fnn.optim.cosine(lr, args.epochs * common.steps_per_epoch(len(data.x_train), args.batch_size))
if args.optimizer == "adam":
    opt = fnn.optim.adamw(schedule, weight_decay=WEIGHT_DECAY * 10, decay_mask=fnn.optim.weights_only)
else:
    opt = fnn.optim.sgd(schedule, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY,
                        decay_mask=fnn.optim.weights_only)

config = {k: getattr(args, k) for k in ("mnist", "epochs", "batch_size", "seed", "limit", "optimizer", "batchnorm",
                                        "dropout")} | {"lr": lr}
folder, resume = common.run_folder(args, world, config)
# DIR/last.fnn after every epoch (the whole run: fit(resume=...) continues it bitwise) and
# DIR/best.fnn after each epoch with the best held-out accuracy so far
callbacks = [fnn.training.Checkpoint(folder, monitor="eval_accuracy")] if folder else []

# --stop-after K: train the first K epochs of the --epochs schedule; the checkpoint is then the one
# an interrupted run would have left
epochs = common.stop_point(args, args.epochs)
run = fnn.fit(net, params, opt, (data.x_train, data.y_train), epochs=epochs, batch_size=args.batch_size,
              loss_fn=fnn.losses.softmax_cross_entropy, key=train_key, eval_data=(data.x_held, data.y_held),
              callbacks=callbacks, world=world, eval_batch_size=500, resume=resume)
common.exit_if_stopped(run.epoch, args.epochs, "epoch", folder)

common.report(net, run.params, run.state, data, run.history, args.plot, start, world=world)
