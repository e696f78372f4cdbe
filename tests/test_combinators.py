"""fnn.combinators: tuples through serial, gradient accumulation, options at any depth, and error cases.

The registry (tests/registry.py) already runs check_layer on every combinator; these tests
check hand-computed results, compositions and the errors a user can run into.
"""

import numpy as np
import pytest

import fnn
from fnn import random, tree
from fnn.combinators import elementwise, fan_in_concat, fan_in_sum, fan_out, parallel, residual, serial
from fnn.core import NonFiniteError
from fnn.layers import BatchNorm, Dense, Dropout, Flatten, Identity, MaxPool2D, Tanh
from fnn.testing import check_vjp

KEY = random.key(0)


def normal(seed, shape):
    return random.normal(random.key(seed), shape, np.float64)


# -- tuples and gradient accumulation -------------------------------------------------------------

def test_fan_out_parallel_fan_in_sum_equals_the_hand_written_sum_of_branches():
    net = serial(fan_out(3), parallel(Dense(4), Tanh(), Identity()), fan_in_sum())
    params = net.init(KEY, (4,), np.float64)
    w, b = params["parallel_0"]["dense_0"]["w"], params["parallel_0"]["dense_0"]["b"]
    x, dy = normal(1, (5, 4)), normal(2, (5, 4))
    y, vjp = net.apply(params, x)
    np.testing.assert_allclose(y, x @ w + b + np.tanh(x) + x, rtol=1e-14)
    grads, dx = vjp(dy)
    # dx is the sum of the three branches' dx
    np.testing.assert_allclose(dx, dy @ w.T + dy * (1 - np.tanh(x) ** 2) + dy, rtol=1e-13)
    np.testing.assert_allclose(grads["parallel_0"]["dense_0"]["w"], x.T @ dy, rtol=1e-13)
    np.testing.assert_allclose(grads["parallel_0"]["dense_0"]["b"], dy.sum(0), rtol=1e-13)
    assert grads["fan_out_0"] == {} and grads["fan_in_sum_0"] == {}
    assert grads["parallel_0"]["tanh_0"] == {} and grads["parallel_0"]["identity_0"] == {}
    check_vjp(net, params, x)


def test_shared_layer_applied_twice_accumulates_its_gradient():
    # The same Dense params used by two branches: the gradient is the sum of both uses.
    dense = Dense(3)
    params = dense.init(KEY, (3,), np.float64)
    net = serial(fan_out(2), parallel(("a", dense), ("b", serial(Tanh(), ("d", dense)))), fan_in_sum())
    p = {"fan_out_0": {}, "parallel_0": {"a": params, "b": {"tanh_0": {}, "d": params}}, "fan_in_sum_0": {}}
    x, dy = normal(3, (4, 3)), normal(4, (4, 3))
    grads, _ = net.apply(p, x)[1](dy)
    total = tree.add(grads["parallel_0"]["a"], grads["parallel_0"]["b"]["d"])
    np.testing.assert_allclose(total["w"], (x + np.tanh(x)).T @ dy, rtol=1e-13)
    np.testing.assert_allclose(total["b"], 2 * dy.sum(0), rtol=1e-13)


def test_fan_out_copies_are_independent_and_its_vjp_sums():
    x = normal(5, (2, 3))
    y, vjp = fan_out(3).apply({}, x)
    assert len(y) == 3 and all(np.array_equal(v, x) for v in y)
    assert not any(np.shares_memory(a, b) for a in y for b in (x, *[c for c in y if c is not a]))
    _, dx = vjp((x, 2 * x, 3 * x))
    np.testing.assert_allclose(dx, 6 * x, rtol=1e-15)


def test_tuple_inputs_and_tuple_outputs_pass_finite_differences():
    # tuple in -> tuple out -> tuple out, through serial
    net = serial(parallel(Dense(3), serial(Flatten(), Dense(2))), parallel(Tanh(), fan_out(2)))
    params = net.init(KEY, ((4,), (2, 3)), np.float64)
    x = (normal(6, (3, 4)), normal(7, (3, 2, 3)))
    y, vjp = net.apply(params, x)
    assert isinstance(y, tuple) and y[0].shape == (3, 3) and isinstance(y[1], tuple) and len(y[1]) == 2
    grads, dx = vjp(tree.map(np.ones_like, y))
    assert isinstance(dx, tuple) and dx[0].shape == (3, 4) and dx[1].shape == (3, 2, 3)
    errors = check_vjp(net, params, x)
    assert "['x'][0]" in errors and "['x'][1]" in errors


