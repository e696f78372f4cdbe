"""Smoke tests for examples/: every script runs end to end on a tiny setting.

``EXAMPLES`` has one row per script; a new example adds a row (a script without
one fails ``test_every_example_has_a_row``). Scripts run as subprocesses from a
temporary directory, which also checks that they find ``common`` from anywhere
and write no files, there or in the repository, unless asked to.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from example_scripts import EXAMPLES_DIR, PNG, ROOT, launch


@dataclass(frozen=True)
class Example:
    script: str                  # examples/<script>.py
    args: tuple[str, ...]        # a tiny setting: a few seconds at most
    digits: bool = True          # trains on the scikit-learn digits by default (skipped without scikit-learn)
    mnist: bool = True           # also takes --mnist DIR (smoke-tested on ../shared/data/mnist when present)
    plot: bool = True            # takes --plot PATH
    expect: str = "held-out accuracy"  # printed at the end of a successful run
    lr: str = ""                 # the default --help gives for --lr


EXAMPLES = [
    Example("mlp_digits", ("--epochs", "1", "--limit", "200"), lr="0.2"),
    Example("lenet_random_batch", ("--steps", "3"), digits=False, mnist=False, plot=False, expect="loss: start",
            lr="0.01"),
    Example("lenet_digits", ("--epochs", "1", "--limit", "200"), lr="0.05 for sgd, 0.002 for adam"),
    Example("rnn_digits", ("--epochs", "1", "--limit", "200", "--hidden", "32"), lr="0.005"),
    Example("resnet_digits", ("--epochs", "1", "--limit", "200"), lr="0.1"),
    Example("transformer_digits", ("--epochs", "1", "--limit", "96", "--batch-size", "32"), lr="0.003"),
    Example("char_gpt", ("--steps", "4", "--warmup", "1", "--eval-every", "2", "--batch-size", "4", "--sample", "30",
                         "--limit", "3000"), digits=False, mnist=False, expect="total time", lr="0.001"),
]


def run(example: Example, *extra: str, cwd: Path) -> str:
    proc = launch(example.script, *example.args, *extra, cwd=cwd)
    assert proc.returncode == 0, f"{example.script} failed:\n{proc.stdout}\n{proc.stderr}"
    assert example.expect in proc.stdout, proc.stdout
    return proc.stdout


def files_under(folder: Path) -> set[Path]:
    """Every file and folder under ``folder`` but Python's bytecode caches (git-ignored)."""
    return {p.relative_to(folder) for p in folder.rglob("*") if "__pycache__" not in p.parts}


def test_every_example_has_a_row() -> None:
    scripts = {p.stem for p in EXAMPLES_DIR.glob("*.py")} - {"common"}
    assert scripts == {e.script for e in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.script)
def test_example_runs_and_writes_no_files_by_default(example: Example, tmp_path: Path) -> None:
    """With no --plot or --save an example writes nothing: not in the working directory, not
    in the repository; and its first lines say how many BLAS threads it uses (1 by default)."""
    if example.digits:
        pytest.importorskip("sklearn")
    before = files_under(EXAMPLES_DIR)
    out = run(example, cwd=tmp_path)
    assert "BLAS threads: 1 (set by --threads)" in out.splitlines()[0]
    assert files_under(tmp_path) == set()
    assert files_under(EXAMPLES_DIR) == before


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.plot], ids=lambda e: e.script)
def test_plot_goes_where_asked(example: Example, tmp_path: Path) -> None:
    """--plot PATH writes the PNG at PATH (relative to the working directory), creating its folders."""
    if example.digits:
        pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = run(example, "--plot", "runs/a/curves.png", cwd=tmp_path)
    assert "curves written to runs/a/curves.png" in out
    assert (tmp_path / "runs" / "a" / "curves.png").read_bytes()[:8] == PNG
    assert files_under(tmp_path) == {Path("runs"), Path("runs/a"), Path("runs/a/curves.png")}


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.mnist], ids=lambda e: e.script)
def test_example_runs_on_mnist(example: Example, mnist_dir: Path, tmp_path: Path) -> None:
    out = run(example, "--mnist", str(mnist_dir), cwd=tmp_path)
    assert "i % 5 == 4" in out and "8,000 train / 2,000 held out" in out


