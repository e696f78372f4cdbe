"""Recurrent layers (RNN, LSTM, GRU) on batch-first or time-major sequences, and sequence reductions.

By default sequences are batch first, ``(N, T, F)``: batch, time, features. A recurrent
layer returns the whole output sequence ``(N, T, H)`` (``(N, T, 2 * H)`` when
bidirectional, the forward direction first) so that it composes in ``serial``;
:func:`LastStep` and :func:`MeanOverTime` turn a batch-first sequence into features.
``batch_first=False`` (PyTorch's default layout; fnn's default is ``True``) makes a
recurrent layer take a time-major ``(T, N, F)`` input and return ``(T, N, H)``
(``(T, N, 2 * H)``), with ``dx`` in the same ``(T, N, F)`` layout. Either way
``init(key, shape)`` takes one sequence's shape without the batch axis, ``(T, F)``
(only ``F`` sets the params), and per example the output is ``(T, H)``. fnn's shape
tools build batch-first example batches, ``(1, T, F)``: for a time-major layer
``fnn.output_shape`` and ``serial``'s init still get ``(T, H)`` from an array shape
(the batch reads as ``T`` sequences of one step), but not from the
``((T, F), (L * D, H), ...)`` shape of the tuple form, and ``fnn.summary`` and
``check_layer``, which take axis 0 for the batch, do not describe a time-major layer.

Initial states are zeros unless the input is a tuple: ``(x, h0)`` for RNN and
GRU, ``(x, h0, c0)`` for LSTM, with states ``(N, num_layers * num_directions, H)``
indexed ``layer * num_directions + direction`` (PyTorch's order, batch first),
whatever ``batch_first`` is (PyTorch's states are ``(num_layers * num_directions, N, H)``).
``dx`` is then the matching tuple, so the vjp returns the states' gradients too.

Params hold one entry per layer and direction: ``"l0"``, ``"l0_reverse"``,
``"l1"``, … each ``{"w_ih": (F_in, G * H), "w_hh": (H, G * H), "b_ih": (G * H,),
"b_hh": (G * H,)}`` with ``G`` gates in PyTorch's order (LSTM: input, forget,
cell, output; GRU: reset, update, new). The weights are PyTorch's
``weight_ih_l0`` and ``weight_hh_l0`` transposed (so the forward is ``x @ w``);
every parameter starts uniform in ``(-1/sqrt(H), 1/sqrt(H))`` as in PyTorch.

Each step does one matrix product for all gates; RNN and GRU compute the input
projection for all time steps first, in one product. The LSTM works batch-last
inside (every per-step array is ``(rows, N)``, so each gate is a contiguous block
of rows, which NumPy's elementwise loops run through up to three times faster
than column slices) and folds the input projection and the biases into the
step's product: stacked weights ``[w_ih; b_ih + b_hh; w_hh]`` times the stacked
input ``[x_t; 1; h_{t-1}]``. Its backward likewise gets ``dw_ih``, the bias
gradient and ``dw_hh`` from one product per step. The vjp is backpropagation
through time over the values cached by the forward, never recomputing it; with
``need_dx=False`` the first layer skips the input's gradient.

The maths is module-level: each cell's forward and backward, then
:func:`recurrent_forward` and :func:`recurrent_backward` for a stack of layers and
directions (and ``last_step_*``, ``mean_over_time_*`` for the reductions); the
constructors validate their arguments, check the input, and close over the cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import random as _random
from fnn import validate
from fnn.core import Layer, Options, check_cotangent, check_params, layer_kind, like, make_layer, parameterless

__all__ = ["RNN", "LSTM", "GRU", "LastStep", "MeanOverTime", "recurrent_forward", "recurrent_backward",
           "last_step_forward", "last_step_backward", "mean_over_time_forward", "mean_over_time_backward"]

Arr = np.ndarray


def _sigmoid(a: Arr, out: Arr | None = None) -> Arr:
    """Logistic function via tanh (never overflows), optionally in place."""
    out = np.multiply(a, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


# Each cell runs one direction of one layer over time-major input ``xt: (T, N, F)``.
# forward(p, xt, states) -> (hs: (T, N, H), cache); backward(p, cache, dhs, need_dx) -> (grads, dxt, dstates),
# dxt None when not need_dx. hs may be a view of the cell's cache (LSTM: of its batch-last
# storage); it is only read, and the layer's output is a fresh copy.


def _project(p: dict[str, Arr], xt: Arr, bias: Arr) -> tuple[Arr, Arr]:
    t, n, f = xt.shape
    x2 = xt.reshape(t * n, f)
    return x2, (x2 @ p["w_ih"] + bias).reshape(t, n, p["w_ih"].shape[1])  # explicit: N may be 0


def _input_grads(p: dict[str, Arr], x2: Arr, dpre: Arr, shape: tuple[int, ...], need_dx: bool
                 ) -> tuple[Arr, Arr | None]:
    d2 = dpre.reshape(-1, dpre.shape[-1])
    return x2.T @ d2, (d2 @ p["w_ih"].T).reshape(shape) if need_dx else None


def _batch_first(seq: Arr) -> Arr:
    """A time-major ``(T, N, F)`` sequence (possibly a view) as a new contiguous ``(N, T, F)``
    array, copied one step at a time: as fast as one transposing copy for contiguous input,
    and several times faster for the LSTM's batch-last storage."""
    out = np.empty((seq.shape[1], seq.shape[0], seq.shape[2]), seq.dtype)
    for t in range(len(seq)):
        out[:, t] = seq[t]
    return out