def test_parallel_branches_are_independent():
    net = parallel(Dense(2), Tanh())
    params = net.init(KEY, ((3,), (4,)), np.float64)
    x = (normal(8, (2, 3)), normal(9, (2, 4)))
    (y0, y1), vjp = net.apply(params, x)
    np.testing.assert_allclose(y0, Dense(2).apply(params["dense_0"], x[0])[0], rtol=0)
    np.testing.assert_allclose(y1, np.tanh(x[1]), rtol=0)
    d0, d1 = normal(10, (2, 2)), normal(11, (2, 4))
    grads, (dx0, dx1) = vjp((d0, d1))
    np.testing.assert_allclose(dx0, d0 @ params["dense_0"]["w"].T, rtol=1e-14)
    np.testing.assert_allclose(dx1, d1 * (1 - np.tanh(x[1]) ** 2), rtol=1e-14)


def test_residual_is_x_plus_inner_and_dx_is_dy_plus_inner_dx():
    inner = serial(Dense(3), Tanh())
    net = residual(inner)
    params = net.init(KEY, (3,), np.float64)
    assert set(params) == {"inner"}
    w, b = params["inner"]["dense_0"]["w"], params["inner"]["dense_0"]["b"]
    x, dy = normal(12, (4, 3)), normal(13, (4, 3))
    y, vjp = net.apply(params, x)
    h = np.tanh(x @ w + b)
    np.testing.assert_allclose(y, x + h, rtol=1e-14)
    grads, dx = vjp(dy)
    da = dy * (1 - h**2)
    np.testing.assert_allclose(dx, dy + da @ w.T, rtol=1e-13)
    np.testing.assert_allclose(grads["inner"]["dense_0"]["w"], x.T @ da, rtol=1e-13)
    np.testing.assert_allclose(grads["inner"]["dense_0"]["b"], da.sum(0), rtol=1e-13)
    check_vjp(serial(Dense(3), net, Tanh()), serial(Dense(3), net, Tanh()).init(KEY, (2,), np.float64),
              normal(14, (3, 2)))


def test_residual_of_identity_doubles():
    x = normal(15, (2, 3))
    y, vjp = residual(Identity()).apply({"inner": {}}, x)
    np.testing.assert_allclose(y, 2 * x, rtol=0)
    np.testing.assert_allclose(vjp(x)[1], 2 * x, rtol=0)


@pytest.mark.parametrize("axis", [1, 2, 3, -1, -2, -3])
def test_fan_in_concat_concatenates_and_splits_along_any_non_batch_axis(axis):
    base = [2, 3, 4, 5]  # batched shape
    ax = axis % 4
    pieces = []
    for i, size in enumerate([1, 3, 2]):
        shape = list(base)
        shape[ax] = size
        pieces.append(normal(20 + i, tuple(shape)))
    y, vjp = fan_in_concat(axis).apply({}, tuple(pieces))
    np.testing.assert_array_equal(y, np.concatenate(pieces, axis=ax))
    dy = normal(30, y.shape)
    _, dx = vjp(dy)
    assert isinstance(dx, tuple) and [d.shape for d in dx] == [p.shape for p in pieces]
    np.testing.assert_array_equal(np.concatenate(dx, axis=ax), dy)
    params = fan_in_concat(axis).init(KEY, tuple(p.shape[1:] for p in pieces))
    assert fnn.output_shape(fan_in_concat(axis), params, tuple(p.shape[1:] for p in pieces)) == y.shape[1:]


def test_fan_in_concat_in_a_network_passes_finite_differences():
    net = serial(fan_out(2), parallel(Dense(2), serial(Dense(3), Tanh())), fan_in_concat(-1), Dense(2))
    params = net.init(KEY, (3,), np.float64)
    check_vjp(net, params, normal(31, (4, 3)))


