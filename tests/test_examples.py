"""Smoke tests for examples/: every script runs end to end on a tiny setting.

``EXAMPLES`` has one row per script; a new example adds a row (a script without
one fails ``test_every_example_has_a_row``). Scripts run as subprocesses from a
temporary directory, which also checks that they find ``common`` from anywhere
and leave no files behind in the repository.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"


@dataclass(frozen=True)
class Example:
    script: str                  # examples/<script>.py
    args: tuple[str, ...]        # a tiny setting: a few seconds at most
    digits: bool = True          # trains on the scikit-learn digits by default (skipped without scikit-learn)
    mnist: bool = True           # also takes --mnist DIR (smoke-tested on ../shared/data/mnist when present)
    plot: bool = True            # takes --plot PATH
    expect: str = "held-out accuracy"  # printed at the end of a successful run


EXAMPLES = [
    Example("mlp_digits", ("--epochs", "1", "--limit", "200")),
    Example("lenet_random_batch", ("--steps", "3"), digits=False, mnist=False, plot=False, expect="loss: start"),
    Example("lenet_digits", ("--epochs", "1", "--limit", "200")),
    Example("rnn_digits", ("--epochs", "1", "--limit", "200", "--hidden", "32")),
    Example("resnet_digits", ("--epochs", "1", "--limit", "200")),
]


def run(example: Example, *extra: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(EXAMPLES_DIR / f"{example.script}.py"), *example.args, *extra],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{example.script} failed:\n{proc.stdout}\n{proc.stderr}"
    assert example.expect in proc.stdout, proc.stdout
    return proc.stdout


def test_every_example_has_a_row() -> None:
    scripts = {p.stem for p in EXAMPLES_DIR.glob("*.py")} - {"common"}
    assert scripts == {e.script for e in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.script)
def test_example_runs(example: Example, tmp_path: Path) -> None:
    if example.digits:
        pytest.importorskip("sklearn")
    extra: tuple[str, ...] = ()
    png = tmp_path / "curves.png"
    if example.plot:
        has_matplotlib = importlib.util.find_spec("matplotlib") is not None
        extra = ("--plot", str(png) if has_matplotlib else "")
    run(example, *extra, cwd=tmp_path)
    if example.plot and extra[1]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["curves.png"] if example.plot and extra[1] else [])


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.mnist], ids=lambda e: e.script)
def test_example_runs_on_mnist(example: Example, mnist_dir: Path, tmp_path: Path) -> None:
    out = run(example, "--mnist", str(mnist_dir), *(("--plot", "") if example.plot else ()), cwd=tmp_path)
    assert "i % 5 == 4" in out and "8,000 train / 2,000 held out" in out


def test_lenet_resumed_run_is_bitwise_identical_to_an_uninterrupted_one(tmp_path: Path) -> None:
    """4 epochs in one go == 2 epochs, saved, then resumed for 2 more: params, optimizer state,
    BatchNorm statistics and data order (Dropout masks too)."""
    pytest.importorskip("sklearn")
    import fnn

    lenet = next(e for e in EXAMPLES if e.script == "lenet_digits")
    flags = ("--epochs", "4", "--limit", "96", "--batch-size", "32", "--optimizer", "adam", "--batchnorm",
             "--dropout", "0.2", "--plot", "")
    straight = replace(lenet, args=flags + ("--save", str(tmp_path / "a.fnn")))
    run(straight, cwd=tmp_path)
    first = replace(lenet, args=flags + ("--save", str(tmp_path / "b.fnn"), "--stop-after", "2"),
                    expect="stopped after epoch 2")
    run(first, cwd=tmp_path)
    assert int(fnn.load(tmp_path / "b.fnn")["epoch"]) == 2
    second = replace(lenet, args=flags + ("--save", str(tmp_path / "b.fnn"), "--resume", str(tmp_path / "b.fnn")))
    assert "resumed from" in run(second, cwd=tmp_path)
    a, b = fnn.load(tmp_path / "a.fnn"), fnn.load(tmp_path / "b.fnn")
    fnn.tree.check_same_structure(a, b)
    for (path, x), y in zip(fnn.tree.flatten(a)[0], fnn.tree.leaves(b)):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), fnn.tree.path_str(path)
    meta_a, meta_b = fnn.load_metadata(tmp_path / "a.fnn"), fnn.load_metadata(tmp_path / "b.fnn")
    assert meta_a["config"] == meta_b["config"]
    for curve in ("train_loss", "train_acc", "held_loss", "held_acc"):  # not "seconds"
        assert meta_a["history"][curve] == meta_b["history"][curve]


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

    args = ("--epochs", "2", "--limit", "200", "--plot", "", *flags)
    alone = run(Example(script, args), cwd=tmp_path)
    both = check(mpirun(2, EXAMPLES_DIR / f"{script}.py", *args, cwd=tmp_path))
    assert "data parallel: 2 processes" in both and both.count("held-out accuracy") == 1
    if "--dropout" not in flags:
        assert alone.splitlines()[-2] == both.splitlines()[-2]  # held-out accuracy: x% (k/n)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_lenet_checkpoint_from_two_ranks_resumes_in_one_process(tmp_path: Path) -> None:
    """Rank 0 writes the checkpoint; a run resumed on another number of processes continues it."""
    pytest.importorskip("sklearn")
    from mpirun import check, mpirun

    flags = ("--epochs", "3", "--limit", "96", "--batch-size", "32", "--optimizer", "adam", "--batchnorm",
             "--plot", "")
    lenet = next(e for e in EXAMPLES if e.script == "lenet_digits")
    ckpt = str(tmp_path / "c.fnn")
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


def test_confusion_matrix(common) -> None:
    m = common.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), n_classes=3)
    np.testing.assert_array_equal(m, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
