"""LSTM and MLP train steps and inference: fnn against PyTorch (CPU), and where fnn's LSTM spends its time.

Run from the repository root (fnn installed with ``pip install -e .``, or not: the script falls
back to the checkout it lives in)::

    python benchmarks/lstm.py                 # batch 128; 5 warm-up + 30 timed steps per contender
    python benchmarks/lstm.py --threads 1     # one thread each: the cleanest library-to-library comparison
    python benchmarks/lstm.py --quick         # a smoke run: few repeats, numbers only indicative

Models, float32, on random inputs with random labels, SGD with lr 0.01:

* LSTM: ``serial(LSTM(128), LastStep(), Dense(10))`` on sequences ``(N, T=28, F=28)``; PyTorch:
  ``nn.LSTM(28, 128, batch_first=True)`` and ``nn.Linear(128, 10)`` on the last step.
* MLP 784-512-512-10: ``serial(Flatten(), Dense(512), ReLU(), Dense(512), ReLU(), Dense(10))`` on
  ``(N, 1, 28, 28)``; PyTorch: the identical ``nn.Sequential``.

A train step is ``apply(train=True)``, ``softmax_cross_entropy``, ``vjp(dlogits, need_dx=False)``
and an ``sgd`` update (PyTorch: ``zero_grad``, forward, ``F.cross_entropy``, ``backward``,
``SGD.step``; its input never requires grad, so neither library computes the input's gradient);
inference is ``apply`` alone (PyTorch: the forward under ``torch.no_grad()``). fnn starts from
PyTorch's initial weights, copied into its layout (``w_ih = weight_ih_l0.T``, ``w_hh =
weight_hh_l0.T``, Dense ``w = Linear.weight.T``), and before timing anything the script checks
that one train step gives both libraries the same loss and the same updated parameters.

The contenders are timed step by step in interleaved rounds (the start of each round rotates),
so that machine noise hits both alike. Reported: median and inter-quartile range of the step
times, and fnn/torch ratios computed within each round, summarised by their median and IQR; the
issue's targets (train steps at most 1.0x PyTorch's time) are judged on those ratios. Then a
breakdown of fnn's LSTM train step: per layer, then inside the LSTM cell, phase by phase (the
cell's code re-enacted with timers, checked to reproduce its results bit for bit), next to
PyTorch's forward/backward split. ``--threads`` (default 2) sets NumPy's BLAS and PyTorch alike.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LR = 0.01
SEED = 0
CLASSES = 10
TARGET = 1.0  # the target for both train steps: fnn time / PyTorch time <= 1.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128, metavar="N", help="batch size of both models (default 128)")
    p.add_argument("--seq-len", type=int, default=28, metavar="T", help="LSTM time steps (default 28)")
    p.add_argument("--features", type=int, default=28, metavar="F", help="LSTM input features (default 28)")
    p.add_argument("--hidden", type=int, default=128, metavar="H", help="LSTM hidden size (default 128)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per contender (default 30; 5 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; 1 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="threads for NumPy's BLAS and for PyTorch (default 2)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-mlp", action="store_true", help="leave the MLP out")
    p.add_argument("--quick", action="store_true", help="few repeats: checks the script works, numbers are rough")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 30
    if args.warmup is None:
        args.warmup = 1 if args.quick else 5
    if min(args.repeats, args.threads, args.batch, args.seq_len, args.features, args.hidden) < 1 or args.warmup < 0:
        p.error("--repeats, --threads, --batch, --seq-len, --features and --hidden must be >= 1, --warmup >= 0")
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
from fnn.layers import LSTM, Dense, Flatten, LastStep, ReLU
from fnn.losses import softmax_cross_entropy
from fnn.optim import sgd

sys.path.insert(0, str(HERE))
import _harness as harness
from _harness import (
    interleave,
    max_rel_diff,
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


# --- the models ---------------------------------------------------------------------------------

def lstm_net() -> fnn.Layer:
    return fnn.serial(LSTM(ARGS.hidden), LastStep(), Dense(CLASSES))


def mlp_net() -> fnn.Layer:
    return fnn.serial(Flatten(), Dense(512), ReLU(), Dense(512), ReLU(), Dense(CLASSES))


def make_data(shape: tuple[int, ...], salt: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, salt, *shape])
    return rng.standard_normal(shape).astype(np.float32), rng.integers(0, CLASSES, shape[0]).astype(np.int64)


def to_numpy(t: Any, transpose: bool = False) -> np.ndarray:
    """A float32 NumPy copy of a tensor (a copy: PyTorch's optimizer updates its tensors in place)."""
    a = t.detach().numpy()
    return np.array(a.T if transpose else a, dtype=np.float32, order="C")


class FnnContender:
    name = "fnn"

    def __init__(self, net: fnn.Layer, params: Any, x: np.ndarray, labels: np.ndarray) -> None:
        self.net, self.x, self.labels = net, x, labels
        self.opt = sgd(LR)
        self.params, self.opt_state = params, self.opt.init(params)
        self._pending: Any = None

    def train(self) -> float:
        logits, vjp = self.net.apply(self.params, self.x, train=True)
        loss, dlogits = softmax_cross_entropy(logits, self.labels)
        grads, _ = vjp(dlogits, need_dx=False)
        self.params, self.opt_state = self.opt.update(self.params, grads, self.opt_state)
        return loss

    def infer(self) -> np.ndarray:
        y, _ = self.net.apply(self.params, self.x)
        return y

    # The train step in two halves, for the forward/backward split.
    def train_forward(self) -> None:
        logits, vjp = self.net.apply(self.params, self.x, train=True)
        self._pending = (vjp, softmax_cross_entropy(logits, self.labels)[1])

    def train_backward(self) -> None:
        vjp, dlogits = self._pending
        grads, _ = vjp(dlogits, need_dx=False)
        self.params, self.opt_state = self.opt.update(self.params, grads, self.opt_state)
        self._pending = None

    def fnn_params(self) -> Any:
        return self.params


class TorchContender:
    name = "torch"

    def __init__(self, model: Any, forward: Callable[[Any], Any], x: np.ndarray, labels: np.ndarray) -> None:
        self.model, self.forward = model, forward
        self.opt = torch.optim.SGD(model.parameters(), lr=LR)
        self.x, self.labels = torch.from_numpy(x), torch.from_numpy(labels)
        self._loss: Any = None

    def train(self) -> float:
        self.opt.zero_grad()
        loss = F.cross_entropy(self.forward(self.x), self.labels)
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def infer(self) -> Any:
        with torch.no_grad():
            return self.forward(self.x)

    def train_forward(self) -> None:
        self.opt.zero_grad()
        self._loss = F.cross_entropy(self.forward(self.x), self.labels)

    def train_backward(self) -> None:
        self._loss.backward()
        self.opt.step()
        self._loss = None


class TorchLSTM(TorchContender):
    def __init__(self, x: np.ndarray, labels: np.ndarray) -> None:
        torch.manual_seed(SEED)
        model = nn.ModuleDict({"lstm": nn.LSTM(ARGS.features, ARGS.hidden, batch_first=True),
                               "head": nn.Linear(ARGS.hidden, CLASSES)})
        super().__init__(model, lambda x: model["head"](model["lstm"](x)[0][:, -1]), x, labels)

    def fnn_params(self) -> Any:
        lstm, head = self.model["lstm"], self.model["head"]
        return {"lstm_0": {"l0": {"w_ih": to_numpy(lstm.weight_ih_l0, True), "w_hh": to_numpy(lstm.weight_hh_l0, True),
                                  "b_ih": to_numpy(lstm.bias_ih_l0), "b_hh": to_numpy(lstm.bias_hh_l0)}},
                "last_step_0": {},
                "dense_0": {"w": to_numpy(head.weight, True), "b": to_numpy(head.bias)}}


class TorchMLP(TorchContender):
    def __init__(self, x: np.ndarray, labels: np.ndarray) -> None:
        torch.manual_seed(SEED)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, CLASSES))
        super().__init__(model, model, x, labels)

    def fnn_params(self) -> Any:
        linears = [m for m in self.model if isinstance(m, nn.Linear)]
        out: dict[str, Any] = {"flatten_0": {}, "relu_0": {}, "relu_1": {}}
        for i, m in enumerate(linears):
            out[f"dense_{i}"] = {"w": to_numpy(m.weight, True), "b": to_numpy(m.bias)}
        return out


