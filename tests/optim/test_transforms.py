"""The gradient transformations: each by hand; chains of them rebuild sgd, adam, adamw, rmsprop and
adagrad (against the fnn optimizers, which the adaptive/sgd tests hold to PyTorch, and against
torch.optim itself when importable); None leaves pass through; purity, dtypes and bad inputs."""

import numpy as np
import pytest
from optim_testing import check_update_is_pure, run_updates

from fnn import optim, random, tree


def problem(seed=0, dtype=np.float64):
    k = random.split(random.key(seed), 4)
    params = {"layer": {"w": random.normal(k[0], (3, 4), dtype), "b": random.normal(k[1], (4,), dtype)},
              "scale": random.normal(k[2], (), dtype)}
    curvature = tree.map(lambda p: np.asarray(1.0 + np.abs(p), dtype), params)
    return params, curvature


def grad(params, curvature, t):
    return tree.map(lambda p, a: np.asarray(a * (p - 2.0) + np.sin(t + p.size), p.dtype), params, curvature)


def run(opt, steps=100, dtype=np.float64):
    params, a = problem(dtype=dtype)
    return run_updates(opt, params, lambda p, t: grad(p, a, t), steps)


def lr_decayed(lr, decay):
    return lambda step: lr / (1 + step * decay)


# (name, chain of transforms, the fnn optimizer it rebuilds, torch class, torch kwargs)
REBUILT = [
    ("sgd", lambda: optim.chain(optim.scale_by_learning_rate(0.05)), lambda: optim.sgd(0.05), "SGD", {"lr": 0.05}),
    ("sgd-momentum-dampening-wd",
     lambda: optim.chain(optim.add_decayed_weights(0.01), optim.trace(0.9, dampening=0.2),
                         optim.scale_by_learning_rate(0.02)),
     lambda: optim.sgd(0.02, momentum=0.9, dampening=0.2, weight_decay=0.01), "SGD",
     {"lr": 0.02, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01}),
    ("sgd-nesterov",
     lambda: optim.chain(optim.trace(0.8, nesterov=True), optim.scale_by_learning_rate(0.02)),
     lambda: optim.sgd(0.02, momentum=0.8, nesterov=True), "SGD", {"lr": 0.02, "momentum": 0.8, "nesterov": True}),
    ("adam-l2",
     lambda: optim.chain(optim.add_decayed_weights(0.1), optim.scale_by_adam(), optim.scale_by_learning_rate(0.02)),
     lambda: optim.adam(0.02, weight_decay=0.1), "Adam", {"lr": 0.02, "weight_decay": 0.1}),
    ("adam-amsgrad",
     lambda: optim.chain(optim.scale_by_adam(0.8, 0.99, amsgrad=True), optim.scale_by_learning_rate(0.02)),
     lambda: optim.adam(0.02, betas=(0.8, 0.99), amsgrad=True), "Adam",
     {"lr": 0.02, "betas": (0.8, 0.99), "amsgrad": True}),
    ("adamw",
     lambda: optim.chain(optim.scale_by_adam(), optim.add_decayed_weights(0.1), optim.scale_by_learning_rate(0.02)),
     lambda: optim.adamw(0.02, weight_decay=0.1), "AdamW", {"lr": 0.02, "weight_decay": 0.1}),
    ("rmsprop-centered-momentum",
     lambda: optim.chain(optim.scale_by_rms(0.9, centered=True), optim.trace(0.5), optim.scale_by_learning_rate(0.002)),
     lambda: optim.rmsprop(0.002, alpha=0.9, centered=True, momentum=0.5), "RMSprop",
     {"lr": 0.002, "alpha": 0.9, "centered": True, "momentum": 0.5}),
    ("adagrad-initial-lr-decay",
     lambda: optim.chain(optim.scale_by_adagrad(0.5), optim.scale_by_learning_rate(lr_decayed(0.3, 0.01))),
     lambda: optim.adagrad(0.3, lr_decay=0.01, initial_accumulator_value=0.5), "Adagrad",
     {"lr": 0.3, "lr_decay": 0.01, "initial_accumulator_value": 0.5}),
]
IDS = [r[0] for r in REBUILT]


@pytest.mark.parametrize("name, make_chain, make_opt, torch_name, kwargs", REBUILT, ids=IDS)
def test_chains_of_transforms_rebuild_the_optimizers_over_100_steps(name, make_chain, make_opt, torch_name, kwargs):
    got, _ = run(optim.as_optimizer(make_chain()))
    want, _ = run(make_opt())
    for t, (g, w) in enumerate(zip(got, want)):
        for x, y in zip(tree.leaves(g), tree.leaves(w)):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, err_msg=f"{name} step {t}")


