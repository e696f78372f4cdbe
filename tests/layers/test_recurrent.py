"""RNN, LSTM, GRU, LastStep and MeanOverTime.

Every recurrent cell (tanh and ReLU Elman RNN, LSTM, GRU) is checked as 1- and 2-layer,
uni- and bidirectional stacks: its vjp (params, x and initial states) against finite
differences, its forward against a slow per-example, per-time-step loop written from the
textbook equations, and, where torch is installed, outputs and gradients against
``torch.nn.RNN/LSTM/GRU``. Then the time-major layout (``batch_first=False``), purity,
dtypes, ``need_dx=False``, hand-computed cases, init, every input and argument error, and
a short training run inside ``serial``.
"""

import importlib.util
import math
import re
from functools import partial

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import fnn
from fnn import losses, optim, random, tree
from fnn.layers import GRU, LSTM, RNN, Dense, LastStep, MeanOverTime, recurrent
from fnn.testing import check_vjp

KEY = random.key(0)
CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
STACKS = [(1, False), (1, True), (2, False), (2, True)]  # (num_layers, bidirectional)
STACK_IDS = ["1-layer", "1-layer-bi", "2-layer", "2-layer-bi"]
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
# A skip decided before hypothesis runs: pytest.importorskip inside a @given test with an
# @example makes hypothesis print a "Failing explicit example" block for the skip.
requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")


def make(cell, hidden, num_layers=1, bidirectional=False, batch_first=True):
    if cell == "lstm":
        return LSTM(hidden, num_layers, bidirectional, batch_first=batch_first)
    if cell == "gru":
        return GRU(hidden, num_layers, bidirectional, batch_first=batch_first)
    return RNN(hidden, num_layers, cell[4:], bidirectional, batch_first=batch_first)


def n_states(cell):
    return 2 if cell == "lstm" else 1


# ---------------------------------------------------------------------------------------------
# The loop reference: one example, one time step at a time, PyTorch's (G * H, F) weight layout.


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def ref_step(cell, p, x, h, c):
    """One step of one direction of one layer for one example; returns ``(h, c, pre-activation)``.

    ``W_ih = w_ih.T`` and ``W_hh = w_hh.T`` are PyTorch's ``(G * H, F)`` matrices; rows
    ``k * H:(k + 1) * H`` belong to gate ``k``.
    """
    w_ih, w_hh, b_ih, b_hh = p["w_ih"].T, p["w_hh"].T, p["b_ih"], p["b_hh"]
    hid = len(h)

    def ih(k):  # W_i? x + b_i? for gate k
        rows = slice(k * hid, (k + 1) * hid)
        return w_ih[rows] @ x + b_ih[rows]

    def hh(k):  # W_h? h + b_h? for gate k
        rows = slice(k * hid, (k + 1) * hid)
        return w_hh[rows] @ h + b_hh[rows]

    if cell in ("rnn_tanh", "rnn_relu"):
        pre = ih(0) + hh(0)  # Elman: h' = act(W_ih x + b_ih + W_hh h + b_hh)
        return (np.tanh(pre) if cell == "rnn_tanh" else np.maximum(pre, 0.0)), None, pre
    if cell == "lstm":
        i = sigmoid(ih(0) + hh(0))
        f = sigmoid(ih(1) + hh(1))
        g = np.tanh(ih(2) + hh(2))
        o = sigmoid(ih(3) + hh(3))
        c_new = f * c + i * g
        return o * np.tanh(c_new), c_new, None
    r = sigmoid(ih(0) + hh(0))
    z = sigmoid(ih(1) + hh(1))
    n = np.tanh(ih(2) + r * hh(2))  # r multiplies (W_hn h + b_hn)
    return (1 - z) * n + z * h, None, None


def reference(cell, params, x, num_layers, bidirectional, h0=None, c0=None):
    """The whole stack, looping over examples, layers, directions and time steps.

    Returns ``y: (N, T, D * H)`` and every pre-activation of an Elman cell (to keep ReLU
    cases away from the kink).
    """
    dirs = 2 if bidirectional else 1
    n, steps, _ = x.shape
    hid = params["l0"]["w_hh"].shape[0]
    if h0 is None:
        h0 = np.zeros((n, num_layers * dirs, hid))
    if c0 is None:
        c0 = np.zeros((n, num_layers * dirs, hid))
    y = np.zeros((n, steps, dirs * hid))
    pres = [np.zeros(0)]
    for e in range(n):
        seq = [x[e, t] for t in range(steps)]
        for layer in range(num_layers):
            outs = []
            for d in range(dirs):
                idx = layer * dirs + d
                p = params[f"l{layer}_reverse" if d else f"l{layer}"]
                h, c = h0[e, idx], c0[e, idx]
                out = [None] * steps
                for t in (reversed(range(steps)) if d else range(steps)):
                    h, c, pre = ref_step(cell, p, seq[t], h, c)
                    out[t] = h
                    if pre is not None:
                        pres.append(pre)
                outs.append(out)
            seq = [np.concatenate([o[t] for o in outs]) for t in range(steps)]
        for t in range(steps):
            y[e, t] = seq[t]
    return y, np.concatenate(pres)


def draw_inputs(cell, n, steps, features, hidden, num_layers, bidirectional, seed, dtype=np.float64):
    """A layer, params from its init, ``x`` and the initial states, all from ``seed``."""
    layer = make(cell, hidden, num_layers, bidirectional)
    k_p, k_x, k_h, k_c = random.split(random.key(seed), 4)
    params = layer.init(k_p, (steps, features), dtype)
    x = random.normal(k_x, (n, steps, features), dtype)
    state_shape = (n, num_layers * (2 if bidirectional else 1), hidden)
    states = (random.normal(k_h, state_shape, dtype), random.normal(k_c, state_shape, dtype))[:n_states(cell)]
    return layer, params, x, states


