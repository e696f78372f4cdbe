"""A model summary: output shapes, parameter counts and the memory each vjp keeps for backward.

The cached bytes are measured, not estimated: :func:`summary` runs the model on
a batch of the given size and walks each vjp closure, adding up the buffers of
the arrays it references (a view counts as the buffer it keeps alive, each buffer
once, parameters not at all).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from fnn import random as _random
from fnn import tree as _tree
from fnn import validate
from fnn.core import INITIAL_STATE, Layer, ShapeDtype, check_is_layer, example_batch, like

__all__ = ["Row", "summary", "closure_arrays"]


class Row(NamedTuple):
    """One line of a summary; ``depth`` is the nesting level (0 for the model itself)."""

    name: str
    kind: str
    depth: int
    output_shape: Any
    params: int
    param_bytes: int
    cached_bytes: int


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def closure_arrays(fn: Callable[..., Any]) -> dict[int, np.ndarray]:
    """Every array buffer reachable from ``fn``'s closure (through nested functions and
    containers), keyed by ``id`` of the array owning the buffer."""
    found: dict[int, np.ndarray] = {}
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            root = _root(obj)
            found[id(root)] = root
        elif isinstance(obj, ShapeDtype):
            return
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, types.FunctionType):
            for cell in obj.__closure__ or ():
                try:
                    visit(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
            for child in getattr(obj, "children", ()):
                visit(child)

    visit(fn)
    return found


def _shape(spec: Any) -> Any:
    if isinstance(spec, tuple) and not isinstance(spec, ShapeDtype):
        return tuple(_shape(s) for s in spec)
    return tuple(spec.shape)


def summary(layer: Layer, shape: Any, batch_size: int = 1, *, params: Any = None, key: _random.Key | None = None,
            dtype: Any = np.float32, train: bool = False, print_fn: Callable[[str], Any] | None = print) -> list[Row]:
    """Print (with ``print_fn``; ``None`` for silence) and return one :class:`Row` per layer.

    Runs ``layer`` on a random batch of ``batch_size`` examples of ``shape`` (with
    ``params``, or fresh ones from ``key``): standard normal ``dtype`` values, or int64
    indices in ``[0, layer.index_range)`` for a model that takes integer indices
    (``layer.inputs == "int"``: an Embedding first; ``dtype`` is then its params'). It
    reports, for the model and every nested layer, the output shape (with the batch
    axis), the parameter count and bytes, and the bytes its vjp closure keeps alive for
    backward. A combinator's cached bytes are those of its whole subtree; the last row
    is the total, each buffer counted once.
    """
    check_is_layer(layer, "summary")
    shape = validate.example_shape("summary", shape)
    batch_size = validate.integer("summary", "batch_size", batch_size, low=1)
    dtype = validate.float_dtype("summary", dtype)
    train = validate.boolean("summary", "train", train)
    if key is not None:
        validate.key("summary", key)
    k_init, k_x, k_apply = _random.split(_random.key(0) if key is None else key, 3)
    if params is None:
        params = layer.init(k_init, shape, dtype)

    x = example_batch(layer, shape, dtype, batch_size, k_x)
    out = layer.apply(params, x, train=train, key=k_apply if train else None, state=INITIAL_STATE)
    param_ids = {id(_root(p)) for p in _tree.leaves(params) if isinstance(p, np.ndarray)}

    def cached(fn: Callable[..., Any]) -> dict[int, np.ndarray]:
        return {i: a for i, a in closure_arrays(fn).items() if i not in param_ids}

    rows: list[Row] = []

    def walk(name: str, lyr: Layer, p: Any, vjp: Callable[..., Any], spec: Any, depth: int) -> None:
        rows.append(Row(name, lyr.kind, depth, _shape(spec), _tree.size(p), _tree.nbytes(p),
                        sum(a.nbytes for a in cached(vjp).values())))
        sub_layers = dict(lyr.children)
        for child_name, child_vjp, child_spec in getattr(vjp, "children", ()):
            walk(child_name, sub_layers[child_name], p[child_name], child_vjp, child_spec, depth + 1)

    y, vjp = out
    walk("model", layer, params, vjp, like(y), 0)
    total = rows[0]
    rows.append(Row("total", "", 0, total.output_shape, total.params, total.param_bytes, total.cached_bytes))
    if print_fn is not None:
        print_fn(format_rows(rows, batch_size))
    return rows


def format_rows(rows: list[Row], batch_size: int) -> str:
    """The table :func:`summary` prints."""
    header = ("layer", "kind", "output shape", "params", "param bytes", f"cached bytes (N={batch_size})")
    lines = [("  " * r.depth + r.name, r.kind, str(r.output_shape), f"{r.params:,}", f"{r.param_bytes:,}",
              f"{r.cached_bytes:,}") for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines[:-1]), rule, fmt(lines[-1])])
