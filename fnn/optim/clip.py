"""Gradient clipping, in two forms under one name each:

- ``clip_by_global_norm(grads, max_norm)`` and ``clip_by_value(grads, max_value)`` clip a
  tree and return it, to call before ``update``;
- ``clip_by_global_norm(max_norm)`` and ``clip_by_value(max_value)`` (one argument) return
  a :class:`~fnn.optim.GradientTransformation` doing the same, to put in a chain:
  ``fnn.optim.chain(fnn.optim.clip_by_global_norm(1.0), fnn.optim.adamw(1e-3))``.

``None`` leaves (no gradient) are left out of the norm and stay ``None``, as PyTorch skips
parameters whose ``grad`` is ``None``.

>>> g = {"w": np.array([3.0, 4.0])}
>>> fnn.optim.clip_by_global_norm(g, 1.0, eps=0.0)["w"].tolist()
[0.6000000000000001, 0.8]
>>> t = fnn.optim.clip_by_global_norm(1.0, eps=0.0)
>>> t.update(g, t.init(g), g)[0]["w"].tolist()
[0.6000000000000001, 0.8]
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np

from fnn import tree as _tree
from fnn import validate
from fnn.optim import checks
from fnn.optim.base import GradientTransformation

__all__ = ["clip_by_global_norm", "clip_by_value"]

_NOT_GIVEN: Any = object()


def _clip_norm(grads: Any, max_norm: float, eps: float) -> Any:
    pairs, rebuild = _tree.flatten(grads)
    norm = _tree.global_norm(rebuild([{} if g is None else g for _, g in pairs]))  # {}: a subtree without leaves
    if np.isfinite(norm) and norm <= max_norm:
        return grads
    factor = max_norm / (norm + eps) if np.isfinite(norm) else float("nan")  # like torch: non-finite poisons all
    return rebuild([None if g is None else np.asarray(g * factor, np.result_type(g)) for _, g in pairs])


def _clip_value(grads: Any, max_value: float) -> Any:
    return _tree.map(lambda g: None if g is None else np.clip(g, -max_value, max_value), grads)


def _one_argument(where: str, name: str, value: Any) -> Any:
    """The single argument of the transform form, which must be the number, not a tree."""
    if _tree.is_container(value) or isinstance(value, np.ndarray):
        raise TypeError(f"{where}: {name} must be a number, got {type(value).__name__}; to clip a tree pass "
                        f"{name} too: {where}(grads, {name}); {where}({name}) alone makes a transform")
    return value


def _transform(where: str, fn: Any) -> GradientTransformation:
    def init(params: Any) -> dict[str, Any]:
        checks.float_leaves(where, "params", params, arrays_only=True)
        return {}

    def update(updates: Any, state: dict[str, Any], params: Any, *,
               lr_scale: float | None = None) -> tuple[Any, dict[str, Any]]:
        checks.grads_like_params(where, params, updates, name="updates")
        checks.state_dict(where, state, (), made_by="this transform's init")
        return fn(updates), {}

    return GradientTransformation(init, update)


@overload
def clip_by_global_norm(max_norm: float, /, *, eps: float = 1e-6) -> GradientTransformation: ...
@overload
def clip_by_global_norm(grads: Any, max_norm: float, eps: float = 1e-6) -> Any: ...
def clip_by_global_norm(grads: Any, max_norm: Any = _NOT_GIVEN, eps: float = 1e-6) -> Any:
    """Scale every leaf by ``max_norm / (norm + eps)`` when the global L2 norm exceeds
    ``max_norm`` (``torch.nn.utils.clip_grad_norm_``'s rule); otherwise return ``grads`` unchanged.

    The norm itself is :func:`fnn.tree.global_norm` of ``grads``. Called with one argument,
    ``clip_by_global_norm(max_norm, eps=1e-6)``, it returns the same clipping as a
    :class:`~fnn.optim.GradientTransformation` (state ``{}``).
    """
    where = "clip_by_global_norm"
    if max_norm is _NOT_GIVEN:
        max_norm, grads = _one_argument(where, "max_norm", grads), _NOT_GIVEN
    max_norm = validate.number(where, "max_norm", max_norm, low=0.0)
    eps = validate.number(where, "eps", eps, low=0.0)
    if grads is _NOT_GIVEN:
        return _transform(where, lambda u: _clip_norm(u, max_norm, eps))
    return _clip_norm(grads, max_norm, eps)


@overload
def clip_by_value(max_value: float, /) -> GradientTransformation: ...
@overload
def clip_by_value(grads: Any, max_value: float) -> Any: ...
def clip_by_value(grads: Any, max_value: Any = _NOT_GIVEN) -> Any:
    """Clip every entry to ``[-max_value, max_value]``. Called with one argument,
    ``clip_by_value(max_value)``, it returns the same clipping as a
    :class:`~fnn.optim.GradientTransformation` (state ``{}``)."""
    if max_value is _NOT_GIVEN:
        max_value, grads = _one_argument("clip_by_value", "max_value", grads), _NOT_GIVEN
    max_value = validate.number("clip_by_value", "max_value", max_value, low=0.0)
    if grads is _NOT_GIVEN:
        return _transform("clip_by_value", lambda u: _clip_value(u, max_value))
    return _clip_value(grads, max_value)