def relu_margin_ok(cell, params, x, states, num_layers, bidirectional, margin=1e-3):
    """For ReLU stacks: no pre-activation within ``margin`` of the kink (finite differences cross it)."""
    if cell != "rnn_relu":
        return True
    _, pres = reference(cell, params, x, num_layers, bidirectional, *states)
    return bool(np.abs(pres).min() > margin)


sizes = {"n": st.integers(1, 3), "steps": st.integers(1, 4), "features": st.integers(1, 3),
         "hidden": st.integers(1, 3), "seed": st.integers(0, 10_000)}


def smallest(f):
    """The smallest case (N = T = F = H = 1) always runs, beside hypothesis' draws."""
    return example(n=1, steps=1, features=1, hidden=1, seed=0)(f)


# ---------------------------------------------------------------------------------------------
# Finite differences, the loop reference and torch.


@pytest.mark.parametrize("num_layers, bidirectional", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("cell", CELLS)
@given(**sizes)
@smallest
def test_vjp_of_params_input_and_initial_states_matches_finite_differences(cell, num_layers, bidirectional,
                                                                            n, steps, features, hidden, seed):
    layer, params, x, states = draw_inputs(cell, n, steps, features, hidden, num_layers, bidirectional, seed)
    assume(relu_margin_ok(cell, params, x, states, num_layers, bidirectional))
    errors = check_vjp(layer, params, (x, *states), check_key=random.key(seed + 1))
    expected = {f"['x'][{i}]" for i in range(1 + len(states))}
    expected |= {"['params']" + tree.path_str(p) for p, _ in tree.flatten(params)[0]}
    assert set(errors) == expected


@pytest.mark.parametrize("num_layers, bidirectional", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("cell", CELLS)
@given(**sizes)
@smallest
def test_forward_matches_loop_reference(cell, num_layers, bidirectional, n, steps, features, hidden, seed):
    layer, params, x, states = draw_inputs(cell, n, steps, features, hidden, num_layers, bidirectional, seed)
    y, _ = layer.apply(params, (x, *states))
    want, _ = reference(cell, params, x, num_layers, bidirectional, *states)
    assert y.shape == (n, steps, (2 if bidirectional else 1) * hidden)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    # Without states the initial states are zeros, and the vjp matches the tuple form's.
    y0, vjp0 = layer.apply(params, x)
    zeros = tuple(np.zeros_like(s) for s in states)
    np.testing.assert_allclose(y0, reference(cell, params, x, num_layers, bidirectional)[0], rtol=1e-12, atol=1e-12)
    dy = random.normal(random.key(seed), y0.shape, np.float64)
    dp0, dx0 = vjp0(dy)
    y1, vjp1 = layer.apply(params, (x, *zeros))
    dp1, (dx1, *_) = vjp1(dy)
    assert y0.tobytes() == y1.tobytes() and dx0.tobytes() == dx1.tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(dp0), tree.leaves(dp1)))


def torch_module(torch, cell, params, features, hidden, num_layers, bidirectional, batch_first=True):
    """The torch module of the same architecture holding fnn's params (weights transposed)."""
    make_module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell) or partial(
        torch.nn.RNN, nonlinearity=cell[4:])
    module = make_module(features, hidden, num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=batch_first).double()
    assert {n for n, _ in module.named_parameters()} == {
        f"{w}_{name}" for name in params for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    with torch.no_grad():
        for name, p in params.items():
            getattr(module, f"weight_ih_{name}").copy_(torch.from_numpy(p["w_ih"].T))
            getattr(module, f"weight_hh_{name}").copy_(torch.from_numpy(p["w_hh"].T))
            getattr(module, f"bias_ih_{name}").copy_(torch.from_numpy(p["b_ih"]))
            getattr(module, f"bias_hh_{name}").copy_(torch.from_numpy(p["b_hh"]))
    return module


@requires_torch
@pytest.mark.parametrize("num_layers, bidirectional", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("cell", CELLS)
@given(**sizes)
@smallest
def test_matches_torch_outputs_and_gradients(cell, num_layers, bidirectional, n, steps, features, hidden, seed):
    import torch

    layer, params, x, states = draw_inputs(cell, n, steps, features, hidden, num_layers, bidirectional, seed)
    module = torch_module(torch, cell, params, features, hidden, num_layers, bidirectional)
    tx = torch.tensor(x, requires_grad=True)
    # fnn's states are (N, L * D, H); torch's (L * D, N, H)
    tstates = [torch.tensor(s.transpose(1, 0, 2).copy(), requires_grad=True) for s in states]
    tout, _ = module(tx, tuple(tstates) if cell == "lstm" else tstates[0])

    y, vjp = layer.apply(params, (x, *states))
    np.testing.assert_allclose(y, tout.detach().numpy(), rtol=1e-12, atol=1e-12)

    dy = random.normal(random.key(seed + 2), y.shape, np.float64)
    (tout * torch.from_numpy(dy)).sum().backward()
    dparams, (dx, *dstates) = vjp(dy)
    close = partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-10)
    close(dx, tx.grad.numpy())
    for got, ts in zip(dstates, tstates):
        close(got, ts.grad.numpy().transpose(1, 0, 2))
    for name, g in dparams.items():
        close(g["w_ih"], getattr(module, f"weight_ih_{name}").grad.numpy().T)
        close(g["w_hh"], getattr(module, f"weight_hh_{name}").grad.numpy().T)
        close(g["b_ih"], getattr(module, f"bias_ih_{name}").grad.numpy())
        close(g["b_hh"], getattr(module, f"bias_hh_{name}").grad.numpy())


# ---------------------------------------------------------------------------------------------
# The time-major layout, batch_first=False: x (T, N, F), y (T, N, D * H); states stay (N, L * D, H).


def time_major(a):
    return a.transpose(1, 0, 2).copy()


@pytest.mark.parametrize("with_states", [False, True])
@pytest.mark.parametrize("num_layers, bidirectional", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_false_gives_the_batch_first_output_and_gradients_transposed(cell, num_layers, bidirectional,
                                                                                 with_states):
    n, steps, features, hidden = 2, 5, 3, 4  # T != N, so a mixed-up axis shows in the shapes
    layer, params, x, states = draw_inputs(cell, n, steps, features, hidden, num_layers, bidirectional, seed=3)
    tm = make(cell, hidden, num_layers, bidirectional, batch_first=False)
    y, vjp = layer.apply(params, (x, *states) if with_states else x)
    y_tm, vjp_tm = tm.apply(params, (time_major(x), *states) if with_states else time_major(x))
    assert y_tm.shape == (steps, n, (2 if bidirectional else 1) * hidden) and y_tm.flags.c_contiguous
    close = partial(np.testing.assert_allclose, rtol=1e-13, atol=1e-14)
    close(y_tm, time_major(y))
    dy = random.normal(random.key(4), y.shape, np.float64)
    dparams, dx = vjp(dy)
    dparams_tm, dx_tm = vjp_tm(time_major(dy))
    if with_states:
        (dx, *dstates), (dx_tm, *dstates_tm) = dx, dx_tm
        assert [d.shape for d in dstates_tm] == [s.shape for s in states]  # (N, L * D, H), not transposed
        for a, b in zip(dstates_tm, dstates):
            close(a, b)
    assert dx_tm.shape == (steps, n, features) and dx_tm.flags.c_contiguous  # the input's layout
    close(dx_tm, time_major(dx))
    tree.check_same_structure(dparams, dparams_tm, shapes=True)
    for a, b in zip(tree.leaves(dparams_tm), tree.leaves(dparams)):
        close(a, b)
    dparams_only, no_dx = vjp_tm(time_major(dy), need_dx=False)
    assert no_dx is None
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(dparams_only), tree.leaves(dparams_tm)))


