"""Every loss and option against PyTorch in float64: value and gradient to 1e-10, edge cases included.

PyTorch puts the classes on axis 1; fnn on the last axis: torch sees ``np.moveaxis(x, -1, 1)``.
"""

import math

import numpy as np
import pytest

from fnn import losses, random

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ["mean", "sum", "none"]
TOL = {"rtol": 1e-10, "atol": 1e-12}


def torch_loss(fn, x, *args, classes_last=False, **kwargs):
    """Value and the gradient of ``value.sum()`` with respect to ``x``, as numpy (classes moved back last)."""
    xt = torch.tensor(np.ascontiguousarray(np.moveaxis(x, -1, 1)) if classes_last else x, requires_grad=True)
    out = fn(xt, *args, **kwargs)
    out.sum().backward()
    grad = xt.grad.numpy()
    return out.detach().numpy(), np.moveaxis(grad, 1, -1) if classes_last else grad


def assert_matches(ours, theirs):
    (value, grad), (want_value, want_grad) = ours, theirs
    if isinstance(value, float):
        assert want_value.shape == ()
    np.testing.assert_allclose(value, want_value, **TOL)
    np.testing.assert_allclose(grad, want_grad, **TOL)


def tensor(a):
    return None if a is None else torch.tensor(a)


# ---------------------------------------------------------------- softmax_cross_entropy and nll_loss

SHAPES = [(6, 4), (3, 5, 4), (2, 3, 2, 4)]  # (N, C), (N, T, C), (N, H, W, C)
CLASS_WEIGHT = np.array([0.5, 2.0, 0.0, 1.5])  # class 2 has weight 0


def class_case(shape, ignore_index, seed=0):
    k1, k2, k3 = random.split(random.key(seed), 3)
    logits = 3 * random.normal(k1, shape, np.float64)
    labels = (random.uniform(k2, shape[:-1], np.float64) * shape[-1]).astype(np.int64)
    if ignore_index is not None:
        labels = np.where(random.uniform(k3, shape[:-1], np.float64) < 0.3, ignore_index, labels)
    return logits, labels


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, CLASS_WEIGHT], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore_index", [None, -100, 1], ids=["no-ignore", "ignore-100", "ignore-class1"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_softmax_cross_entropy_with_class_indices(shape, reduction, weight, ignore_index, label_smoothing):
    logits, labels = class_case(shape, ignore_index)
    ours = losses.softmax_cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index,
                                        reduction=reduction, label_smoothing=label_smoothing)
    theirs = torch_loss(F.cross_entropy, logits, torch.tensor(labels), classes_last=True, weight=tensor(weight),
                        ignore_index=-100 if ignore_index is None else ignore_index, reduction=reduction,
                        label_smoothing=label_smoothing)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, CLASS_WEIGHT], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("rows", ["distributions", "nonnegative"])
def test_softmax_cross_entropy_with_probability_rows(shape, reduction, weight, label_smoothing, rows):
    logits, _ = class_case(shape, None)
    target = random.uniform(random.key(7), shape, np.float64)
    if rows == "distributions":
        target /= target.sum(axis=-1, keepdims=True)
    ours = losses.softmax_cross_entropy(logits, target, weight=weight, reduction=reduction,
                                        label_smoothing=label_smoothing)
    theirs = torch_loss(F.cross_entropy, logits, torch.tensor(np.moveaxis(target, -1, 1)), classes_last=True,
                        weight=tensor(weight), reduction=reduction, label_smoothing=label_smoothing)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, CLASS_WEIGHT], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore_index", [None, -100, 1], ids=["no-ignore", "ignore-100", "ignore-class1"])
def test_nll_loss(shape, reduction, weight, ignore_index):
    logits, labels = class_case(shape, ignore_index, seed=3)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    ours = losses.nll_loss(log_probs, labels, weight=weight, ignore_index=ignore_index, reduction=reduction)
    theirs = torch_loss(F.nll_loss, log_probs, torch.tensor(labels), classes_last=True, weight=tensor(weight),
                        ignore_index=-100 if ignore_index is None else ignore_index, reduction=reduction)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("loss, label_smoothing", [("cross_entropy", 0.0), ("cross_entropy", 0.25),
                                                    ("nll_loss", 0.0)])
