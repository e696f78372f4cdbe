"""Process settings that make fnn faster: keeping freed memory for reuse.

A training step allocates the same large arrays every time (column matrices,
activations, gradients) and frees them when its vjps go. With glibc's defaults,
every array over 128 KiB is mapped fresh from the operating system and unmapped on
release, so each step page-faults its whole working set again: for LeNet-5 at batch
128 on one core that is a quarter of the step. :func:`reuse_freed_memory` tells glibc
to keep such blocks in the heap (up to 32 MiB each, its maximum) and not to hand the
heap back, so the next step reuses them. The price is that the process keeps its peak
memory instead of shrinking after it.

It changes the process, not fnn's results (bitwise the same), so it is a call a script
makes once, like choosing its thread count; nothing in fnn calls it. On other C
libraries (macOS, Windows, musl) it does nothing and returns ``False``.

>>> isinstance(reuse_freed_memory(), bool)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Callable

from fnn import validate

__all__ = ["reuse_freed_memory"]

# glibc's mallopt parameters (malloc.h) and defaults.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_THRESHOLD = 128 * 1024
_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_KEEP_HEAP = 1 << 30


def _mallopt() -> Callable[[int, int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    mallopt: Callable[[int, int], int] = ctypes.CDLL(name).mallopt
    return mallopt


def reuse_freed_memory(enable: bool = True) -> bool:
    """Keep freed blocks of up to 32 MiB in the heap for reuse (``enable=True``), or go back to
    glibc's defaults (``False``). Returns whether the setting was applied (glibc only)."""
    enable = validate.boolean("reuse_freed_memory", "enable", enable)
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mmap_threshold = _MAX_MMAP_THRESHOLD if enable else _DEFAULT_THRESHOLD
    trim_threshold = _KEEP_HEAP if enable else _DEFAULT_THRESHOLD
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
