"""BatchNorm and LayerNorm: finite differences, purity, dtypes, running statistics against a
hand-written numpy reference, edge cases (empty batch, one value per channel, bad state), state
inside ``serial``, and (when torch is importable) a comparison with torch.nn.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fnn
from fnn import optim, random, serial, tree
from fnn.layers import BatchNorm, Dense, LayerNorm, ReLU, norm
from fnn.testing import check_vjp

KEY = random.key(0)


# ----------------------------------------------------------------------------------------------
# Drawing cases


@st.composite
def bn_case(draw, ndim=None, affine=None):
    """(BatchNorm layer, x of shape (N, C), (N, C, L) or (N, C, H, W), params, state), float64."""
    ndim = draw(st.sampled_from([2, 3, 4]), label="ndim") if ndim is None else ndim
    n = draw(st.integers(2, 4), label="N")
    c = draw(st.integers(1, 3), label="C")
    spatial = draw(st.lists(st.integers(1, 3), min_size=ndim - 2, max_size=ndim - 2), label="spatial")
    affine = draw(st.booleans(), label="affine") if affine is None else affine
    momentum = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]), label="momentum")
    layer = BatchNorm(momentum=momentum, affine=affine)
    x = draw(hnp.arrays(np.float64, (n, c, *spatial), elements=st.floats(-3, 3)), label="x")
    seed = draw(st.integers(0, 1000), label="seed")
    k1, k2, k3, k4 = random.split(random.key(seed), 4)
    # a little noise keeps the batch variance away from 0, where finite differences lose accuracy
    x = x + 0.3 * random.normal(k1, x.shape, np.float64)
    params = layer.init(KEY, x.shape[1:], np.float64)
    params = tree.map(lambda p: p + random.normal(k2, p.shape, np.float64), params)
    state = {"mean": random.normal(k3, (c,), np.float64),
             "var": random.uniform(k4, (c,), np.float64, low=0.5, high=2.0)}
    return layer, x, params, state


@st.composite
def ln_case(draw, ndim=None, affine=None):
    """(LayerNorm layer, x of shape (N, *lead, *normalized), params), float64."""
    ndim = draw(st.sampled_from([1, 2]), label="normalized_ndim") if ndim is None else ndim
    n = draw(st.integers(1, 3), label="N")
    lead = draw(st.lists(st.integers(1, 3), max_size=1), label="lead")
    norm = draw(st.lists(st.integers(2, 4), min_size=ndim, max_size=ndim), label="normalized")
    affine = draw(st.booleans(), label="affine") if affine is None else affine
    layer = LayerNorm(ndim, affine=affine)
    x = draw(hnp.arrays(np.float64, (n, *lead, *norm), elements=st.floats(-3, 3)), label="x")
    seed = draw(st.integers(0, 1000), label="seed")
    k1, k2 = random.split(random.key(seed))
    x = x + 0.3 * random.normal(k1, x.shape, np.float64)
    params = layer.init(KEY, x.shape[1:], np.float64)
    params = tree.map(lambda p: p + random.normal(k2, p.shape, np.float64), params)
    return layer, x, params


def param_paths(params):
    return {"['x']"} | {"['params']" + tree.path_str(p) for p, _ in tree.flatten(params)[0]}


# ----------------------------------------------------------------------------------------------
# Finite differences


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("ndim", [2, 3, 4], ids=["NC", "NCL", "NCHW"])
@settings(deadline=None, max_examples=8)
@given(data=st.data())
def test_batchnorm_vjp_matches_finite_differences(ndim, affine, train, data):
    layer, x, params, state = data.draw(bn_case(ndim, affine), label="case")
    errors = check_vjp(layer, params, x, train=train, state=state)
    assert set(errors) == param_paths(params)
    if not train:  # evaluation with the initial state (mean 0, var 1) is also a fixed affine map
        check_vjp(layer, params, x, state=fnn.INITIAL_STATE)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("ndim", [1, 2])
@settings(deadline=None)
@given(data=st.data(), train=st.booleans())
def test_layernorm_vjp_matches_finite_differences(ndim, affine, data, train):
    layer, x, params = data.draw(ln_case(ndim, affine), label="case")
    errors = check_vjp(layer, params, x, train=train)
    assert set(errors) == param_paths(params)


# ----------------------------------------------------------------------------------------------
# Purity and dtypes


def read_only(*arrays):
    for a in arrays:
        a.setflags(write=False)


def check_pure(layer, params, x, **options):
    """apply and vjp leave read-only inputs alone, are repeatable and return fresh arrays."""
    state = options.get("state")
    dy = random.normal(random.key(9), x.shape, x.dtype)
    inputs = [x, dy, *tree.leaves(params), *tree.leaves(state if isinstance(state, dict) else {})]
    copies = [a.copy() for a in inputs]
    read_only(*inputs)
    out1 = layer.apply(params, x, **options)
    out2 = layer.apply(params, x, **options)
    (y1, vjp1), (y2, vjp2) = out1, out2
    assert y1.tobytes() == y2.tobytes()
    (dp1, dx1), (dp2, dx2), (dp3, dx3) = vjp1(dy), vjp1(dy), vjp2(dy)
    for dp, dx in ((dp2, dx2), (dp3, dx3)):
        assert dx.tobytes() == dx1.tobytes()
        assert [g.tobytes() for g in tree.leaves(dp)] == [g.tobytes() for g in tree.leaves(dp1)]
    for s1, s2 in zip(tree.leaves(out1.state), tree.leaves(out2.state)):
        assert s1.tobytes() == s2.tobytes()
    for a, c in zip(inputs, copies):
        assert a.tobytes() == c.tobytes()
    for out in (y1, dx1, *tree.leaves(dp1), *tree.leaves(out1.state)):
        assert not any(np.shares_memory(out, a) for a in inputs)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@given(case=bn_case(), give_state=st.booleans())
def test_batchnorm_is_pure(train, case, give_state):
    layer, x, params, state = case
    check_pure(layer, params, x, train=train, state=state if give_state else None if train else fnn.INITIAL_STATE)


@given(case=ln_case(), train=st.booleans())
def test_layernorm_is_pure(case, train):
    layer, x, params = case
    check_pure(layer, params, x, train=train)


def test_batchnorm_eval_state_does_not_alias_the_state_passed_in():
    """Regression: in evaluation (and for an empty batch) the returned .state was the very
    arrays passed in as state=, so an in-place edit of one changed the other."""
    bn = BatchNorm()
    params = bn.init(KEY, (2,), np.float64)
    state = {"mean": np.array([1.0, 2.0]), "var": np.array([3.0, 4.0])}
    for x, train in ((np.ones((3, 2)), False), (np.ones((0, 2)), True)):
        out = bn.apply(params, x, train=train, state=state)
        assert out.state["mean"].tolist() == [1.0, 2.0] and out.state["var"].tolist() == [3.0, 4.0]
        for name in ("mean", "var"):
            assert not np.shares_memory(out.state[name], state[name])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=bn_case(), train=st.booleans(), state_dtype=st.sampled_from([None, np.float32, np.float64]))
def test_batchnorm_keeps_the_dtype(dtype, case, train, state_dtype):
    layer, x, params, state = case
    x, params = x.astype(dtype), tree.astype(params, dtype)
    state = (None if train else fnn.INITIAL_STATE) if state_dtype is None else tree.astype(state, state_dtype)
    out = layer.apply(params, x, train=train, state=state)
    y, vjp = out
    assert y.dtype == dtype and y.shape == x.shape
    assert all(s.dtype == dtype for s in tree.leaves(out.state))
    dparams, dx = vjp(np.ones(y.shape, dtype))
    assert dx.dtype == dtype
    tree.check_same_structure(params, dparams, shapes=True)
    assert all(g.dtype == dtype for g in tree.leaves(dparams))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=ln_case())
def test_layernorm_keeps_the_dtype(dtype, case):
    layer, x, params = case
    x, params = x.astype(dtype), tree.astype(params, dtype)
    out = layer.apply(params, x)
    y, vjp = out
    assert y.dtype == dtype and y.shape == x.shape and out.state == {}
    dparams, dx = vjp(np.ones(y.shape, dtype))
    assert dx.dtype == dtype
    tree.check_same_structure(params, dparams, shapes=True)
    assert all(g.dtype == dtype for g in tree.leaves(dparams))


# ----------------------------------------------------------------------------------------------
# BatchNorm: running statistics against a hand-written reference


def reference_batchnorm(x, gamma, beta, running_mean, running_var, momentum, eps, train):
    """Textbook batch normalization over every axis but 1, written out for the test."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    if train:
        n = x.size // x.shape[1]
        mean = x.sum(axis=axes) / n
        centred = x - mean.reshape(shape)
        biased = (centred ** 2).sum(axis=axes) / n
        unbiased = (centred ** 2).sum(axis=axes) / (n - 1)
        new_mean = (1 - momentum) * running_mean + momentum * mean
        new_var = (1 - momentum) * running_var + momentum * unbiased
        use_mean, use_var = mean, biased
    else:
        new_mean, new_var = running_mean, running_var
        use_mean, use_var = running_mean, running_var
    y = (x - use_mean.reshape(shape)) / np.sqrt(use_var.reshape(shape) + eps)
    y = y * gamma.reshape(shape) + beta.reshape(shape)
    return y, new_mean, new_var


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (3, 2, 4, 5)])
@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_batchnorm_running_statistics_follow_the_reference_over_several_steps(shape, momentum):
    bn = BatchNorm(momentum=momentum)
    c = shape[1]
    keys = random.split(random.key(1), 8)
    params = {"gamma": random.uniform(keys[0], (c,), np.float64, 0.5, 2.0),
              "beta": random.normal(keys[1], (c,), np.float64)}
    state = None
    ref_mean, ref_var = np.zeros(c), np.ones(c)
    for step in range(5):
        x = 2.0 * random.normal(keys[2 + step], shape, np.float64) + np.arange(c).reshape(c, *[1] * (len(shape) - 2))
        out = bn.apply(params, x, train=True, state=state)
        want_y, ref_mean, ref_var = reference_batchnorm(x, params["gamma"], params["beta"], ref_mean, ref_var,
                                                        momentum, 1e-5, train=True)
        np.testing.assert_allclose(out.y, want_y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out.state["mean"], ref_mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(out.state["var"], ref_var, rtol=1e-12, atol=1e-14)
        state = out.state
    # evaluation uses the running statistics and leaves them unchanged
    x = random.normal(keys[7], shape, np.float64)
    out = bn.apply(params, x, state=state)
    want_y, _, _ = reference_batchnorm(x, params["gamma"], params["beta"], ref_mean, ref_var, momentum, 1e-5,
                                       train=False)
    np.testing.assert_allclose(out.y, want_y, rtol=1e-12, atol=1e-12)
    assert out.state["mean"].tobytes() == state["mean"].tobytes()
    assert out.state["var"].tobytes() == state["var"].tobytes()


def test_batchnorm_hand_computed_step():
    bn = BatchNorm()  # momentum 0.1, eps 1e-5
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    out = bn.apply(bn.init(KEY, (2,), np.float64), x, train=True)
    # batch means (2, 4); biased variances (1, 4); unbiased (2, 8)
    np.testing.assert_allclose(out.y, [[-1 / np.sqrt(1 + 1e-5), -2 / np.sqrt(4 + 1e-5)],
                                       [1 / np.sqrt(1 + 1e-5), 2 / np.sqrt(4 + 1e-5)]], rtol=1e-15)
    np.testing.assert_allclose(out.state["mean"], [0.2, 0.4], rtol=1e-15)
    np.testing.assert_allclose(out.state["var"], [0.9 + 0.2, 0.9 + 0.8], rtol=1e-15)


def test_batchnorm_initial_state_means_mean_zero_and_variance_one():
    bn = BatchNorm(eps=1e-3)
    x = random.normal(KEY, (4, 3, 2), np.float64)
    params = {"gamma": np.array([1.0, 2.0, 3.0]), "beta": np.array([0.0, -1.0, 1.0])}
    out = bn.apply(params, x, state=fnn.INITIAL_STATE)
    want = x / np.sqrt(1 + 1e-3) * params["gamma"].reshape(3, 1) + params["beta"].reshape(3, 1)
    np.testing.assert_allclose(out.y, want, rtol=1e-14)
    assert out.state["mean"].tolist() == [0.0] * 3 and out.state["var"].tolist() == [1.0] * 3
    explicit = bn.apply(params, x, state={"mean": np.zeros(3), "var": np.ones(3)})
    assert explicit.y.tobytes() == out.y.tobytes()


def test_batchnorm_evaluation_without_state_is_an_error_not_mean_zero_variance_one():
    """Regression: evaluation with state=None silently used mean 0 and variance 1 (11 points of
    accuracy lost on digits, no warning). Training with state=None still starts from them."""
    bn = BatchNorm()
    params = bn.init(KEY, (3,), np.float64)
    x = random.normal(KEY, (4, 3), np.float64)
    with pytest.raises(ValueError, match=r"BatchNorm\(\): evaluation \(train=False\) needs the running statistics "
                                         r"training returned: pass state=out.state .* or state=fnn.INITIAL_STATE"):
        bn.apply(params, x)
    net = serial(Dense(3), ("bn", BatchNorm()))
    net_params = net.init(KEY, (3,))
    with pytest.raises(ValueError, match=r"serial layer 1 'bn' \(BatchNorm\(\)\): BatchNorm\(\): evaluation"):
        net.apply(net_params, x.astype(np.float32), state={})
    assert bn.apply(params, x, train=True).state["mean"].shape == (3,)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4), (0, 3, 2, 2), (0, 3, 0, 2)])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_empty_batch_gives_empty_output_and_unchanged_statistics(shape, train):
    bn = BatchNorm()
    params = bn.init(KEY, shape[1:], np.float64)
    state = {"mean": np.array([1.0, 2.0, 3.0]), "var": np.array([0.5, 1.0, 2.0])}
    for given_state in (state, None if train else fnn.INITIAL_STATE):
        out = bn.apply(params, np.zeros(shape), train=train, state=given_state)
        assert out.y.shape == shape
        want = given_state if isinstance(given_state, dict) else {"mean": np.zeros(3), "var": np.ones(3)}
        assert not any(np.isnan(s).any() for s in tree.leaves(out.state))
        assert out.state["mean"].tolist() == want["mean"].tolist()
        assert out.state["var"].tolist() == want["var"].tolist()
        dparams, dx = out.vjp(np.zeros(shape))
        assert dx.shape == shape
        assert all(g.tolist() == [0.0] * 3 for g in tree.leaves(dparams))


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_batchnorm_training_with_one_value_per_channel_raises(shape):
    bn = BatchNorm()
    params = bn.init(KEY, shape[1:])
    with pytest.raises(ValueError, match=r"BatchNorm\(\): training needs more than one value per channel"):
        bn.apply(params, np.ones(shape, np.float32), train=True)
    y, _ = bn.apply(params, np.ones(shape, np.float32), state=fnn.INITIAL_STATE)  # evaluation is fine
    assert y.shape == shape


