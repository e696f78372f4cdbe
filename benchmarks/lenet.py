"""LeNet-5 train step and inference: fnn against PyTorch (CPU) and a tutorial-style loop reference.

Run from the repository root (fnn installed with ``pip install -e .``, or not:
the script falls back to the checkout it lives in)::

    python benchmarks/lenet.py                      # batch 32, 128, 256; 30 timed steps after 5 warm-up
    python benchmarks/lenet.py --quick              # a smoke run: few repeats, numbers only indicative
    python benchmarks/lenet.py --batch-sizes 64 --repeats 50 --warmup 10 --no-torch --no-reference

Model: ``serial(Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(16, 5), ReLU(),
MaxPool2D(2), Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))`` on random
float32 inputs ``(N, 1, 28, 28)`` with random labels. A train step is ``apply``,
``softmax_cross_entropy``, ``vjp`` and an ``sgd`` update; inference is ``apply`` alone.
All contenders start from the same parameters, and the script checks that one train
step gives them the same loss and the same updated parameters before timing anything.

Contenders, timed step by step in interleaved rounds (the start of each round rotates
through the contenders) so that machine noise hits all of them alike:

* ``fnn``;
* ``torch``: the identical ``nn.Sequential`` on PyTorch CPU with ``torch.set_num_threads``
  (``zero_grad``, forward, ``F.cross_entropy``, ``backward``, ``SGD.step``; inference under
  ``torch.no_grad()``), when ``import torch`` works;
* ``reference``: ``benchmarks/_loop_reference.py``, layers written the way tutorials do
  (classes with caches, im2col/col2im looping in Python over every output position).

Reported: median and inter-quartile range of each contender's step time, and the
fnn/other ratios computed per round and summarised by their median and IQR. Absolute
times depend on the machine and its load: compare the ratios of one run, not times of
different runs. Also reported: a per-layer forward/vjp breakdown of fnn at batch 128,
the peak memory of one train step, and the state of the "no dx for the first layer"
variant. Use ``--threads`` (default 2) for both NumPy's BLAS and PyTorch.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LR = 0.01
SEED = 0
REFERENCE_BUDGET_S = 60.0  # timed reference steps per batch size and kind are capped to about this much time
CONV_PADDING = {"conv2d_0": 2, "conv2d_1": 0}  # the LeNet-5 convolutions, for the vjp split
NEED_DX = False  # set in main(): whether fnn's vjp takes need_dx (skip the input gradient)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256], metavar="N")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per contender (default 30; 5 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; 1 with --quick)")
    p.add_argument("--breakdown-batch", type=int, default=128, help="batch size of the per-layer breakdown")
    p.add_argument("--threads", type=int, default=2, help="threads for NumPy's BLAS and for PyTorch (default 2)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-reference", action="store_true", help="leave the loop reference out")
    p.add_argument("--quick", action="store_true", help="few repeats: checks the script works, numbers are rough")
    p.add_argument("--_rss-probe", dest="rss_probe", choices=["fnn", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 30
    if args.warmup is None:
        args.warmup = 1 if args.quick else 5
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1 or min(args.batch_sizes) < 1:
        p.error("--repeats, --threads and batch sizes must be >= 1, --warmup >= 0")
    return args


# Imported (by a test runner, say) rather than run, the module uses the defaults instead of sys.argv.
ARGS = parse_args(None if __name__ == "__main__" else [])
# Thread counts must be fixed before NumPy loads its BLAS; an explicit environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))

import numpy as np

try:
    import fnn
except ImportError:  # not installed: use the checkout this script belongs to
    sys.path.insert(0, str(HERE.parent))
    import fnn
from fnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from fnn.losses import softmax_cross_entropy
from fnn.ops import col2img, img2col, matmul_nt, matmul_wide
from fnn.optim import sgd

sys.path.insert(0, str(HERE))
import _harness as harness
import _loop_reference as loopref
from _harness import (
    interleave,
    max_rel_diff,
    mib,
    ms,
    ms_spread,
    paired_ratios,
    print_footer,
    print_machine,
    quantiles,
    ratio_spread,
    table,
    timed,
)

torch: Any = None
TORCH_NOTE = "left out (--no-torch)"
if not ARGS.no_torch:
    try:
        import torch
        import torch.nn.functional as F
        from torch import nn

        torch.set_num_threads(ARGS.threads)
        TORCH_NOTE = ""
    except Exception as err:  # noqa: BLE001 - any failure to import means "no torch"
        torch = None
        TORCH_NOTE = f"not available ({type(err).__name__}: {err})"


# --- the three contenders -----------------------------------------------------------------------

def build_fnn() -> fnn.Layer:
    return fnn.serial(Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(16, 5), ReLU(), MaxPool2D(2),
                      Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10))


def make_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, n])
    return rng.standard_normal((n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


def has_need_dx(net: fnn.Layer, params: Any) -> bool:
    """Whether fnn's vjp takes ``need_dx`` (skip the input gradient); older versions always compute dx."""
    _, vjp = net.apply(params, np.zeros((1, 1, 28, 28), np.float32), train=True)
    try:
        return "need_dx" in inspect.signature(vjp).parameters
    except (TypeError, ValueError):
        return False


