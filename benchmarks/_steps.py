"""What ``lenet.py``, ``lstm.py``, ``transformer.py`` and ``char_gpt.py`` share beyond the harness: fnn's and PyTorch's
train steps on one batch, a PyTorch twin loaded with fnn's parameters, the one-step agreement check, the per-layer
breakdown of fnn's train step through public apply/vjp (the model's top-level layers, or every leaf through
``serial``, ``residual`` and ``TransformerEncoderLayer``), and the tracemalloc peak of one step."""

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
from fnn.layers.transformer import encoder_body

Part = tuple[str, str, str, Callable[[], Any] | None, Callable[[], Any] | None]  # name, kind, output, fwd, vjp


class FnnStep:
    """fnn's train step (apply, softmax_cross_entropy, vjp, optimizer update: ``sgd(lr)`` unless ``opt``) and
    inference (``fnn.predict``) on one batch. With ``key`` (for Dropout), step ``i`` applies with
    ``fnn.random.fold_in(key, i)``, as a training loop draws a fresh key per step."""

    def __init__(self, net: Any, params: Any, x: Any, labels: Any, lr: float, need_dx: bool = True, *,
                 opt: Any = None, key: Any = None) -> None:
        self.net, self.x, self.labels, self.need_dx, self.key, self.count = net, x, labels, need_dx, key, 0
        self.loss, self.opt = fnn.losses.softmax_cross_entropy, opt or fnn.optim.sgd(lr)
        self.params, self.opt_state = params, self.opt.init(params)

    def next_key(self) -> Any:
        if self.key is None:
            return None
        self.count += 1
        return fnn.random.fold_in(self.key, self.count - 1)

    def train(self, need_dx: bool | None = None) -> float:
        logits, vjp = self.net.apply(self.params, self.x, train=True, key=self.next_key())
        loss, dlogits = self.loss(logits, self.labels)
        grads, _ = vjp(dlogits, need_dx=self.need_dx if need_dx is None else need_dx)
        self.params, self.opt_state = self.opt.update(self.params, grads, self.opt_state)
        return float(loss)

    def infer(self) -> Any:
        return fnn.predict(self.net, self.params, self.x)  # need_vjp=False: nothing kept for backward


