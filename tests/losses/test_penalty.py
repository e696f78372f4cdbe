"""l2_penalty: finite differences over parameter trees, by hand, and weight errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from loss_testing import as_layer_fn

from fnn import tree
from fnn.losses import l2_penalty
from fnn.testing import check_vjp_fn

BOUNDED = st.floats(-5, 5)


PARAM_TREES = st.fixed_dictionaries({
    "dense": st.fixed_dictionaries({"w": hnp.arrays(np.float64, (2, 3), elements=BOUNDED),
                                    "b": hnp.arrays(np.float64, (3,), elements=BOUNDED)}),
    "scale": hnp.arrays(np.float64, (), elements=BOUNDED),
    "empty": st.just({}),
})


@settings(deadline=None)
@given(PARAM_TREES, st.floats(0, 10))
def test_l2_penalty_grad_matches_finite_differences(params, weight):
    # Central differences of a value of size V carry rounding noise ~ 1e-16 * V / eps = 1e-10 * V. Keeping every
    # |p| >= 0.05 keeps each leaf's gradient (weight * p) far above that noise.
    params = tree.map(lambda p: np.where(p < 0, np.minimum(p, -0.05), np.maximum(p, 0.05)), params)
    check_vjp_fn(as_layer_fn(l2_penalty, weight), {}, params)


def test_l2_penalty_by_hand():
    params = {"a": np.array([1.0, 2.0]), "b": {"c": np.array([[3.0]])}}
    value, grad = l2_penalty(params, 0.1)
    assert value == pytest.approx(0.05 * 14, rel=1e-15)
    assert grad["a"].tolist() == [0.1, 0.2] and grad["b"]["c"].tolist() == [[pytest.approx(0.3)]]
    value, grad = l2_penalty(params, 0)
    assert value == 0.0 and not grad["a"].any() and not grad["b"]["c"].any()


@pytest.mark.parametrize("weight, match", [
    (-1.0, "must be in \\[0, inf\\], got -1.0"),
    (math.nan, "must be a finite number, got nan"),
    (math.inf, "must be a finite number, got inf"),
])
def test_l2_penalty_bad_weight_raises(weight, match):
    with pytest.raises(ValueError, match=f"^l2_penalty: weight {match}"):
        l2_penalty({"w": np.ones(2)}, weight)


@pytest.mark.parametrize("weight", ["0.1", None, True, np.ones(1)])
def test_l2_penalty_weight_that_is_not_a_number_raises_type_error(weight):
    with pytest.raises(TypeError, match="^l2_penalty: weight must be a number, got"):
        l2_penalty({"w": np.ones(2)}, weight)


def test_l2_penalty_takes_a_numpy_scalar_weight_as_the_python_number():
    params = {"w": np.array([1.0, -2.0], np.float32)}
    value, grad = l2_penalty(params, np.float64(0.1))
    want_value, want_grad = l2_penalty(params, 0.1)
    assert value == want_value and grad["w"].dtype == np.float32 and grad["w"].tobytes() == want_grad["w"].tobytes()