class FnnContender:
    name = "fnn"

    def __init__(self, net: fnn.Layer, params: Any, x: np.ndarray, labels: np.ndarray) -> None:
        self.net, self.x, self.labels = net, x, labels
        self.opt = sgd(LR)
        self.params, self.opt_state = params, self.opt.init(params)
        self.first_params = params

    def train(self) -> float:
        logits, vjp = self.net.apply(self.params, self.x, train=True)
        loss, dlogits = softmax_cross_entropy(logits, self.labels)
        grads, _ = vjp(dlogits)
        self.params, self.opt_state = self.opt.update(self.params, grads, self.opt_state)
        return loss

    def train_no_dx(self) -> float:
        """The train step with ``vjp(dlogits, need_dx=False)``: no gradient for the input images."""
        logits, vjp = self.net.apply(self.params, self.x, train=True)
        loss, dlogits = softmax_cross_entropy(logits, self.labels)
        grads, _ = vjp(dlogits, need_dx=False)
        self.params, self.opt_state = self.opt.update(self.params, grads, self.opt_state)
        return loss

    def infer(self) -> np.ndarray:
        y, _ = self.net.apply(self.params, self.x)
        return y

    def fnn_params(self) -> Any:
        return self.params


class TorchContender:
    name = "torch"

    def __init__(self, params: Any, x: np.ndarray, labels: np.ndarray) -> None:
        self.model = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )
        with torch.no_grad():
            for name, module in self._named():
                w = params[name]["w"]
                module.weight.copy_(torch.from_numpy(w if w.ndim == 4 else np.ascontiguousarray(w.T)))
                module.bias.copy_(torch.from_numpy(params[name]["b"]))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.x, self.labels = torch.from_numpy(x), torch.from_numpy(labels)

    def _named(self) -> list[tuple[str, Any]]:
        convs = [m for m in self.model if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.model if isinstance(m, nn.Linear)]
        return [(f"conv2d_{i}", m) for i, m in enumerate(convs)] + [(f"dense_{i}", m) for i, m in enumerate(linears)]

    def train(self) -> float:
        self.opt.zero_grad()
        loss = F.cross_entropy(self.model(self.x), self.labels)
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def infer(self) -> Any:
        with torch.no_grad():
            return self.model(self.x)

    def fnn_params(self) -> Any:
        out = {}
        for name, m in self._named():
            w = m.weight.detach().numpy()
            out[name] = {"w": w if w.ndim == 4 else w.T, "b": m.bias.detach().numpy()}
        return out


class ReferenceContender:
    name = "reference"

    def __init__(self, params: Any, x: np.ndarray, labels: np.ndarray) -> None:
        self.net, self.x, self.labels = loopref.LoopLeNet(params), x, labels

    def train(self) -> float:
        return self.net.train_step(self.x, self.labels, LR)

    def infer(self) -> np.ndarray:
        return self.net.forward(self.x)

    def fnn_params(self) -> Any:
        return self.net.params()