def _prev(h0: Arr, hs: Arr) -> Arr:
    """The state entering each step, ``(T * N, H)``."""
    return np.concatenate([h0[None], hs[:-1]]).reshape(-1, h0.shape[-1])


def _rnn_cell(relu: bool) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def forward(p: dict[str, Arr], xt: Arr, states: tuple[Arr, ...]) -> tuple[Arr, Any]:
        (h0,) = states
        x2, pre = _project(p, xt, p["b_ih"] + p["b_hh"])
        hs = np.empty(pre.shape, pre.dtype)
        h, w_hh = h0, p["w_hh"]
        for t in range(len(pre)):
            a = np.matmul(h, w_hh, out=hs[t])
            a += pre[t]
            h = np.maximum(a, 0, out=a) if relu else np.tanh(a, out=a)
        return hs, (x2, xt.shape, h0, hs)

    def backward(p: dict[str, Arr], cache: Any, dhs: Arr, need_dx: bool = True
                 ) -> tuple[dict[str, Arr], Arr | None, tuple[Arr, ...]]:
        x2, shape, h0, hs = cache
        dpre = np.empty(hs.shape, hs.dtype)
        dh, w_hh_t = np.zeros_like(h0), p["w_hh"].T
        for t in range(len(hs) - 1, -1, -1):
            d = np.add(dh, dhs[t], out=dpre[t])
            d *= (hs[t] > 0) if relu else 1 - hs[t] * hs[t]
            dh = d @ w_hh_t
        dw_ih, dxt = _input_grads(p, x2, dpre, shape, need_dx)
        db = dpre.sum(axis=(0, 1))
        grads = {"w_ih": dw_ih, "w_hh": _prev(h0, hs).T @ dpre.reshape(-1, dpre.shape[-1]), "b_ih": db,
                 "b_hh": db.copy()}
        return grads, dxt, (dh,)

    return forward, backward