@pytest.mark.parametrize("num_layers, bidirectional", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("cell", CELLS)
@given(**sizes)
@smallest
def test_batch_first_false_vjp_matches_finite_differences(cell, num_layers, bidirectional, n, steps, features,
                                                          hidden, seed):
    _, params, x, states = draw_inputs(cell, n, steps, features, hidden, num_layers, bidirectional, seed)
    assume(relu_margin_ok(cell, params, x, states, num_layers, bidirectional))
    layer = make(cell, hidden, num_layers, bidirectional, batch_first=False)
    errors = check_vjp(layer, params, (time_major(x), *states), check_key=random.key(seed + 1))
    expected = {f"['x'][{i}]" for i in range(1 + len(states))}
    expected |= {"['params']" + tree.path_str(p) for p, _ in tree.flatten(params)[0]}
    assert set(errors) == expected


@requires_torch
@pytest.mark.parametrize("num_layers, bidirectional", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_false_matches_torch_default_time_major_layout(cell, num_layers, bidirectional):
    import torch

    n, steps, features, hidden = 3, 4, 2, 3
    layer, params, x, states = draw_inputs(cell, n, steps, features, hidden, num_layers, bidirectional, seed=6)
    assert relu_margin_ok(cell, params, x, states, num_layers, bidirectional)
    layer = make(cell, hidden, num_layers, bidirectional, batch_first=False)
    module = torch_module(torch, cell, params, features, hidden, num_layers, bidirectional, batch_first=False)
    xt = time_major(x)  # (T, N, F), torch's default
    tx = torch.tensor(xt, requires_grad=True)
    tstates = [torch.tensor(time_major(s), requires_grad=True) for s in states]  # torch: (L * D, N, H)
    tout, _ = module(tx, tuple(tstates) if cell == "lstm" else tstates[0])

    y, vjp = layer.apply(params, (xt, *states))
    np.testing.assert_allclose(y, tout.detach().numpy(), rtol=1e-12, atol=1e-12)

    dy = random.normal(random.key(7), y.shape, np.float64)
    (tout * torch.from_numpy(dy)).sum().backward()
    dparams, (dx, *dstates) = vjp(dy)
    close = partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-10)
    close(dx, tx.grad.numpy())
    for got, ts in zip(dstates, tstates):
        close(got, time_major(ts.grad.numpy()))
    for name, g in dparams.items():
        close(g["w_ih"], getattr(module, f"weight_ih_{name}").grad.numpy().T)
        close(g["w_hh"], getattr(module, f"weight_hh_{name}").grad.numpy().T)
        close(g["b_ih"], getattr(module, f"bias_ih_{name}").grad.numpy())
        close(g["b_hh"], getattr(module, f"bias_hh_{name}").grad.numpy())


@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_false_init_takes_one_sequence_shape_t_f(cell):
    hidden, steps, features, n = 3, 5, 2, 4
    tm = make(cell, hidden, 2, True, batch_first=False)
    params = tm.init(KEY, (steps, features), np.float64)
    same = make(cell, hidden, 2, True).init(KEY, (steps, features), np.float64)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(params), tree.leaves(same)))
    assert fnn.output_shape(tm, params, (steps, features), np.float64) == (steps, 2 * hidden)
    y, vjp = tm.apply(params, np.zeros((steps, n, features)))
    assert y.shape == (steps, n, 2 * hidden)
    assert vjp(np.ones(y.shape))[1].shape == (steps, n, features)


