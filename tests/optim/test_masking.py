"""freeze / masked and multi_transform: frozen params and their moment buffers stay bitwise unchanged
from the step they are frozen (from the start or mid-training), frozen leaves get no weight decay,
freezing follows torch's ``p.grad = None``; per-group hyperparameters follow torch's param groups
over 100 steps; purity and bad inputs."""

import numpy as np
import pytest
from optim_testing import bitwise, check_update_is_pure

from fnn import optim, random, tree

STEPS, SWITCH = 50, 25


def net_params(seed=0, dtype=np.float64):
    k = random.split(random.key(seed), 6)
    return {f"l{i}": {"w": random.normal(k[2 * i], (3, 3), dtype), "b": random.normal(k[2 * i + 1], (3,), dtype)}
            for i in range(3)}


def grad(params, t):
    """A gradient that couples the layers, so freezing one changes the path of the others."""
    s = sum(float(np.sum(leaf)) for leaf in tree.leaves(params))
    return tree.map(lambda p: np.asarray(p - 1.0 + 0.1 * np.sin(s + t + p), p.dtype), params)



def frozen_tree(*layers):
    return {f"l{i}": {"w": f"l{i}" in layers, "b": f"l{i}" in layers} for i in range(3)}


# Three ways to freeze l0 from step 0 and l0 + l1 from step SWITCH: the optimizer to use at step t.
FREEZERS = {
    "freeze-tree": lambda opt, t: optim.freeze(opt, frozen_tree("l0", *(("l1",) if t >= SWITCH else ()))),
    "freeze-predicate": lambda opt, t: optim.freeze(opt, lambda path, leaf: path[0] == "l0"
                                                    or (t >= SWITCH and path[0] == "l1")),
    "masked": lambda opt, t: optim.masked(opt, tree.map(lambda f: not f, frozen_tree(
        "l0", *(("l1",) if t >= SWITCH else ())))),
}
OPTIMIZERS = {
    "adam": lambda: optim.adam(0.05, weight_decay=0.1),
    "adamw": lambda: optim.adamw(0.05, weight_decay=0.5, amsgrad=True),
    "chain-clip-adamw": lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(0.05, weight_decay=0.5)),
    "transforms-adamw": lambda: optim.as_optimizer(optim.chain(optim.scale_by_adam(), optim.add_decayed_weights(0.5),
                                                               optim.scale_by_learning_rate(0.05))),
}


def buffers(state):
    """The optimizer's per-leaf buffers, wherever the combinators put them."""
    if isinstance(state, tuple):
        state = state[-1]
    return {k: v for k, v in state.items() if k != "step"}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("how", sorted(FREEZERS))
def test_frozen_params_and_buffers_are_bitwise_unchanged_from_the_step_they_are_frozen(opt_name, how):
    base = OPTIMIZERS[opt_name]()
    params = net_params()
    state = base.init(params)
    tree.check_same_structure(state, FREEZERS[how](base, 0).init(params))  # the state does not depend on the mask
    start, at_switch = (params, state), None
    for t in range(STEPS):
        if t == SWITCH:
            at_switch = (params, state)
        params, state = FREEZERS[how](base, t).update(params, grad(params, t), state)
    for (p0, s0), layers in [(start, ["l0"]), (at_switch, ["l0", "l1"])]:
        for layer in layers:
            assert bitwise(params[layer], p0[layer])
            for name, buf in buffers(state).items():
                assert bitwise(buf[layer], buffers(s0)[name][layer]), (layer, name)
    assert all(not buf["l0"]["w"].any() for buf in buffers(state).values())  # never accumulated anything
    assert not np.array_equal(params["l2"]["w"], start[0]["l2"]["w"])  # the rest trained
    assert not np.array_equal(params["l1"]["w"], start[0]["l1"]["w"])


def test_none_gradients_by_hand_freeze_the_same_way():
    opt = optim.adamw(0.05, weight_decay=0.5)
    p1 = p2 = net_params()
    s1 = s2 = opt.init(p1)
    for t in range(10):
        g = grad(p1, t)
        p1, s1 = optim.freeze(opt, frozen_tree("l1")).update(p1, g, s1)
        g = grad(p2, t)
        g["l1"] = {"w": None, "b": None}
        p2, s2 = opt.update(p2, g, s2)
    assert bitwise((p1, s1), (p2, s2))


@pytest.mark.parametrize("torch_name, kwargs", [("Adam", {"lr": 0.05, "weight_decay": 0.1}),
                                                ("AdamW", {"lr": 0.05, "weight_decay": 0.5}),
                                                ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1})])
