"""MultiHeadAttention: PyTorch parity (self- and cross-attention, both masks, several head counts and
odd sizes), fully masked rows, the key_padding_mask option through combinators, dropout, float32,
purity and errors."""

import re

import numpy as np
import pytest

import fnn
from fnn import tree
from fnn.layers import Dense, MultiHeadAttention, ReLU
from fnn.layers.attention import attention_backward, attention_forward, attention_mask
from fnn.testing import check_layer

KEY = fnn.random.key(0)


def torch_mha(torch, e, heads, bias, seed):
    """A float64 torch.nn.MultiheadAttention with random (non-zero) biases, and its params for fnn."""
    torch.manual_seed(seed)
    m = torch.nn.MultiheadAttention(e, heads, bias=bias, batch_first=True, dtype=torch.float64)
    if bias:
        with torch.no_grad():
            m.in_proj_bias.normal_()
            m.out_proj.bias.normal_()
    sd = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    params = {"in_proj_weight": sd["in_proj_weight"], "out_proj": {"weight": sd["out_proj.weight"]}}
    if bias:
        params["in_proj_bias"] = sd["in_proj_bias"]
        params["out_proj"]["bias"] = sd["out_proj.bias"]
    return m, params


def padding(rng, n, s, kind):
    if kind is None:
        return None
    mask = rng.random((n, s)) < 0.4
    mask[:, -1] = kind == "first-example-empty"  # a padded last key in every example ...
    if kind == "first-example-empty":
        mask[0] = True  # ... and no key at all in example 0: every query of it is fully masked
    if kind == "first-key":
        mask[:, 0] = True  # with causal: query 0 has no key left
    return mask


CASES = [  # mode, heads, head size, T, S
    ("self", 1, 3, 5, 5),
    ("self", 3, 1, 4, 4),
    ("self", 2, 3, 7, 7),
    ("kv", 2, 1, 3, 5),
    ("kv", 5, 1, 6, 2),
    ("qkv", 3, 3, 4, 7),
    ("qkv", 1, 5, 5, 3),
]


