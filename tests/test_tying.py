"""fnn.tie: one parameter used by two layers, the gradient summed; untie; errors."""

import re

import numpy as np
import pytest

import fnn
from fnn import tree
from fnn.layers import Dense, Embedding, LayerNorm, Tanh, TransformerEncoderLayer
from fnn.testing import check_layer
from fnn.tying import tie_spec, untie

KEY = fnn.random.key(0)


def m(*parts):
    return ".*".join(re.escape(p) for p in parts)


def lm(v=7, e=4, bias=False):
    """A tiny language model: embedding, a causal block, a final norm and a head of the embedding's shape."""
    return fnn.serial(("embed", Embedding(v, e)),
                      ("block", TransformerEncoderLayer(2, 8, dropout=0.0, norm_first=True, causal=True)),
                      ("ln_f", LayerNorm()), ("head", Dense(v, bias=bias)))


def tied_lm(**kwargs):
    return fnn.tie(lm(**kwargs), target="head/w", source="embed/weight", transpose=True)


TOKENS = np.array([[1, 2, 3, 2, 6], [0, 0, 5, 4, 1]])


def test_the_gradient_is_the_sum_of_the_untied_models_two_gradients():
    tied = tied_lm()
    params = tied.init(KEY, (5,), np.float64)
    assert params["head"] == {} and "w" not in params["head"]
    net, full = untie(tied, params)
    np.testing.assert_array_equal(full["head"]["w"], params["embed"]["weight"].T)
    y, vjp = tied.apply(params, TOKENS)
    y_untied, vjp_untied = net.apply({**full, "head": {"w": full["head"]["w"].copy()}}, TOKENS)
    np.testing.assert_array_equal(y, y_untied)
    dy = np.random.default_rng(0).standard_normal(y.shape)
    grads, dx = vjp(dy)
    grads_untied, _ = vjp_untied(dy)
    assert dx is None and grads["head"] == {}
    np.testing.assert_allclose(grads["embed"]["weight"],
                               grads_untied["embed"]["weight"] + grads_untied["head"]["w"].T, rtol=1e-14, atol=0)
    assert tree.allclose(grads["block"], grads_untied["block"], rtol=0, atol=0)
    tree.check_same_structure(grads, params, shapes=True)


def test_finite_differences_see_the_shared_parameter():
    check_layer(tied_lm(bias=True), (5,), x=TOKENS, batch_size=2)
    dense_pair = fnn.serial(("a", Dense(3)), Tanh(), ("b", Dense(3)))
    check_layer(fnn.tie(dense_pair, target="b/w", source="a/w"), (3,))


def test_without_transpose_the_same_array_is_used():
    net = fnn.serial(("a", Dense(3, bias=False)), Tanh(), ("b", Dense(3, bias=False)))
    tied = fnn.tie(net, target="b/w", source="a/w")
    params = tied.init(KEY, (3,), np.float64)
    w = params["a"]["w"]
    x = np.random.default_rng(1).standard_normal((4, 3))
    np.testing.assert_allclose(tied.apply(params, x)[0], np.tanh(x @ w) @ w, rtol=1e-14)
    g_untied = net.apply({"a": {"w": w}, "tanh_0": {}, "b": {"w": w.copy()}}, x)[1](np.ones((4, 3)))[0]
    g = tied.apply(params, x)[1](np.ones((4, 3)))[0]
    np.testing.assert_allclose(g["a"]["w"], g_untied["a"]["w"] + g_untied["b"]["w"], rtol=1e-14)


def test_one_optimizer_step_keeps_the_two_uses_equal():
    tied = tied_lm()
    params = tied.init(KEY, (5,), np.float64)
    y, vjp = tied.apply(params, TOKENS)
    grads, _ = vjp(np.ones_like(y))
    stepped = tree.axpy(-0.1, grads, params)
    _, full = untie(tied, stepped)
    np.testing.assert_array_equal(full["head"]["w"], stepped["embed"]["weight"].T)  # there is one array
    assert tree.size(params) == tree.size(lm().init(KEY, (5,))) - 7 * 4


def test_need_dx_false_and_inference_and_float32():
    tied = tied_lm()
    params = tied.init(KEY, (5,))
    y, vjp = tied.apply(params, TOKENS)
    assert y.dtype == np.float32 and y.shape == (2, 5, 7)
    g_all, _ = vjp(np.ones_like(y))
    g, dx = vjp(np.ones_like(y), need_dx=False)
    assert dx is None and tree.allclose(g, g_all, rtol=0, atol=0)
    assert {a.dtype for a in tree.leaves(g)} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(fnn.predict(tied, params, TOKENS), y)


