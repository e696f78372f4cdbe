"""Freezing parameters and per-group hyperparameters: :func:`freeze`, :func:`masked` and
:func:`multi_transform`, each taking an optimizer or a transform and returning the same kind.

Freezing works through the convention every fnn optimizer and transform follows: a ``None``
gradient leaf (PyTorch's ``p.grad is None``) gets no update, no weight decay, and its buffers
come back as they were. ``freeze`` replaces the frozen leaves' gradients by ``None``, and
its state *is* the inner optimizer's state, whatever the mask: freezing more leaves
mid-training is calling another ``freeze(opt, new_mask)`` (or passing ``None`` gradients
by hand) with the same state, and the newly frozen params and buffers stay bitwise as they
were from that step on. The step count is shared and keeps counting, so a leaf unfrozen
later takes its bias correction at the global step (PyTorch counts per parameter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, overload

from fnn import tree as _tree
from fnn.optim import checks
from fnn.optim.base import GradientTransformation, Mask, Optimizer
from fnn.optim.multiplier import check_inner

__all__ = ["freeze", "masked", "multi_transform"]

Labels = Callable[[tuple[Any, ...], Any], str] | Any
"""A function ``(key_path, leaf) -> group name`` or a tree of group names shaped like params."""


def _freezer(where: str, inner: Optimizer | GradientTransformation, mask: Mask,
             frozen_when: bool) -> Optimizer | GradientTransformation:
    name = "mask" if where == "masked" else "frozen"
    checks.mask_spec(where, name, mask)
    is_opt = check_inner(where, "inner", inner)

    def drop(params: Any, grads: Any, what: str) -> Any:
        checks.grads_like_params(where, params, grads, name=what)
        frozen = [f == frozen_when for f in checks.flags(where, name, mask, params)]
        pairs, rebuild = _tree.flatten(grads)
        return rebuild([None if f else g for (_, g), f in zip(pairs, frozen)])

    if is_opt:
        def update(params: Any, grads: Any, state: Any, *, lr_scale: float | None = None) -> tuple[Any, Any]:
            return inner.update(params, drop(params, grads, "grads"), state, **checks.lr_kwargs(lr_scale))

        return Optimizer(inner.init, update)

    def update_t(updates: Any, state: Any, params: Any, *, lr_scale: float | None = None) -> tuple[Any, Any]:
        return inner.update(drop(params, updates, "updates"), state, params, **checks.lr_kwargs(lr_scale))

    return GradientTransformation(inner.init, update_t)


@overload
def freeze(inner: Optimizer, frozen: Mask) -> Optimizer: ...
@overload
def freeze(inner: GradientTransformation, frozen: Mask) -> GradientTransformation: ...
def freeze(inner: Optimizer | GradientTransformation, frozen: Mask) -> Optimizer | GradientTransformation:
    """``inner`` with the leaves ``frozen`` selects held fixed: no update, no weight decay, no
    moment accumulation; their params and buffers come back as the same arrays.

    ``frozen`` is a predicate ``(key_path, leaf) -> bool`` or a tree of bools with the
    structure of params, read at every ``update``. The state is ``inner``'s, whatever
    ``frozen`` is, so a run can switch to another ``freeze(inner, ...)`` at any step.

    >>> opt = fnn.optim.freeze(fnn.optim.adamw(0.1), lambda path, leaf: path[0] == "backbone")
    >>> params = {"backbone": np.ones(2), "head": np.ones(2)}
    >>> new, state = opt.update(params, fnn.tree.map(np.ones_like, params), opt.init(params))
    >>> new["backbone"] is params["backbone"], state["exp_avg"]["backbone"].tolist()
    (True, [0.0, 0.0])
    """
    return _freezer("freeze", inner, frozen, True)


@overload
def masked(inner: Optimizer, mask: Mask) -> Optimizer: ...
@overload
def masked(inner: GradientTransformation, mask: Mask) -> GradientTransformation: ...
def masked(inner: Optimizer | GradientTransformation, mask: Mask) -> Optimizer | GradientTransformation:
    """``inner`` applied only to the leaves ``mask`` selects (``True``: trained); the others
    are frozen as by :func:`freeze` (``masked(opt, m)`` is ``freeze(opt, not m)``).

    Unlike ``optax.masked``, leaves outside the mask are frozen, not passed through: in a
    chain they stay frozen for the transforms after it too. To restrict one transform to
    some leaves, give it its own mask (``add_decayed_weights(wd, mask)``), or use
    :func:`multi_transform` with :func:`fnn.optim.identity` for the others.

    >>> opt = fnn.optim.masked(fnn.optim.sgd(0.5), {"w": True, "b": False})
    >>> params = {"w": np.ones(1), "b": np.ones(1)}
    >>> new, _ = opt.update(params, {"w": np.ones(1), "b": np.ones(1)}, opt.init(params))
    >>> new["w"].tolist(), new["b"].tolist()
    ([0.5], [1.0])
    """
    return _freezer("masked", inner, mask, False)


def _view(pairs: list[tuple[Any, Any]], rebuild: Callable[[list[Any]], Any], labels: list[str], group: str) -> Any:
    """The tree with the leaves of other groups replaced by ``{}``, an empty subtree: an inner
    optimizer sees (and keeps buffers for) its own leaves only, at their own key paths."""
    return rebuild([leaf if label == group else {} for (_, leaf), label in zip(pairs, labels)])


@overload
def multi_transform(transforms: Mapping[str, Optimizer], labels: Labels) -> Optimizer: ...
@overload
def multi_transform(transforms: Mapping[str, GradientTransformation], labels: Labels) -> GradientTransformation: ...
def multi_transform(transforms: Mapping[str, Optimizer] | Mapping[str, GradientTransformation],
                    labels: Labels) -> Optimizer | GradientTransformation:
    """One optimizer (or transform) per group of leaves, each with its own hyperparameters,
    as PyTorch's param groups.

    ``transforms`` maps group names to optimizers (all of them; the result is an optimizer)
    or to transforms (the result is a transform). ``labels`` gives each leaf its group: a
    tree of names with the structure of params, or a function ``(key_path, leaf) -> name``.
    The state is ``{group: inner state}``, each inner state made for that group's leaves only
    (the others are ``{}`` in its trees), so labels must stay the same through training;
    freeze leaves with :func:`freeze` instead. ``lr_scale`` reaches every group.

    >>> opt = fnn.optim.multi_transform({"backbone": fnn.optim.adam(1e-4), "head": fnn.optim.adam(1e-3)},
    ...                                 lambda path, leaf: "backbone" if path[0] == "backbone" else "head")
    >>> params = {"backbone": np.zeros(1), "head": np.zeros(1)}
    >>> new, state = opt.update(params, {"backbone": np.ones(1), "head": np.ones(1)}, opt.init(params))
    >>> new["backbone"].round(6).tolist(), new["head"].round(6).tolist(), sorted(state)
    ([-0.0001], [-0.001], ['backbone', 'head'])
    """
    where = "multi_transform"
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(f"{where}: transforms must be a non-empty dict of group name -> optimizer or transform, "
                        f"got {type(transforms).__name__} {transforms!r:.60}")
    for group in transforms:
        if not isinstance(group, str):
            raise TypeError(f"{where}: group names must be str, got {type(group).__name__} {group!r}")
    kinds = {group: check_inner(where, f"transforms[{group!r}]", t) for group, t in transforms.items()}
    if len(set(kinds.values())) != 1:
        raise TypeError(f"{where}: transforms must be all optimizers or all transforms, got optimizers for "
                        f"{sorted(g for g, k in kinds.items() if k)} and transforms for "
                        f"{sorted(g for g, k in kinds.items() if not k)}")
    if not callable(labels) and not _tree.is_container(labels):
        raise TypeError(f"{where}: labels must be a function (path, leaf) -> group name or a tree of group names, "
                        f"got {type(labels).__name__}")
    groups: dict[str, Optimizer | GradientTransformation] = dict(transforms)
    is_opt = next(iter(kinds.values()))

    def split(params: Any) -> tuple[list[tuple[Any, Any]], Callable[[list[Any]], Any], list[str]]:
        pairs, rebuild = _tree.flatten(params)
        return pairs, rebuild, checks.labels(where, labels, params, groups)

    def init(params: Any) -> dict[str, Any]:
        pairs, rebuild, names = split(params)
        return {group: t.init(_view(pairs, rebuild, names, group)) for group, t in groups.items()}

    def run(params: Any, grads: Any, state: Any, lr_scale: float | None,
            step: Callable[[Any, Any, Any, Any], tuple[Any, Any]], what: str) -> tuple[Any, dict[str, Any]]:
        checks.grads_like_params(where, params, grads, name=what)
        checks.state_dict(where, state, groups, made_by="multi_transform's init")
        pairs, rebuild, names = split(params)
        g_pairs = _tree.flatten(grads)[0]
        out: list[Any] = [None] * len(pairs)
        new_state = {}
        for group, t in groups.items():
            result, new_state[group] = step(t, _view(pairs, rebuild, names, group),
                                            _view(g_pairs, rebuild, names, group), state[group])
            leaves = iter(_tree.leaves(result))
            for i, name in enumerate(names):
                if name == group:
                    out[i] = next(leaves)
        return rebuild(out), new_state

    if is_opt:
        def update(params: Any, grads: Any, state: Any, *, lr_scale: float | None = None) -> tuple[Any, Any]:
            return run(params, grads, state, lr_scale,
                       lambda t, p, g, s: t.update(p, g, s, **checks.lr_kwargs(lr_scale)), "grads")

        return Optimizer(init, update)

    def update_t(updates: Any, state: Any, params: Any, *, lr_scale: float | None = None) -> tuple[Any, Any]:
        return run(params, updates, state, lr_scale,
                   lambda t, p, u, s: t.update(u, s, p, **checks.lr_kwargs(lr_scale)), "updates")

    return GradientTransformation(init, update_t)

