"""What the examples share: the data sets, a command line, processes and BLAS threads, the curves, the report.

The examples are flat scripts beside this file; ``python examples/NAME.py`` puts
this directory on ``sys.path``, so ``import common`` works from any working
directory. Training itself is the library's (:func:`fnn.fit`, :func:`fnn.train_step`,
:func:`fnn.evaluate`); this module only feeds it and shows what came out. A typical
example reads::

    args = common.parser(__doc__, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR).parse_args()
    world = common.world()
    threads = common.set_threads(args.threads, world)  # kept for the whole run
    data = common.load_data(args.mnist, args.seed, args.limit)
    ...  # the net, its params, the optimizer
    run = fnn.fit(net, params, opt, (data.x_train, data.y_train), epochs=args.epochs,
                  batch_size=args.batch_size, loss_fn=fnn.losses.softmax_cross_entropy, key=key,
                  eval_data=(data.x_held, data.y_held), world=world)
    common.report(net, run.params, run.state, data, run.history, args.plot, start, world=world)

- data: :class:`Split` (images ``(N, 1, H, W)`` float32 in ``[0, 1]`` and int64 labels, for
  training and held out) from :func:`load_data` (scikit-learn's 8x8 digits or MNIST);
- the command line: :func:`basic_parser` (``--lr``, ``--seed``, ``--threads``) and
  :func:`parser` (also the data-set flags ``--mnist``, ``--epochs``, ``--batch-size``,
  ``--limit``, ``--plot``), :func:`positive_int` and :func:`positive_float` for more flags;
- processes: :func:`world` (one, or all that ``mpiexec`` started; only rank 0 prints) and
  :func:`set_threads` (the BLAS threads);
- reporting: :func:`save_curves` (a PNG of ``fit``'s history), :func:`report` (the confusion
  matrix and held-out accuracy from :func:`fnn.evaluate`, the curves, the time),
  :func:`print_confusion`.

The examples write no files unless asked: ``--plot PATH`` writes the curves and
``lenet_digits.py --save DIR`` its checkpoints, creating the folder if needed
(``runs/`` is git-ignored, so ``--plot runs/NAME.png`` keeps a clone clean).

Every example also trains data-parallel: ``mpiexec -n 4 python examples/NAME.py``
runs four processes, each on its share of every global batch of ``--batch-size``
examples (see :func:`world` and ``docs/distributed.md``). The results do not depend
on the number of processes, up to rounding.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

import fnn

INSTALL_HINT = "pip install -e '.[examples]'"


# --- data ---------------------------------------------------------------------------------------

class Split(NamedTuple):
    """Training and held-out examples: ``x: (N, 1, H, W)`` float32 in ``[0, 1]``, ``y: (N,)`` int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray
    name: str