def test_elementwise_with_a_user_function_matches_the_analytic_derivative():
    def softplus(x):
        return np.logaddexp(0, x)

    def sigmoid(x):
        return 0.5 * (1 + np.tanh(x / 2))

    layer = elementwise(softplus, sigmoid)
    assert layer.kind == "elementwise(softplus)"
    assert elementwise(np.sin, np.cos, name="sine").kind == "elementwise(sine)"
    x, dy = normal(32, (3, 4)), normal(33, (3, 4))
    y, vjp = layer.apply({}, x)
    np.testing.assert_allclose(y, np.log1p(np.exp(x)), rtol=1e-13)
    np.testing.assert_allclose(vjp(dy)[1], dy / (1 + np.exp(-x)), rtol=1e-13)
    check_vjp(serial(Dense(4), layer), serial(Dense(4), layer).init(KEY, (2,), np.float64), normal(34, (3, 2)))


def test_elementwise_keeps_float32_when_fn_upcasts():
    layer = elementwise(lambda x: x.astype(np.float64) ** 2, lambda x: 2.0 * x.astype(np.float64), name="sq")
    x = np.ones((2, 3), np.float32)
    y, vjp = layer.apply({}, x)
    assert y.dtype == np.float32 and vjp(np.ones_like(y))[1].dtype == np.float32


def test_elementwise_returning_its_input_does_not_alias_it():
    x = normal(35, (2, 2))
    y, _ = elementwise(lambda v: v, np.ones_like, name="id").apply({}, x)
    assert not np.shares_memory(x, y)


# -- options reach layers nested at any depth ---------------------------------------------------

def nested_dropout():
    """Dropout inside parallel inside residual inside serial."""
    block = serial(fan_out(2), ("par", parallel(("drop", Dropout(0.5)), Identity())), fan_in_sum())
    return serial(Dense(8), ("res", residual(block)), Tanh())


def test_dropout_nested_deep_gets_a_key_same_key_same_mask():
    net = nested_dropout()
    params = net.init(KEY, (6,), np.float64)
    x = normal(40, (16, 6))
    y1, _ = net.apply(params, x, train=True, key=random.key(1))
    y2, _ = net.apply(params, x, train=True, key=random.key(1))
    y3, _ = net.apply(params, x, train=True, key=random.key(2))
    y_eval, _ = net.apply(params, x)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    assert not np.array_equal(y1, y_eval)
    # eval: the dropout branch is the identity, so the block is 3 * h
    h = Dense(8).apply(params["dense_0"], x)[0]
    np.testing.assert_allclose(y_eval, np.tanh(3 * h), rtol=1e-13)
    # train: each entry is h + (2h + h) where kept (scaled by 1 / (1 - 0.5)), or h + (0 + h) where dropped
    inner = np.arctanh(y1)
    kept = np.isclose(inner, 4 * h)
    assert np.all(kept | np.isclose(inner, 2 * h)) and 0 < kept.mean() < 1
    check_vjp(net, params, x[:3], train=True, key=random.key(1))


def test_dropout_nested_deep_without_a_key_in_training_raises_naming_dropout():
    net = nested_dropout()
    params = net.init(KEY, (6,), np.float64)
    with pytest.raises(ValueError, match=r"'res'.*'par'.*'drop'.*Dropout\(0\.5\): train=True needs a key"):
        net.apply(params, normal(41, (2, 6)), train=True)


def test_parallel_branches_get_different_keys():
    net = parallel(Dropout(0.5), Dropout(0.5))
    x = np.ones((4, 32))
    (a, b), _ = net.apply({"dropout_0": {}, "dropout_1": {}}, (x, x), train=True, key=random.key(7))
    assert not np.array_equal(a, b)
    (a2, b2), _ = net.apply({"dropout_0": {}, "dropout_1": {}}, (x, x), train=True, key=random.key(7))
    assert np.array_equal(a, a2) and np.array_equal(b, b2)


def nested_batchnorm():
    block = serial(fan_out(2), ("par", parallel(("bn", BatchNorm()), Identity())), fan_in_sum())
    return serial(("dense", Dense(3)), ("res", residual(block)), ("bn_top", BatchNorm(momentum=0.5)))