@pytest.mark.parametrize("option", ["batch_first", "bidirectional"])
@pytest.mark.parametrize("make_layer", [LSTM, GRU, RNN])
def test_bool_options_that_are_not_bools_raise_type_error(make_layer, option):
    """Regression: bidirectional="no" (a true string) silently built a bidirectional layer."""
    name = make_layer.__name__
    for bad in ("no", "False", 0, 1, None, 1.0):
        msg = f"{name}(4, {option}={bad!r}): {option} must be True or False, got {type(bad).__name__} {bad!r}"
        with pytest.raises(TypeError, match="^" + re.escape(msg)):
            make_layer(4, **{option: bad})
    assert make_layer(4, batch_first=np.bool_(False)).kind == f"{name}(4, batch_first=False)"
    assert make_layer(4, bidirectional=np.bool_(True)).kind == f"{name}(4, bidirectional=True)"
    assert make_layer(4, bidirectional=np.bool_(False), batch_first=np.bool_(True)).kind == f"{name}(4)"


def test_kind_shows_batch_first_false_only_when_set():
    assert LSTM(8, batch_first=True).kind == "LSTM(8)"
    assert LSTM(8, batch_first=False).kind == "LSTM(8, batch_first=False)"
    assert GRU(4, 2, True, batch_first=False).kind == "GRU(4, num_layers=2, bidirectional=True, batch_first=False)"
    assert RNN(3, nonlinearity="relu", batch_first=False).kind == "RNN(3, nonlinearity='relu', batch_first=False)"


@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_false_input_errors_name_the_time_major_layout(cell):
    _, params, x, states = draw_inputs(cell, 3, 2, 3, 2, 1, True, seed=0)  # states (N, L * D, H) = (3, 2, 2)
    layer = make(cell, 2, 1, True, batch_first=False)
    kind = re.escape(layer.kind)
    layout = re.escape("(T, N, F) (time-major, batch_first=False), got shape ")
    for bad in (x[:, 0], x[..., None]):
        with pytest.raises(ValueError, match=f"^{kind}: input must be {layout}{re_shape(bad.shape)}"):
            layer.apply(params, bad)
    with pytest.raises(ValueError, match=r"no time steps \(T = 0\), shape \(0, 3, 3\)"):
        layer.apply(params, time_major(x)[:0])
    torch_layout = tuple(time_major(s) for s in states)  # PyTorch's (L * D, N, H)
    msg = ("initial states must be float64 arrays of shape (3, 2, 2), got float64 (2, 3, 2) (states stay "
           "batch first, (N, num_layers * num_directions, H), with batch_first=False)")
    with pytest.raises(ValueError, match=re.escape(msg)):
        layer.apply(params, (time_major(x), *torch_layout))


# ---------------------------------------------------------------------------------------------
# Hand-computed cases.


def test_hand_computed_relu_rnn_forward_and_backward():
    # h_t = relu(x_t + 0.5 h_{t-1}): x = 1, 2, -4 gives 1, 2.5, relu(-2.75) = 0
    params = {"l0": {"w_ih": np.array([[1.0]]), "w_hh": np.array([[0.5]]), "b_ih": np.zeros(1),
                     "b_hh": np.zeros(1)}}
    x = np.array([1.0, 2.0, -4.0]).reshape(1, 3, 1)
    y, vjp = RNN(1, nonlinearity="relu").apply(params, (x, np.zeros((1, 1, 1))))
    assert y.ravel().tolist() == [1.0, 2.5, 0.0]
    dparams, (dx, dh0) = vjp(np.ones((1, 3, 1)))
    # d(pre_t) = 1.5, 1, 0 (the last unit is off; the first gets 1 + 0.5 * 1 through w_hh)
    assert dx.ravel().tolist() == [1.5, 1.0, 0.0]
    assert dparams["l0"]["w_ih"].tolist() == [[1 * 1.5 + 2 * 1.0]]
    assert dparams["l0"]["w_hh"].tolist() == [[0 * 1.5 + 1 * 1.0 + 2.5 * 0]]
    assert dparams["l0"]["b_ih"].tolist() == dparams["l0"]["b_hh"].tolist() == [2.5]
    assert dh0.ravel().tolist() == [0.75]


def test_hand_computed_lstm_with_zero_weights_halves_the_cell():
    # Zero weights and biases: i = f = o = 1/2 and g = 0, so c_t = c0 / 2^t and h_t = tanh(c_t) / 2.
    params = {"l0": {k: np.zeros(s) for k, s in (("w_ih", (2, 4)), ("w_hh", (1, 4)), ("b_ih", (4,)),
                                                  ("b_hh", (4,)))}}
    x = np.array([[[3.0, -1.0], [2.0, 5.0], [0.0, 1.0]]])
    c0 = np.full((1, 1, 1), 1.0)
    y, vjp = LSTM(1).apply(params, (x, np.zeros((1, 1, 1)), c0))
    c = 0.5 ** np.arange(1, 4)
    np.testing.assert_allclose(y.ravel(), 0.5 * np.tanh(c), rtol=1e-15)
    _, (dx, dh0, dc0) = vjp(np.ones((1, 3, 1)))
    assert not dx.any() and not dh0.any()  # zero weights: nothing flows to x or h0
    # dc_t = o * (1 - tanh(c_t)^2) from y_t, and dc_{t-1} = f * dc_t: dc0 = sum_t 0.5^t * 0.5 * sech^2(c_t)
    np.testing.assert_allclose(dc0.ravel(), [np.sum(0.5 ** np.arange(1, 4) * 0.5 * (1 - np.tanh(c) ** 2))],
                               rtol=1e-14)