@pytest.mark.parametrize("weight", [None, CLASS_WEIGHT], ids=["unweighted", "weighted"])
def test_every_target_ignored_gives_nan_and_a_zero_gradient_like_pytorch(loss, label_smoothing, weight):
    logits = random.normal(random.key(1), (2, 3, 4), np.float64)
    labels = np.full((2, 3), -1)
    smooth = {"label_smoothing": label_smoothing} if label_smoothing else {}
    ours_fn = losses.softmax_cross_entropy if loss == "cross_entropy" else losses.nll_loss
    torch_fn = F.cross_entropy if loss == "cross_entropy" else F.nll_loss
    for reduction in REDUCTIONS:
        value, grad = ours_fn(logits, labels, weight=weight, ignore_index=-1, reduction=reduction, **smooth)
        want, want_grad = torch_loss(torch_fn, logits, torch.tensor(labels), classes_last=True, weight=tensor(weight),
                                     ignore_index=-1, reduction=reduction, **smooth)
        if reduction == "mean":
            assert math.isnan(value) and np.isnan(want)
        else:
            np.testing.assert_array_equal(value, want)
        np.testing.assert_array_equal(grad, np.zeros_like(logits))
        np.testing.assert_array_equal(want_grad, grad)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_every_target_of_class_weight_zero_gives_nan_with_a_zero_gradient(label_smoothing):
    """PyTorch agrees on the NaN value; its gradient is NaN here (0/0 in the backward), fnn's is zero."""
    logits = random.normal(random.key(2), (4, 4), np.float64)
    labels = np.array([2, 2, 2, 2])  # CLASS_WEIGHT[2] == 0
    value, grad = losses.softmax_cross_entropy(logits, labels, weight=CLASS_WEIGHT, label_smoothing=label_smoothing)
    want, want_grad = torch_loss(F.cross_entropy, logits, torch.tensor(labels), weight=tensor(CLASS_WEIGHT),
                                 label_smoothing=label_smoothing)
    assert math.isnan(value) and np.isnan(want)
    assert np.isnan(want_grad).any()  # the documented difference
    np.testing.assert_array_equal(grad, np.zeros_like(logits))
    for reduction in ("sum", "none"):  # nothing to divide: both agree exactly
        assert_matches(losses.softmax_cross_entropy(logits, labels, weight=CLASS_WEIGHT, reduction=reduction,
                                                    label_smoothing=label_smoothing),
                       torch_loss(F.cross_entropy, logits, torch.tensor(labels), weight=tensor(CLASS_WEIGHT),
                                  reduction=reduction, label_smoothing=label_smoothing))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weight", [None, CLASS_WEIGHT], ids=["unweighted", "weighted"])
def test_softmax_cross_entropy_with_extreme_logits(reduction, label_smoothing, weight):
    logits = np.array([[1e4, -1e4, 0.0, 5.0], [-1e4, -1e4, 1e4, 1e4], [-1e4, 3.0, 1e4, -2.0]])
    labels = np.array([1, 3, 0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ours = losses.softmax_cross_entropy(logits, labels, weight=weight, reduction=reduction,
                                            label_smoothing=label_smoothing)
    assert np.isfinite(ours[0]).all() and np.isfinite(ours[1]).all()
    assert_matches(ours, torch_loss(F.cross_entropy, logits, torch.tensor(labels), weight=tensor(weight),
                                    reduction=reduction, label_smoothing=label_smoothing))


# ---------------------------------------------------------------- binary_cross_entropy_with_logits

def binary_case(shape, hard, seed=4):
    k1, k2 = random.split(random.key(seed), 2)
    logits = 3 * random.normal(k1, shape, np.float64)
    targets = random.uniform(k2, shape, np.float64)
    return logits, (targets < 0.5).astype(np.float64) if hard else targets


BINARY_WEIGHTS = {"none": lambda s: None, "per-label": lambda s: np.linspace(0.0, 2.0, s[-1]),
                  "per-example": lambda s: np.linspace(0.5, 1.5, s[0]).reshape(s[0], *[1] * (len(s) - 1)),
                  "full": lambda s: random.uniform(random.key(9), s, np.float64)}


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", sorted(BINARY_WEIGHTS))
@pytest.mark.parametrize("pos_weight", [False, True], ids=["no-pos-weight", "pos-weight"])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_binary_cross_entropy_with_logits(shape, reduction, weight, pos_weight, hard):
    logits, targets = binary_case(shape, hard)
    w = BINARY_WEIGHTS[weight](shape)
    pw = np.array([0.5, 1.0, 3.0]) if pos_weight else None
    ours = losses.binary_cross_entropy_with_logits(logits, targets, weight=w, pos_weight=pw, reduction=reduction)
    theirs = torch_loss(F.binary_cross_entropy_with_logits, logits, torch.tensor(targets), weight=tensor(w),
                        pos_weight=tensor(pw), reduction=reduction)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [False, True], ids=["no-pos-weight", "pos-weight"])
def test_binary_cross_entropy_with_extreme_logits(reduction, pos_weight):
    logits = np.array([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4], [0.0, 40.0, -40.0]])
    targets = np.array([[1.0, 0.0, 0.0], [1.0, 0.3, 0.0], [0.5, 1.0, 1.0]])
    pw = np.array([0.5, 1.0, 3.0]) if pos_weight else None
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ours = losses.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw, reduction=reduction)
    assert np.isfinite(ours[0]).all() and np.isfinite(ours[1]).all()
    assert_matches(ours, torch_loss(F.binary_cross_entropy_with_logits, logits, torch.tensor(targets),
                                    pos_weight=tensor(pw), reduction=reduction))


