"""What the benchmarks share: the command line and thread pinning, the optional PyTorch import, interleaved
timing, the machine header and the markdown report (``_steps.py`` holds the train steps lenet and lstm share).
Call :func:`setup` before importing NumPy, whose BLAS reads the thread count once, when it loads: for that
reason nothing here imports NumPy, fnn or PyTorch at module level."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's fnn, installed or not
Times = dict[tuple[str, str], list[tuple[int, float]]]  # (contender, kind) -> [(round, seconds)]
torch: Any = None  # set by import_torch


def setup(doc: str, add: Callable[[argparse.ArgumentParser], Any] | None = None, defaults: tuple[int, int] = (30, 5),
          quick: tuple[int, int] = (5, 1), threads: int | list[int] = 2) -> argparse.Namespace:
    """Parse the common flags (and ``add``'s); pin BLAS and OpenMP threads to ``--threads`` (a list when ``threads``
    is one: ``args.thread_counts``, and ``args.threads`` is their maximum, the count the libraries load with)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    many = isinstance(threads, list)
    p.add_argument("--threads", type=int, nargs="+" if many else None, default=threads, metavar="N",
                   help=f"BLAS/OpenMP/PyTorch threads (default {' '.join(map(str, threads)) if many else threads})")
    p.add_argument("--repeats", type=int, help=f"timed rounds (default {defaults[0]}; {quick[0]} with --quick)")
    p.add_argument("--warmup", type=int, help=f"untimed rounds first (default {defaults[1]}; {quick[1]} with --quick)")
    p.add_argument("--quick", action="store_true", help="a smoke run: few rounds, rough numbers")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--malloc-default", action="store_true", help="keep glibc's memory defaults (otherwise "
                   "fnn.runtime.reuse_freed_memory, as in the examples)")
    if add:
        add(p)
    a = p.parse_args()
    a.repeats = a.repeats if a.repeats is not None else quick[0] if a.quick else defaults[0]
    a.warmup = a.warmup if a.warmup is not None else quick[1] if a.quick else defaults[1]
    a.thread_counts = a.threads if many else [a.threads]
    a.threads = max(a.thread_counts)
    if a.repeats < 1 or a.warmup < 0 or min(a.thread_counts) < 1:
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    import numpy  # noqa: F401 - its BLAS loads now, with the thread count just set
    use_threads(a.threads)  # for a BLAS that ignores the variables
    import fnn  # the RSS probe below needs freed memory to leave the process: glibc's defaults there
    a.reuse_memory = not (a.malloc_default or getattr(a, "rss_probe", None)) and fnn.runtime.reuse_freed_memory()
    return a


def use_threads(n: int) -> str:
    """Limit NumPy's BLAS (with threadpoolctl) and PyTorch to ``n`` threads, at most the count they loaded with;
    return a warning when the BLAS cannot be limited."""
    if torch is not None:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
        return ""
    except ImportError:
        return " (NumPy's BLAS keeps its threads: threadpoolctl is not installed)"


def import_torch(args: argparse.Namespace) -> str:
    """Import PyTorch as this module's ``torch`` with ``--threads`` threads; return why not, or ""."""
    global torch
    if args.no_torch:
        return "left out (--no-torch)"
    try:
        import torch as t
    except Exception as err:  # noqa: BLE001 - any failure to import means "no torch"
        return f"not available ({type(err).__name__}: {err})"
    torch = t
    torch.set_num_threads(args.threads)
    return ""


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleave(steps: dict[str, dict[str, Callable[[], Any]]], warmup: int, repeats: int,
               every: dict[str, int] | None = None) -> Times:
    """Rounds in which every contender runs each kind of step once (kinds in order, the contenders starting
    from a different one each round) so that machine noise hits all alike; ``every[name] = k`` times one
    on every k-th round only. The first ``warmup`` rounds are not kept."""
    names, every = list(steps), every or {}
    times: Times = {(n, k): [] for n, s in steps.items() for k in s}
    for r in range(warmup + repeats):
        for kind in dict.fromkeys(k for s in steps.values() for k in s):
            for n in names[r % len(names):] + names[:r % len(names)]:
                if kind in steps[n] and not (r - warmup) % every.get(n, 1):
                    t = timed(steps[n][kind])
                    times[n, kind] += [(r, t)] if r >= warmup else []
    return times


def ratios(times: Times, other: str, kind: str, other_kind: str | None = None) -> list[float]:
    """fnn's ``kind`` step / ``other``'s ``other_kind`` step (default: the same kind), round by round."""
    own = dict(times.get(("fnn", kind), []))
    return [own[r] / t for r, t in times.get((other, other_kind or kind), []) if r in own]


