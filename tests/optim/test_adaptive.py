"""Adagrad, RMSprop, Adam and AdamW: convergence on a quadratic, a hand-written float64 reference
of each published update rule (PyTorch's documented algorithms, written out here independently of
fnn), torch.optim itself when importable, purity, dtypes, hyperparameter errors, and the grads /
state structure checks that every optimizer shares."""

import math

import numpy as np
import pytest
from optim_testing import check_update_is_pure, run_updates

from fnn import optim, random, tree

# ----------------------------------------------------------------------------------------------
# A well-conditioned quadratic on a small tree: f(p) = sum 0.5 * a * (p - c)^2 over the leaves


def quadratic_problem(seed=0, dtype=np.float64):
    k = random.split(random.key(seed), 6)
    params = {"layer": {"w": random.normal(k[0], (3, 4), dtype), "b": random.normal(k[1], (4,), dtype)},
              "scale": random.normal(k[2], (), dtype)}
    curvature = {"layer": {"w": random.uniform(k[3], (3, 4), dtype, 0.5, 2.0),
                           "b": random.uniform(k[4], (4,), dtype, 0.5, 2.0)},
                 "scale": np.asarray(1.5, dtype)}
    centre = tree.map(lambda p: p + 2.0, params)
    return params, curvature, centre


def loss(params, curvature, centre):
    return sum(float(0.5 * np.sum(a * (p - c) ** 2)) for p, a, c in
               zip(tree.leaves(params), tree.leaves(curvature), tree.leaves(centre)))


def grad(params, curvature, centre):
    return tree.map(lambda p, a, c: a * (p - c), params, curvature, centre)


# ----------------------------------------------------------------------------------------------
# References: PyTorch's documented algorithms (torch.optim docs), one numpy array at a time.