# ---------------------------------------------------------------- regression losses

REGRESSION = {
    "mse": (losses.mse, F.mse_loss, {}),
    "l1_loss": (losses.l1_loss, F.l1_loss, {}),
    **{f"huber_loss-{d}": (losses.huber_loss, F.huber_loss, {"delta": d}) for d in (0.5, 1.0, 2.5)},
    **{f"smooth_l1_loss-{b}": (losses.smooth_l1_loss, F.smooth_l1_loss, {"beta": b}) for b in (0.0, 0.5, 1.0, 2.5)},
}


@pytest.mark.parametrize("name", sorted(REGRESSION))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (4, 3), (2, 3, 4)], ids=str)
def test_regression_losses(name, reduction, shape):
    ours_fn, torch_fn, options = REGRESSION[name]
    k1, k2 = random.split(random.key(5), 2)
    pred, target = 2 * random.normal(k1, shape, np.float64), random.normal(k2, shape, np.float64)
    pred.flat[0] = target.flat[0]  # a zero difference: PyTorch's gradient there is 0 for every loss
    ours = ours_fn(pred, target, reduction=reduction, **options)
    assert_matches(ours, torch_loss(torch_fn, pred, torch.tensor(target), reduction=reduction, **options))


# ---------------------------------------------------------------- kl_div

def kl_case(shape):
    k1, k2 = random.split(random.key(6), 2)
    q, p = np.exp(random.normal(k1, shape, np.float64)), np.exp(2 * random.normal(k2, shape, np.float64))
    return np.log(q / q.sum(axis=-1, keepdims=True)), p / p.sum(axis=-1, keepdims=True)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)], ids=str)
def test_kl_div(reduction, log_target, shape):
    log_q, p = kl_case(shape)
    if not log_target:
        p[0, 0] = 0.0  # 0 * log 0 = 0
    target = np.log(p) if log_target else p
    ours = losses.kl_div(log_q, target, reduction=reduction, log_target=log_target)
    assert_matches(ours, torch_loss(F.kl_div, log_q, torch.tensor(target), reduction=reduction,
                                    log_target=log_target))


def test_kl_div_log_target_of_probability_zero_adds_zero_where_pytorch_gives_nan():
    log_q, p = kl_case((3, 4))
    target = np.log(p)
    target[0, 0] = -np.inf
    value, grad = losses.kl_div(log_q, target, reduction="none", log_target=True)
    want, want_grad = torch_loss(F.kl_div, log_q, torch.tensor(target), reduction="none", log_target=True)
    assert np.isnan(want[0, 0]) and value[0, 0] == 0.0 and grad[0, 0] == want_grad[0, 0] == 0.0
    mask = np.ones(target.shape, bool)
    mask[0, 0] = False
    np.testing.assert_allclose(value[mask], want[mask], **TOL)
    np.testing.assert_allclose(grad, want_grad, **TOL)


def test_every_option_combination_is_covered():
    """The parametrizations above span every loss x reduction: a guard against dropping one by accident."""
    names = {"softmax_cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "mse", "l1_loss",
             "huber_loss", "smooth_l1_loss", "kl_div"}
    covered = {"softmax_cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "kl_div",
               *(REGRESSION[n][0].__name__ for n in REGRESSION)}
    assert covered == names == set(losses.__all__) - {"l2_penalty", "accuracy"}
