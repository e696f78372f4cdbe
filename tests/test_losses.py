"""Losses: returned gradients against finite differences of the returned values, hand-computed
cases, stability, purity, dtypes and label/shape errors."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fnn import random, tree
from fnn.losses import accuracy, l2_penalty, mse, softmax_cross_entropy
from fnn.testing import check_vjp_fn

BOUNDED = st.floats(-5, 5)
SMOOTHING = st.one_of(st.just(0.0), st.floats(0.0, 1.0))


def as_layer_fn(loss, *args, **kwargs):
    """``f(params, x) -> (y, vjp)`` with ``y`` the loss of ``x`` as a 0-d array, so check_vjp_fn compares the
    returned gradient with finite differences of the returned value."""

    def f(params, x):
        value, grad = loss(x, *args, **kwargs)
        assert isinstance(value, float)
        return np.array(value), lambda dy: ({}, tree.scale(float(dy), grad))

    return f


@st.composite
def logits_and_labels(draw, kind):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    logits = draw(hnp.arrays(np.float64, (n, c), elements=BOUNDED))
    if kind == "int":
        labels = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), np.int64)
    else:
        rows = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0, 1)))
        if kind == "prob":  # rows summing to 1; "nonneg" rows may sum to anything, 0 included
            rows = (rows + 1e-3) / (rows + 1e-3).sum(axis=1, keepdims=True)
        labels = rows
    return logits, labels


# ---------------------------------------------------------------- softmax_cross_entropy

@pytest.mark.parametrize("kind", ["int", "prob", "nonneg"])
@settings(deadline=None)
@given(data=st.data(), smoothing=SMOOTHING)
def test_softmax_cross_entropy_grad_matches_finite_differences(kind, data, smoothing):
    logits, labels = data.draw(logits_and_labels(kind))
    check_vjp_fn(as_layer_fn(softmax_cross_entropy, labels, label_smoothing=smoothing), {}, logits)


def test_softmax_cross_entropy_grad_with_rows_not_summing_to_one():
    """Regression: the fused gradient was ``(softmax - target) / N``, which is only the gradient of the returned
    value when every target row sums to 1; for other non-negative rows it was wrong."""
    logits, target = np.array([[0.3, -1.0, 2.0]]), np.array([[0.5, 0.5, 0.5]])
    _, grad = softmax_cross_entropy(logits, target)
    p = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(grad, 1.5 * p - target, rtol=1e-14)
    check_vjp_fn(as_layer_fn(softmax_cross_entropy, target), {}, logits)


@pytest.mark.parametrize("c", [1, 2, 10, 1000])
def test_softmax_cross_entropy_of_zero_logits_is_log_c(c):
    labels = np.arange(4) % c
    loss, grad = softmax_cross_entropy(np.zeros((4, c)), labels)
    assert loss == pytest.approx(math.log(c), rel=1e-14, abs=1e-15)
    expected = (np.full((4, c), 1 / c) - np.eye(c)[labels]) / 4
    np.testing.assert_allclose(grad, expected, rtol=1e-14, atol=1e-17)
    smooth, _ = softmax_cross_entropy(np.zeros((4, c)), labels, label_smoothing=0.3)
    # a sum of C terms per row: rounding error up to about C ulps
    assert smooth == pytest.approx(math.log(c), rel=c * np.finfo(float).eps, abs=1e-15)


def test_softmax_cross_entropy_by_hand():
    logits = np.array([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])  # softmax rows [1/4, 3/4] and [3/4, 1/4]
    loss, grad = softmax_cross_entropy(logits, np.array([1, 1]))
    assert loss == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2, rel=1e-14)
    np.testing.assert_allclose(grad, [[0.125, -0.125], [0.375, -0.375]], rtol=1e-14)
    # Integer labels and the equivalent one-hot rows agree.
    loss2, grad2 = softmax_cross_entropy(logits, np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert loss2 == pytest.approx(loss, rel=1e-15)
    np.testing.assert_allclose(grad2, grad, rtol=1e-15)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
def test_label_smoothing_follows_pytorch(eps):
    """PyTorch: loss = (1 - eps) * nll + eps * mean over classes of -log p, for index and probability labels."""
    logits = random.normal(random.key(0), (5, 4), np.float64)
    labels = np.array([0, 3, 1, 1, 2])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(5), labels].mean()
    expected = (1 - eps) * nll + eps * (-logp.mean(axis=1)).mean()
    assert softmax_cross_entropy(logits, labels, eps)[0] == pytest.approx(expected, rel=1e-13)
    probs = np.eye(4)[labels]
    assert softmax_cross_entropy(logits, probs, eps)[0] == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(softmax_cross_entropy(logits, probs, eps)[1],
                               softmax_cross_entropy(logits, labels, eps)[1], rtol=1e-13, atol=1e-16)


def test_softmax_cross_entropy_is_stable_for_huge_float32_logits():
    logits = np.array([[1e30, -1e30, 0.0], [-1e30, -1e30, 1e30], [3.0, 3.0, 3.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = softmax_cross_entropy(logits, np.array([0, 1, 2]))
        smooth, sgrad = softmax_cross_entropy(logits, np.array([0, 1, 2]), label_smoothing=0.1)
    assert math.isfinite(loss) and np.isfinite(grad).all() and grad.dtype == np.float32
    assert loss == pytest.approx((0 + 2e30 + math.log(3)) / 3, rel=1e-6)
    assert math.isfinite(smooth) and np.isfinite(sgrad).all()
    np.testing.assert_allclose(grad[1], [0, -1 / 3, 1 / 3], atol=1e-7)


def test_softmax_cross_entropy_empty_batch():
    loss, grad = softmax_cross_entropy(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    assert loss == 0.0 and grad.shape == (0, 3) and grad.dtype == np.float32


@pytest.mark.parametrize("labels, error, match", [
    (np.array([0, 3]), ValueError, "labels must be in \\[0, 3\\) for 3 classes, got 3"),
    (np.array([-1, 0]), ValueError, "labels must be in \\[0, 3\\) for 3 classes, got -1"),
    (np.array([0.0, 1.0]), ValueError, ("float labels are probability rows of shape \\(2, 3\\), got \\(2,\\) "
                                       "\\(class indices must be an integer array\\)")),
    (np.array([[0], [1]]), ValueError, ("integer labels must have shape \\(2,\\) .* got \\(2, 1\\) "
                                       "\\(squeeze the trailing axis\\)")),
    (np.array([[0.0], [1.0]]), ValueError, "float labels are probability rows"),
    (np.array([0, 1, 2]), ValueError, "integer labels must have shape \\(2,\\)"),
    (np.ones((2, 4)), ValueError, "float labels are probability rows of shape \\(2, 3\\), got \\(2, 4\\)$"),
    (np.array([True, False]), TypeError, "labels must be integer classes \\(N,\\) or float probability rows"),
    (np.array(["a", "b"]), TypeError, "labels must be integer classes .* got dtype <U1"),
])
def test_softmax_cross_entropy_label_errors(labels, error, match):
    with pytest.raises(error, match=f"^softmax_cross_entropy: {match}"):
        softmax_cross_entropy(np.zeros((2, 3), np.float32), labels)


@pytest.mark.parametrize("logits, error, match", [
    (np.zeros(3), ValueError, "logits must have shape \\(N, C\\) with C > 0, got \\(3,\\)"),
    (np.zeros((2, 3, 1)), ValueError, "got \\(2, 3, 1\\)"),
    (np.zeros((2, 0)), ValueError, "C > 0"),
    (np.zeros((2, 3), np.int64), TypeError, "logits must be float32 or float64, got int64"),
    (np.zeros((2, 3), np.float16), TypeError, "got float16"),
    (np.zeros((2, 3), bool), TypeError, "got bool"),
    (np.zeros((2, 3), object), TypeError, "got object"),
    ([[0.0, 0.0, 0.0]] * 2, TypeError, "logits must be a numpy array"),
])
def test_softmax_cross_entropy_logits_errors(logits, error, match):
    with pytest.raises(error, match=match):
        softmax_cross_entropy(logits, np.array([0, 1]))


@pytest.mark.parametrize("eps, match", [
    (-0.1, "must be in \\[0, 1\\], got -0.1"),
    (1.5, "must be in \\[0, 1\\], got 1.5"),
    (np.float32(2), "must be in \\[0, 1\\], got "),
    (math.nan, "must be a finite number, got nan"),
])
def test_bad_label_smoothing_raises(eps, match):
    with pytest.raises(ValueError, match=f"^softmax_cross_entropy: label_smoothing {match}"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=eps)


@pytest.mark.parametrize("eps, got", [("0.1", "str '0.1'"), (None, "NoneType None"), (True, "bool True")])
def test_label_smoothing_that_is_not_a_number_raises_type_error(eps, got):
    with pytest.raises(TypeError, match=f"^softmax_cross_entropy: label_smoothing must be a number, got {got}"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [np.float32(0.1), np.float64(0.1), np.int64(0), np.int8(1)])
def test_numpy_scalar_label_smoothing_is_taken_as_the_python_number(eps, dtype):
    logits = random.normal(random.key(2), (4, 3), dtype)
    labels = np.array([0, 2, 1, 2])
    value, grad = softmax_cross_entropy(logits, labels, label_smoothing=eps)
    want_value, want_grad = softmax_cross_entropy(logits, labels, label_smoothing=float(eps))
    assert value == want_value and type(value) is float
    assert grad.dtype == dtype and grad.tobytes() == want_grad.tobytes()


# ---------------------------------------------------------------- mse

@st.composite
def pred_and_target(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    return (draw(hnp.arrays(np.float64, shape, elements=BOUNDED)),
            draw(hnp.arrays(np.float64, shape, elements=BOUNDED)))


@settings(deadline=None)
@given(pred_and_target())
def test_mse_grad_matches_finite_differences(pt):
    pred, target = pt
    check_vjp_fn(as_layer_fn(mse, target), {}, pred)


def test_mse_by_hand():
    loss, grad = mse(np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert loss == (1 + 4 + 4 + 0) / 4
    assert grad.tolist() == [[0.5, 1.0], [1.0, 0.0]]
    assert mse(np.zeros((0, 2)), np.zeros((0, 2))) == (0.0, pytest.approx(np.zeros((0, 2))))


def test_mse_refuses_silent_broadcasting():
    """(N,) predictions against (N, 1) targets would broadcast to (N, N) and give a wrong loss."""
    with pytest.raises(ValueError, match="pred has shape \\(4,\\) but target has shape \\(4, 1\\); they must "
                                         "match exactly \\(no broadcasting\\)"):
        mse(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="pred has shape \\(4, 1\\) but target has shape \\(4,\\)"):
        mse(np.zeros((4, 1)), np.zeros(4))


@pytest.mark.parametrize("pred", [np.zeros(2, np.int64), np.zeros(2, np.float16), np.zeros(2, bool),
                                  np.zeros(2, object), [0.0, 0.0]])
def test_mse_non_float_pred_raises(pred):
    with pytest.raises(TypeError, match="mse: pred must be a float32 or float64 array"):
        mse(pred, np.zeros(2))


# ---------------------------------------------------------------- l2_penalty

PARAM_TREES = st.fixed_dictionaries({
    "dense": st.fixed_dictionaries({"w": hnp.arrays(np.float64, (2, 3), elements=BOUNDED),
                                    "b": hnp.arrays(np.float64, (3,), elements=BOUNDED)}),
    "scale": hnp.arrays(np.float64, (), elements=BOUNDED),
    "empty": st.just({}),
})


@settings(deadline=None)
@given(PARAM_TREES, st.floats(0, 10))
def test_l2_penalty_grad_matches_finite_differences(params, weight):
    # Central differences of a value of size V carry rounding noise ~ 1e-16 * V / eps = 1e-10 * V. Keeping every
    # |p| >= 0.05 keeps each leaf's gradient (weight * p) far above that noise.
    params = tree.map(lambda p: np.where(p < 0, np.minimum(p, -0.05), np.maximum(p, 0.05)), params)
    check_vjp_fn(as_layer_fn(l2_penalty, weight), {}, params)


def test_l2_penalty_by_hand():
    params = {"a": np.array([1.0, 2.0]), "b": {"c": np.array([[3.0]])}}
    value, grad = l2_penalty(params, 0.1)
    assert value == pytest.approx(0.05 * 14, rel=1e-15)
    assert grad["a"].tolist() == [0.1, 0.2] and grad["b"]["c"].tolist() == [[pytest.approx(0.3)]]
    value, grad = l2_penalty(params, 0)
    assert value == 0.0 and not grad["a"].any() and not grad["b"]["c"].any()


@pytest.mark.parametrize("weight, match", [
    (-1.0, "must be in \\[0, inf\\], got -1.0"),
    (math.nan, "must be a finite number, got nan"),
    (math.inf, "must be a finite number, got inf"),
])
def test_l2_penalty_bad_weight_raises(weight, match):
    with pytest.raises(ValueError, match=f"^l2_penalty: weight {match}"):
        l2_penalty({"w": np.ones(2)}, weight)


@pytest.mark.parametrize("weight", ["0.1", None, True, np.ones(1)])
def test_l2_penalty_weight_that_is_not_a_number_raises_type_error(weight):
    with pytest.raises(TypeError, match="^l2_penalty: weight must be a number, got"):
        l2_penalty({"w": np.ones(2)}, weight)


def test_l2_penalty_takes_a_numpy_scalar_weight_as_the_python_number():
    params = {"w": np.array([1.0, -2.0], np.float32)}
    value, grad = l2_penalty(params, np.float64(0.1))
    want_value, want_grad = l2_penalty(params, 0.1)
    assert value == want_value and grad["w"].dtype == np.float32 and grad["w"].tobytes() == want_grad["w"].tobytes()


# ---------------------------------------------------------------- every loss: purity and dtypes

def loss_calls(dtype):
    k1, k2, k3 = random.split(random.key(5), 3)
    logits = random.normal(k1, (4, 3), dtype)
    probs = random.uniform(k2, (4, 3), np.float64)
    return {
        "sce-int": (softmax_cross_entropy, logits, (np.array([0, 2, 1, 2]),), {}),
        "sce-int-smooth": (softmax_cross_entropy, logits, (np.array([0, 2, 1, 2]),), {"label_smoothing": 0.2}),
        "sce-prob": (softmax_cross_entropy, logits, (probs / probs.sum(axis=1, keepdims=True),), {}),
        "sce-prob-smooth": (softmax_cross_entropy, logits, (probs,), {"label_smoothing": 0.5}),
        "mse": (mse, logits, (random.normal(k3, (4, 3), dtype),), {}),
        "l2_penalty": (l2_penalty, {"w": logits, "b": logits[0].copy()}, (0.5,), {}),
    }


LOSSES = sorted(loss_calls(np.float64))


@pytest.mark.parametrize("name", LOSSES)
def test_losses_are_pure(name):
    fn, x, args, kwargs = loss_calls(np.float64)[name]
    inputs = [*tree.leaves(x), *(a for a in args if isinstance(a, np.ndarray))]
    copies = [a.copy() for a in inputs]
    for a in inputs:
        a.setflags(write=False)
    (v1, g1), (v2, g2) = fn(x, *args, **kwargs), fn(x, *args, **kwargs)
    assert v1 == v2
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(g1), tree.leaves(g2), strict=True))
    assert all(a.tobytes() == c.tobytes() for a, c in zip(inputs, copies, strict=True))
    assert not any(np.shares_memory(g, a) for g in tree.leaves(g1) for a in inputs)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_keep_dtype(name, dtype):
    fn, x, args, kwargs = loss_calls(dtype)[name]
    value, grad = fn(x, *args, **kwargs)
    assert type(value) is float and math.isfinite(value)
    tree.check_same_structure(x, grad, shapes=True)
    assert all(g.dtype == dtype for g in tree.leaves(grad))


# ---------------------------------------------------------------- accuracy

def test_accuracy_by_hand():
    logits = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert accuracy(logits, np.array([1, 0, 0, 1])) == 0.5
    assert accuracy(logits, np.eye(2)[[1, 0, 1, 0]]) == 1.0
    assert accuracy(np.zeros((0, 2)), np.zeros(0, np.int64)) == 0.0
    with pytest.raises(ValueError, match="accuracy: labels must be in \\[0, 2\\)"):
        accuracy(logits, np.array([0, 1, 2, 0]))


@pytest.mark.parametrize("loss_fn, args", [
    (softmax_cross_entropy, (np.array([[0.5, -1.0, 2.0], [0.1, 0.2, 0.3]]), np.array([2, 0]))),
    (mse, (np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 1.0]]))),
])
def test_sum_reduction_is_the_mean_times_the_count(loss_fn, args):
    mean, dmean = loss_fn(*args)
    total, dtotal = loss_fn(*args, reduction="sum")
    count = args[0].shape[0] if loss_fn is softmax_cross_entropy else args[0].size
    assert total == pytest.approx(mean * count, rel=1e-12)
    np.testing.assert_allclose(dtotal, dmean * count, rtol=1e-12)


@pytest.mark.parametrize("loss_fn, args", [
    (softmax_cross_entropy, (np.zeros((2, 3)), np.array([0, 1]))),
    (mse, (np.zeros(2), np.zeros(2))),
])
def test_unknown_reduction_raises(loss_fn, args):
    name = loss_fn.__name__
    with pytest.raises(ValueError, match=f"^{name}: reduction must be one of \\['mean', 'sum'\\], got 'none'"):
        loss_fn(*args, reduction="none")
    with pytest.raises(TypeError, match=f"^{name}: reduction must be one of \\['mean', 'sum'\\], got NoneType"):
        loss_fn(*args, reduction=None)
