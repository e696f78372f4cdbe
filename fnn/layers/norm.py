"""Normalization layers: BatchNorm (running statistics kept as layer state) and LayerNorm."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn.core import INITIAL_STATE, Layer, Options, Output, check_cotangent, check_params, like, make_layer
from fnn.distributed import World, allgather
from fnn.optim.base import check_hyper

__all__ = ["BatchNorm", "LayerNorm"]


def _normalize_vjp(kind: str, y: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray | None,
                   stat_axes: tuple[int, ...], param_axes: tuple[int, ...], batch_stats: bool,
                   world: World | None = None, total: int = 0) -> Any:
    """vjp of ``y = gamma * xhat + beta`` with ``xhat = (x - mean) * inv_std``.

    ``gamma`` is shaped to broadcast against ``y``; summing over ``param_axes``
    gives the parameters' own shape. With ``batch_stats`` the mean and variance
    came from ``x`` over ``stat_axes`` and ``dx`` is the fused closed form
    ``inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``; otherwise the
    statistics are constants and ``dx = dxhat * inv_std``. With a ``world`` the
    statistics came from the global batch of ``total`` values per channel, and the
    two means are taken over it: one Allgather of the per-rank sums, added in rank order.
    """

    out = like(y)

    def vjp(dy: np.ndarray, need_dx: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        dy = check_cotangent(kind, dy, out)
        grads = {}
        if gamma is not None:
            grads = {"gamma": (dy * xhat).sum(axis=param_axes), "beta": dy.sum(axis=param_axes)}
        if not need_dx:
            return grads, None
        dxhat = dy * gamma if gamma is not None else dy
        if not batch_stats:
            return grads, dxhat * inv_std
        if world is None:
            mean_d = dxhat.mean(axis=stat_axes, keepdims=True)
            mean_dx = (dxhat * xhat).mean(axis=stat_axes, keepdims=True)
        else:
            sums = allgather(world, np.stack([dxhat.sum(axis=stat_axes), (dxhat * xhat).sum(axis=stat_axes)]))
            sums = sums.sum(axis=0) / dy.dtype.type(total)
            mean_d, mean_dx = sums[0].reshape(inv_std.shape), sums[1].reshape(inv_std.shape)
        return grads, inv_std * (dxhat - mean_d - xhat * mean_dx)

    return vjp


def _eps_arg(kind: str, eps: float) -> float:
    value = check_hyper(kind, "eps", eps)
    if value <= 0:
        raise ValueError(f"{kind}: eps must be > 0, got {eps!r}")
    return value


def _check_state(kind: str, state: Any, c: int, dtype: np.dtype, train: bool) -> dict[str, np.ndarray]:
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


def _global_moments(world: World, x: np.ndarray, axes: tuple[int, ...]) -> tuple[int, np.ndarray, np.ndarray]:
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


def BatchNorm(momentum: float = 0.1, eps: float = 1e-5, affine: bool = True, sync: bool = True) -> Layer:
    """Batch normalization over channel axis 1 for ``(N, C)``, ``(N, C, L)`` and ``(N, C, H, W)``.

    With ``train=True`` it normalizes with the batch mean and biased variance over
    every axis but 1, and its output's ``.state`` holds the updated running statistics
    ``running = (1 - momentum) * running + momentum * batch`` (the variance term uses
    the unbiased batch variance): PyTorch's conventions and defaults. Evaluation
    uses the running statistics, so it needs them: ``state=None`` in evaluation is an
    error (the statistics of training were forgotten: that silently costs accuracy),
    and ``state=fnn.INITIAL_STATE`` asks for the initial ones on purpose. Params
    ``{"gamma": (C,), "beta": (C,)}`` (ones and zeros; none when ``affine=False``);
    state ``{"mean": (C,), "var": (C,)}``, zeros and ones initially (``state=None`` in
    training). The training vjp is the fused closed form over
    ``xhat``, which it keeps. An empty batch gives an empty output and leaves the
    statistics unchanged; one value per channel in training is an error.

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
    kind = "BatchNorm()" if (momentum, eps, affine, sync) == (0.1, 1e-5, True, True) else \
        f"BatchNorm(momentum={momentum!r}, eps={eps!r}, affine={affine!r}, sync={sync!r})"
    if not isinstance(sync, bool):
        raise TypeError(f"{kind}: sync must be True or False, got {type(sync).__name__}")
    momentum = check_hyper(kind, "momentum", momentum, high=1.0)
    eps = _eps_arg(kind, eps)

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
        if len(shape) not in (1, 2, 3) or shape[0] == 0:
            raise ValueError(f"{kind}: init shape must be (C,), (C, L) or (C, H, W) with C > 0, got {shape}")
        c = shape[0]
        return {"gamma": np.ones(c, dtype), "beta": np.zeros(c, dtype)} if affine else {}

    def apply(params: Any, x: np.ndarray, opts: Options) -> Output:
        if x.ndim not in (2, 3, 4):
            raise ValueError(f"{kind}: input must be (N, C), (N, C, L) or (N, C, H, W), got shape {x.shape}")
        c = x.shape[1]
        check_params(kind, params, {"gamma": (c,), "beta": (c,)} if affine else {}, x.dtype)
        state = _check_state(kind, opts.state, c, x.dtype, opts.train)
        axes = (0, *range(2, x.ndim))
        shape = (1, c) + (1,) * (x.ndim - 2)
        world = opts.world if sync and opts.train and opts.world is not None and opts.world.size > 1 else None
        if world is not None and c:
            count, mean, var = _global_moments(world, x, axes)
        else:
            count = x.size // c if c else 0
        if opts.train and count == 1:
            raise ValueError(f"{kind}: training needs more than one value per channel to compute a batch "
                             f"variance, got input shape {x.shape}" + (" over all ranks" if world else ""))
        batch_stats = bool(opts.train) and count > 1
        if batch_stats:
            if world is None:
                mean, var = x.mean(axis=axes), x.var(axis=axes)
            m = x.dtype.type(momentum)
            state = {"mean": (1 - m) * state["mean"] + m * mean,
                     "var": (1 - m) * state["var"] + m * var * x.dtype.type(count / (count - 1))}
        else:
            mean, var = state["mean"], state["var"]
        inv_std = (1 / np.sqrt(var + x.dtype.type(eps))).reshape(shape)
        xhat = (x - mean.reshape(shape)) * inv_std
        gamma = params["gamma"].reshape(shape) if affine else None
        y = xhat * gamma + params["beta"].reshape(shape) if gamma is not None else xhat
        vjp = _normalize_vjp(kind, y, xhat, inv_std, gamma, axes, axes, batch_stats, world, count)
        return Output(y, vjp, state)

    return make_layer(kind, init, apply)


