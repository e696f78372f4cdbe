"""Position layers: PositionEmbedding and SinusoidalPositionEmbedding against direct loop
references, their dtypes and init, and their argument and input errors.

The protocol (finite differences of dparams and dx, purity, dtypes, input and cotangent
errors) runs over both through tests/registry.py.
"""

import math
import re

import numpy as np
import pytest

import fnn
from fnn.layers import PositionEmbedding, SinusoidalPositionEmbedding, position

KEY = fnn.random.key(0)


def batch(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- PositionEmbedding

@pytest.mark.parametrize("steps", [1, 4, 7])
def test_position_embedding_matches_a_loop_reference_forward_and_gradients(steps):
    """y[n, t] = x[n, t] + weight[t]; dweight[t] = sum over n of dy[n, t] for t < T, 0 beyond; dx = dy."""
    layer = PositionEmbedding(7)
    params = layer.init(KEY, (steps, 3), np.float64)
    x, dy = batch((4, steps, 3)), batch((4, steps, 3), seed=1)
    y, vjp = layer.apply(params, x)
    dparams, dx = vjp(dy)
    want_y = np.empty_like(x)
    want_dw = np.zeros((7, 3))
    for n in range(4):
        for t in range(steps):
            want_y[n, t] = x[n, t] + params["weight"][t]
            want_dw[t] += dy[n, t]
    np.testing.assert_allclose(y, want_y, rtol=1e-15, atol=0)
    np.testing.assert_allclose(dparams["weight"], want_dw, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(dx, dy)
    assert not np.shares_memory(dx, dy) and set(dparams) == {"weight"}
    assert vjp(dy, need_dx=False)[1] is None


def test_position_embedding_takes_any_length_up_to_max_len_with_the_same_params():
    layer = PositionEmbedding(5)
    params = layer.init(KEY, (5, 2))
    for steps in [1, 3, 5]:
        x = np.zeros((2, steps, 2), np.float32)
        y, vjp = layer.apply(params, x)
        np.testing.assert_array_equal(y[1], params["weight"][:steps])
        assert vjp(np.ones_like(y))[0]["weight"].shape == (5, 2)


def test_position_embedding_init_is_gpt2_normal_and_w_init_replaces_it():
    weight = PositionEmbedding(256).init(KEY, (10, 64))["weight"]
    assert weight.shape == (256, 64) and weight.dtype == np.float32
    assert abs(weight.std() - 0.02) < 0.001 and abs(weight.mean()) < 0.001
    assert PositionEmbedding(4).init(KEY, (2, 3), np.float64)["weight"].dtype == np.float64
    layer = PositionEmbedding(4, w_init=fnn.init.zeros)
    np.testing.assert_array_equal(layer.init(KEY, (2, 3))["weight"], np.zeros((4, 3), np.float32))
    np.testing.assert_array_equal(position.gpt2_normal(KEY, (3, 2)), fnn.init.normal(KEY, (3, 2), std=0.02))


def test_position_embedding_keeps_float32():
    layer = PositionEmbedding(6)
    params = layer.init(KEY, (6, 4))
    y, vjp = layer.apply(params, batch((2, 6, 4), np.float32))
    dparams, dx = vjp(np.ones_like(y))
    assert y.dtype == dx.dtype == dparams["weight"].dtype == np.float32


def test_position_embedding_kind_takes_numpy_ints():
    assert PositionEmbedding(8).kind == "PositionEmbedding(8)" == PositionEmbedding(np.int64(8)).kind


@pytest.mark.parametrize("max_len, error, msg", [
    (0, ValueError, "PositionEmbedding(0): max_len must be >= 1, got 0"),
    (-3, ValueError, "PositionEmbedding(-3): max_len must be >= 1, got -3"),
    (8.0, TypeError, "PositionEmbedding(8.0): max_len must be an int, got float 8.0"),
    (None, TypeError, "PositionEmbedding(None): max_len must be an int, got NoneType None"),
    (True, TypeError, "PositionEmbedding(True): max_len must be an int, got bool True"),
])
def test_position_embedding_bad_max_len_raises(max_len, error, msg):
    with pytest.raises(error, match="^" + re.escape(msg)):
        PositionEmbedding(max_len)


def test_position_embedding_sequence_longer_than_max_len_raises():
    layer = PositionEmbedding(4)
    params = layer.init(KEY, (4, 3))
    with pytest.raises(ValueError, match=re.escape("PositionEmbedding(4): input has T = 5 positions but max_len "
                                                   "is 4 (shape (2, 5, 3)); use a larger max_len")):
        layer.apply(params, np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=re.escape("PositionEmbedding(4): init shape (6, 3) has T = 6 positions "
                                                   "but max_len is 4")):
        layer.init(KEY, (6, 3))


@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 3, 1), (5,)])
def test_position_embedding_input_that_is_not_n_t_e_raises(shape):
    layer = PositionEmbedding(4)
    params = layer.init(KEY, (4, 3))
    with pytest.raises(ValueError, match=re.escape(f"PositionEmbedding(4): input must be (N, T, E), got shape "
                                                   f"{shape}")):
        layer.apply(params, np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4), (4, 0), ()])