def load_digits_split(seed: int = 0) -> Split:
    """scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 by a permutation drawn from ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit(f"the digits data come with scikit-learn, which is not installed: {INSTALL_HINT}") from None
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    order = fnn.random.permutation(fnn.random.key(seed), len(x))
    held, train = order[: len(x) // 5], order[len(x) // 5:]
    return Split(x[train], y[train], x[held], y[held], "scikit-learn digits 8x8")


def load_mnist_split(directory: str) -> Split:
    """MNIST from ``directory`` (the IDX files that :func:`fnn.data.load_mnist` reads):
    the training set for training and the test set held out when both are there.

    With only one split present (say just the 10,000 t10k test images), it is split
    by a fixed rule: image ``i`` is held out when ``i % 5 == 4``, giving 8,000
    training and 2,000 held-out images from the test set.
    """
    sets = fnn.data.load_mnist(directory)
    if "train" in sets and "test" in sets:
        (xt, yt), (xh, yh) = sets["train"], sets["test"]
        return Split(xt, yt, xh, yh, "MNIST train/test")
    split, (x, y) = next(iter(sets.items()))
    held = np.arange(len(x)) % 5 == 4
    print(f"MNIST: only the {split} split is in {directory}; splitting its {len(x):,} images by the rule "
          f"(image i held out when i % 5 == 4): {int((~held).sum()):,} train / {int(held.sum()):,} held out")
    return Split(x[~held], y[~held], x[held], y[held], f"MNIST {split} split i % 5")


def load_data(mnist: str | None = None, seed: int = 0, limit: int | None = None) -> Split:
    """MNIST from the directory ``mnist`` if given, else the digits; keep the first ``limit`` training examples."""
    data = load_mnist_split(mnist) if mnist else load_digits_split(seed)
    if limit is not None:
        data = data._replace(x_train=data.x_train[:limit], y_train=data.y_train[:limit])
    print(f"data: {data.name}, {len(data.x_train):,} train / {len(data.x_held):,} held out, "
          f"images {data.x_train.shape[1:]}")
    return data


# --- processes --------------------------------------------------------------------------------

def world() -> fnn.distributed.World:
    """The processes this example runs on: one, or all those ``mpiexec`` started.

    Under MPI an exception on any rank ends the whole job, and only rank 0 prints
    (the other ranks' standard output goes to ``os.devnull``; errors still reach stderr).
    Freed memory is kept for reuse (:func:`fnn.runtime.reuse_freed_memory`): each training
    step then reuses the last one's blocks instead of page-faulting them in again.
    """
    w = fnn.distributed.world()
    fnn.distributed.abort_on_error(w)
    fnn.runtime.reuse_freed_memory()
    if not w.is_root:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (kept open for the life of the process)
    elif w.size > 1:
        print(f"data parallel: {w.size} processes, each on 1/{w.size} of every global batch")
    return w


THREADS_HELP = ("BLAS threads per process, set with threadpoolctl. The default, %(default)s, is the safe choice on "
                "a busy machine: when another process is busy on the cores, OpenBLAS threads stall and steps become "
                "10-40x slower. On an idle machine up to the number of free cores may be faster. Under mpiexec "
                "every rank uses 1 thread whatever this says (the processes already use the cores).")

class Threads(NamedTuple):
    """What :func:`set_threads` did: the count asked of the BLAS library, and threadpoolctl's
    limiter (``None`` without threadpoolctl), whose ``restore_original_limits()`` undoes it."""

    count: int
    limiter: Any


def set_threads(threads: int, world: fnn.distributed.World | None = None) -> Threads:
    """Limit the BLAS library behind NumPy (OpenBLAS, MKL, ...) to ``threads`` threads, or to
    1 per rank when ``world`` has several processes, and print the count. The limit holds
    until the returned limiter is restored (a script keeps it for its whole run).

    Without threadpoolctl the library's own default stays, and a hint is printed.
    """
    w = world or fnn.distributed.World()
    n = 1 if w.size > 1 else threads
    why = "per rank (under mpiexec --threads is not used)" if w.size > 1 else "(set by --threads)"
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        print(f"BLAS threads: the library's default, as threadpoolctl is not installed ({INSTALL_HINT}); "
              f"set OPENBLAS_NUM_THREADS={n} before starting instead")
        return Threads(n, None)
    limiter = threadpool_limits(n, user_api="blas")
    libraries = sorted({info["internal_api"] for info in threadpool_info() if info["user_api"] == "blas"})
    if libraries:
        print(f"BLAS threads: {n} {why}, in {', '.join(libraries)}")
    else:
        print(f"BLAS threads: {n} {why}, but threadpoolctl found no BLAS library to limit")
    return Threads(n, limiter)


# --- command line -------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    """An argparse ``type``: an integer above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number above zero."""
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (None, '' or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == "":
            return action.help or ""
        return super()._get_help_string(action) or ""


def basic_parser(doc: str | None, *, lr: float | Mapping[str, float], lr_help: str = "peak learning rate",
                 seed_help: str = "seeds the init and the random numbers") -> argparse.ArgumentParser:
    """The flags every example takes: ``--lr``, ``--seed`` and ``--threads``.

    ``lr`` is the default learning rate, or a mapping such as ``{"sgd": 0.05, "adam": 2e-3}``
    when it depends on another flag; then ``--lr`` defaults to None, the help lists the
    defaults, and the example picks its own when ``args.lr is None``.
    """
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0], formatter_class=HelpFormatter)
    if isinstance(lr, Mapping):
        defaults = ", ".join(f"{value:g} for {name}" for name, value in lr.items())
        p.add_argument("--lr", type=positive_float, default=None, help=f"{lr_help} (default: {defaults})")
    else:
        p.add_argument("--lr", type=positive_float, default=lr, help=lr_help)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--threads", type=positive_int, default=1, metavar="N", help=THREADS_HELP)
    return p


def parser(doc: str | None, *, epochs: int, batch_size: int,
           lr: float | Mapping[str, float]) -> argparse.ArgumentParser:
    """The flags every example that trains on a data set takes, with the example's defaults;
    an example may add its own. ``lr`` is as in :func:`basic_parser`."""
    p = basic_parser(doc, lr=lr, seed_help="seeds the digits split, the init and the batch order")
    p.add_argument("--mnist", metavar="DIR",
                   help="train on the MNIST IDX files in DIR (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, gzipped or not; the t10k pair alone "
                        "is split 8,000 / 2,000) instead of scikit-learn's 8x8 digits")
    p.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training set")
    p.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help="examples per update (the global batch under mpiexec)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="use only the first N training examples (smoke tests)")
    p.add_argument("--plot", default="", metavar="PATH",
                   help="write a PNG of the training curves to PATH, creating its folder (runs/ is git-ignored: "
                        "say --plot runs/NAME.png); by default no plot and no file is written")
    return p


def make_parent(path: str) -> None:
    """Create the folder that will hold ``path`` (an output file the user named), if missing."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)


# --- a run's folder: --save, --resume, --stop-after ------------------------------------------------

CONFIG = "config.fnn"  # beside the checkpoints in --save DIR: the flags, which --resume checks


def add_run_flags(p: argparse.ArgumentParser, *, every: str, best: str, unit: str, schedule: str) -> None:
    """``--save DIR``, ``--resume DIR`` and ``--stop-after K``: checkpoints written ``every`` (``"after
    every epoch"``), the best one at ``best``, and a stop after ``unit`` K of the ``schedule`` flag."""
    p.add_argument("--save", metavar="DIR",
                   help=f"write the run to DIR/last.fnn {every} and to DIR/best.fnn {best}, and the flags to "
                        f"DIR/{CONFIG}; creates DIR")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run that --save wrote to DIR (its last.fnn), with the same flags; it goes on "
                        "saving to DIR unless --save names another folder")
    p.add_argument("--stop-after", type=positive_int, metavar="K",
                   help=f"stop after {unit} K of the {schedule} schedule, as if interrupted (to try --resume)")