def contenders_for(model: str) -> list[Any]:
    """fnn (from PyTorch's initial weights when PyTorch is there) and PyTorch, on the same batch."""
    if model == "lstm":
        net, shape, torch_cls = lstm_net(), (ARGS.batch, ARGS.seq_len, ARGS.features), TorchLSTM
    else:
        net, shape, torch_cls = mlp_net(), (ARGS.batch, 1, 28, 28), TorchMLP
    x, labels = make_data(shape, 1 if model == "lstm" else 2)
    out: list[Any] = []
    if torch is not None:
        out.append(torch_cls(x, labels))
        params = out[0].fnn_params()
        fnn.tree.check_same_structure(net.init(fnn.random.key(SEED), shape[1:]), params, shapes=True)
    else:
        params = net.init(fnn.random.key(SEED), shape[1:])
    return [FnnContender(net, params, x, labels), *out]


# --- correctness check, timing, report ----------------------------------------------------------

def check_one_step(contenders: list[Any]) -> str:
    """One train step of each contender from the same parameters; compare losses and updated params."""
    if len(contenders) == 1:
        return "not checked (no PyTorch)"
    losses = {c.name: c.train() for c in contenders}
    d_loss = abs(losses["fnn"] - losses["torch"])
    d_par = max_rel_diff(contenders[0].fnn_params(), contenders[1].fnn_params())
    ok = d_loss < 1e-4 and d_par < 1e-4
    return (("agree" if ok else "**DISAGREE**") + f" — loss {losses['fnn']:.6f}; torch: |Δloss| {d_loss:.1e}, "
            f"max rel. |Δparams| {d_par:.1e} (float32: differences ~1e-7 to 1e-6 are rounding)")