def test_position_embedding_init_shape_that_is_not_t_e_raises(shape):
    with pytest.raises(ValueError, match=re.escape(f"PositionEmbedding(4): init shape must be (T, E) with E > 0 "
                                                   f"(one sequence, no batch axis), got {shape}")):
        PositionEmbedding(4).init(KEY, shape)


def test_position_embedding_params_of_other_features_or_dtype_raise():
    layer = PositionEmbedding(4)
    params = layer.init(KEY, (4, 3))
    with pytest.raises(ValueError, match=re.escape("PositionEmbedding(4): params['weight'] has shape (4, 3) but "
                                                   "the input needs (4, 5)")):
        layer.apply(params, np.zeros((2, 4, 5), np.float32))
    with pytest.raises(TypeError, match=re.escape("PositionEmbedding(4): params['weight'] has dtype float32 but x "
                                                  "has dtype float64")):
        layer.apply(params, np.zeros((2, 4, 3)))


# ------------------------------------------------------------------ SinusoidalPositionEmbedding

def loop_table(length, features, base):
    """table[t, j] = sin(t / base ** (2 (j // 2) / E)) for even j, cos of the same for odd j."""
    table = np.empty((length, features))
    for t in range(length):
        for j in range(features):
            angle = t / base ** (2 * (j // 2) / features)
            table[t, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table


@pytest.mark.parametrize("features", [1, 2, 5, 8, 33])
@pytest.mark.parametrize("base", [10000.0, 100.0, 2.0])
def test_sinusoidal_matches_a_loop_reference_odd_and_even_features(features, base):
    """Odd E ends with a sine column with no cosine beside it."""
    steps = 50
    x, dy = batch((3, steps, features)), batch((3, steps, features), seed=1)
    y, vjp = SinusoidalPositionEmbedding(base=base).apply({}, x)
    # angles up to 49 rad: float64 rounding of t * w_i differs by ~1e-14 between the two computations
    np.testing.assert_allclose(y - x, np.broadcast_to(loop_table(steps, features, base), x.shape), rtol=0, atol=1e-13)
    dparams, dx = vjp(dy)
    assert dparams == {} and not np.shares_memory(dx, dy)
    np.testing.assert_array_equal(dx, dy)
    if features % 2:
        np.testing.assert_allclose(y[0, :, -1] - x[0, :, -1], np.sin(np.arange(steps) * base ** (-(features - 1)
                                                                                                 / features)),
                                   atol=1e-13)


def test_sinusoidal_matches_the_usual_pytorch_construction():
    """The table of the PyTorch tutorials and the Annotated Transformer (even E): div = exp(-ln(10000) 2i / E),
    pe[:, 0::2] = sin(pos * div), pe[:, 1::2] = cos(pos * div)."""
    torch = pytest.importorskip("torch")
    length, features = 512, 16
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, features, 2, dtype=torch.float64) * (-math.log(10000.0) / features))
    pe = torch.zeros(length, features, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    # angles up to 511 rad: the two ways of computing the frequencies differ by an ulp, t * w_i by ~1e-13
    np.testing.assert_allclose(position.sinusoidal_table(length, features), pe.numpy(), rtol=0, atol=1e-12)


def test_sinusoidal_keeps_float32_with_the_float64_table_rounded():
    x = batch((2, 300, 6), np.float32)
    y, vjp = SinusoidalPositionEmbedding().apply({}, x)
    assert y.dtype == np.float32 and vjp(np.ones_like(y))[1].dtype == np.float32
    np.testing.assert_array_equal(y, x + position.sinusoidal_table(300, 6).astype(np.float32))


def test_sinusoidal_any_length_without_max_len_and_module_level_functions():
    x = np.zeros((1, 3000, 4))
    y, _ = SinusoidalPositionEmbedding().apply({}, x)
    assert np.abs(y).max() <= 1.0 and y[0, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
    want, cache = position.sinusoidal_position_forward(x, 10000.0)
    np.testing.assert_array_equal(y, want)
    dy = batch(x.shape)
    np.testing.assert_array_equal(position.sinusoidal_position_backward(cache, dy), dy)


def test_sinusoidal_kinds():
    assert SinusoidalPositionEmbedding().kind == "SinusoidalPositionEmbedding()"
    assert SinusoidalPositionEmbedding(16, base=100.0).kind == "SinusoidalPositionEmbedding(max_len=16, base=100.0)"
    assert SinusoidalPositionEmbedding(np.int64(16), base=10000).kind == "SinusoidalPositionEmbedding(max_len=16)"


def test_sinusoidal_sequence_longer_than_max_len_raises():
    with pytest.raises(ValueError, match=re.escape("SinusoidalPositionEmbedding(max_len=4): input has T = 6 "
                                                   "positions but max_len is 4 (shape (1, 6, 2))")):
        SinusoidalPositionEmbedding(4).apply({}, np.zeros((1, 6, 2)))
    y, _ = SinusoidalPositionEmbedding(4).apply({}, np.zeros((1, 4, 2)))  # T == max_len is fine
    assert y.shape == (1, 4, 2)


@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 3, 1)])
def test_sinusoidal_input_that_is_not_n_t_e_raises(shape):
    with pytest.raises(ValueError, match=re.escape(f"SinusoidalPositionEmbedding(): input must be (N, T, E), "
                                                   f"got shape {shape}")):
        SinusoidalPositionEmbedding().apply({}, np.zeros(shape, np.float32))


