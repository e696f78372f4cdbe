"""fnn.tree: flatten/unflatten, leafwise arithmetic and structure checks that name the key path."""

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fnn import tree


def make_tree():
    return {
        "conv1": {"w": np.arange(6.0).reshape(2, 3), "b": np.array([1.0, -1.0])},
        "dense": {"w": np.ones((3, 2), np.float32)},
        "list": [np.array(2.0), (np.array([3.0]), np.array([4.0, 5.0]))],
    }


LEAVES = st.builds(lambda v, n: np.full(n, v), st.floats(-10, 10), st.integers(0, 3))
TREES = st.recursive(
    LEAVES,
    lambda kids: st.one_of(
        st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), kids, max_size=3),
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
    ),
    max_leaves=8,
)


def test_flatten_visits_dict_keys_in_sorted_order_with_paths():
    pairs, _ = tree.flatten(make_tree())
    assert [tree.path_str(p) for p, _ in pairs] == [
        "['conv1']['b']", "['conv1']['w']", "['dense']['w']",
        "['list'][0]", "['list'][1][0]", "['list'][1][1]",
    ]
    assert tree.path_str(()) == "<root>"
    assert [np.asarray(x).tolist() for x in tree.leaves({"b": np.array(2), "a": np.array(1)})] == [1, 2]


@given(TREES)
def test_flatten_rebuild_round_trip(t):
    pairs, rebuild = tree.flatten(t)
    again = rebuild([leaf for _, leaf in pairs])
    tree.check_same_structure(t, again, shapes=True)
    assert all(a is b for a, b in zip(tree.leaves(t), tree.leaves(again), strict=True))
    assert tree.size(t) == sum(np.size(x) for _, x in pairs)


def test_rebuild_keeps_container_types_including_namedtuples():
    class Pair(NamedTuple):
        a: np.ndarray
        b: np.ndarray

    t = {"p": Pair(np.zeros(1), np.ones(2)), "t": (np.zeros(1),), "l": [np.zeros(1)]}
    out = tree.map(lambda x: x + 1, t)
    assert isinstance(out["p"], Pair) and isinstance(out["t"], tuple) and isinstance(out["l"], list)
    assert out["p"].b.tolist() == [2.0, 2.0]


def test_rebuild_with_too_many_leaves_raises():
    _, rebuild = tree.flatten({"a": np.zeros(1)})
    with pytest.raises(ValueError, match="more leaves"):
        rebuild([1, 2])


def test_unflatten_inverts_flatten_for_dict_trees():
    t = {"a": {"x": np.zeros(1), "y": np.ones(1)}, "b": np.zeros(2)}
    again = tree.unflatten(tree.flatten(t)[0])
    assert again.keys() == t.keys() and again["a"]["y"] is t["a"]["y"]
    assert tree.unflatten([((), 5)]) == 5


@pytest.mark.parametrize("pairs, match", [
    ([(("a",), 1), (("a",), 2)], "duplicate key path \\['a'\\]"),
    ([(("a",), 1), (("a", "b"), 2)], "\\['a'\\] is both a leaf and a node"),
    ([((), 1), (("a",), 2)], "root leaf must be the only pair"),
])
def test_unflatten_errors(pairs, match):
    with pytest.raises(ValueError, match=match):
        tree.unflatten(pairs)


def test_map_and_map_with_path():
    t = make_tree()
    doubled = tree.map(lambda x: x * 2, t)
    assert doubled["conv1"]["w"].tolist() == (np.arange(6.0).reshape(2, 3) * 2).tolist()
    summed = tree.map(lambda x, y, z: x + y + z, t, t, t)
    assert summed["list"][1][1].tolist() == [12.0, 15.0]
    paths = tree.map_with_path(lambda p, x: tree.path_str(p), t)
    assert paths["list"][1][0] == "['list'][1][0]"
    assert t["conv1"]["w"][0, 1] == 1.0  # inputs untouched


