"""fnn.testing.check_layer over the registry of every public layer (tests/registry.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from registry import FIXED, NOT_ONE_FLOAT_ARRAY, PUBLIC, REGISTRY

import fnn
from fnn.layers import Dense, ReLU
from fnn.testing import ContractError, check_layer


def test_every_public_layer_and_combinator_has_a_registry_row():
    missing = sorted(set(PUBLIC) - set(REGISTRY))
    assert not missing, f"add a row to REGISTRY in tests/registry.py for {missing}"


def test_every_public_layer_of_one_float_array_has_a_fixed_row():
    fixed = {row_id.split("-")[0] for row_id, _, _ in FIXED}
    missing = sorted(set(PUBLIC) - NOT_ONE_FLOAT_ARRAY - fixed)
    assert not missing, f"add a row to FIXED in tests/registry.py for {missing}"
    assert fixed <= set(PUBLIC)


@pytest.mark.parametrize("name", sorted(REGISTRY))
@given(data=st.data())
def test_check_layer_passes(name, data):
    case = data.draw(REGISTRY[name], label="case")
    key = fnn.random.key(data.draw(st.integers(0, 2**16), label="key"))
    report = check_layer(case.layer, case.shape, batch_size=case.batch_size, x=case.x, key=key,
                         options=case.options, batch_coupled=case.batch_coupled)
    assert set(report) >= {"shapes", "gradients", "purity", "aliasing", "dtype", "layouts", "determinism"}
    params = case.layer.init(key, case.shape)
    checked = {"['params']" + fnn.tree.path_str(p) for p, _ in fnn.tree.flatten(params)[0]}
    assert checked <= set(report["gradients"])  # every parameter leaf was compared with finite differences


def _layer_with_a_bug(bug):
    """Dense(2) with one deliberate protocol violation."""
    inner = Dense(2)

    def apply(params, x, opts):
        y, vjp = inner.apply(params, x)
        if bug == "mutates":
            x[...] = 0
        if bug == "aliases":
            return x, lambda dy, need_dx=True: ({k: np.zeros_like(v) for k, v in params.items()},
                                                dy if need_dx else None)
        if bug == "no_need_dx":
            return y, lambda dy: vjp(dy)
        if bug == "need_dx_drops_grads":
            return y, lambda dy, need_dx=True: vjp(dy) if need_dx else ({k: 0 * v for k, v in vjp(dy)[0].items()},
                                                                         None)
        if bug == "wrong_grad":
            return y, lambda dy, need_dx=True: (lambda g: ({**g[0], "b": 2 * g[0]["b"]}, g[1]))(vjp(dy))
        if bug == "batch_coupled":
            return y - y.mean(axis=0), vjp
        return y, vjp

    return fnn.core.make_layer(f"buggy({bug})", lambda k, s, d: inner.init(k, s, d), apply)


@pytest.mark.parametrize("bug, match", [
    ("mutates", "determinism|purity"),
    ("aliases", "shapes|aliasing"),
    ("wrong_grad", "disagrees with finite differences"),
    ("batch_coupled", "batch independence|disagrees"),
    ("no_need_dx", "need_dx: vjp\\(dy, need_dx=False\\) failed .*serial calls it so in every training step"),
    ("need_dx_drops_grads", "need_dx: vjp\\(dy, need_dx=False\\) gave other dparams than vjp\\(dy\\)"),
])
def test_check_layer_catches_broken_layers(bug, match):
    with pytest.raises(AssertionError, match=match):
        check_layer(_layer_with_a_bug(bug), (2,))


def test_check_layer_names_the_failing_property_for_a_dtype_bug():
    def upcast(x):
        y = x.astype(np.float64) * 2
        return y, lambda dy: 2 * dy

    with pytest.raises(ContractError, match=r"check_layer\(upcast\(\)\): dtype: float32 inputs gave y of dtype"):
        check_layer(fnn.core.parameterless("upcast()", upcast), (3,))


def test_check_layer_on_a_serial_of_relu_with_kink_free_input():
    x = np.array([[0.5, -1.0, 2.0], [-0.3, 0.7, -2.0]])
    assert check_layer(fnn.serial(Dense(3), ReLU()), (3,), x=x, batch_size=2)["purity"]


def test_check_layer_runs_the_named_checks_only() -> None:
    report = check_layer(Dense(2), (3,), checks=["shapes", "need_dx"])
    assert list(report) == ["shapes", "need_dx"]
    report = check_layer(Dense(2), (3,), skip=["gradients", "layouts"])
    assert set(report) == set(fnn.testing.CHECKS) - {"gradients", "layouts"}
    with pytest.raises(ValueError, match=r"check_layer: unknown checks \['speed'\]; the checks are \['shapes'"):
        check_layer(Dense(2), (3,), checks=["speed"])


def test_check_layer_threads_the_state_of_a_stateful_layer() -> None:
    from fnn.layers import BatchNorm

    report = check_layer(BatchNorm(), (2,), options={"train": True}, batch_coupled=True, batch_size=4)
    assert report["state"] == "threaded"
    assert check_layer(Dense(2), (3,), checks=["state"])["state"] == "stateless"


def test_check_layer_on_integer_indices_skips_their_finite_differences() -> None:
    from fnn.layers import Embedding

    report = check_layer(Embedding(5, 3), (4,))
    assert set(report["gradients"]) == {"['params']['weight']"}  # no ['x']: indices are not differentiated


def test_a_stax_style_pair_gets_a_clear_message() -> None:
    def init(key, shape):
        return {}

    def apply(params, x):
        return x

    with pytest.raises(TypeError, match=r"check_layer: expected an fnn Layer, got a plain \(init, apply\) tuple"):
        check_layer((init, apply), (3,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"output_shape: expected an fnn Layer .*, got str"):
        fnn.output_shape("Dense(3)", {}, (3,))  # type: ignore[arg-type]