KINDS = ("train", "train_no_dx", "infer")
KIND_LABELS = {"train": "train", "train_no_dx": "train, no input dx", "infer": "inference"}


def kinds_of(c: Any) -> tuple[str, ...]:
    return tuple(k for k in KINDS if k != "train_no_dx" or (c.name == "fnn" and NEED_DX))


def make_contenders(net: fnn.Layer, params: Any, x: np.ndarray, labels: np.ndarray) -> list[Any]:
    out: list[Any] = [FnnContender(net, params, x, labels)]
    if torch is not None:
        out.append(TorchContender(params, x, labels))
    if not ARGS.no_reference:
        out.append(ReferenceContender(params, x, labels))
    return out


# --- correctness check ------------------------------------------------------------------------

def check_one_step(contenders: list[Any]) -> tuple[str, dict[str, float]]:
    """One train step of each contender (also their first warm-up step); compare losses and params."""
    losses: dict[str, float] = {}
    first: dict[str, float] = {}
    for c in contenders:
        t0 = time.perf_counter()
        losses[c.name] = c.train()
        first[c.name] = time.perf_counter() - t0
    base = contenders[0].fnn_params()
    parts = [f"loss {losses['fnn']:.6f}"]
    ok = True
    for c in contenders[1:]:
        d_loss = abs(losses[c.name] - losses["fnn"])
        d_par = max_rel_diff(base, c.fnn_params())
        ok &= d_loss < 1e-4 and d_par < 1e-4
        parts.append(f"{c.name}: |Δloss| {d_loss:.1e}, max rel. |Δparams| {d_par:.1e}")
    if NEED_DX:
        f = contenders[0]
        twin = FnnContender(f.net, f.first_params, f.x, f.labels)
        twin.train_no_dx()
        d_par = max_rel_diff(base, twin.params)
        ok &= d_par == 0.0
        parts.append(f"fnn with need_dx=False: max rel. |Δparams| {d_par:.1e}")
    return ("agree" if ok else "**DISAGREE**") + " — " + "; ".join(parts), first


# --- interleaved timing --------------------------------------------------------------------------

def bench_batch(n: int, net: fnn.Layer, params: Any) -> dict[str, Any]:
    x, labels = make_data(n)
    contenders = make_contenders(net, params, x, labels)
    check, first = check_one_step(contenders)
    # A slow reference is timed only every k-th round, so that it stays within REFERENCE_BUDGET_S.
    every = {c.name: 1 for c in contenders}
    if "reference" in first:
        per_round = 1.5 * first["reference"]  # train + inference, roughly
        every["reference"] = max(1, math.ceil(per_round * ARGS.repeats / REFERENCE_BUDGET_S))
    times = interleave(contenders, KINDS, ARGS.warmup, ARGS.repeats, lambda c, kind: kind in kinds_of(c), every)
    return {"n": n, "check": check, "every": every, "times": times, "contenders": contenders}


def ratio_against(times: dict[tuple[str, str], list[tuple[int, float]]], other: str, kind: str) -> list[float]:
    """The ratio shown in the tables: fnn without input dx is set against torch's train step, which
    never computes the input's gradient either; against the reference (which does) it is left out."""
    if kind != "train_no_dx":
        return paired_ratios(times, other, kind)
    return paired_ratios(times, other, kind, "train") if other == "torch" else []