@pytest.mark.parametrize("mode, heads, d, t, s", CASES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("mask_kind", [None, "random", "first-example-empty", "first-key"])
def test_matches_torch_forward_dparams_and_dx(mode, heads, d, t, s, causal, mask_kind):
    torch = pytest.importorskip("torch")
    e, n = heads * d, 3
    bias = (heads + d) % 2 == 0 or mode == "qkv"
    rng = np.random.default_rng(heads * 100 + t * 10 + s)
    m, params = torch_mha(torch, e, heads, bias, seed=t + s)
    q = rng.standard_normal((n, t, e))
    k = rng.standard_normal((n, s, e))
    v = rng.standard_normal((n, s, e))
    if mode == "self":
        s = t
    mask = padding(rng, n, s, mask_kind)
    x = {"self": q, "kv": (q, k), "qkv": (q, k, v)}[mode]
    y, vjp = MultiHeadAttention(heads, causal=causal, bias=bias).apply(params, x, key_padding_mask=mask)
    dy = rng.standard_normal(y.shape)
    grads, dx = vjp(dy)

    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    if mode == "self":
        tk = tv = tq
    elif mode == "kv":
        tv = tk
    attn_mask = torch.tensor(~np.tri(t, s, dtype=bool)) if causal else None  # True: not allowed
    ty, _ = m(tq, tk, tv, key_padding_mask=None if mask is None else torch.tensor(mask), attn_mask=attn_mask,
              need_weights=False)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(grads["in_proj_weight"], m.in_proj_weight.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(grads["out_proj"]["weight"], m.out_proj.weight.grad.numpy(), rtol=0, atol=1e-10)
    if bias:
        np.testing.assert_allclose(grads["in_proj_bias"], m.in_proj_bias.grad.numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(grads["out_proj"]["bias"], m.out_proj.bias.grad.numpy(), rtol=0, atol=1e-10)
    else:
        assert set(grads) == {"in_proj_weight", "out_proj"} and set(grads["out_proj"]) == {"weight"}
    torch_dx = {"self": [tq], "kv": [tq, tk], "qkv": [tq, tk, tv]}[mode]
    ours = dx if isinstance(dx, tuple) else (dx,)
    assert len(ours) == len(torch_dx) and isinstance(dx, tuple) == (mode != "self")
    for a, b in zip(ours, torch_dx):
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=0, atol=1e-10)
    assert np.isfinite(y).all() and all(np.isfinite(a).all() for a in ours)


def test_a_query_with_no_key_gives_the_output_bias_and_no_gradient():
    layer = MultiHeadAttention(2)
    params = layer.init(KEY, (3, 4), np.float64)
    params["out_proj"]["bias"] = np.arange(4.0)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    mask = np.array([[True, True, True], [False, True, False]])
    y, vjp = layer.apply(params, x, key_padding_mask=mask)
    np.testing.assert_array_equal(y[0], np.broadcast_to(np.arange(4.0), (3, 4)))  # zero attention + the bias
    _, dx = vjp(np.ones_like(y))
    np.testing.assert_array_equal(dx[0], 0)
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    # and with finite differences, a fully masked example beside a normal one
    check_layer(layer, (3, 4), x=x, batch_size=2, options={"key_padding_mask": mask})


def test_causal_mask_semantics_follow_torch_tril():
    np.testing.assert_array_equal(attention_mask(3, 3, True, None), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(attention_mask(2, 4, True, None), [[1, 0, 0, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(attention_mask(3, 2, True, None), [[1, 0], [1, 1], [1, 1]])
    both = attention_mask(2, 2, True, np.array([[False, True]]))
    assert both.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(both[0, 0], [[1, 0], [1, 0]])
    assert attention_mask(2, 2, False, None) is None


def test_causal_output_at_t_ignores_later_positions():
    layer = MultiHeadAttention(2, causal=True)
    params = layer.init(KEY, (5, 4), np.float64)
    x = np.random.default_rng(1).standard_normal((2, 5, 4))
    changed = x.copy()
    changed[:, 3:] += 10
    y, y2 = layer.apply(params, x)[0], layer.apply(params, changed)[0]
    np.testing.assert_allclose(y[:, :3], y2[:, :3], rtol=0, atol=1e-14)
    assert not np.allclose(y[:, 3:], y2[:, 3:])


def test_hand_computed_single_head():
    # identity projections: y = softmax(x x^T / sqrt(2)) x
    layer = MultiHeadAttention(1)
    eye = np.eye(2)
    params = {"in_proj_weight": np.vstack([eye, eye, eye]), "in_proj_bias": np.zeros(6),
              "out_proj": {"weight": eye, "bias": np.zeros(2)}}
    x = np.array([[[1.0, 0.0], [0.0, 2.0]]])
    s = x[0] @ x[0].T / np.sqrt(2)
    p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(layer.apply(params, x)[0][0], p @ x[0], rtol=1e-14)


def test_key_padding_mask_reaches_attention_inside_serial_and_residual():
    attn = MultiHeadAttention(2)
    net = fnn.serial(Dense(4), ("block", fnn.residual(fnn.serial(("attn", attn), ReLU()))), Dense(3))
    params = net.init(KEY, (5, 3), np.float64)
    x = np.random.default_rng(2).standard_normal((2, 5, 3))
    mask = np.zeros((2, 5), bool)
    mask[:, 3:] = True
    y = net.apply(params, x, key_padding_mask=mask)[0]
    # padded keys are ignored: changing the padded positions' inputs changes only their own rows
    changed = x.copy()
    changed[:, 3:] += 5
    y2 = net.apply(params, changed, key_padding_mask=mask)[0]
    np.testing.assert_allclose(y[:, :3], y2[:, :3], rtol=0, atol=1e-13)
    assert not np.allclose(net.apply(params, changed)[0][:, :3], y[:, :3])  # without the mask they matter
    # other layers ignore the option
    dense = Dense(2)
    assert dense.apply(dense.init(KEY, (3,)), np.ones((2, 3), np.float32), key_padding_mask=mask)[0].shape == (2, 2)


def test_dropout_uses_the_key_and_is_off_in_evaluation():
    layer = MultiHeadAttention(2, dropout=0.5)
    params = layer.init(KEY, (6, 4), np.float64)
    x = np.random.default_rng(3).standard_normal((3, 6, 4))
    y_eval = layer.apply(params, x)[0]
    np.testing.assert_array_equal(y_eval, MultiHeadAttention(2).apply(params, x)[0])
    a = layer.apply(params, x, train=True, key=fnn.random.key(1))[0]
    b = layer.apply(params, x, train=True, key=fnn.random.key(1))[0]
    c = layer.apply(params, x, train=True, key=fnn.random.key(2))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, y_eval)
    check_layer(layer, (6, 4), x=x, options={"train": True, "key": fnn.random.key(1)}, batch_coupled=True)


def test_dropout_matches_the_formula_with_the_same_mask():
    params = MultiHeadAttention(1).init(KEY, (4, 2), np.float64)
    x = np.random.default_rng(4).standard_normal((2, 4, 2))
    key = fnn.random.key(5)
    y, cache = attention_forward(params, x, 1, rate=0.25, key=key)
    p0 = attention_forward(params, x, 1)[1].p
    np.testing.assert_array_equal(cache.p, p0)  # dropout comes after the softmax
    keep = fnn.random.bernoulli(key, 0.75, p0.shape)
    v = cache.v
    o = ((p0 * keep / 0.75) @ v).transpose(0, 2, 1, 3).reshape(2, 4, 2)
    np.testing.assert_allclose(y, o @ params["out_proj"]["weight"].T + params["out_proj"]["bias"], rtol=1e-13)


@pytest.mark.parametrize("mode", ["self", "kv", "qkv"])
def test_float32_stays_float32_and_agrees_with_float64(mode):
    layer = MultiHeadAttention(3, causal=True)
    params = layer.init(KEY, (5, 6), np.float32)
    rng = np.random.default_rng(5)
    q, kv = rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 4, 6))
    x64 = {"self": q, "kv": (q, kv), "qkv": (q, kv, kv.copy())}[mode]
    x32 = tree.astype(x64, np.float32)
    mask = np.array([[False, False, True, False], [True, False, False, False]])
    mask = mask if mode != "self" else np.hstack([mask, np.zeros((2, 1), bool)])
    y32, vjp32 = layer.apply(params, x32, key_padding_mask=mask)
    y64, vjp64 = layer.apply(tree.astype(params, np.float64), x64, key_padding_mask=mask)
    g32, g64 = vjp32(np.ones_like(y32)), vjp64(np.ones_like(y64))
    assert y32.dtype == np.float32 and {a.dtype for a in tree.leaves(g32)} == {np.dtype(np.float32)}
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    assert tree.allclose(tree.astype(g32, np.float64), g64, rtol=1e-3, atol=1e-4)


def test_module_functions_are_the_layer():
    layer = MultiHeadAttention(2, causal=True)
    params = layer.init(KEY, ((3, 4), (5, 4)), np.float64)
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)))
    y, cache = attention_forward(params, x, 2, causal=True)
    y_layer, vjp = layer.apply(params, x)
    np.testing.assert_array_equal(y, y_layer)
    dy = rng.standard_normal(y.shape)
    assert tree.allclose(attention_backward(cache, dy), vjp(dy), rtol=0, atol=0)
    grads, dx = attention_backward(cache, dy, need_dx=False)
    assert dx is None and tree.allclose(grads, vjp(dy)[0], rtol=0, atol=0)


