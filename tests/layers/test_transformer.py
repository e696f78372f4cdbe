"""TransformerEncoderLayer: PyTorch parity (pre-LN and post-LN, relu and gelu, masks), its
structure (combinators only), dropout, float32 and errors."""

import re
from pathlib import Path

import numpy as np
import pytest

import fnn
from fnn import tree
from fnn.combinators import residual, serial
from fnn.interop import from_torch_state_dict, to_torch_state_dict
from fnn.layers import LayerNorm, MultiHeadAttention, Tanh, TransformerEncoderLayer
from fnn.layers.transformer import encoder_body
from fnn.testing import check_layer

KEY = fnn.random.key(0)


def m(*parts):
    return ".*".join(re.escape(p) for p in parts)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("heads, e, ff, masks", [(1, 3, 5, None), (2, 6, 7, "causal"), (3, 9, 4, "padding"),
                                                  (2, 4, 3, "both")])
def test_matches_torch_forward_dparams_and_dx(norm_first, activation, heads, e, ff, masks):
    torch = pytest.importorskip("torch")
    n, t = 3, 5
    torch.manual_seed(heads + e)
    tm = torch.nn.TransformerEncoderLayer(e, heads, ff, dropout=0.0, activation=activation, batch_first=True,
                                          norm_first=norm_first, dtype=torch.float64)
    with torch.no_grad():
        for p in tm.parameters():  # non-trivial LayerNorm and bias values
            p.add_(0.2 * torch.randn_like(p))
    causal = masks in ("causal", "both")
    layer = TransformerEncoderLayer(heads, ff, dropout=0.0, activation=activation, norm_first=norm_first,
                                    causal=causal)
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    params, _ = from_torch_state_dict(layer, sd, (t, e), np.float64)
    rng = np.random.default_rng(e)
    x = rng.standard_normal((n, t, e))
    mask = None
    if masks in ("padding", "both"):
        mask = np.zeros((n, t), bool)
        mask[1, 3:] = True
        mask[2, 0] = True  # with the causal mask, query 0 of example 2 sees no key
    y, vjp = layer.apply(params, x, key_padding_mask=mask)
    dy = rng.standard_normal(y.shape)
    grads, dx = vjp(dy)

    tx = torch.tensor(x, requires_grad=True)
    kwargs = {"src_key_padding_mask": None if mask is None else torch.tensor(mask)}
    if causal:
        kwargs.update(src_mask=torch.tensor(~np.tri(t, dtype=bool)), is_causal=True)
    ty = tm(tx, **kwargs)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-10)
    ours = to_torch_state_dict(layer, grads, (t, e))  # dparams in PyTorch's names and layout
    theirs = {name: p.grad.numpy() for name, p in tm.named_parameters()}
    assert set(ours) == set(theirs)
    for name, g in theirs.items():
        np.testing.assert_allclose(ours[name], g, rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("norm_first", [False, True])
def test_is_built_from_combinators(norm_first):
    layer = TransformerEncoderLayer(2, 8, norm_first=norm_first)
    params = layer.init(KEY, (5, 4))
    body = encoder_body(layer, params)
    assert body.kind == "serial"
    names = [name for name, _ in body.children]
    assert names == (["sa_block", "ff_block"] if norm_first else ["sa_block", "norm1", "ff_block", "norm2"])
    sa = dict(body.children)["sa_block"]
    assert sa.kind.startswith("residual(")
    inner = [name for name, _ in sa.children[0][1].children]
    assert inner == (["norm1", "self_attn", "dropout1"] if norm_first else ["self_attn", "dropout1"])
    ff = [name for name, _ in dict(body.children)["ff_block"].children[0][1].children]
    assert ff == ([*(["norm2"] if norm_first else []), "linear1", "activation", "dropout", "linear2", "dropout2"])
    # the same block written out by hand gives the same output
    attn = MultiHeadAttention(2, dropout=0.1)
    assert params["sa_block"]["inner"]["self_attn"]["in_proj_weight"].shape == (12, 4)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    if not norm_first:
        by_hand = serial(("sa_block", residual(serial(("self_attn", attn), ("dropout1", fnn.layers.Dropout(0.1))))),
                         ("norm1", LayerNorm()), ("ff_block", dict(body.children)["ff_block"]), ("norm2", LayerNorm()))
        np.testing.assert_array_equal(by_hand.apply(params, x)[0], layer.apply(params, x)[0])


def test_params_are_the_same_for_one_e_and_the_block_adapts_to_e():
    layer = TransformerEncoderLayer(2, 8)
    p4, p6 = layer.init(KEY, (5, 4)), layer.init(KEY, (3, 6))
    assert p4["ff_block"]["inner"]["linear2"]["w"].shape == (8, 4)
    assert p6["ff_block"]["inner"]["linear2"]["w"].shape == (8, 6)
    assert layer.apply(p6, np.ones((2, 7, 6), np.float32))[0].shape == (2, 7, 6)  # any T
    assert encoder_body(layer, p4) is encoder_body(layer, layer.init(fnn.random.key(1), (2, 4)))


def test_causal_block_does_not_look_ahead():
    layer = TransformerEncoderLayer(2, 8, dropout=0.0, norm_first=True, causal=True)
    params = layer.init(KEY, (6, 4), np.float64)
    x = np.random.default_rng(1).standard_normal((2, 6, 4))
    later = x.copy()
    later[:, 4:] = 7.0
    np.testing.assert_allclose(layer.apply(params, x)[0][:, :4], layer.apply(params, later)[0][:, :4], rtol=0,
                               atol=1e-13)


def test_dropout_in_training_needs_a_key_and_is_deterministic_under_one():
    layer = TransformerEncoderLayer(2, 8, dropout=0.3)
    params = layer.init(KEY, (5, 4), np.float64)
    x = np.random.default_rng(2).standard_normal((2, 5, 4))
    a = layer.apply(params, x, train=True, key=fnn.random.key(3))[0]
    np.testing.assert_array_equal(a, layer.apply(params, x, train=True, key=fnn.random.key(3))[0])
    assert not np.allclose(a, layer.apply(params, x)[0])
    np.testing.assert_array_equal(layer.apply(params, x)[0],
                                  TransformerEncoderLayer(2, 8, dropout=0.0).apply(params, x)[0])
    with pytest.raises(ValueError, match=m("TransformerEncoderLayer(2, 8, dropout=0.3)", "needs a key")):
        layer.apply(params, x, train=True)
    check_layer(layer, (5, 4), x=x, batch_size=2, options={"train": True, "key": fnn.random.key(3)},
                batch_coupled=True)


def test_float32_stays_float32_and_a_layer_as_activation():
    layer = TransformerEncoderLayer(2, 6, dropout=0.0, activation=Tanh(), norm_first=True)
    assert layer.kind == "TransformerEncoderLayer(2, 6, dropout=0.0, activation=Tanh(), norm_first=True)"
    params = layer.init(KEY, (4, 4))
    x = np.random.default_rng(4).standard_normal((3, 4, 4))
    y32, vjp32 = layer.apply(params, x.astype(np.float32))
    y64, vjp64 = layer.apply(tree.astype(params, np.float64), x)
    g32 = vjp32(np.ones_like(y32))
    assert y32.dtype == np.float32 and {a.dtype for a in tree.leaves(g32)} == {np.dtype(np.float32)}
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    assert tree.allclose(tree.astype(g32, np.float64), vjp64(np.ones_like(y64)), rtol=1e-3, atol=1e-4)


def test_summary_shows_the_block():
    layer = TransformerEncoderLayer(2, 8)
    rows = fnn.summary(layer, (5, 4), print_fn=None)
    assert rows[0].kind == "TransformerEncoderLayer(2, 8)" and rows[0].params == 3 * 16 + 12 + 16 + 4 + 40 + 36 + 16


@pytest.mark.parametrize("call, error, match", [
    (lambda: TransformerEncoderLayer(0, 8), ValueError, m("TransformerEncoderLayer(0, 8): num_heads must be >= 1")),
    (lambda: TransformerEncoderLayer(2, 0), ValueError,
     m("TransformerEncoderLayer(2, 0): dim_feedforward must be >= 1, got 0")),
    (lambda: TransformerEncoderLayer(2, 8, dropout=-0.1), ValueError, m("dropout", "[0, 1), got -0.1")),
    (lambda: TransformerEncoderLayer(2, 8, activation="swish"), ValueError,
     m("TransformerEncoderLayer(2, 8, activation='swish'): activation must be one of", "'relu'", "'gelu'")),
    (lambda: TransformerEncoderLayer(2, 8, activation=np.tanh), TypeError, m("activation")),
    (lambda: TransformerEncoderLayer(2, 8, norm_first="yes"), TypeError, m("norm_first", "got str")),
    (lambda: TransformerEncoderLayer(2, 8, eps=0), ValueError, m("eps must be", "got 0")),
    (lambda: TransformerEncoderLayer(2, 8).init(KEY, (4,)), ValueError,
     m("TransformerEncoderLayer(2, 8): init shape must be (T, E), got (4,)")),
    (lambda: TransformerEncoderLayer(2, 8).init(KEY, (4, 5)), ValueError,
     m("TransformerEncoderLayer(2, 8)", "E must be a positive multiple of num_heads=2", "E=5")),
    (lambda: TransformerEncoderLayer(2, 8).apply(TransformerEncoderLayer(2, 8).init(KEY, (4, 6)),
                                                 np.ones((2, 6), np.float32)), ValueError,
     m("TransformerEncoderLayer(2, 8): input must be (N, T, E), got shape (2, 6)")),
    (lambda: TransformerEncoderLayer(2, 8).apply(TransformerEncoderLayer(2, 8).init(KEY, (4, 6)),
                                                 np.ones((2, 4, 4), np.float32)), ValueError,
     m("TransformerEncoderLayer(2, 8)", "params['in_proj_weight'] has shape (18, 6) but the input needs (12, 4)")),
    (lambda: TransformerEncoderLayer(2, 8).apply(TransformerEncoderLayer(2, 8).init(KEY, (4, 6)),
                                                 np.ones((2, 4, 6), np.float32),
                                                 key_padding_mask=np.zeros((2, 3), bool)), ValueError,
     m("TransformerEncoderLayer(2, 8)", "key_padding_mask has shape (2, 3) but the keys need (N, S) = (2, 4)")),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_the_code_in_docs_attention_md_runs():
    text = (Path(__file__).resolve().parents[2] / "docs" / "attention.md").read_text()
    namespace: dict = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        exec(block, namespace)  # noqa: S102 (our own docs)
    assert namespace["logits"].shape == (4, 16, 65) and abs(namespace["loss"] - np.log(65)) < 0.5
    assert namespace["grads"]["tok"]["weight"].dtype == np.float32