def test_options_reach_the_inner_net_and_summary_counts_the_weight_once():
    tied = tied_lm()
    params = tied.init(KEY, (5,), np.float64)
    mask = np.zeros((2, 5), bool)
    mask[0, 1] = True
    assert not np.allclose(tied.apply(params, TOKENS, key_padding_mask=mask)[0], tied.apply(params, TOKENS)[0])
    pair = fnn.tie(fnn.serial(("a", Dense(3)), Tanh(), ("b", Dense(3))), target="b/w", source="a/w")
    rows = fnn.summary(pair, (3,), print_fn=None)
    assert rows[0].params == tree.size(pair.init(KEY, (3,))) == 9 + 3 + 3
    assert [r.name for r in rows if r.depth == 1] == ["a", "tanh_0", "b"]
    assert next(r for r in rows if r.name == "b").params == 3


def test_tie_spec_and_nested_ties():
    tied = tied_lm()
    spec = tie_spec(tied)
    assert spec is not None and spec.target == ("head", "w") and spec.source == ("embed", "weight") and spec.transpose
    assert tie_spec(lm()) is None
    outer = fnn.serial(("lm", tied), ("out", Dense(2)))
    params = outer.init(KEY, (5,))
    assert params["lm"]["head"] == {}
    assert outer.apply(params, TOKENS)[0].shape == (2, 5, 2)
    assert tied.kind == "tie(serial, target='head/w', source='embed/weight', transpose=True)"


@pytest.mark.parametrize("call, error, match", [
    (lambda: fnn.tie(Dense(2), target="w", source="b"), ValueError,
     m("tie(Dense(2), target='w', source='b'): the target 'w' has shape (5, 2) but the source 'b' has shape (2,)")),
    (lambda: fnn.tie(lm(), target="head/w", source="embed/weight"), ValueError,
     m("the target 'head/w' has shape (4, 7) but the source 'embed/weight' has shape (7, 4)", "transpose=True?")),
    (lambda: fnn.tie(lm(), target="head/weight", source="embed/weight", transpose=True), ValueError,
     m("the target 'head/weight' is not a parameter of serial, whose parameters are", "'embed/weight'", "'head/w'")),
    (lambda: fnn.tie(lm(), target="head/w", source="embed/w", transpose=True), ValueError,
     m("the source 'embed/w' is not a parameter")),
    (lambda: fnn.tie(lm(), target="head/w", source="head/w"), ValueError,
     m("target and source must be two different leaves, got 'head/w' and 'head/w'")),
    (lambda: fnn.tie(lm(), target="head", source="head/w"), ValueError, m("two different leaves")),
    (lambda: fnn.tie(lm(), target="head//w", source="embed/weight"), ValueError,
     m("target must be a parameter path such as 'head/w' (keys joined by '/'), got 'head//w'")),
    (lambda: fnn.tie(lm(), target=("head", "w"), source="embed/weight"), TypeError,
     m("target must be a parameter path such as 'head/w', got tuple")),
    (lambda: fnn.tie(lm(), target="head/w", source="embed/weight", transpose=1), TypeError, m("transpose")),
    (lambda: fnn.tie(np.tanh, target="a", source="b"), TypeError, m("tie: net: expected an fnn Layer")),
    (lambda: untie(lm(), {}), TypeError, m("untie: expected a layer made by fnn.tie, got serial")),
])
def test_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call().init(KEY, (5,))  # the constructor, or else init, raises


def test_params_errors():
    tied = tied_lm()
    params = tied.init(KEY, (5,))
    _, full = untie(tied, params)
    with pytest.raises(ValueError, match=m("params must hold head without the tied target 'w'",
                                           "use the params tie's init makes")):
        tied.apply(full, TOKENS)
    with pytest.raises(ValueError, match=m("params has no source 'embed/weight'")):
        tied.apply({**params, "embed": {}}, TOKENS)
    with pytest.raises(ValueError, match=m("tie(serial", "serial layer 0 'embed'", "indices must be in [0, 7)")):
        tied.apply(params, TOKENS + 5)
    with pytest.raises(ValueError, match=m("tie(serial", ".vjp: dy has shape (2, 5, 6)")):
        tied.apply(params, TOKENS)[1](np.ones((2, 5, 6), np.float32))