def test_init_follows_pytorch():
    params = MultiHeadAttention(4).init(KEY, (3, 16))
    a = np.sqrt(6 / (16 + 48))  # Xavier uniform on (3E, E)
    assert params["in_proj_weight"].shape == (48, 16) and np.abs(params["in_proj_weight"]).max() <= a
    assert np.abs(params["in_proj_weight"]).max() > 0.9 * a
    assert np.abs(params["out_proj"]["weight"]).max() <= 1 / 4  # Linear's U(-1/sqrt(E), 1/sqrt(E))
    np.testing.assert_array_equal(params["in_proj_bias"], 0)
    np.testing.assert_array_equal(params["out_proj"]["bias"], 0)
    assert set(MultiHeadAttention(4, bias=False).init(KEY, (3, 16))) == {"in_proj_weight", "out_proj"}


def test_purity_on_read_only_inputs():
    layer = MultiHeadAttention(2, causal=True, dropout=0.3)
    params = tree.map(lambda a: a.copy(), layer.init(KEY, ((3, 4), (5, 4)), np.float64))
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)))
    mask = np.array([[False, True, False, False, True], [False] * 5])
    for a in [*tree.leaves(params), *x, mask]:
        a.setflags(write=False)
    before = [a.copy() for a in [*tree.leaves(params), *x, mask]]
    y, vjp = layer.apply(params, x, train=True, key=KEY, key_padding_mask=mask)
    vjp(np.ones_like(y))
    assert all(np.array_equal(a, b) for a, b in zip([*tree.leaves(params), *x, mask], before))


def m(*parts):
    return ".*".join(re.escape(p) for p in parts)


