"""What the optimizer tests share: bitwise equality of trees, the purity check of an ``update``, and a
trajectory of updates."""

from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import tree


def bitwise(a: Any, b: Any) -> bool:
    """Two trees of the same structure, shapes, dtypes and bits."""
    tree.check_same_structure(a, b, shapes=True)
    return all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(tree.leaves(a), tree.leaves(b)))


def check_update_is_pure(update: Callable[..., Any], *args: Any, may_share: bool = False) -> Any:
    """Run ``update(*args)`` twice on read-only inputs: the inputs keep their bits, both calls give
    the same bits and (unless ``may_share``: frozen leaves come back as the same arrays) no output
    shares memory with an input. Returns the first result."""
    inputs = [x for a in args for x in tree.leaves(a)]
    copies = [x.copy() for x in inputs]
    for x in inputs:
        x.setflags(write=False)
    first, second = update(*args), update(*args)
    assert all(x.tobytes() == c.tobytes() for x, c in zip(inputs, copies))
    assert bitwise(first, second)
    if not may_share:
        assert not any(np.shares_memory(o, x) for o in tree.leaves(first) for x in inputs)
    return first


def run_updates(opt: Any, params: Any, grad_at: Callable[[Any, int], Any], steps: int) -> tuple[list[Any], Any]:
    """``steps`` updates of ``opt`` from ``params``, step ``t``'s gradient ``grad_at(params, t)``: every
    params tree from the first to the last, and the final state."""
    state = opt.init(params)
    out = [params]
    for t in range(steps):
        params, state = opt.update(params, grad_at(params, t), state)
        out.append(params)
    return out, state
