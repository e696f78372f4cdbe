"""Flatten and Identity: hand-computed values and copies instead of views.

The protocol (finite differences, purity, dtypes, input and cotangent errors) is checked for
both in test_contract.py.
"""

import numpy as np
import pytest

from fnn import output_shape, random
from fnn.layers import Flatten, Identity, reshape


def test_flatten_by_hand():
    x = np.arange(24.0).reshape(2, 3, 4)
    y, vjp = Flatten().apply({}, x)
    assert y.shape == (2, 12) and y[1].tolist() == list(range(12, 24))
    dparams, dx = vjp(y * 10)
    assert dparams == {} and dx.shape == (2, 3, 4) and dx[1, 2].tolist() == [200.0, 210.0, 220.0, 230.0]


def test_flatten_init_and_output_shape():
    assert Flatten().init(random.key(0), (3, 4, 5)) == {}
    assert output_shape(Flatten(), {}, (3, 4, 5)) == (60,)


def test_flatten_keeps_c_order_of_non_contiguous_input():
    x = np.arange(24.0).reshape(2, 4, 3).transpose(0, 2, 1)  # (2, 3, 4), not contiguous
    y, vjp = Flatten().apply({}, x)
    assert y.tolist() == x.reshape(2, 12).tolist()
    assert vjp(y)[1].tolist() == x.tolist()


@pytest.mark.parametrize("layer", [Flatten(), Identity()])
def test_outputs_are_copies_even_when_a_view_would_do(layer):
    x = np.arange(6.0).reshape(2, 3)  # already flat: reshape would be a view
    y, vjp = layer.apply({}, x)
    _, dx = vjp(y)
    assert y.tolist() == x.tolist() and dx.tolist() == x.tolist()
    assert not np.shares_memory(y, x) and not np.shares_memory(dx, y)


def test_identity_by_hand():
    x = np.array([[1.5, -2.0]], np.float32)
    y, vjp = Identity().apply({}, x)
    assert y.dtype == np.float32 and y.tolist() == [[1.5, -2.0]]
    assert vjp(np.array([[3.0, 4.0]], np.float32))[1].tolist() == [[3.0, 4.0]]


def test_module_level_functions_are_what_the_layers_run():
    x = np.arange(24.0).reshape(2, 4, 3).transpose(0, 2, 1)
    for layer, forward, backward in [(Flatten(), reshape.flatten_forward, reshape.flatten_backward),
                                     (Identity(), reshape.identity_forward, reshape.identity_backward)]:
        y, vjp = layer.apply({}, x)
        y2, cache = forward(x)
        dx = backward(cache, y2 * 2)
        assert y.tolist() == y2.tolist() and vjp(y * 2)[1].tolist() == dx.tolist() == (x * 2).tolist()
        assert dx.strides == vjp(y * 2)[1].strides
