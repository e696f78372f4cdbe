"""A multilayer perceptron classifies handwritten digits: fnn's smallest complete training run.

It shows a network built with ``fnn.serial(Flatten(), Dense(...), ReLU(), ..., Dense(10))``,
the fused ``softmax_cross_entropy`` loss (with label smoothing), and ``fnn.optim.sgd`` with
Nesterov momentum, weight decay on the weights only and a cosine learning-rate schedule.

Its training loop is written out by hand, where the other digit examples call ``fnn.fit``:
the pure step ``fnn.train_step`` (forward, loss, backward, update) over the seeded
batches of ``fnn.distributed.batches``, then ``fnn.evaluate`` on the held-out set after
each epoch. It is the loop ``fnn.fit`` runs, and the place to change what happens
between steps.

    python examples/mlp_digits.py                             # scikit-learn's 8x8 digits
    python examples/mlp_digits.py --mnist DIR                 # MNIST, 28x28 (see --help for the files)
    python examples/mlp_digits.py --plot runs/mlp_digits.png  # also the curves, as a PNG

It prints the model summary, the per-epoch losses and accuracies, the confusion
matrix and the held-out accuracy: about 98 % on the digits and about 97 % on MNIST,
in seconds. The README lists measured figures.
"""

import time

import common

import fnn
from fnn.layers import Dense, Flatten, ReLU

# Hyperparameters (the same for both data sets)
HIDDEN = (256, 128)
EPOCHS = 20
BATCH_SIZE = 64
LR = 0.2  # peak of the cosine schedule
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-3  # on Dense weights, not biases
LABEL_SMOOTHING = 0.1

args = common.parser(__doc__, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR).parse_args()
world = common.world()
threads = common.set_threads(args.threads, world)  # the BLAS limit holds while this is alive
start = time.perf_counter()
data = common.load_data(args.mnist, args.seed, args.limit)

layers = [Flatten()]
for width in HIDDEN:
    layers += [Dense(width), ReLU()]
net = fnn.serial(*layers, Dense(10))
init_key, train_key = fnn.random.split(fnn.random.key(args.seed))
params = net.init(init_key, data.x_train.shape[1:])
fnn.summary(net, data.x_train.shape[1:], params=params)

steps = args.epochs * common.steps_per_epoch(len(data.x_train), args.batch_size)
opt = fnn.optim.sgd(fnn.optim.cosine(args.lr, steps), momentum=MOMENTUM, nesterov=True,
                    weight_decay=WEIGHT_DECAY, decay_mask=fnn.optim.weights_only)


def loss(logits, labels):
    return fnn.losses.softmax_cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)


# The loop fnn.fit runs, by hand. Under mpiexec each rank takes its share of every global batch
# and the step sums the gradients across ranks, so that every rank makes the same update.
step = fnn.train_step(net, loss, opt, world=world)  # (params, opt_state, state, batch, key) -> (..., metrics)
params = fnn.distributed.broadcast(world, params)  # every rank starts from rank 0's params
opt_state, state = opt.init(params), None  # state: the layers' (None: an MLP has none, BatchNorm would)
history = {}  # one value per epoch under fnn.fit's names, for the curves
for epoch in range(args.epochs):
    begin = time.perf_counter()
    order_key, step_key = fnn.random.split(fnn.random.fold_in(train_key, epoch))  # this epoch's alone
    sums = {"loss": 0.0, "accuracy": 0.0}
    batches = fnn.distributed.batches(world, order_key, (data.x_train, data.y_train), args.batch_size)
    for i, batch in enumerate(batches):
        params, opt_state, state, metrics = step(params, opt_state, state, batch, fnn.random.fold_in(step_key, i))
        for name in sums:  # the batch's means (in training mode), weighted by its size
            sums[name] += metrics[name] * batch.total
    held = fnn.evaluate(net, params, data.x_held, data.y_held, loss_fn=loss, state=state, batch_size=500,
                        world=world)  # inference mode; "loss" and "accuracy"
    logs = {name: value / len(data.x_train) for name, value in sums.items()}
    logs |= {"eval_loss": held["loss"], "eval_accuracy": held["accuracy"], "time": time.perf_counter() - begin}
    for name, value in logs.items():
        history.setdefault(name, []).append(value)
    print(f"epoch {epoch + 1:{len(str(args.epochs))}}/{args.epochs}  loss {logs['loss']:.4f}  accuracy "
          f"{logs['accuracy']:.2%}  eval_loss {logs['eval_loss']:.4f}  eval_accuracy {logs['eval_accuracy']:.2%}"
          f"  ({logs['time']:.1f} s)", flush=True)

common.report(net, params, state, data, history, args.plot, start, world=world)
