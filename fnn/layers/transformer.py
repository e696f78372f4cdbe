"""The transformer encoder block, built from ``residual``, ``serial``, LayerNorm, Dense, Dropout
and :class:`~fnn.layers.MultiHeadAttention`; with ``causal=True``, the decoder-only (GPT) block.

Nothing here has a vjp of its own: the block's gradient is its parts' (the fused attention
backward, LayerNorm's closed form, Dense's matmuls, the residual sums), composed by ``serial``.
"""

from __future__ import annotations

from typing import Any

from fnn import validate
from fnn.combinators import apply_child, reraise_with, residual, serial
from fnn.core import Layer, Options, Output, layer_kind, make_layer, parameterless
from fnn.layers.activations import GELU, ReLU
from fnn.layers.attention import MultiHeadAttention
from fnn.layers.dense import Dense
from fnn.layers.dropout import Dropout
from fnn.layers.norm import LayerNorm

__all__ = ["TransformerEncoderLayer", "encoder_body"]


def _activation(where: str, activation: Any) -> Layer:
    if isinstance(activation, Layer):
        return activation
    name = validate.choice(where, "activation", activation, ["relu", "gelu"])
    return ReLU() if name == "relu" else GELU()


def _dropout(rate: float) -> Layer:
    """``Dropout(rate)``; at rate 0 a pass-through of the same kind that returns its input itself (and
    ``dy`` as ``dx``), for use inside the block only: there its output goes to a layer or a residual
    sum that only reads it, so Dropout's copy (a layer's output never aliases its input) buys nothing,
    and costs three passes per block."""
    if rate > 0:
        return Dropout(rate)
    return parameterless(Dropout(0.0).kind, lambda x: (x, lambda dy: dy))


def _body(e: int, heads: int, width: int, rate: float, act: Layer, norm_first: bool, causal: bool,
          eps: float) -> Layer:
    """The block for feature size ``e``, from combinators (see :func:`TransformerEncoderLayer`)."""
    attention = [("self_attn", MultiHeadAttention(heads, dropout=rate, causal=causal)), ("dropout1", _dropout(rate))]
    feedforward = [("linear1", Dense(width)), ("activation", act), ("dropout", _dropout(rate)),
                   ("linear2", Dense(e)), ("dropout2", _dropout(rate))]
    if norm_first:
        return serial(("sa_block", residual(serial(("norm1", LayerNorm(eps=eps)), *attention))),
                      ("ff_block", residual(serial(("norm2", LayerNorm(eps=eps)), *feedforward))))
    return serial(("sa_block", residual(serial(*attention))), ("norm1", LayerNorm(eps=eps)),
                  ("ff_block", residual(serial(*feedforward))), ("norm2", LayerNorm(eps=eps)))


def encoder_body(layer: Layer, params: Any) -> Layer:
    """The combinator a :func:`TransformerEncoderLayer` runs for ``params`` (its sub-layers, for
    ``fnn.interop``): the block is built for its feature size ``E``, known from the params."""
    build = getattr(layer, "body_for", None)
    if build is None:
        raise TypeError(f"encoder_body: expected a TransformerEncoderLayer, got {layer.kind}")
    body: Layer = build(params["sa_block"]["inner"]["self_attn"]["in_proj_weight"].shape[1])
    return body