@pytest.mark.parametrize("call, error, match", [
    (lambda: MultiHeadAttention(0), ValueError, m("MultiHeadAttention(0): num_heads must be >= 1, got 0")),
    (lambda: MultiHeadAttention(2.0), TypeError, m("MultiHeadAttention(2.0): num_heads must be an int")),
    (lambda: MultiHeadAttention(2, dropout=1.0), ValueError, m("MultiHeadAttention(2, dropout=1.0): dropout",
                                                                 "[0, 1), got 1.0")),
    (lambda: MultiHeadAttention(2, causal=1), TypeError, m("MultiHeadAttention(2, causal=1): causal", "got int")),
    (lambda: MultiHeadAttention(2).init(KEY, (3, 5)), ValueError,
     m("MultiHeadAttention(2): the feature size E must be a positive multiple of num_heads=2", "E=5",
       "init shape (3, 5)")),
    (lambda: MultiHeadAttention(2).init(KEY, (4,)), ValueError, m("MultiHeadAttention(2): init shape must be (T, E)",
                                                                  "got (4,)")),
    (lambda: MultiHeadAttention(2).init(KEY, ((3, 4), (5, 6))), ValueError, m("one E, got ((3, 4), (5, 6))")),
])
def test_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def apply_with(x, **options):
    layer = MultiHeadAttention(2)
    return layer.apply(layer.init(KEY, (3, 4)), x, **options)


ONES = np.ones((2, 3, 4), np.float32)


@pytest.mark.parametrize("call, error, match", [
    (lambda: apply_with(np.ones((2, 3, 6), np.float32)), ValueError,
     m("MultiHeadAttention(2): params['in_proj_weight'] has shape (12, 4) but the input needs (18, 6)")),
    (lambda: apply_with(np.ones((2, 3, 5), np.float32)), ValueError, m("E=5 in the input of shape (2, 3, 5)")),
    (lambda: apply_with(np.ones((2, 4), np.float32)), ValueError,
     m("MultiHeadAttention(2): inputs must be (N, T, E) sequences, got x of shapes (2, 4)")),
    (lambda: apply_with((ONES,)), ValueError, m("input must be x (N, T, E) or a tuple (q, kv) or (q, k, v)",
                                                "a tuple of 1")),
    (lambda: apply_with((ONES, np.ones((3, 5, 4), np.float32))), ValueError,
     m("q, kv must have one batch size", "(2, 3, 4), (3, 5, 4)")),
    (lambda: apply_with((ONES, np.ones((2, 5, 4), np.float32), np.ones((2, 4, 4), np.float32))), ValueError,
     m("k and v one length", "(2, 5, 4), (2, 4, 4)")),
    (lambda: apply_with((ONES, np.ones((2, 5, 4)))), TypeError, m("inputs must share one dtype",
                                                                  "['float32', 'float64']")),
    (lambda: apply_with((ONES, np.ones((2, 5, 4), np.int64))), TypeError, m("input x has dtype int64")),
    (lambda: apply_with(np.ones((2, 0, 4), np.float32)), ValueError, m("at least one query and one key")),
    (lambda: apply_with(ONES, key_padding_mask=np.zeros((2, 4), bool)), ValueError,
     m("MultiHeadAttention(2): option key_padding_mask has shape (2, 4) but the keys need (N, S) = (2, 3)")),
    (lambda: apply_with((ONES, np.ones((2, 5, 4), np.float32)), key_padding_mask=np.zeros((2, 3), bool)),
     ValueError, m("key_padding_mask has shape (2, 3)", "(N, S) = (2, 5)")),
    (lambda: apply_with(ONES, key_padding_mask=np.zeros((2, 3))), TypeError,
     m("MultiHeadAttention(2): option key_padding_mask must be None or a bool numpy array", "dtype float64")),
    (lambda: apply_with(ONES, key_padding_mask=[[True] * 3] * 2), TypeError,
     m("key_padding_mask must be None or a bool numpy array", "got list")),
    (lambda: MultiHeadAttention(2, dropout=0.1).apply(MultiHeadAttention(2).init(KEY, (3, 4)), ONES, train=True),
     ValueError, m("MultiHeadAttention(2, dropout=0.1): train=True with dropout needs a key")),
    (lambda: apply_with(ONES)[1](np.ones((2, 3, 5), np.float32)), ValueError,
     m("MultiHeadAttention(2).vjp: dy has shape (2, 3, 5) but the output y has shape (2, 3, 4)")),
])
def test_input_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_params_errors():
    layer = MultiHeadAttention(2)
    params = layer.init(KEY, (3, 4))
    with pytest.raises(ValueError, match=m("params has keys ['in_proj_bias', 'in_proj_weight']", "'out_proj'")):
        layer.apply({k: v for k, v in params.items() if k != "out_proj"}, ONES)
    with pytest.raises(ValueError, match=m("MultiHeadAttention(2) params['out_proj']: params has keys ['weight']")):
        layer.apply({**params, "out_proj": {"weight": params["out_proj"]["weight"]}}, ONES)
    with pytest.raises(TypeError, match=m("params['in_proj_weight'] has dtype float32 but x has dtype float64")):
        layer.apply(params, ONES.astype(np.float64))
    with pytest.raises(ValueError, match=m("params has keys", "this layer expects")):
        MultiHeadAttention(2, bias=False).apply(params, ONES)