class RunFolder(NamedTuple):
    """Where a run saves its checkpoints (``None``: nowhere) and the ``last.fnn`` it resumes (``None``: none)."""

    folder: str | None
    last: str | None


def run_folder(args: argparse.Namespace, world: fnn.distributed.World, config: Mapping[str, Any]) -> RunFolder:
    """Check ``--resume DIR``'s saved flags against ``config`` (exit on a difference) and write ``config``
    to ``--save DIR`` (rank 0 under MPI). A resumed run goes on saving where it was saved, unless
    ``--save`` says elsewhere."""
    last = None
    if args.resume:
        saved = fnn.distributed.load_metadata(world, os.path.join(args.resume, CONFIG))["config"]
        if saved != config:
            raise SystemExit(f"--resume: {args.resume} holds a run made with {saved}, not {dict(config)}")
        last = os.path.join(args.resume, "last.fnn")
    if args.save:
        if world.is_root:
            os.makedirs(args.save, exist_ok=True)
        fnn.distributed.save(world, os.path.join(args.save, CONFIG), {}, metadata={"config": dict(config)})
    return RunFolder(args.save or args.resume, last)


def stop_point(args: argparse.Namespace, total: int) -> int:
    """Where this run stops: after ``total`` epochs or steps, or ``--stop-after K`` of them."""
    return total if args.stop_after is None else min(args.stop_after, total)