KINDS = ("train", "infer")
KIND_LABELS = {"train": "train step", "infer": "inference"}


def bench(model: str) -> dict[str, Any]:
    contenders = contenders_for(model)
    check = check_one_step(contenders)
    times = interleave(contenders, KINDS, ARGS.warmup, ARGS.repeats)
    return {"model": model, "check": check, "times": times, "names": [c.name for c in contenders]}


def report(res: dict[str, Any], title: str) -> dict[str, float]:
    """Print the timing tables of one model; return the median fnn/torch ratio per kind."""
    times, names = res["times"], res["names"]
    others = [m for m in names if m != "fnn"]
    rows, medians = [], {}
    for kind in KINDS:
        row = [KIND_LABELS[kind]] + [ms_spread([t for _, t in times[m, kind]]) for m in names]
        for m in others:
            rel = paired_ratios(times, m, kind)
            medians[kind] = quantiles(rel)[1]
            row.append(ratio_spread(rel))
        rows.append(row)
    print(table(["step"] + [f"{m} ms" for m in names] + [f"fnn/{m}" for m in others], rows))
    print()
    print(f"{title}: times are median [inter-quartile range] in ms over {ARGS.repeats} timed steps; ratios are fnn "
          "time / torch time in the same round, median [IQR] over rounds; > 1 means fnn is slower.")
    if others:
        best = {(m, k): min(t for _, t in times[m, k]) for m in names for k in KINDS}
        print("Best-of (minimum) times, which a loaded machine disturbs least: "
              + "; ".join(f"{KIND_LABELS[k]} fnn {ms(best['fnn', k])} ms, torch {ms(best['torch', k])} ms "
                          f"({best['fnn', k] / best['torch', k]:.2f})" for k in KINDS) + ".")
    print(f"One train step from identical parameters, before timing: {res['check']}.")
    print()
    return medians


def verdict(name: str, ratio: float | None, caveat: str) -> str:
    if ratio is None:
        return f"- {name} train step ≤ {TARGET:.1f}x PyTorch: not judged (no PyTorch)"
    return (f"- {name} train step ≤ {TARGET:.1f}x PyTorch: **{'met' if ratio <= TARGET else 'not met'}** "
            f"(median ratio {ratio:.2f} with --threads {ARGS.threads}){caveat}")


# --- breakdown ----------------------------------------------------------------------------------