def spread(v: Sequence[float], ratio: bool = False) -> str:
    """``median [q25–q75]`` of times in ms, or of ratios (the median in bold)."""
    if not v:
        return "–"
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return f"**{q[1]:.2f}** [{q[0]:.2f}–{q[2]:.2f}]" if ratio else f"{ms(q[1])} [{ms(q[0])}–{ms(q[2])}]"


def med(v: Sequence[float]) -> float:
    return statistics.median(v) if v else 0.0


def ms(t: float) -> str:
    t *= 1e3
    return f"{t:.0f}" if t >= 100 else f"{t:.1f}" if t >= 10 else f"{t:.2f}" if t >= 1 else f"{t:.3f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def step_tables(results: Sequence[tuple[str, Times]], col: str, labels: dict[str, str],
                against: Callable[[str, str], str | None] = lambda other, kind: kind) -> None:
    """Per row label and kind, each contender's median [IQR] ms and fnn/other ratios of the same rounds, then
    the best-of (minimum) times; ``against(other, kind)``: the other's kind set against fnn's (None: none)."""
    names = list(dict.fromkeys(n for _, times in results for n, _ in times))
    others = [n for n in names if n != "fnn"]
    med_rows, min_rows = [], []
    for label, times in results:
        for kind in [k for k in labels if ("fnn", k) in times]:
            med_row, min_row = [label, labels[kind]], [label, labels[kind]]
            most = max(len(times.get((n, kind), [])) for n in names)
            for n in names:
                v, alt = [t for _, t in times.get((n, kind), [])], against(n, kind)
                none = f"(= {labels[alt]})" if alt and alt != kind and (n, alt) in times else "–"
                med_row.append(spread(v) + (f" (n={len(v)})" if len(v) < most else "") if v else none)
                min_row.append(ms(min(v)) if v else none)
            for n in others:
                alt = against(n, kind)
                med_row.append(spread(ratios(times, n, kind, alt) if alt else [], ratio=True))
                best = [t for _, t in times.get((n, alt), [])] if alt else []
                min_row.append(f"{min(t for _, t in times['fnn', kind]) / min(best):.2f}" if best else "–")
            med_rows.append(med_row)
            min_rows.append(min_row)
    align = "rl" + "r" * (len(names) + len(others))
    print(table([col, "step"] + [f"{n} ms" for n in names] + [f"fnn/{n}" for n in others], med_rows, align))
    print("\nTimes: median [inter-quartile range] in ms over the timed rounds (n: steps timed, where fewer). Ratios: "
          "fnn time / other time in the same round, median [IQR] over rounds; > 1 means fnn is slower.\n\n"
          "Best-of (minimum) times of the same steps and their ratios, which a loaded machine disturbs least:\n")
    print(table([col, "step"] + [f"{n} min ms" for n in names] + [f"fnn/{n}" for n in others], min_rows, align))
    print()


def side_by_side(lead: Sequence[str], align: str, rows: Sequence[tuple[Sequence[str], str, dict[int, Times]]]) -> None:
    """One table of fnn/torch ratios with a column per thread count: each row is its leading cells (``lead`` names
    them, ``align`` aligns them), the kind of step, and the rounds' times by thread count."""
    counts = list(rows[0][2]) if rows else []
    print(table([*lead, *(f"fnn/torch, --threads {t}" for t in counts)],
                [[*cells, *(spread(ratios(times[t], "torch", kind), ratio=True) for t in counts)]
                 for cells, kind, times in rows], align + "r" * len(counts)))
    print("\nMedian [IQR] over rounds of fnn's time / PyTorch's in the same round; > 1 means fnn is slower.\n")


class Product(NamedTuple):
    """One matrix product of a step, run ``count`` times a step: ``a @ b`` for operands of shapes ``a`` and ``b``;
    with ``a_t``/``b_t``, that operand is the transposed view of a contiguous array (as fnn passes ``x.T``)."""

    name: str
    a: tuple[int, ...]
    b: tuple[int, ...]
    count: int
    a_t: bool = False
    b_t: bool = False