def _lstm_forward(p: dict[str, Arr], xt: Arr, states: tuple[Arr, ...]) -> tuple[Arr, Any]:
    # Batch-last: every per-step array is (rows, N), so each gate is a contiguous block of
    # rows, and one product of the stacked weights [w_ih; b; w_hh].T with the stacked input
    # [x_t; 1; h_{t-1}] gives all four gates, input projection and bias included.
    h0, c0 = states
    steps, n, feat = xt.shape
    hid = h0.shape[-1]
    w = np.concatenate([p["w_ih"], (p["b_ih"] + p["b_hh"])[None], p["w_hh"]]).T  # (4H, F + 1 + H), a copy
    # sigmoid(a) = (1 + tanh(a / 2)) / 2: with the rows of i, f and o halved (exact, a power of
    # two), one tanh over all four gates serves the sigmoid gates too.
    w[:2 * hid] *= 0.5
    w[3 * hid:] *= 0.5
    # xh[t] = [x_t; 1; h_{t-1}], and xh[t + 1, F + 1:] is where step t writes h_t.
    xh = np.empty((steps + 1, feat + 1 + hid, n), xt.dtype)
    xh[:steps, :feat] = xt.transpose(0, 2, 1)
    xh[:steps, feat] = 1
    xh[steps, :feat + 1] = 0  # never read
    xh[0, feat + 1:] = h0.T
    acts = np.empty((steps, 4 * hid, n), xt.dtype)  # i, f, g, o after their nonlinearities
    cs = np.empty((steps, hid, n), xt.dtype)
    tcs = np.empty_like(cs)  # tanh(c_t)
    c0t = np.ascontiguousarray(c0.T)
    ig = np.empty((hid, n), xt.dtype)
    c = c0t
    for t in range(steps):
        a = np.matmul(w, xh[t], out=acts[t])
        np.tanh(a, out=a)
        for s in (a[:2 * hid], a[3 * hid:]):  # i and f (adjacent rows), then o: from tanh(a / 2) to sigmoid(a)
            s *= 0.5
            s += 0.5
        i, f, g, o = a[:hid], a[hid:2 * hid], a[2 * hid:3 * hid], a[3 * hid:]
        c = np.multiply(f, c, out=cs[t])
        c += np.multiply(i, g, out=ig)
        np.tanh(c, out=tcs[t])
        np.multiply(o, tcs[t], out=xh[t + 1, feat + 1:])
    return xh[1:, feat + 1:].transpose(0, 2, 1), (xh, c0t, acts, cs, tcs)


def _lstm_backward(p: dict[str, Arr], cache: Any, dhs: Arr, need_dx: bool = True
                   ) -> tuple[dict[str, Arr], Arr | None, tuple[Arr, ...]]:
    xh, c0t, acts, cs, tcs = cache
    steps, g4, n = acts.shape
    hid = g4 // 4
    feat = xh.shape[1] - 1 - hid
    dhs = np.ascontiguousarray(dhs.transpose(0, 2, 1))  # (T, H, N), like the cache
    d = np.empty((g4, n), acts.dtype)  # the gradient of step t's gates before their nonlinearities
    dh, dc = np.zeros((hid, n), acts.dtype), np.zeros((hid, n), acts.dtype)
    s1, s2 = np.empty((hid, n), acts.dtype), np.empty((2 * hid, n), acts.dtype)
    dw = np.zeros((xh.shape[1], g4), acts.dtype)  # [dw_ih; db; dw_hh], summed over steps
    dw_t = np.empty_like(dw)
    dxt = np.empty((steps, feat, n), acts.dtype) if need_dx else None
    w_ih, w_hh = p["w_ih"], p["w_hh"]
    for t in range(steps - 1, -1, -1):
        a, tc = acts[t], tcs[t]
        i, f, g, o = a[:hid], a[hid:2 * hid], a[2 * hid:3 * hid], a[3 * hid:]
        dh += dhs[t]
        np.multiply(dh, tc, out=d[3 * hid:])  # do
        np.multiply(tc, tc, out=s1)
        np.subtract(1, s1, out=s1)
        s1 *= o
        s1 *= dh
        dc += s1  # dc_t += dh_t * o * (1 - tanh(c_t)^2)
        np.multiply(dc, g, out=d[:hid])  # di
        np.multiply(dc, cs[t - 1] if t else c0t, out=d[hid:2 * hid])  # df
        np.multiply(dc, i, out=d[2 * hid:3 * hid])  # dg
        dc *= f
        # Through the nonlinearities: sigmoid' = s (1 - s) for i, f and o, tanh' = 1 - g^2.
        np.subtract(1, a[:2 * hid], out=s2)
        s2 *= a[:2 * hid]
        d[:2 * hid] *= s2
        np.subtract(1, o, out=s1)
        s1 *= o
        d[3 * hid:] *= s1
        np.multiply(g, g, out=s1)
        np.subtract(1, s1, out=s1)
        d[2 * hid:3 * hid] *= s1
        dw += np.matmul(xh[t], d.T, out=dw_t)
        if dxt is not None:
            np.matmul(w_ih, d, out=dxt[t])
        np.matmul(w_hh, d, out=dh)
    grads = {"w_ih": dw[:feat], "w_hh": dw[feat + 1:], "b_ih": dw[feat], "b_hh": dw[feat].copy()}
    return grads, None if dxt is None else dxt.transpose(0, 2, 1), (dh.T, dc.T)


