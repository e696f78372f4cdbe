"""Weight-decay masks: the weights_only predicate and mask trees keep biases out of weight decay,
checked with exact values in every optimizer that decays; a mask tree that does not match params
raises naming the key path."""

import numpy as np
import pytest

from fnn import optim

LR, WD = 0.5, 0.1


def params_tree():
    return {"dense": {"w": np.array([[1.0, -2.0], [3.0, 4.0]]), "b": np.array([1.0, -1.0])},
            "norm": {"gamma": np.array([2.0, 2.0]), "beta": np.array([0.5, 0.5])},
            "conv": {"w": np.full((1, 1, 2, 2), 2.0), "b": np.array([3.0])}}


def zero_grads(params):
    return {k: {n: np.zeros_like(v) for n, v in layer.items()} for k, layer in params.items()}


MASK_TREE = {"dense": {"w": True, "b": False}, "norm": {"gamma": False, "beta": False},
             "conv": {"w": True, "b": False}}

# With zero gradients each optimizer's decayed leaf has a closed form after one update.
DECAYED = {
    # sgd: p - lr * wd * p
    "sgd": (lambda m: optim.sgd(LR, weight_decay=WD, decay_mask=m), lambda p: p * (1 - LR * WD)),
    # adamw: p * (1 - lr * wd), then an Adam step on a zero gradient moves nothing
    "adamw": (lambda m: optim.adamw(LR, weight_decay=WD, decay_mask=m), lambda p: p * (1 - LR * WD)),
    # adam (L2): g = wd * p, the first Adam step is lr * g / (|g| + eps)
    "adam": (lambda m: optim.adam(LR, weight_decay=WD, eps=1e-8, decay_mask=m),
             lambda p: p - LR * (WD * p) / (np.abs(WD * p) + 1e-8)),
    # adagrad: g = wd * p, sum = g^2, step lr * g / (|g| + eps)
    "adagrad": (lambda m: optim.adagrad(LR, weight_decay=WD, eps=1e-10, decay_mask=m),
                lambda p: p - LR * (WD * p) / (np.abs(WD * p) + 1e-10)),
    # rmsprop: g = wd * p, v = (1 - alpha) g^2, step lr * g / (sqrt(v) + eps)
    "rmsprop": (lambda m: optim.rmsprop(LR, alpha=0.75, weight_decay=WD, eps=1e-8, decay_mask=m),
                lambda p: p - LR * (WD * p) / (np.sqrt(0.25 * (WD * p) ** 2) + 1e-8)),
}


@pytest.mark.parametrize("mask", ["weights_only", "tree"])
@pytest.mark.parametrize("name", sorted(DECAYED))
def test_mask_excludes_biases_and_norm_params_from_decay(name, mask):
    make, decayed = DECAYED[name]
    opt = make(optim.weights_only if mask == "weights_only" else MASK_TREE)
    params = params_tree()
    new, _ = opt.update(params, zero_grads(params), opt.init(params))
    for layer in ("dense", "conv"):
        np.testing.assert_allclose(new[layer]["w"], decayed(params[layer]["w"]), rtol=1e-14, atol=1e-15)
        assert not np.array_equal(new[layer]["w"], params[layer]["w"])
        assert new[layer]["b"].tobytes() == params[layer]["b"].tobytes()  # exactly untouched
    for leaf in ("gamma", "beta"):
        assert new["norm"][leaf].tobytes() == params["norm"][leaf].tobytes()


@pytest.mark.parametrize("name", sorted(DECAYED))
def test_no_mask_decays_every_leaf(name):
    make, decayed = DECAYED[name]
    opt = make(None)
    params = params_tree()
    new, _ = opt.update(params, zero_grads(params), opt.init(params))
    for layer, leaves in params.items():
        for leaf, value in leaves.items():
            np.testing.assert_allclose(new[layer][leaf], decayed(value), rtol=1e-14, atol=1e-15)


def test_weights_only_predicate():
    assert optim.weights_only(("dense", "w"), np.ones((2, 3)))
    assert optim.weights_only(("conv", "w"), np.ones((1, 1, 3, 3)))
    assert not optim.weights_only(("dense", "b"), np.ones(3))
    assert not optim.weights_only(("scale",), np.ones(()))


def test_predicate_receives_key_paths():
    seen = []

    def mask(path, leaf):
        seen.append(path)
        return path[-1] == "w"

    opt = optim.sgd(LR, weight_decay=WD, decay_mask=mask)
    params = params_tree()
    new, _ = opt.update(params, zero_grads(params), opt.init(params))
    assert sorted(seen) == sorted([("conv", "b"), ("conv", "w"), ("dense", "b"), ("dense", "w"),
                                   ("norm", "beta"), ("norm", "gamma")])
    np.testing.assert_allclose(new["dense"]["w"], params["dense"]["w"] * (1 - LR * WD), rtol=1e-15)
    assert new["dense"]["b"].tobytes() == params["dense"]["b"].tobytes()


@pytest.mark.parametrize("name", sorted(DECAYED))
def test_mask_tree_not_matching_params_raises_naming_the_path(name):
    make, _ = DECAYED[name]
    params = params_tree()

    missing = {k: dict(v) for k, v in MASK_TREE.items()}
    del missing["conv"]["b"]
    opt = make(missing)
    with pytest.raises(ValueError,
                       match=r"params and decay_mask differ in structure at \['conv'\]: missing key\(s\) 'b'"):
        opt.update(params, zero_grads(params), opt.init(params))

    extra = {k: dict(v) for k, v in MASK_TREE.items()}
    extra["norm"]["running_mean"] = False
    opt = make(extra)
    with pytest.raises(ValueError, match=r"at \['norm'\]: unexpected key\(s\) 'running_mean'"):
        opt.update(params, zero_grads(params), opt.init(params))

    flat = {**MASK_TREE, "dense": True}  # a leaf where params has a dict
    opt = make(flat)
    with pytest.raises(ValueError, match=r"decay_mask differ in structure at \['dense'\]"):
        opt.update(params, zero_grads(params), opt.init(params))
