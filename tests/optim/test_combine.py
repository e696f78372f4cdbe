"""chain (transforms, optionally ending with an optimizer), as_optimizer and apply_updates: chain(clip,
adamw) is bitwise clipping by hand then adamw; composite states survive a checkpoint exactly; purity
and bad inputs."""

import os
import tempfile

import numpy as np
import pytest
from optim_testing import bitwise, check_update_is_pure

from fnn import checkpoint, optim, random, tree


def problem(seed=0, dtype=np.float64):
    k = random.split(random.key(seed), 3)
    return {"enc": {"w": random.normal(k[0], (4, 3), dtype), "b": random.normal(k[1], (3,), dtype)},
            "head": [random.normal(k[2], (3, 2), dtype)]}


def grad(params, t):
    """A gradient large enough that clipping at norm 1 is active on most steps."""
    return tree.map(lambda p: np.asarray(3.0 * p + 2.0 * np.cos(t * 0.7 + p), p.dtype), params)



@pytest.mark.parametrize("clip", ["global_norm", "value"])
@pytest.mark.parametrize("make", [lambda: optim.adamw(0.01, weight_decay=0.1, decay_mask=optim.weights_only),
                                  lambda: optim.sgd(0.01, momentum=0.9, nesterov=True)], ids=["adamw", "sgd"])
def test_chain_of_clip_and_optimizer_is_bitwise_clipping_by_hand_then_the_optimizer(clip, make):
    if clip == "global_norm":
        by_hand, transform = (lambda g: optim.clip_by_global_norm(g, 1.0)), optim.clip_by_global_norm(1.0)
    else:
        by_hand, transform = (lambda g: optim.clip_by_value(g, 0.5)), optim.clip_by_value(0.5)
    chained, opt = optim.chain(transform, make()), make()
    assert isinstance(chained, optim.Optimizer)
    p1 = p2 = problem()
    s1, s2 = chained.init(p1), opt.init(p2)
    clipped_steps = 0
    for t in range(50):
        g = grad(p1, t)
        clipped_steps += not bitwise(by_hand(g), g)
        p1, s1 = chained.update(p1, g, s1)
        p2, s2 = opt.update(p2, by_hand(grad(p2, t)), s2)
        assert bitwise(p1, p2) and bitwise(s1[-1], s2)
    assert clipped_steps > 25  # the clipping did act
    assert isinstance(s1, tuple) and s1[0] == {}


def test_chain_of_transforms_is_a_transform_and_as_optimizer_adds_its_updates():
    t = optim.chain(optim.clip_by_global_norm(1.0), optim.scale_by_adam(), optim.scale_by_learning_rate(0.1))
    assert isinstance(t, optim.GradientTransformation)
    params = problem()
    state = t.init(params)
    assert isinstance(state, tuple) and len(state) == 3
    updates, new_state = t.update(grad(params, 0), state, params)
    opt = optim.as_optimizer(t)
    new_params, opt_state = opt.update(params, grad(params, 0), opt.init(params))
    assert bitwise(new_params, tree.map(lambda p, u: p + u, params, updates))
    assert bitwise(opt_state, new_state)


def test_chain_passes_lr_scale_and_none_gradients_through():
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.5))
    params = {"a": np.ones(2), "b": np.ones(2)}
    new, _ = opt.update(params, {"a": np.array([3.0, 4.0]), "b": None}, opt.init(params), lr_scale=0.5)
    np.testing.assert_allclose(new["a"], [1 - 0.25 * 0.6, 1 - 0.25 * 0.8], rtol=1e-6)  # norm 5 clipped to 1
    assert new["b"] is params["b"]


def test_apply_updates_keeps_dtypes_and_skips_none():
    params = {"w": np.ones(2, np.float32), "b": np.ones(1, np.float32)}
    out = optim.apply_updates(params, {"w": np.array([0.5, 1.0]), "b": None})
    assert out["w"].dtype == np.float32 and out["w"].tolist() == [1.5, 2.0] and out["b"] is params["b"]
    with pytest.raises(ValueError, match=r"^apply_updates: params and updates differ in shape at \['w'\]"):
        optim.apply_updates(params, {"w": np.ones(3), "b": None})