@pytest.mark.parametrize("name, make_chain, make_opt, torch_name, kwargs", REBUILT, ids=IDS)
def test_chains_of_transforms_match_torch_over_100_steps(name, make_chain, make_opt, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    got, _ = run(optim.as_optimizer(make_chain()))
    params, a = problem()
    pairs, rebuild = tree.flatten(params)
    tensors = [torch.tensor(np.array(p), requires_grad=True) for _, p in pairs]
    opt = getattr(torch.optim, torch_name)(tensors, foreach=False, **kwargs)
    for t in range(100):
        current = rebuild([x.detach().numpy().copy() for x in tensors])
        for x, g in zip(tensors, tree.leaves(grad(current, a, t))):
            x.grad = torch.from_numpy(g)
        opt.step()
        for mine, x in zip(tree.leaves(got[t + 1]), tensors):
            np.testing.assert_allclose(mine, x.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=f"{name} step {t}")


def test_each_transform_by_hand():
    p = {"w": np.array([2.0, -4.0])}
    u = {"w": np.array([1.0, -3.0])}

    def once(t, updates=u):
        return t.update(updates, t.init(p), p)

    assert once(optim.identity())[0]["w"].tolist() == [1.0, -3.0]
    assert once(optim.scale(-2.0))[0]["w"].tolist() == [-2.0, 6.0]
    assert once(optim.scale_by_learning_rate(0.5))[0]["w"].tolist() == [-0.5, 1.5]
    assert once(optim.add_decayed_weights(0.5))[0]["w"].tolist() == [2.0, -5.0]
    assert once(optim.clip_by_value(2.0))[0]["w"].tolist() == [1.0, -2.0]
    assert once(optim.scale_by_adagrad(eps=0.0))[0]["w"].tolist() == [1.0, -1.0]  # u / |u|
    assert once(optim.scale_by_rms(alpha=0.75, eps=0.0))[0]["w"].tolist() == [2.0, -2.0]  # u / (|u| / 2)
    out, state = once(optim.scale_by_adam(eps=0.0))
    np.testing.assert_allclose(out["w"], [1.0, -1.0], rtol=1e-15)  # the first step: u / |u|
    assert int(state["step"]) == 1 and state["exp_avg"]["w"].tolist() == [(1 - 0.9) * 1.0, (1 - 0.9) * -3.0]

    t = optim.trace(0.5)
    out, state = t.update(u, t.init(p), p)
    assert out["w"].tolist() == [1.0, -3.0]  # b = u on the first step (torch.optim.SGD's rule)
    out, state = t.update({"w": np.array([1.0, 1.0])}, state, p)
    assert out["w"].tolist() == [1.5, -0.5] and state["momentum"]["w"].tolist() == [1.5, -0.5]


def test_scale_by_learning_rate_follows_a_schedule_and_lr_scale():
    t = optim.scale_by_learning_rate(optim.exponential(1.0, 0.5))
    p = {"w": np.zeros(1)}
    state = t.init(p)
    got = []
    for _ in range(3):
        u, state = t.update({"w": np.ones(1)}, state, p)
        got.append(float(u["w"][0]))
    assert got == [-1.0, -0.5, -0.25]
    u, _ = t.update({"w": np.ones(1)}, state, p, lr_scale=0.5)
    assert u["w"].tolist() == [-0.0625]


def test_add_decayed_weights_mask_as_predicate_and_tree():
    p = {"w": np.ones((1, 2)), "b": np.ones(2)}
    zero = tree.zeros_like(p)
    for mask in (optim.weights_only, {"w": True, "b": False}):
        t = optim.add_decayed_weights(0.25, mask)
        out, _ = t.update(zero, t.init(p), p)
        assert out["w"].tolist() == [[0.25, 0.25]] and out["b"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("make", [
    optim.identity, lambda: optim.scale(2.0), lambda: optim.scale_by_learning_rate(0.1),
    lambda: optim.add_decayed_weights(0.1), lambda: optim.trace(0.9, nesterov=True), optim.scale_by_adam,
    lambda: optim.scale_by_rms(centered=True), lambda: optim.scale_by_adagrad(0.1),
    lambda: optim.clip_by_global_norm(0.1), lambda: optim.clip_by_value(0.1),
], ids=["identity", "scale", "lr", "decay", "trace", "adam", "rms", "adagrad", "clip-norm", "clip-value"])
def test_none_updates_pass_through_and_leave_their_buffers(make):
    t = make()
    params, a = problem()
    state = t.init(params)
    _, state = t.update(grad(params, a, 0), state, params)  # non-zero buffers
    updates = grad(params, a, 1)
    updates["layer"]["w"] = None
    out, new = t.update(updates, state, params)
    assert out["layer"]["w"] is None and out["layer"]["b"] is not None
    for name, buf in new.items():
        if name != "step":
            assert buf["layer"]["w"] is state[name]["layer"]["w"]


@pytest.mark.parametrize("make", [
    optim.identity, lambda: optim.scale(2.0), lambda: optim.scale_by_learning_rate(0.1),
    lambda: optim.add_decayed_weights(0.1), lambda: optim.trace(0.9), lambda: optim.scale_by_adam(amsgrad=True),
    lambda: optim.scale_by_rms(centered=True), lambda: optim.scale_by_adagrad(0.1),
], ids=["identity", "scale", "lr", "decay", "trace", "adam", "rms", "adagrad"])
def test_update_is_pure_keeps_float32_and_does_not_alias_inputs(make):
    t = make()
    params, a = problem(dtype=np.float32)
    state = t.init(params)
    _, state = t.update(grad(params, a, 0), state, params)
    out1, _ = check_update_is_pure(t.update, grad(params, a, 1), state, params)
    assert all(u.dtype == np.float32 for u in tree.leaves(out1))


def test_trace_first_buffer_is_a_copy_of_the_gradient():
    t = optim.trace(0.9)
    p = {"w": np.zeros(3)}
    g = {"w": np.array([1.0, 2.0, 3.0])}
    _, state = t.update(g, t.init(p), p)
    g["w"] *= 100
    assert state["momentum"]["w"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("call, error, match", [
    (lambda: optim.scale("2"), TypeError, "^scale: factor must be a number, got str '2'"),
    (lambda: optim.scale_by_learning_rate(-0.1), ValueError, r"^scale_by_learning_rate: lr must be in \[0, inf\]"),
    (lambda: optim.add_decayed_weights(-1.0), ValueError, r"^add_decayed_weights: weight_decay must be in \[0, inf\]"),
    (lambda: optim.add_decayed_weights(0.1, mask="weights"), TypeError,
     "^add_decayed_weights: mask must be a predicate"),
    (lambda: optim.trace(-0.9), ValueError, r"^trace: momentum must be in \[0, inf\], got -0.9"),
    (lambda: optim.trace(0.9, dampening=2.0), ValueError, r"^trace: dampening must be in \[0, 1\], got 2.0"),
    (lambda: optim.trace(0.0, nesterov=True), ValueError, "^trace: nesterov needs momentum > 0 and dampening = 0"),
    (lambda: optim.trace(0.9, nesterov="yes"), TypeError, "^trace: nesterov must be True or False"),
    (lambda: optim.scale_by_adam(b1=1.0), ValueError, r"^scale_by_adam: b1 must be in \[0, 1\), got 1.0"),
    (lambda: optim.scale_by_adam(b2=float("nan")), ValueError, "^scale_by_adam: b2 must be a finite number"),
    (lambda: optim.scale_by_adam(amsgrad=1), TypeError, "^scale_by_adam: amsgrad must be True or False, got int 1"),
    (lambda: optim.scale_by_rms(alpha=1.5), ValueError, r"^scale_by_rms: alpha must be in \[0, 1\], got 1.5"),
    (lambda: optim.scale_by_rms(eps=None), TypeError, "^scale_by_rms: eps must be a number, got NoneType"),
    (lambda: optim.scale_by_adagrad(-1.0), ValueError, "^scale_by_adagrad: initial_accumulator_value must be in"),
])
def test_bad_hyperparameters_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_updates_or_state_not_matching_params_raise_naming_the_transform():
    t = optim.scale_by_adam()
    params = {"w": np.ones((2, 3)), "b": np.zeros(3)}
    state = t.init(params)
    with pytest.raises(ValueError, match=r"^scale_by_adam: params and updates differ in shape at \['w'\]: "
                                         r"\(2, 3\) vs \(3, 2\)"):
        t.update({"w": np.ones((3, 2)), "b": np.zeros(3)}, state, params)
    with pytest.raises(ValueError, match=r"^scale_by_adam: params and updates differ in structure at <root>: "
                                         r"missing key\(s\) 'b'"):
        t.update({"w": np.ones((2, 3))}, state, params)
    with pytest.raises(TypeError, match=r"^scale_by_adam: updates leaf at \['b'\] must be a float numpy array, "
                                        r"got dtype int64"):
        t.update({"w": np.ones((2, 3)), "b": np.zeros(3, np.int64)}, state, params)
    with pytest.raises(ValueError, match=r"^scale_by_adam: state must be the dict made by this transform's init, "
                                         r"with keys \['exp_avg', 'exp_avg_sq', 'step'\]; got \['step'\]"):
        t.update(params, {"step": np.array(0)}, params)
    with pytest.raises(ValueError, match=r"^scale_by_adam: state\['step'\] must be a non-negative integer"):
        t.update(params, {**state, "step": np.array(-2)}, params)
    with pytest.raises(ValueError, match=r"^scale_by_learning_rate: the learning-rate schedule gave -1.0 at step 0"):
        lr = optim.scale_by_learning_rate(lambda step: -1.0)
        lr.update(params, lr.init(params), params)
    with pytest.raises(ValueError, match=r"^scale_by_learning_rate: lr_scale must be in \[0, inf\], got -2"):
        lr = optim.scale_by_learning_rate(0.1)
        lr.update(params, lr.init(params), params, lr_scale=-2)
    with pytest.raises(TypeError, match=r"^add_decayed_weights: mask leaf is int 1 at \['b'\]; expected True or False"):
        d = optim.add_decayed_weights(0.1, {"w": True, "b": 1})
        d.update(params, d.init(params), params)
    with pytest.raises(TypeError, match=r"^trace: params leaf at \['w'\] must be a float numpy array, got dtype int"):
        optim.trace(0.9).init({"w": np.ones(2, np.int32)})
