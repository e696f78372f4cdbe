"""LeNet-5 classifies handwritten digits, with optional BatchNorm, Dropout, Adam and exact resume.

On 28x28 MNIST (``--mnist DIR``) the network is LeNet-5: Conv2D 6@5x5 (padding 2), ReLU,
max-pool 2; Conv2D 16@5x5, ReLU, max-pool 2; Dense 120, 84, 10. On scikit-learn's
8x8 digits (the default) the same net is scaled down so the pools still have pixels
to pool: 3x3 kernels with padding 1 keep 8x8 -> 4x4 -> 2x2, so the classifier sees
16x2x2 = 64 features instead of 16x5x5 = 400.

Options: ``--batchnorm`` puts BatchNorm after each convolution and hidden Dense layer;
``--dropout P`` drops with probability P before each hidden Dense layer;
``--optimizer sgd|adam`` (SGD with Nesterov momentum, or Adam; both on a cosine
schedule); ``--save PATH`` writes a checkpoint (params, optimizer state, BatchNorm
statistics, the data-order key and the epoch) to PATH after every epoch, creating
its folder; ``--resume PATH`` continues from one, and ``--stop-after K`` ends a run
after epoch K as if it had been interrupted. A run of 4 epochs and a run stopped
after 2 and resumed for 2 more end with bitwise-identical checkpoints.

    python examples/lenet_digits.py                                     # scikit-learn's 8x8 digits
    python examples/lenet_digits.py --mnist DIR                         # MNIST (see --help for the files)
    python examples/lenet_digits.py --mnist DIR --optimizer adam --batchnorm
    python examples/lenet_digits.py --save runs/lenet.fnn --plot runs/lenet_digits.png

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
import numpy as np

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
parser.add_argument("--save", metavar="PATH", help="write a checkpoint to PATH after every epoch, creating its folder")
parser.add_argument("--resume", metavar="PATH", help="continue from a checkpoint written by --save")
parser.add_argument("--stop-after", type=int, metavar="K", help="stop after epoch K (simulates an interruption)")
args = parser.parse_args()
world = common.world()
threads = common.set_threads(args.threads, world)  # the BLAS limit holds while this is alive
lr = LR[args.optimizer] if args.lr is None else args.lr
if args.save and world.is_root:
    common.make_parent(args.save)
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
state = opt_state = None
start_epoch, history = 0, None
if args.resume:
    saved_config = fnn.distributed.load_metadata(world, args.resume)
    if saved_config["config"] != config:
        raise SystemExit(f"--resume: the checkpoint was made with {saved_config['config']}, not {config}")
    bn_state = net.apply(params, data.x_train[:1], state=fnn.INITIAL_STATE).state  # its structure ({} without BN)
    template = {"params": params, "opt_state": opt.init(params), "state": bn_state, "key": train_key,
                "epoch": np.array(0)}
    ckpt = fnn.distributed.load(world, args.resume, like=template)  # rank 0 reads, names any mismatch, broadcasts
    params, opt_state, state = ckpt["params"], ckpt["opt_state"], ckpt["state"] or None
    start_epoch, history = int(ckpt["epoch"]), saved_config["history"]
    print(f"resumed from {args.resume} after epoch {start_epoch}")


def checkpoint(epoch, trained):
    if args.save:
        fnn.distributed.save(world, args.save, {"params": trained.params, "opt_state": trained.opt_state,
                                                "state": trained.state or {}, "key": train_key,
                                                "epoch": np.array(epoch)},
                             metadata={"config": config, "history": trained.history})
    if args.stop_after == epoch:
        print(f"stopped after epoch {epoch} (--stop-after)")
        raise SystemExit(0)


trained = common.train(net, params, opt, data, epochs=args.epochs, batch_size=args.batch_size, key=train_key,
                       state=state, opt_state=opt_state, start_epoch=start_epoch, history=history,
                       on_epoch_end=checkpoint, world=world)

common.report(net, trained.params, trained.state, data, trained.history, args.plot, start, world=world)
