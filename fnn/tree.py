"""Functions on parameter trees: nested dicts (and lists/tuples) whose leaves are arrays.

Params, gradients and optimizer state are all trees. A *key path* is the tuple of
dict keys and sequence indices from the root to a leaf, for example
``("conv1", "w")``; :func:`path_str` renders it as ``['conv1']['w']``.
Every function that takes several trees checks that they have the same
structure first and raises ``ValueError`` naming the first differing key path.
Dict keys are visited in sorted order, so flattening is deterministic.

>>> t = {"a": np.ones(2), "b": {"c": np.zeros(())}}
>>> [path_str(p) for p, _ in flatten(t)[0]]
["['a']", "['b']['c']"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Tree",
    "KeyPath",
    "path_str",
    "is_container",
    "leaves",
    "flatten",
    "unflatten",
    "map",
    "map_with_path",
    "check_same_structure",
    "zeros_like",
    "add",
    "sub",
    "scale",
    "axpy",
    "vdot",
    "global_norm",
    "allclose",
    "astype",
    "size",
    "nbytes",
]

Tree = Any
"""A leaf (an array or scalar) or a dict, list or tuple of trees: params, gradients, optimizer state."""
KeyPath = tuple[Any, ...]
"""The dict keys and sequence indices from the root of a tree to one leaf."""


def is_container(t: Any) -> bool:
    """True for the node types trees are made of: dict, list and tuple."""
    return isinstance(t, (dict, list, tuple))


def path_str(path: KeyPath) -> str:
    """Render a key path as ``['conv1']['w']`` (``<root>`` for the empty path)."""
    return "".join(f"[{k!r}]" for k in path) if path else "<root>"


def _sorted_keys(t: dict[Any, Any]) -> list[Any]:
    try:
        return sorted(t)
    except TypeError as err:
        raise TypeError(f"fnn.tree: dict keys must be sortable (all str), got {list(t)!r}") from err


def _rebuild(t: Any, items: Sequence[Any], keys: Sequence[Any]) -> Any:
    if isinstance(t, dict):
        return dict(zip(keys, items))
    if isinstance(t, tuple) and hasattr(t, "_fields"):
        return type(t)(*items)
    return type(t)(items)


def _walk(node: Any, path: KeyPath, out: list[tuple[KeyPath, Any]]) -> None:
    # no helper calls per node: flatten runs many times per optimizer step
    if isinstance(node, dict):
        for k in _sorted_keys(node):
            _walk(node[k], path + (k,), out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _walk(v, path + (i,), out)
    else:
        out.append((path, node))


def _build(node: Any, leaves: Iterator[Any]) -> Any:
    if isinstance(node, dict):
        keys = _sorted_keys(node)
        return dict(zip(keys, [_build(node[k], leaves) for k in keys]))
    if isinstance(node, (list, tuple)):
        return _rebuild(node, [_build(v, leaves) for v in node], ())
    return next(leaves)


def flatten(t: Tree) -> tuple[list[tuple[KeyPath, Any]], Callable[[Sequence[Any]], Tree]]:
    """Return ``([(path, leaf), ...], rebuild)`` where ``rebuild(new_leaves)`` gives a tree of the same structure.

    The walks are module-level functions, not closures that call themselves: such a closure is a
    reference cycle, which only the garbage collector frees (with everything it holds).
    """
    out: list[tuple[KeyPath, Any]] = []
    _walk(t, (), out)

    def rebuild(new_leaves: Sequence[Any]) -> Tree:
        it = iter(new_leaves)
        result = _build(t, it)
        if next(it, _SENTINEL) is not _SENTINEL:
            raise ValueError(f"fnn.tree.unflatten: got more leaves than the tree's {len(out)}")
        return result

    return out, rebuild


_SENTINEL = object()


def unflatten(pairs: Sequence[tuple[KeyPath, Any]]) -> Tree:
    """Build a tree of nested dicts from ``(path, leaf)`` pairs (the inverse of :func:`flatten` for dict trees)."""
    root: dict[Any, Any] = {}
    for path, leaf in pairs:
        if not path:
            if len(pairs) != 1:
                raise ValueError("fnn.tree.unflatten: a root leaf must be the only pair")
            return leaf
        node = root
        for i, k in enumerate(path[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"fnn.tree.unflatten: {path_str(path[: i + 1])} is both a leaf and a node")
            node = nxt
        if path[-1] in node:
            raise ValueError(f"fnn.tree.unflatten: duplicate key path {path_str(path)}")
        node[path[-1]] = leaf
    return root


def leaves(t: Tree) -> list[Any]:
    """The leaves of ``t`` in flatten order."""
    return [leaf for _, leaf in flatten(t)[0]]


def _structure_diff(a: Any, b: Any, path: KeyPath) -> str | None:
    ca, cb = is_container(a), is_container(b)
    if ca != cb or (ca and type(a) is not type(b) and not (isinstance(a, dict) and isinstance(b, dict))):
        what = lambda v: type(v).__name__ if is_container(v) else "leaf"  # noqa: E731
        return f"at {path_str(path)}: {what(a)} vs {what(b)}"
    if not ca:
        return None
    if isinstance(a, dict):
        ka, kb = set(a), set(b)
        if ka != kb:
            missing = sorted(repr(k) for k in ka - kb)  # not map(): this module's map shadows the builtin
            extra = sorted(repr(k) for k in kb - ka)
            parts = []
            if missing:
                parts.append(f"missing key(s) {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected key(s) {', '.join(extra)}")
            return f"at {path_str(path)}: {'; '.join(parts)}"
        for k in _sorted_keys(a):  # unsortable keys raise a TypeError that says so
            d = _structure_diff(a[k], b[k], path + (k,))
            if d:
                return d
        return None
    if len(a) != len(b):
        return f"at {path_str(path)}: length {len(a)} vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        d = _structure_diff(x, y, path + (i,))
        if d:
            return d
    return None


def check_same_structure(*trees: Tree, names: Sequence[str] | None = None, shapes: bool = False,
                         where: str = "fnn.tree") -> None:
    """Raise ``ValueError`` naming the first key path where the trees differ.

    With ``shapes=True`` leaf shapes must agree too.
    """
    if len(trees) < 2:
        return
    names = list(names) if names else [f"tree {i}" for i in range(len(trees))]
    first = trees[0]
    for name, other in zip(names[1:], trees[1:]):
        diff = _structure_diff(first, other, ())
        if diff:
            raise ValueError(f"{where}: {names[0]} and {name} differ in structure {diff}")
        if shapes:
            for (path, x), y in zip(flatten(first)[0], leaves(other)):
                if np.shape(x) != np.shape(y):
                    raise ValueError(
                        f"{where}: {names[0]} and {name} differ in shape at {path_str(path)}: "
                        f"{np.shape(x)} vs {np.shape(y)}"
                    )


def _call_leaf(where: str, fn: Callable[..., Any], path: KeyPath, args: Sequence[Any], skip: int = 0) -> Any:
    """``fn(*args)``; a ``ValueError``/``TypeError`` it raises (numpy's broadcasting error for
    leaves of different shapes) is re-raised with the key path and the shapes of the leaves
    (``args`` after the first ``skip``)."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as err:
        shapes = ", ".join(str(a.shape) if isinstance(a, np.ndarray) else type(a).__name__ for a in args[skip:])
        try:
            new = type(err)(f"{where}: fn failed at {path_str(path)} (leaves {shapes}): {err}")
        except Exception:  # an exception type whose constructor takes other arguments
            raise err from None
        raise new from err