def test_batchnorm_state_nested_in_combinators_comes_back_under_the_right_names():
    net = nested_batchnorm()
    params = net.init(KEY, (4,), np.float64)
    x = normal(42, (8, 4))
    out = net.apply(params, x, train=True)
    assert set(out.state) == {"res", "bn_top"}
    assert set(out.state["res"]) == {"inner"}
    assert set(out.state["res"]["inner"]) == {"par"}
    assert set(out.state["res"]["inner"]["par"]) == {"bn"}
    h = Dense(3).apply(params["dense"], x)[0]
    bn = out.state["res"]["inner"]["par"]["bn"]
    np.testing.assert_allclose(bn["mean"], 0.1 * h.mean(0), rtol=1e-12)
    np.testing.assert_allclose(bn["var"], 0.9 + 0.1 * h.var(0, ddof=1), rtol=1e-12)

    # Fed back, the nested state is consumed: the running statistics move on from it.
    out2 = net.apply(params, x, train=True, state=out.state)
    bn2 = out2.state["res"]["inner"]["par"]["bn"]
    np.testing.assert_allclose(bn2["mean"], 0.9 * bn["mean"] + 0.1 * h.mean(0), rtol=1e-12)
    top, top2 = out.state["bn_top"], out2.state["bn_top"]
    assert not np.allclose(top["mean"], top2["mean"])

    # In evaluation the given running statistics are used.
    y_eval = net.apply(params, x, state=out2.state)[0]
    r = out2.state["res"]["inner"]["par"]["bn"]
    z = h + (h - r["mean"]) / np.sqrt(r["var"] + 1e-5) + h
    t = out2.state["bn_top"]
    np.testing.assert_allclose(y_eval, (z - t["mean"]) / np.sqrt(t["var"] + 1e-5), rtol=1e-12)
    # and state from another architecture is refused, naming the level
    with pytest.raises(ValueError, match=r"state has entries \['nope'\]"):
        net.apply(params, x, state={"res": {"inner": {"nope": {}}}})


def test_check_finite_inside_nested_combinators_names_the_innermost_layer():
    log = elementwise(np.log, lambda v: 1 / v, name="log")
    block = serial(fan_out(2), ("par", parallel(("ok", Tanh()), ("bad", serial(("lg", log))))), fan_in_sum())
    net = serial(Identity(), ("res", residual(block)))
    x = np.array([[1.0, -1.0]])
    with pytest.raises(NonFiniteError, match=r"'res'.*'par'.*'bad'.*'lg'.*elementwise\(log\): check_finite: "
                                             r"this layer produced 1 NaN and 0 inf"):
        with np.errstate(invalid="ignore"):
            net.apply({"identity_0": {}, "res": {"inner": {"fan_out_0": {}, "par": {"ok": {}, "bad": {"lg": {}}},
                                                           "fan_in_sum_0": {}}}}, x, check_finite=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        y, _ = net.apply(net.init(KEY, (2,), np.float64), x)  # without the check, NaN propagates
    assert np.isnan(y).sum() == 1


@pytest.mark.parametrize("make, shape", [
    (lambda: serial(fan_out(3), parallel(Dense(4), Tanh(), Identity()), fan_in_sum()), (4,)),
    (lambda: serial(Tanh(), residual(serial(Dense(3), Tanh())), Dense(2)), (3,)),
    (lambda: serial(fan_out(2), parallel(Tanh(), Dense(2)), fan_in_concat()), (3,)),
    (lambda: parallel(Dense(2), Tanh()), ((3,), (2,))),
    (lambda: residual(Dense(3)), (3,)),
])
def test_need_dx_false_returns_none_and_the_same_dparams(make, shape):
    net = make()
    params = net.init(KEY, shape, np.float64)
    x = tuple(normal(50, (2, *s)) for s in shape) if isinstance(shape[0], tuple) else normal(50, (2, *shape))
    y, vjp = net.apply(params, x)
    dy = tree.map(lambda a: normal(51, a.shape), y)
    grads, dx = vjp(dy)
    grads_no_dx, none = vjp(dy, need_dx=False)
    assert dx is not None and none is None
    tree.check_same_structure(grads, grads_no_dx, shapes=True)
    assert all(np.array_equal(a, b) for a, b in zip(tree.leaves(grads), tree.leaves(grads_no_dx)))


# -- errors ----------------------------------------------------------------------------------------

def test_parallel_given_a_tuple_of_the_wrong_arity_raises():
    net = parallel(Dense(2), Tanh())
    params = net.init(KEY, ((3,), (3,)))
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"parallel\(2\): input must be a tuple of 2 arrays, got a tuple of 3"):
        net.apply(params, (x, x, x))
    with pytest.raises(ValueError, match=r"parallel\(2\): input must be a tuple of 2 arrays, got an array"):
        net.apply(params, x)