def layer_breakdown(net: fnn.Layer, params: Any, x: np.ndarray, labels: np.ndarray) -> None:
    """Each sub-layer's apply(train=True) and vjp timed alone on the real activations and cotangents of
    one train step (vjp with need_dx=False at the first layer with parameters and none below it, as
    serial does), plus the loss and the update, next to the whole step, in the same rounds."""
    layers = list(net.children)
    first = next(i for i, (name, _) in enumerate(layers) if fnn.tree.size(params[name]))
    opt = sgd(LR)
    opt_state = opt.init(params)
    xs, vjps = [x], []
    for name, layer in layers:
        y, vjp = layer.apply(params[name], xs[-1], train=True)
        xs.append(y)
        vjps.append(vjp)
    _, dy = softmax_cross_entropy(xs[-1], labels)
    dys: list[Any] = [None] * len(layers)
    grads = {name: {} for name, _ in layers}
    for i in range(len(layers) - 1, first - 1, -1):
        dys[i] = dy
        grads[layers[i][0]], dy = vjps[i](dy, need_dx=i > first)
    fwd: dict[int, list[float]] = defaultdict(list)
    bwd: dict[int, list[float]] = defaultdict(list)
    other: dict[str, list[float]] = defaultdict(list)
    step = FnnContender(net, params, x, labels)
    for r in range(ARGS.warmup + ARGS.repeats):
        keep = r >= ARGS.warmup
        for i, (name, layer) in enumerate(layers):
            t0 = time.perf_counter()
            _, vjp = layer.apply(params[name], xs[i], train=True)
            t1 = time.perf_counter()
            if i >= first:
                vjp(dys[i], need_dx=i > first)
            t2 = time.perf_counter()
            if keep:
                fwd[i].append(t1 - t0)
                if i >= first:
                    bwd[i].append(t2 - t1)
        t_loss = timed(lambda: softmax_cross_entropy(xs[-1], labels))
        t_upd = timed(lambda: opt.update(params, grads, opt_state))
        step.params = params  # the same parameters every round
        t_whole = timed(step.train)
        if keep:
            other["loss"].append(t_loss)
            other["update"].append(t_upd)
            other["whole"].append(t_whole)

    def med(v: Sequence[float]) -> float:
        return quantiles(v)[1] if v else 0.0

    total = sum(med(fwd[i]) + med(bwd[i]) for i in range(len(layers))) + med(other["loss"]) + med(other["update"])
    rows = []
    for i, (name, layer) in enumerate(layers):
        f_, b_ = med(fwd[i]), med(bwd[i])
        rows.append([name, layer.kind, "×".join(map(str, xs[i + 1].shape[1:])), ms(f_),
                     ms(b_) if bwd[i] else "(not run)", ms(f_ + b_), f"{100 * (f_ + b_) / total:.1f}%"])
    t_loss, t_upd = med(other["loss"]), med(other["update"])
    rows.append(["loss", "softmax_cross_entropy", "", ms(t_loss), "", ms(t_loss), f"{100 * t_loss / total:.1f}%"])
    rows.append(["update", f"sgd({LR}).update", "", "", ms(t_upd), ms(t_upd), f"{100 * t_upd / total:.1f}%"])
    rows.append(["**sum of parts**", "", "", ms(sum(med(fwd[i]) for i in fwd) + t_loss),
                 ms(sum(med(bwd[i]) for i in bwd) + t_upd), ms(total), "100%"])
    rows.append(["whole train step", "measured in the same rounds", "", "", "", ms(med(other["whole"])),
                 f"{100 * med(other['whole']) / total:.0f}% of sum"])
    print(table(["layer", "kind", "output", "forward ms", "vjp ms", "fwd+vjp ms", "share"], rows, "lllrrrr"))
    print()


def lstm_cell_internals() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    try:
        from fnn.layers.recurrent import _lstm_backward, _lstm_forward
    except ImportError:
        return None
    return _lstm_forward, _lstm_backward


class Ticker:
    """Adds the time since the previous tick to a named part."""

    def __init__(self, parts: dict[str, float]) -> None:
        self.parts, self.t = parts, time.perf_counter()

    def __call__(self, part: str) -> None:
        now = time.perf_counter()
        self.parts[part] += now - self.t
        self.t = now