def TransformerEncoderLayer(num_heads: int, dim_feedforward: int, *, dropout: float = 0.1,
                            activation: str | Layer = "relu", norm_first: bool = False, causal: bool = False,
                            eps: float = 1e-5) -> Layer:
    """A transformer encoder block, as ``torch.nn.TransformerEncoderLayer(E, num_heads,
    dim_feedforward, dropout, activation, batch_first=True, norm_first=norm_first)``.

    ``x: (N, T, E) -> y: (N, T, E)``; ``init``'s shape is ``(T, E)``, ``E`` a multiple of
    ``num_heads``. With ``SA`` self-attention (attention dropout ``dropout``), ``FF`` the
    feed-forward ``linear2(Drop(act(linear1(x))))`` and ``Drop`` dropout with rate ``dropout``:

    - post-LN (``norm_first=False``, the original transformer and PyTorch's default):
      ``x = norm1(x + Drop(SA(x)))``, then ``x = norm2(x + Drop(FF(x)))``;
    - pre-LN (``norm_first=True``, GPT-2's): ``x = x + Drop(SA(norm1(x)))``, then
      ``x = x + Drop(FF(norm2(x)))``.

    ``causal=True`` masks the attention so position ``t`` sees positions ``0..t``: the
    decoder-only (GPT) block. The apply option ``key_padding_mask`` (bool ``(N, T)``, ``True``
    for padding) reaches the attention. ``activation`` is ``"relu"``, ``"gelu"`` (exact, erf) or
    any layer. The block is ``serial`` and ``residual`` of MultiHeadAttention, LayerNorm, Dense
    and Dropout, built when ``init`` (or ``apply``) first sees ``E`` (``linear2`` maps back to
    ``E``). Its params are that ``serial``'s, the sub-layers named after PyTorch's modules:
    ``{"sa_block": {"inner": {"self_attn": ..., "dropout1": {}}}, "norm1": ..., "ff_block":
    {"inner": {"linear1": ..., "activation": {}, "dropout": {}, "linear2": ..., "dropout2": {}}},
    "norm2": ...}`` for post-LN; pre-LN moves ``norm1`` and ``norm2`` to the start of each
    block's ``inner``. ``fnn.interop`` ports PyTorch's weights. Its vjp is the composition of
    its parts' (the fused attention backward among them).

    >>> block = TransformerEncoderLayer(2, 8, dropout=0.0, norm_first=True, causal=True)
    >>> params = block.init(fnn.random.key(0), (5, 4))
    >>> block.apply(params, np.ones((3, 5, 4), np.float32))[0].shape
    (3, 5, 4)
    """
    options = [("dropout", dropout, 0.1), ("activation", activation, "relu"), ("norm_first", norm_first, False),
               ("causal", causal, False), ("eps", eps, 1e-5)]
    where = layer_kind("TransformerEncoderLayer", [repr(num_heads), repr(dim_feedforward)], options)
    heads = validate.integer(where, "num_heads", num_heads, low=1)
    width = validate.integer(where, "dim_feedforward", dim_feedforward, low=1)
    rate = validate.probability(where, "dropout", dropout, high_open=True)
    norm_first = validate.boolean(where, "norm_first", norm_first)
    causal = validate.boolean(where, "causal", causal)
    eps = validate.number(where, "eps", eps, low=0, low_open=True)
    act = _activation(where, activation)
    kind = layer_kind("TransformerEncoderLayer", [str(heads), str(width)],
                      [("dropout", rate, 0.1), ("activation", activation if isinstance(activation, str) else act,
                                                  "relu"), *options[2:]])
    bodies: dict[int, Layer] = {}  # a memo: the block for each E is built once

    def body_for(e: int) -> Layer:
        if e not in bodies:
            bodies[e] = _body(e, heads, width, rate, act, norm_first, causal, eps)
        return bodies[e]

    def init(key: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        if len(shape) != 2:
            raise ValueError(f"{kind}: init shape must be (T, E), got {shape}")
        try:
            return body_for(shape[1]).init(key, shape, dtype)
        except (ValueError, TypeError) as err:
            raise reraise_with(err, kind) from err

    def apply(params: Any, x: Any, opts: Options) -> Any:
        if x.ndim != 3:
            raise ValueError(f"{kind}: input must be (N, T, E), got shape {x.shape}")
        try:
            out = apply_child(body_for(x.shape[2]), params, x, opts, opts.key, opts.state)
        except (ValueError, TypeError) as err:
            raise reraise_with(err, kind) from err
        inner = out.vjp

        def vjp(dy: Any, need_dx: bool = True) -> tuple[Any, Any]:
            try:
                return inner(dy, need_dx=need_dx)
            except (ValueError, TypeError) as err:
                raise reraise_with(err, kind) from err

        return Output(out.y, vjp, out.state)

    layer = make_layer(kind, init, apply)
    setattr(layer, "body_for", body_for)  # noqa: B010 (read by encoder_body, for fnn.interop)
    return layer
