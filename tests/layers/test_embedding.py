"""Embedding: lookups, the scatter-add gradient, the padding row, PyTorch parity and errors."""

import numpy as np
import pytest

import fnn
from fnn.layers import Dense, Embedding, Flatten

KEY = fnn.random.key(0)


def test_hand_computed_lookup_and_scatter_add():
    layer = Embedding(4, 2)
    params = {"weight": np.arange(8.0).reshape(4, 2)}
    x = np.array([[3, 0, 3]])
    y, vjp = layer.apply(params, x)
    np.testing.assert_array_equal(y, [[[6, 7], [0, 1], [6, 7]]])
    grads, dx = vjp(np.array([[[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]]]))
    np.testing.assert_array_equal(grads["weight"], [[10, 20], [0, 0], [0, 0], [101, 202]])  # row 3 used twice
    assert dx is None


def test_init_matches_pytorch_layout_and_zeroes_the_padding_row():
    params = Embedding(6, 3, padding_idx=-2).init(KEY, (5,))
    assert params["weight"].shape == (6, 3) and params["weight"].dtype == np.float32
    np.testing.assert_array_equal(params["weight"][4], 0)  # -2 counts from the end, as in PyTorch
    assert 0.5 < params["weight"][:4].std() < 2.0  # N(0, 1), PyTorch's default


@pytest.mark.parametrize("padding_idx", [None, 1, -1])
def test_matches_torch(padding_idx):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((5, 3))
    x = rng.integers(0, 5, (4, 6))
    dy = rng.standard_normal((4, 6, 3))
    y, vjp = Embedding(5, 3, padding_idx=padding_idx).apply({"weight": weight}, x)
    t = torch.nn.Embedding(5, 3, padding_idx=padding_idx, dtype=torch.float64)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(weight))
    ty = t(torch.tensor(x))
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(vjp(dy)[0]["weight"], t.weight.grad.numpy(), rtol=1e-14, atol=1e-14)


def test_the_padding_row_is_used_but_never_learns():
    weight = np.ones((3, 2))
    y, vjp = Embedding(3, 2, padding_idx=0).apply({"weight": weight}, np.array([0, 0, 2]))
    np.testing.assert_array_equal(y, np.ones((3, 2)))  # a non-zero padding vector is used as it is, like PyTorch
    np.testing.assert_array_equal(vjp(np.ones((3, 2)))[0]["weight"], [[0, 0], [0, 0], [1, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int8, np.int32, np.int64, np.uint16])
def test_dtypes(dtype, index_dtype):
    layer = Embedding(7, 2)
    params = layer.init(KEY, (), dtype)
    y, vjp = layer.apply(params, np.array([1, 6], index_dtype))
    assert y.dtype == dtype and y.shape == (2, 2)
    assert vjp(np.ones_like(y))[0]["weight"].dtype == dtype


def test_empty_batch():
    layer = Embedding(3, 2)
    y, vjp = layer.apply(layer.init(KEY, (4,)), np.zeros((0, 4), np.int64))
    assert y.shape == (0, 4, 2)
    np.testing.assert_array_equal(vjp(y)[0]["weight"], np.zeros((3, 2), np.float32))


def test_in_a_serial_integer_inputs_reach_the_first_layer_and_it_learns():
    net = fnn.serial(Embedding(4, 3), Flatten(), Dense(2))
    params = net.init(KEY, (2,))
    assert fnn.output_shape(net, params, (2,)) == (2,)
    x = np.array([[0, 1], [2, 3], [1, 0], [3, 2]])
    labels = np.array([0, 1, 0, 1])
    opt = fnn.optim.adam(0.1)
    state = opt.init(params)
    for _ in range(30):
        logits, vjp = net.apply(params, x)
        loss, dlogits = fnn.losses.softmax_cross_entropy(logits, labels)
        grads, dx = vjp(dlogits)
        params, state = opt.update(params, grads, state)
    assert dx is None and loss < 0.05


@pytest.mark.parametrize("x, error, match", [
    (np.array([0.0, 1.0]), TypeError,
     r"Embedding\(3, 2\): input x must be an array of integer indices, got dtype float64"),
    (np.array([True, False]), TypeError, r"integer indices, got dtype bool"),
    (np.array([0, 3]), ValueError, r"Embedding\(3, 2\): indices must be in \[0, 3\), got values from 0 to 3"),
    (np.array([-1, 2]), ValueError, r"indices must be in \[0, 3\), got values from -1 to 2"),
    ([0, 1], TypeError, r"Embedding\(3, 2\): input x must be a numpy array, got list"),
])
def test_bad_inputs(x, error, match):
    layer = Embedding(3, 2)
    with pytest.raises(error, match=match):
        layer.apply(layer.init(KEY, ()), x)


@pytest.mark.parametrize("args, error, match", [
    ((0, 2), ValueError, r"^Embedding\(0, 2\): num_embeddings must be >= 1, got 0"),
    ((3, -1), ValueError, r"^Embedding\(3, -1\): features must be >= 1, got -1"),
    ((3, True), TypeError, r"^Embedding\(3, True\): features must be an int, got bool True"),
    ((True, 2), TypeError, r"^Embedding\(True, 2\): num_embeddings must be an int, got bool True"),
    ((3, 2, np.bool_(False)), TypeError, r"padding_idx must be an int, got bool"),
    ((3.0, 2), TypeError, r"num_embeddings must be an int, got float 3.0"),
    (("3", 2), TypeError, r"^Embedding\('3', 2\): num_embeddings must be an int, got str '3'"),
    ((3, "2"), TypeError, r"features must be an int, got str '2'"),
    ((3, 2, 3), ValueError, r"^Embedding\(3, 2, padding_idx=3\): padding_idx must be <= 2, got 3"),
    ((3, 2, -4), ValueError, r"^Embedding\(3, 2, padding_idx=-4\): padding_idx must be >= -3, got -4"),
    ((3, 2, "0"), TypeError, r"^Embedding\(3, 2, padding_idx='0'\): padding_idx must be an int, got str '0'"),
])
def test_bad_constructor_arguments(args, error, match):
    with pytest.raises(error, match=match):
        Embedding(*args)


def test_numpy_integer_arguments_are_accepted():
    layer = Embedding(np.int64(5), np.int32(2), padding_idx=np.int64(-1))
    assert layer.kind == "Embedding(5, 2, padding_idx=-1)"
    params = layer.init(KEY, (3,))
    assert params["weight"].shape == (5, 2)
    np.testing.assert_array_equal(params["weight"][4], 0)
    y, vjp = layer.apply(params, np.array([[4, 0, 4]]))
    np.testing.assert_array_equal(vjp(np.ones_like(y))[0]["weight"][[0, 4]], [[1, 1], [0, 0]])


def test_params_of_another_table_are_refused():
    layer = Embedding(3, 2)
    with pytest.raises(ValueError, match=r"params\['weight'\] has shape \(4, 2\) but the input needs \(3, 2\)"):
        layer.apply({"weight": np.zeros((4, 2))}, np.array([0]))
    with pytest.raises(TypeError, match=r"params\['weight'\] must be a float32 or float64 array, got dtype int64"):
        layer.apply({"weight": np.zeros((3, 2), np.int64)}, np.array([0]))
