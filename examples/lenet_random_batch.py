"""Can a LeNet fit one batch of random images with random labels? A quick check that training works.

One batch of 32 random 3x28x28 images (standard normal) with random labels in 0..9,
a LeNet (two blocks of Conv2D, ReLU and 2x2 max pooling, then two Dense layers)
trained with softmax cross-entropy (mean over the batch) and plain full-batch SGD.
Nothing in the images predicts the labels, so the only way down is to memorize them.

Its training loop is fnn's protocol written out by hand, with no helper from
``fnn.training``: ``logits, vjp = net.apply(params, x)``, the loss and its gradient,
``grads, _ = vjp(dlogits)``, ``opt.update(params, grads, opt_state)``.

The hidden layers start He-initialized and the classifier at zero, so the first
loss is exactly ln 10 = 2.3026 (uniform predictions) whatever the seed. The script
prints the loss and accuracy every 20 steps and the first and last loss; with the
defaults the loss ends near zero and the accuracy at 100 %, the batch memorized. With
the default ``--steps`` and ``--lr`` it exits with an error if the final loss is
above 1.69, a sign that the gradients or the update are broken. It writes no files.

    python examples/lenet_random_batch.py
    python examples/lenet_random_batch.py --steps 500 --lr 0.005 --seed 1

It takes ``--steps``, ``--lr``, ``--seed`` and ``--threads`` (see ``--help``), not the
data-set flags of the other examples (``--mnist``, ``--epochs``, ``--plot``, ...). Under
``mpiexec -n P`` each process takes 1/P of the batch and the gradients are summed.
"""

import math

import common
import numpy as np

import fnn
from fnn.init import he_normal, zeros
from fnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

# Hyperparameters
BATCH, CHANNELS, SIZE, CLASSES = 32, 3, 28, 10
STEPS = 200
LR = 0.01
TARGET = 1.69  # the final loss must be below this with the default steps and learning rate

parser = common.basic_parser(__doc__, lr=LR, lr_help="learning rate (constant)",
                             seed_help="seeds the random batch, its labels and the init")
parser.add_argument("--steps", type=int, default=STEPS, help="full-batch SGD steps")
args = parser.parse_args()
if args.steps < 0:
    parser.error(f"argument --steps: must be 0 or more, got {args.steps}")
world = common.world()
threads = common.set_threads(args.threads, world)  # the BLAS limit holds while this is alive

k_data, k_labels, k_init = fnn.random.split(fnn.random.key(args.seed), 3)
x = fnn.random.normal(k_data, (BATCH, CHANNELS, SIZE, SIZE))
labels = fnn.random.permutation(k_labels, BATCH) % CLASSES  # every class appears
x_mine, labels_mine = fnn.distributed.shard(world, (x, labels)).arrays  # all of it in a single process

net = fnn.serial(
    Conv2D(6, 5, w_init=he_normal), ReLU(), MaxPool2D(2),   # 3x28x28 -> 6x24x24 -> 6x12x12
    Conv2D(16, 5, w_init=he_normal), ReLU(), MaxPool2D(2),  # -> 16x8x8 -> 16x4x4
    Flatten(), Dense(120, w_init=he_normal), ReLU(),
    Dense(CLASSES, w_init=zeros),                           # uniform predictions at step 0
)
params = fnn.distributed.broadcast(world, net.init(k_init, x.shape[1:]))
opt = fnn.optim.sgd(args.lr)
opt_state = opt.init(params)

print(f"one random batch of {BATCH} images {x.shape[1:]}, SGD lr {args.lr:g}, {args.steps} steps; "
      f"ln {CLASSES} = {math.log(CLASSES):.4f}")
losses = []
for step in range(args.steps + 1):
    logits, vjp = net.apply(params, x_mine)
    loss, dlogits = fnn.losses.softmax_cross_entropy(logits, labels_mine)
    sums = fnn.distributed.reduce_metrics(world, {  # the whole batch's loss and accuracy
        "loss": loss * len(labels_mine) if len(labels_mine) else 0.0,
        "correct": int(np.sum(logits.argmax(axis=1) == labels_mine))})
    loss = sums["loss"] / BATCH
    losses.append(loss)
    if step % 20 == 0 or step == args.steps:
        print(f"step {step:4d}  loss {loss:.4f}  accuracy {sums['correct'] / BATCH:6.1%}")
    if step == args.steps:
        break
    # the gradient of this process's share of the batch's mean loss, summed over processes
    grads, _ = vjp(dlogits * dlogits.dtype.type(len(labels_mine) / BATCH), need_dx=False)
    params, opt_state = opt.update(params, fnn.distributed.allreduce(world, grads), opt_state)

print(f"loss: start {losses[0]:.4f}, final {losses[-1]:.4f}")
if args.steps == STEPS and args.lr == LR and losses[-1] > TARGET:
    raise SystemExit(f"final loss {losses[-1]:.4f} is above {TARGET}: the network did not fit the batch")