def report_timings(results: list[dict[str, Any]]) -> None:
    names = [c.name for c in results[0]["contenders"]]
    others = [m for m in names if m != "fnn"]
    header = ["batch", "step"] + [f"{m} ms" for m in names] + [f"fnn/{m}" for m in others]
    kinds = kinds_of(results[0]["contenders"][0])
    rows = []
    for res in results:
        for kind in kinds:
            row = [str(res["n"]), KIND_LABELS[kind]]
            for m in names:
                if (m, kind) not in res["times"]:
                    row.append("(= train)" if m == "torch" else "–")
                    continue
                cell = ms_spread([t for _, t in res["times"][m, kind]])
                if res["every"][m] > 1:
                    cell += f" (n={len(res['times'][m, kind])})"
                row.append(cell)
            row += [ratio_spread(ratio_against(res["times"], m, kind)) for m in others]
            rows.append(row)
    print(table(header, rows, "rl" + "r" * (len(header) - 2)))
    print()
    print("Times: median [inter-quartile range] in ms over the timed steps. Ratios: fnn time / other time "
          "in the same round, median [IQR] over rounds; > 1 means fnn is slower.")
    if "train_no_dx" in kinds:
        print("\"train, no input dx\" is fnn's step with vjp(dlogits, need_dx=False); PyTorch's train step never "
              "computes the input's gradient (the input does not require grad), so that row's fnn/torch ratio, "
              "taken against torch's train step, is the like-for-like one. The reference always computes dx.")
    for res in results:
        if res["every"].get("reference", 1) > 1:
            print(f"- batch {res['n']}: the reference is slow, so it was timed every {res['every']['reference']}"
                  f"-th round only ({len(res['times']['reference', 'train'])} steps), its ratios pair it with"
                  f" fnn's step of the same round.")
    print()
    rows = []
    for res in results:
        for kind in kinds:
            best = {m: min(t for _, t in res["times"][m, kind]) for m in names if (m, kind) in res["times"]}
            against = {m: best.get(m) if kind != "train_no_dx" else
                       (min(t for _, t in res["times"][m, "train"]) if m == "torch" else None) for m in others}
            rows.append([str(res["n"]), KIND_LABELS[kind]]
                        + [ms(best[m]) if m in best else ("(= train)" if m == "torch" else "–") for m in names]
                        + [f"{best['fnn'] / a:.2f}" if a else "–" for a in against.values()])
    print("Best-of (minimum) times of the same steps and their ratios, less sensitive to a loaded machine "
          "(the minimum is the step least disturbed by other processes):")
    print()
    print(table(["batch", "step"] + [f"{m} min ms" for m in names] + [f"fnn/{m}" for m in others], rows,
                "rl" + "r" * (len(header) - 2)))
    print()
    print("One train step from identical parameters, before timing (float32, so differences ~1e-6 are rounding):")
    for res in results:
        print(f"- batch {res['n']}: {res['check']}")


# --- per-layer breakdown ------------------------------------------------------------------------

def conv_vjp_parts(params: Any, x: np.ndarray, dy: np.ndarray, pad: int, library_vjp: Callable[[Any], Any]
                   ) -> dict[str, Callable[[], Any]] | None:
    """Conv2D's vjp (its ``dx_method="col2img"`` path) re-enacted with fnn.ops, in three parts.

    Returns None when the parts do not reproduce the library's vjp (its internals changed).
    """
    w = params["w"]
    f = w.shape[0]
    k = w.shape[2:]
    cols = img2col(x, k, 1, pad)
    w2 = w.reshape(f, -1)
    dy_t = dy.transpose(1, 2, 3, 0).reshape(f, -1)

    def dw() -> Any:
        return matmul_nt(dy_t, cols).reshape(w.shape), dy_t.sum(axis=1)

    def dcols() -> np.ndarray:
        return matmul_wide(w2.T, dy_t)

    dcols_value = dcols()

    def fold() -> np.ndarray:
        return col2img(dcols_value, x.shape, k, 1, pad)

    grads, dx = library_vjp(dy)
    (gw, gb), gx = dw(), fold()
    if not (np.allclose(gw, grads["w"], rtol=1e-4, atol=1e-6) and np.allclose(gb, grads["b"], rtol=1e-4, atol=1e-6)
            and np.allclose(gx, dx, rtol=1e-4, atol=1e-6)):
        return None
    return {"dw, db": dw, "dx: w.T @ dy": dcols, "dx: col2img": fold}


