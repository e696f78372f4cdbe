"""sgd against a hand-written reference of torch.optim.SGD's documented rule, schedules, state,
hyperparameter and structure errors, purity and dtypes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fnn import random, tree
from fnn.optim import sgd, weights_only

STEPS = 100


def make_params(dtype=np.float64):
    k1, k2, k3 = random.split(random.key(0), 3)
    return {"dense": {"w": random.normal(k1, (3, 2), dtype), "b": random.normal(k2, (2,), dtype)},
            "temperature": random.normal(k3, (), dtype)}


def grad_fn(params, t):
    """Gradient of a quadratic bowl plus a step-dependent pull, so the trajectory depends on the params."""
    return tree.map(lambda p: (1.5 * p + np.sin(t + p.size)).astype(p.dtype), params)


def torch_sgd_reference(params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, steps=STEPS):
    """torch.optim.SGD's documented algorithm, one leaf at a time (t counts from 1; ``lr`` may be a function of
    the number of updates already done)::

        g = grad + weight_decay * p                      (if weight_decay != 0)
        b = g  at t = 1,  else  momentum * b + (1 - dampening) * g     (if momentum != 0)
        g = g + momentum * b  if nesterov  else  b                      (if momentum != 0)
        p = p - lr * g
    """
    pairs, rebuild = tree.flatten(params)
    p = [leaf.copy() for _, leaf in pairs]
    b = [None] * len(p)
    for t in range(1, steps + 1):
        grads = tree.leaves(grad_fn(rebuild(p), t))
        rate = lr(t - 1) if callable(lr) else lr
        for i in range(len(p)):
            g = grads[i]
            if weight_decay != 0:
                g = g + weight_decay * p[i]
            if momentum != 0:
                if b[i] is None:
                    b[i] = g.copy()
                else:
                    b[i] = momentum * b[i] + (1 - dampening) * g
                if nesterov:
                    g = g + momentum * b[i]
                else:
                    g = b[i]
            p[i] = p[i] - rate * g
    return rebuild(p), (rebuild(b) if momentum else None)


def run_sgd(opt, params, steps=STEPS):
    state = opt.init(params)
    for t in range(1, steps + 1):
        params, state = opt.update(params, grad_fn(params, t), state)
    return params, state


def assert_trees_close(a, b, tol=1e-12):
    tree.check_same_structure(a, b, shapes=True)
    for x, y in zip(tree.leaves(a), tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "momentum+dampening": dict(lr=0.05, momentum=0.9, dampening=0.3),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "everything": dict(lr=0.02, momentum=0.8, dampening=0.1, weight_decay=1e-3),
    "nesterov+weight_decay": dict(lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_torch_reference_over_100_steps(name):
    cfg = CONFIGS[name]
    params, state = run_sgd(sgd(**cfg), make_params())
    ref_params, ref_bufs = torch_sgd_reference(make_params(), **cfg)
    assert_trees_close(params, ref_params)
    assert int(state["step"]) == STEPS
    if ref_bufs is not None:
        assert_trees_close(state["momentum"], ref_bufs)
    assert not tree.allclose(params, make_params())  # it did move


@settings(deadline=None)
@given(lr=st.floats(0.0, 0.2), momentum=st.one_of(st.just(0.0), st.floats(0.0, 0.95)),
       dampening=st.floats(0.0, 1.0), weight_decay=st.one_of(st.just(0.0), st.floats(0.0, 0.5)),
       nesterov=st.booleans())
def test_matches_torch_reference_for_any_hyperparameters(lr, momentum, dampening, weight_decay, nesterov):
    if nesterov:
        momentum, dampening = max(momentum, 0.1), 0.0
    cfg = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    params, state = run_sgd(sgd(**cfg), make_params(), steps=30)
    ref_params, ref_bufs = torch_sgd_reference(make_params(), **cfg, steps=30)
    assert_trees_close(params, ref_params)
    if momentum:
        assert_trees_close(state["momentum"], ref_bufs)


def test_schedule_is_called_with_the_number_of_updates_done():
    calls = []

    def schedule(step):
        calls.append(step)
        return 0.2 * 0.9 ** step

    params, _ = run_sgd(sgd(schedule, momentum=0.5), make_params())
    ref, _ = torch_sgd_reference(make_params(), lambda step: 0.2 * 0.9 ** step, momentum=0.5)
    assert calls == list(range(STEPS))
    assert_trees_close(params, ref)


def test_plain_step_by_hand():
    opt = sgd(0.5)
    params, state = opt.update({"w": np.array([1.0, 2.0])}, {"w": np.array([0.2, -4.0])}, opt.init({"w": np.zeros(2)}))
    assert params["w"].tolist() == [0.9, 4.0] and state["step"] == 1 and set(state) == {"step"}


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_schedule_giving_a_bad_rate_raises(bad):
    opt = sgd(lambda step: bad)
    params = make_params()
    with pytest.raises(ValueError, match=f"sgd: the learning-rate schedule gave {bad!r} at step 0"):
        opt.update(params, params, opt.init(params))


def test_state_and_resuming_from_a_saved_state():
    opt = sgd(0.05, momentum=0.9, weight_decay=0.01)
    params = make_params()
    state = opt.init(params)
    assert set(state) == {"step", "momentum"} and state["step"].dtype == np.int64 and int(state["step"]) == 0
    tree.check_same_structure(params, state["momentum"], shapes=True)
    assert all(not m.any() for m in tree.leaves(state["momentum"]))
    assert set(sgd(0.1).init(params)) == {"step"}

    straight, straight_state = run_sgd(opt, params, steps=20)
    half, half_state = run_sgd(opt, params, steps=10)
    saved = tree.map(np.copy, half_state)
    for t in range(11, 21):
        half, saved = opt.update(half, grad_fn(half, t), saved)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(half), tree.leaves(straight), strict=True))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(saved), tree.leaves(straight_state), strict=True))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=-0.1), ValueError, "^sgd: lr must be in \\[0, inf\\], got -0.1"),
    (dict(lr=math.nan), ValueError, "sgd: lr must be"),
    (dict(lr=math.inf), ValueError, "sgd: lr must be"),
    (dict(lr="0.1"), TypeError, "^sgd: lr must be a number, got str '0.1'"),
    (dict(lr=True), TypeError, "sgd: lr must be a number"),
    (dict(lr=None), TypeError, "sgd: lr must be a number"),
    (dict(lr=0.1, momentum=-0.5), ValueError, "sgd: momentum must be"),
    (dict(lr=0.1, momentum=math.nan), ValueError, "sgd: momentum must be"),
    (dict(lr=0.1, dampening=1.5), ValueError, "^sgd: dampening must be in \\[0, 1\\], got 1.5"),
    (dict(lr=0.1, dampening=-0.1), ValueError, "sgd: dampening must be"),
    (dict(lr=0.1, weight_decay=-1e-4), ValueError, "sgd: weight_decay must be"),
    (dict(lr=0.1, weight_decay=math.inf), ValueError, "sgd: weight_decay must be"),
    (dict(lr=0.1, nesterov=True), ValueError, "sgd: nesterov needs momentum > 0 and dampening = 0"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "nesterov needs"),
    (dict(lr=0.1, momentum="0.9"), TypeError, "^sgd: momentum must be a number, got str '0.9'"),
    (dict(lr=0.1, momentum=True), TypeError, "^sgd: momentum must be a number, got bool True"),
    (dict(lr=0.1, dampening=None), TypeError, "^sgd: dampening must be a number, got NoneType None"),
    (dict(lr=0.1, weight_decay="0"), TypeError, "^sgd: weight_decay must be a number, got str"),
    (dict(lr=0.1, momentum=0.9, nesterov="yes"), TypeError, "^sgd: nesterov must be True or False, got str 'yes'"),
    (dict(lr=0.1, momentum=0.9, nesterov=1), TypeError, "^sgd: nesterov must be True or False, got int 1"),
    (dict(lr=np.float32(-0.1)), ValueError, "^sgd: lr must be in \\[0, inf\\]"),
])
def test_invalid_hyperparameters_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        sgd(**kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_scalar_hyperparameters_are_accepted_as_python_numbers(dtype):
    params = make_params(dtype)
    numpy_kwargs = dict(momentum=np.float64(0.9), weight_decay=np.float32(1e-3), nesterov=np.bool_(True))
    got, got_state = run_sgd(sgd(np.float32(0.1), **numpy_kwargs), params, steps=5)
    want, want_state = run_sgd(sgd(float(np.float32(0.1)), momentum=0.9, weight_decay=float(np.float32(1e-3)),
                                   nesterov=True), params, steps=5)
    assert all(a.dtype == dtype and a.tobytes() == b.tobytes()
               for a, b in zip(tree.leaves(got), tree.leaves(want), strict=True))
    assert all(a.tobytes() == b.tobytes()
               for a, b in zip(tree.leaves(got_state), tree.leaves(want_state), strict=True))
    damped, _ = run_sgd(sgd(np.float64(0.05), momentum=np.int64(1), dampening=np.float32(0.5)), params, steps=3)
    assert all(a.dtype == dtype for a in tree.leaves(damped))


def missing_key(t):
    t = tree.map(lambda x: x, t)
    del t["dense"]["b"]
    return t


def extra_key(t):
    t = tree.map(lambda x: x, t)
    t["dense"]["gain"] = np.ones(2)
    return t


def wrong_shape(t):
    t = tree.map(lambda x: x, t)
    t["dense"]["w"] = np.ones((2, 3))
    return t


MISMATCHES = [
    (missing_key, "in structure at \\['dense'\\]: missing key\\(s\\) 'b'"),
    (extra_key, "in structure at \\['dense'\\]: unexpected key\\(s\\) 'gain'"),
    (wrong_shape, "in shape at \\['dense'\\]\\['w'\\]: \\(3, 2\\) vs \\(2, 3\\)"),
]


@pytest.mark.parametrize("mutate, match", MISMATCHES)
def test_grads_of_another_structure_raise_naming_the_key_path(mutate, match):
    opt = sgd(0.1, momentum=0.9)
    params = make_params()
    with pytest.raises(ValueError, match=f"^sgd: params and grads differ {match}"):
        opt.update(params, mutate(params), opt.init(params))


@pytest.mark.parametrize("mutate, match", MISMATCHES)
def test_state_of_another_structure_raises_naming_the_key_path(mutate, match):
    opt = sgd(0.1, momentum=0.9)
    params = make_params()
    state = {"step": np.array(0), "momentum": mutate(tree.zeros_like(params))}
    with pytest.raises(ValueError, match=f"^sgd: params and state\\['momentum'\\] differ {match}"):
        opt.update(params, params, state)


def test_state_from_another_optimizer_raises():
    params = make_params()
    with pytest.raises(ValueError, match="sgd: state must be the dict made by this optimizer's init, "
                                         "with keys \\['momentum', 'step'\\]; got \\['step'\\]"):
        sgd(0.1, momentum=0.9).update(params, params, sgd(0.1).init(params))


@pytest.mark.parametrize("cfg", [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.1, momentum=0.9, nesterov=True),
                                 dict(lr=0.1, momentum=0.9, weight_decay=0.1)])
def test_update_is_pure_and_outputs_do_not_alias_inputs(cfg):
    opt = sgd(**cfg)
    params = make_params()
    state = opt.init(params)
    params, state = opt.update(params, grad_fn(params, 1), state)  # a state with non-zero buffers
    grads = grad_fn(params, 2)
    inputs = [*tree.leaves(params), *tree.leaves(grads), *tree.leaves(state)]
    copies = [a.copy() for a in inputs]
    for a in inputs:
        a.setflags(write=False)
    (p1, s1), (p2, s2) = opt.update(params, grads, state), opt.update(params, grads, state)
    assert all(a.tobytes() == c.tobytes() for a, c in zip(inputs, copies, strict=True))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves((p1, s1)), tree.leaves((p2, s2)), strict=True))
    assert not any(np.shares_memory(out, a) for out in tree.leaves((p1, s1)) for a in inputs)


def test_first_momentum_buffer_is_a_copy_of_the_gradient():
    """Regression: on the first step the buffer was the caller's gradient array itself, so changing the gradient
    in place afterwards (accumulating into a reused buffer) changed the optimizer state."""
    opt = sgd(0.1, momentum=0.9)
    params = {"w": np.ones(3)}
    grads = {"w": np.array([1.0, 2.0, 3.0])}
    _, state = opt.update(params, grads, opt.init(params))
    grads["w"] *= 100
    assert state["momentum"]["w"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("cfg", [dict(lr=0.1), dict(lr=0.1, momentum=0.9, weight_decay=0.1)])
def test_zero_dimensional_params_stay_arrays(cfg):
    """Regression: a 0-d leaf came back as a numpy scalar, which layers then reject as not an array."""
    opt = sgd(**cfg)
    params = {"temperature": np.array(1.5)}
    new, state = opt.update(params, {"temperature": np.array(0.5)}, opt.init(params))
    new, state = opt.update(new, {"temperature": np.array(0.5)}, state)
    for leaf in tree.leaves((new, state)):
        assert isinstance(leaf, np.ndarray)


@pytest.mark.parametrize("cfg", [dict(lr=0.1), dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                                 dict(lr=0.1, momentum=0.9, dampening=0.5)])
def test_float32_params_keep_float32(cfg):
    params, state = run_sgd(sgd(**cfg), make_params(np.float32), steps=3)
    assert all(leaf.dtype == np.float32 for leaf in tree.leaves(params))
    assert all(leaf.dtype == np.float32 for leaf in tree.leaves(state.get("momentum", {})))


def test_decay_mask_weights_only_leaves_biases_undecayed():
    params = {"w": np.ones((2, 2)), "b": np.ones(2)}
    zero = tree.zeros_like(params)
    opt = sgd(0.5, weight_decay=0.1, decay_mask=weights_only)
    new, _ = opt.update(params, zero, opt.init(params))
    assert new["w"].tolist() == [[0.95, 0.95]] * 2 and new["b"].tolist() == [1.0, 1.0]
