"""What every loss promises, for every reduction: purity, dtypes and shapes, and reductions that agree."""

import math

import numpy as np
import pytest

from fnn import losses, random, tree

REDUCTIONS = {"mean", "sum", "none"}


def loss_calls(dtype):
    """name -> (loss, x, args, options, reductions) with every option of every loss in use somewhere."""
    k1, k2, k3, k4, k5 = random.split(random.key(5), 5)
    logits = random.normal(k1, (4, 3), dtype)
    seq = random.normal(k2, (2, 3, 4), dtype)
    probs = random.uniform(k3, (4, 3), np.float64)
    other = random.normal(k4, (4, 3), dtype)
    soft = random.uniform(k5, (4, 3), dtype)
    log_q = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    seq_labels = np.array([[0, 3, -1], [2, -1, 1]])
    class_weight = np.array([0.5, 2.0, 0.0, 1.0], dtype)
    return {
        "sce-int": (losses.softmax_cross_entropy, logits, (np.array([0, 2, 1, 2]),), {}, REDUCTIONS),
        "sce-int-smooth": (losses.softmax_cross_entropy, logits, (np.array([0, 2, 1, 2]),), {"label_smoothing": 0.2},
                           REDUCTIONS),
        "sce-seq-options": (losses.softmax_cross_entropy, seq, (seq_labels,),
                            {"weight": class_weight, "ignore_index": -1, "label_smoothing": 0.1}, REDUCTIONS),
        "sce-prob": (losses.softmax_cross_entropy, logits, (probs / probs.sum(axis=1, keepdims=True),), {}, REDUCTIONS),
        "sce-prob-smooth": (losses.softmax_cross_entropy, logits, (probs,),
                            {"label_smoothing": 0.5, "weight": class_weight[:3]}, REDUCTIONS),
        "nll": (losses.nll_loss, seq, (seq_labels,), {"weight": class_weight, "ignore_index": -1}, REDUCTIONS),
        "bce": (losses.binary_cross_entropy_with_logits, logits, (soft,),
                {"weight": soft[:, :1].copy(), "pos_weight": np.array([1.0, 2.0, 0.5], dtype)}, REDUCTIONS),
        "mse": (losses.mse, logits, (other,), {}, REDUCTIONS),
        "l1": (losses.l1_loss, logits, (other,), {}, REDUCTIONS),
        "huber": (losses.huber_loss, logits, (other,), {"delta": 0.8}, REDUCTIONS),
        "smooth_l1": (losses.smooth_l1_loss, logits, (other,), {"beta": 0.8}, REDUCTIONS),
        "kl_div": (losses.kl_div, log_q, (soft,), {}, REDUCTIONS | {"batchmean"}),
        "kl_div-log": (losses.kl_div, log_q, (np.log(soft),), {"log_target": True}, REDUCTIONS | {"batchmean"}),
        "l2_penalty": (losses.l2_penalty, {"w": logits, "b": logits[0].copy()}, (0.5,), {}, {None}),
    }


CASES = [(name, reduction) for name, call in sorted(loss_calls(np.float64).items()) for reduction in sorted(call[4],
                                                                                                          key=str)]


def call(name, reduction, dtype):
    fn, x, args, options, _ = loss_calls(dtype)[name]
    if reduction is not None:
        options = {**options, "reduction": reduction}
    return fn, x, args, options


def test_every_public_loss_is_here():
    assert {call[0].__name__ for call in loss_calls(np.float64).values()} == set(losses.__all__) - {"accuracy"}


@pytest.mark.parametrize("name, reduction", CASES)
def test_losses_are_pure(name, reduction):
    fn, x, args, options = call(name, reduction, np.float64)
    inputs = [*tree.leaves(x), *(a for a in [*args, *options.values()] if isinstance(a, np.ndarray))]
    copies = [a.copy() for a in inputs]
    for a in inputs:
        a.setflags(write=False)
    (v1, g1), (v2, g2) = fn(x, *args, **options), fn(x, *args, **options)
    assert np.asarray(v1).tobytes() == np.asarray(v2).tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(g1), tree.leaves(g2), strict=True))
    assert all(a.tobytes() == c.tobytes() for a, c in zip(inputs, copies, strict=True))
    outputs = [*tree.leaves(g1), *([v1] if isinstance(v1, np.ndarray) else [])]
    assert not any(np.shares_memory(out, a) for out in outputs for a in inputs)


