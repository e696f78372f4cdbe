"""fnn.runtime.reuse_freed_memory: a process setting that leaves results bitwise the same."""

import platform

import numpy as np
import pytest

import fnn
from fnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU


def step_result():
    net = fnn.serial(Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(3))
    params = net.init(fnn.random.key(0), (1, 16, 16))
    x = fnn.random.normal(fnn.random.key(1), (64, 1, 16, 16))
    y, vjp = net.apply(params, x)
    return y, vjp(np.ones_like(y))[0]


def test_reusing_freed_memory_changes_no_result_and_can_be_undone():
    before = step_result()
    applied = fnn.runtime.reuse_freed_memory()
    try:
        assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
        after = step_result()
        assert before[0].tobytes() == after[0].tobytes()
        assert all(a.tobytes() == b.tobytes() for a, b in zip(fnn.tree.leaves(before[1]), fnn.tree.leaves(after[1])))
    finally:
        assert fnn.runtime.reuse_freed_memory(False) == applied


def test_enable_must_be_a_bool():
    with pytest.raises(TypeError, match=r"reuse_freed_memory: enable must be True or False, got str 'yes'"):
        fnn.runtime.reuse_freed_memory("yes")