def test_hand_computed_gru_reset_gate_multiplies_the_hidden_bias():
    # Zero weights, b_hn = 2: r = z = 1/2, n = tanh(r * b_hn) = tanh(1) (not tanh(2)), h' = (n + h) / 2
    b_hh = np.array([0.0, 0.0, 2.0])
    params = {"l0": {"w_ih": np.zeros((1, 3)), "w_hh": np.zeros((1, 3)), "b_ih": np.zeros(3), "b_hh": b_hh}}
    y, _ = GRU(1).apply(params, np.zeros((1, 3, 1)))
    t1 = math.tanh(1.0)
    np.testing.assert_allclose(y.ravel(), [0.5 * t1, 0.75 * t1, 0.875 * t1], rtol=1e-15)
    y, _ = GRU(1).apply(params, (np.zeros((1, 1, 1)), np.full((1, 1, 1), 4.0)))
    np.testing.assert_allclose(y.ravel(), [0.5 * t1 + 2.0], rtol=1e-15)


def test_bidirectional_output_is_forward_then_reverse_direction():
    cell, hidden = "gru", 2
    layer, params, x, _ = draw_inputs(cell, 2, 4, 3, hidden, 1, True, seed=5)
    y, _ = layer.apply(params, x)
    fwd, _ = make(cell, hidden).apply({"l0": params["l0"]}, x)
    rev, _ = make(cell, hidden).apply({"l0": params["l0_reverse"]}, x[:, ::-1].copy())
    np.testing.assert_array_equal(y[..., :hidden], fwd)
    np.testing.assert_allclose(y[..., hidden:], rev[:, ::-1], rtol=1e-15, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Purity, dtypes, need_dx, init, kind.


@pytest.mark.parametrize("cell", CELLS)
@given(**sizes, num_layers=st.integers(1, 2), bidirectional=st.booleans(), with_states=st.booleans())
@settings(max_examples=8)
def test_apply_and_vjp_are_pure(cell, n, steps, features, hidden, seed, num_layers, bidirectional, with_states):
    layer, params, x, states = draw_inputs(cell, n, steps, features, hidden, num_layers, bidirectional, seed)
    inp = (x, *states) if with_states else x
    y, _ = layer.apply(params, inp)
    dy, dy2 = (random.normal(k, y.shape, np.float64) for k in random.split(random.key(seed), 2))
    inputs = [x, *states, dy, *tree.leaves(params)]
    copies = [a.copy() for a in inputs]
    for a in inputs:
        a.setflags(write=False)  # any write into them raises

    y, vjp = layer.apply(params, inp)
    y2, vjp2 = layer.apply(params, inp)
    assert y.tobytes() == y2.tobytes()
    dp1, dx1 = vjp(dy)
    vjp(dy2)  # another cotangent in between must not disturb the cached values
    results = [vjp(dy), vjp2(dy)]
    flat1 = tree.leaves((dp1, dx1))
    for dp, dx in results:
        flat = tree.leaves((dp, dx))
        tree.check_same_structure((dp1, dx1), (dp, dx), shapes=True)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(flat1, flat))
    for a, c in zip(inputs, copies):
        assert a.tobytes() == c.tobytes()
    outputs = [y, *flat1]
    for i, out in enumerate(outputs):
        assert not any(np.shares_memory(out, a) for a in inputs)
        assert not any(np.shares_memory(out, b) for b in outputs[i + 1:])  # e.g. b_ih and b_hh grads
    if with_states:
        assert isinstance(dx1, tuple) and [d.shape for d in dx1] == [a.shape for a in inp]
    else:
        assert isinstance(dx1, np.ndarray) and dx1.shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_dtype_is_preserved(cell, dtype):
    layer, params, x, states = draw_inputs(cell, 2, 3, 2, 3, 2, True, seed=1, dtype=dtype)
    assert all(p.dtype == dtype for p in tree.leaves(params))
    for inp in (x, (x, *states)):
        y, vjp = layer.apply(params, inp)
        assert y.dtype == dtype
        dparams, dx = vjp(np.ones(y.shape, dtype))
        tree.check_same_structure(params, dparams, shapes=True)
        assert all(a.dtype == dtype for a in tree.leaves((dparams, dx)))
        other = np.float64 if dtype == np.float32 else np.float32
        with pytest.raises(TypeError, match="dy has dtype .* but the output y has dtype"):
            vjp(np.ones(y.shape, other))  # nothing is cast silently
    # float32 agrees with float64 to float32 precision
    p64, x64 = tree.astype(params, np.float64), x.astype(np.float64)
    y64, _ = layer.apply(p64, x64)
    np.testing.assert_allclose(layer.apply(params, x)[0], y64, rtol=1e-4 if dtype == np.float32 else 0, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("with_states", [False, True])
def test_vjp_without_dx_gives_the_same_dparams_and_no_dx(cell, with_states):
    layer, params, x, states = draw_inputs(cell, 3, 4, 2, 2, 2, True, seed=2)
    y, vjp = layer.apply(params, (x, *states) if with_states else x)
    dy = random.normal(KEY, y.shape, np.float64)
    full, _ = vjp(dy)
    dparams, dx = vjp(dy, need_dx=False)
    assert dx is None
    tree.check_same_structure(full, dparams, shapes=True)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(full), tree.leaves(dparams)))
    with pytest.raises(ValueError, match="dy has shape"):  # dy is still checked
        vjp(np.zeros((*y.shape, 1)), need_dx=False)