def _gru_forward(p: dict[str, Arr], xt: Arr, states: tuple[Arr, ...]) -> tuple[Arr, Any]:
    (h0,) = states
    x2, pre = _project(p, xt, p["b_ih"])
    steps, n, g3 = pre.shape
    hid = g3 // 3
    acts = np.empty(pre.shape, pre.dtype)  # r, z, n after their nonlinearities
    hh_n = np.empty((steps, n, hid), pre.dtype)  # W_hn h + b_hn, which r multiplies
    hs = np.empty_like(hh_n)
    h, w_hh, b_hh = h0, p["w_hh"], p["b_hh"]
    for t in range(steps):
        hh = h @ w_hh
        hh += b_hh
        a = acts[t]
        np.add(pre[t, :, :2 * hid], hh[:, :2 * hid], out=a[:, :2 * hid])
        _sigmoid(a[:, :2 * hid], out=a[:, :2 * hid])
        hh_n[t] = hh[:, 2 * hid:]
        new = np.multiply(a[:, :hid], hh_n[t], out=a[:, 2 * hid:])
        new += pre[t, :, 2 * hid:]
        np.tanh(new, out=new)
        # h' = (1 - z) * n + z * h = n + z * (h - n)
        out = np.subtract(h, new, out=hs[t])
        out *= a[:, hid:2 * hid]
        out += new
        h = out
    return hs, (x2, xt.shape, h0, acts, hh_n, hs)


def _gru_backward(p: dict[str, Arr], cache: Any, dhs: Arr, need_dx: bool = True
                  ) -> tuple[dict[str, Arr], Arr | None, tuple[Arr, ...]]:
    x2, shape, h0, acts, hh_n, hs = cache
    hid = h0.shape[-1]
    dpre = np.empty(acts.shape, acts.dtype)  # gradient of the input projection (r, z, n)
    dhh = np.empty(acts.shape, acts.dtype)  # gradient of h @ W_hh + b_hh
    dh, w_hh_t = np.zeros_like(h0), p["w_hh"].T
    for t in range(len(acts) - 1, -1, -1):
        a = acts[t]
        r, z, new = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:]
        h_prev = hs[t - 1] if t else h0
        dh += dhs[t]
        dn = dh * (1 - z) * (1 - new * new)
        dz = dh * (h_prev - new) * z * (1 - z)
        dr = dn * hh_n[t] * r * (1 - r)
        d, e = dpre[t], dhh[t]
        d[:, :hid] = dr
        d[:, hid:2 * hid] = dz
        d[:, 2 * hid:] = dn
        e[:, :2 * hid] = d[:, :2 * hid]
        np.multiply(dn, r, out=e[:, 2 * hid:])
        dh = dh * z + e @ w_hh_t
    dw_ih, dxt = _input_grads(p, x2, dpre, shape, need_dx)
    dhh2 = dhh.reshape(-1, dhh.shape[-1])
    grads = {"w_ih": dw_ih, "w_hh": _prev(h0, hs).T @ dhh2, "b_ih": dpre.sum(axis=(0, 1)),
             "b_hh": dhh2.sum(axis=0)}
    return grads, dxt, (dh,)