def ref_adagrad(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    def init(p):
        return {"sum": np.full_like(p, initial_accumulator_value)}

    def step(p, g, s, t):
        lr_t = lr / (1 + (t - 1) * lr_decay)
        if weight_decay != 0:
            g = g + weight_decay * p
        s["sum"] = s["sum"] + g ** 2
        return p - lr_t * g / (np.sqrt(s["sum"]) + eps)

    return init, step


def ref_rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    def init(p):
        return {"v": np.zeros_like(p), "b": np.zeros_like(p), "g_ave": np.zeros_like(p)}

    def step(p, g, s, t):
        if weight_decay != 0:
            g = g + weight_decay * p
        s["v"] = alpha * s["v"] + (1 - alpha) * g ** 2
        v_tilde = s["v"]
        if centered:
            s["g_ave"] = s["g_ave"] * alpha + (1 - alpha) * g
            v_tilde = v_tilde - s["g_ave"] ** 2
        if momentum > 0:
            s["b"] = momentum * s["b"] + g / (np.sqrt(v_tilde) + eps)
            return p - lr * s["b"]
        return p - lr * g / (np.sqrt(v_tilde) + eps)

    return init, step


def ref_adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    """Adam (coupled L2: g += wd * p) and, with ``decoupled``, AdamW (p -= lr * wd * p first)."""
    b1, b2 = betas

    def init(p):
        return {"m": np.zeros_like(p), "v": np.zeros_like(p), "v_max": np.zeros_like(p)}

    def step(p, g, s, t):
        if decoupled:
            p = p - lr * weight_decay * p
        elif weight_decay != 0:
            g = g + weight_decay * p
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g ** 2
        m_hat = s["m"] / (1 - b1 ** t)
        if amsgrad:
            s["v_max"] = np.maximum(s["v_max"], s["v"])
            v_hat = s["v_max"] / (1 - b2 ** t)
        else:
            v_hat = s["v"] / (1 - b2 ** t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)

    return init, step


def ref_adamw(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    return ref_adam(lr, betas, eps, weight_decay, amsgrad, decoupled=True)


# (name, fnn constructor, reference constructor, torch class name, kwargs)
CONFIGS = [
    ("adagrad", optim.adagrad, ref_adagrad, "Adagrad", {"lr": 0.1}),
    ("adagrad-decay-init-wd", optim.adagrad, ref_adagrad, "Adagrad",
     {"lr": 0.3, "lr_decay": 0.01, "initial_accumulator_value": 0.5, "weight_decay": 0.05}),
    ("rmsprop", optim.rmsprop, ref_rmsprop, "RMSprop", {"lr": 0.01}),
    ("rmsprop-centered", optim.rmsprop, ref_rmsprop, "RMSprop", {"lr": 0.01, "centered": True}),
    ("rmsprop-momentum", optim.rmsprop, ref_rmsprop, "RMSprop", {"lr": 0.002, "momentum": 0.9}),
    ("rmsprop-centered-momentum-wd", optim.rmsprop, ref_rmsprop, "RMSprop",
     {"lr": 0.002, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("adam", optim.adam, ref_adam, "Adam", {"lr": 0.02}),
    ("adam-amsgrad", optim.adam, ref_adam, "Adam", {"lr": 0.02, "betas": (0.8, 0.99), "amsgrad": True}),
    ("adam-weight-decay", optim.adam, ref_adam, "Adam", {"lr": 0.02, "weight_decay": 0.1}),
    ("adamw", optim.adamw, ref_adamw, "AdamW", {"lr": 0.02}),
    ("adamw-amsgrad", optim.adamw, ref_adamw, "AdamW",
     {"lr": 0.02, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True}),
]
IDS = [c[0] for c in CONFIGS]


def run_fnn(make, kwargs, steps, dtype=np.float64, seed=0):
    params, a, c = quadratic_problem(seed, dtype)
    return run_updates(make(**kwargs), params, lambda p, _: grad(p, a, c), steps)


@pytest.mark.parametrize("name, make, ref, torch_name, kwargs", CONFIGS, ids=IDS)
def test_matches_the_reference_update_rule_over_100_steps(name, make, ref, torch_name, kwargs):
    trajectory, state = run_fnn(make, kwargs, 100)
    assert int(state["step"]) == 100
    params, a, c = quadratic_problem()
    init, step = ref(**kwargs)
    leaves = tree.leaves(params)
    states = [init(p) for p in leaves]
    a_leaves, c_leaves = tree.leaves(a), tree.leaves(c)
    for t in range(1, 101):
        leaves = [step(p, ai * (p - ci), s, t) for p, ai, ci, s in zip(leaves, a_leaves, c_leaves, states)]
        got = tree.leaves(trajectory[t])
        for g, want in zip(got, leaves):
            np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12, err_msg=f"{name} step {t}")


@pytest.mark.parametrize("name, make, ref, torch_name, kwargs", CONFIGS, ids=IDS)
def test_matches_torch_optim_over_100_steps(name, make, ref, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    trajectory, _ = run_fnn(make, kwargs, 100)
    params, a, c = quadratic_problem()
    pairs, _ = tree.flatten(params)
    tensors = [torch.tensor(np.array(p, np.float64), requires_grad=True) for _, p in pairs]
    a_leaves, c_leaves = tree.leaves(a), tree.leaves(c)
    opt = getattr(torch.optim, torch_name)(tensors, foreach=False, **kwargs)
    for t in range(1, 101):
        opt.zero_grad()
        for tensor, ai, ci in zip(tensors, a_leaves, c_leaves):
            tensor.grad = torch.from_numpy(np.asarray(ai * (tensor.detach().numpy() - ci)))
        opt.step()
        for got, tensor in zip(tree.leaves(trajectory[t]), tensors):
            np.testing.assert_allclose(got, tensor.detach().numpy(), rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name} step {t}")


@pytest.mark.parametrize("name, make, ref, torch_name, kwargs", CONFIGS, ids=IDS)
def test_converges_on_a_quadratic(name, make, ref, torch_name, kwargs):
    kwargs = {**kwargs, "weight_decay": 0.0}  # decay moves the minimum; convergence is about the rule
    _, a, c = quadratic_problem()
    trajectory, _ = run_fnn(make, kwargs, 600)
    first, last = loss(trajectory[0], a, c), loss(trajectory[-1], a, c)
    assert last < first / 1000, (first, last)


@pytest.mark.parametrize("name, make, ref, torch_name, kwargs", CONFIGS, ids=IDS)
def test_float32_params_keep_float32(name, make, ref, torch_name, kwargs):
    trajectory, state = run_fnn(make, kwargs, 3, dtype=np.float32)
    for leaf in tree.leaves(trajectory[-1]):
        assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float32
    for name_, buffer in state.items():
        if name_ != "step":
            tree.check_same_structure(trajectory[-1], buffer, shapes=True)
            assert all(isinstance(b, np.ndarray) and b.dtype == np.float32 for b in tree.leaves(buffer))
    assert state["step"].dtype == np.int64


@pytest.mark.parametrize("name, make, ref, torch_name, kwargs", CONFIGS, ids=IDS)
def test_update_is_pure(name, make, ref, torch_name, kwargs):
    params, a, c = quadratic_problem()
    opt = make(**kwargs)
    state = opt.init(params)
    params, state = opt.update(params, grad(params, a, c), state)  # non-zero buffers
    check_update_is_pure(opt.update, params, grad(params, a, c), state)


def test_state_names_and_buffers():
    params = {"w": np.zeros((2, 2))}
    assert set(optim.adagrad().init(params)) == {"step", "sum"}
    assert set(optim.rmsprop().init(params)) == {"step", "square_avg"}
    assert set(optim.rmsprop(centered=True, momentum=0.9).init(params)) == {"step", "square_avg", "grad_avg",
                                                                            "momentum"}
    assert set(optim.adam().init(params)) == {"step", "exp_avg", "exp_avg_sq"}
    assert set(optim.adamw(amsgrad=True).init(params)) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    state = optim.adam().init(params)
    assert int(state["step"]) == 0 and state["exp_avg"]["w"].tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_adam_first_step_hand_computed():
    # On step 1 the bias corrections make m_hat = g and v_hat = g^2: the step is lr * g / (|g| + eps)
    p = {"w": np.array([1.0, -2.0, 0.0])}
    g = {"w": np.array([0.5, -4.0, 0.0])}
    new, _ = optim.adam(lr=0.1, eps=1e-8).update(p, g, optim.adam().init(p))
    np.testing.assert_allclose(new["w"], [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 4.0 / (4.0 + 1e-8), 0.0],
                               rtol=1e-14)


def test_adagrad_initial_accumulator_and_lr_decay_hand_computed():
    opt = optim.adagrad(lr=1.0, lr_decay=0.5, initial_accumulator_value=3.0, eps=0.0)
    p, g = {"w": np.array([0.0])}, {"w": np.array([1.0])}
    state = opt.init(p)
    p, state = opt.update(p, g, state)  # sum = 3 + 1 = 4, lr = 1: step 1 / 2
    assert p["w"].tolist() == [-0.5]
    p, state = opt.update(p, g, state)  # sum = 5, lr = 1 / 1.5
    np.testing.assert_allclose(p["w"], [-0.5 - 1 / 1.5 / math.sqrt(5)], rtol=1e-15)


def test_adagrad_initial_accumulator_is_the_state_right_after_init():
    """Regression: the "sum" buffer started at zero and initial_accumulator_value was added at step 1,
    so the state after init (what a checkpoint saves, what a frozen leaf keeps) was not torch's."""
    params = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(3)}
    state = optim.adagrad(initial_accumulator_value=0.25).init(params)
    assert state["sum"]["w"].dtype == np.float32 and state["sum"]["w"].tolist() == [[0.25, 0.25], [0.25, 0.25]]
    assert state["sum"]["b"].tolist() == [0.25, 0.25, 0.25]
    # a leaf without a gradient at step 1 keeps the initial value and takes torch's first step later
    opt = optim.adagrad(lr=1.0, initial_accumulator_value=3.0, eps=0.0)
    p = {"a": np.array([0.0]), "b": np.array([0.0])}
    p, state = opt.update(p, {"a": np.array([1.0]), "b": None}, opt.init(p))
    assert state["sum"]["b"].tolist() == [3.0]
    p, state = opt.update(p, {"a": None, "b": np.array([1.0])}, state)
    assert state["sum"]["b"].tolist() == [4.0] and p["b"].tolist() == [-0.5]


def test_schedule_changes_each_update_like_a_constant_lr_of_that_step():
    """An optimizer given a schedule takes at step t exactly the step the same optimizer with the
    constant lr schedule(t) would take from the same state."""
    schedule = optim.step_decay(0.05, step_size=3, gamma=0.5)
    params, a, c = quadratic_problem()
    scheduled = optim.adam(lr=schedule, weight_decay=0.01)
    state = scheduled.init(params)
    for t in range(10):
        g = grad(params, a, c)
        fixed = optim.adam(lr=schedule(t), weight_decay=0.01)
        want_p, want_s = fixed.update(params, g, state)
        params, state = scheduled.update(params, g, state)
        for u, v in zip(tree.leaves((params, state)), tree.leaves((want_p, want_s))):
            assert u.tobytes() == v.tobytes()


def test_schedule_is_called_with_the_step_count_from_the_state():
    calls = []

    def schedule(step):
        calls.append(step)
        return 0.1

    opt = optim.rmsprop(lr=schedule)
    params = {"w": np.ones(2)}
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.update(params, {"w": np.ones(2)}, state)
    assert calls == [0, 1, 2]
    resumed = {**state, "step": np.array(40, np.int64)}  # e.g. restored from a checkpoint
    opt.update(params, {"w": np.ones(2)}, resumed)
    assert calls[-1] == 40


def test_sgd_follows_a_schedule_by_hand():
    schedule = optim.exponential(1.0, gamma=0.5)
    opt = optim.sgd(lr=schedule)
    p = {"w": np.array([8.0])}
    state = opt.init(p)
    values = []
    for _ in range(4):
        p, state = opt.update(p, {"w": np.array([1.0])}, state)
        values.append(float(p["w"][0]))
    assert values == [7.0, 6.5, 6.25, 6.125]


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), None])
@pytest.mark.parametrize("make", [optim.adagrad, optim.rmsprop, optim.adam, optim.adamw])
def test_schedule_returning_a_bad_lr_raises_at_update(make, bad):
    opt = make(lr=lambda step: 0.1 if step < 2 else bad)
    params = {"w": np.ones(2)}
    state = opt.init(params)
    for _ in range(2):
        params, state = opt.update(params, {"w": np.ones(2)}, state)
    with pytest.raises(ValueError, match="the learning-rate schedule gave .* at step 2; expected a finite number >= 0"):
        opt.update(params, {"w": np.ones(2)}, state)


