"""The one registry of every public layer, which every generic test iterates.

- ``REGISTRY`` maps a constructor's name to a hypothesis strategy drawing a :class:`Case`
  (valid constructor arguments and inputs). ``tests/test_check_layer.py`` runs
  ``fnn.testing.check_layer`` (gradients, purity, dtypes, need_dx, state, layouts, ...) on
  every row, and ``tests/layers/test_contract.py`` the protocol's input and cotangent errors.
  Inputs are bounded and, for layers with kinks (ReLU, LeakyReLU, MaxPool2D), kept away
  from them so finite differences are valid.
- ``FIXED`` gives fixed instances of every layer that takes one float array, for the
  catalogue of bad inputs (``tests/test_errors.py``: dtypes, NaN, empty batches).

A public layer or combinator without a ``REGISTRY`` row, or (unless it takes tuples or
indices) without a ``FIXED`` row, fails a test. Adding a layer: see ``docs/adding-a-layer.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st

import fnn
from fnn import layers as L

ints = st.integers


class Case(NamedTuple):
    layer: fnn.Layer
    shape: Any
    x: Any = None  # None: check_layer draws a normal batch
    options: dict[str, Any] = {}
    batch_coupled: bool = False
    batch_size: int = 3


def sides(min_dims: int, max_dims: int, lo: int = 1, hi: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(ints(lo, hi), min_size=min_dims, max_size=max_dims).map(tuple)


def batch_of(draw: Any, shape: tuple[int, ...], n: int, away_from_zero: bool = False) -> np.ndarray:
    seed = draw(ints(0, 2**16), label="x seed")
    x = np.clip(np.random.default_rng(seed).standard_normal((n, *shape)), -3, 3)
    if away_from_zero:
        x = np.where(x < 0, np.minimum(x, -0.05), np.maximum(x, 0.05))
    return x


def distinct_batch(draw: Any, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Values 0.1 apart (a scaled permutation): no ties, so max pooling has no kinks nearby."""
    seed = draw(ints(0, 2**16), label="x seed")
    size = n * int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(size).reshape(n, *shape) - size / 2) * 0.1


@st.composite
def dense(draw: Any) -> Case:
    shape = (*draw(sides(0, 2)), draw(ints(1, 4)))
    return Case(L.Dense(draw(ints(1, 4)), bias=draw(st.booleans())), shape)


def pointwise(make: st.SearchStrategy[fnn.Layer], kinks: bool = False, min_dims: int = 1) -> Any:
    @st.composite
    def case(draw: Any) -> Case:
        shape, n = draw(sides(min_dims, 3)), draw(ints(1, 3))
        return Case(draw(make), shape, batch_of(draw, shape, n, away_from_zero=kinks), batch_size=n)

    return case()


@st.composite
def softmax(draw: Any, make: Any) -> Case:
    shape = draw(sides(1, 3))
    axis = draw(st.sampled_from([*range(1, len(shape) + 1), *range(-len(shape), 0)]))
    return Case(make(axis=axis), shape)


@st.composite
def conv(draw: Any) -> Case:
    k = (draw(ints(1, 3)), draw(ints(1, 3)))
    s = (draw(ints(1, 3)), draw(ints(1, 2)))
    d = (draw(ints(1, 2)), draw(ints(1, 2)))
    padding = draw(st.one_of(ints(0, 2), st.tuples(ints(0, 2), ints(0, 2)), st.just("same"), st.just("valid"),
                             st.tuples(st.tuples(ints(0, 2), ints(0, 2)), st.tuples(ints(0, 2), ints(0, 2)))))
    span = [dd * (kk - 1) + 1 for kk, dd in zip(k, d)]
    shape = (draw(ints(1, 3)), draw(ints(span[0], span[0] + 4)), draw(ints(span[1], span[1] + 4)))
    layer = L.Conv2D(draw(ints(1, 3)), k, stride=s, padding=padding, dilation=d, bias=draw(st.booleans()),
                     dx_method=draw(st.sampled_from(["col2img", "flipped"])), recompute=draw(st.booleans()))
    return Case(layer, shape)