def load_twin(twin: Any, net: Any, params: Any, shape: Any) -> Any:
    """The PyTorch module ``twin`` with fnn's ``params`` of ``net`` copied in through ``fnn.interop``."""
    state = fnn.interop.to_torch_state_dict(net, params, shape, template=twin.state_dict())
    twin.load_state_dict({k: H.torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return twin


class TorchStep:
    """PyTorch's: zero_grad, forward, F.cross_entropy, backward, ``SGD.step`` (or ``opt(model.parameters())``'s);
    inference under no_grad, in eval mode (dropout off) with ``eval_infer``, the model back in train mode after."""

    def __init__(self, model: Any, x: Any, labels: Any, lr: float, forward: Callable[[Any], Any] | None = None, *,
                 opt: Callable[[Any], Any] | None = None, eval_infer: bool = False) -> None:
        self.model, self.forward, self.eval_infer = model, forward or model, eval_infer
        self.opt = opt(model.parameters()) if opt else H.torch.optim.SGD(model.parameters(), lr=lr)
        self.x, self.labels = H.torch.from_numpy(x), H.torch.from_numpy(labels)

    def train(self) -> float:
        self.opt.zero_grad()
        loss = H.torch.nn.functional.cross_entropy(self.forward(self.x), self.labels)
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def infer(self) -> Any:
        if not self.eval_infer:
            with H.torch.no_grad():
                return self.forward(self.x)
        self.model.eval()
        try:
            with H.torch.no_grad():
                return self.forward(self.x)
        finally:
            self.model.train()

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


def _top_parts(net: Any, params: Any, x: Any, labels: Any, step: FnnStep, need_dx: bool
               ) -> tuple[list[Part], Any, Any, Part]:
    """The parts of :func:`breakdown` for ``net``'s top-level layers; the logits, the gradients and the first
    layer with parameters' vjp with the other ``need_dx``."""
    layers = list(net.children)
    first = next(i for i, (n, _) in enumerate(layers) if fnn.tree.size(params[n]))
    keys = [fnn.random.fold_in(step.key, i) if step.key is not None else None for i in range(len(layers))]
    xs, vjps, dys, grads = [x], [], [None] * len(layers), {n: {} for n, _ in layers}
    for (name, layer), k in zip(layers, keys):
        y, vjp = layer.apply(params[name], xs[-1], train=True, key=k)
        xs.append(y)
        vjps.append(vjp)
    dy = step.loss(xs[-1], labels)[1]
    for i in range(len(layers) - 1, -1 if need_dx else first - 1, -1):
        dys[i] = dy
        grads[layers[i][0]], dy = vjps[i](dy, need_dx=need_dx or i > first)
    # (name, kind, output shape, forward, backward); a vjp may be called any number of times.
    parts: list[Part] = [(n, layer.kind, "×".join(map(str, xs[i + 1].shape[1:])),
                          partial(layer.apply, params[n], xs[i], train=True, key=keys[i]),
                          partial(vjps[i], dys[i], need_dx=need_dx or i > first) if dys[i] is not None else None)
                         for i, (n, layer) in enumerate(layers)]
    alt = (layers[first][0], "", "", None, partial(vjps[first], dys[first], need_dx=not need_dx))
    return parts, xs[-1], grads, alt


def _leaf_ops(layer: Any, params: Any, path: tuple[str, ...]) -> list[tuple[str, tuple[str, ...], Any, Any]]:
    """``layer`` as a flat program: ``("leaf", path, layer, params)``, and ``("begin"|"end", path, ...)`` around
    a residual's inner layers; through ``serial``, ``residual`` and ``TransformerEncoderLayer`` (its body)."""
    family = layer.kind.split("(")[0]
    if hasattr(layer, "body_for"):
        return _leaf_ops(encoder_body(layer, params), params, path)
    if family == "serial":
        return [op for name, child in layer.children for op in _leaf_ops(child, params[name], (*path, name))]
    if family == "residual":
        return [("begin", path, None, None), *_leaf_ops(layer.children[0][1], params["inner"], path),
                ("end", path, None, None)]
    return [("leaf", path, layer, params)]


def _flat_parts(net: Any, params: Any, x: Any, labels: Any, step: FnnStep, need_dx: bool
                ) -> tuple[list[Part], Any, Any, Part]:
    """As :func:`_top_parts`, for every leaf layer (see :func:`_leaf_ops`) and every residual's sum: the forward
    ``skip + inner(x)`` and the backward ``dinner + dskip``, each timed as one ``np.add``."""
    ops = _leaf_ops(net, params, ())
    first = next(i for i, op in enumerate(ops) if op[0] == "leaf" and fnn.tree.size(op[3]))
    stops = not need_dx and all(op[0] == "leaf" for op in ops[:first])  # else the dx reaches a residual sum
    keys = [fnn.random.fold_in(step.key, i) if step.key is not None else None for i in range(len(ops))]
    h, stack, ins, vjps, sums = x, [], {}, {}, {}
    for i, (op, path, layer, p) in enumerate(ops):
        if op == "leaf":
            ins[i] = h
            h, vjps[i] = layer.apply(p, h, train=True, key=keys[i])
        elif op == "begin":
            stack.append(h)
        else:
            skip = stack.pop()
            sums[path] = [partial(np.add, skip, h), None, "×".join(map(str, h.shape[1:]))]
            h = skip + h
    logits, dlogits = h, step.loss(h, labels)[1]
    dy, dys = dlogits, {}
    for i in range(len(ops) - 1, first - 1 if stops else -1, -1):
        op, path = ops[i][:2]
        if op == "leaf":
            dys[i] = (dy, not stops or i > first)
            dy = vjps[i](dy, need_dx=dys[i][1])[1]
        elif op == "end":
            stack.append(dy)  # the skip's cotangent; the inner layers' is dy too
        else:
            dskip = stack.pop()
            sums[path][1] = partial(np.add, dy, dskip)
            dy = dy + dskip
    parts: list[Part] = []
    for i, (op, path, layer, p) in enumerate(ops):
        name = "/".join(path) or "model"
        if op == "leaf":
            fwd = partial(layer.apply, p, ins[i], train=True, key=keys[i])
            parts.append((name, layer.kind, "×".join(map(str, fwd()[0].shape[1:])), fwd,
                          partial(vjps[i], dys[i][0], need_dx=dys[i][1]) if i in dys else None))
        elif op == "end":
            parts.append((f"{name}/+", "residual sum", sums[path][2], sums[path][0], sums[path][1]))
    _, vjp = net.apply(params, x, train=True, key=step.key)
    grads = vjp(dlogits, need_dx=not stops)[0]
    alt = ("/".join(ops[first][1]), "", "", None, partial(vjps[first], dys[first][0], need_dx=stops))
    return parts, logits, grads, alt


def breakdown(net: Any, params: Any, x: Any, labels: Any, lr: float, warmup: int, repeats: int, need_dx: bool, *,
              opt: Any = None, opt_label: str = "", key: Any = None, flat: bool = False) -> None:
    """fnn's train step part by part: each sub-layer's public ``apply(train=True)`` and ``vjp`` timed alone on
    the real activations and cotangents of one step, the loss, the update and the whole step, in the same
    rounds. ``need_dx=False``: backward stops at the first layer with parameters, as ``serial``'s does. The
    parts are ``net``'s top-level layers, or with ``flat`` its every leaf layer and residual sum (then also a
    table of the shares by kind of layer). ``opt`` (labelled ``opt_label``) replaces ``sgd(lr)``; ``key`` is
    the Dropout key (each part gets ``fold_in(key, i)``)."""
    step = FnnStep(net, params, x, labels, lr, need_dx, opt=opt, key=key)
    parts, logits, grads, alt = (_flat_parts if flat else _top_parts)(net, params, x, labels, step, need_dx)
    first = alt[0]
    parts += [("loss", "softmax_cross_entropy", "", partial(step.loss, logits, labels), None),
              ("update", opt_label or f"sgd({lr})", "", None, partial(step.opt.update, params, grads, step.opt_state))]
    extra: list[Part] = [("whole", "", "", step.train, None), ("alt", "", "", None, alt[4])]
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
        "computes every dx" if need_dx else f"stops at {first} with need_dx=False, as serial's does")
        + f". {first}'s vjp with need_dx={not need_dx} instead takes {ms(mid['alt'])} ms. Min columns: "
        "each part's minimum, which load disturbs least.\n")
    if flat:
        kinds: dict[str, list[str]] = {}
        for n, kind, *_ in parts:
            kinds.setdefault(kind.split("(")[0], []).append(n)
        rows = [[k, str(len(ns)), ms(sum(mid[n] for n in ns)), f"{100 * sum(mid[n] for n in ns) / tot:.1f}%",
                 ms(sum(low[n] for n in ns)), f"{100 * sum(low[n] for n in ns) / tot_min:.1f}%"]
                for k, ns in sorted(kinds.items(), key=lambda kv: -sum(mid[n] for n in kv[1]))]
        print(table(["kind", "parts", "fwd+vjp ms", "share", "min ms", "share of min"], rows))
        print("\nThe same parts summed by kind of layer, largest first.\n")


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