def breakdown(net: fnn.Layer, params: Any, n: int) -> dict[str, float]:
    x, labels = make_data(n)
    layers = list(net.children)
    opt = sgd(LR)
    opt_state = opt.init(params)
    # Real activations and cotangents from one train step.
    xs, vjps = [x], []
    for name, layer in layers:
        y, vjp = layer.apply(params[name], xs[-1], train=True)
        xs.append(y)
        vjps.append(vjp)
    dys: list[Any] = [None] * len(layers)
    _, dy = softmax_cross_entropy(xs[-1], labels)
    grads = {}
    for i in range(len(layers) - 1, -1, -1):
        dys[i] = dy
        grads[layers[i][0]], dy = vjps[i](dy)

    fwd: list[list[float]] = [[] for _ in layers]
    bwd: list[list[float]] = [[] for _ in layers]
    loss_t: list[float] = []
    upd_t: list[float] = []
    whole: list[float] = []
    splits: dict[str, dict[str, Callable[[], Any]] | None] = {}
    for i, (name, _) in enumerate(layers):
        if name in CONV_PADDING:
            splits[name] = conv_vjp_parts(params[name], xs[i], dys[i], CONV_PADDING[name], vjps[i])
    split_t: dict[tuple[str, str], list[float]] = {(c, p): [] for c, s in splits.items() if s for p in s}
    step = FnnContender(net, params, x, labels)
    first_no_dx: list[float] = []

    for r in range(ARGS.warmup + ARGS.repeats):
        keep = r >= ARGS.warmup
        for i, (name, layer) in enumerate(layers):
            t0 = time.perf_counter()
            _, vjp = layer.apply(params[name], xs[i], train=True)
            t1 = time.perf_counter()
            vjp(dys[i])
            t2 = time.perf_counter()
            if keep:
                fwd[i].append(t1 - t0)
                bwd[i].append(t2 - t1)
            if i == 0 and NEED_DX:
                t3 = time.perf_counter()
                vjp(dys[0], need_dx=False)
                if keep:
                    first_no_dx.append(time.perf_counter() - t3)
        t_loss = timed(lambda: softmax_cross_entropy(xs[-1], labels))
        t_upd = timed(lambda: opt.update(params, grads, opt_state))
        for c, s in splits.items():
            for part, fn in (s or {}).items():
                t = timed(fn)
                if keep:
                    split_t[c, part].append(t)
        step.params = params  # same parameters every round
        t_whole = timed(step.train)
        if keep:
            loss_t.append(t_loss)
            upd_t.append(t_upd)
            whole.append(t_whole)

    def med(v: Sequence[float]) -> float:
        return quantiles(v)[1]

    # Every part as (label, name, kind, output, forward times, vjp times); shares from medians and from minima.
    parts = [(str(i), name, layer.kind, "×".join(map(str, xs[i + 1].shape[1:])), fwd[i], bwd[i])
             for i, (name, layer) in enumerate(layers)]
    parts += [("", "loss", "softmax_cross_entropy", "", loss_t, []), ("", "update", "sgd(0.01).update", "", [], upd_t)]
    total = sum(med(f) + med(b) for f, b in zip(fwd, bwd)) + med(loss_t) + med(upd_t)
    total_min = sum(min(f) + min(b) for f, b in zip(fwd, bwd)) + min(loss_t) + min(upd_t)
    rows = []
    groups: dict[str, list[float]] = {}
    items: list[tuple[float, float, str]] = []
    for label, name, kind, shape, f_t, b_t in parts:
        f_, b_ = (med(f_t) if f_t else 0.0), (med(b_t) if b_t else 0.0)
        lo = (min(f_t) if f_t else 0.0) + (min(b_t) if b_t else 0.0)
        g = groups.setdefault(kind.split("(")[0], [0.0, 0.0])
        g[0] += f_ + b_
        g[1] += lo
        if f_t:
            items.append((f_, min(f_t), f"{name} forward" if b_t else name))
        if b_t:
            items.append((b_, min(b_t), f"{name} vjp" if f_t else name))
        rows.append([label, name, kind, shape, ms(f_) if f_t else "", ms(b_) if b_t else "", ms(f_ + b_),
                     f"{100 * (f_ + b_) / total:.1f}%", ms(lo), f"{100 * lo / total_min:.1f}%"])
    rows.append(["", "**sum of parts**", "", "", ms(sum(map(med, fwd)) + med(loss_t)),
                 ms(sum(map(med, bwd)) + med(upd_t)), ms(total), "100%", ms(total_min), "100%"])
    rows.append(["", "whole train step", "measured in the same rounds", "", "", "", ms(med(whole)),
                 f"{100 * med(whole) / total:.0f}% of sum", ms(min(whole)),
                 f"{100 * min(whole) / total_min:.0f}% of sum"])
    print(table(["#", "layer", "kind", "output", "forward ms", "vjp ms", "fwd+vjp ms", "share", "min ms",
                 "share of min"], rows, "rllrrrrrrr"))
    print()
    print(f"Medians over {ARGS.repeats} rounds; each layer's apply(train=True) and vjp timed alone on the real "
          f"intermediate activations and cotangents of a batch of {n}. The forward column of the loss holds "
          f"softmax_cross_entropy (value and gradient), the vjp column of the update holds the sgd update. "
          f"Share = part / sum of parts. The last two columns repeat this with each part's minimum "
          f"(forward + vjp), which a loaded machine disturbs least.")
    print()
    for title, j, denom in (("medians", 0, total), ("minima", 1, total_min)):
        by_kind = sorted(groups.items(), key=lambda kv: -kv[1][j])
        top = sorted(((it[1] if j else it[0], it[2]) for it in items), reverse=True)[:4]
        print(f"By kind ({title}): " + ", ".join(f"{k} {100 * v[j] / denom:.0f}%" for k, v in by_kind)
              + ". Largest single parts: " + ", ".join(f"{lbl} {100 * t / denom:.0f}%" for t, lbl in top) + ".")
    print()
    if split_t:
        rows = []
        for c, s in splits.items():
            if not s:
                continue
            vjp_med = med(bwd[[nm for nm, _ in layers].index(c)])
            for part in s:
                t = med(split_t[c, part])
                rows.append([c, part, ms(t), f"{100 * t / vjp_med:.0f}%", f"{100 * t / total:.1f}%"])
        print(f"Conv2D vjp split (batch {n}): the vjp's three parts re-enacted with fnn.ops (the code of "
              f"fnn/layers/conv.py's col2img path; checked to reproduce the library's gradients) and timed "
              f"in the same rounds.")
        print()
        print(table(["layer", "part", "ms", "of layer vjp", "of step"], rows, "llrrr"))
        print()
    missing = [c for c, s in splits.items() if not s]
    if missing:
        print(f"Conv2D vjp split skipped for {missing}: re-enacting it with fnn.ops no longer reproduces "
              f"Conv2D's gradients (its internals changed).")
        print()
    dx_cost: dict[str, float] = {c: med(split_t[c, "dx: w.T @ dy"]) + med(split_t[c, "dx: col2img"])
                                 for c, s in splits.items() if s}
    dx_cost["_total"] = total
    dx_cost["_first_vjp"] = med(bwd[0])
    if first_no_dx:
        dx_cost["_first_vjp_no_dx"] = med(first_no_dx)
    return dx_cost


