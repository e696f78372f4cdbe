"""mse, l1_loss, huber_loss and smooth_l1_loss without PyTorch: finite differences away from the kinks, by hand,
and argument errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from loss_testing import as_layer_fn

from fnn import random
from fnn.losses import huber_loss, l1_loss, mse, smooth_l1_loss
from fnn.testing import check_vjp_fn

BOUNDED = st.floats(-5, 5)
REDUCTION = st.sampled_from(["mean", "sum", "none"])
LOSSES = {"mse": (mse, {}), "l1_loss": (l1_loss, {}), "huber_loss": (huber_loss, {"delta": 0.7}),
          "smooth_l1_loss": (smooth_l1_loss, {"beta": 0.7}), "smooth_l1_loss-0": (smooth_l1_loss, {"beta": 0.0})}


@st.composite
def pred_and_target(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    return (draw(hnp.arrays(np.float64, shape, elements=BOUNDED)),
            draw(hnp.arrays(np.float64, shape, elements=BOUNDED)))


def away_from_kinks(pred, target, kinks):
    """``pred`` moved so that no ``|pred - target|`` is within 1e-3 of a point where the loss has no derivative
    (0, and 0.7 for Huber / smooth L1): finite differences straddling a kink measure neither side."""
    d = pred - target
    for k in kinks:
        a = np.abs(d)
        d = np.where(np.abs(a - k) < 1e-3, np.sign(d + 1e-12) * (k + 2e-3), d)
    return target + d


@pytest.mark.parametrize("name", sorted(LOSSES))
@settings(deadline=None)
@given(pt=pred_and_target(), reduction=REDUCTION)
def test_grad_matches_finite_differences(name, pt, reduction):
    fn, options = LOSSES[name]
    pred, target = pt
    if fn is not mse:
        pred = away_from_kinks(pred, target, [0.0, *options.values()])
    check_vjp_fn(as_layer_fn(fn, target, reduction=reduction, **options), {}, pred)


def test_mse_by_hand():
    loss, grad = mse(np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert loss == (1 + 4 + 4 + 0) / 4
    assert grad.tolist() == [[0.5, 1.0], [1.0, 0.0]]
    assert mse(np.zeros((0, 2)), np.zeros((0, 2))) == (0.0, pytest.approx(np.zeros((0, 2))))
    losses, grad = mse(np.array([1.0, -2.0]), np.zeros(2), reduction="none")
    assert losses.tolist() == [1.0, 4.0] and grad.tolist() == [2.0, -4.0]


def test_l1_by_hand():
    loss, grad = l1_loss(np.array([1.0, -2.0, 0.5, 3.0]), np.array([0.0, 0.0, 0.5, 1.0]))
    assert loss == (1 + 2 + 0 + 2) / 4
    assert grad.tolist() == [0.25, -0.25, 0.0, 0.25]  # 0 at a zero difference, as PyTorch


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_huber_and_smooth_l1_by_hand(scale):
    d = np.array([0.0, 0.25, -0.25, 1.0, -3.0]) * scale
    huber, dhuber = huber_loss(d, np.zeros(5), delta=scale, reduction="none")
    smooth, dsmooth = smooth_l1_loss(d, np.zeros(5), beta=scale, reduction="none")
    want = np.array([0.0, 0.03125, 0.03125, 0.5, 2.5]) * scale ** 2  # quadratic inside, linear outside
    np.testing.assert_allclose(huber, want, rtol=1e-15)
    np.testing.assert_allclose(dhuber, np.array([0.0, 0.25, -0.25, 1.0, -1.0]) * scale, rtol=1e-15)
    np.testing.assert_allclose(smooth * scale, huber, rtol=1e-15)  # huber = delta * smooth_l1(beta=delta)
    np.testing.assert_allclose(dsmooth * scale, dhuber, rtol=1e-15)


def test_smooth_l1_with_beta_zero_is_l1():
    k1, k2 = random.split(random.key(0), 2)
    pred, target = random.normal(k1, (3, 4), np.float32), random.normal(k2, (3, 4), np.float32)
    for reduction in ("mean", "sum", "none"):
        a, b = smooth_l1_loss(pred, target, beta=0.0, reduction=reduction), l1_loss(pred, target, reduction=reduction)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_mse_refuses_silent_broadcasting():
    """(N,) predictions against (N, 1) targets would broadcast to (N, N) and give a wrong loss."""
    with pytest.raises(ValueError, match="pred has shape \\(4,\\) but target has shape \\(4, 1\\); they must "
                                         "match exactly \\(no broadcasting\\)"):
        mse(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="pred has shape \\(4, 1\\) but target has shape \\(4,\\)"):
        mse(np.zeros((4, 1)), np.zeros(4))


@pytest.mark.parametrize("fn", [mse, l1_loss, huber_loss, smooth_l1_loss])
@pytest.mark.parametrize("pred", [np.zeros(2, np.int64), np.zeros(2, np.float16), np.zeros(2, bool),
                                  np.zeros(2, object), [0.0, 0.0]])
def test_non_float_pred_raises(fn, pred):
    with pytest.raises(TypeError, match=f"^{fn.__name__}: pred must be a float32 or float64 array"):
        fn(pred, np.zeros(2))


@pytest.mark.parametrize("fn", [mse, l1_loss, huber_loss, smooth_l1_loss])
def test_target_errors(fn):
    name = fn.__name__
    with pytest.raises(TypeError, match=f"^{name}: target has dtype float64 but pred has dtype float32; pass "
                                        "target.astype\\(np.float32\\) \\(nothing is cast silently\\)"):
        fn(np.zeros(2, np.float32), np.zeros(2))
    with pytest.raises(ValueError, match=f"^{name}: pred has shape \\(2, 3\\) but target has shape \\(3,\\)"):
        fn(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(TypeError, match=f"^{name}: target must be a real numeric array, got dtype object"):
        fn(np.zeros(2), np.array([1.0, None]))
    with pytest.raises(ValueError, match=f"^{name}: reduction must be one of \\['mean', 'sum', 'none'\\], got 'avg'"):
        fn(np.zeros(2), np.zeros(2), reduction="avg")


@pytest.mark.parametrize("call, error, match", [
    (lambda: huber_loss(np.zeros(2), np.zeros(2), delta=0.0), ValueError, "^huber_loss: delta must be in \\(0, inf\\]"),
    (lambda: huber_loss(np.zeros(2), np.zeros(2), delta=-1), ValueError, "^huber_loss: delta must be in"),
    (lambda: huber_loss(np.zeros(2), np.zeros(2), delta="1"), TypeError, "^huber_loss: delta must be a number"),
    (lambda: smooth_l1_loss(np.zeros(2), np.zeros(2), beta=-0.5), ValueError,
     "^smooth_l1_loss: beta must be in \\[0, inf\\], got -0.5"),
    (lambda: smooth_l1_loss(np.zeros(2), np.zeros(2), beta=np.inf), ValueError,
     "^smooth_l1_loss: beta must be a finite number"),
    (lambda: huber_loss(np.zeros(2), np.zeros(2), 1.0), TypeError, "positional"),
])
def test_option_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