# --- the command line ---------------------------------------------------------------------------

def help_text(script: str, tmp_path: Path) -> str:
    """``--help``, its whitespace (argparse's line wrapping) folded to single spaces."""
    proc = launch(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return " ".join(proc.stdout.split())


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.script)
def test_help_shows_the_real_defaults(example: Example, tmp_path: Path) -> None:
    """--lr shows the learning rate the example really uses (not a 0.0 or None placeholder),
    and --threads explains its default and what happens under mpiexec."""
    text = help_text(example.script, tmp_path)
    lr = re.search(r"--lr LR (.*?) --", text)
    assert lr is not None, text
    assert "learning rate" in lr.group(1) and lr.group(1).endswith(f" (default: {example.lr})")
    assert "(default: None)" not in text and "(default: )" not in text
    threads = re.search(r"--threads N (.*?) --", text)
    assert threads is not None, text
    for what in ("The default, 1,", "OpenBLAS threads stall", "10-40x slower", "Under mpiexec every rank uses 1"):
        assert what in threads.group(1)
    if example.plot:
        assert "by default no plot and no file is written" in text
    assert files_under(tmp_path) == set()


def test_lenet_digits_takes_the_learning_rate_of_its_optimizer(tmp_path: Path) -> None:
    """The per-optimizer default goes into the run's config (saved with --save); --lr overrides it."""
    pytest.importorskip("sklearn")
    import fnn

    lenet = next(e for e in EXAMPLES if e.script == "lenet_digits")
    for flags, lr in ((("--optimizer", "adam"), 0.002), (("--optimizer", "sgd"), 0.05), (("--lr", "0.01"), 0.01)):
        folder = tmp_path / "runs" / "c"  # --save creates the folder
        run(lenet, "--limit", "32", *flags, "--save", str(folder), cwd=tmp_path)
        assert fnn.load_metadata(folder / "config.fnn")["config"]["lr"] == lr
        assert sorted(p.name for p in folder.iterdir()) == ["best.fnn", "config.fnn", "last.fnn"]