# --- memory ------------------------------------------------------------------------------------

def traced_peak(fn: Callable[[], Any]) -> int:
    """Bytes allocated at the peak of one call of ``fn`` beyond what was live before (tracemalloc)."""
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        fn()  # allocations kept from this call (new params, caches) are the baseline of the next
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_probe(which: str) -> None:
    """Child process: the rise of the resident set's high-water mark during one step, in bytes, as JSON."""
    net = build_fnn()
    params = net.init(fnn.random.key(SEED), (1, 28, 28))
    out: dict[str, Any] = {}
    for n in ARGS.batch_sizes:
        x, labels = make_data(n)
        c = FnnContender(net, params, x, labels) if which == "fnn" else TorchContender(params, x, labels)
        res = {}
        for kind in ("train", "infer"):
            fn = getattr(c, kind)
            for _ in range(3):
                fn()
            deltas = []
            for _ in range(5):
                gc.collect()
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # reset VmHWM to the current resident size (Linux >= 4.0)
                before = proc_status_kib("VmRSS")
                fn()
                deltas.append(1024 * (proc_status_kib("VmHWM") - before))
            res[kind] = float(np.median(deltas))
        out[str(n)] = res
        del c
    print(json.dumps(out))


def run_rss_probe(which: str) -> dict[str, Any] | str:
    env = dict(os.environ)
    # Fixed mmap threshold: every array >= 64 KiB gets its own mapping, returned to the system when freed,
    # so the resident size follows live memory for both NumPy and PyTorch (no reuse of freed heap pages).
    env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="131072",
               GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=131072")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_rss-probe", which, "--threads", str(ARGS.threads),
           "--batch-sizes", *map(str, ARGS.batch_sizes)] + (["--no-torch"] if which == "fnn" else [])
    try:
        proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            return f"probe failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as err:  # noqa: BLE001
        return f"probe failed: {type(err).__name__}: {err}"