def with_missing_key(t):
    t = tree.map(lambda x: x, t)
    del t["conv1"]["b"]
    return t


def with_extra_key(t):
    t = tree.map(lambda x: x, t)
    t["dense"]["b"] = np.zeros(2, np.float32)
    return t


def with_wrong_shape(t):
    t = tree.map(lambda x: x, t)
    t["dense"]["w"] = np.ones((2, 3), np.float32)
    return t


STRUCTURE_ERRORS = [
    (with_missing_key, "at \\['conv1'\\]: missing key\\(s\\) 'b'"),
    (with_extra_key, "at \\['dense'\\]: unexpected key\\(s\\) 'b'"),
]
SHAPE_ERROR = (with_wrong_shape, "differ in shape at \\['dense'\\]\\['w'\\]: \\(3, 2\\) vs \\(2, 3\\)")


@pytest.mark.parametrize("name, fn", [
    ("map", lambda a, b: tree.map(lambda x, y: x, a, b)),
    ("map_with_path", lambda a, b: tree.map_with_path(lambda p, x, y: x, a, b)),
    ("add", tree.add),
    ("sub", tree.sub),
    ("axpy", lambda a, b: tree.axpy(2.0, a, b)),
    ("vdot", tree.vdot),
])
@pytest.mark.parametrize("mutate, match", STRUCTURE_ERRORS)
def test_structure_mismatch_names_first_differing_key_path(name, fn, mutate, match):
    with pytest.raises(ValueError, match=f"fnn.tree.{name}: .*{match}"):
        fn(make_tree(), mutate(make_tree()))


@pytest.mark.parametrize("name, fn", [
    ("add", tree.add), ("sub", tree.sub), ("axpy", lambda a, b: tree.axpy(2.0, a, b)), ("vdot", tree.vdot),
])
def test_shape_mismatch_names_key_path(name, fn):
    mutate, match = SHAPE_ERROR
    with pytest.raises(ValueError, match=f"fnn.tree.{name}: .*{match}"):
        fn(make_tree(), mutate(make_tree()))


def test_map_checks_structure_but_not_leaf_shapes():
    """map applies any function leafwise, so leaves may legitimately differ in shape (e.g. a scale per leaf)."""
    out = tree.map(lambda x, s: x * s, {"a": np.ones(3)}, {"a": np.array(2.0)})
    assert out["a"].tolist() == [2.0, 2.0, 2.0]


def test_first_differing_path_is_reported_in_sorted_order():
    a = {"a": {"x": np.zeros(1)}, "b": {"y": np.zeros(1)}, "c": np.zeros(1)}
    b = {"a": {"x": np.zeros(1)}, "b": {"z": np.zeros(1)}, "c": {"d": np.zeros(1)}}
    with pytest.raises(ValueError, match="at \\['b'\\]: missing key\\(s\\) 'y'; unexpected key\\(s\\) 'z'"):
        tree.check_same_structure(a, b)


@pytest.mark.parametrize("a, b, match", [
    ({"a": np.zeros(1)}, {"a": {"b": np.zeros(1)}}, "at \\['a'\\]: leaf vs dict"),
    ({"a": [np.zeros(1)]}, {"a": (np.zeros(1),)}, "at \\['a'\\]: list vs tuple"),
    ({"a": [np.zeros(1)]}, {"a": [np.zeros(1), np.zeros(1)]}, "at \\['a'\\]: length 1 vs 2"),
    (np.zeros(1), {"a": np.zeros(1)}, "at <root>: leaf vs dict"),
])
def test_container_mismatches(a, b, match):
    with pytest.raises(ValueError, match=match):
        tree.check_same_structure(a, b, names=["params", "grads"], where="here")
    with pytest.raises(ValueError, match="^here: params and grads differ in structure"):
        tree.check_same_structure(a, b, names=["params", "grads"], where="here")


