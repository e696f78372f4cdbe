"""What the benchmarks share: statistics, markdown formatting, interleaved timing, the comparison
of parameter trees, and the description of the machine (versions, load, BLAS threads).

Import it after fixing the thread counts: the scripts set ``OPENBLAS_NUM_THREADS`` and friends
before anything imports NumPy, because NumPy's BLAS reads them once, when it loads.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Times = dict[tuple[str, str], list[tuple[int, float]]]  # (contender, kind) -> [(round, seconds)]


# --- statistics and formatting -----------------------------------------------------------------

def quantiles(v: Sequence[float]) -> tuple[float, float, float]:
    q25, q50, q75 = np.percentile(np.asarray(v, dtype=np.float64), [25, 50, 75])
    return float(q25), float(q50), float(q75)


def ms(t: float) -> str:
    t *= 1e3
    return f"{t:.0f}" if t >= 100 else f"{t:.1f}" if t >= 10 else f"{t:.2f}" if t >= 1 else f"{t:.3f}"


def ms_spread(v: Sequence[float]) -> str:
    q25, q50, q75 = quantiles(v)
    return f"{ms(q50)} [{ms(q25)}–{ms(q75)}]"


def ratio_spread(v: Sequence[float]) -> str:
    if not v:
        return "–"
    q25, q50, q75 = quantiles(v)
    return f"**{q50:.2f}** [{q25:.2f}–{q75:.2f}]"


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- interleaved timing ------------------------------------------------------------------------

def interleave(contenders: Sequence[Any], kinds: Sequence[str], warmup: int, repeats: int,
               runs: Callable[[Any, str], bool] = lambda c, kind: True,
               every: dict[str, int] | None = None) -> Times:
    """Time ``getattr(c, kind)()`` for every contender ``c`` (with a ``.name``) and kind, round by round.

    Each round runs every kind once per contender, kinds in order and, within a kind, the
    contenders starting from a different one each round, so that machine noise hits all of them
    alike. ``runs(c, kind)`` leaves out pairs; ``every[name] = k`` times that contender on every
    k-th round only. The first ``warmup`` rounds are not kept.
    """
    every = every or {}
    times: Times = {(c.name, k): [] for c in contenders for k in kinds if runs(c, k)}
    for r in range(warmup + repeats):
        order = list(contenders[r % len(contenders):]) + list(contenders[:r % len(contenders)])
        for kind in kinds:
            for c in order:
                if r % every.get(c.name, 1) or not runs(c, kind):
                    continue
                dt = timed(getattr(c, kind))
                if r >= warmup:
                    times[c.name, kind].append((r, dt))
    return times


def paired_ratios(times: Times, other: str, kind: str, other_kind: str | None = None,
                  mine: str = "fnn") -> list[float]:
    """``mine``'s ``kind`` step / ``other``'s ``other_kind`` step (default: the same kind), round by round."""
    own = dict(times[mine, kind])
    return [own[r] / t for r, t in times[other, other_kind or kind] if r in own]


# --- correctness check -------------------------------------------------------------------------

def max_rel_diff(a: Any, b: Any) -> float:
    """The largest ``max |a - b| / max |a|`` over the arrays of two parameter trees (nested dicts),
    taken array by array; entries of ``a`` that are empty dicts (layers without parameters) are skipped."""
    if isinstance(a, dict):
        return max((max_rel_diff(v, b[k]) for k, v in a.items() if not (isinstance(v, dict) and not v)),
                   default=0.0)
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30))


# --- the machine -------------------------------------------------------------------------------

def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info

        info = [f"{d.get('internal_api')} {d.get('num_threads')} threads" for d in threadpool_info()
                if d.get("user_api") == "blas"]
        return ", ".join(info) or "unknown"
    except Exception:  # noqa: BLE001
        return f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"


def print_machine(threads: int, torch: Any, torch_note: str) -> tuple[tuple[float, float, float] | None, int]:
    """Print versions, CPUs and load (and a warning when the machine is oversubscribed);
    return the load average at the start and the number of usable CPUs."""
    load0 = load_average()
    versions = [f"Python {platform.python_version()}", f"NumPy {np.__version__} (BLAS: {blas_threads()})"]
    versions.append(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)" if torch is not None
                    else f"PyTorch {torch_note}")
    cpus = usable_cpus()
    print(f"{'; '.join(versions)}; {platform.machine()}, {cpus} usable CPUs"
          + (f"; load average at start {load0[0]:.2f}." if load0 else "."))
    if load0 and load0[0] > cpus:
        print(f"**Warning: the machine is oversubscribed** (load {load0[0]:.1f} on {cpus} CPUs). Multi-threaded "
              f"code suffers most: a worker thread that loses its CPU stalls the others at every barrier, which "
              f"hits PyTorch's OpenMP pool (many small parallel regions per step) harder than NumPy's BLAS. "
              + ("Expect inflated, erratic torch times; `--threads 1` compares the libraries on one thread each."
                 if threads > 1 else "With one thread each, as here, the comparison is much less sensitive."))
    return load0, cpus


def blas_stall_check(threads: int, a_shape: tuple[int, int], b_shape: tuple[int, int], what: str,
                     victims: str, seed: int = 0) -> str:
    """Time a small float32 product on ``threads`` BLAS threads and on one; threaded BLAS stalls on a
    busy machine. ``what`` says what the product is, ``victims`` what a stall inflates."""
    if threads == 1:
        return ""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return ""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)

    def median_time() -> float:
        return quantiles([timed(lambda: a @ b) for _ in range(25)])[1]

    many = median_time()
    with threadpool_limits(1, user_api="blas"):
        one = median_time()
    line = (f"BLAS check: a {a_shape} @ {b_shape} float32 product ({what}) takes "
            f"{ms(many)} ms on {threads} BLAS threads and {ms(one)} ms on one.")
    if many > 3 * one:
        line += (" **Threaded BLAS is stalling on this machine** (its threads wait for each other to get a CPU): "
                 f"{victims} are inflated far beyond their cost on an idle machine; `--threads 1` shows the "
                 "profile without that.")
    return line


def print_footer(t_start: float, load0: tuple[float, float, float] | None, cpus: int) -> None:
    """The load at the end (with a warning if it rose past the CPU count) and the wall time."""
    load1 = load_average()
    if load1 and load1[0] > cpus and not (load0 and load0[0] > cpus):
        print(f"**Warning:** the load rose to {load1[0]:.1f} on {cpus} CPUs during the run; see the ratios' IQRs.")
    print(f"Wall time {time.time() - t_start:.0f} s" + (f"; load average at end {load1[0]:.2f}" if load1 else "")
          + f" on {cpus} CPUs. The machine may be shared: trust the ratios of one run more than its absolute times.")
