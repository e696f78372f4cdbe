"""Gradient clipping: clip_by_global_norm (torch.nn.utils.clip_grad_norm_'s rule) and clip_by_value."""

import numpy as np
import pytest

from fnn import optim, random, tree


def grads_tree(scale=1.0, dtype=np.float64):
    k1, k2, k3 = random.split(random.key(0), 3)
    return {"a": {"w": scale * random.normal(k1, (3, 4), dtype), "b": scale * random.normal(k2, (4,), dtype)},
            "c": [scale * random.normal(k3, (2,), dtype)]}


def test_global_norm_above_max_scales_to_max_norm():
    grads = grads_tree(10.0)
    norm = tree.global_norm(grads)
    assert norm > 5
    clipped = optim.clip_by_global_norm(grads, 5.0, eps=0.0)
    assert tree.global_norm(clipped) == pytest.approx(5.0, rel=1e-14)
    for g, c in zip(tree.leaves(grads), tree.leaves(clipped)):
        np.testing.assert_allclose(c, g * (5.0 / norm), rtol=1e-15)  # one common factor: direction kept


def test_global_norm_default_eps_follows_torch_rule_exactly():
    grads = grads_tree(10.0)
    norm = tree.global_norm(grads)
    clipped = optim.clip_by_global_norm(grads, 1.0)
    for g, c in zip(tree.leaves(grads), tree.leaves(clipped)):
        np.testing.assert_array_equal(c, g * (1.0 / (norm + 1e-6)))
    assert tree.global_norm(clipped) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("max_norm", [None, "equal"])
def test_global_norm_at_or_below_max_leaves_grads_unchanged(max_norm):
    grads = grads_tree(0.1)
    copies = tree.map(np.copy, grads)
    norm = tree.global_norm(grads)
    clipped = optim.clip_by_global_norm(grads, norm if max_norm == "equal" else 100.0)
    for g, c, orig in zip(tree.leaves(grads), tree.leaves(clipped), tree.leaves(copies)):
        assert c.tobytes() == orig.tobytes() and g.tobytes() == orig.tobytes()


def test_global_norm_does_not_modify_its_input_and_keeps_dtypes():
    grads = grads_tree(10.0, np.float32)
    copies = tree.map(np.copy, grads)
    for g in tree.leaves(grads):
        g.setflags(write=False)
    clipped = optim.clip_by_global_norm(grads, 1.0)
    assert all(c.dtype == np.float32 for c in tree.leaves(clipped))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(grads), tree.leaves(copies)))
    tree.check_same_structure(grads, clipped, shapes=True)


def test_global_norm_of_zeros_and_non_finite_grads():
    zeros = {"w": np.zeros(3)}
    assert optim.clip_by_global_norm(zeros, 1.0)["w"].tolist() == [0.0, 0.0, 0.0]
    bad = {"w": np.array([1.0, np.inf]), "b": np.array([1.0])}
    clipped = optim.clip_by_global_norm(bad, 1.0)
    assert all(np.isnan(c).all() for c in tree.leaves(clipped))  # like torch: a non-finite norm poisons all


def test_global_norm_matches_torch():
    torch = pytest.importorskip("torch")
    grads = grads_tree(3.0)
    clipped = optim.clip_by_global_norm(grads, 2.0)
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in tree.leaves(grads)]
    for t, g in zip(tensors, tree.leaves(grads)):
        t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_(tensors, 2.0, foreach=False)
    for t, c in zip(tensors, tree.leaves(clipped)):
        np.testing.assert_allclose(c, t.grad.numpy(), rtol=1e-15, atol=0)


def test_clip_by_value_by_hand():
    grads = {"w": np.array([[-3.0, -0.5], [0.0, 2.5]]), "b": [np.array([1.0, -1.0, 0.9], np.float32)]}
    clipped = optim.clip_by_value(grads, 1.0)
    assert clipped["w"].tolist() == [[-1.0, -0.5], [0.0, 1.0]]
    assert clipped["b"][0].tolist() == [1.0, -1.0, np.float32(0.9).item()]
    assert clipped["b"][0].dtype == np.float32
    assert grads["w"].tolist() == [[-3.0, -0.5], [0.0, 2.5]]  # input unchanged


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_clip_arguments_raise(bad):
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_by_global_norm(grads_tree(), bad)
    with pytest.raises(ValueError, match="max_value"):
        optim.clip_by_value(grads_tree(), bad)
    with pytest.raises(ValueError, match="^clip_by_global_norm: eps"):
        optim.clip_by_global_norm(grads_tree(), 1.0, eps=bad)