_CELLS: dict[str, tuple[int, int, Any, Any]] = {
    # name: (gates, states, forward, backward)
    "rnn_tanh": (1, 1, *_rnn_cell(relu=False)),
    "rnn_relu": (1, 1, *_rnn_cell(relu=True)),
    "lstm": (4, 2, _lstm_forward, _lstm_backward),
    "gru": (3, 1, _gru_forward, _gru_backward),
}


def _names(num_layers: int, dirs: int) -> list[str]:
    """The params' entries, one per layer and direction: ``"l0"``, ``"l0_reverse"``, ``"l1"``, …"""
    return [f"l{layer}{'_reverse' if d else ''}" for layer in range(num_layers) for d in range(dirs)]


def _param_shapes(cell: str, features: int, hid: int, num_layers: int, dirs: int
                  ) -> dict[str, dict[str, tuple[int, ...]]]:
    gates = _CELLS[cell][0]
    return {nm: {"w_ih": (features if i < dirs else dirs * hid, gates * hid), "w_hh": (hid, gates * hid),
                 "b_ih": (gates * hid,), "b_hh": (gates * hid,)} for i, nm in enumerate(_names(num_layers, dirs))}


def recurrent_forward(params: dict[str, dict[str, Arr]], seq: Arr, states: tuple[Arr, ...], cell: str,
                      num_layers: int, bidirectional: bool, batch_first: bool) -> tuple[Arr, Any]:
    """A stack of ``num_layers`` recurrent layers of ``cell`` (``"rnn_tanh"``, ``"rnn_relu"``,
    ``"lstm"`` or ``"gru"``), each one direction or two.

    ``seq: (N, T, F)`` (``(T, N, F)`` unless ``batch_first``) and ``states``, one ``(N,
    num_layers * num_directions, H)`` array per state (``h``, or ``h`` and ``c``) ->
    ``(y: (N, T, D * H)`` (``(T, N, D * H)``), a fresh array, the cache for :func:`recurrent_backward`).
    """
    forward = _CELLS[cell][2]
    dirs = 2 if bidirectional else 1
    names = _names(num_layers, dirs)
    inp = seq.transpose(1, 0, 2) if batch_first else seq
    caches = []
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            idx = layer * dirs + d
            st = tuple(s[:, idx] for s in states)
            hs, cache = forward(params[names[idx]], inp[::-1] if d else inp, st)
            outs.append(hs[::-1] if d else hs)
            caches.append(cache)
        inp = np.concatenate(outs, axis=2) if dirs == 2 else outs[0]
    # A fresh array either way: a cell's hs may be a view of its cache.
    y = _batch_first(inp) if batch_first else np.array(inp, order="C")
    return y, (params, caches, cell, num_layers, dirs, batch_first, states[0].shape)