@pytest.mark.parametrize("kwargs, error, msg", [
    ({"max_len": 0}, ValueError, "SinusoidalPositionEmbedding(max_len=0): max_len must be >= 1, got 0"),
    ({"max_len": 2.5}, TypeError, "SinusoidalPositionEmbedding(max_len=2.5): max_len must be an int, got float"),
    ({"base": 0.0}, ValueError, "SinusoidalPositionEmbedding(base=0.0): base must be in (0, inf], got 0.0"),
    ({"base": -10.0}, ValueError, "SinusoidalPositionEmbedding(base=-10.0): base must be in (0, inf], got -10.0"),
    ({"base": math.inf}, ValueError, "SinusoidalPositionEmbedding(base=inf): base must be a finite number"),
    ({"base": "1e4"}, TypeError, "SinusoidalPositionEmbedding(base='1e4'): base must be a number, got str"),
])
def test_sinusoidal_bad_arguments_raise(kwargs, error, msg):
    with pytest.raises(error, match="^" + re.escape(msg)):
        SinusoidalPositionEmbedding(**kwargs)


def test_sinusoidal_rejects_params():
    with pytest.raises(ValueError, match=re.escape("SinusoidalPositionEmbedding(): has no parameters")):
        SinusoidalPositionEmbedding().apply({"weight": np.zeros((4, 2))}, np.zeros((1, 4, 2)))
