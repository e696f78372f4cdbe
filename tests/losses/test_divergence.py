"""kl_div without PyTorch: finite differences, by hand, 0 log 0, reductions and errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from loss_testing import as_layer_fn

from fnn.losses import kl_div
from fnn.testing import check_vjp_fn


@st.composite
def kl_problem(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    log_q = draw(hnp.arrays(np.float64, shape, elements=st.floats(-5, 0)))
    p = draw(hnp.arrays(np.float64, shape, elements=st.one_of(st.just(0.0), st.floats(0, 1))))
    return log_q, p


@settings(deadline=None)
@given(problem=kl_problem(), reduction=st.sampled_from(["mean", "batchmean", "sum", "none"]),
       log_target=st.booleans())
def test_grad_matches_finite_differences(problem, reduction, log_target):
    log_q, p = problem
    with np.errstate(divide="ignore"):  # log 0 = -inf: the log-target of probability 0
        target = np.log(p) if log_target else p
    check_vjp_fn(as_layer_fn(kl_div, target, reduction=reduction, log_target=log_target), {}, log_q)


def test_by_hand():
    p, q = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]]), np.array([[0.25, 0.25, 0.5], [0.25, 0.25, 0.5]])
    terms, grad = kl_div(np.log(q), p, reduction="none")
    np.testing.assert_allclose(terms, [[0.5 * math.log(2), 0.5 * math.log(2), 0.0], [0, 0, 0]], atol=1e-16)
    np.testing.assert_array_equal(grad, -p)
    assert kl_div(np.log(q), p, reduction="batchmean")[0] == pytest.approx(math.log(2) / 2, rel=1e-15)
    assert kl_div(np.log(q), p, reduction="mean")[0] == pytest.approx(math.log(2) / 6, rel=1e-15)
    assert kl_div(np.log(q), p)[0] == kl_div(np.log(q), p, reduction="mean")[0]  # PyTorch's default
    value, grad = kl_div(np.log(q), p, reduction="sum")
    assert value == pytest.approx(math.log(2), rel=1e-15)
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    log_value, log_grad = kl_div(np.log(q), log_p, reduction="sum", log_target=True)
    assert log_value == pytest.approx(value, rel=1e-15)
    np.testing.assert_allclose(log_grad, grad, rtol=1e-15)


def test_batchmean_of_empty_batch_and_of_a_scalar():
    assert kl_div(np.zeros((0, 3)), np.zeros((0, 3)), reduction="batchmean") == (0.0, pytest.approx(np.zeros((0, 3))))
    value, grad = kl_div(np.array(-1.0), np.array(0.5), reduction="batchmean")
    assert value == pytest.approx(0.5 * (math.log(0.5) + 1), rel=1e-15) and grad.shape == () and grad == -0.5


@pytest.mark.parametrize("call, error, match", [
    (lambda: kl_div(np.zeros(2), np.array([0.5, -0.1])), ValueError,
     "target must hold probabilities >= 0 \\(or pass log_target=True for log-probabilities\\), got -0.1"),
    (lambda: kl_div(np.zeros(2), np.zeros(3)), ValueError,
     "log_input has shape \\(2,\\) but target has shape \\(3,\\)"),
    (lambda: kl_div(np.zeros(2, np.float32), np.zeros(2)), TypeError, "target has dtype float64 but log_input"),
    (lambda: kl_div([0.0], np.zeros(1)), TypeError, "log_input must be a float32 or float64 array, got list"),
    (lambda: kl_div(np.zeros(2), np.zeros(2), log_target=1), TypeError, "log_target must be True or False, got int 1"),
    (lambda: kl_div(np.zeros(2), np.zeros(2), reduction="avg"), ValueError,
     "reduction must be one of \\['mean', 'batchmean', 'sum', 'none'\\], got 'avg'"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=f"^kl_div: {match}"):
        call()
