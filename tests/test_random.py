"""fnn.random: keys, splitting, draws, determinism and key validation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fnn import random as fr

SEEDS = st.integers(0, 2**63 - 1)


def test_key_is_read_only_uint32_of_shape_4():
    k = fr.key(0)
    assert k.dtype == np.uint32 and k.shape == (4,)
    assert not k.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        k[0] = 1


@given(SEEDS)
def test_key_is_bitwise_deterministic(seed):
    assert fr.key(seed).tobytes() == fr.key(seed).tobytes()
    assert fr.key(np.int64(seed % 2**62)).tobytes() == fr.key(seed % 2**62).tobytes()


def test_different_seeds_give_different_keys():
    keys = {fr.key(s).tobytes() for s in range(100)}
    assert len(keys) == 100


@given(SEEDS, st.integers(0, 8))
def test_split_is_deterministic_and_gives_distinct_keys(seed, n):
    k = fr.key(seed)
    a, b = fr.split(k, n), fr.split(k, n)
    assert len(a) == n
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    words = {x.tobytes() for x in a} | {k.tobytes()}
    assert len(words) == n + 1  # all new, none equal to the parent
    for x in a:
        assert x.dtype == np.uint32 and x.shape == (4,) and not x.flags.writeable


def test_split_defaults_to_two():
    assert len(fr.split(fr.key(3))) == 2


@given(SEEDS, st.integers(0, 1000), st.integers(0, 1000))
def test_fold_in_is_deterministic_and_depends_on_data(seed, a, b):
    k = fr.key(seed)
    assert fr.fold_in(k, a).tobytes() == fr.fold_in(k, a).tobytes()
    assert (fr.fold_in(k, a).tobytes() == fr.fold_in(k, b).tobytes()) == (a == b)
    assert fr.fold_in(k, a).tobytes() != k.tobytes()


def test_fold_in_and_split_give_different_keys():
    k = fr.key(7)
    folded = {fr.fold_in(k, i).tobytes() for i in range(4)}
    split = {s.tobytes() for s in fr.split(k, 4)}
    assert not folded & split


def test_draws_are_bitwise_deterministic():
    k = fr.key(11)
    for draw in (lambda: fr.normal(k, (5, 7)), lambda: fr.uniform(k, (5, 7), np.float64),
                 lambda: fr.bernoulli(k, 0.3, (50,)), lambda: fr.permutation(k, 20),
                 lambda: fr.generator(k).integers(0, 100, 10)):
        a, b = draw(), draw()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_split_keys_give_independent_streams():
    """Draws from sibling keys, and from a parent and its child, are uncorrelated."""
    parent = fr.key(2024)
    keys = (parent, *fr.split(parent, 4), fr.fold_in(parent, 0))
    draws = np.stack([fr.normal(k, (20_000,), np.float64) for k in keys])
    corr = np.corrcoef(draws)
    off_diagonal = corr[~np.eye(len(keys), dtype=bool)]
    # Correlations of independent samples have std 1/sqrt(20000) ~ 0.007; 0.04 is over 5 sigma.
    assert np.abs(off_diagonal).max() < 0.04
    assert len({d.tobytes() for d in draws}) == len(keys)


def test_draws_do_not_touch_numpy_global_state():
    before = np.random.get_state()[1].copy()
    k = fr.key(0)
    fr.normal(k, (10,))
    fr.uniform(k, (10,))
    fr.bernoulli(k, 0.5, (10,))
    fr.permutation(k, 10)
    fr.split(k, 3)
    fr.fold_in(k, 1)
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_and_normal_shape_dtype_and_range(dtype):
    k = fr.key(5)
    u = fr.uniform(k, (4000,), dtype, low=-2.0, high=3.0)
    assert u.dtype == dtype and u.shape == (4000,)
    assert u.min() >= -2.0 and u.max() < 3.0
    assert abs(u.mean() - 0.5) < 0.15
    z = fr.normal(k, (4000,), dtype, mean=1.0, std=2.0)
    assert z.dtype == dtype
    assert abs(z.mean() - 1.0) < 0.15 and abs(z.std() - 2.0) < 0.15


def test_uniform_float32_never_reaches_high():
    """Regression: casting float64 draws to float32 rounded values just below ``high`` up to ``high``."""
    u = fr.uniform(fr.key(0), (1 << 24,), np.float32)
    assert u.max() < 1.0


def test_uniform_keeps_shape_of_scalar_draw():
    u = fr.uniform(fr.key(0), (), np.float32)
    assert isinstance(u, np.ndarray) and u.shape == () and u.dtype == np.float32


def test_bernoulli_extremes_and_rate():
    k = fr.key(1)
    assert not fr.bernoulli(k, 0.0, (100,)).any()
    assert fr.bernoulli(k, 1.0, (100,)).all()
    b = fr.bernoulli(k, 0.25, (10_000,))
    assert b.dtype == bool and abs(b.mean() - 0.25) < 0.02


@given(SEEDS, st.integers(0, 200))
def test_permutation_is_a_permutation(seed, n):
    p = fr.permutation(fr.key(seed), n)
    assert p.dtype == np.int64
    assert np.array_equal(np.sort(p), np.arange(n))


@pytest.mark.parametrize("fn", [
    lambda k: fr.split(k),
    lambda k: fr.fold_in(k, 0),
    lambda k: fr.generator(k),
    lambda k: fr.normal(k, (2,)),
    lambda k: fr.uniform(k, (2,)),
    lambda k: fr.bernoulli(k, 0.5, (2,)),
    lambda k: fr.permutation(k, 3),
    lambda k: fr.check_key(k),
])
@pytest.mark.parametrize("bad, error, match", [
    (np.zeros(4, np.int64), ValueError, "dtype int64 and shape \\(4,\\)"),
    (np.zeros(4, np.float32), ValueError, "dtype float32"),
    (np.zeros(3, np.uint32), ValueError, "shape \\(3,\\)"),
    (np.zeros((2, 4), np.uint32), ValueError, "shape \\(2, 4\\)"),
    ([0, 1, 2, 3], TypeError, "got list"),
    (0, TypeError, "got int"),
    (None, TypeError, "got NoneType"),
])
def test_malformed_keys_raise(fn, bad, error, match):
    with pytest.raises(error, match=match):
        fn(bad)


def test_check_key_names_where():
    with pytest.raises(TypeError, match="^my layer: expected a key"):
        fr.check_key("k", "my layer")
    k = fr.key(0)
    assert fr.check_key(k) is k


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                         ("3", TypeError), (None, TypeError)])
def test_bad_seeds_raise(seed, error):
    with pytest.raises(error, match="seed"):
        fr.key(seed)


def test_bad_counts_and_probabilities_raise():
    k = fr.key(0)
    with pytest.raises(ValueError, match="^fnn.random.split: n must be >= 0, got -1"):
        fr.split(k, -1)
    with pytest.raises(ValueError, match="^fnn.random.fold_in: data must be >= 0, got -1"):
        fr.fold_in(k, -1)
    with pytest.raises(ValueError, match="^fnn.random.bernoulli: p must be in \\[0, 1\\], got 1.5"):
        fr.bernoulli(k, 1.5, (2,))
    with pytest.raises(ValueError, match="^fnn.random.bernoulli: p must be a finite number, got nan"):
        fr.bernoulli(k, float("nan"), (2,))
    with pytest.raises(ValueError, match="^fnn.random.permutation: n must be >= 0, got -3"):
        fr.permutation(k, -3)
    with pytest.raises(TypeError, match="float32 or float64"):
        fr.normal(k, (2,), np.int32)
    with pytest.raises(TypeError, match="float32 or float64"):
        fr.uniform(k, (2,), np.float16)


@pytest.mark.parametrize("call, match", [
    (lambda k: fr.split(k, 2.0), "^fnn.random.split: n must be an int, got float 2.0"),
    (lambda k: fr.split(k, True), "^fnn.random.split: n must be an int, got bool True"),
    (lambda k: fr.split(k, "2"), "^fnn.random.split: n must be an int, got str '2'"),
    (lambda k: fr.fold_in(k, None), "^fnn.random.fold_in: data must be an int, got NoneType None"),
    (lambda k: fr.fold_in(k, np.False_), "^fnn.random.fold_in: data must be an int, got bool"),
    (lambda k: fr.permutation(k, True), "^fnn.random.permutation: n must be an int, got bool True"),
    (lambda k: fr.permutation(k, 3.0), "^fnn.random.permutation: n must be an int, got float 3.0"),
    (lambda k: fr.bernoulli(k, None, (2,)), "^fnn.random.bernoulli: p must be a number, got NoneType None"),
    (lambda k: fr.bernoulli(k, "0.5", (2,)), "^fnn.random.bernoulli: p must be a number, got str '0.5'"),
    (lambda k: fr.bernoulli(k, True, (2,)), "^fnn.random.bernoulli: p must be a number, got bool True"),
    (lambda k: fr.key("3"), "^fnn.random.key: seed must be an int, got str '3'"),
    (lambda k: fr.key(1.0), "^fnn.random.key: seed must be an int, got float 1.0"),
    (lambda k: fr.normal(k, None), "^fnn.random.normal: shape must be an int or a tuple of ints, got None"),
    (lambda k: fr.normal(k, (2, 1.0)), r"^fnn.random.normal: shape must be an int or a tuple of ints, got \(2, 1.0\)"),
    (lambda k: fr.uniform(k, (True,)), r"^fnn.random.uniform: shape must be an int or a tuple of ints"),
    (lambda k: fr.bernoulli(k, 0.5, "2"), "^fnn.random.bernoulli: shape must be an int or a tuple of ints"),
    (lambda k: fr.normal(k, (2,), "float33"), "^fnn.random.normal: dtype must be float32 or float64"),
    (lambda k: fr.normal(k, (2,), std="1"), "^fnn.random.normal: std must be a number, got str '1'"),
    (lambda k: fr.normal(k, (2,), mean=None), "^fnn.random.normal: mean must be a number, got NoneType"),
    (lambda k: fr.uniform(k, (2,), low="0"), "^fnn.random.uniform: low must be a number, got str"),
    (lambda k: fr.uniform(k, (2,), high=[1.0]), "^fnn.random.uniform: high must be a number, got list"),
])
def test_arguments_of_the_wrong_kind_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call(fr.key(0))


@pytest.mark.parametrize("call, match", [
    (lambda k: fr.normal(k, (-1,)), r"^fnn.random.normal: shape must be a tuple of non-negative ints, got \(-1,\)"),
    (lambda k: fr.uniform(k, -2), "^fnn.random.uniform: shape must be a tuple of non-negative ints, got -2"),
    (lambda k: fr.normal(k, (2,), std=-1.0), r"^fnn.random.normal: std must be in \[0, inf\], got -1.0"),
    (lambda k: fr.normal(k, (2,), mean=float("nan")), "^fnn.random.normal: mean must be a finite number, got nan"),
    (lambda k: fr.uniform(k, (2,), high=float("inf")), "^fnn.random.uniform: high must be a finite number, got inf"),
    (lambda k: fr.key(-1), "^fnn.random.key: seed must be >= 0, got -1"),
])
def test_arguments_with_a_bad_value_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(fr.key(0))


def test_numpy_scalar_arguments_give_the_python_number_results():
    k = fr.key(np.int64(3))
    assert k.tobytes() == fr.key(3).tobytes() and fr.key(np.uint8(3)).tobytes() == k.tobytes()
    assert [a.tobytes() for a in fr.split(k, np.int32(3))] == [a.tobytes() for a in fr.split(k, 3)]
    assert fr.fold_in(k, np.int64(7)).tobytes() == fr.fold_in(k, 7).tobytes()
    assert fr.permutation(k, np.int16(5)).tolist() == fr.permutation(k, 5).tolist()
    assert fr.bernoulli(k, np.float32(0.5), (8,)).tolist() == fr.bernoulli(k, float(np.float32(0.5)), (8,)).tolist()
    assert fr.normal(k, (np.int64(2), 3)).shape == (2, 3) and fr.uniform(k, np.int64(4)).shape == (4,)
    got = fr.normal(k, (4,), np.float32, mean=np.float64(1.0), std=np.float32(0.5))
    assert got.dtype == np.float32 and got.tobytes() == fr.normal(k, (4,), np.float32, 1.0, 0.5).tobytes()
    got = fr.uniform(k, (4,), np.float64, np.float32(-1.0), np.int64(2))
    assert got.dtype == np.float64 and got.tobytes() == fr.uniform(k, (4,), np.float64, -1.0, 2.0).tobytes()