@pytest.mark.parametrize("shape", [(1, 3, 2), (1, 3, 2, 1), (2, 3)])
def test_batchnorm_training_with_more_than_one_value_per_channel_works(shape):
    bn = BatchNorm()
    x = random.normal(KEY, shape, np.float64)
    out = bn.apply(bn.init(KEY, shape[1:], np.float64), x, train=True)
    assert np.isfinite(out.y).all() and np.isfinite(out.state["var"]).all()


@pytest.mark.parametrize("state, match", [
    ({"mean": np.zeros(4), "var": np.ones(3)}, r"state\['mean'\] must have shape \(3,\)"),
    ({"mean": np.zeros(3), "var": np.ones((3, 1))}, r"state\['var'\] must have shape \(3,\)"),
    ({"mean": np.zeros(3)}, r"state must be \{'mean': \(3,\), 'var': \(3,\)\} or None"),
    ({"mean": np.zeros(3), "var": np.ones(3), "count": np.ones(1)}, "state must be"),
    ({"mean": [0.0] * 3, "var": np.ones(3)}, r"state\['mean'\] must have shape"),
])
def test_batchnorm_wrong_state_raises(state, match):
    bn = BatchNorm()
    x = np.ones((2, 3, 2), np.float32)
    with pytest.raises(ValueError, match=match):
        bn.apply(bn.init(KEY, (3, 2)), x, train=True, state=state)


