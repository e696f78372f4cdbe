"""Composing transforms: :func:`chain`, and turning updates into params (:func:`apply_updates`,
:func:`as_optimizer`).

How optimizers and transforms mix: a transform maps gradients to gradients (or, at the end,
to updates); an optimizer consumes gradients and returns new params. So a chain is a
sequence of transforms, optionally *ending* with an optimizer. Ending with one, it is an
:class:`~fnn.optim.Optimizer` itself, and ``chain(clip_by_global_norm(1.0), adamw(1e-3))``
goes wherever an optimizer does, taking exactly the steps of ``adamw`` on the clipped
gradients. Ending with a transform, it is a transform, which :func:`as_optimizer` makes an
optimizer by adding its updates to the params.
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np

from fnn import tree as _tree
from fnn.optim import checks
from fnn.optim.base import GradientTransformation, Optimizer
from fnn.optim.multiplier import check_inner

__all__ = ["chain", "as_optimizer", "apply_updates"]


def apply_updates(params: Any, updates: Any) -> Any:
    """``params + updates`` leafwise, keeping each param's dtype; a ``None`` update leaves its
    param as it is (the same array).

    >>> fnn.optim.apply_updates({"w": np.ones(2), "b": np.ones(1)}, {"w": np.array([0.5, -1.0]), "b": None})
    {'b': array([1.]), 'w': array([1.5, 0. ])}
    """
    checks.grads_like_params("apply_updates", params, updates, name="updates")
    pairs, rebuild = _tree.flatten(params)
    return rebuild([p if u is None else np.asarray(p + u, p.dtype)
                    for (_, p), u in zip(pairs, _tree.leaves(updates))])


def as_optimizer(transform: GradientTransformation) -> Optimizer:
    """The :class:`~fnn.optim.Optimizer` that adds ``transform``'s updates to the params
    (its state is ``transform``'s).

    >>> opt = fnn.optim.as_optimizer(fnn.optim.chain(fnn.optim.scale_by_adam(), fnn.optim.scale_by_learning_rate(1e-3)))
    >>> params = {"w": np.zeros(2)}
    >>> opt.update(params, {"w": np.array([1.0, -1.0])}, opt.init(params))[0]["w"].round(6).tolist()
    [-0.001, 0.001]
    """
    where = "as_optimizer"
    if check_inner(where, "transform", transform):
        raise TypeError(f"{where}: transform must be a GradientTransformation, got an Optimizer (which is one "
                        f"already)")

    def init(params: Any) -> Any:
        checks.float_leaves(where, "params", params, arrays_only=True)
        return transform.init(params)

    def update(params: Any, grads: Any, state: Any, *, lr_scale: float | None = None) -> tuple[Any, Any]:
        checks.grads_like_params(where, params, grads)
        updates, state = transform.update(grads, state, params, **checks.lr_kwargs(lr_scale))
        return apply_updates(params, updates), state

    return Optimizer(init, update)


@overload
def chain(*parts: GradientTransformation) -> GradientTransformation: ...  # type: ignore[overload-overlap]
@overload
def chain(*parts: GradientTransformation | Optimizer) -> Optimizer: ...
def chain(*parts: GradientTransformation | Optimizer) -> GradientTransformation | Optimizer:
    """Apply ``parts`` one after the other; the state is the tuple of their states.

    All transforms: the chain is a :class:`~fnn.optim.GradientTransformation`. Transforms then
    one :class:`~fnn.optim.Optimizer`: the chain is an optimizer that passes the gradients
    through the transforms and gives the result to the optimizer, so
    ``chain(clip_by_global_norm(c), adamw())`` is exactly clipping by hand and then ``adamw``.
    An optimizer anywhere but last is a ``TypeError``.

    >>> opt = fnn.optim.chain(fnn.optim.clip_by_value(1.0), fnn.optim.sgd(0.1))
    >>> params = {"w": np.zeros(2)}
    >>> opt.update(params, {"w": np.array([5.0, -0.5])}, opt.init(params))[0]["w"].tolist()
    [-0.1, 0.05]
    """
    where = "chain"
    if not parts:
        raise ValueError(f"{where}: needs at least one transform or optimizer, got none")
    kinds = [check_inner(where, f"part {i}", part) for i, part in enumerate(parts)]
    if any(kinds[:-1]):
        i = kinds.index(True)
        raise TypeError(f"{where}: part {i} is an Optimizer, which returns new params rather than updates, so it "
                        f"can only be the last part; got {len(parts)} parts")
    transforms: list[GradientTransformation] = [p for p in parts if isinstance(p, GradientTransformation)]

    def init(params: Any) -> tuple[Any, ...]:
        return tuple(part.init(params) for part in parts)

    def states(state: Any) -> tuple[Any, ...]:
        if not isinstance(state, tuple) or len(state) != len(parts):
            got = f"a tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__
            raise ValueError(f"{where}: state must be the tuple of {len(parts)} states made by this chain's init, "
                             f"got {got}")
        return state

    def through(updates: Any, state: tuple[Any, ...], params: Any,
                lr_scale: float | None) -> tuple[Any, list[Any]]:
        new = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params, **checks.lr_kwargs(lr_scale))
            new.append(s)
        return updates, new

    if kinds[-1]:
        opt = parts[-1]

        def update(params: Any, grads: Any, state: Any, *, lr_scale: float | None = None) -> tuple[Any, Any]:
            checks.grads_like_params(where, params, grads)
            state = states(state)
            grads, new = through(grads, state, params, lr_scale)
            params, last = opt.update(params, grads, state[-1], **checks.lr_kwargs(lr_scale))
            return params, (*new, last)

        return Optimizer(init, update)

    def update_t(updates: Any, state: Any, params: Any, *, lr_scale: float | None = None) -> tuple[Any, Any]:
        checks.grads_like_params(where, params, updates, name="updates")
        updates, new = through(updates, states(state), params, lr_scale)
        return updates, tuple(new)

    return GradientTransformation(init, update_t)