def product_floor(products: Sequence[Product], warmup: int, repeats: int) -> tuple[float, float]:
    """Print the table of ``products``, each timed alone in NumPy and in PyTorch (interleaved, on the same float32
    arrays); return the per-step totals ``(numpy, torch)`` in seconds: what the two BLAS libraries cost before any
    other work. Needs PyTorch."""
    import numpy as np
    rng, rows, total = np.random.default_rng(0), [], {"numpy": 0.0, "torch": 0.0}
    for p in products:
        a, b = (rng.standard_normal((*s[:-2], s[-1], s[-2])).astype(np.float32).swapaxes(-1, -2) if t
                else rng.standard_normal(s).astype(np.float32) for s, t in ((p.a, p.a_t), (p.b, p.b_t)))
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)  # the same memory, strides included
        steps = {"numpy": {"mm": partial(np.matmul, a, b)}, "torch": {"mm": partial(torch.matmul, ta, tb)}}
        times = interleave(steps, warmup, repeats)
        mid = {lib: med([t for _, t in times[lib, "mm"]]) for lib in total}
        for lib in total:
            total[lib] += p.count * mid[lib]
        rows.append([p.name, "×".join(map(str, p.a)) + " @ " + "×".join(map(str, p.b)), str(p.count),
                     ms(mid["numpy"]), ms(mid["torch"]), f"{mid['numpy'] / mid['torch']:.2f}"])
    rows.append(["**all, per step**", "", "", ms(total["numpy"]), ms(total["torch"]),
                 f"**{total['numpy'] / total['torch']:.2f}**"])
    print(table(["product", "shapes", "per step", "NumPy ms", "PyTorch ms", "NumPy/PyTorch"], rows, "llrrrr"))
    return total["numpy"], total["torch"]


def blas_check(threads: int, a_shape: tuple[int, int], b_shape: tuple[int, int], what: str) -> str:
    """A small float32 product on ``threads`` BLAS threads and on one: threaded BLAS stalls on a busy machine."""
    try:
        import numpy as np
        from threadpoolctl import threadpool_limits
    except ImportError:
        return ""
    a, b = (np.random.default_rng(0).standard_normal(s).astype(np.float32) for s in (a_shape, b_shape))
    many = med([timed(lambda: a @ b) for _ in range(25)])
    with threadpool_limits(1, user_api="blas"):
        one = med([timed(lambda: a @ b) for _ in range(25)])
    return (f"BLAS check: a {a_shape} @ {b_shape} float32 product ({what}) takes {ms(many)} ms on {threads} BLAS "
            f"threads and {ms(one)} ms on one." + (" **Threaded BLAS is stalling on this machine** (its threads "
            "wait for each other to get a CPU): fnn's small products are inflated far beyond their cost on an idle "
            "machine; `--threads 1` shows the profile without that." if many > 3 * one else ""))


def header(title: str, args: argparse.Namespace, torch_note: str, setting: str,
           blas: tuple[Any, Any, str] | None = None) -> dict[str, Any]:
    """Print the title, versions, CPUs, load, BLAS threads, warnings and ``setting``; return what footer needs."""
    import numpy as np
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    try:
        from threadpoolctl import threadpool_info
        pools = ", ".join(f"{d['internal_api']} {d['num_threads']} threads" for d in threadpool_info()
                          if d["user_api"] == "blas") or "unknown"
    except ImportError:
        pools = f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    print(f"## {title}\n\nPython {platform.python_version()}; NumPy {np.__version__} (BLAS: {pools}); PyTorch "
          + (f"{torch.__version__} ({torch.get_num_threads()} threads)" if torch is not None else torch_note)
          + f"; {platform.machine()}, {cpus} usable CPUs; load average at start {load:.2f}; freed memory "
          + ("kept for reuse (fnn.runtime.reuse_freed_memory)." if getattr(args, "reuse_memory", False)
             else "returned to the system (glibc's defaults, --malloc-default)."))
    if load > cpus:
        print(f"**Warning: the machine is oversubscribed** (load {load:.1f} on {cpus} CPUs): a thread that loses its "
              "CPU stalls the others at every barrier, PyTorch's OpenMP pool most; `--threads 1` suffers least.")
    stall = blas_check(args.threads, *blas) if blas and args.threads > 1 else ""
    print("\n".join(filter(None, [stall, setting + (" --quick: few rounds, rough numbers." if args.quick else "")])))
    print()
    return {"t0": time.time(), "load": load, "cpus": cpus, "args": args, "blas": blas, "stall": stall}


def footer(run: dict[str, Any]) -> None:
    """The BLAS check again, the load at the end and the wall time."""
    end = blas_check(run["args"].threads, *run["blas"]) if run["blas"] and run["args"].threads > 1 else ""
    if end:
        print(end.replace("BLAS check:", "BLAS check again at the end:") + "\n")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > run["cpus"] >= run["load"]:
        print(f"**Warning:** the load rose to {load:.1f} on {run['cpus']} CPUs during the run; see the IQRs.")
    print(f"Wall time {time.time() - run['t0']:.0f} s; load average at end {load:.2f} on {run['cpus']} CPUs. "
          "The machine may be shared: trust the ratios of one run more than its absolute times.")
