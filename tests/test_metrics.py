"""fnn.metrics: accuracy, top-k accuracy and the confusion matrix against direct numpy computations."""

import numpy as np
import pytest

import fnn
from fnn.metrics import accuracy, confusion_matrix, count_correct, top_k_accuracy


def scores(n=50, c=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)), rng.integers(0, c, n)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_top_k_accuracy_is_the_label_among_the_k_largest(k):
    logits, labels = scores()
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # no ties in normal draws
    want = np.mean([labels[i] in top[i] for i in range(len(labels))])
    assert top_k_accuracy(logits, labels, k=k) == want
    assert count_correct(logits, labels, k) == round(want * len(labels))


def test_accuracy_is_the_arg_max_rule_and_agrees_with_losses_accuracy():
    logits, labels = scores(seed=1)
    want = float(np.mean(logits.argmax(axis=1) == labels))
    assert accuracy(logits, labels) == want == fnn.losses.accuracy(logits, labels)
    probabilities = np.eye(7)[labels]  # probability rows: their arg-max is the class
    assert accuracy(logits, probabilities) == want
    assert accuracy(np.zeros((0, 3)), np.zeros(0, np.int64)) == 0.0


def test_ties_go_to_the_lower_class_as_argmax_does_and_nan_rows_are_wrong():
    logits = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [np.nan, 0.0, 0.0]])
    labels = np.array([0, 1, 2, 1])
    assert count_correct(logits, labels, 1) == int(np.sum(logits[:3].argmax(axis=1) == labels[:3])) == 1
    assert count_correct(logits, labels, 2) == 3  # row 3 holds a NaN: never correct
    assert top_k_accuracy(logits.astype(np.float32), labels, k=3) == 0.75


def test_confusion_matrix_counts_pairs():
    logits, labels = scores(n=200, c=4, seed=2)
    predictions = logits.argmax(axis=1)
    want = np.zeros((4, 4), np.int64)
    for t, p in zip(labels, predictions):
        want[t, p] += 1
    got = confusion_matrix(labels, predictions, 4)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64 and np.trace(got) == count_correct(logits, labels)


@pytest.mark.parametrize("call, error, match", [
    (lambda: accuracy([[1.0, 2.0]], np.array([0])), TypeError, "outputs must be a numpy array"),
    (lambda: accuracy(np.zeros((2, 3), np.int64), np.array([0, 1])), TypeError, "float32 or float64, got int64"),
    (lambda: accuracy(np.zeros(3), np.array([0, 1, 2])), ValueError, r"shape \(N, C\)"),
    (lambda: accuracy(np.zeros((2, 3)), np.array([0, 3])), ValueError, r"labels must be in \[0, 3\)"),
    (lambda: accuracy(np.zeros((2, 3)), np.array([[0], [1]])), ValueError, r"shape \(2,\)"),
    (lambda: accuracy(np.zeros((2, 3)), np.array(["a", "b"])), TypeError, "integer classes"),
    (lambda: accuracy(np.zeros((2, 3)), np.zeros(2)), ValueError, "probability rows of shape"),
    (lambda: top_k_accuracy(np.zeros((2, 3)), np.array([0, 1]), k=4), ValueError, "^top_k_accuracy: k must be <= 3"),
    (lambda: top_k_accuracy(np.zeros((2, 3)), np.array([0, 1]), k=0), ValueError, "^top_k_accuracy: k must be >= 1"),
    (lambda: count_correct(np.zeros((2, 3)), np.array([0, 1]), k=4), ValueError, "^count_correct: k must be <= 3"),
    (lambda: confusion_matrix(np.array([0, 1]), np.array([0, 5]), 3), ValueError, r"predictions must be in"),
    (lambda: confusion_matrix(np.array([0, 1]), np.array([0]), 3), ValueError, "labels has 2 entries"),
    (lambda: confusion_matrix(np.array([0.0]), np.array([0]), 3), TypeError, "labels must be integer"),
    (lambda: confusion_matrix(np.array([0]), np.array([0]), 0), ValueError, "n_classes must be >= 1"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