def test_freezing_matches_torch_with_grad_none(torch_name, kwargs):
    torch = pytest.importorskip("torch")
    make = {"Adam": optim.adam, "AdamW": optim.adamw, "SGD": optim.sgd}[torch_name]
    opt = make(**kwargs)
    params = net_params()
    state = opt.init(params)
    pairs, rebuild = tree.flatten(params)
    tensors = [torch.tensor(np.array(p), requires_grad=True) for _, p in pairs]
    torch_opt = getattr(torch.optim, torch_name)(tensors, foreach=False, **kwargs)
    for t in range(STEPS):
        frozen = ("l0", "l1") if t >= SWITCH else ("l0",)
        current = rebuild([x.detach().numpy().copy() for x in tensors])
        for (path, _), x, g in zip(pairs, tensors, tree.leaves(grad(current, t))):
            x.grad = None if path[0] in frozen else torch.from_numpy(g)
        torch_opt.step()
        freezer = optim.freeze(opt, lambda path, leaf, frozen=frozen: path[0] in frozen)
        params, state = freezer.update(params, grad(params, t), state)
        for mine, x in zip(tree.leaves(params), tensors):
            np.testing.assert_allclose(mine, x.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=f"step {t}")


def test_freeze_works_on_transforms_and_stays_frozen_down_the_chain():
    t = optim.chain(optim.freeze(optim.scale_by_adam(), frozen_tree("l0")), optim.add_decayed_weights(0.1),
                    optim.scale_by_learning_rate(0.1))
    params = net_params()
    updates, state = t.update(grad(params, 0), t.init(params), params)
    assert updates["l0"] == {"w": None, "b": None} and updates["l1"]["w"] is not None
    new = optim.apply_updates(params, updates)
    assert new["l0"]["w"] is params["l0"]["w"]


def test_freeze_update_is_pure():
    opt = optim.freeze(optim.adam(0.1), frozen_tree("l0"))
    params = net_params()
    params, state = opt.update(params, grad(params, 0), opt.init(params))
    check_update_is_pure(opt.update, params, grad(params, 1), state, may_share=True)  # frozen leaves: the same arrays


# ------------------------------------------------------------------------------------------ groups

def groups_by_layer(path, leaf):
    return "backbone" if path[0] in ("l0", "l1") else "head"


GROUPS = [
    ("Adam", {"backbone": {"lr": 1e-3, "weight_decay": 0.1}, "head": {"lr": 2e-2, "betas": (0.8, 0.99)}}),
    ("AdamW", {"backbone": {"lr": 1e-4, "weight_decay": 0.5}, "head": {"lr": 3e-2, "weight_decay": 0.0}}),
    ("SGD", {"backbone": {"lr": 1e-3, "momentum": 0.5}, "head": {"lr": 2e-2, "momentum": 0.9, "nesterov": True}}),
]


@pytest.mark.parametrize("labels", ["function", "tree"])
@pytest.mark.parametrize("torch_name, groups", GROUPS, ids=[g[0] for g in GROUPS])
def test_per_group_hyperparameters_match_torch_param_groups_over_100_steps(torch_name, groups, labels):
    torch = pytest.importorskip("torch")
    make = {"Adam": optim.adam, "AdamW": optim.adamw, "SGD": optim.sgd}[torch_name]
    params = net_params()
    labelling = groups_by_layer if labels == "function" else tree.map_with_path(groups_by_layer, params)
    opt = optim.multi_transform({name: make(**kw) for name, kw in groups.items()}, labelling)
    state = opt.init(params)
    pairs, rebuild = tree.flatten(params)
    tensors = [torch.tensor(np.array(p), requires_grad=True) for _, p in pairs]
    torch_opt = getattr(torch.optim, torch_name)(
        [{"params": [x for (path, leaf), x in zip(pairs, tensors) if groups_by_layer(path, leaf) == name], **kw}
         for name, kw in groups.items()], foreach=False)
    for t in range(100):
        current = rebuild([x.detach().numpy().copy() for x in tensors])
        for x, g in zip(tensors, tree.leaves(grad(current, t))):
            x.grad = torch.from_numpy(g)
        torch_opt.step()
        params, state = opt.update(params, grad(params, t), state)
        for mine, x in zip(tree.leaves(params), tensors):
            np.testing.assert_allclose(mine, x.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=f"step {t}")


def test_each_group_is_its_own_optimizer_with_buffers_for_its_leaves_only():
    backbone, head = optim.adam(1e-3), optim.sgd(0.1, momentum=0.9)
    opt = optim.multi_transform({"backbone": backbone, "head": head}, groups_by_layer)
    params = net_params()
    state = opt.init(params)
    assert set(state) == {"backbone", "head"}
    assert tree.size(state["backbone"]["exp_avg"]) == tree.size(params["l0"]) + tree.size(params["l1"])
    assert state["backbone"]["exp_avg"]["l2"] == {"w": {}, "b": {}}
    new, new_state = opt.update(params, grad(params, 0), state)
    g = grad(params, 0)
    b_params = {k: (v if k != "l2" else {"w": {}, "b": {}}) for k, v in params.items()}
    b_grads = {k: (v if k != "l2" else {"w": {}, "b": {}}) for k, v in g.items()}
    want, want_state = backbone.update(b_params, b_grads, backbone.init(b_params))
    assert bitwise(new["l0"], want["l0"]) and bitwise(new_state["backbone"], want_state)


