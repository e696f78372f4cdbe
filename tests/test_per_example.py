"""fnn.per_example: per-example gradient norms and per-example clipping, against one-example-at-a-time loops."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fnn
from fnn import random, tree
from fnn.layers import LSTM, BatchNorm, Conv2D, Dense, Flatten, LastStep, MaxPool2D, ReLU, Tanh
from fnn.per_example import clipped_grads, grad_norms

KEY = random.key(0)


def vector(grads):
    """A gradient tree as one flat float64 vector."""
    return np.concatenate([np.ravel(g) for g in tree.leaves(grads)] or [np.zeros(0)])


def per_example_grads(net, params, x, dy):
    """The slow, obviously correct reference: each example's gradient from a batch of one."""
    out = []
    for n in range(x.shape[0]):
        _, vjp = net.apply(params, x[n:n + 1], state=fnn.INITIAL_STATE)
        grads, _ = vjp(tree.map(lambda d, n=n: d[n:n + 1], dy))
        out.append(grads)
    return out


def setup(net, shape, n, seed=0):
    """float64 params, a batch ``x`` of ``n`` examples, the vjp and a random cotangent ``dy``."""
    k_init, k_x, k_dy = random.split(random.key(seed), 3)
    params = net.init(k_init, shape, np.float64)
    x = random.normal(k_x, (n, *shape), np.float64)
    y, vjp = net.apply(params, x, state=fnn.INITIAL_STATE)  # BatchNorm rows evaluate with the initial statistics
    dy = tree.map(lambda a, k=k_dy: random.normal(k, a.shape, np.float64), y)
    return params, x, vjp, dy


def assert_norms_match_loop(net, shape, n=4, seed=0):
    params, x, vjp, dy = setup(net, shape, n, seed)
    expected = np.array([np.linalg.norm(vector(g)) for g in per_example_grads(net, params, x, dy)])
    got = grad_norms(vjp, dy)
    assert got.shape == (n,)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=0)
    return got


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5)], ids=["2d", "3d", "4d"])
@pytest.mark.parametrize("bias", [True, False])
def test_dense_grad_norms_match_per_example_loop(shape, bias):
    assert_norms_match_loop(Dense(4, bias=bias), shape)


def test_dense_grad_norms_hand_computed():
    # One example, no bias: the gradient is the outer product x dy, its norm |x| |dy|.
    x = np.array([[3.0, 4.0]])
    dy = np.array([[1.0, 2.0, 2.0]])
    params = {"w": np.zeros((2, 3))}
    _, vjp = Dense(3, bias=False).apply(params, x)
    np.testing.assert_allclose(grad_norms(vjp, dy), [5.0 * 3.0], rtol=1e-15)
    # With a bias, |dy|^2 is added: sqrt(15^2 + 3^2).
    _, vjp = Dense(3).apply({**params, "b": np.zeros(3)}, x)
    np.testing.assert_allclose(grad_norms(vjp, dy), [np.sqrt(15.0**2 + 3.0**2)], rtol=1e-15)


@pytest.mark.parametrize("conv, shape", [
    (Conv2D(3, 3), (2, 6, 6)),
    (Conv2D(3, 3, bias=False), (2, 6, 6)),
    (Conv2D(2, (2, 3), stride=2, padding=1), (3, 7, 8)),
    (Conv2D(4, 3, stride=(1, 2), padding="same", dilation=2, bias=False), (2, 7, 6)),
    (Conv2D(2, 2, padding=((0, 1), (2, 0)), dilation=(2, 1)), (1, 5, 5)),
    (Conv2D(3, 1, stride=3), (2, 4, 5)),
    (Conv2D(2, 3, padding="same", dx_method="flipped"), (2, 4, 4)),
])
def test_conv2d_grad_norms_match_per_example_loop(conv, shape):
    assert_norms_match_loop(conv, shape, n=3)


