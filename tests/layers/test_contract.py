"""The protocol's input, cotangent and params errors, over every row of ``tests/registry.py``.

What ``fnn.testing.check_layer`` verifies (gradients, purity, dtypes, ``need_dx``, state,
memory layouts) runs over the same registry in ``tests/test_check_layer.py``; layer-specific
behaviour (hand-computed values, argument errors) lives in each layer's own test file.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from registry import REGISTRY, Case

from fnn import random, tree
from fnn.core import example_batch, is_index_array
from fnn.layers import Dense

KEY = random.key(0)
NAMES = sorted(REGISTRY)


def draw(data: st.DataObject, name: str) -> tuple[Case, object, object]:
    """A drawn row: the case, float32 params and its float32 (or index) batch."""
    case = data.draw(REGISTRY[name], label="case")
    params = case.layer.init(KEY, case.shape, np.float32)
    x = case.x if case.x is not None else example_batch(case.layer, case.shape, np.float32, case.batch_size, KEY)
    x = x if is_index_array(x) else tree.astype(x, np.float32)
    return case, params, x


def one_float_array(case: Case, x: object) -> bool:
    return isinstance(x, np.ndarray) and not is_index_array(x) and case.layer.inputs != "int"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.int64, np.uint8, bool, np.float16, object])
@settings(max_examples=3)
@given(data=st.data())
def test_inputs_of_another_dtype_raise_type_error(name, dtype, data):
    case, params, x = draw(data, name)
    if not one_float_array(case, x):
        return  # tuples and indices: their own files test them
    with pytest.raises(TypeError, match=f"input x has dtype {np.dtype(dtype)}; fnn layers take float32 or float64"):
        case.layer.apply(params, x.astype(dtype), **case.options)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=3)
@given(data=st.data())
def test_input_that_is_not_an_array_or_has_no_batch_axis_raises(name, data):
    case, params, x = draw(data, name)
    if not isinstance(x, np.ndarray):
        return
    with pytest.raises(TypeError, match="input x must be a numpy array, got list"):
        case.layer.apply(params, x.tolist(), **case.options)
    with pytest.raises(ValueError, match="must have a batch axis, got a 0-d array"):
        case.layer.apply(params, np.array(1, x.dtype), **case.options)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=3)
@given(data=st.data())
def test_wrong_cotangent_raises(name, data):
    case, params, x = draw(data, name)
    y, vjp = case.layer.apply(params, x, **case.options)
    if not isinstance(y, np.ndarray):
        return  # tuple outputs: tests/test_combinators.py
    for bad in [(y.shape[0] + 1, *y.shape[1:]), (*y.shape, 1)]:
        with pytest.raises(ValueError, match="\\.vjp: dy has shape .* but the output y has shape"):
            vjp(np.zeros(bad, np.float32))
    with pytest.raises(TypeError, match="\\.vjp: dy has dtype int64 but the output y has dtype float32"):
        vjp(np.zeros(y.shape, np.int64))
    with pytest.raises(TypeError, match="\\.vjp: dy must be a numpy array"):
        vjp(y.tolist())
    with pytest.raises(ValueError, match="dy has shape"):  # need_dx=False still checks dy
        vjp(np.zeros((*y.shape, 2), y.dtype), need_dx=False)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=3)
@given(data=st.data())
def test_params_from_another_architecture_raise(name, data):
    case, params, x = draw(data, name)
    with pytest.raises(ValueError, match="params"):
        case.layer.apply({**params, "extra": np.zeros(2, np.float32)}, x, **case.options)
    other = Dense(2).init(KEY, (1,))
    if params.keys() != other.keys():
        with pytest.raises(ValueError, match="params"):
            case.layer.apply(other, x, **case.options)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=3)
@given(data=st.data())
def test_layer_is_a_pair_with_a_kind_and_init_is_deterministic(name, data):
    case = data.draw(REGISTRY[name], label="case")
    layer = case.layer
    init, apply = layer
    assert init is layer.init and apply is layer.apply and repr(layer) == layer.kind
    assert layer.kind.startswith(name) or layer.kind == "serial"  # a row may wrap its layer in a serial
    a, b = init(KEY, case.shape), layer.init(KEY, case.shape)
    tree.check_same_structure(a, b, shapes=True)
    pairs = zip(tree.leaves(a), tree.leaves(b), strict=True)
    assert all(u.tobytes() == v.tobytes() and u.dtype == np.float32 for u, v in pairs)
