"""Helpers shared by the loss tests: a loss seen as a layer function for ``check_vjp_fn``."""

import numpy as np

from fnn import tree


def as_layer_fn(loss, *args, **kwargs):
    """``f(params, x) -> (y, vjp)`` for ``check_vjp_fn``, which compares the returned gradient with finite
    differences of the returned value.

    With ``"mean"``/``"sum"`` (or ``"batchmean"``) ``y`` is the float loss as a 0-d array and the vjp scales the
    gradient. With ``"none"`` ``y`` is the per-position losses and the vjp multiplies the returned gradient (that
    of their sum) by ``dy`` per position: the documented way to weight examples, checked against finite
    differences of ``sum(dy * losses)``.
    """

    def f(params, x):
        value, grad = loss(x, *args, **kwargs)
        tree.check_same_structure(x, grad, shapes=True)
        assert all(g.dtype == a.dtype for g, a in zip(tree.leaves(grad), tree.leaves(x)))
        if kwargs.get("reduction") == "none":
            assert isinstance(value, np.ndarray) and value.dtype == x.dtype
            extra = grad.ndim - value.ndim  # 1 for the class losses (one loss per row of C scores), 0 elementwise
            return value, lambda dy: ({}, dy.reshape(dy.shape + (1,) * extra) * grad)
        assert type(value) is float
        return np.array(value), lambda dy: ({}, tree.scale(float(dy), grad))

    return f
