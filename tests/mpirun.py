"""Launching real MPI jobs from the tests: ``mpiexec`` found on PATH, flags for Open MPI, one thread per rank.

The MPI tests skip when mpi4py or ``mpiexec`` is missing, except under
``FNN_REQUIRE_MPI=1`` (set by ``.ci/run``), where that is a failure: CI always runs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def mpiexec() -> list[str]:
    """The ``mpiexec`` command-line prefix, or a skip (a failure under ``FNN_REQUIRE_MPI=1``)."""
    exe = shutil.which("mpiexec")
    missing = "mpiexec is not on PATH" if exe is None else None
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        missing = "mpi4py is not installed"
    if missing or exe is None:
        if os.environ.get("FNN_REQUIRE_MPI") == "1":
            pytest.fail(f"FNN_REQUIRE_MPI=1 but {missing} (pip install -e '.[mpi]')")
        pytest.skip(f"{missing} (pip install -e '.[mpi]')")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    # Open MPI refuses root without --allow-run-as-root, and more ranks than cores without --oversubscribe.
    return [exe, "--allow-run-as-root", "--oversubscribe"] if "Open MPI" in version else [exe]


def mpirun(n: int, script: Path, *args: str, cwd: Path | None = None,
           timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``python script args`` on ``n`` ranks with one BLAS thread each; fnn and tests/ importable."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}
    cmd = [*mpiexec(), "-n", str(n), sys.executable, str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)


def check(proc: subprocess.CompletedProcess[str]) -> str:
    """The job's standard output, after checking that every rank exited 0."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