NETWORKS = {
    "mlp": (lambda: fnn.serial(Dense(6), Tanh(), Dense(5, bias=False), ReLU(), Dense(3)), (4,)),
    "pointwise_first": (lambda: fnn.serial(Tanh(), Dense(3), Tanh()), (4,)),
    "lenet_like": (lambda: fnn.serial(Conv2D(3, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(4, 2, bias=False),
                                      Tanh(), Flatten(), Dense(5), ReLU(), Dense(2)), (2, 6, 6)),
    "residual": (lambda: fnn.serial(Dense(4), fnn.residual(fnn.serial(Dense(6), Tanh(), Dense(4))), Tanh(),
                                    Dense(2)), (3,)),
    "conv_residual": (lambda: fnn.serial(Conv2D(2, 3, padding="same"),
                                         fnn.residual(fnn.serial(Conv2D(2, 3, padding="same"), Tanh())),
                                         Flatten(), Dense(3)), (1, 5, 5)),
    "parameterless_residual": (lambda: fnn.serial(Dense(3), fnn.residual(Tanh()), Dense(2)), (4,)),
    "parallel": (lambda: fnn.serial(Dense(4), fnn.fan_out(3), fnn.parallel(Dense(3), Tanh(), Dense(4, bias=False)),
                                    fnn.fan_in_concat(-1), Dense(2)), (3,)),
    "nested": (lambda: fnn.serial(fnn.fan_out(2), fnn.parallel(fnn.serial(Dense(3), Tanh()),
                                                                fnn.residual(fnn.serial(Dense(4), Tanh()))),
                                  fnn.fan_in_concat(), ("head", fnn.serial(Dense(3), ReLU(), Dense(2)))), (4,)),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_grad_norms_match_per_example_loop(name):
    make, shape = NETWORKS[name]
    assert_norms_match_loop(make(), shape, n=5)


def test_grad_norms_of_a_tuple_output():
    net = fnn.serial(Dense(3), fnn.fan_out(2), fnn.parallel(Dense(2), Tanh()))
    assert_norms_match_loop(net, (4,))


def test_grad_norms_of_a_network_without_parameters_are_zeros_per_example():
    # Regression: the norms were the scalar 0.0 rather than one zero per example.
    for net in (fnn.serial(Tanh(), ReLU()), fnn.serial(fnn.residual(Tanh()))):
        _, _, vjp, dy = setup(net, (3,), 4)
        np.testing.assert_array_equal(grad_norms(vjp, dy), np.zeros(4))
        grads, norms = clipped_grads(vjp, dy, 1.0)
        assert norms.shape == (4,) and tree.leaves(grads) == []


def test_clipped_grads_of_a_tuple_output():
    # Regression: clipped_grads took dy.dtype, failing with AttributeError for a tuple cotangent.
    net = fnn.serial(Dense(3), fnn.fan_out(2), fnn.parallel(Dense(2), fnn.serial(Tanh(), Dense(4, bias=False))))
    params, x, vjp, dy = setup(net, (4,), 5, seed=7)
    per = per_example_grads(net, params, x, dy)
    norms = np.array([np.linalg.norm(vector(g)) for g in per])
    expected = tree.zeros_like(params)
    for g, norm in zip(per, norms):
        expected = tree.axpy(min(1.0, 0.5 / norm), g, expected)
    grads, got = clipped_grads(vjp, dy, 0.5)
    np.testing.assert_allclose(got, norms, rtol=1e-10)
    np.testing.assert_allclose(vector(grads), vector(expected), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["mlp", "lenet_like", "parallel", "nested"])
@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 1e6])
def test_clipped_grads_is_the_sum_of_clipped_per_example_grads(name, max_norm):
    make, shape = NETWORKS[name]
    net = make()
    params, x, vjp, dy = setup(net, shape, 5, seed=3)
    per = per_example_grads(net, params, x, dy)
    norms = np.array([np.linalg.norm(vector(g)) for g in per])
    expected = tree.zeros_like(params)
    for g, norm in zip(per, norms):
        expected = tree.axpy(min(1.0, max_norm / norm), g, expected)
    grads, got_norms = clipped_grads(vjp, dy, max_norm)
    tree.check_same_structure(grads, params, shapes=True)
    np.testing.assert_allclose(got_norms, norms, rtol=1e-10)
    np.testing.assert_allclose(vector(grads), vector(expected), rtol=1e-10, atol=1e-14)
    assert all(np.linalg.norm(vector(tree.scale(min(1.0, max_norm / nn), g))) <= max_norm * (1 + 1e-12)
               for g, nn in zip(per, norms))


def test_clipped_grads_with_a_huge_threshold_is_the_plain_gradient():
    make, shape = NETWORKS["mlp"]
    net = make()
    params, x, vjp, dy = setup(net, shape, 4)
    grads, _ = clipped_grads(vjp, dy, 1e12)
    assert tree.allclose(grads, vjp(dy)[0], rtol=1e-12, atol=0)


