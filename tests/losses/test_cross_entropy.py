"""softmax_cross_entropy, nll_loss and accuracy without PyTorch: gradients against finite differences of the
returned values, hand-computed cases, edge cases, stability and argument errors. The PyTorch comparison is in
test_losses_torch.py."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from loss_testing import as_layer_fn

from fnn import random
from fnn.losses import accuracy, nll_loss, softmax_cross_entropy
from fnn.testing import check_vjp_fn

BOUNDED = st.floats(-5, 5)
SMOOTHING = st.one_of(st.just(0.0), st.floats(0.0, 1.0))
REDUCTION = st.sampled_from(["mean", "sum", "none"])
RAISE = {"over": "raise", "invalid": "raise", "divide": "raise"}  # underflow of exp(-huge) to 0 is fine


@st.composite
def class_problem(draw, kind):
    """Scores ``(N, C)`` or ``(N, T, C)`` with labels of ``kind``, and options (``weight``, ``ignore_index``).

    Class weights stay positive and one position is never ignored, so that ``"mean"`` has something to divide
    by (the NaN of an empty count has its own tests)."""
    lead = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    c = draw(st.integers(1, 5))
    logits = draw(hnp.arrays(np.float64, (*lead, c), elements=BOUNDED))
    options = {"weight": draw(st.one_of(st.none(), hnp.arrays(np.float64, (c,), elements=st.floats(0.1, 3))))}
    if kind == "int":
        labels = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, c - 1)))
        if draw(st.booleans()):
            ignored = draw(hnp.arrays(bool, lead))
            ignored.flat[0] = False
            labels = np.where(ignored, -1, labels)
            options["ignore_index"] = -1
        return logits, labels, options
    rows = draw(hnp.arrays(np.float64, logits.shape, elements=st.floats(0, 1)))
    if kind == "prob":  # rows summing to 1; "nonneg" rows may sum to anything, 0 included
        rows = (rows + 1e-3) / (rows + 1e-3).sum(axis=-1, keepdims=True)
    return logits, rows, options


# ---------------------------------------------------------------- softmax_cross_entropy: gradients

@pytest.mark.parametrize("kind", ["int", "prob", "nonneg"])
@settings(deadline=None)
@given(data=st.data(), smoothing=SMOOTHING, reduction=REDUCTION)
def test_softmax_cross_entropy_grad_matches_finite_differences(kind, data, smoothing, reduction):
    logits, labels, options = data.draw(class_problem(kind))
    check_vjp_fn(as_layer_fn(softmax_cross_entropy, labels, label_smoothing=smoothing, reduction=reduction,
                             **options), {}, logits)


@settings(deadline=None)
@given(data=st.data(), reduction=REDUCTION)
def test_nll_loss_grad_matches_finite_differences(data, reduction):
    log_probs, labels, options = data.draw(class_problem("int"))
    check_vjp_fn(as_layer_fn(nll_loss, labels, reduction=reduction, **options), {}, log_probs)


def test_softmax_cross_entropy_grad_with_rows_not_summing_to_one():
    """Regression: the fused gradient was ``(softmax - target) / N``, which is only the gradient of the returned
    value when every target row sums to 1; for other non-negative rows it was wrong."""
    logits, target = np.array([[0.3, -1.0, 2.0]]), np.array([[0.5, 0.5, 0.5]])
    _, grad = softmax_cross_entropy(logits, target)
    p = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(grad, 1.5 * p - target, rtol=1e-14)
    check_vjp_fn(as_layer_fn(softmax_cross_entropy, target), {}, logits)


# ---------------------------------------------------------------- softmax_cross_entropy: by hand

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


def test_weighted_mean_divides_by_the_weights_of_the_targets():
    """PyTorch's weighted mean: sum of w[y] * loss over the sum of w[y], not over N."""
    logits = np.array([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    weight = np.array([1.0, 3.0])
    loss, grad = softmax_cross_entropy(logits, np.array([1, 1]), weight=weight)
    assert loss == pytest.approx(-(3 * math.log(0.75) + 3 * math.log(0.25)) / 6, rel=1e-14)
    np.testing.assert_allclose(grad, [[0.125, -0.125], [0.375, -0.375]], rtol=1e-14)
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1]), weight=weight)
    assert loss == pytest.approx(-(math.log(0.25) + 3 * math.log(0.25)) / 4, rel=1e-14)
    np.testing.assert_allclose(grad, [[-0.75 / 4, 0.75 / 4], [3 * 0.75 / 4, -3 * 0.75 / 4]], rtol=1e-14)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
