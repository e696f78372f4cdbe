"""Multi-head scaled dot-product attention for batch-first sequences, with a fused backward.

:func:`attention_forward` projects the queries, keys and values with one packed weight
(PyTorch's ``in_proj_weight``), scores every query against every key in all heads at once
(batched matmuls over ``(N, H, T, S)``), applies the causal and key-padding masks, a softmax
and dropout, and projects the heads' concatenated outputs (``out_proj``).
:func:`attention_backward` is its closed-form vjp: the softmax's Jacobian is applied to the
scores as ``dS = P * (dP - sum(dP * P))``, each query's sum taken as ``do . o`` over its
head's features (``o = P V``), no chain of elementwise vjps and no loop over examples or heads.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from fnn import init as _init
from fnn import random as _random
from fnn import validate
from fnn.core import Layer, Options, Shape, check_cotangent, check_params, layer_kind, like, make_layer
from fnn.distributed import rank_key
from fnn.ops import matmul_last

__all__ = ["MultiHeadAttention", "AttentionCache", "attention_forward", "attention_backward", "attention_mask"]

Arr = np.ndarray


class AttentionCache(NamedTuple):
    """What :func:`attention_backward` needs. ``inputs`` is ``(x,)``, ``(q, kv)`` or ``(q, k, v)``
    as given; ``w_in`` the ``in_proj_weight`` with its query rows times the scores' scale;
    ``qs: (N, H, T, D)`` the scaled queries, ``k``, ``v: (N, H, S, D)``; ``p: (N, H, T, S)`` the
    attention weights before dropout, ``drop`` the dropout mask (``None`` without dropout) and
    ``rate`` its rate; ``o: (N, T, E)`` the heads' concatenated outputs."""

    inputs: tuple[Arr, ...]
    w_in: Arr
    w_out: Arr
    bias: bool
    qs: Arr
    k: Arr
    v: Arr
    p: Arr
    drop: Arr | None
    rate: float
    o: Arr


def attention_mask(t: int, s: int, causal: bool, key_padding_mask: Arr | None) -> Arr | None:
    """The keys each query may attend to, ``True`` where allowed: ``(T, S)`` for the causal mask
    alone (query ``t`` sees keys ``0..t``, ``np.tri``: PyTorch's ``tril``), ``(N, 1, 1, S)`` for a
    key-padding mask alone (``True`` there means padding), ``(N, 1, T, S)`` for both, ``None`` for
    neither."""
    allowed = np.tri(t, s, dtype=bool) if causal else None
    if key_padding_mask is not None:
        keys = ~key_padding_mask[:, None, None, :]
        allowed = keys if allowed is None else keys & allowed
    return allowed