@pytest.mark.parametrize("make, kwargs, match", [
    (optim.adagrad, {"lr": -1e-3}, "lr"),
    (optim.adagrad, {"lr": float("nan")}, "lr"),
    (optim.adagrad, {"lr_decay": -0.1}, "lr_decay"),
    (optim.adagrad, {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
    (optim.adagrad, {"eps": -1e-10}, "eps"),
    (optim.adagrad, {"weight_decay": float("nan")}, "weight_decay"),
    (optim.rmsprop, {"lr": -1.0}, "lr"),
    (optim.rmsprop, {"alpha": 1.5}, "alpha"),
    (optim.rmsprop, {"alpha": -0.5}, "alpha"),
    (optim.rmsprop, {"eps": -1e-8}, "eps"),
    (optim.rmsprop, {"momentum": -0.9}, "momentum"),
    (optim.rmsprop, {"weight_decay": -1.0}, "weight_decay"),
    (optim.adam, {"lr": -1e-3}, "lr"),
    (optim.adam, {"lr": float("inf")}, "lr"),
    (optim.adam, {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    (optim.adam, {"betas": (0.9, 1.0)}, r"betas\[1\]"),
    (optim.adam, {"betas": (-0.1, 0.999)}, r"betas\[0\]"),
    (optim.adam, {"betas": (0.9, float("nan"))}, r"betas\[1\]"),
    (optim.adam, {"eps": -1e-8}, "eps"),
    (optim.adam, {"weight_decay": -0.1}, "weight_decay"),
    (optim.adamw, {"lr": float("nan")}, "lr"),
    (optim.adamw, {"betas": (0.9, 1.5)}, r"betas\[1\]"),
    (optim.adamw, {"eps": float("nan")}, "eps"),
    (optim.adamw, {"weight_decay": -0.01}, "weight_decay"),
])
def test_invalid_hyperparameters_raise_at_construction(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_non_numeric_hyperparameters_raise_type_error():
    with pytest.raises(TypeError, match="lr must be a number"):
        optim.adam(lr="0.1")
    with pytest.raises(TypeError, match="eps must be a number"):
        optim.rmsprop(eps=True)
    with pytest.raises(TypeError, match="decay_mask"):
        optim.adamw(decay_mask=[True])


@pytest.mark.parametrize("make, kwargs, match", [
    (optim.adam, {"betas": (0.9,)}, r"^adam: betas must be a pair of numbers, got tuple \(0\.9,\)"),
    (optim.adam, {"betas": 0.9}, r"^adam: betas must be a pair of numbers, got float 0\.9"),
    (optim.adamw, {"betas": (0.9, 0.99, 0.999)}, "^adamw: betas must be a pair"),
    (optim.adam, {"betas": ("0.9", 0.999)}, r"^adam: betas\[0\] must be a number, got str '0\.9'"),
    (optim.adam, {"betas": (0.9, True)}, r"^adam: betas\[1\] must be a number, got bool True"),
    (optim.adam, {"amsgrad": "no"}, "^adam: amsgrad must be True or False, got str 'no'"),
    (optim.adamw, {"amsgrad": 1}, "^adamw: amsgrad must be True or False, got int 1"),
    (optim.rmsprop, {"centered": "False"}, "^rmsprop: centered must be True or False, got str 'False'"),
    (optim.rmsprop, {"alpha": "0.99"}, "^rmsprop: alpha must be a number, got str"),
    (optim.adagrad, {"lr_decay": None}, "^adagrad: lr_decay must be a number, got NoneType None"),
    (optim.adagrad, {"initial_accumulator_value": False}, "^adagrad: initial_accumulator_value must be a number"),
    (optim.adamw, {"weight_decay": "0.01"}, "^adamw: weight_decay must be a number"),
])
def test_hyperparameters_of_the_wrong_kind_raise_type_error(make, kwargs, match):
    with pytest.raises(TypeError, match=match):
        make(**kwargs)


@pytest.mark.parametrize("make, kwargs, match", [
    (optim.adam, {"betas": (1.0, 0.999)}, r"^adam: betas\[0\] must be in \[0, 1\), got 1\.0"),
    (optim.rmsprop, {"alpha": 1.5}, r"^rmsprop: alpha must be in \[0, 1\], got 1\.5"),
    (optim.adagrad, {"eps": -1.0}, r"^adagrad: eps must be in \[0, inf\], got -1\.0"),
    (optim.adamw, {"lr": float("nan")}, "^adamw: lr must be a finite number, got nan"),
])
def test_out_of_range_messages_name_the_function_and_the_interval(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


@pytest.mark.parametrize("make, kwargs", [
    (optim.adagrad, {"lr": np.float32(0.01), "lr_decay": np.float64(0.1), "weight_decay": np.float32(1e-4),
                     "initial_accumulator_value": np.int64(1), "eps": np.float64(1e-10)}),
    (optim.rmsprop, {"lr": np.float64(0.01), "alpha": np.float32(0.9), "eps": np.float32(1e-8),
                     "weight_decay": np.int32(0), "momentum": np.float64(0.5), "centered": np.bool_(True)}),
    (optim.adam, {"lr": np.float32(1e-3), "betas": (np.float32(0.9), np.float64(0.999)), "eps": np.float64(1e-8),
                  "weight_decay": np.float32(0.0), "amsgrad": np.bool_(True)}),
    (optim.adamw, {"lr": np.float64(1e-3), "betas": [np.float64(0.8), 0.99], "weight_decay": np.float32(0.01)}),
])
def test_numpy_scalar_hyperparameters_are_accepted_and_give_the_python_number_result(make, kwargs):
    plain = {k: (type(v)(float(x) for x in v) if isinstance(v, (tuple, list)) else
                 bool(v) if isinstance(v, np.bool_) else float(v)) for k, v in kwargs.items()}
    params = tree.astype(quadratic_problem()[0], np.float32)
    grads = tree.map(lambda p: np.full_like(p, 0.5), params)
    got, _ = make(**kwargs).update(params, grads, make(**kwargs).init(params))
    want, _ = make(**plain).update(params, grads, make(**plain).init(params))
    assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(got), tree.leaves(want)))


# ----------------------------------------------------------------------------------------------
# grads and state that do not match params, in every optimizer

ALL_OPTIMIZERS = [
    ("sgd", lambda: optim.sgd(0.1)),
    ("sgd-momentum", lambda: optim.sgd(0.1, momentum=0.9)),
    ("adagrad", optim.adagrad),
    ("rmsprop", lambda: optim.rmsprop(centered=True, momentum=0.5)),
    ("adam", optim.adam),
    ("adamw", lambda: optim.adamw(amsgrad=True)),
]


def good_tree():
    return {"enc": {"w": np.ones((2, 3)), "b": np.zeros(3)}, "head": [np.ones(4)]}


@pytest.mark.parametrize("name, make", ALL_OPTIMIZERS, ids=[n for n, _ in ALL_OPTIMIZERS])
def test_grads_not_matching_params_raise_naming_the_key_path(name, make):
    opt = make()
    params = good_tree()
    state = opt.init(params)
    where = name.split("-")[0]

    missing = good_tree()
    del missing["enc"]["b"]
    with pytest.raises(ValueError, match=rf"{where}: .*\['enc'\]: missing key\(s\) 'b'"):
        opt.update(params, missing, state)

    extra = good_tree()
    extra["enc"]["gamma"] = np.ones(3)
    with pytest.raises(ValueError, match=rf"{where}: .*\['enc'\]: unexpected key\(s\) 'gamma'"):
        opt.update(params, extra, state)

    shape = good_tree()
    shape["enc"]["w"] = np.ones((3, 2))
    with pytest.raises(ValueError, match=rf"{where}: params and grads differ in shape at \['enc'\]\['w'\]"):
        opt.update(params, shape, state)

    length = good_tree()
    length["head"].append(np.ones(4))
    with pytest.raises(ValueError, match=r"\['head'\]: length 1 vs 2"):
        opt.update(params, length, state)

    leaf = good_tree()
    leaf["enc"] = np.ones(3)
    with pytest.raises(ValueError, match=r"at \['enc'\]"):
        opt.update(params, leaf, state)


@pytest.mark.parametrize("name, make", ALL_OPTIMIZERS, ids=[n for n, _ in ALL_OPTIMIZERS])
def test_state_not_matching_params_raises(name, make):
    opt = make()
    params = good_tree()
    state = opt.init(params)
    with pytest.raises(ValueError, match="state must be the dict made by this optimizer's init"):
        opt.update(params, good_tree(), {})
    if len(state) > 1:
        with pytest.raises(ValueError, match="state must be the dict made by this optimizer's init"):
            opt.update(params, good_tree(), {"step": np.array(0)})
    other = opt.init({"w": np.ones(2)})
    if len(other) > 1:
        with pytest.raises(ValueError, match="state"):
            opt.update(params, good_tree(), other)