def test_unsortable_dict_keys_raise_type_error():
    with pytest.raises(TypeError, match="sortable"):
        tree.leaves({1: np.zeros(1), "a": np.zeros(1)})


def test_arithmetic_values_and_dtypes():
    a = {"x": np.array([1.0, 2.0], np.float32), "y": np.array([[3.0]])}
    b = {"x": np.array([0.5, 0.5], np.float32), "y": np.array([[1.0]])}
    assert tree.add(a, b)["x"].tolist() == [1.5, 2.5]
    assert tree.sub(a, b)["y"].tolist() == [[2.0]]
    s = tree.scale(2.0, a)
    assert s["x"].dtype == np.float32 and s["x"].tolist() == [2.0, 4.0]
    ax = tree.axpy(np.float64(3.0), a, b)
    assert ax["x"].dtype == np.float32 and ax["x"].tolist() == [3.5, 6.5] and ax["y"].tolist() == [[10.0]]
    assert tree.vdot(a, b) == pytest.approx(1.0 * 0.5 + 2.0 * 0.5 + 3.0)
    assert isinstance(tree.vdot(a, b), float)
    assert tree.global_norm(a) == pytest.approx(np.sqrt(1 + 4 + 9))
    z = tree.zeros_like(a)
    assert z["x"].dtype == np.float32 and not z["x"].any() and z["y"].shape == (1, 1)
    assert tree.size(a) == 3 and tree.nbytes(a) == 2 * 4 + 8


def test_arithmetic_does_not_modify_or_alias_inputs():
    a = {"x": np.array([1.0, 2.0])}
    b = {"x": np.array([3.0, 4.0])}
    for v in (*tree.leaves(a), *tree.leaves(b)):
        v.setflags(write=False)
    outs = [tree.add(a, b), tree.sub(a, b), tree.scale(1.0, a), tree.axpy(0.0, a, b), tree.astype(a, np.float64)]
    for out in outs:
        assert not any(np.shares_memory(out["x"], v) for v in (a["x"], b["x"]))
    assert a["x"].tolist() == [1.0, 2.0] and b["x"].tolist() == [3.0, 4.0]


def test_allclose():
    a = {"x": np.array([1.0, 2.0])}
    assert tree.allclose(a, {"x": np.array([1.0, 2.0 + 1e-9])})
    assert not tree.allclose(a, {"x": np.array([1.0, 2.1])})
    assert not tree.allclose(a, {"y": np.array([1.0, 2.0])})
    assert not tree.allclose(a, {"x": np.array([1.0, 2.0, 3.0])})


def test_astype_casts_only_float_leaves():
    t = {"w": np.ones(2, np.float32), "step": np.array(3, np.int64)}
    out = tree.astype(t, np.float64)
    assert out["w"].dtype == np.float64 and out["step"].dtype == np.int64


def test_structure_error_lists_missing_key_names_not_characters():
    """Regression: the message was built with this module's own ``map`` (shadowing the builtin), so
    missing keys came out as the sorted characters of a set's repr: "missing key(s) ', ', b, {, }"."""
    with pytest.raises(ValueError) as info:
        tree.check_same_structure({"w": np.zeros(1), "bias": np.zeros(1)}, {"w": np.zeros(1), "gain": np.zeros(1)})
    assert str(info.value).endswith("at <root>: missing key(s) 'bias'; unexpected key(s) 'gain'")


def test_arithmetic_keeps_zero_dimensional_leaves_as_arrays():
    """Regression: arithmetic on 0-d arrays gives numpy scalars, so a 0-d leaf (a learnable scalar) came back
    as ``np.float64``, which layers reject as "not a numpy array"."""
    a, b = {"t": np.array(1.5, np.float32)}, {"t": np.array(0.5, np.float32)}
    for out in (tree.add(a, b), tree.sub(a, b), tree.scale(2.0, a), tree.axpy(2.0, a, b)):
        assert isinstance(out["t"], np.ndarray) and out["t"].shape == () and out["t"].dtype == np.float32