def _heads(a: Arr, parts: int, num_heads: int) -> Arr:
    """``(N, L, parts * E)`` -> ``(parts, N, H, L, D)``, a view."""
    n, length, width = a.shape
    return a.reshape(n, length, parts, num_heads, width // (parts * num_heads)).transpose(2, 0, 3, 1, 4)


def _project(x: Arr, w: Arr, b: Arr | None) -> Arr:
    """``x @ w.T + b`` over the last axis: PyTorch's Linear."""
    y = matmul_last(x, w.T)
    if b is not None:
        y += b
    return y


def _query_scale(dtype: np.dtype, e: int, num_heads: int) -> np.floating:
    """``1 / sqrt(D)``, the scores' scale, ``D = E / num_heads`` the features per head."""
    return dtype.type(1 / math.sqrt(e // num_heads))


def _scale_queries(w: Arr, b: Arr | None, e: int, num_heads: int) -> tuple[Arr, Arr | None]:
    """Copies of ``in_proj_weight`` and ``in_proj_bias`` with the query rows (the first ``E``)
    times the scores' scale, so that the projection gives the scaled queries at once (a pass
    over ``(E, E)`` weights instead of one over the ``(N, H, T, D)`` queries)."""
    scale = _query_scale(w.dtype, e, num_heads)
    w = w.copy()
    w[:e] *= scale
    if b is not None:
        b = b.copy()
        b[:e] *= scale
    return w, b


def attention_forward(params: dict[str, Any], x: Arr | tuple[Arr, ...], num_heads: int, *, causal: bool = False,
                      key_padding_mask: Arr | None = None, rate: float = 0.0, key: _random.Key | None = None
                      ) -> tuple[Arr, AttentionCache]:
    """Multi-head attention, forward: ``(y: (N, T, E), cache)``.

    ``x`` is ``(N, T, E)`` (self-attention), ``(q, kv)`` or ``(q, k, v)`` with ``q: (N, T, E)`` and
    ``k``, ``v``: ``(N, S, E)``. ``params``: ``{"in_proj_weight": (3E, E), "in_proj_bias": (3E,),
    "out_proj": {"weight": (E, E), "bias": (E,)}}`` (no biases when absent), rows in PyTorch's
    order (queries, keys, values). Scores are ``q k^T / sqrt(E / num_heads)`` per head; the causal
    and key-padding masks (see :func:`attention_mask`) set them to ``-inf``; a query left with no key
    gets all-zero weights. With ``key`` and ``rate > 0`` the weights are dropped with probability
    ``rate`` and the rest scaled by ``1 / (1 - rate)``.
    """
    inputs = x if isinstance(x, tuple) else (x,)
    w, b = params["in_proj_weight"], params.get("in_proj_bias")
    e = w.shape[1]
    w, b = _scale_queries(w, b, e, num_heads)
    if len(inputs) == 1:
        qs, k, v = _heads(_project(inputs[0], w, b), 3, num_heads)
    elif len(inputs) == 2:
        (qs,) = _heads(_project(inputs[0], w[:e], None if b is None else b[:e]), 1, num_heads)
        k, v = _heads(_project(inputs[1], w[e:], None if b is None else b[e:]), 2, num_heads)
    else:
        (qs,), (k,), (v,) = (_heads(_project(a, w[i * e:(i + 1) * e], None if b is None else b[i * e:(i + 1) * e]),
                                    1, num_heads) for i, a in enumerate(inputs))
    dtype = w.dtype
    n, h, t, d = qs.shape
    # The scores are kept transposed, (N, H, S, T), so that the softmax's max and sum over the
    # keys run across rows (vectorized), not along each short row.
    scores = k @ qs.transpose(0, 1, 3, 2)
    allowed = attention_mask(t, k.shape[2], causal, key_padding_mask)
    if allowed is not None:
        np.copyto(scores, dtype.type(-np.inf), where=~allowed.swapaxes(-1, -2))
    top = scores.max(axis=-2, keepdims=True)
    top[top == -np.inf] = 0  # a query with no key left: exp(-inf) = 0 everywhere, no NaN from -inf - -inf
    scores -= top
    p_t = np.exp(scores, out=scores)
    total = p_t.sum(axis=-2, keepdims=True)
    total[total == 0] = 1  # that query's weights stay 0 (NaN still propagates: NaN == 0 is False)
    p_t /= total
    p = p_t.swapaxes(-1, -2)
    drop = None
    if rate > 0 and key is not None:
        drop = _random.bernoulli(key, 1 - rate, p.shape)
        pd = p * dtype.type(1 / (1 - rate))
        pd *= drop
    else:
        pd = p
    o = np.empty((n, t, h * d), dtype)
    np.matmul(pd, v, out=_heads(o, 1, h)[0])  # the heads' outputs, concatenated
    out = params["out_proj"]
    y = _project(o, out["weight"], out.get("bias"))
    return y, AttentionCache(inputs, w, out["weight"], b is not None, qs, k, v, p, drop, rate, o)


def _head_buffers(dtype: np.dtype, inputs: tuple[Arr, ...], num_heads: int, d: int) -> tuple[list[Arr], list[Arr]]:
    """Buffers for the gradients of the projections, ``(N, L, parts * E)`` per input (the parts of
    ``in_proj_weight`` it went through), and their ``(N, H, L, D)`` views for ``dq``, ``dk``, ``dv``."""
    parts = {1: [3], 2: [1, 2], 3: [1, 1, 1]}[len(inputs)]
    flat = [np.empty((*a.shape[:2], count * num_heads * d), dtype) for count, a in zip(parts, inputs)]
    return flat, [view for buf, count in zip(flat, parts) for view in _heads(buf, count, num_heads)]


def attention_backward(cache: AttentionCache, dy: Arr, need_dx: bool = True) -> tuple[dict[str, Any], Any]:
    """The vjp of :func:`attention_forward`: ``dy: (N, T, E)`` -> ``(dparams, dx)``, ``dparams``
    shaped as the params and ``dx`` as the input (an array, or a tuple of 2 or 3), ``None`` unless
    ``need_dx``. The softmax's vjp is fused: ``dS = P * (dP - sum(dP * P))`` over the keys."""
    inputs, w, w_out, bias, qs, k, v, p, drop, rate, o = cache
    dtype, e = dy.dtype, w.shape[1]
    n, h, t, d = qs.shape
    dy2, o2 = dy.reshape(-1, e), o.reshape(-1, e)
    grads_out: dict[str, Arr] = {"weight": dy2.T @ o2}
    if bias:
        grads_out["bias"] = np.einsum("rf->f", dy2)
    do_rows = matmul_last(dy, w_out).reshape(-1, d)  # (N T H, D)
    do = do_rows.reshape(n, t, h, d).transpose(0, 2, 1, 3)
    p_t = p.swapaxes(-1, -2)  # (N, H, S, T), as the forward computed it
    ds_t = v @ do.transpose(0, 1, 3, 2)  # dP, transposed
    if drop is None:
        pd = p
    else:
        pd = p * dtype.type(1 / (1 - rate))
        pd *= drop
        ds_t *= drop.swapaxes(-1, -2)
        ds_t *= dtype.type(1 / (1 - rate))
    flat, (dqs, dk, dv) = _head_buffers(dtype, inputs, h, d)
    np.matmul(pd.transpose(0, 1, 3, 2), do, out=dv)
    # sum over the keys of dP * P, each query's do . o (the outputs were P V; with dropout too)
    rowdot = np.einsum("rd,rd->r", do_rows, o.reshape(-1, d)).reshape(n, t, h).transpose(0, 2, 1)
    ds_t -= rowdot[:, :, None, :]
    ds_t *= p_t
    np.matmul(ds_t.transpose(0, 1, 3, 2), k, out=dqs)
    np.matmul(ds_t, qs, out=dk)
    scale = _query_scale(dtype, e, h)
    dw = np.concatenate([g.reshape(-1, g.shape[-1]).T @ a.reshape(-1, e) for g, a in zip(flat, inputs)], axis=0)
    dw[:e] *= scale  # the projection's weights were the query rows times scale
    grads: dict[str, Any] = {"in_proj_weight": dw}
    if bias:
        grads["in_proj_bias"] = np.concatenate([np.einsum("rf->f", g.reshape(-1, g.shape[-1])) for g in flat])
        grads["in_proj_bias"][:e] *= scale
    grads["out_proj"] = grads_out
    if not need_dx:
        return grads, None
    rows = np.cumsum([0] + [g.shape[-1] for g in flat])
    dx = tuple(matmul_last(g, w[lo:hi]) for g, lo, hi in zip(flat, rows[:-1], rows[1:]))
    return grads, dx if len(inputs) > 1 else dx[0]


def _param_spec(e: int, bias: bool) -> tuple[dict[str, Shape], dict[str, Shape]]:
    if bias:
        return {"in_proj_weight": (3 * e, e), "in_proj_bias": (3 * e,)}, {"weight": (e, e), "bias": (e,)}
    return {"in_proj_weight": (3 * e, e)}, {"weight": (e, e)}


def _check_inputs(kind: str, x: Any) -> tuple[Arr, ...]:
    """``x`` as a tuple of ``(N, L, E)`` arrays of one dtype, one ``N`` and one ``E``, the keys and
    values of one length."""
    inputs = x if isinstance(x, tuple) else (x,)
    names = {2: ["q", "kv"], 3: ["q", "k", "v"]}.get(len(inputs)) if isinstance(x, tuple) else ["x"]
    if names is None:
        raise ValueError(f"{kind}: input must be x (N, T, E) or a tuple (q, kv) or (q, k, v), "
                         f"got a tuple of {len(inputs)}")
    shapes = [a.shape for a in inputs]
    if any(a.ndim != 3 for a in inputs):
        raise ValueError(f"{kind}: inputs must be (N, T, E) sequences, got {', '.join(names)} of shapes "
                         f"{', '.join(map(str, shapes))}")
    if len({a.dtype for a in inputs}) != 1:
        raise TypeError(f"{kind}: inputs must share one dtype, got {[str(a.dtype) for a in inputs]}")
    if len({s[0] for s in shapes}) != 1 or len({s[2] for s in shapes}) != 1 \
            or len(inputs) == 3 and shapes[1][1] != shapes[2][1]:
        raise ValueError(f"{kind}: {', '.join(names)} must have one batch size and one feature size E, and k and v "
                         f"one length, got shapes {', '.join(map(str, shapes))} (PyTorch's kdim/vdim are not "
                         f"supported)")
    if shapes[0][1] == 0 or shapes[-1][1] == 0:
        raise ValueError(f"{kind}: needs at least one query and one key, got shapes {', '.join(map(str, shapes))}")
    return inputs


def _check_features(kind: str, e: int, num_heads: int, where: str) -> None:
    if e == 0 or e % num_heads:
        raise ValueError(f"{kind}: the feature size E must be a positive multiple of num_heads={num_heads} "
                         f"(each head gets E / num_heads features), got E={e} {where}")


def _check_options(kind: str, opts: Options, n: int, s: int, rate: float) -> Arr | None:
    mask = opts.key_padding_mask
    if mask is not None and mask.shape != (n, s):
        raise ValueError(f"{kind}: option key_padding_mask has shape {mask.shape} but the keys need (N, S) = "
                         f"({n}, {s}) (True where a key is padding)")
    if opts.train and rate > 0 and opts.key is None:
        raise ValueError(f"{kind}: train=True with dropout needs a key (apply(..., train=True, "
                         f"key=fnn.random.key(seed)))")
    return mask


def MultiHeadAttention(num_heads: int, *, dropout: float = 0.0, causal: bool = False, bias: bool = True) -> Layer:
    """Multi-head scaled dot-product attention, as ``torch.nn.MultiheadAttention(E, num_heads,
    batch_first=True)``.

    Self-attention: ``x: (N, T, E) -> y: (N, T, E)``. Cross-attention: a tuple ``(q, kv)`` or
    ``(q, k, v)``, ``q: (N, T, E)``, ``k``, ``v``: ``(N, S, E)`` -> ``y: (N, T, E)``, and the
    vjp's ``dx`` is a tuple alike. ``init``'s shape is ``(T, E)``, or a tuple of those shapes.
    ``E`` must be a multiple of ``num_heads``; each head attends with ``E / num_heads``
    features. Params, in PyTorch's layout (``fnn.interop`` ports them as they are):
    ``{"in_proj_weight": (3E, E), "in_proj_bias": (3E,), "out_proj": {"weight": (E, E),
    "bias": (E,)}}``, no biases with ``bias=False``; init as PyTorch: Glorot uniform
    ``in_proj_weight``, ``out_proj.weight`` as a Linear's (:func:`fnn.init.fan_in_uniform`),
    zero biases.

    Masks: ``causal=True`` lets query ``t`` attend to keys ``0..t`` only (a decoder; with
    ``T != S`` the mask is PyTorch's ``tril(ones(T, S))``, aligned at the first query and key).
    The apply option ``key_padding_mask``, a bool ``(N, S)`` array, ``True`` where a key is
    padding (PyTorch's convention), hides those keys; ``serial`` and ``residual`` pass it to
    every attention layer they hold. A query left with no key to attend to gets all-zero
    attention weights, so its output is ``out_proj``'s bias and no gradient flows through
    its scores: never NaN (PyTorch's training path does the same). ``dropout`` (in
    ``[0, 1)``) drops attention weights in training (``train=True`` then needs ``key=``).

    >>> mha = MultiHeadAttention(2, causal=True)
    >>> params = mha.init(fnn.random.key(0), (5, 4))
    >>> y, vjp = mha.apply(params, np.ones((3, 5, 4), np.float32))
    >>> y.shape, vjp(np.ones_like(y))[1].shape
    ((3, 5, 4), (3, 5, 4))
    """
    options = [("dropout", dropout, 0.0), ("causal", causal, False), ("bias", bias, True)]
    where = layer_kind("MultiHeadAttention", [repr(num_heads)], options)
    heads = validate.integer(where, "num_heads", num_heads, low=1)
    rate = validate.probability(where, "dropout", dropout, high_open=True)
    causal = validate.boolean(where, "causal", causal)
    bias = validate.boolean(where, "bias", bias)
    kind = layer_kind("MultiHeadAttention", [str(heads)], [("dropout", rate, 0.0), *options[1:]])

    def init(key: _random.Key, shape: Any, dtype: np.dtype) -> dict[str, Any]:
        shapes = shape if shape and isinstance(shape[0], tuple) else (shape,)
        if len(shapes) not in (1, 2, 3) or any(len(s) != 2 for s in shapes) or len({s[1] for s in shapes}) != 1:
            raise ValueError(f"{kind}: init shape must be (T, E) or a tuple of 2 or 3 (L, E) shapes with one E, "
                             f"got {shape}")
        e = shapes[0][1]
        _check_features(kind, e, heads, f"in the init shape {shape}")
        k_in, k_out = _random.split(key, 2)
        params: dict[str, Any] = {"in_proj_weight": _init.glorot_uniform(k_in, (3 * e, e), dtype)}
        out = {"weight": _init.fan_in_uniform(k_out, (e, e), dtype)}
        if bias:
            params["in_proj_bias"] = np.zeros(3 * e, dtype)
            out["bias"] = np.zeros(e, dtype)
        params["out_proj"] = out
        return params

    def apply(params: Any, x: Any, opts: Options) -> Any:
        inputs = _check_inputs(kind, x)
        n, _, e = inputs[0].shape
        _check_features(kind, e, heads, f"in the input of shape {inputs[0].shape}")
        spec_in, spec_out = _param_spec(e, bias)
        if not isinstance(params, dict) or set(params) != {*spec_in, "out_proj"}:
            check_params(kind, params, {**spec_in, "out_proj": ()}, inputs[0].dtype)  # names the keys
        check_params(kind, {k: v for k, v in params.items() if k != "out_proj"}, spec_in, inputs[0].dtype)
        check_params(f"{kind} params['out_proj']", params["out_proj"], spec_out, inputs[0].dtype)
        mask = _check_options(kind, opts, n, inputs[-1].shape[1], rate)
        key = opts.key if opts.world is None or opts.key is None else rank_key(opts.world, opts.key)
        y, cache = attention_forward(params, x, heads, causal=causal, key_padding_mask=mask,
                                     rate=rate if opts.train else 0.0, key=key)
        out = like(y)

        def vjp(dy: Arr, need_dx: bool = True) -> tuple[dict[str, Any], Any]:
            return attention_backward(cache, check_cotangent(kind, dy, out), need_dx)

        return y, vjp

    return make_layer(kind, init, apply, inputs="tuple")