def recurrent_backward(cache: Any, dy: Arr, need_dx: bool = True
                       ) -> tuple[dict[str, dict[str, Arr]], Arr | None, tuple[Arr, ...]]:
    """Backpropagation through time of :func:`recurrent_forward`: ``dy`` (the shape of ``y``) ->
    ``(grads`` (the structure of ``params``), ``dseq`` (the shape of ``seq``; ``None`` unless
    ``need_dx``), the initial states' gradients ``(N, num_layers * num_directions, H)``)."""
    params, caches, cell, num_layers, dirs, batch_first, state_shape = cache
    _, n_states, _, backward = _CELLS[cell]
    names = _names(num_layers, dirs)
    hid = state_shape[-1]
    grads: dict[str, Any] = {}
    dstates = tuple(np.empty(state_shape, dy.dtype) for _ in range(n_states))
    d_out = dy.transpose(1, 0, 2) if batch_first else dy
    for layer in range(num_layers - 1, -1, -1):
        d_in: Any = None
        for d in range(dirs):
            idx = layer * dirs + d
            part = d_out[:, :, d * hid:(d + 1) * hid]
            g, dxt, dst = backward(params[names[idx]], caches[idx], part[::-1] if d else part,
                                   need_dx or layer > 0)  # the first layer's dx only if asked
            grads[names[idx]] = g
            if dxt is not None:
                dxt = dxt[::-1] if d else dxt
                d_in = dxt if d_in is None else d_in + dxt
            for full, s in zip(dstates, dst):
                full[:, idx] = s
        d_out = d_in
    grads = {nm: grads[nm] for nm in names}
    if not need_dx:
        return grads, None, dstates
    return grads, np.ascontiguousarray(d_out.transpose(1, 0, 2) if batch_first else d_out), dstates


def _sequence_and_states(kind: str, x: Any, params: Any, cell: str, hid: int, num_layers: int, dirs: int,
                         batch_first: bool) -> tuple[Arr, tuple[Arr, ...], bool]:
    """``x``, a sequence or ``(seq, *states)``, checked against the layer and ``params``: ``(seq,
    states, given)``, with zero states where none were given."""
    n_states = _CELLS[cell][1]
    if isinstance(x, tuple) and len(x) != 1 + n_states:
        want = "(x, h0, c0)" if n_states == 2 else "(x, h0)"
        raise ValueError(f"{kind}: a tuple input must be {want}, got a tuple of {len(x)}")
    seq, given = (x[0], x[1:]) if isinstance(x, tuple) else (x, None)
    if seq.ndim != 3:
        layout = "(N, T, F)" if batch_first else "(T, N, F) (time-major, batch_first=False)"
        raise ValueError(f"{kind}: input must be {layout}, got shape {seq.shape}")
    n, steps, features = seq.shape if batch_first else (seq.shape[1], seq.shape[0], seq.shape[2])
    if steps == 0:
        raise ValueError(f"{kind}: input has no time steps (T = 0), shape {seq.shape}")
    names = _names(num_layers, dirs)
    if not isinstance(params, dict) or set(params) != set(names):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{kind}: params has entries {got} but this layer expects {names} "
                         f"(params from a different architecture?)")
    for nm, spec in _param_shapes(cell, features, hid, num_layers, dirs).items():
        check_params(f"{kind} params[{nm!r}]", params[nm], spec, seq.dtype)
    state_shape = (n, num_layers * dirs, hid)
    if given is None:
        return seq, tuple(np.zeros(state_shape, seq.dtype) for _ in range(n_states)), False
    for s in given:
        if s.shape != state_shape or s.dtype != seq.dtype:
            hint = "" if batch_first else (" (states stay batch first, (N, num_layers * num_directions, H), "
                                           "with batch_first=False)")
            raise ValueError(f"{kind}: initial states must be {seq.dtype} arrays of shape "
                             f"{state_shape}, got {s.dtype} {s.shape}{hint}")
    return seq, tuple(given), True


def _kind(name: str, hidden_size: Any, num_layers: Any, nonlinearity: Any, bidirectional: Any,
          batch_first: Any) -> str:
    """``name(hidden_size, ...)`` naming each other argument that is not its default (of the
    default's type: given the arguments as passed, it shows a bad one)."""
    options = [("num_layers", num_layers, 1), ("nonlinearity", nonlinearity, "tanh"),
               ("bidirectional", bidirectional, False), ("batch_first", batch_first, True)]
    return layer_kind(name, [repr(hidden_size)], [o for o in options if o[0] != "nonlinearity" or name == "RNN"])


