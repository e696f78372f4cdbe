"""fnn.testing: the gradient checker passes correct vjps and catches deliberately wrong ones."""

import numpy as np
import pytest

from fnn import random, tree
from fnn.core import make_layer
from fnn.layers import Dense
from fnn.testing import GradientCheckError, check_vjp, check_vjp_fn

KEY = random.key(0)


def Cube(dx_factor=1.0, dw_factor=1.0, flip_one_dx=False, dparams_keys=("w",)):
    """``y = w * x**3`` over the last axis; its vjp can be made wrong on purpose."""

    def init(key, shape, dtype):
        return {"w": random.normal(key, shape[-1:], dtype)}

    def apply(params, x, opts):
        w = params["w"]

        def vjp(dy, need_dx=True):
            dw = dw_factor * (dy * x**3).reshape(-1, x.shape[-1]).sum(axis=0)
            dx = dx_factor * dy * 3 * w * x**2
            if flip_one_dx:
                dx = dx.copy()
                dx.flat[len(dx.flat) // 2] *= -1
            return {k: dw for k in dparams_keys}, dx

        return w * x**3, vjp

    return make_layer("Cube()", init, apply)


def inputs(shape, dtype=np.float64):
    x = random.uniform(random.key(1), shape, dtype, 0.5, 1.5)
    return Cube().init(KEY, shape[1:], dtype), x


def test_correct_vjps_pass_and_every_leaf_is_reported():
    params, x = inputs((3, 4))
    errors = check_vjp(Cube(), params, x)
    assert set(errors) == {"['params']['w']", "['x']"}
    assert max(errors.values()) < 1e-7
    dense = Dense(3)
    errors = check_vjp(dense, dense.init(KEY, (2, 4)), random.normal(random.key(2), (3, 2, 4), np.float64))
    assert set(errors) == {"['params']['w']", "['params']['b']", "['x']"}


def test_float32_inputs_are_checked_in_float64():
    params, x = inputs((3, 4), np.float32)
    assert max(check_vjp(Cube(), params, x).values()) < 1e-7


def test_wrong_dx_is_caught_and_named():
    params, x = inputs((3, 4))
    with pytest.raises(GradientCheckError, match="vjp disagrees with finite differences") as info:
        check_vjp(Cube(dx_factor=1.001), params, x)
    assert "['x']" in str(info.value) and "['params']['w']" not in str(info.value)


def test_wrong_dparams_are_caught_and_named():
    params, x = inputs((3, 4))
    with pytest.raises(GradientCheckError) as info:
        check_vjp(Cube(dw_factor=-1.0), params, x)
    assert "['params']['w']" in str(info.value) and "['x']" not in str(info.value)


def test_one_wrong_entry_in_a_leaf_checked_along_random_directions_is_caught():
    params, x = inputs((50, 12))  # 600 entries > max_entries: checked along random directions
    assert check_vjp(Cube(), params, x)["['x']"] < 1e-7
    with pytest.raises(GradientCheckError, match="\\['x'\\]"):
        check_vjp(Cube(flip_one_dx=True), params, x)
    with pytest.raises(GradientCheckError, match="\\['x'\\]"):  # and entry by entry
        check_vjp(Cube(flip_one_dx=True), params, x, max_entries=1000)


def test_tolerance_settings_are_honoured():
    params, x = inputs((3, 4))
    with pytest.raises(GradientCheckError):
        check_vjp(Cube(dx_factor=1 + 1e-3), params, x)
    errors = check_vjp(Cube(dx_factor=1 + 1e-3), params, x, rtol=1e-2)
    assert 5e-4 < errors["['x']"] < 2e-3


def test_dparams_of_the_wrong_structure_raise():
    params, x = inputs((3, 4))
    with pytest.raises(ValueError, match="check_vjp: .*unexpected key\\(s\\) 'v'"):
        check_vjp(Cube(dparams_keys=("w", "v")), params, x)


def test_apply_options_reach_the_layer_and_the_same_key_gives_the_same_noise():
    def init(key, shape, dtype):
        return {}

    def apply(params, x, opts):
        assert opts.train
        noise = random.normal(opts.key, x.shape, x.dtype)
        return x * noise, lambda dy, need_dx=True: ({}, dy * noise)

    layer = make_layer("Noisy()", init, apply)
    x = inputs((2, 3))[1]
    assert check_vjp(layer, {}, x, train=True, key=random.key(5), check_key=random.key(6))["['x']"] < 1e-7


def test_check_vjp_fn_on_a_function_of_trees():
    def f(params, x):
        y = {"sum": params["a"] * x, "prod": params["b"]["c"] * x**2}

        def vjp(dy):
            return ({"a": np.vdot(dy["sum"], x).reshape(()), "b": {"c": np.vdot(dy["prod"], x**2).reshape(())}},
                    dy["sum"] * params["a"] + 2 * dy["prod"] * params["b"]["c"] * x)

        return y, vjp

    params = {"a": np.array(1.5), "b": {"c": np.array(-0.5)}}
    errors = check_vjp_fn(f, params, np.linspace(-1, 1, 5))
    assert set(errors) == {"['params']['a']", "['params']['b']['c']", "['x']"}

    def wrong(params, x):
        y, vjp = f(params, x)
        return y, lambda dy: (tree.scale(1.0, vjp(dy)[0]), vjp(dy)[1] + 1e-3)

    with pytest.raises(GradientCheckError, match="\\['x'\\]"):
        check_vjp_fn(wrong, params, np.linspace(-1, 1, 5))
