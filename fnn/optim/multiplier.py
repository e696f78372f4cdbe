"""A learning-rate multiplier kept in the optimizer state, for callbacks such as ReduceLROnPlateau
that change the learning rate between steps without rebuilding the optimizer."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, overload

import numpy as np

from fnn import validate
from fnn.optim import checks
from fnn.optim.base import GradientTransformation, Optimizer

__all__ = ["lr_multiplier", "takes_lr_scale", "check_inner"]


def takes_lr_scale(update: Callable[..., Any]) -> bool:
    """Whether ``update`` accepts the keyword ``lr_scale`` (fnn's optimizers and transforms do)."""
    try:
        params = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature to read
        return False
    return any(p.name == "lr_scale" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or p.kind is p.VAR_KEYWORD
               for p in params)


def check_inner(where: str, name: str, inner: Any) -> bool:
    """``inner`` is an :class:`~fnn.optim.Optimizer` (True) or a :class:`~fnn.optim.GradientTransformation` (False)."""
    if isinstance(inner, Optimizer):
        return True
    if isinstance(inner, GradientTransformation):
        return False
    raise TypeError(f"{where}: {name} must be an fnn.optim.Optimizer or GradientTransformation (such as "
                    f"fnn.optim.adam() or fnn.optim.clip_by_global_norm(1.0)), got {type(inner).__name__}")


def _multiplier(where: str, value: Any) -> float:
    """``state['lr_multiplier']``: a finite number ``>= 0`` (a 0-d float array as init makes it)."""
    ok = (validate.is_number(value) or (isinstance(value, np.ndarray) and value.ndim == 0
                                        and value.dtype.kind in "iuf"))
    if not ok or not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{where}: state['lr_multiplier'] must be a finite number >= 0 (a 0-d float array such "
                         f"as np.array(0.1)), got {value!r:.80}")
    return float(value)


@overload
def lr_multiplier(inner: Optimizer) -> Optimizer: ...
@overload
def lr_multiplier(inner: GradientTransformation) -> GradientTransformation: ...
def lr_multiplier(inner: Optimizer | GradientTransformation) -> Optimizer | GradientTransformation:
    """``inner`` with a learning-rate multiplier in its state: ``{"inner": ..., "lr_multiplier": np.array(1.0)}``.

    Every learning rate of ``inner`` (its schedule's value at each step, in every group)
    is multiplied by ``state["lr_multiplier"]``, read at each ``update``. Setting it between
    steps, ``state = {**state, "lr_multiplier": np.array(0.1)}``, does what multiplying
    the ``lr`` of every PyTorch param group by 0.1 does: the next steps follow PyTorch's
    trajectory with the new rate (the buffers are unchanged; only the step size changes).
    With the multiplier at 1 the trajectory is bitwise that of ``inner``. The multiplier is
    passed down as ``inner.update(..., lr_scale=m)``, which ``inner`` must take (all of
    fnn.optim's optimizers and combinators do).

    >>> opt = fnn.optim.lr_multiplier(fnn.optim.sgd(0.5))
    >>> params = {"w": np.array([1.0])}
    >>> state = opt.init(params)
    >>> state = {**state, "lr_multiplier": np.array(0.1)}  # e.g. a plateau: lr 0.5 -> 0.05
    >>> opt.update(params, {"w": np.array([2.0])}, state)[0]["w"].tolist()
    [0.9]
    """
    where = "lr_multiplier"
    is_opt = check_inner(where, "inner", inner)
    if not takes_lr_scale(inner.update):
        raise TypeError(f"{where}: inner.update must take the keyword lr_scale (fnn.optim's optimizers do); "
                        f"a hand-written update(params, grads, state) cannot have its learning rate scaled")
    keys = ("inner", "lr_multiplier")

    def init(params: Any) -> dict[str, Any]:
        return {"inner": inner.init(params), "lr_multiplier": np.array(1.0)}

    def scale(state: Any, lr_scale: float | None) -> tuple[float, float]:
        checks.state_dict(where, state, keys, made_by="lr_multiplier's init")
        m = _multiplier(where, state["lr_multiplier"])
        s = checks.lr_scale(where, lr_scale)
        return m, (m if s is None else m * s)

    if is_opt:
        def update(params: Any, grads: Any, state: dict[str, Any], *,
                   lr_scale: float | None = None) -> tuple[Any, dict[str, Any]]:
            m, s = scale(state, lr_scale)
            params, inner_state = inner.update(params, grads, state["inner"], lr_scale=s)
            return params, {"inner": inner_state, "lr_multiplier": np.array(m)}

        return Optimizer(init, update)

    def update_t(updates: Any, state: dict[str, Any], params: Any, *,
                 lr_scale: float | None = None) -> tuple[Any, dict[str, Any]]:
        m, s = scale(state, lr_scale)
        updates, inner_state = inner.update(updates, state["inner"], params, lr_scale=s)
        return updates, {"inner": inner_state, "lr_multiplier": np.array(m)}

    return GradientTransformation(init, update_t)
