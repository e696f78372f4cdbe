"""Normalization layers: BatchNorm (running statistics kept as layer state) and LayerNorm.

The maths is module-level: :func:`batch_norm_forward` and :func:`layer_norm_forward` return
``y`` and a cache, :func:`batch_norm_backward` and :func:`layer_norm_backward` turn the cache
and ``dy`` into ``(grads, dx)``; the constructors validate their arguments, check params and
state, and close over the cache.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn import validate
from fnn.core import (
    INITIAL_STATE,
    Layer,
    Options,
    Output,
    check_cotangent,
    check_params,
    is_default,
    like,
    make_layer,
)
from fnn.distributed import World, allgather

__all__ = ["BatchNorm", "LayerNorm", "batch_norm_forward", "batch_norm_backward", "layer_norm_forward",
           "layer_norm_backward", "LayerNormCache"]

Arr = np.ndarray
NormCache = tuple[Arr, Arr, Arr | None, tuple[int, ...], tuple[int, ...], bool, World | None, int]
"""``(xhat, inv_std, gamma, stat_axes, param_axes, batch_stats, world, total)``: what backward needs."""


class LayerNormCache(NamedTuple):
    """What :func:`layer_norm_backward` needs: ``xhat: (rows, features)``, the input normalized
    (the normalized axes flattened), ``inv_std: (rows, 1)`` and ``gamma`` (``None`` without it)."""

    xhat: Arr
    inv_std: Arr
    gamma: Arr | None


def batch_norm_backward(cache: NormCache, dy: Arr, need_dx: bool = True) -> tuple[dict[str, Arr], Arr | None]:
    """The vjp of ``y = gamma * xhat + beta`` with ``xhat = (x - mean) * inv_std``: ``dy`` (the
    shape of ``y``) -> ``({"gamma", "beta"}`` (none without ``gamma``), ``dx`` (``None`` unless ``need_dx``)).

    ``gamma`` is shaped to broadcast against ``y``; summing over ``param_axes``
    gives the parameters' own shape. With ``batch_stats`` the mean and variance
    came from ``x`` over ``stat_axes`` and ``dx`` is the fused closed form
    ``inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``; otherwise the
    statistics are constants and ``dx = dxhat * inv_std``. With a ``world`` the
    statistics came from the global batch of ``total`` values per channel, and the
    two means are taken over it: one Allgather of the per-rank sums, added in rank order.
    """
    xhat, inv_std, gamma, stat_axes, param_axes, batch_stats, world, total = cache
    grads = {}
    if gamma is not None:
        grads = {"gamma": (dy * xhat).sum(axis=param_axes), "beta": dy.sum(axis=param_axes)}
    if not need_dx:
        return grads, None
    # dy * gamma is a fresh temporary, worked on in place below (dy itself never is).
    dxhat = dy * gamma if gamma is not None else dy
    if not batch_stats:
        return grads, np.multiply(dxhat, inv_std, out=dxhat if gamma is not None else None)
    if world is None:
        mean_d = dxhat.mean(axis=stat_axes, keepdims=True)
        mean_dx = (dxhat * xhat).mean(axis=stat_axes, keepdims=True)
    else:
        sums = allgather(world, np.stack([dxhat.sum(axis=stat_axes), (dxhat * xhat).sum(axis=stat_axes)]))
        sums = sums.sum(axis=0) / dy.dtype.type(total)
        mean_d, mean_dx = sums[0].reshape(inv_std.shape), sums[1].reshape(inv_std.shape)
    dx = np.subtract(dxhat, mean_d, out=dxhat if gamma is not None else None)
    dx -= xhat * mean_dx
    dx *= inv_std
    return grads, dx


def layer_norm_backward(cache: LayerNormCache, dy: Arr, need_dx: bool = True) -> tuple[dict[str, Arr], Arr | None]:
    """The vjp of :func:`layer_norm_forward`: ``dy`` (the shape of ``y``) -> ``({"gamma", "beta"}``
    (none without ``gamma``), ``dx`` (``None`` unless ``need_dx``)), with each row's closed form
    ``dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``, ``dxhat = dy * gamma``."""
    xhat, inv_std, gamma = cache
    features = xhat.shape[1]
    dy2 = dy.reshape(xhat.shape)
    grads = {}
    if gamma is not None:
        grads = {"gamma": np.einsum("rf,rf->f", dy2, xhat).reshape(gamma.shape),
                 "beta": np.einsum("rf->f", dy2).reshape(gamma.shape)}
    if not need_dx:
        return grads, None
    scale = xhat.dtype.type(1 / features) if features else xhat.dtype.type(0)
    dxhat = dy2 * gamma.reshape(-1) if gamma is not None else dy2.copy()
    mean_d = np.einsum("rf->r", dxhat)[:, None]
    mean_d *= scale
    mean_dx = np.einsum("rf,rf->r", dxhat, xhat)[:, None]
    mean_dx *= scale
    dxhat -= mean_d
    dxhat -= xhat * mean_dx
    dxhat *= inv_std
    return grads, dxhat.reshape(dy.shape)


def _global_moments(world: World, x: Arr, axes: tuple[int, ...]) -> tuple[int, Arr, Arr]:
    """The count, mean and biased variance per channel of the global batch whose shard on this
    rank is ``x``: each rank's count, mean and sum of squared deviations, gathered (one
    Allgather) and combined in rank order by the parallel-variance formula (stable, and the
    same bits on every rank)."""
    c = x.shape[1]
    n = x.size // c
    mean = x.mean(axis=axes, dtype=np.float64) if n else np.zeros(c)
    dev = x - mean.astype(x.dtype).reshape((1, c) + (1,) * (x.ndim - 2))
    m2 = np.square(dev).sum(axis=axes, dtype=np.float64) if n else np.zeros(c)
    rows = allgather(world, np.concatenate([[n], mean, m2]))
    counts, means, m2s = rows[:, :1], rows[:, 1:c + 1], rows[:, c + 1:]
    total = counts.sum()
    if total == 0:
        return 0, np.zeros(c, x.dtype), np.ones(c, x.dtype)
    global_mean = (counts * means).sum(axis=0) / total
    global_m2 = (m2s + counts * (means - global_mean) ** 2).sum(axis=0)
    return int(total), global_mean.astype(x.dtype), (global_m2 / total).astype(x.dtype)


def _affine(xhat: Arr, gamma: Arr | None, beta: Arr | None) -> Arr:
    """``xhat * gamma + beta`` in one fresh array (``xhat`` itself without them)."""
    if gamma is None or beta is None:
        return xhat
    y = xhat * gamma
    y += beta
    return y


def batch_norm_forward(x: Arr, gamma: Arr | None, beta: Arr | None, state: dict[str, Arr], momentum: float,
                       eps: float, train: bool, world: World | None = None, where: str = "BatchNorm()"
                       ) -> tuple[Arr, dict[str, Arr], NormCache]:
    """``x: (N, C, ...)``, ``gamma``, ``beta``: ``(C,)`` or ``None``, ``state``: ``{"mean": (C,),
    "var": (C,)}`` -> ``(y`` like ``x``, the new state, the cache for :func:`batch_norm_backward`).

    With ``train`` (and more than one value per channel) it normalizes with the batch mean and
    biased variance over every axis but 1, the *global* batch's when given a ``world`` (one
    Allgather), and returns the running statistics updated with ``momentum``; otherwise it
    normalizes with ``state``'s and returns ``state``. Training on one value per channel raises
    ``ValueError`` (starting with ``where``): no batch variance exists.
    """
    c = x.shape[1]
    axes = (0, *range(2, x.ndim))
    shape = (1, c) + (1,) * (x.ndim - 2)
    if world is not None and c:
        count, mean, var = _global_moments(world, x, axes)
    else:
        count = x.size // c if c else 0
    if train and count == 1:
        raise ValueError(f"{where}: training needs more than one value per channel to compute a batch "
                         f"variance, got input shape {x.shape}" + (" over all ranks" if world else ""))
    batch_stats = train and count > 1
    if batch_stats:
        if world is None:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
        m = x.dtype.type(momentum)
        state = {"mean": (1 - m) * state["mean"] + m * mean,
                 "var": (1 - m) * state["var"] + m * var * x.dtype.type(count / (count - 1))}
    else:
        mean, var = state["mean"], state["var"]
    inv_std = (1 / np.sqrt(var + x.dtype.type(eps))).reshape(shape)
    xhat = x - mean.reshape(shape)
    xhat *= inv_std
    g = gamma.reshape(shape) if gamma is not None else None
    y = _affine(xhat, g, None if beta is None else beta.reshape(shape))
    return y, state, (xhat, inv_std, g, axes, axes, batch_stats, world, count)


def layer_norm_forward(x: Arr, gamma: Arr | None, beta: Arr | None, normalized_ndim: int, eps: float
                       ) -> tuple[Arr, LayerNormCache]:
    """``x: (N, ..., *normalized)``, ``gamma``, ``beta``: ``normalized`` (the last ``normalized_ndim``
    axes) or ``None`` -> ``(y`` like ``x``, the cache for :func:`layer_norm_backward`), normalizing
    each example over its normalized axes with the biased variance.

    The work runs on ``x`` as ``(rows, features)``, the normalized axes flattened, with each
    row's sums taken by ``einsum`` (a row's result never depends on the other rows).
    """
    lead = x.ndim - normalized_ndim
    features = int(np.prod(x.shape[lead:]))
    x2 = x.reshape(int(np.prod(x.shape[:lead])), features)
    scale = x.dtype.type(1 / features) if features else x.dtype.type(0)
    mean = np.einsum("rf->r", x2)[:, None]
    mean *= scale
    xhat = x2 - mean
    var = np.einsum("rf,rf->r", xhat, xhat)[:, None]
    var *= scale
    var += x.dtype.type(eps)
    inv_std = np.sqrt(var, out=var)
    np.divide(1, inv_std, out=inv_std)
    xhat *= inv_std
    g = None if gamma is None else gamma.reshape(-1)
    y = _affine(xhat, g, None if beta is None else beta.reshape(-1))
    return y.reshape(x.shape), LayerNormCache(xhat, inv_std, gamma)


def _check_state(kind: str, state: Any, c: int, dtype: np.dtype, train: bool) -> dict[str, Arr]:
    if state is None and not train:
        raise ValueError(f"{kind}: evaluation (train=False) needs the running statistics training returned: pass "
                         f"state=out.state from the last training step (or a checkpoint's), or "
                         f"state=fnn.INITIAL_STATE to normalize with mean 0 and variance 1 on purpose")
    if state is None or state is INITIAL_STATE:
        return {"mean": np.zeros(c, dtype), "var": np.ones(c, dtype)}
    if not isinstance(state, dict) or set(state) != {"mean", "var"}:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{kind}: state must be {{'mean': ({c},), 'var': ({c},)}} or None, got {got}")
    for name in ("mean", "var"):
        s = state[name]
        if not isinstance(s, np.ndarray) or s.shape != (c,):
            raise ValueError(f"{kind}: state[{name!r}] must have shape ({c},) for {c} channels, "
                             f"got {getattr(s, 'shape', type(s).__name__)}")
        if s.dtype.kind != "f":
            raise TypeError(f"{kind}: state[{name!r}] must be a float array, got dtype {s.dtype}")
    return {k: v.astype(dtype) for k, v in state.items()}  # a copy: the output state never aliases the input


def _defaults(values: tuple[Any, ...], defaults: tuple[Any, ...]) -> bool:
    return all(is_default(v, d) for v, d in zip(values, defaults))


def _batch_norm_kind(momentum: Any, eps: Any, affine: Any, sync: Any) -> str:
    if _defaults((momentum, eps, affine, sync), (0.1, 1e-5, True, True)):
        return "BatchNorm()"
    return f"BatchNorm(momentum={momentum!r}, eps={eps!r}, affine={affine!r}, sync={sync!r})"


def _layer_norm_kind(normalized_ndim: Any, eps: Any, affine: Any) -> str:
    if _defaults((eps, affine), (1e-5, True)):
        return f"LayerNorm({normalized_ndim!r})"
    return f"LayerNorm({normalized_ndim!r}, eps={eps!r}, affine={affine!r})"


def BatchNorm(momentum: float = 0.1, eps: float = 1e-5, affine: bool = True, sync: bool = True) -> Layer:
    """Batch normalization over channel axis 1 for ``(N, C)``, ``(N, C, L)`` and ``(N, C, H, W)``.

    ``x: (N, C, ...) -> y`` of the same shape. With ``train=True`` it normalizes with the
    batch mean and biased variance over every axis but 1, and its output's ``.state`` holds
    the updated running statistics ``running = (1 - momentum) * running + momentum * batch``
    (the variance term uses the unbiased batch variance): PyTorch's conventions and
    defaults. Evaluation uses the running statistics, so it needs them: ``state=None`` in
    evaluation is an error (the statistics of training were forgotten: that silently costs
    accuracy), and ``state=fnn.INITIAL_STATE`` asks for the initial ones on purpose. Params
    ``{"gamma": (C,), "beta": (C,)}`` (ones and zeros; none when ``affine=False``);
    state ``{"mean": (C,), "var": (C,)}``, zeros and ones initially (``state=None`` in
    training). ``momentum`` is a number in ``[0, 1]``, ``eps`` one ``> 0``. The training
    vjp is the fused closed form over ``xhat``, which it keeps. An empty batch gives an
    empty output and leaves the statistics unchanged; one value per channel in training
    is an error.

    Data parallel: given ``world=`` (``x`` is this rank's shard of a global batch),
    training uses the mean and variance of the *global* batch and its vjp the
    global means of the backward pass, so ``P`` ranks compute what one process
    computes on the whole batch (synchronized BatchNorm: one small Allgather
    forward and one backward). The running statistics are then the same on every
    rank. ``sync=False`` keeps per-rank statistics (each rank normalizes its own
    shard, as PyTorch's BatchNorm does under DDP; average the running statistics
    with ``fnn.distributed.allreduce(world, state, mean=True)`` before evaluating).

    >>> bn = BatchNorm()
    >>> params = bn.init(fnn.random.key(0), (2,), np.float64)
    >>> out = bn.apply(params, np.array([[1., 2.], [3., 6.]]), train=True)
    >>> out.y.round(3), out.state["mean"]
    (array([[-1., -1.],
           [ 1.,  1.]]), array([0.2, 0.4]))
    """
    where = _batch_norm_kind(momentum, eps, affine, sync)
    momentum = validate.probability(where, "momentum", momentum)
    eps = validate.number(where, "eps", eps, low=0, low_open=True)
    affine = validate.boolean(where, "affine", affine)
    sync = validate.boolean(where, "sync", sync)
    kind = _batch_norm_kind(momentum, eps, affine, sync)

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Arr]:
        if len(shape) not in (1, 2, 3) or shape[0] == 0:
            raise ValueError(f"{kind}: init shape must be (C,), (C, L) or (C, H, W) with C > 0, got {shape}")
        c = shape[0]
        return {"gamma": np.ones(c, dtype), "beta": np.zeros(c, dtype)} if affine else {}

    def apply(params: Any, x: Arr, opts: Options) -> Output:
        if x.ndim not in (2, 3, 4):
            raise ValueError(f"{kind}: input must be (N, C), (N, C, L) or (N, C, H, W), got shape {x.shape}")
        c = x.shape[1]
        check_params(kind, params, {"gamma": (c,), "beta": (c,)} if affine else {}, x.dtype)
        state = _check_state(kind, opts.state, c, x.dtype, opts.train)
        world = opts.world if sync and opts.train and opts.world is not None and opts.world.size > 1 else None
        y, state, cache = batch_norm_forward(x, params.get("gamma"), params.get("beta"), state, momentum, eps,
                                             opts.train, world, kind)
        out = like(y)

        def vjp(dy: Arr, need_dx: bool = True) -> tuple[dict[str, Arr], Arr | None]:
            return batch_norm_backward(cache, check_cotangent(kind, dy, out), need_dx)

        return Output(y, vjp, state)

    return make_layer(kind, init, apply)


def LayerNorm(normalized_ndim: int = 1, eps: float = 1e-5, affine: bool = True) -> Layer:
    """Normalize each example over its last ``normalized_ndim`` axes (``torch.nn.LayerNorm``).

    ``x: (N, ..., *normalized) -> y`` of the same shape, with the biased variance.
    Params ``{"gamma": normalized, "beta": normalized}`` (ones and zeros; none when
    ``affine=False``), ``normalized`` being the last ``normalized_ndim`` axes of the
    init shape. ``normalized_ndim >= 1``, ``eps > 0``. No running statistics: training
    and evaluation behave the same.

    >>> ln = LayerNorm()
    >>> ln.apply(ln.init(fnn.random.key(0), (2,), np.float64), np.array([[1., 3.]]))[0].round(3)
    array([[-1.,  1.]])
    """
    where = _layer_norm_kind(normalized_ndim, eps, affine)
    normalized_ndim = validate.integer(where, "normalized_ndim", normalized_ndim, low=1)
    eps = validate.number(where, "eps", eps, low=0, low_open=True)
    affine = validate.boolean(where, "affine", affine)
    kind = _layer_norm_kind(normalized_ndim, eps, affine)

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Arr]:
        if len(shape) < normalized_ndim:
            raise ValueError(f"{kind}: init shape {shape} has fewer than {normalized_ndim} axes")
        norm_shape = shape[len(shape) - normalized_ndim:]
        return {"gamma": np.ones(norm_shape, dtype), "beta": np.zeros(norm_shape, dtype)} if affine else {}

    def apply(params: Any, x: Arr, opts: Options) -> Any:
        if x.ndim < normalized_ndim + 1:
            raise ValueError(f"{kind}: input must have a batch axis and {normalized_ndim} normalized axes, "
                             f"got shape {x.shape}")
        norm_shape = x.shape[x.ndim - normalized_ndim:]
        check_params(kind, params, {"gamma": norm_shape, "beta": norm_shape} if affine else {}, x.dtype)
        y, cache = layer_norm_forward(x, params.get("gamma"), params.get("beta"), normalized_ndim, eps)
        out = like(y)

        def vjp(dy: Arr, need_dx: bool = True) -> tuple[dict[str, Arr], Arr | None]:
            return layer_norm_backward(cache, check_cotangent(kind, dy, out), need_dx)

        return y, vjp

    return make_layer(kind, init, apply)