def test_chain_update_is_pure_and_does_not_alias_inputs():
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.add_decayed_weights(0.1), optim.adam(0.01))
    params = problem()
    params, state = opt.update(params, grad(params, 0), opt.init(params))
    check_update_is_pure(opt.update, params, grad(params, 1), state)


def test_nested_composite_state_resumes_exactly_from_a_checkpoint():
    opt = optim.lr_multiplier(optim.chain(
        optim.clip_by_global_norm(1.0),
        optim.freeze(optim.multi_transform({"enc": optim.adamw(1e-2), "head": optim.sgd(0.1, momentum=0.9)},
                                           lambda path, leaf: path[0]), {"enc": {"w": False, "b": True},
                                                                         "head": [False]})))
    params = problem()
    state = opt.init(params)
    for t in range(5):
        params, state = opt.update(params, grad(params, t), state)
    path = os.path.join(tempfile.mkdtemp(), "opt.fnn")
    checkpoint.save(path, {"params": params, "opt": state})
    loaded = checkpoint.load(path, like={"params": params, "opt": state})
    p1, s1, p2, s2 = params, state, loaded["params"], loaded["opt"]
    for t in range(5, 10):
        p1, s1 = opt.update(p1, grad(p1, t), s1)
        p2, s2 = opt.update(p2, grad(p2, t), s2)
    assert bitwise((p1, s1), (p2, s2))


def test_hand_written_parts_work_in_a_chain_without_lr_scale():
    """A part without the lr_scale keyword is never given it unless an lr_multiplier asks."""
    base = optim.sgd(0.1)
    plain = optim.Optimizer(base.init, lambda p, g, s: base.update(p, g, s))
    doubling = optim.GradientTransformation(lambda p: {}, lambda u, s, p: (tree.map(lambda x: 2 * x, u), s))
    opt = optim.chain(doubling, plain)
    params = {"w": np.ones(1)}
    assert opt.update(params, {"w": np.ones(1)}, opt.init(params))[0]["w"].tolist() == [0.8]
    with pytest.raises(TypeError, match="^lr_multiplier: inner.update must take the keyword lr_scale"):
        optim.lr_multiplier(plain)


@pytest.mark.parametrize("call, error, match", [
    (lambda: optim.chain(), ValueError, "^chain: needs at least one transform or optimizer, got none"),
    (lambda: optim.chain(optim.adam(), optim.clip_by_global_norm(1.0)), TypeError,
     "^chain: part 0 is an Optimizer, which returns new params rather than updates, so it can only be the last"),
    (lambda: optim.chain(optim.sgd(0.1), optim.adam()), TypeError, "^chain: part 0 is an Optimizer"),
    (lambda: optim.chain(optim.clip_by_global_norm(1.0), (lambda p: p, lambda p, g, s: (p, s))), TypeError,
     "^chain: part 1 must be an fnn.optim.Optimizer or GradientTransformation .*, got tuple"),
    (lambda: optim.chain(optim.clip_by_global_norm), TypeError, "^chain: part 0 must be .*, got function"),
    (lambda: optim.as_optimizer(optim.adam()), TypeError, "^as_optimizer: transform must be a GradientTransformation, "
                                                          "got an Optimizer"),
    (lambda: optim.as_optimizer(None), TypeError, "^as_optimizer: transform must be an fnn.optim.Optimizer or "
                                                  "GradientTransformation"),
])
def test_bad_chains_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_chain_state_or_grads_not_matching_raise_naming_the_chain():
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam())
    params = problem()
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"^chain: state must be the tuple of 2 states made by this chain's init, "
                                         r"got a tuple of 1"):
        opt.update(params, params, state[1:])
    with pytest.raises(ValueError, match=r"^chain: state must be the tuple of 2 states .*, got dict"):
        opt.update(params, params, state[1])
    with pytest.raises(ValueError, match=r"^chain: params and grads differ in structure at \['enc'\]: "
                                         r"missing key\(s\) 'b'"):
        opt.update(params, {"enc": {"w": params["enc"]["w"]}, "head": params["head"]}, state)
    with pytest.raises(ValueError, match=r"^adam: state must be the dict made by this optimizer's init"):
        opt.update(params, params, (state[0], {}))
    t = optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(0.1))
    with pytest.raises(ValueError, match=r"^chain: params and updates differ in shape at \['head'\]\[0\]"):
        t.update({**params, "head": [np.ones(2)]}, t.init(params), params)