def map(fn: Callable[..., Any], t: Tree, *rest: Tree) -> Tree:  # noqa: A001
    """Apply ``fn`` leafwise to one or several trees of the same structure.

    Leaf shapes are not checked (``fn`` may combine a leaf with a per-leaf scalar);
    an error ``fn`` raises is re-raised naming the key path and the leaves' shapes.
    """
    check_same_structure(t, *rest, where="fnn.tree.map")
    pairs, rebuild = flatten(t)
    others = [leaves(r) for r in rest]
    return rebuild([_call_leaf("fnn.tree.map", fn, p, (leaf, *(o[i] for o in others)))
                    for i, (p, leaf) in enumerate(pairs)])


def map_with_path(fn: Callable[..., Any], t: Tree, *rest: Tree) -> Tree:
    """Like :func:`map` but ``fn(path, leaf, *other_leaves)`` also receives the key path."""
    check_same_structure(t, *rest, where="fnn.tree.map_with_path")
    pairs, rebuild = flatten(t)
    others = [leaves(r) for r in rest]
    return rebuild([_call_leaf("fnn.tree.map_with_path", fn, p, (p, leaf, *(o[i] for o in others)), skip=1)
                    for i, (p, leaf) in enumerate(pairs)])


def _binary(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[Tree, Tree], Tree]:
    def op(a: Tree, b: Tree) -> Tree:
        check_same_structure(a, b, names=["a", "b"], shapes=True, where=f"fnn.tree.{name}")
        return map(lambda x, y: np.asarray(fn(x, y)), a, b)  # asarray: 0-d arithmetic gives numpy scalars

    op.__name__ = name
    return op