def LayerNorm(normalized_ndim: int = 1, eps: float = 1e-5, affine: bool = True) -> Layer:
    """Normalize each example over its last ``normalized_ndim`` axes (``torch.nn.LayerNorm``).

    ``x: (N, ..., *normalized) -> y`` of the same shape, with the biased variance.
    Params ``{"gamma": normalized, "beta": normalized}`` (ones and zeros; none when
    ``affine=False``), ``normalized`` being the last ``normalized_ndim`` axes of the
    init shape. No running statistics: training and evaluation behave the same.
    """
    kind = f"LayerNorm({normalized_ndim})" if (eps, affine) == (1e-5, True) else \
        f"LayerNorm({normalized_ndim}, eps={eps!r}, affine={affine!r})"
    if isinstance(normalized_ndim, bool) or not isinstance(normalized_ndim, int) or normalized_ndim < 1:
        raise ValueError(f"{kind}: normalized_ndim must be an int >= 1, got {normalized_ndim!r}")
    eps = _eps_arg(kind, eps)

    def init(key: Any, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
        if len(shape) < normalized_ndim:
            raise ValueError(f"{kind}: init shape {shape} has fewer than {normalized_ndim} axes")
        norm_shape = shape[len(shape) - normalized_ndim:]
        return {"gamma": np.ones(norm_shape, dtype), "beta": np.zeros(norm_shape, dtype)} if affine else {}

    def apply(params: Any, x: np.ndarray, opts: Options) -> Any:
        if x.ndim < normalized_ndim + 1:
            raise ValueError(f"{kind}: input must have a batch axis and {normalized_ndim} normalized axes, "
                             f"got shape {x.shape}")
        lead = x.ndim - normalized_ndim
        norm_shape = x.shape[lead:]
        check_params(kind, params, {"gamma": norm_shape, "beta": norm_shape} if affine else {}, x.dtype)
        axes = tuple(range(lead, x.ndim))
        if x.size == 0:
            mean, inv_std = np.zeros((), x.dtype), np.ones((), x.dtype)
        else:
            mean = x.mean(axis=axes, keepdims=True)
            inv_std = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + x.dtype.type(eps))
        xhat = (x - mean) * inv_std
        gamma = params["gamma"] if affine else None
        y = xhat * gamma + params["beta"] if gamma is not None else xhat
        return y, _normalize_vjp(kind, y, xhat, inv_std, gamma, axes, tuple(range(lead)), x.size > 0)

    return make_layer(kind, init, apply)