# The parts of the cell, in order: (key, phase, what).
CELL_PARTS = [
    ("f_setup", "forward", "setup: stacked weights [w_ih; b_ih + b_hh; w_hh] (sigmoid rows halved), stacked "
                           "inputs [x_t; 1; ·] (x to batch-last), state buffers"),
    ("f_product", "forward loop", "gate product w @ [x_t; 1; h_{t-1}]: one BLAS call per step, input projection "
                                  "and bias included"),
    ("f_gates", "forward loop", "gate nonlinearities: one tanh over the four gates, affine fix-up of i, f, o"),
    ("f_state", "forward loop", "c_t = f c_{t-1} + i g, tanh(c_t), h_t = o tanh(c_t)"),
    ("b_setup", "backward", "setup: dh_t from dy to batch-last (one transposing copy), buffers"),
    ("b_gates", "backward loop", "gate gradients through c_t, tanh and the sigmoids (elementwise)"),
    ("b_weights", "backward loop", "weight-gradient products dw += [x_t; 1; h_{t-1}] d_tᵀ (dw_ih, db, dw_hh "
                                   "at once): one BLAS call and one add per step"),
    ("b_dh", "backward loop", "hidden-state product dh_{t-1} = w_hh d_t: one BLAS call per step"),
]
PRODUCTS = ("f_product", "b_weights", "b_dh")


def cell_forward_parts(p: dict[str, np.ndarray], xt: np.ndarray, states: tuple[np.ndarray, ...],
                       tick: Ticker) -> tuple[np.ndarray, Any]:
    """fnn/layers/recurrent.py's _lstm_forward, re-enacted statement for statement with timers."""
    h0, c0 = states
    steps, n, feat = xt.shape
    hid = h0.shape[-1]
    w = np.concatenate([p["w_ih"], (p["b_ih"] + p["b_hh"])[None], p["w_hh"]]).T
    w[:2 * hid] *= 0.5
    w[3 * hid:] *= 0.5
    xh = np.empty((steps + 1, feat + 1 + hid, n), xt.dtype)
    xh[:steps, :feat] = xt.transpose(0, 2, 1)
    xh[:steps, feat] = 1
    xh[steps, :feat + 1] = 0
    xh[0, feat + 1:] = h0.T
    acts = np.empty((steps, 4 * hid, n), xt.dtype)
    cs = np.empty((steps, hid, n), xt.dtype)
    tcs = np.empty_like(cs)
    c0t = np.ascontiguousarray(c0.T)
    ig = np.empty((hid, n), xt.dtype)
    c = c0t
    tick("f_setup")
    for t in range(steps):
        np.matmul(w, xh[t], out=acts[t])
        tick("f_product")
        a = np.tanh(acts[t], out=acts[t])
        for s in (a[:2 * hid], a[3 * hid:]):
            s *= 0.5
            s += 0.5
        tick("f_gates")
        i, f, g, o = a[:hid], a[hid:2 * hid], a[2 * hid:3 * hid], a[3 * hid:]
        c = np.multiply(f, c, out=cs[t])
        c += np.multiply(i, g, out=ig)
        np.tanh(c, out=tcs[t])
        np.multiply(o, tcs[t], out=xh[t + 1, feat + 1:])
        tick("f_state")
    return xh[1:, feat + 1:].transpose(0, 2, 1), (xh, c0t, acts, cs, tcs)