def exit_if_stopped(done: int, total: int, unit: str, folder: str | None) -> None:
    """After ``--stop-after``: say where the run stopped (``unit``: "epoch", "step") and how it goes
    on, and exit with status 0; nothing when all ``total`` are done."""
    if done < total:
        print(f"stopped after {unit} {done} of {total} (--stop-after)"
              + (f"; continue with --resume {folder}" if folder else ""))
        raise SystemExit(0)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one pass over ``n`` examples (the last one may be short): the length of a schedule."""
    return -(-n // batch_size)


# --- reporting ----------------------------------------------------------------------------------

def save_curves(history: Mapping[str, Sequence[float]], path: str | None,
                metrics: Sequence[str] = ("loss", "accuracy")) -> None:
    """Write a PNG of the training curves to ``path``, creating its folder (nothing for an empty
    path or without matplotlib).

    ``history`` is :func:`fnn.fit`'s (one value per epoch under each name). Each of ``metrics``
    found in it gets a panel with its training curve (``NAME``) and its held-out one (``eval_NAME``).
    """
    plt = pyplot() if path else None
    if plt is None:
        return
    curves = [(name, [(label, history[key]) for label, key in (("train", name), ("held out", f"eval_{name}"))
                      if history.get(key)]) for name in metrics]
    panels = [(name, lines) for name, lines in curves if lines]
    if not panels:
        print(f"no curves to plot: the history has {sorted(history)}, none of {list(metrics)}")
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels):
        for label, values in lines:
            ax.plot(np.arange(1, len(values) + 1), values, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    write_figure(plt, fig, path)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or ``None`` (saying so) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed, so no plot ({INSTALL_HINT})")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figure(plt: Any, fig: Any, path: str) -> None:
    """Save ``fig`` as the PNG ``path`` (creating its folder), close it and say where it went."""
    make_parent(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"curves written to {path}")


def report(net: fnn.Layer, params: Any, state: Any, data: Split, history: Mapping[str, Sequence[float]],
           plot: str | None, start: float, world: fnn.distributed.World | None = None) -> float:
    """The end of every classifier example: the confusion matrix and accuracy on the held-out set
    (:func:`fnn.evaluate` in inference mode, with ``state``, the layer state training returned),
    the curves PNG, the total time since ``start`` (a ``time.perf_counter()``). Returns the
    accuracy. Under a ``world`` each rank evaluates its shard, and rank 0 writes the PNG."""
    w = world or fnn.distributed.World()
    matrix = fnn.evaluate(net, params, data.x_held, data.y_held, state=state, batch_size=500, world=w,
                          metrics=["confusion_matrix"])["confusion_matrix"]  # its trace is the correct rows
    print_confusion(matrix)
    if w.is_root:
        save_curves(history, plot)
    correct = int(np.trace(matrix))
    print(f"held-out accuracy: {correct / len(data.y_held):.2%} ({correct}/{len(data.y_held)})")
    print(f"total time: {time.perf_counter() - start:.1f} s")
    return correct / len(data.y_held)


def print_confusion(matrix: np.ndarray) -> None:
    """Print a confusion matrix with true classes down the side and predictions across the top."""
    width = max(3, len(str(matrix.max())) + 1)
    print("confusion matrix (rows: true class, columns: predicted)")
    print("    " + "".join(f"{c:>{width}}" for c in range(len(matrix))))
    for c, row in enumerate(matrix):
        print(f"{c:>3} " + "".join(f"{v:>{width}}" if v else f"{'.':>{width}}" for v in row))
