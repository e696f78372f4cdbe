"""binary_cross_entropy_with_logits without PyTorch: finite differences, by hand, stability, errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from loss_testing import as_layer_fn

from fnn.losses import binary_cross_entropy_with_logits as bce
from fnn.testing import check_vjp_fn

RAISE = {"over": "raise", "invalid": "raise", "divide": "raise"}


@st.composite
def binary_problem(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    logits = draw(hnp.arrays(np.float64, shape, elements=st.floats(-8, 8)))
    targets = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    options = {}
    weight_shape = draw(st.sampled_from([None, shape, shape[-1:], (shape[0],) + (1,) * (len(shape) - 1)]))
    if weight_shape is not None:
        options["weight"] = draw(hnp.arrays(np.float64, weight_shape, elements=st.floats(0, 3)))
    if draw(st.booleans()):
        options["pos_weight"] = draw(hnp.arrays(np.float64, shape[-1:], elements=st.floats(0, 5)))
    return logits, targets, options


@settings(deadline=None)
@given(problem=binary_problem(), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_grad_matches_finite_differences(problem, reduction):
    logits, targets, options = problem
    check_vjp_fn(as_layer_fn(bce, targets, reduction=reduction, **options), {}, logits)


def test_by_hand():
    logits, targets = np.array([[0.0, math.log(3.0)]]), np.array([[1.0, 0.0]])  # sigmoid 1/2 and 3/4
    loss, grad = bce(logits, targets, reduction="none")
    np.testing.assert_allclose(loss, [[math.log(2), math.log(4)]], rtol=1e-15)
    np.testing.assert_allclose(grad, [[-0.5, 0.75]], rtol=1e-15)
    loss, grad = bce(logits, targets, pos_weight=np.array([3.0, 2.0]), weight=np.array([[2.0]]), reduction="sum")
    assert loss == pytest.approx(2 * (3 * math.log(2) + math.log(4)), rel=1e-15)
    np.testing.assert_allclose(grad, [[2 * 3 * -0.5, 2 * 0.75]], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits(dtype):
    logits = np.array([1e4, -1e4, 1e4, -1e4, 100.0], dtype)
    targets = np.array([1.0, 0.0, 0.0, 1.0, 0.5], dtype)
    with np.errstate(**RAISE):
        loss, grad = bce(logits, targets, pos_weight=np.full(5, 2.0, dtype), reduction="none")
    np.testing.assert_allclose(loss, [0.0, 0.0, 1e4, 2e4, 50.0], rtol=1e-6)
    np.testing.assert_allclose(grad, [0.0, 0.0, 1.0, -2.0, 0.5], rtol=1e-6)
    assert loss.dtype == grad.dtype == dtype


@pytest.mark.parametrize("call, error, match", [
    (lambda: bce(np.zeros(3), np.zeros((3, 1))), ValueError,
     "logits has shape \\(3,\\) but targets has shape \\(3, 1\\); they must match exactly \\(no broadcasting\\)"),
    (lambda: bce(np.zeros(3, np.float32), np.zeros(3)), TypeError,
     "targets has dtype float64 but logits has dtype float32; pass targets.astype\\(np.float32\\)"),
    (lambda: bce(np.zeros(3), np.zeros(3, np.int64)), TypeError, "targets has dtype int64"),
    (lambda: bce(np.zeros(3, np.int64), np.zeros(3)), TypeError,
     "logits must be a float32 or float64 array, got int64"),
    (lambda: bce(np.zeros((2, 3)), np.zeros((2, 3)), weight=np.ones((3, 1))), ValueError,
     "weight of shape \\(3, 1\\) does not broadcast to the shape \\(2, 3\\) of logits"),
    (lambda: bce(np.zeros((2, 3)), np.zeros((2, 3)), weight=np.ones((1, 2, 3))), ValueError,
     "weight of shape \\(1, 2, 3\\) does not broadcast"),
    (lambda: bce(np.zeros((2, 3)), np.zeros((2, 3)), weight=np.ones(3, np.float32)), TypeError,
     "weight has dtype float32 but logits has dtype float64"),
    (lambda: bce(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(2)), ValueError,
     "pos_weight must have shape \\(3,\\) for logits of shape \\(2, 3\\), got \\(2,\\)"),
    (lambda: bce(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=2.0), TypeError,
     "pos_weight must be a numpy array, got float"),
    (lambda: bce(np.zeros(()), np.zeros(()), pos_weight=np.ones(1)), ValueError,
     "pos_weight needs logits with a last axis of labels, got shape \\(\\)"),
    (lambda: bce(np.zeros(2), np.zeros(2), reduction="batchmean"), ValueError,
     "reduction must be one of \\['mean', 'sum', 'none'\\], got 'batchmean'"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=f"^binary_cross_entropy_with_logits: {match}"):
        call()