@pytest.mark.parametrize("name, reduction", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_keep_dtype_and_shape(name, reduction, dtype):
    fn, x, args, options = call(name, reduction, dtype)
    with np.errstate(all="raise"):
        value, grad = fn(x, *args, **options)
    tree.check_same_structure(x, grad, shapes=True)
    assert all(g.dtype == dtype for g in tree.leaves(grad))
    if reduction == "none":
        per_position = x.shape[:-1] if fn in (losses.softmax_cross_entropy, losses.nll_loss) else x.shape
        assert isinstance(value, np.ndarray) and value.dtype == dtype and value.shape == per_position
    else:
        assert type(value) is float and math.isfinite(value)


@pytest.mark.parametrize("name, reduction", [case for case in CASES if case[1] != "none" and case[1] is not None])
def test_float32_agrees_with_float64(name, reduction):
    fn, x, args, options = call(name, reduction, np.float64)
    value, grad = fn(x, *args, **options)
    fn, x32, args32, options32 = call(name, reduction, np.float32)
    value32, grad32 = fn(x32, *args32, **options32)
    assert value32 == pytest.approx(value, rel=2e-6, abs=1e-6)
    np.testing.assert_allclose(grad32, grad, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(n for n, c in loss_calls(np.float64).items() if "none" in c[4]))
def test_sum_is_the_sum_of_none(name):
    fn, x, args, options = call(name, "none", np.float64)
    per_position, grad = fn(x, *args, **options)
    total, total_grad = fn(x, *args, **{**options, "reduction": "sum"})
    assert total == pytest.approx(float(per_position.sum()), rel=1e-14)
    np.testing.assert_array_equal(total_grad, grad)


@pytest.mark.parametrize("loss_fn, args", [
    (losses.softmax_cross_entropy, (np.array([[0.5, -1.0, 2.0], [0.1, 0.2, 0.3]]), np.array([2, 0]))),
    (losses.nll_loss, (np.array([[0.5, -1.0, 2.0], [0.1, 0.2, 0.3]]), np.array([2, 0]))),
    (losses.binary_cross_entropy_with_logits, (np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([[0, 1.0], [1, 1]]))),
    (losses.mse, (np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 1.0]]))),
    (losses.l1_loss, (np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 1.0]]))),
    (losses.huber_loss, (np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 1.0]]))),
    (losses.smooth_l1_loss, (np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 1.0]]))),
    (losses.kl_div, (np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([[0.0, 1.0], [1.0, 1.0]]))),
])
def test_sum_reduction_is_the_mean_times_the_count(loss_fn, args):
    mean, dmean = loss_fn(*args)
    total, dtotal = loss_fn(*args, reduction="sum")
    count = args[0].shape[0] if loss_fn in (losses.softmax_cross_entropy, losses.nll_loss) else args[0].size
    assert total == pytest.approx(mean * count, rel=1e-12)
    np.testing.assert_allclose(dtotal, dmean * count, rtol=1e-12)


def test_batchmean_divides_the_sum_by_the_batch_size():
    log_q, p = np.log(np.full((2, 3, 4), 0.25)), np.full((2, 3, 4), 0.5)
    total, dtotal = losses.kl_div(log_q, p, reduction="sum")
    value, grad = losses.kl_div(log_q, p, reduction="batchmean")
    assert value == pytest.approx(total / 2, rel=1e-15)
    np.testing.assert_allclose(grad, dtotal / 2, rtol=1e-15)


@pytest.mark.parametrize("loss_fn, args", [
    (losses.softmax_cross_entropy, (np.zeros((2, 3)), np.array([0, 1]))),
    (losses.nll_loss, (np.zeros((2, 3)), np.array([0, 1]))),
    (losses.binary_cross_entropy_with_logits, (np.zeros(2), np.zeros(2))),
    (losses.mse, (np.zeros(2), np.zeros(2))),
    (losses.l1_loss, (np.zeros(2), np.zeros(2))),
    (losses.huber_loss, (np.zeros(2), np.zeros(2))),
    (losses.smooth_l1_loss, (np.zeros(2), np.zeros(2))),
])
def test_unknown_reduction_raises(loss_fn, args):
    name = loss_fn.__name__
    options = "\\['mean', 'sum', 'none'\\]"
    with pytest.raises(ValueError, match=f"^{name}: reduction must be one of {options}, got 'batchmean'"):
        loss_fn(*args, reduction="batchmean")
    with pytest.raises(TypeError, match=f"^{name}: reduction must be one of {options}, got NoneType"):
        loss_fn(*args, reduction=None)