@st.composite
def pool(draw: Any, kind: str) -> Case:
    k = (draw(ints(1, 3)), draw(ints(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(ints(1, 3), ints(1, 3))))
    padding = (draw(ints(0, k[0] // 2)), draw(ints(0, k[1] // 2)))
    shape = (draw(ints(1, 3)), draw(ints(k[0], k[0] + 4)), draw(ints(k[1], k[1] + 4)))
    n = draw(ints(1, 3))
    if kind == "max":
        return Case(L.MaxPool2D(k, stride, padding), shape, distinct_batch(draw, shape, n), batch_size=n)
    return Case(L.AvgPool2D(k, stride, padding, count_include_pad=draw(st.booleans())), shape)


@st.composite
def global_avg_pool(draw: Any) -> Case:
    return Case(L.GlobalAvgPool2D(), (draw(ints(1, 3)), draw(ints(1, 4)), draw(ints(1, 4))))


@st.composite
def batchnorm(draw: Any) -> Case:
    shape = (draw(ints(1, 3)), *draw(sides(0, 2, 1, 3)))
    layer = L.BatchNorm(momentum=draw(st.floats(0.0, 1.0)), affine=draw(st.booleans()))
    if draw(st.booleans(), label="train"):
        n = draw(ints(2, 4))
        return Case(layer, shape, options={"train": True}, batch_coupled=True, batch_size=n)
    c = shape[0]
    state = {"mean": np.linspace(-1, 1, c), "var": np.linspace(0.5, 2, c)}
    return Case(layer, shape, options={"state": state})


@st.composite
def layernorm(draw: Any) -> Case:
    ndim = draw(ints(1, 2))
    return Case(L.LayerNorm(ndim, affine=draw(st.booleans())), draw(sides(ndim, 3)))


@st.composite
def dropout(draw: Any) -> Case:
    layer = L.Dropout(draw(st.sampled_from([0.0, 0.25, 0.5, 0.9])))
    shape = draw(sides(1, 3))
    if draw(st.booleans(), label="train"):
        key = fnn.random.key(draw(ints(0, 1000)))
        return Case(layer, shape, options={"train": True, "key": key}, batch_coupled=True)
    return Case(layer, shape)


@st.composite
def embedding(draw: Any) -> Case:
    """Index shapes () to (2, 3); a table small enough that indices repeat (gradients add up);
    sometimes inside a serial that learns from it. With a padding row the drawn indices avoid
    it: the row is frozen by definition (no gradient, as in PyTorch), which finite
    differences cannot see; tests/layers/test_embedding.py checks it against PyTorch."""
    num, features = draw(ints(1, 5)), draw(ints(1, 3))
    padding_idx = draw(st.one_of(st.none(), ints(-num, num - 1))) if num > 1 else None
    layer = L.Embedding(num, features, padding_idx=padding_idx)
    shape = draw(sides(0, 2))
    x = None
    if padding_idx is not None:
        seed = draw(ints(0, 2**16), label="x seed")
        others = np.delete(np.arange(num), padding_idx % num)
        x = np.random.default_rng(seed).choice(others, (3, *shape))
    if draw(st.booleans(), label="in a serial"):
        return Case(fnn.serial(layer, L.Tanh(), L.Dense(2)), shape, x)
    return Case(layer, shape, x)


def recurrent(make: Any) -> Any:
    @st.composite
    def case(draw: Any) -> Case:
        hidden, layers_, bidi = draw(ints(1, 3)), draw(ints(1, 2)), draw(st.booleans())
        layer = make(hidden, layers_, bidi)
        steps, features = draw(ints(1, 4)), draw(ints(1, 3))
        if draw(st.booleans(), label="initial states"):
            n_states = 2 if layer.kind.startswith("LSTM") else 1
            state = (layers_ * (2 if bidi else 1), hidden)
            return Case(layer, ((steps, features),) + (state,) * n_states)
        return Case(layer, (steps, features))

    return case()


@st.composite
def sequence_reduction(draw: Any, make: Any) -> Case:
    return Case(make(), (draw(ints(1, 4)), draw(ints(1, 3))))


@st.composite
def serial(draw: Any) -> Case:
    width = draw(ints(1, 4))
    inner = fnn.serial(L.Dense(width), L.Tanh(), ("out", L.Dense(draw(ints(1, 3)))))
    return Case(fnn.serial(L.Dense(3), L.Sigmoid(), ("block", inner), L.LogSoftmax()), (draw(ints(1, 4)),))


@st.composite
def parallel(draw: Any) -> Case:
    shapes = ((draw(ints(1, 3)),), (draw(ints(1, 3)), draw(ints(1, 3))))
    return Case(fnn.parallel(L.Dense(draw(ints(1, 3))), L.Tanh()), shapes)


@st.composite
def fan_out(draw: Any) -> Case:
    return Case(fnn.fan_out(draw(ints(1, 3))), draw(sides(1, 3)))


@st.composite
def fan_in_sum(draw: Any) -> Case:
    shape = draw(sides(1, 3))
    return Case(fnn.fan_in_sum(), (shape,) * draw(ints(1, 3)))


@st.composite
def fan_in_concat(draw: Any) -> Case:
    base = draw(sides(1, 3))
    axis = draw(ints(1, len(base)))
    shapes = tuple(base[:axis - 1] + (draw(ints(1, 3)),) + base[axis:] for _ in range(draw(ints(1, 3))))
    return Case(fnn.fan_in_concat(axis=draw(st.sampled_from([axis, axis - len(base) - 1]))), shapes)


@st.composite
def residual(draw: Any) -> Case:
    c = draw(ints(1, 3))
    block = fnn.serial(L.Conv2D(c, 3, padding="same"), L.Tanh(), L.Conv2D(c, draw(st.sampled_from([1, 3])),
                                                                        padding="same"))
    return Case(fnn.residual(block), (c, draw(ints(2, 5)), draw(ints(2, 5))))


@st.composite
def elementwise(draw: Any) -> Case:
    fn, dfn = draw(st.sampled_from([(np.sin, np.cos), (np.exp, np.exp), (np.arctan, lambda x: 1 / (1 + x * x))]))
    return Case(fnn.elementwise(fn, dfn), draw(sides(1, 3)))


@st.composite
def position_embedding(draw: Any) -> Case:
    """Sequences (T, E) with T up to max_len (rows past T get a zero gradient); sometimes after a
    Dense in a serial, as in a model."""
    t, e = draw(ints(1, 4)), draw(ints(1, 3))
    layer = L.PositionEmbedding(draw(ints(t, t + 2)))
    if draw(st.booleans(), label="in a serial"):
        return Case(fnn.serial(L.Dense(e), layer), (t, draw(ints(1, 3))))
    return Case(layer, (t, e))


@st.composite
def sinusoidal_position(draw: Any) -> Case:
    """Odd and even E; max_len unbounded or at least T; a few bases."""
    t, e = draw(ints(1, 4)), draw(ints(1, 5))
    max_len = draw(st.one_of(st.none(), ints(t, t + 2)))
    return Case(L.SinusoidalPositionEmbedding(max_len, base=draw(st.sampled_from([10000.0, 100.0, 2.0]))), (t, e))


@st.composite
def attention(draw: Any) -> Case:
    """Self-attention or cross-attention ((q, kv) or (q, k, v)), odd head sizes, the causal mask,
    a key-padding mask (sometimes leaving an example, or a causal query, with no key at all: its
    output is the bias and no gradient flows, never NaN), and attention dropout in training."""
    heads, d, t, n = draw(ints(1, 3)), draw(ints(1, 3)), draw(ints(1, 4)), 3
    mode = draw(st.sampled_from(["self", "kv", "qkv"]))
    s = t if mode == "self" else draw(ints(1, 4))
    e = heads * d
    shape: Any = {"self": (t, e), "kv": ((t, e), (s, e)), "qkv": ((t, e), (s, e), (s, e))}[mode]
    train = draw(st.booleans(), label="dropout in training")
    layer = L.MultiHeadAttention(heads, dropout=0.3 if train else 0.0, causal=draw(st.booleans()),
                                 bias=draw(st.booleans()))
    options: dict[str, Any] = {"train": True, "key": fnn.random.key(draw(ints(0, 1000)))} if train else {}
    if draw(st.booleans(), label="key padding"):
        mask = np.random.default_rng(draw(ints(0, 2**16), label="mask seed")).random((n, s)) < 0.4
        mask[0] = draw(st.booleans(), label="example 0 fully masked") or mask[0]
        options["key_padding_mask"] = mask
    return Case(layer, shape, options=options, batch_coupled=train, batch_size=n)


@st.composite
def transformer(draw: Any) -> Case:
    heads, d = draw(ints(1, 3)), draw(ints(1, 2))
    # LayerNorm over one feature is constant and over two it is +-1: a step, whose kink finite differences
    # straddle (post-LN with E = 2 fails them), so E >= 3.
    e, t, n = heads * max(d, -(-3 // heads)), draw(ints(1, 4)), 3
    train = draw(st.booleans(), label="dropout in training")
    activation = draw(st.sampled_from(["gelu", L.Tanh()]))
    layer = L.TransformerEncoderLayer(heads, draw(ints(1, 4)), dropout=0.2 if train else 0.0, activation=activation,
                                      norm_first=draw(st.booleans()), causal=draw(st.booleans()))
    options: dict[str, Any] = {"train": True, "key": fnn.random.key(draw(ints(0, 1000)))} if train else {}
    if draw(st.booleans(), label="key padding"):
        seed = draw(ints(0, 2**16), label="mask seed")
        options["key_padding_mask"] = np.random.default_rng(seed).random((n, t)) < 0.3
    return Case(layer, (t, e), options=options, batch_coupled=train, batch_size=n)


@st.composite
def tie(draw: Any) -> Case:
    """An embedding tied to the output projection (transposed), or two Dense weights tied."""
    v, e = draw(ints(1, 4)), draw(ints(1, 3))
    if draw(st.booleans(), label="embedding and head"):
        net = fnn.serial(("embed", L.Embedding(v, e)), L.Tanh(), ("head", L.Dense(v, bias=draw(st.booleans()))))
        return Case(fnn.tie(net, target="head/w", source="embed/weight", transpose=True), draw(sides(0, 2)))
    net = fnn.serial(("a", L.Dense(e)), L.Tanh(), ("b", L.Dense(e)))
    return Case(fnn.tie(net, target="b/w", source="a/w", transpose=draw(st.booleans())), (e,))


REGISTRY: dict[str, st.SearchStrategy[Case]] = {
    "Dense": dense(),
    "Flatten": pointwise(st.builds(L.Flatten)),
    "Identity": pointwise(st.builds(L.Identity)),
    "ReLU": pointwise(st.builds(L.ReLU), kinks=True),
    "LeakyReLU": pointwise(st.builds(L.LeakyReLU, st.floats(0.0, 1.0)), kinks=True),
    "Sigmoid": pointwise(st.builds(L.Sigmoid)),
    "Tanh": pointwise(st.builds(L.Tanh)),
    "GELU": pointwise(st.builds(L.GELU, st.sampled_from(["none", "tanh"]))),
    "SiLU": pointwise(st.builds(L.SiLU)),
    "Softmax": softmax(L.Softmax),
    "LogSoftmax": softmax(L.LogSoftmax),
    "Conv2D": conv(),
    "MaxPool2D": pool("max"),
    "AvgPool2D": pool("avg"),
    "GlobalAvgPool2D": global_avg_pool(),
    "BatchNorm": batchnorm(),
    "LayerNorm": layernorm(),
    "Dropout": dropout(),
    "Embedding": embedding(),
    "RNN": recurrent(lambda h, n, b: L.RNN(h, n, "tanh", b)),
    "LSTM": recurrent(L.LSTM),
    "GRU": recurrent(L.GRU),
    "LastStep": sequence_reduction(L.LastStep),
    "MeanOverTime": sequence_reduction(L.MeanOverTime),
    "PositionEmbedding": position_embedding(),
    "SinusoidalPositionEmbedding": sinusoidal_position(),
    "serial": serial(),
    "parallel": parallel(),
    "fan_out": fan_out(),
    "fan_in_sum": fan_in_sum(),
    "fan_in_concat": fan_in_concat(),
    "residual": residual(),
    "elementwise": elementwise(),
    "MultiHeadAttention": attention(),
    "TransformerEncoderLayer": transformer(),
    "tie": tie(),
}

PUBLIC = sorted(set(L.__all__) | {"serial", "parallel", "fan_out", "fan_in_sum", "fan_in_concat", "residual",
                                  "elementwise", "tie"})


def softplus() -> fnn.Layer:
    return fnn.elementwise(lambda x: np.logaddexp(0, x), lambda x: 0.5 * (1 + np.tanh(x / 2)), name="softplus")


# Fixed instances: (id, constructor, example shape). The id starts with the public name.
FIXED: list[tuple[str, Any, tuple[int, ...]]] = [
    ("Dense", lambda: L.Dense(3), (4,)),
    ("Dense-seq", lambda: L.Dense(3, bias=False), (2, 4)),
    ("Conv2D", lambda: L.Conv2D(2, 3, padding=1), (2, 5, 5)),
    ("Conv2D-flipped", lambda: L.Conv2D(2, 3, stride=2, dx_method="flipped"), (2, 5, 5)),
    ("MaxPool2D", lambda: L.MaxPool2D(2), (2, 4, 4)),
    ("AvgPool2D", lambda: L.AvgPool2D(3, stride=1, padding=1, count_include_pad=False), (2, 4, 4)),
    ("GlobalAvgPool2D", lambda: L.GlobalAvgPool2D(), (2, 4, 4)),
    ("BatchNorm", lambda: L.BatchNorm(), (3,)),
    ("BatchNorm-2d", lambda: L.BatchNorm(affine=False), (3, 4, 4)),
    ("LayerNorm", lambda: L.LayerNorm(), (4,)),
    ("RNN", lambda: L.RNN(3, nonlinearity="relu"), (5, 2)),
    ("LSTM", lambda: L.LSTM(3, bidirectional=True), (5, 2)),
    ("GRU", lambda: L.GRU(3, num_layers=2), (5, 2)),
    ("LastStep", lambda: L.LastStep(), (5, 2)),
    ("MeanOverTime", lambda: L.MeanOverTime(), (5, 2)),
    ("PositionEmbedding", lambda: L.PositionEmbedding(8), (5, 4)),
    ("SinusoidalPositionEmbedding", lambda: L.SinusoidalPositionEmbedding(), (5, 3)),
    ("ReLU", lambda: L.ReLU(), (4,)),
    ("LeakyReLU", lambda: L.LeakyReLU(0.2), (4,)),
    ("Sigmoid", lambda: L.Sigmoid(), (4,)),
    ("Tanh", lambda: L.Tanh(), (4,)),
    ("GELU", lambda: L.GELU(), (4,)),
    ("GELU-tanh", lambda: L.GELU("tanh"), (4,)),
    ("SiLU", lambda: L.SiLU(), (4,)),
    ("Softmax", lambda: L.Softmax(), (4,)),
    ("LogSoftmax", lambda: L.LogSoftmax(), (4,)),
    ("Flatten", lambda: L.Flatten(), (3, 4)),
    ("Identity", lambda: L.Identity(), (4,)),
    ("Dropout", lambda: L.Dropout(0.5), (4,)),
    ("elementwise", softplus, (4,)),
    ("serial", lambda: fnn.serial(L.Dense(4), L.BatchNorm(), L.ReLU(), L.Dropout(0.3), L.Dense(2)), (3,)),
    ("residual", lambda: fnn.residual(fnn.serial(L.Dense(4), L.Tanh())), (4,)),
    ("MultiHeadAttention", lambda: L.MultiHeadAttention(2, dropout=0.1, causal=True), (5, 4)),
    ("MultiHeadAttention-one-head", lambda: L.MultiHeadAttention(1, bias=False), (3, 3)),
    ("TransformerEncoderLayer", lambda: L.TransformerEncoderLayer(2, 8), (5, 4)),
    ("TransformerEncoderLayer-gpt", lambda: L.TransformerEncoderLayer(2, 8, norm_first=True, causal=True), (5, 4)),
    ("tie", lambda: fnn.tie(fnn.serial(("a", L.Dense(4)), L.Tanh(), ("b", L.Dense(4))), target="b/w", source="a/w",
                            transpose=True), (4,)),
]

# Public layers that take tuples or integer indices, not one float array: no FIXED row.
NOT_ONE_FLOAT_ARRAY = {"Embedding", "parallel", "fan_out", "fan_in_sum", "fan_in_concat"}