def test_batchnorm_state_that_is_not_a_dict_raises():
    bn = BatchNorm()
    with pytest.raises(ValueError, match="state must be"):
        bn.apply(bn.init(KEY, (3,)), np.ones((2, 3), np.float32), state=(np.zeros(3), np.ones(3)))


@pytest.mark.parametrize("kwargs, match", [
    ({"momentum": -0.1}, r"^BatchNorm\(momentum=-0.1, .*\): momentum must be in \[0, 1\], got -0.1"),
    ({"momentum": 1.5}, r"momentum must be in \[0, 1\], got 1.5"),
    ({"momentum": float("nan")}, "momentum must be a finite number, got nan"),
    ({"eps": 0.0}, r"^BatchNorm\(momentum=0.1, eps=0.0, .*\): eps must be in \(0, inf\], got 0.0"),
    ({"eps": -1e-5}, "eps must be in"), ({"eps": float("nan")}, "eps must be a finite number"),
    ({"eps": float("inf")}, "eps must be a finite number"),
])
def test_batchnorm_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchNorm(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"momentum": "0.1"}, r"^BatchNorm\(momentum='0.1', eps=1e-05, affine=True, sync=True\): momentum must be a "
                          r"number, got str '0.1'"),
    ({"momentum": True}, r"momentum must be a number, got bool True"),
    ({"eps": "1e-5"}, r"eps must be a number, got str"),
    ({"eps": np.bool_(True)}, r"eps must be a number, got bool"),
    ({"affine": "no"}, r"^BatchNorm\(.*affine='no'.*\): affine must be True or False, got str 'no'"),
    ({"affine": 1}, r"^BatchNorm\(.*affine=1, .*\): affine must be True or False, got int 1"),
    ({"sync": "False"}, r"sync must be True or False, got str 'False'"),
])
def test_batchnorm_arguments_of_the_wrong_kind_raise_type_error(kwargs, match):
    """Strings and bools are not numbers, and a string or an int is not a bool (a string is always true)."""
    with pytest.raises(TypeError, match=match):
        BatchNorm(**kwargs)


