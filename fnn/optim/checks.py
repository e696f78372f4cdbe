"""The checks every optimizer and transform runs at its boundary: float leaves, gradients shaped
like the params (``None`` allowed: no gradient), the state's keys and step count, the learning
rate a schedule gives, and masks and labels evaluated on a params tree.

Each raises with the optimizer's or transform's name first, as :mod:`fnn.validate` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from typing import Any

import numpy as np

from fnn import tree as _tree
from fnn import validate

__all__ = ["float_leaves", "grads_like_params", "state_dict", "step", "rate", "lr_scale", "lr_kwargs", "mask_spec",
           "per_leaf", "flags", "labels"]


def float_leaves(where: str, name: str, t: Any, arrays_only: bool, allow_none: bool = False) -> None:
    """Every leaf of ``t`` must be a float numpy array or scalar (with ``arrays_only``: not a
    Python float, since updated params keep each leaf's dtype; with ``allow_none``: or ``None``,
    a gradient that is absent)."""
    _float_pairs(where, name, _tree.flatten(t)[0], arrays_only, allow_none)


def _float_pairs(where: str, name: str, pairs: Iterable[tuple[_tree.KeyPath, Any]], arrays_only: bool,
                 allow_none: bool = False) -> None:
    """:func:`float_leaves` on a tree's ``(path, leaf)`` pairs."""
    for path, leaf in pairs:
        if leaf is None and allow_none:
            continue
        array = isinstance(leaf, (np.ndarray, np.generic))
        if not (leaf.dtype.kind == "f" if array else isinstance(leaf, float) and not arrays_only):
            got = f"dtype {leaf.dtype}" if array else type(leaf).__name__
            raise TypeError(f"{where}: {name} leaf at {_tree.path_str(path)} must be a float numpy array, "
                            f"got {got}")


def grads_like_params(where: str, params: Any, grads: Any, name: str = "grads") -> None:
    """``grads`` has the structure and leaf shapes of ``params``; a ``None`` leaf (no gradient)
    matches any param. Its other leaves are float arrays or numbers, the params' float arrays."""
    _tree.check_same_structure(params, grads, names=["params", name], where=where)
    pairs = _tree.flatten(params)[0]
    g_leaves = _tree.leaves(grads)
    for (path, p), g in zip(pairs, g_leaves):
        if g is not None and np.shape(p) != np.shape(g):
            raise ValueError(f"{where}: params and {name} differ in shape at {_tree.path_str(path)}: "
                             f"{np.shape(p)} vs {np.shape(g)}")
    _float_pairs(where, "params", pairs, arrays_only=True)
    _float_pairs(where, name, zip([path for path, _ in pairs], g_leaves), arrays_only=False, allow_none=True)


def state_dict(where: str, state: Any, keys: Collection[str], made_by: str = "this optimizer's init") -> None:
    """``state`` is a dict with exactly ``keys``."""
    if not isinstance(state, dict) or set(state) != set(keys):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{where}: state must be the dict made by {made_by}, with keys {sorted(keys)}; got {got}")


def step(where: str, value: Any) -> int:
    """``state['step']``: a non-negative integer (a 0-d int array as init makes it)."""
    # A bool (or bool array) has dtype kind "b", so it is refused with everything else that is not an integer.
    if not (isinstance(value, (int, np.integer, np.ndarray)) and np.ndim(value) == 0
            and np.asarray(value).dtype.kind in "iu" and int(value) >= 0):
        raise ValueError(f"{where}: state['step'] must be a non-negative integer (0-d array) as made by init, "
                         f"got {value!r:.80}")
    return int(value)


def lr_scale(where: str, value: Any) -> float | None:
    """The ``lr_scale`` keyword of ``update``: ``None`` or a finite number ``>= 0``."""
    return None if value is None else validate.number(where, "lr_scale", value, low=0.0)


def lr_kwargs(lr_scale: float | None) -> dict[str, float]:
    """The ``lr_scale`` keyword for an inner ``update``: only when given, so hand-written parts
    that do not take it still work in a combinator that is not under ``lr_multiplier``."""
    return {} if lr_scale is None else {"lr_scale": lr_scale}


def rate(where: str, schedule: Callable[[int], float], at: int, scale: float | None) -> float:
    """``schedule(at)``, checked to be a finite number ``>= 0``, times ``scale`` when given."""
    value = schedule(at)
    if not (validate.is_number(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{where}: the learning-rate schedule gave {value!r} at step {at}; "
                         f"expected a finite number >= 0")
    return float(value) if scale is None else float(value) * scale


def mask_spec(where: str, name: str, mask: Any) -> Any:
    """``mask`` as it is when it is a predicate ``(path, leaf) -> bool`` or a tree (evaluated
    later by :func:`flags`); ``TypeError`` otherwise."""
    if not callable(mask) and not _tree.is_container(mask):
        raise TypeError(f"{where}: {name} must be a predicate (path, leaf) -> bool or a tree of bools with the "
                        f"structure of params, got {type(mask).__name__}")
    return mask


def per_leaf(where: str, name: str, spec: Any, params: Any) -> list[tuple[Any, Any]]:
    """``(path, value)`` for each leaf of ``params``: ``spec(path, leaf)`` for a function, else the
    leaves of ``spec``, a tree with the structure of ``params`` (a mask, labels)."""
    pairs = _tree.flatten(params)[0]
    if callable(spec):
        return [(path, spec(path, leaf)) for path, leaf in pairs]
    _tree.check_same_structure(params, spec, names=["params", name], where=where)
    return list(zip((path for path, _ in pairs), _tree.leaves(spec)))


def flags(where: str, name: str, mask: Any, params: Any) -> list[bool]:
    """One bool per leaf of ``params`` (:func:`per_leaf`). Anything but ``True``/``False``
    (``np.bool_`` too) is a ``TypeError`` naming the key path: a mask is never cast."""
    what = f"{name}(path, leaf) returned" if callable(mask) else f"{name} leaf is"
    values = per_leaf(where, name, mask, params)
    for path, value in values:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{where}: {what} {type(value).__name__} {value!r:.40} at {_tree.path_str(path)}; "
                            f"expected True or False")
    return [bool(v) for _, v in values]


def labels(where: str, labelling: Any, params: Any, groups: Collection[str]) -> list[str]:
    """One group name per leaf of ``params`` (:func:`per_leaf`): a string, one of ``groups``."""
    values = per_leaf(where, "labels", labelling, params)
    for path, value in values:
        if not isinstance(value, str):
            raise TypeError(f"{where}: the label of the leaf at {_tree.path_str(path)} must be a group name (str), "
                            f"got {type(value).__name__} {value!r:.40}")
        if value not in groups:
            raise ValueError(f"{where}: the label {value!r} of the leaf at {_tree.path_str(path)} is not one of "
                             f"the groups {sorted(groups)}")
    return [v for _, v in values]
