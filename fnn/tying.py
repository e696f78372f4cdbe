"""Weight tying: one parameter used by two layers, such as a GPT's token embedding and its
output projection, with the gradient summed.

``tie(net, target=..., source=...)`` is a combinator around ``net``. Its params are ``net``'s
without the ``target`` leaf; its ``apply`` puts the ``source`` array (transposed with
``transpose=True``) at ``target`` before calling ``net``, and its vjp adds the gradient ``net``
gives ``target`` (transposed back) to the one it gives ``source``, then drops it. So the
parameter exists once, in one place, and the optimizer, weight decay, checkpoints and gradient
clipping see it once: nothing has to be kept in sync after a step.

>>> from fnn.layers import Dense, Embedding
>>> gpt = fnn.serial(("embed", Embedding(10, 4)), ("head", Dense(10, bias=False)))
>>> tied = fnn.tie(gpt, target="head/w", source="embed/weight", transpose=True)
>>> params = tied.init(fnn.random.key(0), (3,))
>>> params["head"], params["embed"]["weight"].shape
({}, (10, 4))
>>> logits, vjp = tied.apply(params, np.array([[1, 2, 3]]))
>>> logits.shape, vjp(np.ones_like(logits))[0]["embed"]["weight"].shape
((1, 3, 10), (10, 4))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn import random as _random
from fnn import tree as _tree
from fnn import validate
from fnn.combinators import apply_child, reraise_with
from fnn.core import Layer, Options, Output, check_is_layer, make_layer, vjp_with

__all__ = ["tie", "TieSpec", "tie_spec", "untie", "node_at"]

Path = tuple[str, ...]


class TieSpec(NamedTuple):
    """What :func:`tie` was given: the inner ``net`` and the two paths (key tuples)."""

    net: Layer
    target: Path
    source: Path
    transpose: bool


def _path(where: str, name: str, value: Any) -> Path:
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name} must be a parameter path such as 'head/w', got {type(value).__name__}")
    parts = tuple(value.split("/"))
    if not all(parts):
        raise ValueError(f"{where}: {name} must be a parameter path such as 'head/w' (keys joined by '/'), "
                         f"got {value!r}")
    return parts


def node_at(tree: Any, path: Path) -> Any:
    """The node of a params tree at ``path`` (a tuple of dict keys), or ``None`` where there is none."""
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def _with(tree: Any, path: Path, value: Any) -> Any:
    """A copy of the dicts along ``path`` with ``value`` at its end (``None``: the leaf removed);
    everything else shared."""
    out = dict(tree)
    if len(path) == 1:
        if value is None:
            del out[path[0]]
        else:
            out[path[0]] = value
    else:
        out[path[0]] = _with(tree[path[0]], path[1:], value)
    return out


def _leaf_paths(tree: Any) -> list[str]:
    return ["/".join(str(k) for k in p) for p, _ in _tree.flatten(tree)[0]]


def tie_spec(layer: Layer) -> TieSpec | None:
    """The :class:`TieSpec` of a layer made by :func:`tie`, ``None`` for any other layer."""
    spec = getattr(layer, "tie_spec", None)
    return spec if isinstance(spec, TieSpec) else None


def untie(layer: Layer, params: Any) -> tuple[Layer, Any]:
    """``(net, net_params)`` for a tied ``layer``: the inner network and its full params, the
    target leaf being the (transposed) source array (a view). Inverse: drop the target leaf."""
    spec = tie_spec(check_is_layer(layer, "untie"))
    if spec is None:
        raise TypeError(f"untie: expected a layer made by fnn.tie, got {layer.kind}")
    source = node_at(params, spec.source)
    if not isinstance(source, np.ndarray):
        raise ValueError(f"untie: params has no source {'/'.join(spec.source)!r}")
    return spec.net, _with(params, spec.target, source.T if spec.transpose else source)


def tie(net: Layer, *, target: str, source: str, transpose: bool = False) -> Layer:
    """``net`` with its parameter at ``target`` tied to (the same array as) the one at ``source``.

    Paths are keys joined by ``/``, as ``net``'s params nest them: ``"head/w"`` is
    ``params["head"]["w"]``. Params are ``net``'s without the ``target`` leaf (its dict stays,
    possibly empty); ``apply`` inserts ``params[source]`` there, transposed if ``transpose``
    (a Dense ``w: (E, V)`` tied to an Embedding ``weight: (V, E)``), and the vjp returns
    ``dsource + dtarget`` (``dtarget.T`` with ``transpose``) at ``source``: the gradient of the one
    shared parameter. ``x``, ``y``, options and state are ``net``'s. At init the two paths must name
    different leaves of ``net``'s params whose shapes agree (after the transpose), and ``apply``
    wants params without ``target``: ``ValueError`` otherwise. :func:`untie` gives ``net`` and its
    full params back (``fnn.interop`` uses it: a PyTorch model ties by sharing one tensor).
    """
    check_is_layer(net, "tie: net")
    kind = f"tie({net.kind}, target={target!r}, source={source!r}{', transpose=True' if transpose is True else ''})"
    tgt, src = _path(kind, "target", target), _path(kind, "source", source)
    transpose = validate.boolean(kind, "transpose", transpose)
    if tgt[:len(src)] == src or src[:len(tgt)] == tgt:
        raise ValueError(f"{kind}: target and source must be two different leaves, got {target!r} and {source!r}")

    def init(key: _random.Key, shape: Any, dtype: np.dtype) -> Any:
        try:
            params = net.init(key, shape, dtype)
        except (ValueError, TypeError) as err:
            raise reraise_with(err, kind) from err
        leaves = {name: node_at(params, path) for name, path in (("target", tgt), ("source", src))}
        for name, leaf in leaves.items():
            if not isinstance(leaf, np.ndarray):
                raise ValueError(f"{kind}: the {name} {'/'.join(tgt if name == 'target' else src)!r} is not a "
                                 f"parameter of {net.kind}, whose parameters are {_leaf_paths(params)}")
        want = leaves["source"].T.shape if transpose else leaves["source"].shape
        if leaves["target"].shape != want:
            raise ValueError(f"{kind}: the target {target!r} has shape {leaves['target'].shape} but the source "
                             f"{source!r} has shape {leaves['source'].shape}"
                             f"{', transposed ' + str(want) if transpose else ''}; they must agree"
                             f"{'' if transpose else ' (transpose=True?)'}")
        return _with(params, tgt, None)

    def apply(params: Any, x: Any, opts: Options) -> Output:
        shared = node_at(params, src)
        if not isinstance(shared, np.ndarray):
            raise ValueError(f"{kind}: params has no source {source!r} (params from a different architecture?)")
        if node_at(params, tgt[:-1]) is None or node_at(params, tgt) is not None:
            raise ValueError(f"{kind}: params must hold {'/'.join(tgt[:-1]) or 'the top level'} without the tied "
                             f"target {tgt[-1]!r} (its value is the source's; use the params tie's init makes)")
        try:
            out = apply_child(net, _with(params, tgt, shared.T if transpose else shared), x, opts, opts.key,
                              opts.state)
        except (ValueError, TypeError) as err:
            raise reraise_with(err, kind) from err
        inner = out.vjp

        def vjp(dy: Any, need_dx: bool = True) -> tuple[Any, Any]:
            try:
                grads, dx = inner(dy, need_dx=need_dx)
            except (ValueError, TypeError) as err:
                raise reraise_with(err, kind) from err
            dtarget = node_at(grads, tgt)
            grads = _with(grads, tgt, None)
            return _with(grads, src, node_at(grads, src) + (dtarget.T if transpose else dtarget)), dx

        children = getattr(inner, "children", None)
        return Output(out.y, vjp_with(vjp, children=children) if children is not None else vjp, out.state)

    layer = make_layer(kind, init, apply, children=net.children, inputs=net.inputs, index_range=net.index_range)
    setattr(layer, "tie_spec", TieSpec(net, tgt, src, transpose))  # noqa: B010 (read by tie_spec)
    return layer