def test_lenet_digits_refuses_to_resume_with_other_flags(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    lenet = next(e for e in EXAMPLES if e.script == "lenet_digits")
    flags = ("--epochs", "2", "--limit", "32")
    run(replace(lenet, args=flags + ("--save", "c", "--stop-after", "1"), expect="stopped after epoch 1 of 2"),
        cwd=tmp_path)
    proc = launch("lenet_digits", *flags, "--lr", "0.01", "--resume", "c", cwd=tmp_path)
    assert proc.returncode == 1 and "--resume: c holds a run made with" in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_threads_must_be_a_positive_integer(value: str, tmp_path: Path) -> None:
    proc = launch("mlp_digits", "--threads", value, cwd=tmp_path)
    assert proc.returncode == 2 and "--threads" in proc.stderr, proc.stderr


def test_threads_flag_sets_and_prints_the_blas_thread_count(tmp_path: Path) -> None:
    pytest.importorskip("threadpoolctl")
    lenet = next(e for e in EXAMPLES if e.script == "lenet_digits")
    if lenet.digits:
        pytest.importorskip("sklearn")
    out = run(lenet, "--threads", "2", cwd=tmp_path)
    assert out.splitlines()[0].startswith("BLAS threads: 2 (set by --threads)")


def test_lenet_random_batch_takes_steps_lr_seed_and_threads(tmp_path: Path) -> None:
    """The flags README promises for it, and only those: it takes no data-set flags."""
    example = next(e for e in EXAMPLES if e.script == "lenet_random_batch")
    out = run(replace(example, args=()), "--steps", "4", "--lr", "0.02", "--seed", "3", "--threads", "2",
              cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("BLAS threads: 2 (set by --threads)")
    assert "SGD lr 0.02, 4 steps" in lines[1]
    assert "step    4  loss" in out and "loss: start 2.3026" in out  # a zero classifier: ln 10 at step 0
    other = run(replace(example, args=()), "--steps", "4", "--lr", "0.02", "--seed", "4", cwd=tmp_path)
    assert other.splitlines()[-1] != lines[-1]  # the seed draws another batch
    for flag in ("--mnist", "--epochs", "--plot"):
        proc = launch("lenet_random_batch", flag, "x", cwd=tmp_path)
        assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    assert files_under(tmp_path) == set()


# --- what users read: docstrings and README ------------------------------------------------------

@pytest.mark.parametrize("script", sorted(p.stem for p in EXAMPLES_DIR.glob("*.py")))
def test_docstrings_talk_to_users_without_measured_figures(script: str) -> None:
    """Docstrings say what a script does and prints, with no paths only this project has, no
    references to its internal notes or issues, and no measured figures (those live in README)."""
    doc = ast.get_docstring(ast.parse((EXAMPLES_DIR / f"{script}.py").read_text()))
    assert doc
    for phrase in ("../shared", "the notes", "reference notes", "the issue", "shared rule", "shared folder"):
        assert phrase not in doc, phrase
    assert not re.search(r"\b\d+(\.\d+)?(-\d+(\.\d+)?)? ?s\b", doc), "a measured time"
    assert not re.search(r"\d+\.\d\d ?%", doc), "a measured accuracy"


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_first_commands_run_on_a_fresh_clone() -> None:
    """The first code block installs, runs an example on the bundled digits and runs the tests,
    with nothing beside the clone (no ../shared)."""
    first = re.search(r"```bash\n(.*?)```", readme(), re.S)
    assert first is not None
    block = first.group(1)
    assert "../shared" not in block and "--mnist" not in block
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands[0] == 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev,examples,mpi]"'
    assert "python examples/lenet_digits.py" in commands
    assert "python -m pytest" in commands


def test_readme_says_how_to_use_downloaded_mnist_files() -> None:
    text = " ".join(readme().split())
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", "--mnist DIR", "i % 5 == 4", "8,000", "--threads", "--plot"):
        assert name in text, name


def test_lenet_resumed_run_is_bitwise_identical_to_an_uninterrupted_one(tmp_path: Path) -> None:
    """4 epochs in one go == 2 epochs, saved, then resumed for 2 more: params, optimizer state,
    BatchNorm statistics, data order (Dropout masks too), history and the best checkpoint."""
    pytest.importorskip("sklearn")
    import fnn

    lenet = next(e for e in EXAMPLES if e.script == "lenet_digits")
    flags = ("--epochs", "4", "--limit", "96", "--batch-size", "32", "--optimizer", "adam", "--batchnorm",
             "--dropout", "0.2", "--plot", "")
    a, b = tmp_path / "a", tmp_path / "b"
    run(replace(lenet, args=flags + ("--save", str(a))), cwd=tmp_path)
    run(replace(lenet, args=flags + ("--save", str(b), "--stop-after", "2"), expect="stopped after epoch 2"),
        cwd=tmp_path)
    assert int(fnn.load(b / "last.fnn")["epoch"]) == 2
    assert "resumed from" in run(replace(lenet, args=flags + ("--resume", str(b))), cwd=tmp_path)
    assert fnn.load_metadata(a / "config.fnn") == fnn.load_metadata(b / "config.fnn")
    for name in ("last.fnn", "best.fnn"):
        saved_a, saved_b = fnn.load(a / name), fnn.load(b / name)
        for saved in (saved_a, saved_b):
            assert set(saved["history"]) == {"loss", "accuracy", "eval_loss", "eval_accuracy", "time"}
            del saved["history"]["time"]  # seconds differ
        fnn.tree.check_same_structure(saved_a, saved_b)
        for (path, x), y in zip(fnn.tree.flatten(saved_a)[0], fnn.tree.leaves(saved_b)):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), f"{name}: {fnn.tree.path_str(path)}"
    assert int(fnn.load(a / "last.fnn")["epoch"]) == 4


