"""A recurrent network classifies handwritten digits by reading each image one row per time step.

It shows fnn's recurrent layers on batch-first sequences ``(N, T, F)``:
``fnn.serial(LSTM(128), LastStep(), Dense(10))`` (or ``GRU`` / ``RNN`` with ``--cell``),
where ``LastStep`` keeps the final hidden state. The images ``(N, 1, H, W)`` are reshaped
once to sequences ``(N, H, W)``: H time steps of W pixels (8 x 8 on scikit-learn's
digits, 28 x 28 on MNIST). Training is ``fnn.fit`` with Adam on a cosine learning-rate
schedule, its gradients first clipped by global norm, as recurrent nets' usually are: the
optimizer is the chain ``fnn.optim.chain(fnn.optim.clip_by_global_norm(1.0), fnn.optim.adam(...))``.

    python examples/rnn_digits.py                               # digits, LSTM
    python examples/rnn_digits.py --mnist DIR                   # MNIST, LSTM (see --help for the files)
    python examples/rnn_digits.py --mnist DIR --cell gru        # MNIST, GRU
    python examples/rnn_digits.py --plot runs/rnn_digits.png    # also the curves, as a PNG

It prints the model summary, the per-epoch losses and accuracies, the confusion
matrix and the held-out accuracy: about 97-98 % on the digits and about 98 % on MNIST
with the LSTM or the GRU; ``--cell rnn`` (a plain tanh RNN, for comparison) does
worse on MNIST's 28-step sequences, about 96 %. The README lists measured figures.
"""

import time

import common

import fnn
from fnn.layers import GRU, LSTM, RNN, Dense, LastStep

# Hyperparameters (the same for both data sets)
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
HIDDEN = 128
EPOCHS = 30
BATCH_SIZE = 64
LR = 5e-3  # peak of the cosine schedule
CLIP_NORM = 1.0  # global L2 norm of the gradients

parser = common.parser(__doc__, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR)
parser.add_argument("--cell", choices=tuple(CELLS), default="lstm", help="recurrent layer")
parser.add_argument("--hidden", type=int, default=HIDDEN, metavar="H", help="hidden state size")
args = parser.parse_args()
world = common.world()
threads = common.set_threads(args.threads, world)  # the BLAS limit holds while this is alive
start = time.perf_counter()
data = common.load_data(args.mnist, args.seed, args.limit)
# (N, 1, H, W) images -> (N, H, W) sequences: one image row per time step
data = data._replace(x_train=data.x_train[:, 0], x_held=data.x_held[:, 0])
print(f"sequences: {data.x_train.shape[1]} time steps of {data.x_train.shape[2]} features")

net = fnn.serial(CELLS[args.cell](args.hidden), LastStep(), Dense(10))
init_key, train_key = fnn.random.split(fnn.random.key(args.seed))
params = net.init(init_key, data.x_train.shape[1:])
fnn.summary(net, data.x_train.shape[1:], params=params)

steps = args.epochs * common.steps_per_epoch(len(data.x_train), args.batch_size)
opt = fnn.optim.chain(fnn.optim.clip_by_global_norm(CLIP_NORM),  # clip, then Adam on the clipped gradients
                      fnn.optim.adam(fnn.optim.cosine(args.lr, steps)))

run = fnn.fit(net, params, opt, (data.x_train, data.y_train), epochs=args.epochs, batch_size=args.batch_size,
              loss_fn=fnn.losses.softmax_cross_entropy, key=train_key, eval_data=(data.x_held, data.y_held),
              world=world, eval_batch_size=500)

common.report(net, run.params, run.state, data, run.history, args.plot, start, world=world)