def test_batchnorm_takes_numpy_scalars():
    bn = BatchNorm(momentum=np.float64(0.2), eps=np.float32(1e-3), affine=np.bool_(False), sync=np.bool_(True))
    assert bn.kind == f"BatchNorm(momentum=0.2, eps={float(np.float32(1e-3))!r}, affine=False, sync=True)"
    assert BatchNorm(momentum=np.float64(0.1), eps=np.float64(1e-5)).kind == "BatchNorm()"
    out = bn.apply({}, np.array([[1.0], [3.0]]), train=True)
    np.testing.assert_allclose(out.state["mean"], [0.4])  # 0.8 * 0 + 0.2 * 2
    assert BatchNorm(momentum=np.int64(1)).kind == "BatchNorm(momentum=1.0, eps=1e-05, affine=True, sync=True)"


def test_module_level_batchnorm_functions_are_what_the_layer_runs():
    bn = BatchNorm(momentum=0.5)
    x = random.normal(KEY, (4, 3, 2), np.float64)
    params = {"gamma": np.arange(1.0, 4.0), "beta": np.arange(3.0)}
    state = {"mean": np.zeros(3), "var": np.ones(3)}
    out = bn.apply(params, x, train=True, state=state)
    y, new_state, cache = norm.batch_norm_forward(x, params["gamma"], params["beta"], state, 0.5, 1e-5, True)
    np.testing.assert_array_equal(out.y, y)
    assert tree.allclose(out.state, new_state, rtol=0, atol=0)
    dy = random.normal(random.key(1), x.shape, np.float64)
    assert tree.allclose(out.vjp(dy), norm.batch_norm_backward(cache, dy, True), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(), (0,), (2, 3, 4, 5)])