def test_label_smoothing_follows_pytorch(eps):
    """PyTorch: loss = (1 - eps) * nll + eps * mean over classes of -log p, for index and probability labels."""
    logits = random.normal(random.key(0), (5, 4), np.float64)
    labels = np.array([0, 3, 1, 1, 2])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(5), labels].mean()
    expected = (1 - eps) * nll + eps * (-logp.mean(axis=1)).mean()
    assert softmax_cross_entropy(logits, labels, label_smoothing=eps)[0] == pytest.approx(expected, rel=1e-13)
    probs = np.eye(4)[labels]
    assert softmax_cross_entropy(logits, probs, label_smoothing=eps)[0] == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(softmax_cross_entropy(logits, probs, label_smoothing=eps)[1],
                               softmax_cross_entropy(logits, labels, label_smoothing=eps)[1], rtol=1e-13, atol=1e-16)


def test_sequence_logits_are_positions_of_a_flat_batch():
    """(N, T, C) logits with (N, T) labels are the (N * T, C) problem: the mean is over every position."""
    k1, k2 = random.split(random.key(3), 2)
    logits = random.normal(k1, (2, 5, 3), np.float64)
    labels = (random.uniform(k2, (2, 5), np.float64) * 3).astype(np.int64)
    labels[0, 3:] = -100
    for reduction in ("mean", "sum", "none"):
        value, grad = softmax_cross_entropy(logits, labels, ignore_index=-100, reduction=reduction)
        flat, flat_grad = softmax_cross_entropy(logits.reshape(10, 3), labels.reshape(10), ignore_index=-100,
                                                reduction=reduction)
        np.testing.assert_allclose(np.reshape(value, np.shape(flat)), flat, rtol=1e-15)
        np.testing.assert_allclose(grad.reshape(10, 3), flat_grad, rtol=1e-15)
    kept = labels.reshape(10) != -100
    mean, _ = softmax_cross_entropy(logits.reshape(10, 3)[kept], labels.reshape(10)[kept])
    assert softmax_cross_entropy(logits, labels, ignore_index=-100)[0] == pytest.approx(mean, rel=1e-14)


def test_reduction_none_gives_each_position_and_the_gradient_of_the_sum():
    logits = np.array([[0.0, math.log(3.0)], [math.log(3.0), 0.0], [5.0, 5.0]])
    losses, grad = softmax_cross_entropy(logits, np.array([1, 1, 0]), ignore_index=0, reduction="none")
    np.testing.assert_allclose(losses, [-math.log(0.75), -math.log(0.25), 0.0], rtol=1e-14)
    np.testing.assert_allclose(grad, [[0.25, -0.25], [0.75, -0.75], [0.0, 0.0]], rtol=1e-14)
    total, total_grad = softmax_cross_entropy(logits, np.array([1, 1, 0]), ignore_index=0, reduction="sum")
    assert total == pytest.approx(losses.sum(), rel=1e-15)
    np.testing.assert_array_equal(total_grad, grad)


