"""Learning-rate schedules checked at specific steps by hand, and their argument errors."""

import itertools
import math

import numpy as np
import pytest

from fnn import optim


def test_constant():
    s = optim.constant(0.3)
    assert [s(t) for t in (0, 1, 10, 10_000)] == [0.3] * 4


def test_step_decay_by_hand():
    s = optim.step_decay(1.0, step_size=3, gamma=0.5)
    assert [s(t) for t in range(8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert optim.step_decay(0.1, step_size=1)(2) == pytest.approx(0.001, rel=1e-12)  # gamma defaults to 0.1


def test_exponential_by_hand():
    s = optim.exponential(2.0, gamma=0.5)
    assert [s(t) for t in range(4)] == [2.0, 1.0, 0.5, 0.25]
    assert optim.exponential(1.0, gamma=1.0)(1000) == 1.0


def test_cosine_without_warmup_by_hand():
    s = optim.cosine(1.0, total_steps=4)
    assert s(0) == 1.0
    assert s(1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-15)
    assert s(2) == pytest.approx(0.5, abs=1e-15)
    assert s(3) == pytest.approx(0.5 * (1 + math.cos(3 * math.pi / 4)), abs=1e-15)
    assert s(4) == pytest.approx(0.0, abs=1e-15)
    assert s(100) == pytest.approx(0.0, abs=1e-15)  # stays at min_lr after total_steps


def test_cosine_with_min_lr_by_hand():
    s = optim.cosine(1.0, total_steps=10, min_lr=0.2)
    assert s(0) == 1.0
    assert s(5) == pytest.approx(0.6, abs=1e-15)
    assert s(10) == pytest.approx(0.2, abs=1e-15) and s(50) == pytest.approx(0.2, abs=1e-15)


def test_cosine_with_warmup_by_hand():
    s = optim.cosine(0.1, total_steps=100, warmup_steps=10)
    # linear warm-up from lr / warmup_steps, reaching lr after warmup_steps updates
    assert [round(s(t), 12) for t in range(10)] == [round(0.01 * (t + 1), 12) for t in range(10)]
    assert s(10) == pytest.approx(0.1, abs=1e-15)
    assert s(55) == pytest.approx(0.05, abs=1e-15)  # half way through the decay
    assert s(100) == pytest.approx(0.0, abs=1e-15)
    values = [s(t) for t in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # monotone decay after warm-up


def test_schedules_are_pure_functions_of_the_step():
    s = optim.cosine(0.5, total_steps=20, warmup_steps=3)
    assert [s(t) for t in range(25)] == [s(t) for t in range(25)]
    assert s(7) == optim.cosine(0.5, total_steps=20, warmup_steps=3)(7)


@pytest.mark.parametrize("make, match", [
    (lambda: optim.constant(-0.1), "lr"),
    (lambda: optim.constant(float("nan")), "lr"),
    (lambda: optim.step_decay(-1.0, 10), "lr"),
    (lambda: optim.step_decay(0.1, 0), "^step_decay: step_size must be >= 1, got 0"),
    (lambda: optim.step_decay(0.1, 10, gamma=-0.5), "gamma"),
    (lambda: optim.step_decay(0.1, 10, gamma=float("nan")), "gamma"),
    (lambda: optim.exponential(float("inf"), 0.9), "lr"),
    (lambda: optim.exponential(0.1, -0.9), "gamma"),
    (lambda: optim.cosine(-0.1, 100), "lr"),
    (lambda: optim.cosine(0.1, 0), "^cosine: total_steps must be >= 1, got 0"),
    (lambda: optim.cosine(0.1, 100, warmup_steps=-1), "^cosine: warmup_steps must be >= 0, got -1"),
    (lambda: optim.cosine(0.1, 100, warmup_steps=100), r"warmup_steps \(100\) must be less than total_steps \(100\)"),
    (lambda: optim.cosine(0.1, 100, min_lr=0.2), "min_lr"),
    (lambda: optim.cosine(0.1, 100, min_lr=-0.1), "min_lr"),
    (lambda: optim.cosine(0.1, 100, min_lr=float("nan")), "min_lr"),
])
def test_bad_schedule_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, match", [
    (lambda: optim.step_decay(0.1, 2.5), "^step_decay: step_size must be an int, got float 2.5"),
    (lambda: optim.step_decay(0.1, True), "^step_decay: step_size must be an int, got bool True"),
    (lambda: optim.step_decay(0.1, "10"), "^step_decay: step_size must be an int, got str '10'"),
    (lambda: optim.step_decay(0.1, 10, gamma="0.5"), "^step_decay: gamma must be a number, got str"),
    (lambda: optim.constant("0.1"), "^constant: lr must be a number, got str '0.1'"),
    (lambda: optim.constant(True), "^constant: lr must be a number, got bool True"),
    (lambda: optim.exponential(0.1, None), "^exponential: gamma must be a number, got NoneType None"),
    (lambda: optim.cosine(0.1, 100.0), "^cosine: total_steps must be an int, got float 100.0"),
    (lambda: optim.cosine(0.1, np.True_), "^cosine: total_steps must be an int, got bool"),
    (lambda: optim.cosine(0.1, 100, warmup_steps=False), "^cosine: warmup_steps must be an int, got bool False"),
    (lambda: optim.cosine(0.1, 100, min_lr="0"), "^cosine: min_lr must be a number, got str '0'"),
])
def test_schedule_arguments_of_the_wrong_kind_raise_type_error(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_numpy_scalar_schedule_arguments_are_accepted():
    assert optim.constant(np.float32(0.5))(3) == 0.5
    s = optim.step_decay(np.float64(1.0), step_size=np.int64(3), gamma=np.float32(0.5))
    assert [s(t) for t in range(7)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert optim.exponential(np.float32(0.5), np.float64(0.5))(2) == 0.125
    c = optim.cosine(np.float64(0.1), np.int32(100), min_lr=np.float32(0.0), warmup_steps=np.uint8(10))
    assert [c(t) for t in (0, 10, 100)] == [optim.cosine(0.1, 100, warmup_steps=10)(t) for t in (0, 10, 100)]
    assert all(type(x(5)) is float for x in (s, c))  # the numpy scalars were turned into Python numbers
