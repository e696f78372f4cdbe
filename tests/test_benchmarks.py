"""Smoke test of benchmarks/distributed.py: it launches its MPI jobs and prints the scaling table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mpirun import mpiexec

ROOT = Path(__file__).resolve().parent.parent


def test_distributed_benchmark_prints_the_scaling_table() -> None:
    mpiexec()  # skips without MPI (fails under FNN_REQUIRE_MPI=1)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distributed.py"), "--quick", "--no-torch",
                           "--ranks", "1", "2", "--repeats", "2", "--warmup", "1", "--batch", "64"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and rows[0].split("|")[4].strip() == "1.00"  # efficiency of 1 rank against itself