def cell_backward_parts(p: dict[str, np.ndarray], cache: Any, dhs: np.ndarray, tick: Ticker) -> Any:
    """fnn/layers/recurrent.py's _lstm_backward (need_dx=False), re-enacted with timers."""
    xh, c0t, acts, cs, tcs = cache
    steps, g4, n = acts.shape
    hid = g4 // 4
    feat = xh.shape[1] - 1 - hid
    dhs = np.ascontiguousarray(dhs.transpose(0, 2, 1))
    d = np.empty((g4, n), acts.dtype)
    dh, dc = np.zeros((hid, n), acts.dtype), np.zeros((hid, n), acts.dtype)
    s1, s2 = np.empty((hid, n), acts.dtype), np.empty((2 * hid, n), acts.dtype)
    dw = np.zeros((xh.shape[1], g4), acts.dtype)
    dw_t = np.empty_like(dw)
    w_hh = p["w_hh"]
    tick("b_setup")
    for t in range(steps - 1, -1, -1):
        a, tc = acts[t], tcs[t]
        i, f, g, o = a[:hid], a[hid:2 * hid], a[2 * hid:3 * hid], a[3 * hid:]
        dh += dhs[t]
        np.multiply(dh, tc, out=d[3 * hid:])
        np.multiply(tc, tc, out=s1)
        np.subtract(1, s1, out=s1)
        s1 *= o
        s1 *= dh
        dc += s1
        np.multiply(dc, g, out=d[:hid])
        np.multiply(dc, cs[t - 1] if t else c0t, out=d[hid:2 * hid])
        np.multiply(dc, i, out=d[2 * hid:3 * hid])
        dc *= f
        np.subtract(1, a[:2 * hid], out=s2)
        s2 *= a[:2 * hid]
        d[:2 * hid] *= s2
        np.subtract(1, o, out=s1)
        s1 *= o
        d[3 * hid:] *= s1
        np.multiply(g, g, out=s1)
        np.subtract(1, s1, out=s1)
        d[2 * hid:3 * hid] *= s1
        tick("b_gates")
        dw += np.matmul(xh[t], d.T, out=dw_t)
        tick("b_weights")
        np.matmul(w_hh, d, out=dh)
        tick("b_dh")
    grads = {"w_ih": dw[:feat], "w_hh": dw[feat + 1:], "b_ih": dw[feat], "b_hh": dw[feat].copy()}
    return grads, None, (dh.T, dc.T)