@pytest.mark.parametrize("cell", CELLS)
def test_init_is_pytorch_uniform_with_transposed_weights(cell):
    hidden, gates = 5, GATES[cell]
    params = make(cell, hidden, 2, True).init(KEY, (7, 3))
    assert list(params) == ["l0", "l0_reverse", "l1", "l1_reverse"]
    for name, p in params.items():
        f_in = 3 if name.startswith("l0") else 2 * hidden  # layer 1 reads both directions
        assert {k: v.shape for k, v in p.items()} == {"w_ih": (f_in, gates * hidden), "w_hh": (hidden, gates * hidden),
                                                        "b_ih": (gates * hidden,), "b_hh": (gates * hidden,)}
        assert all(v.dtype == np.float32 and np.abs(v).max() < 1 / math.sqrt(hidden) for v in p.values())
        assert max(np.abs(v).max() for v in p.values()) > 0.9 / math.sqrt(hidden)  # fills the range
    # every leaf is drawn independently
    leaves = [v.tobytes() for v in tree.leaves(params)]
    assert len(set(leaves)) == len(leaves)
    # deterministic, and the (x, h0[, c0]) shape form gives the same params
    again = make(cell, hidden, 2, True).init(KEY, ((7, 3), (4, hidden), (4, hidden))[:1 + n_states(cell)])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(params), tree.leaves(again)))


def test_kind_names_the_arguments():
    assert LSTM(8).kind == "LSTM(8)"
    assert GRU(4, num_layers=2, bidirectional=True).kind == "GRU(4, num_layers=2, bidirectional=True)"
    assert RNN(3, nonlinearity="relu").kind == "RNN(3, nonlinearity='relu')"
    assert repr(RNN(3)) == "RNN(3)"
    assert LastStep().kind == "LastStep()" and MeanOverTime().kind == "MeanOverTime()"


# ---------------------------------------------------------------------------------------------
# LastStep and MeanOverTime.


def test_hand_computed_last_step_and_mean_over_time():
    x = np.arange(12.0).reshape(2, 3, 2)
    dy = np.array([[1.0, -2.0], [3.0, 6.0]])
    y, vjp = LastStep().apply({}, x)
    assert y.tolist() == [[4.0, 5.0], [10.0, 11.0]]
    dparams, dx = vjp(dy)
    assert dparams == {}
    assert dx.tolist() == [[[0, 0], [0, 0], [1, -2]], [[0, 0], [0, 0], [3, 6]]]
    y, vjp = MeanOverTime().apply({}, x)
    assert y.tolist() == [[2.0, 3.0], [8.0, 9.0]]
    dparams, dx = vjp(dy)
    assert dparams == {}
    np.testing.assert_allclose(dx, [[[1 / 3, -2 / 3]] * 3, [[1.0, 2.0]] * 3], rtol=1e-15)