def _recurrent(name: str, hidden_size: int, num_layers: int, nonlinearity: str, bidirectional: bool,
               batch_first: bool) -> Layer:
    where = _kind(name, hidden_size, num_layers, nonlinearity, bidirectional, batch_first)
    hid = validate.integer(where, "hidden_size", hidden_size, low=1)
    num_layers = validate.integer(where, "num_layers", num_layers, low=1)
    if name == "RNN":
        nonlinearity = validate.choice(where, "nonlinearity", nonlinearity, ("tanh", "relu"))
    bidirectional = validate.boolean(where, "bidirectional", bidirectional)
    batch_first = validate.boolean(where, "batch_first", batch_first)
    kind = _kind(name, hid, num_layers, nonlinearity, bidirectional, batch_first)
    cell = f"rnn_{nonlinearity}" if name == "RNN" else name.lower()
    dirs = 2 if bidirectional else 1

    def init(key: _random.Key, shape: Any, dtype: np.dtype) -> dict[str, dict[str, Arr]]:
        seq_shape = shape[0] if shape and isinstance(shape[0], tuple) else shape
        if len(seq_shape) != 2 or seq_shape[1] == 0:
            raise ValueError(f"{kind}: init shape must be (T, F) with F > 0 (one sequence, no batch axis), "
                             f"got {seq_shape}")
        bound = 1 / math.sqrt(hid)
        shapes = _param_shapes(cell, seq_shape[1], hid, num_layers, dirs)
        keys = iter(_random.split(key, 4 * len(shapes)))
        return {nm: {k: _random.uniform(next(keys), s, dtype, -bound, bound) for k, s in sorted(spec.items())}
                for nm, spec in shapes.items()}

    def apply(params: Any, x: Any, opts: Options) -> Any:
        seq, states, given = _sequence_and_states(kind, x, params, cell, hid, num_layers, dirs, batch_first)
        y, cache = recurrent_forward(params, seq, states, cell, num_layers, bidirectional, batch_first)
        out = like(y)

        def vjp(dy: Arr, need_dx: bool = True) -> tuple[dict[str, Any], Any]:
            grads, dseq, dstates = recurrent_backward(cache, check_cotangent(kind, dy, out), need_dx)
            return grads, (dseq, *dstates) if given and dseq is not None else dseq

        return y, vjp

    return make_layer(kind, init, apply, tuple_input=True)


def RNN(hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", bidirectional: bool = False,
        batch_first: bool = True) -> Layer:
    """Elman RNN, ``h_t = act(x_t @ w_ih + b_ih + h_{t-1} @ w_hh + b_hh)`` with ``act`` tanh or ReLU.

    By default (``batch_first=True``) ``x: (N, T, F) -> y: (N, T, H)`` (``2 * H`` when
    bidirectional). ``batch_first=False`` takes PyTorch's default time-major layout,
    ``x: (T, N, F) -> y: (T, N, H)``; note that fnn's default is ``True``, PyTorch's
    ``False``. The input may be ``(x, h0)`` with ``h0: (N, num_layers * num_directions, H)``
    in either layout. ``init(key, (T, F))`` takes one sequence's shape either way. See
    the module docstring for initial states and params. ``hidden_size`` and ``num_layers``
    are ints ``>= 1``, ``nonlinearity`` ``"tanh"`` or ``"relu"``, ``bidirectional`` and
    ``batch_first`` ``True`` or ``False``.

    >>> rnn = RNN(4, nonlinearity="relu")
    >>> y, vjp = rnn.apply(rnn.init(fnn.random.key(0), (5, 3)), np.ones((2, 5, 3), np.float32))
    >>> y.shape
    (2, 5, 4)
    """
    return _recurrent("RNN", hidden_size, num_layers, nonlinearity, bidirectional, batch_first)