@pytest.mark.parametrize("bad", ["1.0", None, True, [1.0]])
def test_clip_arguments_of_the_wrong_kind_raise_type_error(bad):
    with pytest.raises(TypeError, match="^clip_by_global_norm: max_norm must be a number, got"):
        optim.clip_by_global_norm(grads_tree(), bad)
    with pytest.raises(TypeError, match="^clip_by_global_norm: eps must be a number, got"):
        optim.clip_by_global_norm(grads_tree(), 1.0, eps=bad)
    with pytest.raises(TypeError, match="^clip_by_value: max_value must be a number, got"):
        optim.clip_by_value(grads_tree(), bad)


def test_numpy_scalar_clip_arguments_give_the_python_number_result():
    grads = grads_tree(scale=10.0, dtype=np.float32)
    for got, want in [(optim.clip_by_global_norm(grads, np.float32(1.5), eps=np.float64(1e-6)),
                       optim.clip_by_global_norm(grads, float(np.float32(1.5)))),
                      (optim.clip_by_value(grads, np.float64(0.5)), optim.clip_by_value(grads, 0.5)),
                      (optim.clip_by_value(grads, np.int64(2)), optim.clip_by_value(grads, 2.0))]:
        assert all(a.dtype == np.float32 and a.tobytes() == b.tobytes()
                   for a, b in zip(tree.leaves(got), tree.leaves(want), strict=True))


# ----------------------------------------------------------------------------------------------
# The one-argument forms: the same clipping as a GradientTransformation


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_transform_forms_clip_exactly_as_the_tree_functions(scale):
    grads = grads_tree(scale)
    for transform, by_hand in [(optim.clip_by_global_norm(1.0), optim.clip_by_global_norm(grads, 1.0)),
                               (optim.clip_by_global_norm(1.0, eps=0.0), optim.clip_by_global_norm(grads, 1.0, 0.0)),
                               (optim.clip_by_value(0.5), optim.clip_by_value(grads, 0.5))]:
        assert isinstance(transform, optim.GradientTransformation)
        state = transform.init(grads)
        assert state == {}
        out, new_state = transform.update(grads, state, grads)
        assert new_state == {}
        assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(out), tree.leaves(by_hand), strict=True))


def test_none_leaves_are_left_out_of_the_norm_and_stay_none():
    grads = {"a": np.array([3.0, 4.0]), "b": None}
    clipped = optim.clip_by_global_norm(grads, 1.0, eps=0.0)
    assert clipped["b"] is None and clipped["a"].tolist() == [0.6000000000000001, 0.8]
    assert optim.clip_by_value(grads, 1.0)["b"] is None
    t = optim.clip_by_global_norm(1.0, eps=0.0)
    params = {"a": np.zeros(2), "b": np.zeros(3)}
    out, _ = t.update(grads, t.init(params), params)
    assert out["b"] is None and out["a"].tolist() == [0.6000000000000001, 0.8]


def test_one_argument_form_refuses_a_tree_and_names_both_forms():
    with pytest.raises(TypeError, match=r"^clip_by_global_norm: max_norm must be a number, got dict; to clip a tree "
                                        r"pass max_norm too: clip_by_global_norm\(grads, max_norm\)"):
        optim.clip_by_global_norm(grads_tree())
    with pytest.raises(TypeError, match=r"^clip_by_value: max_value must be a number, got ndarray"):
        optim.clip_by_value(np.ones(3))
    with pytest.raises(ValueError, match=r"^clip_by_global_norm: max_norm must be in \[0, inf\], got -1.0"):
        optim.clip_by_global_norm(-1.0)
    with pytest.raises(TypeError, match="^clip_by_value: max_value must be a number, got str"):
        optim.clip_by_value("1")
    with pytest.raises(ValueError, match=r"^clip_by_global_norm: eps must be in \[0, inf\], got -1"):
        optim.clip_by_global_norm(1.0, eps=-1)


def test_transform_form_checks_updates_against_params():
    t = optim.clip_by_global_norm(1.0)
    params = grads_tree()
    with pytest.raises(ValueError, match=r"^clip_by_global_norm: params and updates differ in structure at "
                                         r"\['a'\]: missing key\(s\) 'b'"):
        t.update({"a": {"w": params["a"]["w"]}, "c": params["c"]}, t.init(params), params)
    with pytest.raises(ValueError, match=r"^clip_by_value: state must be the dict made by this transform's init, "
                                         r"with keys \[\]; got \['step'\]"):
        optim.clip_by_value(1.0).update(params, {"step": np.array(0)}, params)
