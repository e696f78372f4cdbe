"""lr_multiplier: the state's exact layout, bitwise the inner optimizer at multiplier 1, PyTorch's
trajectory when the lr of every param group is changed mid-run (SGD-momentum, Adam, AdamW, groups,
a chain, a schedule), the transform form, purity and bad states."""

import numpy as np
import pytest
from optim_testing import bitwise, check_update_is_pure

from fnn import optim, random, tree


def problem(seed=0, dtype=np.float64):
    k = random.split(random.key(seed), 3)
    return {"dense": {"w": random.normal(k[0], (3, 4), dtype), "b": random.normal(k[1], (4,), dtype)},
            "gain": random.normal(k[2], (), dtype)}


def grad(params, t):
    return tree.map(lambda p: np.asarray(1.5 * (p - 1.0) + np.sin(t + p), p.dtype), params)



def label(path, leaf):
    return "dense" if path[0] == "dense" else "other"


# (name, fnn optimizer, torch class, torch param-group options per group)
CASES = [
    ("sgd-momentum", lambda: optim.sgd(0.05, momentum=0.9, weight_decay=0.01), "SGD",
     [{"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}]),
    ("sgd-nesterov", lambda: optim.sgd(0.05, momentum=0.9, nesterov=True), "SGD",
     [{"lr": 0.05, "momentum": 0.9, "nesterov": True}]),
    ("adam", lambda: optim.adam(0.02, weight_decay=0.05), "Adam", [{"lr": 0.02, "weight_decay": 0.05}]),
    ("adamw", lambda: optim.adamw(0.02, weight_decay=0.5), "AdamW", [{"lr": 0.02, "weight_decay": 0.5}]),
    ("adamw-chain-clip", lambda: optim.chain(optim.clip_by_value(1.0), optim.adamw(0.02, weight_decay=0.5)), "AdamW",
     [{"lr": 0.02, "weight_decay": 0.5}]),
    ("adam-groups", lambda: optim.multi_transform({"dense": optim.adam(0.01), "other": optim.adam(0.03)}, label),
     "Adam", [{"lr": 0.01}, {"lr": 0.03}]),
]
CHANGES = {10: 0.1, 20: 0.5, 30: 3.0}  # step -> factor applied to the lr (as ReduceLROnPlateau does)


@pytest.mark.parametrize("name, make, torch_name, groups", CASES, ids=[c[0] for c in CASES])
def test_changing_the_multiplier_follows_torch_changing_the_lr_of_its_param_groups(name, make, torch_name, groups):
    torch = pytest.importorskip("torch")
    opt = optim.lr_multiplier(make())
    params = problem()
    state = opt.init(params)
    pairs, rebuild = tree.flatten(params)
    tensors = [torch.tensor(np.array(p), requires_grad=True) for _, p in pairs]
    if len(groups) == 1:
        torch_groups = [{"params": tensors, **groups[0]}]
    else:
        torch_groups = [{"params": [x for (path, leaf), x in zip(pairs, tensors) if label(path, leaf) == g], **kw}
                        for g, kw in zip(("dense", "other"), groups)]
    torch_opt = getattr(torch.optim, torch_name)(torch_groups, foreach=False)
    clip = name.endswith("clip")
    for t in range(50):
        if t in CHANGES:
            state = {**state, "lr_multiplier": np.array(float(state["lr_multiplier"]) * CHANGES[t])}
            for group in torch_opt.param_groups:
                group["lr"] *= CHANGES[t]
        current = rebuild([x.detach().numpy().copy() for x in tensors])
        for x, g in zip(tensors, tree.leaves(grad(current, t))):
            x.grad = torch.from_numpy(np.asarray(np.clip(g, -1.0, 1.0)) if clip else g)
        torch_opt.step()
        params, state = opt.update(params, grad(params, t), state)
        for mine, x in zip(tree.leaves(params), tensors):
            np.testing.assert_allclose(mine, x.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=f"{name} step {t}")


@pytest.mark.parametrize("name, make, torch_name, groups", CASES, ids=[c[0] for c in CASES])
def test_at_multiplier_one_the_trajectory_is_bitwise_the_inner_optimizers(name, make, torch_name, groups):
    inner = make()
    opt = optim.lr_multiplier(inner)
    p1 = p2 = problem(dtype=np.float32)
    s1, s2 = opt.init(p1), inner.init(p2)
    for t in range(20):
        p1, s1 = opt.update(p1, grad(p1, t), s1)
        p2, s2 = inner.update(p2, grad(p2, t), s2)
    assert bitwise(p1, p2) and bitwise(s1["inner"], s2)


def test_the_state_layout_is_fixed():
    state = optim.lr_multiplier(optim.adam()).init(problem())
    assert set(state) == {"inner", "lr_multiplier"}
    m = state["lr_multiplier"]
    assert isinstance(m, np.ndarray) and m.shape == () and m.dtype == np.float64 and float(m) == 1.0
    assert set(state["inner"]) == {"step", "exp_avg", "exp_avg_sq"}


def test_the_multiplier_scales_a_schedule_and_is_kept_in_the_new_state():
    schedule = optim.exponential(1.0, 0.5)
    opt = optim.lr_multiplier(optim.sgd(schedule))
    params = {"w": np.zeros(1)}
    state = {**opt.init(params), "lr_multiplier": 0.1}  # a plain float is accepted too
    got = []
    for _ in range(3):
        params, state = opt.update(params, {"w": np.ones(1)}, state)
        got.append(float(params["w"][0]))
        assert isinstance(state["lr_multiplier"], np.ndarray) and float(state["lr_multiplier"]) == 0.1
    np.testing.assert_allclose(got, [-0.1, -0.15, -0.175], rtol=1e-15)


def test_zero_multiplier_stops_the_params_but_not_the_moments():
    opt = optim.lr_multiplier(optim.adam(0.1))
    params = problem()
    state = {**opt.init(params), "lr_multiplier": np.array(0.0)}
    new, state = opt.update(params, grad(params, 0), state)
    assert bitwise(new, params)
    assert int(state["inner"]["step"]) == 1 and any(m.any() for m in tree.leaves(state["inner"]["exp_avg"]))


def test_transform_form():
    t = optim.lr_multiplier(optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(0.1)))
    assert isinstance(t, optim.GradientTransformation)
    params = {"w": np.zeros(2)}
    state = {**t.init(params), "lr_multiplier": np.array(0.5)}
    updates, _ = t.update({"w": np.array([1.0, -1.0])}, state, params)
    np.testing.assert_allclose(updates["w"], [-0.05, 0.05], rtol=1e-6)


def test_update_is_pure():
    opt = optim.lr_multiplier(optim.adamw(0.1))
    params = problem()
    params, state = opt.update(params, grad(params, 0), opt.init(params))
    state = {**state, "lr_multiplier": np.array(0.3)}
    check_update_is_pure(opt.update, params, grad(params, 1), state)


@pytest.mark.parametrize("bad", [np.array(-0.1), np.array(np.nan), np.inf, "0.1", None, True, np.array(True),
                                 np.ones(2)])
def test_bad_multiplier_in_the_state_raises(bad):
    opt = optim.lr_multiplier(optim.sgd(0.1))
    params = problem()
    with pytest.raises(ValueError, match=r"^lr_multiplier: state\['lr_multiplier'\] must be a finite number >= 0 "
                                         r"\(a 0-d float array such as np.array\(0.1\)\), got"):
        opt.update(params, params, {**opt.init(params), "lr_multiplier": bad})


def test_bad_state_and_inner_raise():
    opt = optim.lr_multiplier(optim.sgd(0.1))
    params = problem()
    with pytest.raises(ValueError, match=r"^lr_multiplier: state must be the dict made by lr_multiplier's init, "
                                         r"with keys \['inner', 'lr_multiplier'\]; got \['step'\]"):
        opt.update(params, params, optim.sgd(0.1).init(params))
    with pytest.raises(ValueError, match=r"^lr_multiplier: lr_scale must be in \[0, inf\], got -1"):
        opt.update(params, params, opt.init(params), lr_scale=-1)
    with pytest.raises(TypeError, match=r"^lr_multiplier: inner must be an fnn.optim.Optimizer or "
                                        r"GradientTransformation .*, got function"):
        optim.lr_multiplier(optim.sgd)