def report_memory(net: fnn.Layer, params: Any) -> None:
    rows = []
    rss = {"fnn": run_rss_probe("fnn")} if sys.platform.startswith("linux") else {}
    if torch is not None and rss:
        rss["torch"] = run_rss_probe("torch")
    for n in ARGS.batch_sizes:
        x, labels = make_data(n)
        f = FnnContender(net, params, x, labels)
        row = [str(n), mib(x.nbytes), mib(traced_peak(f.train))]
        if NEED_DX:
            row += [mib(traced_peak(f.train_no_dx))]
        row += [mib(traced_peak(f.infer))]
        if not ARGS.no_reference:
            r = ReferenceContender(params, x, labels)
            row += [mib(traced_peak(r.train))]
        for res in rss.values():
            row += ([mib(res[str(n)]["train"]), mib(res[str(n)]["infer"])] if isinstance(res, dict) else ["–", "–"])
        rows.append(row)
    header = ["batch", "input x", "fnn train (tracemalloc)"]
    if NEED_DX:
        header += ["fnn train, no input dx (tracemalloc)"]
    header += ["fnn inference (tracemalloc)"]
    if not ARGS.no_reference:
        header += ["reference train (tracemalloc)"]
    for which in rss:
        header += [f"{which} train (RSS)", f"{which} inference (RSS)"]
    print(table(header, rows))
    print()
    nbytes = fnn.tree.nbytes(params)
    print(f"Parameters: {fnn.tree.size(params)} floats ({nbytes / 1024:.0f} KiB). tracemalloc: the peak of "
          f"one step's allocations above what was live before it; NumPy reports its array buffers to "
          f"tracemalloc, so this is exact for fnn and the reference (Python objects included), but blind to "
          f"PyTorch, whose C++ allocator it does not see.")
    if rss:
        print("RSS: a fresh process per library (the one-time costs of importing and warming up are left "
              "out), glibc's mmap threshold fixed at 64 KiB so that freed arrays leave the resident set; after "
              "3 warm-up steps, the resident high-water mark is reset (/proc/self/clear_refs) and its rise "
              "during one step is read from /proc/self/status (median of 5). Page-granular, it counts what "
              "the step touches: arrays, autograd's saved tensors, BLAS and thread scratch. The fnn column "
              "calibrates the method against tracemalloc; compare fnn and torch through their RSS columns.")
        for which, res in rss.items():
            if not isinstance(res, dict):
                print(f"- {which}: {res}")
    elif torch is not None:
        print("PyTorch's memory is not measured: the RSS probe needs Linux's /proc.")
    print()


# --- the variant without the first layer's dx ---------------------------------------------------