# --- data parallel under mpiexec -------------------------------------------------------------------

@pytest.mark.parametrize("script, flags", [
    ("lenet_digits", ("--optimizer", "adam", "--batchnorm", "--dropout", "0.1")),
    ("mlp_digits", ()),
], ids=["lenet_digits", "mlp_digits"])
def test_example_trains_data_parallel_like_one_process(script: str, flags: tuple[str, ...], tmp_path: Path) -> None:
    """Two ranks print what one process prints, up to rounding (digits of the same held-out accuracy),
    once, from rank 0; a Dropout run differs only by its masks, so it is compared on the loss trend."""
    pytest.importorskip("sklearn")
    from mpirun import check, mpirun

    args = ("--epochs", "2", "--limit", "200", *flags)
    alone = run(Example(script, args), cwd=tmp_path)
    both = check(mpirun(2, EXAMPLES_DIR / f"{script}.py", *args, "--threads", "2", cwd=tmp_path))
    assert "data parallel: 2 processes" in both and both.count("held-out accuracy") == 1
    assert "BLAS threads: 1 per rank (under mpiexec --threads is not used)" in both.splitlines()[1]
    if "--dropout" not in flags:
        assert alone.splitlines()[-2] == both.splitlines()[-2]  # held-out accuracy: x% (k/n)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_lenet_random_batch_splits_its_batch_across_ranks(tmp_path: Path) -> None:
    """Two ranks, each on half of the batch, print what one process prints, once."""
    from mpirun import check, mpirun

    example = next(e for e in EXAMPLES if e.script == "lenet_random_batch")
    args = ("--steps", "5")
    alone = run(replace(example, args=args), cwd=tmp_path)
    both = check(mpirun(2, EXAMPLES_DIR / "lenet_random_batch.py", *args, cwd=tmp_path))
    assert "data parallel: 2 processes" in both and both.count("loss: start") == 1
    assert alone.splitlines()[-1] == both.splitlines()[-1]  # loss: start 2.3026, final ...
    assert files_under(tmp_path) == set()


def test_lenet_checkpoint_from_two_ranks_resumes_in_one_process(tmp_path: Path) -> None:
    """Rank 0 writes the checkpoint; a run resumed on another number of processes continues it."""
    pytest.importorskip("sklearn")
    from mpirun import check, mpirun

    flags = ("--epochs", "3", "--limit", "96", "--batch-size", "32", "--optimizer", "adam", "--batchnorm",
             "--plot", "")
    lenet = next(e for e in EXAMPLES if e.script == "lenet_digits")
    ckpt = str(tmp_path / "c")
    out = check(mpirun(2, EXAMPLES_DIR / "lenet_digits.py", *flags, "--save", ckpt, "--stop-after", "1",
                       cwd=tmp_path))
    assert "stopped after epoch 1" in out
    resumed = run(replace(lenet, args=flags + ("--resume", ckpt)), cwd=tmp_path)
    straight = run(replace(lenet, args=flags), cwd=tmp_path)
    assert "resumed from" in resumed
    assert resumed.splitlines()[-2] == straight.splitlines()[-2]


# --- the shared helpers in examples/common.py -------------------------------------------------------