def test_clipped_grads_with_a_zero_gradient_example_does_not_divide_by_zero():
    net = Dense(2)
    params = net.init(KEY, (3,), np.float64)
    _, vjp = net.apply(params, np.ones((2, 3)))
    dy = np.array([[0.0, 0.0], [3.0, 4.0]])
    with np.errstate(all="raise"):
        grads, norms = clipped_grads(vjp, dy, 1.0)
    assert norms[0] == 0
    assert np.isfinite(vector(grads)).all()
    np.testing.assert_allclose(np.linalg.norm(vector(grads)), 1.0, rtol=1e-12)


def test_clipped_grads_rejects_a_negative_max_norm():
    _, vjp = Dense(2).apply(Dense(2).init(KEY, (3,)), np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"^clipped_grads: max_norm must be in \[0, inf\], got -1.0"):
        clipped_grads(vjp, np.ones((2, 2), np.float32), -1.0)


@pytest.mark.parametrize("bad, got", [("1.0", "str '1.0'"), (None, "NoneType None"), (True, "bool True")])
def test_clipped_grads_rejects_a_max_norm_that_is_not_a_number(bad, got):
    _, vjp = Dense(2).apply(Dense(2).init(KEY, (3,)), np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match=f"^clipped_grads: max_norm must be a number, got {got}"):
        clipped_grads(vjp, np.ones((2, 2), np.float32), bad)


def test_clipped_grads_takes_a_numpy_scalar_max_norm():
    _, vjp = Dense(2).apply(Dense(2).init(KEY, (3,)), np.ones((2, 3), np.float32))
    dy = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    got, norms = clipped_grads(vjp, dy, np.float32(0.5))
    want, _ = clipped_grads(vjp, dy, float(np.float32(0.5)))
    assert all(a.dtype == np.float32 and a.tobytes() == b.tobytes()
               for a, b in zip(tree.leaves(got), tree.leaves(want), strict=True))


@pytest.mark.parametrize("layer, shape, kind", [
    (LSTM(3), (4, 2), r"LSTM\(3\)"),
    (BatchNorm(), (3,), r"BatchNorm\(\)"),
])
def test_a_layer_without_per_example_support_raises_type_error_naming_it(layer, shape, kind):
    net = fnn.serial(Dense(shape[-1]), layer, *([LastStep()] if "LSTM" in kind else []), Dense(2))
    _, x, vjp, dy = setup(net, shape, 3)
    with pytest.raises(TypeError, match=kind + ".*per-example gradient norms are not available"):
        grad_norms(vjp, dy)
    with pytest.raises(TypeError, match=kind):
        clipped_grads(vjp, dy, 1.0)


def test_unsupported_layer_nested_in_parallel_and_residual_is_named():
    net = fnn.serial(fnn.fan_out(2), fnn.parallel(Dense(3), fnn.residual(BatchNorm())), fnn.fan_in_sum())
    _, _, vjp, dy = setup(net, (3,), 3)
    with pytest.raises(TypeError, match=r"residual\(BatchNorm\(\)\)"):
        grad_norms(vjp, dy)


def test_batchnorm_without_params_is_supported():
    # affine=False has no parameters, so it contributes nothing and needs no per-example rule.
    assert_norms_match_loop(fnn.serial(Dense(3), BatchNorm(affine=False), Dense(2)), (4,))


@given(n=st.integers(1, 4), lead=st.lists(st.integers(1, 3), max_size=2), features=st.integers(1, 4),
       out=st.integers(1, 3), bias=st.booleans(), seed=st.integers(0, 1000))
def test_dense_grad_norms_random_shapes(n, lead, features, out, bias, seed):
    assert_norms_match_loop(Dense(out, bias=bias), (*lead, features), n=n, seed=seed)


@given(n=st.integers(1, 3), c=st.integers(1, 3), f=st.integers(1, 3), k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 2), st.integers(1, 2)), dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.integers(0, 2), extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), bias=st.booleans(),
       seed=st.integers(0, 1000))
def test_conv2d_grad_norms_random_shapes(n, c, f, k, stride, dilation, padding, extra, bias, seed):
    h, w = (d * (kk - 1) + 1 + e for d, kk, e in zip(dilation, k, extra))
    conv = Conv2D(f, k, stride=stride, padding=padding, dilation=dilation, bias=bias)
    assert_norms_match_loop(conv, (c, h, w), n=n, seed=seed)