@pytest.mark.parametrize("layer", [LastStep(), MeanOverTime()], ids=["LastStep", "MeanOverTime"])
@given(n=st.integers(1, 3), steps=st.integers(1, 4), features=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_reductions_match_finite_differences_and_are_pure(layer, n, steps, features, seed):
    x = random.normal(random.key(seed), (n, steps, features), np.float64)
    errors = check_vjp(layer, {}, x, check_key=random.key(seed + 1))
    assert set(errors) == {"['x']"}
    x.setflags(write=False)
    y, vjp = layer.apply({}, x)
    dy = np.ones(y.shape, np.float64)
    _, dx = vjp(dy)
    assert y.shape == (n, features) and dx.shape == x.shape and dx.dtype == np.float64
    assert not np.shares_memory(y, x) and not np.shares_memory(dx, x)
    assert vjp(dy, need_dx=False) == ({}, None)
    y32, vjp32 = layer.apply({}, x.astype(np.float32))
    assert y32.dtype == np.float32 and vjp32(np.ones(y.shape, np.float32))[1].dtype == np.float32


@pytest.mark.parametrize("layer", [LastStep(), MeanOverTime()], ids=["LastStep", "MeanOverTime"])
def test_reductions_reject_inputs_that_are_not_sequences(layer):
    for shape in [(2, 3), (2, 3, 4, 5), (4,)]:
        with pytest.raises(ValueError, match=r"input must be \(N, T, F\) with T > 0, got shape"):
            layer.apply({}, np.zeros(shape))
    with pytest.raises(ValueError, match=r"with T > 0, got shape \(2, 0, 3\)"):
        layer.apply({}, np.zeros((2, 0, 3)))
    with pytest.raises(TypeError, match="input x has dtype int64"):
        layer.apply({}, np.zeros((2, 3, 4), np.int64))
    with pytest.raises(ValueError, match="has no parameters"):
        layer.apply({"w": np.zeros(1)}, np.zeros((2, 3, 4)))


@pytest.mark.parametrize("layer", [LastStep(), MeanOverTime()], ids=["LastStep", "MeanOverTime"])
def test_reductions_given_a_tuple_raise_type_error_not_attribute_error(layer):
    # Regression: an (x, h0) tuple reached x.ndim and surfaced as AttributeError.
    x = np.zeros((2, 3, 4))
    msg = f"{layer.kind}: input must be one array, got a tuple of 2"
    with pytest.raises(TypeError, match=re.escape(msg)):
        layer.apply({}, (x, np.zeros((2, 1, 4))))


# ---------------------------------------------------------------------------------------------
# Input, params and argument errors.


def lstm_case(hidden=4, num_layers=1, bidirectional=False, n=2, steps=3, features=3):
    return draw_inputs("lstm", n, steps, features, hidden, num_layers, bidirectional, seed=0)


@pytest.mark.parametrize("cell", CELLS)
def test_input_of_wrong_rank_or_without_time_steps_raises(cell):
    layer, params, x, states = draw_inputs(cell, 2, 3, 3, 2, 1, False, seed=0)
    for bad in (x[:, 0], x[..., None], x[0, 0]):
        with pytest.raises(ValueError, match=r"input must be \(N, T, F\), got shape " + re_shape(bad.shape)):
            layer.apply(params, bad)
    with pytest.raises(ValueError, match=r"no time steps \(T = 0\), shape \(2, 0, 3\)"):
        layer.apply(params, x[:, :0])
    with pytest.raises(ValueError, match=r"no time steps \(T = 0\)"):
        layer.apply(params, (x[:, :0], *states))


def re_shape(shape):
    return "\\(" + ", ".join(map(str, shape)) + (",\\)" if len(shape) == 1 else "\\)")


@pytest.mark.parametrize("cell", CELLS)
def test_feature_size_different_from_init_raises(cell):
    gates = GATES[cell]
    layer, params, _, _ = draw_inputs(cell, 2, 3, 3, 2, 1, False, seed=0)
    with pytest.raises(ValueError, match=re_shape((3, 2 * gates)) + " but the input needs " + re_shape((4, 2 * gates))):
        layer.apply(params, np.zeros((2, 3, 4)))


def test_integer_input_or_state_raises_type_error():
    layer, params, x, (h0, c0) = lstm_case()
    with pytest.raises(TypeError, match="input x has dtype int64; fnn layers take float32 or float64"):
        layer.apply(params, x.astype(np.int64))
    with pytest.raises(TypeError, match="input x has dtype int32"):
        layer.apply(params, (x, h0.astype(np.int32), c0))
    with pytest.raises(TypeError, match="must be a numpy array, got list"):
        layer.apply(params, (x, h0.tolist(), c0))


def test_tuple_of_the_wrong_arity_raises():
    layer, params, x, (h0, _) = lstm_case()
    with pytest.raises(ValueError, match=r"LSTM\(4\): a tuple input must be \(x, h0, c0\), got a tuple of 2"):
        layer.apply(params, (x, h0))
    with pytest.raises(ValueError, match=r"got a tuple of 1"):
        layer.apply(params, (x,))
    for cell in ("rnn_tanh", "gru"):
        layer, params, x, (h0,) = draw_inputs(cell, 2, 3, 3, 4, 1, False, seed=0)
        with pytest.raises(ValueError, match=r"a tuple input must be \(x, h0\), got a tuple of 3"):
            layer.apply(params, (x, h0, h0))


def test_initial_state_of_the_wrong_shape_or_dtype_raises():
    layer, params, x, (h0, c0) = lstm_case(num_layers=2, bidirectional=True)  # states (2, 4, 4)
    msg = r"initial states must be float64 arrays of shape \(2, 4, 4\), got "
    torch_layout = np.zeros((4, 2, 4))
    with pytest.raises(ValueError, match=msg + r"float64 \(4, 2, 4\)"):  # torch's (L * D, N, H)
        layer.apply(params, (x, h0, torch_layout))
    with pytest.raises(ValueError, match=msg + r"float64 \(2, 4\)"):
        layer.apply(params, (x, h0[:, 0], c0))
    with pytest.raises(ValueError, match=msg + r"float64 \(2, 2, 4\)"):  # one layer's worth
        layer.apply(params, (x, h0[:, :2], c0))
    with pytest.raises(ValueError, match=msg + r"float64 \(3, 4, 4\)"):  # another batch size
        layer.apply(params, (x, np.zeros((3, 4, 4)), c0))
    with pytest.raises(ValueError, match=msg + r"float32 \(2, 4, 4\)"):
        layer.apply(params, (x, h0, c0.astype(np.float32)))


def test_params_from_another_architecture_raise():
    layer, params, x, _ = lstm_case(hidden=4)
    with pytest.raises(ValueError, match=r"params has entries \['l0'\] but this layer expects \['l0', 'l0_reverse'\]"):
        LSTM(4, bidirectional=True).apply(params, x)
    with pytest.raises(ValueError, match=r"expects \['l0', 'l1'\]"):
        LSTM(4, num_layers=2).apply(params, x)
    with pytest.raises(ValueError, match=re.escape("LSTM(8) params['l0']: params['w_ih'] has shape (3, 16) "
                                                   "but the input needs (3, 32)")):
        LSTM(8).apply(params, x)  # another hidden size
    with pytest.raises(ValueError, match=re.escape("GRU(4) params['l0']: params['w_ih'] has shape (3, 16) "
                                                   "but the input needs (3, 12)")):
        GRU(4).apply(params, x)  # another cell
    bi = LSTM(4, bidirectional=True)
    bi_params = bi.init(KEY, (3, 3), np.float64)
    two = LSTM(4, num_layers=2, bidirectional=True).init(KEY, (3, 3), np.float64)
    with pytest.raises(ValueError, match=r"params has entries \['l0', 'l0_reverse', 'l1', 'l1_reverse'\]"):
        bi.apply(two, x)
    with pytest.raises(ValueError, match=r"params has entries \['l0', 'l0_reverse'\] but this layer expects"):
        LSTM(4, num_layers=2).apply(bi_params, x)
    with pytest.raises(ValueError, match=r"params has keys \['b_hh', 'b_ih', 'w_hh'\]"):
        layer.apply({"l0": {k: v for k, v in params["l0"].items() if k != "w_ih"}}, x)
    with pytest.raises(ValueError, match=r"params has entries list"):
        layer.apply([params["l0"]], x)
    with pytest.raises(TypeError, match=r"params\['w_ih'\] has dtype float32 but x has dtype float64"):
        layer.apply(tree.astype(params, np.float32), x)


@pytest.mark.parametrize("make_layer", [LSTM, GRU, RNN])
def test_bad_constructor_arguments_raise(make_layer):
    """Out of range: ValueError; not an int (a bool, a float, a string, None): TypeError. Both start with the kind."""
    name = make_layer.__name__
    for bad in (0, -1, np.int64(0)):
        with pytest.raises(ValueError, match=re.escape(f"{name}({bad!r}): hidden_size must be >= 1, got {bad}")):
            make_layer(bad)
        with pytest.raises(ValueError, match=re.escape(f"{name}(4, num_layers={bad!r}): num_layers must be >= 1, "
                                                       f"got {bad}")):
            make_layer(4, num_layers=bad)
    for bad in (2.0, True, np.bool_(True), "4", None):
        got = f"got {type(bad).__name__} {bad!r}"
        with pytest.raises(TypeError, match="^" + re.escape(f"{name}({bad!r}): hidden_size must be an int, {got}")):
            make_layer(bad)
        with pytest.raises(TypeError, match="^" + re.escape(f"{name}(4, num_layers={bad!r}): num_layers must be an "
                                                            f"int, {got}")):
            make_layer(4, num_layers=bad)


@pytest.mark.parametrize("make_layer", [LSTM, GRU, RNN])
def test_numpy_integer_arguments_are_accepted(make_layer):
    name = make_layer.__name__
    layer = make_layer(np.int64(3), num_layers=np.int32(2))
    assert layer.kind == f"{name}(3, num_layers=2)"
    params = layer.init(KEY, (2, 2))
    assert params["l1"]["w_hh"].shape[0] == 3
    assert layer.apply(params, np.ones((1, 2, 2), np.float32))[0].shape == (1, 2, 3)
    assert make_layer(np.uint8(4), num_layers=np.int64(1)).kind == f"{name}(4)"


def test_bad_nonlinearity_raises():
    for bad in ("sigmoid", "Tanh", ""):
        msg = f"RNN(4, nonlinearity={bad!r}): nonlinearity must be one of ['tanh', 'relu'], got {bad!r}"
        with pytest.raises(ValueError, match="^" + re.escape(msg)):
            RNN(4, nonlinearity=bad)
    for bad in (None, 1, True):
        msg = f"RNN(4, nonlinearity={bad!r}): nonlinearity must be one of ['tanh', 'relu'], got {type(bad).__name__}"
        with pytest.raises(TypeError, match="^" + re.escape(msg)):
            RNN(4, nonlinearity=bad)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("with_states", [False, True])
def test_module_level_functions_are_what_the_layer_runs(cell, with_states):
    layer, params, x, states = draw_inputs(cell, 2, 3, 2, 3, 2, True, seed=1)
    full = np.zeros((2, 4, 3)) if not with_states else None
    y, vjp = layer.apply(params, (x, *states) if with_states else x)
    y2, cache = recurrent.recurrent_forward(params, x, states if with_states else (full,) * n_states(cell),
                                            cell, 2, True, True)
    np.testing.assert_array_equal(y, y2)
    dy = random.normal(random.key(2), y.shape, np.float64)
    grads, dx, dstates = recurrent.recurrent_backward(cache, dy, True)
    assert tree.allclose(vjp(dy), (grads, (dx, *dstates) if with_states else dx), rtol=0, atol=0)
    grads_only, none, _ = recurrent.recurrent_backward(cache, dy, False)
    assert none is None and tree.allclose(grads_only, grads, rtol=0, atol=0)


def test_bad_init_shape_raises():
    for bad in [(3,), (2, 3, 4), (5, 0)]:
        with pytest.raises(ValueError, match=r"LSTM\(4\): init shape must be \(T, F\) with F > 0"):
            LSTM(4).init(KEY, bad)


# ---------------------------------------------------------------------------------------------
# Inside serial.


def test_serial_init_threads_shapes_and_gradients_flow():
    net = fnn.serial(LSTM(8), LastStep(), Dense(3))
    params = net.init(KEY, (5, 4))
    assert sorted(params) == ["dense_0", "last_step_0", "lstm_0"]
    assert params["lstm_0"]["l0"]["w_ih"].shape == (4, 32) and params["dense_0"]["w"].shape == (8, 3)
    assert params["last_step_0"] == {}
    assert fnn.output_shape(net, params, (5, 4)) == (3,)
    assert fnn.output_shape(net, params, (9, 4)) == (3,)  # T is not part of the params
    stack = fnn.serial(GRU(3, num_layers=2, bidirectional=True), MeanOverTime(), Dense(2))
    sp = stack.init(KEY, (4, 2), np.float64)
    assert sp["dense_0"]["w"].shape == (6, 2)
    x = random.normal(KEY, (2, 4, 2), np.float64)
    check_vjp(stack, sp, x)


def test_lstm_learns_which_feature_has_the_largest_sum():
    k_data, k_init = random.split(random.key(42))
    x = random.normal(k_data, (256, 6, 3), np.float32)
    labels = x.sum(axis=1).argmax(axis=1)
    net = fnn.serial(LSTM(8), LastStep(), Dense(3))
    params = net.init(k_init, (6, 3))
    opt = optim.adam(0.02)
    state = opt.init(params)
    history = []
    for _ in range(150):
        logits, vjp = net.apply(params, x)
        loss, dlogits = losses.softmax_cross_entropy(logits, labels)
        history.append(loss)
        grads, _ = vjp(dlogits, need_dx=False)
        params, state = opt.update(params, grads, state)
    assert history[0] > 1.0  # about ln 3 at init
    assert history[-1] < 0.25 * history[0], history[::10]
    assert losses.accuracy(net.apply(params, x)[0], labels) > 0.85