def test_multi_transform_of_transforms():
    decay_some = optim.multi_transform({"decay": optim.add_decayed_weights(1.0), "keep": optim.identity()},
                                       lambda path, leaf: "decay" if path[-1] == "w" else "keep")
    assert isinstance(decay_some, optim.GradientTransformation)
    params = net_params()
    zero = tree.zeros_like(params)
    out, state = decay_some.update(zero, decay_some.init(params), params)
    assert bitwise(out["l1"]["w"], params["l1"]["w"]) and not out["l1"]["b"].any()
    assert state == {"decay": {}, "keep": {}}


def test_multi_transform_passes_lr_scale_and_freezing_to_every_group():
    opt = optim.lr_multiplier(optim.freeze(optim.multi_transform(
        {"backbone": optim.sgd(0.1), "head": optim.sgd(1.0)}, groups_by_layer), frozen_tree("l0")))
    params = {k: tree.map(np.zeros_like, v) for k, v in net_params().items()}
    state = {**opt.init(params), "lr_multiplier": np.array(0.5)}
    new, _ = opt.update(params, tree.map(np.ones_like, params), state)
    assert new["l0"]["w"] is params["l0"]["w"]
    assert set(new["l1"]["w"].ravel().tolist()) == {-0.05} and set(new["l2"]["b"].tolist()) == {-0.5}


@pytest.mark.parametrize("call, error, match", [
    (lambda: optim.freeze(optim.adam(), "l0"), TypeError,
     "^freeze: frozen must be a predicate .path, leaf. -> bool or a tree of bools with the structure of params, "
     "got str"),
    (lambda: optim.masked(optim.adam(), None), TypeError, "^masked: mask must be a predicate"),
    (lambda: optim.freeze(lambda p: p, frozen_tree()), TypeError,
     "^freeze: inner must be an fnn.optim.Optimizer or GradientTransformation"),
    (lambda: optim.multi_transform({}, groups_by_layer), TypeError, "^multi_transform: transforms must be a non-empty"),
    (lambda: optim.multi_transform([optim.adam()], groups_by_layer), TypeError,
     "^multi_transform: transforms must be a non-empty dict"),
    (lambda: optim.multi_transform({0: optim.adam()}, groups_by_layer), TypeError,
     "^multi_transform: group names must be str, got int 0"),
    (lambda: optim.multi_transform({"a": optim.adam(), "b": optim.identity()}, groups_by_layer), TypeError,
     r"^multi_transform: transforms must be all optimizers or all transforms, got optimizers for \['a'\] and "
     r"transforms for \['b'\]"),
    (lambda: optim.multi_transform({"a": optim.adam(), "b": None}, groups_by_layer), TypeError,
     r"^multi_transform: transforms\['b'\] must be an fnn.optim.Optimizer"),
    (lambda: optim.multi_transform({"a": optim.adam()}, "a"), TypeError,
     "^multi_transform: labels must be a function .path, leaf. -> group name or a tree of group names, got str"),
])
def test_bad_arguments_raise_at_construction(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_masks_and_labels_raise_naming_the_key_path():
    params = net_params()
    grads = grad(params, 0)
    opt = optim.adam()
    state = opt.init(params)
    missing = frozen_tree()
    del missing["l2"]
    with pytest.raises(ValueError, match=r"^freeze: params and frozen differ in structure at <root>: missing key"):
        optim.freeze(opt, missing).update(params, grads, state)
    ints = tree.map(int, frozen_tree("l1"))
    with pytest.raises(TypeError, match=r"^masked: mask leaf is int 0 at \['l0'\]\['b'\]; expected True or False"):
        optim.masked(opt, ints).update(params, grads, state)
    with pytest.raises(TypeError, match=r"^freeze: frozen\(path, leaf\) returned str 'l0' at \['l0'\]\['b'\]; "
                                        r"expected True or False"):
        optim.freeze(opt, lambda path, leaf: path[0]).update(params, grads, state)
    with pytest.raises(ValueError, match=r"^freeze: params and grads differ in shape at \['l0'\]\['w'\]"):
        optim.freeze(opt, frozen_tree()).update(params, {**grads, "l0": {"w": np.ones(2), "b": np.ones(3)}}, state)

    groups = {"backbone": optim.adam(), "head": optim.adam()}
    with pytest.raises(ValueError, match=r"^multi_transform: the label 'neck' of the leaf at \['l1'\]\['b'\] is not "
                                         r"one of the groups \['backbone', 'head'\]"):
        optim.multi_transform(groups, lambda p, leaf: "neck" if p[0] == "l1" else "head").init(params)
    with pytest.raises(TypeError, match=r"^multi_transform: the label of the leaf at \['l0'\]\['b'\] must be a group "
                                        r"name \(str\), got int 3"):
        optim.multi_transform(groups, tree.map(lambda leaf: 3, params)).init(params)
    opt = optim.multi_transform(groups, groups_by_layer)
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"^multi_transform: state must be the dict made by multi_transform's init, "
                                         r"with keys \['backbone', 'head'\]; got \['backbone'\]"):
        opt.update(params, grads, {"backbone": state["backbone"]})
    with pytest.raises(ValueError, match=r"^multi_transform: params and grads differ in structure"):
        opt.update(params, grads["l0"], state)
