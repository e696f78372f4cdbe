"""The layer protocol, checked over every public layer.

``CASES`` has one row per layer constructor: a hypothesis strategy drawing ``(layer,
example_shape)`` with valid constructor arguments. Every test below runs over every row; a layer
of a module in ``COVERED_MODULES`` without a row fails ``test_every_public_layer_has_a_row``. Layer-specific
behaviour (hand-computed values, argument errors) lives in the module's own test file.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fnn.layers
from fnn import random, tree
from fnn.layers import (
    Dense,
    Flatten,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    activations,
    dense,
    reshape,
)
from fnn.testing import check_vjp

KEY = random.key(0)


def feature_shape(min_dims, max_dims, max_side=3):
    return st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


@st.composite
def dense_case(draw):
    shape = (*draw(feature_shape(0, 2)), draw(st.integers(1, 4)))  # extra axes, then in_features
    return Dense(draw(st.integers(1, 4)), bias=draw(st.booleans())), shape


def softmax_case(constructor):
    @st.composite
    def case(draw):
        shape = draw(feature_shape(1, 3))
        axes = [*range(1, len(shape) + 1), *range(-len(shape), 0)]
        axis = draw(st.one_of(st.none(), st.sampled_from(axes)))
        return (constructor() if axis is None else constructor(axis=axis)), shape

    return case()


def pointwise(make, min_dims=0):
    return st.tuples(make, feature_shape(min_dims, 3))


CASES = {
    "Dense": dense_case(),
    "Flatten": pointwise(st.builds(Flatten), min_dims=1),
    "Identity": pointwise(st.builds(Identity)),
    "ReLU": pointwise(st.builds(ReLU)),
    "LeakyReLU": pointwise(st.one_of(st.builds(LeakyReLU), st.builds(LeakyReLU, st.floats(0.0, 1.0)))),
    "Sigmoid": pointwise(st.builds(Sigmoid)),
    "Tanh": pointwise(st.builds(Tanh)),
    "Softmax": softmax_case(Softmax),
    "LogSoftmax": softmax_case(LogSoftmax),
}
NAMES = sorted(CASES)


# The modules whose layers this table covers. Add a module here together with rows for its layers;
# the aim is every module behind fnn.layers.__all__.
COVERED_MODULES = [dense, activations, reshape]


def test_every_public_layer_has_a_row():
    names = [n for m in COVERED_MODULES for n in m.__all__]
    assert set(names) <= set(fnn.layers.__all__)
    missing = sorted(set(names) - set(CASES))
    assert not missing, f"add a row to CASES in {__file__} for {missing}"


def away_from_kinks(x):
    """Push entries to |x| >= 0.05 so no finite-difference step crosses ReLU's or LeakyReLU's kink at 0."""
    return np.where(x < 0, np.minimum(x, -0.05), np.maximum(x, 0.05))


def draw_case(data, name, dtype=np.float64):
    """Draw a layer of row ``name``, its params (perturbed away from init) and a batch ``x`` with bounded values."""
    layer, shape = data.draw(CASES[name], label="layer, shape")
    batch = data.draw(st.integers(1, 3), label="batch")
    x = data.draw(hnp.arrays(np.float64, (batch, *shape), elements=st.floats(-3, 3)), label="x")
    params = layer.init(random.key(data.draw(st.integers(0, 1000), label="seed")), shape, dtype)
    params = tree.map(lambda p: p + random.normal(random.key(7), p.shape, dtype), params)
    return layer, shape, params, away_from_kinks(x).astype(dtype)


def cotangent(y, seed=3):
    return random.normal(random.key(seed), y.shape, y.dtype)


@pytest.mark.parametrize("name", NAMES)
@settings(deadline=None)
@given(data=st.data())
def test_vjp_matches_finite_differences(name, data):
    layer, _, params, x = draw_case(data, name)
    errors = check_vjp(layer, params, x, check_key=random.key(data.draw(st.integers(0, 1000), label="dy seed")))
    expected = {"['x']"} | {"['params']" + tree.path_str(p) for p, _ in tree.flatten(params)[0]}
    assert set(errors) == expected


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_apply_and_vjp_are_pure(name, data):
    layer, _, params, x = draw_case(data, name)
    dy = cotangent(layer.apply(params, x)[0])
    inputs = [x, dy, *tree.leaves(params)]
    copies = [a.copy() for a in inputs]
    for a in inputs:
        a.setflags(write=False)

    y, vjp = layer.apply(params, x)
    y2, vjp2 = layer.apply(params, x)
    (dp1, dx1), (dp2, dx2), (dp3, dx3) = vjp(dy), vjp(dy), vjp2(dy)
    assert y.tobytes() == y2.tobytes()
    for dp, dx in ((dp2, dx2), (dp3, dx3)):
        tree.check_same_structure(dp1, dp, shapes=True)
        assert dx.tobytes() == dx1.tobytes()
        assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(dp1), tree.leaves(dp), strict=True))
    for a, c in zip(inputs, copies, strict=True):
        assert a.tobytes() == c.tobytes()
    for out in (y, dx1, *tree.leaves(dp1)):
        assert not any(np.shares_memory(out, a) for a in inputs)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_dtype_is_preserved(name, dtype, data):
    layer, _, params, x = draw_case(data, name, dtype)
    assert all(p.dtype == dtype for p in tree.leaves(params))
    y, vjp = layer.apply(params, x)
    assert y.dtype == dtype
    tree.check_same_structure(params, vjp(cotangent(y))[0], shapes=True)
    dparams, dx = vjp(cotangent(y))
    assert dx.dtype == dtype and dx.shape == x.shape
    assert all(g.dtype == dtype for g in tree.leaves(dparams))
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(TypeError, match=f"dy has dtype {np.dtype(other)} but the output y has dtype {np.dtype(dtype)}"):
        vjp(cotangent(y).astype(other))  # nothing is cast silently


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool, np.float16, object])
@given(data=st.data())
@settings(max_examples=3)
def test_non_float_input_raises_type_error(name, dtype, data):
    layer, _, params, x = draw_case(data, name, np.float32)
    with pytest.raises(TypeError, match=f"input x has dtype {np.dtype(dtype)}; fnn layers take float32 or float64"):
        layer.apply(params, x.astype(dtype))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
@settings(max_examples=3)
def test_input_that_is_not_an_array_or_has_no_batch_axis_raises(name, data):
    layer, _, params, x = draw_case(data, name, np.float32)
    with pytest.raises(TypeError, match="input x must be a numpy array, got list"):
        layer.apply(params, x.tolist())
    with pytest.raises(ValueError, match="must have a batch axis, got a 0-d array"):
        layer.apply(params, np.array(1.0, np.float32))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
@settings(max_examples=5)
def test_wrong_cotangent_raises(name, data):
    layer, _, params, x = draw_case(data, name, np.float32)
    y, vjp = layer.apply(params, x)
    bad_shapes = [(y.shape[0] + 1, *y.shape[1:]), (*y.shape, 1), y.shape[:-1]]
    for bad in bad_shapes:
        with pytest.raises(ValueError, match="\\.vjp: dy has shape .* but the output y has shape"):
            vjp(np.zeros(bad, np.float32))
    with pytest.raises(TypeError, match="\\.vjp: dy has dtype int64"):
        vjp(np.zeros(y.shape, np.int64))
    with pytest.raises(TypeError, match="\\.vjp: dy must be a numpy array"):
        vjp(y.tolist())


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
@settings(max_examples=3)
def test_params_from_another_architecture_raise(name, data):
    layer, _, params, x = draw_case(data, name, np.float32)
    with pytest.raises(ValueError, match="params"):
        layer.apply({**params, "extra": np.zeros(2, np.float32)}, x)
    other = Dense(2).init(KEY, (1,))
    if params.keys() != other.keys():
        with pytest.raises(ValueError, match="params"):
            layer.apply(other, x)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
@settings(max_examples=3)
def test_layer_is_a_pair_with_a_kind_and_init_is_deterministic(name, data):
    layer, shape = data.draw(CASES[name])
    init, apply = layer
    assert init is layer.init and apply is layer.apply
    assert layer.kind.startswith(name + "(") and repr(layer) == layer.kind
    a, b = init(KEY, shape), layer.init(KEY, list(shape))
    tree.check_same_structure(a, b, shapes=True)
    pairs = zip(tree.leaves(a), tree.leaves(b), strict=True)
    assert all(u.tobytes() == v.tobytes() and u.dtype == np.float32 for u, v in pairs)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
@settings(max_examples=5)
def test_vjp_without_dx_gives_the_same_dparams_and_no_dx(name, data):
    layer, _, params, x = draw_case(data, name)
    y, vjp = layer.apply(params, x)
    dy = cotangent(y)
    full, _ = vjp(dy)
    dparams, dx = vjp(dy, need_dx=False)
    assert dx is None
    tree.check_same_structure(full, dparams, shapes=True)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(full), tree.leaves(dparams), strict=True))
    with pytest.raises(ValueError, match="dy has shape"):  # dy is still checked
        vjp(np.zeros((*y.shape, 2), y.dtype), need_dx=False)