def test_ignore_index_may_be_a_real_class():
    logits = random.normal(random.key(4), (4, 3), np.float64)
    labels = np.array([0, 1, 2, 1])
    value, grad = softmax_cross_entropy(logits, labels, ignore_index=1)
    want, want_grad = softmax_cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert value == pytest.approx(want, rel=1e-15)
    np.testing.assert_allclose(grad[[0, 2]], want_grad, rtol=1e-15)
    assert not grad[[1, 3]].any()


@pytest.mark.parametrize("labels, options", [
    (np.array([[-1, -1], [-1, -1]]), {"ignore_index": -1}),
    (np.array([[-1, -1], [-1, -1]]), {"ignore_index": -1, "label_smoothing": 0.2, "weight": np.ones(3)}),
    (np.array([[2, 2], [2, 2]]), {"weight": np.array([1.0, 1.0, 0.0])}),
    (np.array([[2, -1], [2, 2]]), {"weight": np.array([1.0, 1.0, 0.0]), "ignore_index": -1, "label_smoothing": 0.3}),
], ids=["all-ignored", "all-ignored-smoothing", "all-weight-zero", "ignored-or-weight-zero"])
def test_nothing_to_average_gives_nan_with_a_zero_gradient(labels, options):
    """PyTorch's mean over no counted target is 0 / 0 = NaN; fnn's gradient is zero, so a step changes nothing."""
    logits = random.normal(random.key(5), (2, 2, 3), np.float64)
    with np.errstate(**RAISE):
        value, grad = softmax_cross_entropy(logits, labels, **options)
    assert math.isnan(value) and type(value) is float
    np.testing.assert_array_equal(grad, np.zeros_like(logits))
    with np.errstate(**RAISE):
        nll, nll_grad = nll_loss(logits, labels, **{k: v for k, v in options.items() if k != "label_smoothing"})
    assert math.isnan(nll) and not nll_grad.any()
    if "label_smoothing" not in options:  # without smoothing nothing counted adds nothing to the sum either
        assert softmax_cross_entropy(logits, labels, **options, reduction="sum") == (0.0, pytest.approx(grad))


def test_zero_class_weight_removes_those_targets_from_the_mean():
    logits = random.normal(random.key(6), (4, 3), np.float64)
    labels = np.array([0, 2, 1, 2])
    value, grad = softmax_cross_entropy(logits, labels, weight=np.array([1.0, 1.0, 0.0]))
    want, want_grad = softmax_cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert value == pytest.approx(want, rel=1e-15)
    np.testing.assert_allclose(grad[[0, 2]], want_grad, rtol=1e-15)
    assert not grad[[1, 3]].any()


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_by_hand(dtype):
    logits = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype)
    with np.errstate(**RAISE):
        losses, grad = softmax_cross_entropy(logits, np.array([1, 1]), reduction="none")
        nll, _ = nll_loss(logits, np.array([1, 1]), reduction="none")
    np.testing.assert_array_equal(losses, np.array([2e4, 0.0], dtype))
    np.testing.assert_array_equal(grad, np.array([[1, -1], [0, 0]], dtype))
    np.testing.assert_array_equal(nll, np.array([1e4, -1e4], dtype))


