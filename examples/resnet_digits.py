"""A small residual convolutional network classifies handwritten digits, built from fnn's combinators.

It shows ``fnn.residual`` (``y = x + block(x)``) around BatchNorm'd convolution pairs,
and tuple-valued flows: where the shape changes, the downsampling block copies its
input with ``fnn.fan_out(2)``, runs the strided main path and a strided 1x1 projection
shortcut side by side with ``fnn.parallel`` and adds them with ``fnn.fan_in_sum``; an
inception-like residual block runs a 1x1 and a 3x3 convolution side by side and joins
them with ``fnn.fan_in_concat(axis=1)`` (the channel axis) before the skip connection
adds the input back. The network::

    stem        Conv2D(16, 3x3) BN ReLU                  (+ MaxPool2D(2) on 28x28 MNIST)
    block       residual(Conv-BN-ReLU-Conv-BN), ReLU     16 channels
    downsample  fan_out(2) -> parallel(Conv/2-BN-ReLU-Conv-BN, Conv 1x1/2-BN) -> fan_in_sum, ReLU
    block       residual(Conv-BN-ReLU-Conv-BN), ReLU     32 channels
    inception   residual(fan_out(2) -> parallel(Conv 1x1 16, Conv 3x3 16) -> fan_in_concat -> BN), ReLU
    head        GlobalAvgPool2D, Dense(10)

so the digits' 8x8 images are seen at 8x8 and 4x4, MNIST's 28x28 ones at 14x14 and
7x7. It trains with SGD (Nesterov momentum, weight decay on the weights only) on a
cosine schedule with a short warm-up (``fnn.fit``, which threads BatchNorm's statistics
through the steps and evaluates with them), and prints ``fnn.summary`` of the model in
training mode at the batch size used (output shapes, parameters, and the bytes each
vjp keeps for backward).

    python examples/resnet_digits.py                                # scikit-learn's 8x8 digits
    python examples/resnet_digits.py --mnist DIR                    # MNIST, 28x28 (see --help for the files)
    python examples/resnet_digits.py --plot runs/resnet_digits.png  # also the curves, as a PNG

It also prints the per-epoch losses and accuracies, the confusion matrix and the
held-out accuracy: about 98 % on the digits and about 99 % on MNIST. It is the
slowest of the examples; the README lists measured figures.
"""

import time

import common

import fnn
from fnn.layers import BatchNorm, Conv2D, Dense, GlobalAvgPool2D, MaxPool2D, ReLU

# Hyperparameters (the same for both data sets)
WIDTHS = (16, 32)  # channels before and after the downsampling
EPOCHS = 10
BATCH_SIZE = 64
LR = 0.1  # peak of the cosine schedule
WARMUP_EPOCHS = 1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4  # weights only, not biases or BatchNorm


def conv_bn(channels, kernel=3, stride=1):
    """A convolution without bias (BatchNorm's shift replaces it), then BatchNorm."""
    return [Conv2D(channels, kernel, stride=stride, padding="same", bias=False), BatchNorm()]


def basic_block(channels):
    """ResNet's basic block: relu(x + bn(conv(relu(bn(conv(x)))))."""
    return [fnn.residual(fnn.serial(*conv_bn(channels), ReLU(), *conv_bn(channels))), ReLU()]


def downsampling_block(channels):
    """ResNet's downsampling block: the shape changes, so the shortcut is a strided 1x1 convolution.
    Both paths run on copies of x (fan_out) side by side (parallel) and are added (fan_in_sum)."""
    main = fnn.serial(*conv_bn(channels, stride=2), ReLU(), *conv_bn(channels))
    shortcut = fnn.serial(*conv_bn(channels, kernel=1, stride=2))
    return [fnn.fan_out(2), fnn.parallel(("main", main), ("shortcut", shortcut)), fnn.fan_in_sum(), ReLU()]


def inception_block(channels):
    """Two branches on copies of x, 1x1 and 3x3 convolutions, concatenated along channels, plus x."""
    branches = fnn.parallel(("conv1x1", Conv2D(channels // 2, 1, bias=False)),
                            ("conv3x3", Conv2D(channels - channels // 2, 3, padding="same", bias=False)))
    return [fnn.residual(fnn.serial(fnn.fan_out(2), branches, fnn.fan_in_concat(axis=1), BatchNorm())), ReLU()]


args = common.parser(__doc__, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR).parse_args()
world = common.world()
threads = common.set_threads(args.threads, world)  # the BLAS limit holds while this is alive
start = time.perf_counter()
data = common.load_data(args.mnist, args.seed, args.limit)
shape = data.x_train.shape[1:]
narrow, wide = WIDTHS

net = fnn.serial(
    *conv_bn(narrow), ReLU(), *([MaxPool2D(2)] if shape[-1] >= 16 else []),  # MNIST: 28x28 -> 14x14
    *basic_block(narrow),
    *downsampling_block(wide),
    *basic_block(wide),
    *inception_block(wide),
    GlobalAvgPool2D(), Dense(10),
)
init_key, train_key = fnn.random.split(fnn.random.key(args.seed))
params = net.init(init_key, shape)
fnn.summary(net, shape, batch_size=args.batch_size, params=params, train=True)

steps_per_epoch = common.steps_per_epoch(len(data.x_train), args.batch_size)
schedule = fnn.optim.cosine(args.lr, args.epochs * steps_per_epoch,
                            warmup_steps=min(WARMUP_EPOCHS, args.epochs - 1) * steps_per_epoch)
opt = fnn.optim.sgd(schedule, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY,
                    decay_mask=fnn.optim.weights_only)

run = fnn.fit(net, params, opt, (data.x_train, data.y_train), epochs=args.epochs, batch_size=args.batch_size,
              loss_fn=fnn.losses.softmax_cross_entropy, key=train_key, eval_data=(data.x_held, data.y_held),
              world=world, eval_batch_size=500)  # BatchNorm's statistics: run.state

common.report(net, run.params, run.state, data, run.history, args.plot, start, world=world)
