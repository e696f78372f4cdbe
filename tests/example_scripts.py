"""Running ``examples/`` scripts as the smoke tests do (``tests/test_examples.py``,
``tests/test_token_examples.py``): as subprocesses from a given working directory, with the
repository on ``PYTHONPATH``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
PNG = b"\x89PNG\r\n\x1a\n"
"""The first bytes of every PNG file."""


def launch(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python examples/<script>.py *args`` from ``cwd``, its output captured (5 minutes at most)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(EXAMPLES_DIR / f"{script}.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