@pytest.mark.parametrize("shape", [(0, 3), (0, 4, 3), (2, 0, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(shape, reduction):
    with np.errstate(all="raise"):
        loss, grad = softmax_cross_entropy(np.zeros(shape, np.float32), np.zeros(shape[:-1], np.int64),
                                           reduction=reduction, ignore_index=-1, label_smoothing=0.1)
    if reduction == "none":
        assert loss.shape == shape[:-1] and loss.dtype == np.float32
    else:
        assert loss == 0.0 and type(loss) is float
    assert grad.shape == shape and grad.dtype == np.float32


def test_nll_loss_by_hand():
    log_probs = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    loss, grad = nll_loss(log_probs, np.array([1, 2]), weight=np.array([1.0, 2.0, 3.0]))
    assert loss == pytest.approx(-(2 * math.log(0.25) + 3 * math.log(0.7)) / 5, rel=1e-14)
    np.testing.assert_allclose(grad, [[0, -0.4, 0], [0, 0, -0.6]], rtol=1e-15)


def test_nll_loss_ignored_position_with_log_probability_minus_inf_adds_zero():
    log_probs = np.array([[-np.inf, 0.0], [np.log(0.5), np.log(0.5)]])
    losses, grad = nll_loss(log_probs, np.array([-1, 0]), ignore_index=-1, reduction="none")
    np.testing.assert_allclose(losses, [0.0, math.log(2)], rtol=1e-15)
    assert grad.tolist() == [[0.0, 0.0], [-1.0, 0.0]]


# ---------------------------------------------------------------- argument errors

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
    (np.array([True, False]), TypeError, ("labels must be integer classes of shape \\(2,\\) or float probability "
                                          "rows of shape \\(2, 3\\), got dtype bool")),
    (np.array(["a", "b"]), TypeError, "labels must be integer classes .* got dtype <U1"),
])
def test_softmax_cross_entropy_label_errors(labels, error, match):
    with pytest.raises(error, match=f"^softmax_cross_entropy: {match}"):
        softmax_cross_entropy(np.zeros((2, 3), np.float32), labels)


@pytest.mark.parametrize("logits, labels, match", [
    (np.zeros((2, 5, 3)), np.zeros((2, 4), np.int64),
     "integer labels must have shape \\(2, 5\\) for logits \\(2, 5, 3\\), got \\(2, 4\\)$"),
    (np.zeros((2, 5, 3)), np.zeros((2, 5, 1), np.int64), "got \\(2, 5, 1\\) \\(squeeze the trailing axis\\)"),
    (np.zeros((2, 5, 3)), np.zeros((2, 3, 5)), "float labels are probability rows of shape \\(2, 5, 3\\)"),
    (np.zeros((2, 5, 3)), np.full((2, 5), 3), "labels must be in \\[0, 3\\) for 3 classes, got 3"),
])
def test_sequence_label_errors(logits, labels, match):
    with pytest.raises(ValueError, match=f"^softmax_cross_entropy: .*{match}"):
        softmax_cross_entropy(logits, labels)


@pytest.mark.parametrize("logits, error, match", [
    (np.zeros(3), ValueError, "logits must have shape \\(N, C\\) with C > 0, got \\(3,\\); sequence logits are "
                              "\\(N, ..., C\\), with the classes on the last axis"),
    (np.zeros((2, 0)), ValueError, "C > 0, got \\(2, 0\\)"),
    (np.zeros((2, 3, 0)), ValueError, "C > 0, got \\(2, 3, 0\\)"),
    (np.zeros((2, 3), np.int64), TypeError, "logits must be float32 or float64, got int64"),
    (np.zeros((2, 3), np.float16), TypeError, "got float16"),
    (np.zeros((2, 3), bool), TypeError, "got bool"),
    (np.zeros((2, 3), object), TypeError, "got object"),
    ([[0.0, 0.0, 0.0]] * 2, TypeError, "logits must be a numpy array of shape \\(N, C\\) or \\(N, ..., C\\), got list"),
])
def test_softmax_cross_entropy_logits_errors(logits, error, match):
    with pytest.raises(error, match=f"^softmax_cross_entropy: .*{match}"):
        softmax_cross_entropy(logits, np.array([0, 1]))


@pytest.mark.parametrize("options, error, match", [
    ({"weight": [1.0, 1.0, 1.0]}, TypeError, "weight must be a numpy array, got list"),
    ({"weight": np.ones(3)}, TypeError, "weight has dtype float64 but logits has dtype float32; "
                                        "pass weight.astype\\(np.float32\\)"),
    ({"weight": np.ones(2, np.float32)}, ValueError, "weight must have shape \\(3,\\) for logits of shape \\(2, 3\\), "
                                                     "got \\(2,\\)"),
    ({"weight": np.ones((1, 3), np.float32)}, ValueError, "weight must have shape \\(3,\\) .* got \\(1, 3\\)"),
    ({"ignore_index": 1.0}, TypeError, "ignore_index must be an int, got float 1.0"),
    ({"ignore_index": True}, TypeError, "ignore_index must be an int, got bool True"),
    ({"ignore_index": -1, "labels": np.array([0, -2])}, ValueError,
     "labels must be in \\[0, 3\\) for 3 classes or equal ignore_index=-1, got -2"),
    ({"ignore_index": -100, "labels": np.full((2, 3), 1 / 3, np.float32)}, ValueError,
     "ignore_index=-100 applies to integer class labels only, got float probability rows"),
    ({"reduction": "batchmean"}, ValueError, "reduction must be one of \\['mean', 'sum', 'none'\\], got 'batchmean'"),
    ({"reduction": None}, TypeError, "reduction must be one of \\['mean', 'sum', 'none'\\], got NoneType"),
])
def test_softmax_cross_entropy_option_errors(options, error, match):
    labels = options.pop("labels", np.array([0, 1]))
    with pytest.raises(error, match=f"^softmax_cross_entropy: {match}"):
        softmax_cross_entropy(np.zeros((2, 3), np.float32), labels, **options)


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


def test_options_are_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), 0.1)  # label_smoothing was positional in 0.1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [np.float32(0.1), np.float64(0.1), np.int64(0), np.int8(1)])
def test_numpy_scalar_label_smoothing_is_taken_as_the_python_number(eps, dtype):
    logits = random.normal(random.key(2), (4, 3), dtype)
    labels = np.array([0, 2, 1, 2])
    value, grad = softmax_cross_entropy(logits, labels, label_smoothing=eps)
    want_value, want_grad = softmax_cross_entropy(logits, labels, label_smoothing=float(eps))
    assert value == want_value and type(value) is float
    assert grad.dtype == dtype and grad.tobytes() == want_grad.tobytes()