def test_vjp_given_a_cotangent_of_the_wrong_structure_raises():
    _, vjp = parallel(Tanh(), Tanh()).apply({"tanh_0": {}, "tanh_1": {}}, (np.ones((2, 3)), np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"parallel\(2\).vjp: dy must be a tuple of 2 arrays like the output y"):
        vjp((np.ones((2, 3)),) * 3)
    with pytest.raises(ValueError, match=r"parallel\(2\).vjp: dy has shape \(2, 4\) but the output y has shape"):
        vjp((np.ones((2, 3)), np.ones((2, 4))))
    _, vjp = fan_out(2).apply({}, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"fan_out\(2\).vjp: dy must be a tuple of 2 arrays"):
        vjp(np.ones((2, 3)))
    _, vjp = residual(Tanh()).apply({"inner": {}}, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"residual\(Tanh\(\)\).vjp: dy has shape \(2, 4\)"):
        vjp(np.ones((2, 4)))


def test_parallel_init_with_a_non_tuple_shape_raises():
    net = parallel(Dense(2), Tanh())
    with pytest.raises(ValueError, match=r"parallel\(2\): init shape must be a tuple of 2 shapes, got \(3,\)"):
        net.init(KEY, (3,))
    with pytest.raises(ValueError, match=r"parallel\(2\): init shape must be a tuple of 2 shapes"):
        net.init(KEY, ((3,), (3,), (3,)))
    with pytest.raises(TypeError, match="shape must be a tuple"):
        net.init(KEY, 3)


def test_parallel_branch_errors_name_the_branch():
    net = parallel(Dense(2), ("flat", Dense(2)))
    with pytest.raises(ValueError, match=r"parallel\(2\) branch 1 'flat' \(Dense\(2\)\) with input shape \(\)"):
        net.init(KEY, ((3,), ()))


def test_fan_in_sum_given_an_array_raises():
    with pytest.raises(ValueError, match=r"fan_in_sum\(\): input must be a (non-empty )?tuple of arrays, got an array"):
        fan_in_sum().apply({}, np.ones((2, 3), np.float32))


def test_fan_in_sum_of_different_shapes_raises_without_broadcasting():
    a, b = np.ones((2, 3)), np.ones((2, 1))
    with pytest.raises(ValueError, match=r"fan_in_sum\(\): inputs must all have the same shape \(no broadcasting\)"):
        fan_in_sum().apply({}, (a, b))
    with pytest.raises(ValueError, match="fan_in_sum"):
        serial(fan_out(2), parallel(Dense(3), Dense(1)), fan_in_sum()).init(KEY, (2,))


@pytest.mark.parametrize("pieces, match", [
    (((2, 3), (2, 4, 1)), "needs inputs of equal rank"),
    (((2, 3, 4), (2, 5, 5)), r"inputs differ outside axis -1: shapes \[\(2, 3, 4\), \(2, 5, 5\)\]"),
    (((2, 3), (3, 3)), "inputs differ outside axis -1"),
])
def test_fan_in_concat_of_incompatible_shapes_raises(pieces, match):
    with pytest.raises(ValueError, match=r"fan_in_concat\(axis=-1\): " + match):
        fan_in_concat().apply({}, tuple(np.ones(s) for s in pieces))


@pytest.mark.parametrize("axis", [0, 3, -3])
def test_fan_in_concat_on_the_batch_axis_or_out_of_range_raises(axis):
    with pytest.raises(ValueError, match="a non-batch axis"):
        fan_in_concat(axis).apply({}, (np.ones((2, 3)), np.ones((2, 3))))


@pytest.mark.parametrize("axis, got", [(1.0, "float 1.0"), (True, "bool True"), ("-1", "str '-1'"), (None, "NoneType")])
def test_fan_in_concat_rejects_a_non_int_axis(axis, got):
    with pytest.raises(TypeError, match=f"^fan_in_concat: axis must be an int, got {got}"):
        fan_in_concat(axis)


def test_residual_whose_inner_layer_changes_the_shape_raises_at_init():
    with pytest.raises(ValueError, match=r"residual\(Dense\(4\)\): the inner layer maps shape \(3,\) to \(4,\)"):
        residual(Dense(4)).init(KEY, (3,))
    with pytest.raises(ValueError, match=r"maps shape \(2, 4, 4\) to \(2, 2, 2\)"):
        serial(Tanh(), residual(MaxPool2D(2))).init(KEY, (2, 4, 4))


def test_residual_whose_inner_layer_changes_the_shape_raises_at_apply():
    with pytest.raises(ValueError, match=r"residual\(Flatten\(\)\): the inner layer maps shape \(2, 3, 4\) to "
                                         r"\(2, 12\); a residual needs the same shape"):
        residual(Flatten()).apply({"inner": {}}, np.ones((2, 3, 4)))


def test_residual_rejects_a_non_layer_and_a_tuple_input():
    with pytest.raises(TypeError, match="residual: expected a layer"):
        residual(("inner", Dense(2)))
    with pytest.raises(TypeError, match="input must be one array, got a tuple of 2"):
        residual(Tanh()).apply({"inner": {}}, (np.ones((1, 2)), np.ones((1, 2))))


def test_elementwise_fn_returning_the_wrong_shape_raises():
    bad = elementwise(lambda x: x.sum(axis=-1), np.ones_like, name="sum")
    with pytest.raises(ValueError, match=r"elementwise\(sum\): fn mapped shape \(2, 3\) to \(2,\); it must be "
                                         r"pointwise"):
        bad.apply({}, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"elementwise\(sum\)"):
        serial(Dense(3), bad).init(KEY, (2,))


def test_elementwise_rejects_non_callables():
    with pytest.raises(TypeError, match="elementwise: dfn must be a callable .*, got NoneType"):
        elementwise(np.sin, None)
    with pytest.raises(TypeError, match="elementwise: fn must be a callable taking and returning arrays, got str"):
        elementwise("sin", np.cos)


@pytest.mark.parametrize("make", [serial, parallel])
def test_duplicate_names_raise(make):
    with pytest.raises(ValueError, match=r"layer names must be unique, got duplicates \['a'\]"):
        make(("a", Dense(2)), ("a", Tanh()))
    with pytest.raises(ValueError, match=r"duplicates \['dense_0'\]"):
        make(("dense_0", Tanh()), Dense(2))


@pytest.mark.parametrize("bad, error, match", [
    (0, ValueError, "n must be >= 1, got 0"),
    (-2, ValueError, "n must be >= 1, got -2"),
    (True, TypeError, "n must be an int, got bool True"),
    (np.True_, TypeError, "n must be an int, got bool"),
    (2.0, TypeError, "n must be an int, got float 2.0"),
    ("2", TypeError, "n must be an int, got str '2'"),
])
def test_fan_out_bad_arguments(bad, error, match):
    with pytest.raises(error, match=f"^fan_out: {match}"):
        fan_out(bad)


def test_fan_out_and_fan_in_concat_take_numpy_integers():
    layer = fan_out(np.int64(3))
    assert layer.kind == "fan_out(3)"
    y, _ = layer.apply({}, np.ones((2, 4)))
    assert len(y) == 3
    concat = fan_in_concat(np.int32(-1))
    assert concat.kind == "fan_in_concat(axis=-1)"
    assert concat.apply({}, (np.ones((2, 3)), np.ones((2, 1))))[0].shape == (2, 4)


def test_combinator_param_errors_name_the_combinator():
    net = parallel(Dense(2), Tanh())
    params = net.init(KEY, ((3,), (3,)))
    with pytest.raises(ValueError, match=r"parallel\(2\): params has keys \['dense_0'\] but this parallel\(2\) "
                                         r"expects \['dense_0', 'tanh_0'\]"):
        net.apply({"dense_0": params["dense_0"]}, (np.ones((1, 3), np.float32),) * 2)
    with pytest.raises(ValueError, match=r"residual\(Tanh\(\)\): params has keys \[\]"):
        residual(Tanh()).apply({}, np.ones((1, 3)))


def test_vjp_children_list_the_sub_vjps_with_their_output_shapes():
    net = serial(fan_out(2), parallel(Dense(3), Tanh()), fan_in_concat())
    params = net.init(KEY, (2,))
    _, vjp = net.apply(params, np.ones((5, 2), np.float32))
    names = [name for name, _, _ in vjp.children]
    assert names == ["fan_out_0", "parallel_0", "fan_in_concat_0"]
    par = vjp.children[1]
    assert [(n, s.shape) for n, _, s in par[1].children] == [("dense_0", (5, 3)), ("tanh_0", (5, 2))]
    _, vjp = residual(Dense(2)).apply(residual(Dense(2)).init(KEY, (2,)), np.ones((1, 2), np.float32))
    assert [(n, s.shape) for n, _, s in vjp.children] == [("inner", (1, 2))]