add = _binary("add", lambda x, y: x + y)
add.__doc__ = "Leafwise ``a + b`` (same structure and shapes required)."
sub = _binary("sub", lambda x, y: x - y)
sub.__doc__ = "Leafwise ``a - b`` (same structure and shapes required)."


def zeros_like(t: Tree) -> Tree:
    """A tree of zero arrays with the shapes and dtypes of ``t``."""
    return map(np.zeros_like, t)


def scale(s: float, t: Tree) -> Tree:
    """Leafwise ``s * t``, keeping each leaf's dtype."""
    return map(lambda x: np.asarray(x * s, np.result_type(x)), t)


def axpy(a: float, x: Tree, y: Tree) -> Tree:
    """Leafwise ``a * x + y``, keeping ``y``'s dtypes."""
    check_same_structure(x, y, names=["x", "y"], shapes=True, where="fnn.tree.axpy")
    return map(lambda u, v: np.asarray(a * u + v, np.result_type(v)), x, y)


def _numeric_leaves(where: str, t: Tree) -> list[np.ndarray]:
    """The leaves of ``t`` as arrays; ``TypeError`` naming the key path of a leaf that is not
    a number or an array of numbers (None, a string, an object array)."""
    out = []
    for path, x in flatten(t)[0]:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"{where}: the leaf at {path_str(path)} is {type(x).__name__} of dtype {arr.dtype}; "
                            f"expected a numeric array")
        out.append(arr)
    return out


def vdot(a: Tree, b: Tree) -> float:
    """Sum over leaves of the dot product of the flattened leaves."""
    check_same_structure(a, b, names=["a", "b"], shapes=True, where="fnn.tree.vdot")
    return float(sum(np.vdot(x, y) for x, y in zip(_numeric_leaves("fnn.tree.vdot", a),
                                                      _numeric_leaves("fnn.tree.vdot", b))))


def global_norm(t: Tree) -> float:
    """The L2 norm of all leaves taken together, computed in float64."""
    total = 0.0
    for x in _numeric_leaves("fnn.tree.global_norm", t):
        v = np.asarray(x, dtype=np.float64).ravel()
        total += float(v @ v)
    return float(np.sqrt(total))


def allclose(a: Tree, b: Tree, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    """True when the trees have the same structure and shapes and every leaf pair is close."""
    try:
        check_same_structure(a, b, shapes=True)
    except ValueError:
        return False
    return all(np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan) for x, y in zip(leaves(a), leaves(b)))


def astype(t: Tree, dtype: Any) -> Tree:
    """Cast every floating-point leaf to ``dtype`` (other leaves are returned as they are)."""
    return map(lambda x: x.astype(dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else x, t)


def size(t: Tree) -> int:
    """Total number of elements over all leaves."""
    return int(sum(np.size(x) for x in leaves(t)))


def nbytes(t: Tree) -> int:
    """Total bytes over all array leaves."""
    return int(sum(np.asarray(x).nbytes for x in leaves(t)))