def report_no_dx(dx_cost: dict[str, float], results: list[dict[str, Any]]) -> None:
    first = build_fnn().children[0][0]
    if NEED_DX:
        print(f"Available: vjp(dlogits, need_dx=False) makes serial stop backward at its first layer with "
              f"parameters and call that layer's vjp with need_dx=False, so {first} skips col2img. Its times are "
              f"the \"train, no input dx\" rows above; set against the plain train step of the same round:")
        print()
        rows = []
        for res in results:
            rel = paired_ratios(res["times"], "fnn", "train_no_dx", "train")
            q25, q50, q75 = quantiles(rel)
            rows.append([str(res["n"]), f"**{q50:.2f}** [{q25:.2f}–{q75:.2f}]", f"{100 * (1 - q50):.0f}%"])
        print(table(["batch", "no-dx step / train step (same round), median [IQR]", "time saved"], rows))
        print()
        if "_first_vjp_no_dx" in dx_cost:
            saving = 100 * (dx_cost["_first_vjp"] - dx_cost["_first_vjp_no_dx"]) / dx_cost["_total"]
            print(f"From the breakdown at batch {ARGS.breakdown_batch}: {first}'s vjp takes "
                  f"{ms(dx_cost['_first_vjp'])} ms with dx and {ms(dx_cost['_first_vjp_no_dx'])} ms with "
                  f"need_dx=False, a saving of {saving:.1f}% "
                  f"of the sum of parts" + (f" (the dx parts of the split add up to {ms(dx_cost[first])} ms)."
                                            if first in dx_cost else "."))
    else:
        conv_params = list(inspect.signature(Conv2D).parameters)
        apply_kw = [p for p in inspect.signature(build_fnn().apply).parameters if p not in ("params", "x")]
        print("Not available yet: this fnn has no way to skip the first layer's dx. Conv2D's options are "
              f"{conv_params}, apply's are {apply_kw}, and vjp(dy) takes no option, so fnn's train step above "
              f"computes the input gradient of {first}, which nothing uses; the variant would time the same as the "
              "train row. PyTorch skips that gradient by itself (the input does not require grad); the reference "
              "computes it, as tutorials do.")
        if first in dx_cost:
            print(f"What skipping it could save, from the breakdown at batch {ARGS.breakdown_batch}: the dx part "
                  f"of {first}'s vjp takes {ms(dx_cost[first])} ms, "
                  f"{100 * dx_cost[first] / dx_cost['_total']:.1f}% of the sum of parts.")
    print()


# --- main ---------------------------------------------------------------------------------------

def blas_stall_check() -> str:
    return harness.blas_stall_check(ARGS.threads, (128, 400), (400, 120), "Dense(120)'s forward at batch 128",
                                    "fnn's small products, the Dense layers above all,", SEED)


def main() -> None:
    if ARGS.rss_probe:
        rss_probe(ARGS.rss_probe)
        return
    t_start = time.time()
    global NEED_DX
    net = build_fnn()
    params = net.init(fnn.random.key(SEED), (1, 28, 28))
    NEED_DX = has_need_dx(net, params)

    print("## LeNet-5 on fnn: train step and inference")
    print()
    load0, cpus = print_machine(ARGS.threads, torch, TORCH_NOTE)
    stall = blas_stall_check()
    if stall:
        print(stall)
    print(f"Batch sizes {ARGS.batch_sizes}, {ARGS.warmup} warm-up + {ARGS.repeats} timed steps per contender, "
          f"float32, input (N, 1, 28, 28), SGD lr {LR}."
          + (" --quick: few repeats, the numbers are rough." if ARGS.quick else ""))
    if ARGS.no_reference:
        print("Loop reference: left out (--no-reference).")
    print()

    print("### Step times and ratios")
    print()
    results = [bench_batch(n, net, params) for n in ARGS.batch_sizes]
    report_timings(results)
    print()

    print(f"### fnn per-layer breakdown, batch {ARGS.breakdown_batch}")
    print()
    dx_cost = breakdown(net, params, ARGS.breakdown_batch)

    print("### Train step without the first layer's dx")
    print()
    report_no_dx(dx_cost, results)

    print("### Peak memory of one step (beyond the parameters, optimizer state and data already live)")
    print()
    report_memory(net, params)

    stall = blas_stall_check()
    if stall:
        print(stall.replace("BLAS check:", "BLAS check again at the end:"))
        print()
    print_footer(t_start, load0, cpus)


if __name__ == "__main__":
    main()