def same_arrays(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(same_arrays(u, v) for u, v in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_arrays(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and bool(np.array_equal(a, b))
    return a == b


def cell_breakdown(net: fnn.Layer, params: Any, x: np.ndarray, labels: np.ndarray,
                   torch_side: Any) -> None:
    """The LSTM cell phase by phase (re-enacted, checked bit for bit against the library), the library's
    cell functions and the whole layer in the same rounds, and both libraries' forward/backward split."""
    internals = lstm_cell_internals()
    name = net.children[0][0]
    p = params[name]["l0"]
    n, steps, feat = x.shape
    hid = ARGS.hidden
    xt = x.transpose(1, 0, 2)
    zeros = (np.zeros((n, hid), x.dtype), np.zeros((n, hid), x.dtype))
    layer = net.children[0][1]
    y, _ = layer.apply(params[name], x, train=True)
    # The LSTM's real cotangent in this model: the last step's share of dlogits, zeros elsewhere.
    rest = fnn.serial(*net.children[1:])
    rest_params = {k: params[k] for k, _ in net.children[1:]}
    logits, rest_vjp = rest.apply(rest_params, y, train=True)
    _, dy = rest_vjp(softmax_cross_entropy(logits, labels)[1])
    dhs = dy.transpose(1, 0, 2)

    usable = internals is not None
    why = "fnn.layers.recurrent has no _lstm_forward/_lstm_backward"
    if usable:
        lib_fwd, lib_bwd = internals
        try:
            lib_hs, lib_cache = lib_fwd(p, xt, zeros)
            lib_out = lib_bwd(p, lib_cache, dhs, False)
            scratch: dict[str, float] = defaultdict(float)
            hs, cache = cell_forward_parts(p, xt, zeros, Ticker(scratch))
            out = cell_backward_parts(p, cache, dhs, Ticker(scratch))
            usable = same_arrays(hs, lib_hs) and same_arrays(cache, lib_cache) and same_arrays(out, lib_out)
            why = "the re-enactment no longer reproduces the library's results bit for bit (its code changed)"
        except Exception as err:  # noqa: BLE001 - a changed signature or cache layout
            usable, why = False, f"re-enacting the cell failed ({type(err).__name__}: {err}): its code changed"
    if not usable:
        print(f"Cell breakdown skipped: {why}.")
        print()

    parts: dict[str, list[float]] = defaultdict(list)
    fnn_step = FnnContender(net, params, x, labels)
    for r in range(ARGS.warmup + ARGS.repeats):
        keep = r >= ARGS.warmup
        timings: dict[str, float] = {}
        if usable:
            acc: dict[str, float] = defaultdict(float)
            _, cache = cell_forward_parts(p, xt, zeros, Ticker(acc))
            cell_backward_parts(p, cache, dhs, Ticker(acc))
            timings.update(acc)
            t0 = time.perf_counter()
            _, lib_cache = lib_fwd(p, xt, zeros)
            t1 = time.perf_counter()
            lib_bwd(p, lib_cache, dhs, False)
            t2 = time.perf_counter()
            timings.update(lib_forward=t1 - t0, lib_backward=t2 - t1)
        t0 = time.perf_counter()
        _, vjp = layer.apply(params[name], x, train=True)
        t1 = time.perf_counter()
        vjp(dy, need_dx=False)
        t2 = time.perf_counter()
        timings.update(layer_apply=t1 - t0, layer_vjp=t2 - t1)
        for side, c in (("fnn", fnn_step), ("torch", torch_side)):
            if c is None:
                continue
            if side == "fnn":
                fnn_step.params = params
            t0 = time.perf_counter()
            c.train_forward()
            t1 = time.perf_counter()
            c.train_backward()
            t2 = time.perf_counter()
            timings.update({f"{side}_fwd": t1 - t0, f"{side}_bwd": t2 - t1})
        if keep:
            for k, v in timings.items():
                parts[k].append(v)

    def med(k: str) -> float:
        return quantiles(parts[k])[1]

    if usable:
        total = sum(med(k) for k, _, _ in CELL_PARTS)
        flops = {"f_product": 2 * 4 * hid * (feat + 1 + hid) * n * steps,
                 "b_weights": 2 * (feat + 1 + hid) * 4 * hid * n * steps, "b_dh": 2 * hid * 4 * hid * n * steps}
        rows = []
        for k, phase, what in CELL_PARTS:
            rate = f"{flops[k] / med(k) / 1e9:.0f}" if k in flops else ""
            rows.append([phase, what, ms(med(k)), f"{100 * med(k) / total:.1f}%", rate])
        rows.append(["", "**sum of parts** (re-enactment)", ms(total), "100%", ""])
        rows.append(["", "_lstm_forward + _lstm_backward(need_dx=False), the library's own, timed whole",
                     f"{ms(med('lib_forward'))} + {ms(med('lib_backward'))}", "", ""])
        rows.append(["", "LSTM layer: apply(train=True) + vjp(need_dx=False) (adds argument checks, the "
                         "output's copy to (N, T, H))", f"{ms(med('layer_apply'))} + {ms(med('layer_vjp'))}", "", ""])
        print(table(["phase", "what", "ms", "share", "GFLOP/s"], rows, "llrrr"))
        print()
        blas = sum(med(k) for k in PRODUCTS)
        proj = (feat + 1) / (feat + 1 + hid)
        print(f"Medians over {ARGS.repeats} rounds, batch {n}, T = {steps}, F = {feat}, H = {hid}, "
              f"{ARGS.threads} BLAS thread(s). BLAS products: {ms(blas)} ms, {100 * blas / total:.0f}% of the "
              f"cell; elementwise NumPy and copies: {ms(total - blas)} ms, {100 * (total - blas) / total:.0f}%. "
              f"The input projection has no phase of its own: it is the rows [x_t; 1] of each step's product, "
              f"{100 * proj:.0f}% of its flops (about {ms(proj * med('f_product'))} ms); likewise dw_ih and db are "
              f"rows of the weight-gradient product. Per step: product {ms(med('f_product') / steps)} ms forward, "
              f"{ms((med('b_weights') + med('b_dh')) / steps)} ms backward; elementwise "
              f"{ms((med('f_gates') + med('f_state')) / steps)} ms forward, {ms(med('b_gates') / steps)} ms "
              f"backward.")
        print()
    rows = [["fnn", ms(med("fnn_fwd")), ms(med("fnn_bwd")), ms(med("fnn_fwd") + med("fnn_bwd"))]]
    if torch_side is not None:
        rows.append(["torch", ms(med("torch_fwd")), ms(med("torch_bwd")), ms(med("torch_fwd") + med("torch_bwd"))])
        fnn_sum, torch_sum = med("fnn_fwd") + med("fnn_bwd"), med("torch_fwd") + med("torch_bwd")
        rows.append(["fnn/torch", f"{med('fnn_fwd') / med('torch_fwd'):.2f}",
                     f"{med('fnn_bwd') / med('torch_bwd'):.2f}", f"{fnn_sum / torch_sum:.2f}"])
    print(table(["", "forward + loss ms", "backward + update ms", "sum"], rows))
    print()
    print("The train step split in two, in the same rounds: fnn's apply(train=True) + softmax_cross_entropy, then "
          "vjp(need_dx=False) + sgd update; PyTorch's zero_grad + forward + F.cross_entropy, then backward + "
          "SGD.step" + (" (on CPU its LSTM runs oneDNN's fused RNN kernels forward and backward)."
                        if torch_side is not None else "."))
    print()


def page_faults(contenders: list[Any]) -> str:
    """Minor page faults per step (fresh memory touched for the first time), median of 10 steps of each kind."""
    out = []
    for kind in KINDS:
        for c in contenders:
            step = getattr(c, kind)
            step()
            counts = []
            for _ in range(10):
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                step()
                counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            out.append(f"{KIND_LABELS[kind]} {c.name} {int(np.median(counts))}")
    return ", ".join(out)


# --- main ---------------------------------------------------------------------------------------

def blas_stall_check() -> str:
    hid, feat, n = ARGS.hidden, ARGS.features, ARGS.batch
    return harness.blas_stall_check(ARGS.threads, (4 * hid, feat + 1 + hid), (feat + 1 + hid, n),
                                    "the LSTM's per-step gate product", f"fnn's per-step products ({ARGS.seq_len} "
                                    f"forward and {2 * ARGS.seq_len} backward per LSTM train step)", SEED)


def main() -> None:
    t_start = time.time()
    print("## LSTM and MLP on fnn: train step and inference against PyTorch")
    print()
    load0, cpus = print_machine(ARGS.threads, torch, TORCH_NOTE)
    stall = blas_stall_check()
    if stall:
        print(stall)
    print(f"Batch {ARGS.batch}, float32, SGD lr {LR}, {ARGS.warmup} warm-up + {ARGS.repeats} timed steps per "
          f"contender and kind." + (" --quick: few repeats, the numbers are rough." if ARGS.quick else ""))
    print()

    print(f"### LSTM({ARGS.features} → {ARGS.hidden}), T = {ARGS.seq_len}, then LastStep and Dense({CLASSES})")
    print()
    lstm_res = bench("lstm")
    lstm_ratio = report(lstm_res, "LSTM")
    mlp_ratio: dict[str, float] = {}
    if not ARGS.no_mlp:
        print("### MLP 784-512-512-10 on (N, 1, 28, 28)")
        print()
        mlp_ratio = report(bench("mlp"), "MLP")

    print(f"### Where fnn's LSTM train step goes, batch {ARGS.batch}")
    print()
    contenders = contenders_for("lstm")
    fnn_side, torch_side = contenders[0], (contenders[1] if len(contenders) > 1 else None)
    net, params = fnn_side.net, fnn_side.params
    layer_breakdown(net, params, fnn_side.x, fnn_side.labels)
    print(f"Per layer, medians over {ARGS.repeats} rounds, each part timed alone on the real activations and "
          f"cotangents. Inside the LSTM layer, phase by phase (the cell's code re-enacted with timers between "
          f"phases, first checked to reproduce _lstm_forward and _lstm_backward bit for bit):")
    print()
    cell_breakdown(net, params, fnn_side.x, fnn_side.labels, torch_side)
    print(f"Minor page faults per step, each kind run 10 times in a row (fresh memory touched for the first "
          f"time: whether glibc hands large freed arrays back to the system, to fault them in again on the next "
          f"step at roughly a microsecond per 4 KiB page, depends on the sizes and order of what a loop allocates "
          f"and frees): {page_faults(contenders)}.")
    print()

    stall_end = blas_stall_check()
    busy = [why for flagged, why in ((load0 is not None and load0[0] > cpus, "the machine was oversubscribed"),
                                     ("**Threaded BLAS is stalling" in stall + stall_end, "threaded BLAS stalled"))
            if flagged]
    caveat = (f" — *unreliable: {' and '.join(busy)}; compare a `--threads 1` run*"
              if busy and ARGS.threads > 1 else "")
    print("### Targets")
    print()
    print(verdict("LSTM", lstm_ratio.get("train"), caveat))
    if not ARGS.no_mlp:
        print(verdict("MLP", mlp_ratio.get("train"), caveat))
    print()
    if stall_end:
        print(stall_end.replace("BLAS check:", "BLAS check again at the end:"))
        print()
    print_footer(t_start, load0, cpus)


if __name__ == "__main__":
    main()
