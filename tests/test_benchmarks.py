"""Smoke tests of the benchmark scripts on tiny settings: benchmarks/distributed.py launches its MPI jobs and prints
the scaling table; benchmarks/lenet.py and benchmarks/transformer.py print their step, breakdown and memory tables,
benchmarks/lstm.py its step and breakdown tables and its targets, and benchmarks/char_gpt.py its step table, with
PyTorch or without; with PyTorch, lenet.py and char_gpt.py also print their matrix products alone."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from mpirun import mpiexec

ROOT = Path(__file__).resolve().parent.parent
TINY_TRANSFORMER = ["--quick", "--batch-sizes", "4", "--breakdown-batch", "4", "--repeats", "2", "--warmup", "1",
                    "--width", "16", "--heads", "2", "--feedforward", "32", "--blocks", "1"]


def test_distributed_benchmark_prints_the_scaling_table() -> None:
    mpiexec()  # skips without MPI (fails under FNN_REQUIRE_MPI=1)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distributed.py"), "--quick", "--no-torch",
                           "--ranks", "1", "2", "--repeats", "2", "--warmup", "1", "--batch", "64"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and rows[0].split("|")[4].strip() == "1.00"  # efficiency of 1 rank against itself


def run_lenet(*flags: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lenet.py"), "--quick", "--repeats", "2",
                           "--warmup", "1", "--batch-sizes", "4", "--convnet-batch", "2", "--no-reference", *flags],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_lenet_benchmark_without_torch_prints_both_models_breakdown_and_memory() -> None:
    lines = run_lenet("--no-torch", "--threads", "1", "--breakdown-batch", "3")
    steps = [cells(line)[1] for line in lines if line.startswith("| 4 | ") and len(cells(line)) == 3]
    assert steps[:4] == ["train", "train, no input dx", "train, no input dx, columns kept", "inference"]
    assert [cells(line)[1] for line in lines if line.startswith("| 2 | ")][:2] == ["train, no input dx", "inference"]
    assert "### fnn per-layer breakdown, LeNet-5, batch 3, --threads 1" in lines
    memory = [cells(line) for line in lines if line.startswith(("| 3 | ", "| 4 | ")) and len(cells(line)) == 10]
    assert [row[0] for row in memory] == ["3", "4"] and all(float(row[7]) > 0 for row in memory)
    assert not any("matrix products alone" in line for line in lines)  # they need PyTorch to compare with


def test_lenet_benchmark_breakdown_batch_0_leaves_the_breakdown_out() -> None:
    lines = run_lenet("--no-torch", "--threads", "1", "--breakdown-batch", "0")
    assert not any(line.startswith("### fnn per-layer breakdown") for line in lines)
    memory = [cells(line)[0] for line in lines if line.startswith("| ") and len(cells(line)) == 10]
    assert memory[2:] == ["4"]  # the header and its rule, then --batch-sizes alone: no batch 0


def test_lenet_benchmark_refuses_a_negative_batch() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lenet.py"), "--no-torch",
                           "--convnet-batch", "-1"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "--convnet-batch >= 0" in proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_lenet_benchmark_sets_both_models_products_against_torchs_step() -> None:
    lines = run_lenet("--threads", "1", "--breakdown-batch", "0")
    assert "#### LeNet-5's matrix products alone, --threads 1" in lines
    assert "#### The convnet's matrix products alone, --threads 1" in lines
    conv = [cells(line) for line in lines if line.startswith("| conv2d_1 ")]
    assert [row[:3] for row in conv] == [
        ["conv2d_1 forward", "16×150 @ 150×400", "1"], ["conv2d_1 dw", "150×400 @ 400×16", "1"],
        ["conv2d_1 dx", "150×16 @ 16×400", "1"],  # LeNet-5 at batch 4: 10 × 10 positions each
        ["conv2d_1 forward", "32×288 @ 288×2048", "1"], ["conv2d_1 dw", "288×2048 @ 2048×32", "1"],
        ["conv2d_1 dx", "288×32 @ 32×2048", "1"]]  # the convnet at batch 2: 32 × 32 positions each
    assert not any(line.startswith("| conv2d_0 dx ") for line in lines)  # no input dx, as PyTorch's step
    floors = [line for line in lines if "fnn's products alone take " in line]
    assert [line.split(":")[0] for line in floors] == ["LeNet-5 at batch 4", "convnet at batch 2"]
    assert all("x PyTorch's whole train step (" in line for line in floors)


def run_lstm(*flags: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lstm.py"), "--quick", "--repeats", "2",
                           "--warmup", "1", "--threads", "1", "--batch", "4", "--seq-len", "3", "--features", "5",
                           "--hidden", "8", *flags], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_lstm_benchmark_without_torch_times_fnn_and_judges_nothing() -> None:
    lines = run_lstm("--no-torch")
    steps = [cells(line) for line in lines if line.startswith(("| LSTM | ", "| MLP | "))]
    medians = [["LSTM", "train step"], ["LSTM", "inference"], ["MLP", "train step"], ["MLP", "inference"]]
    assert [row[:2] for row in steps] == medians * 2  # the medians' table, then the best-of table
    assert all(len(row) == 3 and float(row[2].split()[0]) > 0 for row in steps)  # fnn's column alone
    assert "| lstm_0 | LSTM(8) | 3×8 |" in " ".join(lines)  # the breakdown's LSTM row at --hidden 8, --seq-len 3
    assert "- LSTM: not judged (no PyTorch)" in lines and "- MLP: not judged (no PyTorch)" in lines


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_lstm_benchmark_agrees_with_torch_and_judges_both_targets() -> None:
    lines = run_lstm("--no-mlp")
    assert any(line.startswith("- LSTM: agree — loss ") for line in lines)
    verdict = next(line for line in lines if line.startswith("- LSTM: **"))
    assert verdict.startswith(("- LSTM: **met** (", "- LSTM: **not met** (")) and "with --threads 1)" in verdict
    assert not any(line.startswith("| MLP |") for line in lines)


def run_transformer(*flags: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transformer.py"), *TINY_TRANSFORMER, *flags],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_transformer_benchmark_without_torch_prints_fnn_rows_breakdown_and_memory() -> None:
    lines = run_transformer("--no-torch", "--threads", "1")
    assert any("PyTorch left out (--no-torch)" in line for line in lines)
    steps = [cells(line) for line in lines if line.startswith("| 4 | ")]
    assert [row[1] for row in steps[:2]] == ["train step", "inference"]
    assert all(len(row) == 3 for row in steps[:4])  # batch, step, fnn's time: no torch column, no ratio
    assert "- batch 4: not checked (no PyTorch)" in lines
    kinds = {cells(line)[0]: cells(line)[1] for line in lines if line.startswith("| ") and "|" in line[2:]}
    assert kinds["blocks.0/sa_block/self_attn"].startswith("MultiHeadAttention(2")
    assert kinds["blocks.0/ff_block/activation"] == "GELU()" and kinds["update"] == "adamw(0.001)"
    by_kind = [cells(line)[0] for line in lines if line.startswith("| ") and len(cells(line)) == 6]
    assert {"MultiHeadAttention", "LayerNorm", "GELU", "Dense", "Dropout", "residual sum"} <= set(by_kind)
    memory = [cells(line) for line in lines if line.startswith("| 4 | ") and line.endswith(" |")
              and len(cells(line)) == 6]
    assert memory and float(memory[-1][-1]) > 0  # train peak / what the vjps hold


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_transformer_benchmark_agrees_with_torch_and_sets_thread_counts_side_by_side() -> None:
    lines = run_transformer("--threads", "1", "2", "--breakdown-batch", "0", "--no-memory")
    checks = [line for line in lines if line.startswith("- batch 4: ")]
    assert len(checks) == 2 and all(line.startswith("- batch 4: agree — ") for line in checks), checks
    assert any(line.startswith("### Step times and ratios, --threads 2") for line in lines)
    header = next(line for line in lines if line.startswith("| batch | step | fnn/torch, --threads 1 |"))
    assert cells(header)[-1] == "fnn/torch, --threads 2"
    ratios = [cells(line) for line in lines if line.startswith("| 4 | train step | **")]
    assert ratios and all(float(c.split("**")[1]) > 0 for c in ratios[-1][2:])


def run_char_gpt(*flags: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "char_gpt.py"), "--quick", "--repeats", "2",
                           "--warmup", "1", *flags], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_char_gpt_benchmark_without_torch_times_fnn_alone() -> None:
    lines = run_char_gpt("--no-torch", "--threads", "1")
    assert any("418,176 parameters" in line for line in lines)  # the example's model
    steps = [cells(line) for line in lines if line.startswith("| 32 | train step |")]
    assert len(steps) == 2 and all(len(row) == 3 and float(row[2].split()[0]) > 0 for row in steps)
    assert any(line.endswith("not checked (no PyTorch)") for line in lines)
    assert not any("matrix products alone" in line for line in lines)  # they need PyTorch to compare with


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_char_gpt_benchmark_agrees_with_torch_and_sets_thread_counts_side_by_side() -> None:
    lines = run_char_gpt("--threads", "1", "2")
    checks = [line for line in lines if line.startswith("Loss and gradients from identical parameters")]
    assert len(checks) == 2 and all(" agree — loss " in line for line in checks), checks
    side = [cells(line) for line in lines if line.startswith("| 32 | **")]
    assert len(side) == 1 and all(float(c.split("**")[1]) > 0 for c in side[0][1:])
    totals = [cells(line) for line in lines if line.startswith("| **all, per step** |")]
    assert len(totals) == 2 and all(float(row[-1].strip("*")) > 0 for row in totals)  # one per thread count
    linear1 = [cells(line) for line in lines if line.startswith("| linear1 forward |")]
    assert len(linear1) == 2 and all(row[1:3] == ["2048×128 @ 128×512", "2"] and float(row[3]) > 0
                                     and float(row[4]) > 0 for row in linear1)