@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("examples_common", EXAMPLES_DIR / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_mnist_split_rule_without_a_training_set(common, tmp_path: Path, capsys) -> None:
    images = np.arange(20 * 28 * 28).reshape(20, 28, 28) % 256
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    data = common.load_mnist_split(str(tmp_path))
    assert "i % 5 == 4" in capsys.readouterr().out
    assert (len(data.x_train), len(data.x_held)) == (16, 4)
    np.testing.assert_array_equal(data.y_held, [4, 9, 4, 9])  # images 4, 9, 14, 19
    np.testing.assert_allclose(data.x_held[0, 0] * 255, images[4], atol=1e-3)
    assert data.x_train.shape == (16, 1, 28, 28) and data.x_train.dtype == np.float32


def test_mnist_split_uses_train_and_test_when_both_exist(common, tmp_path: Path) -> None:
    for prefix, n in (("train", 6), ("t10k", 3)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n))
    data = common.load_mnist_split(str(tmp_path))
    assert (len(data.x_train), len(data.x_held)) == (6, 3)


def test_digits_split(common) -> None:
    pytest.importorskip("sklearn")
    data = common.load_digits_split(0)
    assert (len(data.x_train), len(data.x_held)) == (1438, 359)
    assert data.x_train.shape[1:] == (1, 8, 8) and data.x_train.dtype == np.float32
    assert data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    again, other = common.load_digits_split(0), common.load_digits_split(1)
    np.testing.assert_array_equal(again.y_held, data.y_held)
    assert not np.array_equal(other.y_held, data.y_held)


def test_set_threads_limits_blas_for_the_rest_of_the_run(common, capsys) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}

    original = blas_threads()
    try:
        threads = common.set_threads(3)
        assert threads.count == 3
        if original:  # a BLAS library that threadpoolctl can see (NumPy's OpenBLAS)
            assert blas_threads() == {3}
        assert capsys.readouterr().out.startswith("BLAS threads: 3 (set by --threads)")
    finally:
        threads.limiter.restore_original_limits()
    assert blas_threads() == original


def test_set_threads_uses_one_thread_per_rank_under_mpi(common, capsys) -> None:
    pytest.importorskip("threadpoolctl")

    class TwoRanks:
        size, rank, is_root = 2, 0, True

    try:
        threads = common.set_threads(4, TwoRanks())
        assert threads.count == 1
        assert capsys.readouterr().out.startswith("BLAS threads: 1 per rank (under mpiexec --threads is not used)")
    finally:
        threads.limiter.restore_original_limits()


def test_set_threads_without_threadpoolctl_prints_a_hint(common, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import threadpoolctl raises ImportError
    assert common.set_threads(2) == (2, None)
    out = capsys.readouterr().out
    assert "threadpoolctl is not installed" in out and "OPENBLAS_NUM_THREADS=2" in out


def test_save_curves_plots_the_metrics_the_history_has(common, tmp_path: Path, capsys) -> None:
    """One panel per metric found in fit's history, train and eval_ curves; a history with the
    loss alone (a language model's) still plots, and nothing is written without a path."""
    pytest.importorskip("matplotlib")
    full = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.9], "eval_loss": [1.1, 0.6], "eval_accuracy": [0.4, 0.8],
            "time": [0.1, 0.1]}
    for name, history in (("full.png", full), ("loss.png", {"loss": [3.0, 2.0, 1.5]})):
        common.save_curves(history, str(tmp_path / "plots" / name))
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG
    common.save_curves(full, "")
    common.save_curves({"time": [0.1]}, str(tmp_path / "none.png"))
    assert "no curves to plot" in capsys.readouterr().out
    assert files_under(tmp_path) == {Path("plots"), Path("plots/full.png"), Path("plots/loss.png")}


def test_report_prints_the_confusion_matrix_and_accuracy(common, capsys) -> None:
    import fnn
    from fnn.layers import Dense

    net = Dense(3)
    params = net.init(fnn.random.key(0), (2,))
    x = fnn.random.normal(fnn.random.key(1), (7, 2))
    y = net.apply(params, x)[0].argmax(axis=1)
    y[0] = (y[0] + 1) % 3  # one mistake
    data = common.Split(x, y, x, y, "test")
    assert common.report(net, params, None, data, {}, "", 0.0) == 6 / 7
    out = capsys.readouterr().out
    assert "confusion matrix (rows: true class, columns: predicted)" in out
    assert "held-out accuracy: 85.71% (6/7)" in out