@pytest.mark.parametrize("call, error, match", [
    (lambda: nll_loss(np.zeros((2, 3)), np.zeros((2, 3))), TypeError,
     "labels must be integer class indices of shape \\(2,\\), got dtype float64"),
    (lambda: nll_loss(np.zeros((2, 3)), np.array([0, 5])), ValueError, "labels must be in \\[0, 3\\) for 3 classes"),
    (lambda: nll_loss(np.zeros((2, 3)), np.array([0])), ValueError,
     "integer labels must have shape \\(2,\\) for log_probs \\(2, 3\\), got \\(1,\\)"),
    (lambda: nll_loss(np.zeros(3), np.array([0])), ValueError, "log_probs must have shape \\(N, C\\) with C > 0"),
    (lambda: nll_loss(np.zeros((2, 3)), np.array([0, 1]), weight=np.ones(4)), ValueError,
     "weight must have shape \\(3,\\) for log_probs of shape \\(2, 3\\), got \\(4,\\)"),
    (lambda: nll_loss(np.zeros((2, 3)), np.array([0, 1]), reduction="avg"), ValueError, "reduction must be one of"),
])
def test_nll_loss_errors(call, error, match):
    with pytest.raises(error, match=f"^nll_loss: {match}"):
        call()


# ---------------------------------------------------------------- accuracy

def test_accuracy_by_hand():
    logits = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert accuracy(logits, np.array([1, 0, 0, 1])) == 0.5
    assert accuracy(logits, np.eye(2)[[1, 0, 1, 0]]) == 1.0
    assert accuracy(logits.reshape(2, 2, 2), np.array([[1, 0], [0, 1]])) == 0.5  # positions of a sequence
    assert accuracy(np.zeros((0, 2)), np.zeros(0, np.int64)) == 0.0
    with pytest.raises(ValueError, match="accuracy: labels must be in \\[0, 2\\)"):
        accuracy(logits, np.array([0, 1, 2, 0]))