def LSTM(hidden_size: int, num_layers: int = 1, bidirectional: bool = False, batch_first: bool = True) -> Layer:
    """Long short-term memory with PyTorch's gate order (input, forget, cell, output):
    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``.

    By default (``batch_first=True``) ``x: (N, T, F) -> y: (N, T, H)`` (``2 * H`` when
    bidirectional). ``batch_first=False`` takes PyTorch's default time-major layout,
    ``x: (T, N, F) -> y: (T, N, H)``; note that fnn's default is ``True``, PyTorch's
    ``False``. The input may be ``(x, h0, c0)`` with states ``(N, num_layers *
    num_directions, H)`` in either layout. ``init(key, (T, F))`` takes one sequence's
    shape either way. The four gates share one matrix product per step. ``hidden_size``
    and ``num_layers`` are ints ``>= 1``, ``bidirectional`` and ``batch_first`` ``True`` or ``False``.

    >>> lstm = LSTM(8)
    >>> params = lstm.init(fnn.random.key(0), (5, 3))
    >>> params["l0"]["w_hh"].shape
    (8, 32)
    """
    return _recurrent("LSTM", hidden_size, num_layers, "tanh", bidirectional, batch_first)


def GRU(hidden_size: int, num_layers: int = 1, bidirectional: bool = False, batch_first: bool = True) -> Layer:
    """Gated recurrent unit with PyTorch's formulation (reset, update, new):
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``.

    By default (``batch_first=True``) ``x: (N, T, F) -> y: (N, T, H)`` (``2 * H`` when
    bidirectional). ``batch_first=False`` takes PyTorch's default time-major layout,
    ``x: (T, N, F) -> y: (T, N, H)``; note that fnn's default is ``True``, PyTorch's
    ``False``. The input may be ``(x, h0)`` with ``h0: (N, num_layers * num_directions, H)``
    in either layout. ``init(key, (T, F))`` takes one sequence's shape either way.
    ``hidden_size`` and ``num_layers`` are ints ``>= 1``, ``bidirectional`` and
    ``batch_first`` ``True`` or ``False``.

    >>> GRU(4, bidirectional=True).init(fnn.random.key(0), (5, 3))["l0_reverse"]["w_ih"].shape
    (3, 12)
    """
    return _recurrent("GRU", hidden_size, num_layers, "tanh", bidirectional, batch_first)


def last_step_forward(x: Arr) -> tuple[Arr, tuple[int, ...]]:
    """``x: (N, T, F) -> y: (N, F)``, the last time step (a copy); the cache is ``x``'s shape, not ``x``."""
    return x[:, -1].copy(), x.shape


def last_step_backward(shape: tuple[int, ...], dy: Arr) -> Arr:
    """``dy: (N, F) -> dx: (N, T, F)``, zero but at the last step."""
    dx = np.zeros(shape, dy.dtype)
    dx[:, -1] = dy
    return dx


def mean_over_time_forward(x: Arr) -> tuple[Arr, int]:
    """``x: (N, T, F) -> y: (N, F)``, the mean over time; the cache is ``T``."""
    return x.mean(axis=1), x.shape[1]


def mean_over_time_backward(steps: int, dy: Arr) -> Arr:
    """``dy: (N, F) -> dx: (N, T, F)``, ``dy / T`` at every step."""
    return np.repeat((dy / steps)[:, None], steps, axis=1)


def _check_sequence(kind: str, x: Any) -> None:
    if x.ndim != 3 or x.shape[1] == 0:
        raise ValueError(f"{kind}: input must be (N, T, F) with T > 0, got shape {x.shape}")


def LastStep() -> Layer:
    """The last time step of a batch-first sequence: ``(N, T, F) -> (N, F)``."""

    def forward(x: Arr) -> Any:
        _check_sequence("LastStep()", x)
        y, cache = last_step_forward(x)
        return y, lambda dy: last_step_backward(cache, dy)

    return parameterless("LastStep()", forward)


def MeanOverTime() -> Layer:
    """The mean over time steps of a batch-first sequence: ``(N, T, F) -> (N, F)``."""

    def forward(x: Arr) -> Any:
        _check_sequence("MeanOverTime()", x)
        y, cache = mean_over_time_forward(x)
        return y, lambda dy: mean_over_time_backward(cache, dy)

    return parameterless("MeanOverTime()", forward)