def test_batchnorm_bad_init_shape_raises(shape):
    with pytest.raises(ValueError, match=r"init shape must be \(C,\), \(C, L\) or \(C, H, W\)"):
        BatchNorm().init(KEY, shape)


def test_batchnorm_bad_input_rank_raises():
    bn = BatchNorm()
    with pytest.raises(ValueError, match=r"input must be \(N, C\), \(N, C, L\) or \(N, C, H, W\)"):
        bn.apply(bn.init(KEY, (3,)), np.ones((2,), np.float32))


def test_batchnorm_without_affine_has_no_params():
    bn = BatchNorm(affine=False)
    assert bn.init(KEY, (3, 4)) == {}
    x = random.normal(KEY, (4, 3, 4), np.float64)
    out = bn.apply({}, x, train=True)
    np.testing.assert_allclose(out.y.mean(axis=(0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(out.y.var(axis=(0, 2)), x.var(axis=(0, 2)) / (x.var(axis=(0, 2)) + 1e-5), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# BatchNorm inside serial; statistics never reach the optimizer


def test_batchnorm_state_inside_serial_is_collected_and_fed_back():
    net = serial(Dense(4), ("bn", BatchNorm()), ReLU(), Dense(2), BatchNorm(momentum=0.5))
    params = net.init(KEY, (3,), np.float64)
    assert set(params["bn"]) == {"gamma", "beta"} and set(params["batch_norm_0"]) == {"gamma", "beta"}
    x = random.normal(random.key(1), (8, 3), np.float64)

    out = net.apply(params, x, train=True)
    assert set(out.state) == {"bn", "batch_norm_0"}
    assert set(out.state["bn"]) == {"mean", "var"} and out.state["bn"]["mean"].shape == (4,)
    assert out.state["batch_norm_0"]["mean"].shape == (2,)

    # the layer on its own, fed the same input and state, gives the same statistics
    h, _ = serial(Dense(4)).apply({"dense_0": params["dense_0"]}, x)
    alone = BatchNorm().apply(params["bn"], h, train=True)
    assert alone.state["mean"].tobytes() == out.state["bn"]["mean"].tobytes()

    # feeding the state back continues the running averages
    out2 = net.apply(params, x, train=True, state=out.state)
    alone2 = BatchNorm().apply(params["bn"], h, train=True, state=alone.state)
    np.testing.assert_array_equal(out2.state["bn"]["mean"], alone2.state["mean"])
    np.testing.assert_array_equal(out2.state["bn"]["var"], alone2.state["var"])
    assert not np.array_equal(out2.state["bn"]["var"], out.state["bn"]["var"])

    # evaluation with the state uses it; with INITIAL_STATE, the initial statistics
    y_eval, _ = net.apply(params, x, state=out2.state)
    y_init, _ = net.apply(params, x, state=fnn.INITIAL_STATE)
    assert not np.allclose(y_eval, y_init)
    with pytest.raises(ValueError, match="state"):
        net.apply(params, x, state={"nope": out.state["bn"]})


def test_optimizer_never_sees_batchnorm_statistics():
    net = serial(Dense(4), BatchNorm(), ReLU(), Dense(1))
    params = net.init(KEY, (3,), np.float64)
    paths = [tree.path_str(p) for p, _ in tree.flatten(params)[0]]
    assert not any("mean" in p or "var" in p for p in paths)
    opt = optim.adamw(1e-2, weight_decay=0.5)
    opt_state = opt.init(params)
    assert set(opt_state) == {"step", "exp_avg", "exp_avg_sq"}
    x = random.normal(random.key(2), (16, 3), np.float64)
    target = x.sum(axis=1, keepdims=True)
    state = None
    for _ in range(5):
        out = net.apply(params, x, train=True, state=state)
        y, vjp = out
        grads, _ = vjp(2 * (y - target) / len(y))
        params, opt_state = opt.update(params, grads, opt_state)
        state = out.state
    for buffer in ("exp_avg", "exp_avg_sq"):
        tree.check_same_structure(params, opt_state[buffer], shapes=True)  # no statistics in the buffers
    assert set(state) == {"batch_norm_0"}  # the statistics come back as layer state, not as params
    assert np.all(state["batch_norm_0"]["var"] > 0)


# ----------------------------------------------------------------------------------------------
# LayerNorm


def test_layernorm_hand_computed():
    ln = LayerNorm()
    x = np.array([[1.0, 3.0], [0.0, -4.0]])
    params = {"gamma": np.array([2.0, 1.0]), "beta": np.array([0.5, 0.0])}
    y, vjp = ln.apply(params, x)
    s = 1 / np.sqrt(1 + 1e-5)
    t = 1 / np.sqrt(4 + 1e-5)
    np.testing.assert_allclose(y, [[-2 * s + 0.5, s], [2 * 2 * t + 0.5, -2 * t]], rtol=1e-15)
    dparams, _ = vjp(np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(dparams["gamma"], [-s, -2 * t], rtol=1e-15)  # sum over the batch of dy * xhat
    assert dparams["beta"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("ndim, shape", [(1, (3, 5)), (1, (2, 3, 4)), (2, (2, 3, 4)), (2, (2, 2, 3, 4))])
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_normalizes_the_last_axes(ndim, shape, affine):
    ln = LayerNorm(ndim, affine=affine)
    params = ln.init(KEY, shape[1:], np.float64)
    if affine:
        assert params["gamma"].shape == shape[len(shape) - ndim:]
    else:
        assert params == {}
    x = 3 * random.normal(KEY, shape, np.float64) + 1
    y, _ = ln.apply(params, x)
    axes = tuple(range(len(shape) - ndim, len(shape)))
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=axes), x.var(axis=axes) / (x.var(axis=axes) + 1e-5), rtol=1e-12)
    y_train, _ = ln.apply(params, x, train=True)  # no running statistics: train and eval agree
    assert y_train.tobytes() == y.tobytes()


def test_layernorm_empty_batch():
    ln = LayerNorm(2)
    params = ln.init(KEY, (2, 3), np.float64)
    out = ln.apply(params, np.zeros((0, 2, 3)))
    assert out.y.shape == (0, 2, 3)
    dparams, dx = out.vjp(np.zeros((0, 2, 3)))
    assert dx.shape == (0, 2, 3) and all((g == 0).all() for g in tree.leaves(dparams))


@pytest.mark.parametrize("args, error, match", [
    ((0,), ValueError, r"^LayerNorm\(0\): normalized_ndim must be >= 1, got 0"),
    ((True,), TypeError, r"^LayerNorm\(True\): normalized_ndim must be an int, got bool True"),
    ((1.0,), TypeError, r"^LayerNorm\(1.0\): normalized_ndim must be an int, got float 1.0"),
    (("1",), TypeError, r"^LayerNorm\('1'\): normalized_ndim must be an int, got str '1'"),
    ((1, 0.0), ValueError, r"^LayerNorm\(1, eps=0.0, affine=True\): eps must be in \(0, inf\], got 0.0"),
    ((1, float("nan")), ValueError, "eps must be a finite number"),
    ((1, "1e-5"), TypeError, "eps must be a number, got str '1e-5'"),
    ((1, True), TypeError, "eps must be a number, got bool True"),
    ((1, 1e-5, "yes"), TypeError, r"^LayerNorm\(1, eps=1e-05, affine='yes'\): affine must be True or False, got str"),
])
def test_layernorm_bad_arguments_raise(args, error, match):
    with pytest.raises(error, match=match):
        LayerNorm(*args)


def test_layernorm_takes_numpy_scalars():
    ln = LayerNorm(np.int64(2), eps=np.float64(1e-3), affine=np.bool_(False))
    assert ln.kind == "LayerNorm(2, eps=0.001, affine=False)"
    assert LayerNorm(np.int32(1), np.float64(1e-5), np.bool_(True)).kind == "LayerNorm(1)"
    y, _ = ln.apply({}, np.array([[[1.0, 3.0], [1.0, 3.0]]]))
    np.testing.assert_allclose(y, [[[-1.0, 1.0], [-1.0, 1.0]]], rtol=1e-3)


def test_module_level_layernorm_functions_are_what_the_layer_runs():
    ln = LayerNorm(2)
    x = random.normal(KEY, (3, 2, 4), np.float64)
    params = {"gamma": np.full((2, 4), 2.0), "beta": np.ones((2, 4))}
    y, vjp = ln.apply(params, x)
    y2, cache = norm.layer_norm_forward(x, params["gamma"], params["beta"], 2, 1e-5)
    np.testing.assert_array_equal(y, y2)
    dy = random.normal(random.key(1), x.shape, np.float64)
    assert tree.allclose(vjp(dy), norm.layer_norm_backward(cache, dy, True), rtol=0, atol=0)


def test_layernorm_bad_shapes_raise():
    with pytest.raises(ValueError, match="has fewer than 2 axes"):
        LayerNorm(2).init(KEY, (3,))
    ln = LayerNorm(2)
    with pytest.raises(ValueError, match="input must have a batch axis and 2 normalized axes"):
        ln.apply({"gamma": np.ones(3, np.float32), "beta": np.zeros(3, np.float32)}, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"params\['beta'\] has shape"):
        LayerNorm().apply({"gamma": np.ones(3, np.float32), "beta": np.zeros(4, np.float32)},
                          np.ones((2, 3), np.float32))


# ----------------------------------------------------------------------------------------------
# Comparison with PyTorch


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 2, 4, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_matches_torch_over_three_steps(shape, affine):
    torch = pytest.importorskip("torch")
    c = shape[1]
    momentum = 0.2
    module = (torch.nn.BatchNorm1d if len(shape) < 4 else torch.nn.BatchNorm2d)(
        c, momentum=momentum, affine=affine, dtype=torch.float64)
    bn = BatchNorm(momentum=momentum, affine=affine)
    params = bn.init(KEY, shape[1:], np.float64)
    if affine:
        params = {"gamma": random.uniform(random.key(3), (c,), np.float64, 0.5, 2.0),
                  "beta": random.normal(random.key(4), (c,), np.float64)}
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(params["gamma"]))
            module.bias.copy_(torch.from_numpy(params["beta"]))
    state = None
    module.train()
    for step in range(3):
        k1, k2 = random.split(random.fold_in(KEY, step))
        x = 1.5 * random.normal(k1, shape, np.float64) + step
        dy = random.normal(k2, shape, np.float64)
        out = bn.apply(params, x, train=True, state=state)
        state = out.state
        xt = torch.from_numpy(x).requires_grad_(True)
        module.zero_grad()
        yt = module(xt)
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(out.y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state["mean"], module.running_mean.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state["var"], module.running_var.numpy(), rtol=1e-12, atol=1e-14)
        dparams, dx = out.vjp(dy)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
        if affine:
            np.testing.assert_allclose(dparams["gamma"], module.weight.grad.numpy(), rtol=1e-10, atol=1e-11)
            np.testing.assert_allclose(dparams["beta"], module.bias.grad.numpy(), rtol=1e-10, atol=1e-11)
    module.eval()
    x = random.normal(random.key(5), shape, np.float64)
    y, _ = bn.apply(params, x, state=state)
    with torch.no_grad():
        np.testing.assert_allclose(y, module(torch.from_numpy(x)).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ndim, shape", [(1, (3, 5)), (1, (2, 3, 4)), (2, (2, 3, 4))])
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_matches_torch(ndim, shape, affine):
    torch = pytest.importorskip("torch")
    norm_shape = shape[len(shape) - ndim:]
    module = torch.nn.LayerNorm(norm_shape, eps=1e-5, elementwise_affine=affine, dtype=torch.float64)
    ln = LayerNorm(ndim, affine=affine)
    params = ln.init(KEY, shape[1:], np.float64)
    if affine:
        params = {"gamma": random.uniform(random.key(3), norm_shape, np.float64, 0.5, 2.0),
                  "beta": random.normal(random.key(4), norm_shape, np.float64)}
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(params["gamma"]))
            module.bias.copy_(torch.from_numpy(params["beta"]))
    x = 2 * random.normal(random.key(6), shape, np.float64) + 1
    dy = random.normal(random.key(7), shape, np.float64)
    y, vjp = ln.apply(params, x)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dparams, dx = vjp(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    if affine:
        np.testing.assert_allclose(dparams["gamma"], module.weight.grad.numpy(), rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(dparams["beta"], module.bias.grad.numpy(), rtol=1e-10, atol=1e-11)
