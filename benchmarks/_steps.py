"""What ``lenet.py`` and ``lstm.py`` share beyond the harness: fnn's and PyTorch's train steps on one batch,
the one-step agreement check, the per-layer breakdown of fnn's train step through public apply/vjp, and the
tracemalloc peak of one step."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

import _harness as H
import numpy as np
from _harness import med, ms, table, timed

import fnn


class FnnStep:
    """fnn's train step (apply, softmax_cross_entropy, vjp, sgd update) and inference (``fnn.predict``) on one batch."""

    def __init__(self, net: Any, params: Any, x: Any, labels: Any, lr: float, need_dx: bool = True) -> None:
        self.net, self.x, self.labels, self.need_dx = net, x, labels, need_dx
        self.loss, self.opt = fnn.losses.softmax_cross_entropy, fnn.optim.sgd(lr)
        self.params, self.opt_state = params, self.opt.init(params)

    def train(self, need_dx: bool | None = None) -> float:
        logits, vjp = self.net.apply(self.params, self.x, train=True)
        loss, dlogits = self.loss(logits, self.labels)
        grads, _ = vjp(dlogits, need_dx=self.need_dx if need_dx is None else need_dx)
        self.params, self.opt_state = self.opt.update(self.params, grads, self.opt_state)
        return float(loss)

    def infer(self) -> Any:
        return fnn.predict(self.net, self.params, self.x)  # need_vjp=False: nothing kept for backward


class TorchStep:
    """PyTorch's: zero_grad, forward, F.cross_entropy, backward, SGD.step; inference under no_grad."""

    def __init__(self, model: Any, x: Any, labels: Any, lr: float, forward: Callable[[Any], Any] | None = None) -> None:
        self.model, self.forward, self.opt = model, forward or model, H.torch.optim.SGD(model.parameters(), lr=lr)
        self.x, self.labels = H.torch.from_numpy(x), H.torch.from_numpy(labels)

    def train(self) -> float:
        self.opt.zero_grad()
        loss = H.torch.nn.functional.cross_entropy(self.forward(self.x), self.labels)
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def infer(self) -> Any:
        with H.torch.no_grad():
            return self.forward(self.x)

    def fnn_params(self, net: Any, shape: tuple[int, ...]) -> Any:
        state = {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}
        return fnn.interop.from_torch_state_dict(net, state, shape)[0]


def agreement(losses: dict[str, float], params: dict[str, Any], tol: float = 1e-4) -> str:
    """fnn's loss and parameters after one train step against every other contender's (parameter trees in
    fnn's layout; the largest ``max |a - b| / max |a|`` over their arrays)."""
    parts, ok = [f"loss {losses['fnn']:.6f}"], True
    for name in [n for n in losses if n != "fnn"]:
        rel = fnn.tree.map(lambda u, v: float(np.abs(u - v).max() / max(np.abs(u).max(), 1e-30)), params["fnn"],
                           params[name])
        d_loss, d_par = abs(losses[name] - losses["fnn"]), max(fnn.tree.leaves(rel), default=0.0)
        ok &= d_loss < tol and d_par < tol
        parts.append(f"{name}: |Δloss| {d_loss:.1e}, max rel. |Δparams| {d_par:.1e}")
    return ("agree" if ok else "**DISAGREE**") + " — " + "; ".join(parts)


def breakdown(net: Any, params: Any, x: Any, labels: Any, lr: float, warmup: int, repeats: int, need_dx: bool) -> None:
    """fnn's train step part by part: each sub-layer's public ``apply(train=True)`` and ``vjp`` timed alone on
    the real activations and cotangents of one step, the loss, the update and the whole step, in the same
    rounds. ``need_dx=False``: backward stops at the first layer with parameters, as ``serial``'s does."""
    layers, step = list(net.children), FnnStep(net, params, x, labels, lr, need_dx)
    first = next(i for i, (n, _) in enumerate(layers) if fnn.tree.size(params[n]))
    xs, vjps, dys, grads = [x], [], [None] * len(layers), {n: {} for n, _ in layers}
    for name, layer in layers:
        y, vjp = layer.apply(params[name], xs[-1], train=True)
        xs.append(y)
        vjps.append(vjp)
    dy = step.loss(xs[-1], labels)[1]
    for i in range(len(layers) - 1, -1 if need_dx else first - 1, -1):
        dys[i] = dy
        grads[layers[i][0]], dy = vjps[i](dy, need_dx=need_dx or i > first)
    # (name, kind, output shape, forward, backward); a vjp may be called any number of times.
    parts = [(n, layer.kind, "×".join(map(str, xs[i + 1].shape[1:])),
              partial(layer.apply, params[n], xs[i], train=True),
              partial(vjps[i], dys[i], need_dx=need_dx or i > first) if dys[i] is not None else None)
             for i, (n, layer) in enumerate(layers)]
    parts += [("loss", "softmax_cross_entropy", "", partial(step.loss, xs[-1], labels), None),
              ("update", f"sgd({lr})", "", None, partial(step.opt.update, params, grads, step.opt_state))]
    alt = partial(vjps[first], dys[first], need_dx=not need_dx)
    extra = [("whole", "", "", step.train, None), ("alt", "", "", None, alt)]
    times: dict[str, tuple[list[float], list[float]]] = {p[0]: ([], []) for p in parts + extra}
    for r in range(warmup + repeats):
        step.params = params  # the whole step starts from the same parameters every round
        for name, _, _, fwd, bwd in parts + extra:
            for fn, out in ((fwd, times[name][0]), (bwd, times[name][1])):
                t = timed(fn) if fn else 0.0
                out += [t] if fn and r >= warmup else []
    mid = {n: med(f) + med(b) for n, (f, b) in times.items()}
    low = {n: min(f, default=0.0) + min(b, default=0.0) for n, (f, b) in times.items()}
    tot, tot_min = sum(mid[p[0]] for p in parts), sum(low[p[0]] for p in parts)
    rows = [[n, kind, shape, ms(med(times[n][0])) if fwd else "", ms(med(times[n][1])) if bwd else "", ms(mid[n]),
             f"{100 * mid[n] / tot:.1f}%", ms(low[n]), f"{100 * low[n] / tot_min:.1f}%"]
            for n, kind, shape, fwd, bwd in parts]
    rows.append(["**sum of parts**", "", "", "", "", ms(tot), "100%", ms(tot_min), "100%"])
    rows.append(["whole train step", "same rounds", "", "", "", ms(mid["whole"]), f"{100 * mid['whole'] / tot:.0f}% of "
                 "sum", ms(low["whole"]), f"{100 * low['whole'] / tot_min:.0f}% of sum"])
    print(table(["layer", "kind", "output", "forward ms", "vjp ms", "fwd+vjp ms", "share", "min ms", "share of min"],
                rows, "lllrrrrrr"))
    print(f"\nMedians over {repeats} rounds at batch {len(x)}, each part timed alone; backward " + (
        "computes every dx" if need_dx else f"stops at {layers[first][0]} with need_dx=False, as serial's does")
        + f". {layers[first][0]}'s vjp with need_dx={not need_dx} instead takes {ms(mid['alt'])} ms. Min columns: "
        "each part's minimum, which load disturbs least.\n")


def traced_peak(fn: Callable[[], Any]) -> int:
    """Bytes allocated at the peak of one call of ``fn`` beyond what was live before it (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()  # what this call keeps (new params, caches) is the baseline of the next
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
