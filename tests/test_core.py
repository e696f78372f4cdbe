"""fnn.core: Layer, Output, make_layer and serial (names, shape threading, options, keys, state)."""

import numpy as np
import pytest

import fnn
from fnn import random, tree
from fnn.combinators import serial
from fnn.core import Layer, Options, Output, make_layer, output_shape
from fnn.layers import Dense, Flatten, LeakyReLU, LogSoftmax, ReLU, Softmax, Tanh
from fnn.testing import check_vjp

KEY = random.key(0)


def passthrough_vjp(dy, need_dx=True):
    return {}, dy.copy() if need_dx else None


def Scale(log, trainable):
    """``y = s * x`` with ``s`` a parameter when ``trainable`` (else the constant 2); its vjp logs ``need_dx``."""

    def init(key, shape, dtype):
        return {"s": np.array(3.0, dtype)} if trainable else {}

    def apply(params, x, opts):
        s = params["s"] if trainable else x.dtype.type(2)

        def vjp(dy, need_dx=True):
            log.append(need_dx)
            return ({"s": np.vdot(dy, x)} if trainable else {}), (dy * s if need_dx else None)

        return x * s, vjp

    return make_layer("Scale()", init, apply)


def Counter():
    """A fake stateful layer: ``y = x + count``; ``count`` (its state, initially 0) grows by one per train call."""

    def init(key, shape, dtype):
        return {}

    def apply(params, x, opts):
        count = 0 if opts.state is None or opts.state is fnn.INITIAL_STATE else int(opts.state["count"])
        y = x + x.dtype.type(count)
        return Output(y, passthrough_vjp, {"count": np.array(count + 1 if opts.train else count)})

    return make_layer("Counter()", init, apply)


def Noise(log):
    """A fake random layer: adds ``normal(key)`` noise in training (a key is then required); records its options
    and init keys in ``log``."""

    def init(key, shape, dtype):
        log.append(("init", key))
        return {}

    def apply(params, x, opts):
        log.append(("apply", opts))
        if not opts.train:
            return x.copy(), passthrough_vjp
        if opts.key is None:
            raise ValueError("Noise(): train=True needs a key")
        return x + random.normal(opts.key, x.shape, x.dtype), passthrough_vjp

    return make_layer("Noise()", init, apply)


def x_of(shape, dtype=np.float32, seed=1):
    return random.normal(random.key(seed), shape, dtype)


# ---------------------------------------------------------------- Layer, Output, make_layer

def test_layer_is_an_init_apply_pair_with_kind_and_children():
    layer = Dense(3)
    init, apply = layer
    assert init is layer.init and apply is layer.apply
    assert isinstance(layer, Layer) and isinstance(layer, tuple) and len(layer) == 2
    assert layer.kind == "Dense(3)" and repr(layer) == "Dense(3)" and layer.children == ()
    net = serial(layer, ("act", ReLU()))
    assert [name for name, _ in net.children] == ["dense_0", "act"] and net.children[0][1] is layer


def test_output_is_a_pair_with_state():
    def vjp(dy, need_dx=True):
        return {}, dy

    out = Output(np.zeros(1), vjp)
    y, v = out
    assert v is vjp and out.y is y and out.vjp is vjp and out.state == {}
    assert Output(y, vjp, {"n": 1}).state == {"n": 1}


def test_make_layer_passes_validated_arguments_and_wraps_results():
    seen = {}

    def init(key, shape, dtype):
        seen["init"] = (key, shape, dtype)
        return {}

    def apply(params, x, opts):
        seen["opts"] = opts
        return x.copy(), lambda dy: ({}, dy)

    layer = make_layer("Fake()", init, apply)
    layer.init(KEY, [2, np.int64(3)], "float64")
    assert seen["init"][0] is KEY and seen["init"][1] == (2, 3) and seen["init"][2] == np.dtype(np.float64)
    out = layer.apply({}, np.zeros((1, 2), np.float32), train=np.bool_(True), key=KEY, state={"s": 1})
    assert isinstance(out, Output) and out.state == {}
    assert seen["opts"] == Options(True, KEY, {"s": 1}) and seen["opts"].train is True
    layer.apply({}, np.zeros((1, 2), np.float32))
    assert seen["opts"] == Options(False, None, None)
    # bool options take True or False only: "False" would be true, 1 is not a bool
    for train in ("False", 1, None):
        with pytest.raises(TypeError, match=r"^Fake\(\): option train must be True or False, got "):
            layer.apply({}, np.zeros((1, 2), np.float32), train=train)
    with pytest.raises(TypeError, match=r"^Fake\(\): option check_finite must be True or False, got str"):
        layer.apply({}, np.zeros((1, 2), np.float32), check_finite="yes")


@pytest.mark.parametrize("call, error, match", [
    (lambda layer: layer.init([0, 0, 0, 0], (2,)), TypeError, "Fake\\(\\).init: key: expected a key"),
    (lambda layer: layer.init(np.zeros(4, np.int32), (2,)), ValueError, "Fake\\(\\).init: key: .*dtype int32"),
    (lambda layer: layer.init(KEY, 2), TypeError, "shape must be a tuple such as \\(2,\\), got the int 2"),
    (lambda layer: layer.init(KEY, "ab"), TypeError, "shape must be a tuple of ints"),
    (lambda layer: layer.init(KEY, (2, -1)), ValueError, "non-negative ints"),
    (lambda layer: layer.init(KEY, (2, 1.5)), TypeError, "shape must hold ints"),
    (lambda layer: layer.init(KEY, (True,)), TypeError, "shape must hold ints"),
    (lambda layer: layer.init(KEY, (2,), np.int32), TypeError, "dtype must be float32 or float64, got int32"),
    (lambda layer: layer.init(KEY, (2,), "nonsense"), TypeError, "dtype must be float32 or float64"),
    (lambda layer: layer.apply({}, [[1.0, 2.0]]), TypeError, "Fake\\(\\): input x must be a numpy array, got list"),
    (lambda layer: layer.apply({}, np.float32(1.0)), TypeError, "must be a numpy array"),
    (lambda layer: layer.apply({}, np.array(1.0)), ValueError, "must have a batch axis"),
    (lambda layer: layer.apply({}, np.ones((1, 2), np.int64)), TypeError, "dtype int64.*x.astype\\(np.float32\\)"),
    (lambda layer: layer.apply({}, np.ones((1, 2)), key=np.zeros(4, np.uint8)), ValueError, "option key"),
])
def test_make_layer_rejects_bad_arguments(call, error, match):
    layer = make_layer("Fake()", lambda k, s, d: {}, lambda p, x, o: (x.copy(), lambda dy: ({}, dy)))
    with pytest.raises(error, match=match):
        call(layer)


# ---------------------------------------------------------------- serial: names

def test_serial_names_layers_per_kind_counting_from_zero():
    net = serial(Dense(8), ReLU(), Dense(2), LeakyReLU(), LogSoftmax(), ReLU(), serial(Tanh()))
    params = net.init(KEY, (4,))
    assert list(params) == ["dense_0", "relu_0", "dense_1", "leaky_relu_0", "log_softmax_0", "relu_1", "serial_0"]
    assert params["serial_0"] == {"tanh_0": {}}
    assert net.kind == "serial"


def test_serial_custom_names_do_not_shift_automatic_ones():
    net = serial(("encoder", Dense(8)), ReLU(), Dense(3), ("out", Dense(2)))
    assert list(net.init(KEY, (4,))) == ["encoder", "relu_0", "dense_0", "out"]


@pytest.mark.parametrize("layers, match", [
    ((("a", Dense(2)), ("a", ReLU())), "unique, got duplicates \\['a'\\]"),
    ((Dense(2), ("dense_0", Dense(3))), "unique, got duplicates \\['dense_0'\\]"),
])
def test_serial_duplicate_names_raise(layers, match):
    with pytest.raises(ValueError, match=match):
        serial(*layers)


@pytest.mark.parametrize("args, error, match", [
    ((), ValueError, "at least one layer"),
    ((Dense(2), 3), TypeError, "argument 1: expected an fnn Layer .*, got int"),
    ((Dense(2), (lambda k, s: {}, lambda p, x: (x, None))), TypeError,
     "argument 1: expected an fnn Layer, got a plain \\(init, apply\\) tuple \\(stax style\\); .*make_layer"),
    ((("a",),), TypeError, "argument 0"),
    (((1, Dense(2)),), TypeError, "argument 0"),
    ((("a", lambda x: x),), TypeError, "argument 0"),
])
def test_serial_bad_arguments_raise(args, error, match):
    with pytest.raises(error, match=match):
        serial(*args)


# ---------------------------------------------------------------- serial: init

def test_serial_init_threads_example_shape_and_dtype():
    net = serial(Flatten(), Dense(5), ReLU(), Dense(3, bias=False))
    for dtype in (np.float32, np.float64):
        params = net.init(KEY, (2, 3), dtype)
        assert params["dense_0"]["w"].shape == (6, 5) and params["dense_0"]["b"].shape == (5,)
        assert set(params["dense_1"]) == {"w"} and params["dense_1"]["w"].shape == (5, 3)
        assert all(leaf.dtype == dtype for leaf in tree.leaves(params))
        assert output_shape(net, params, (2, 3), dtype) == (3,)
        y, _ = net.apply(params, x_of((4, 2, 3), dtype))
        assert y.shape == (4, 3)


def test_serial_init_gives_each_layer_its_own_key():
    log = []
    net = serial(Dense(4), Noise(log), Dense(4), Noise(log))
    params = net.init(KEY, (4,))
    keys = random.split(KEY, 4)
    assert [k.tobytes() for what, k in log if what == "init"] == [keys[1].tobytes(), keys[3].tobytes()]
    assert params["dense_0"]["w"].tobytes() == Dense(4).init(keys[0], (4,))["w"].tobytes()
    assert params["dense_1"]["w"].tobytes() == Dense(4).init(keys[2], (4,))["w"].tobytes()
    assert params["dense_0"]["w"].tobytes() != params["dense_1"]["w"].tobytes()


def test_serial_init_shape_error_names_position_name_kind_and_shape():
    net = serial(Dense(4), ("head", Softmax(axis=2)), Dense(2))
    with pytest.raises(ValueError, match=(
            "^serial layer 1 'head' \\(Softmax\\(axis=2\\)\\) with input shape \\(4,\\): "
            "Softmax\\(axis=2\\): axis 2 is not a feature axis")):
        net.init(KEY, (3,))
    with pytest.raises(ValueError, match="^serial layer 0 'dense_0' \\(Dense\\(3\\)\\) with input shape \\(\\): "):
        serial(Dense(3)).init(KEY, ())


def test_nested_serial_errors_name_every_level():
    net = serial(Dense(4), ("block", serial(ReLU(), Dense(3), Softmax(axis=3))), Dense(2))
    # init applies every layer once, the last one included, so the error comes from init.
    with pytest.raises(ValueError, match=(
            "^serial layer 1 'block' \\(serial\\) with input shape \\(4,\\): "
            "serial layer 2 'softmax_0' \\(Softmax\\(axis=3\\)\\) with input shape \\(3,\\): "
            "Softmax\\(axis=3\\): axis 3 is not")):
        net.init(KEY, (5,))


# ---------------------------------------------------------------- serial: apply and vjp

def mlp():
    return serial(Dense(6), Tanh(), Dense(5), ReLU(), Dense(3))


def test_serial_apply_and_vjp_equal_manual_chaining():
    net = mlp()
    params = net.init(KEY, (4,))
    x, dy = x_of((7, 4)), x_of((7, 3), seed=2)
    y, vjp = net.apply(params, x)
    dparams, dx = vjp(dy)

    h, vjps = x, []
    for name, layer in net.children:
        h, v = layer.apply(params[name], h)
        vjps.append((name, v))
    assert y.tobytes() == h.tobytes()
    g, manual = dy, {}
    for name, v in reversed(vjps):
        manual[name], g = v(g)
    assert dx.tobytes() == g.tobytes()
    tree.check_same_structure(dparams, manual, shapes=True)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(tree.leaves(dparams), tree.leaves(manual), strict=True))
    assert list(dparams) == list(params)


def test_serial_vjp_without_dx_stops_at_the_first_layer_with_params():
    log = []
    net = serial(("a", Scale(log, False)), ("b", Scale(log, True)), ("c", Scale(log, False)), ("d", Scale(log, True)))
    params = net.init(KEY, (2,), np.float64)
    x, dy = x_of((3, 2), np.float64), x_of((3, 2), np.float64, seed=2)
    y, vjp = net.apply(params, x)
    full, dx = vjp(dy)
    log.clear()
    grads, none = vjp(dy, need_dx=False)
    assert none is None and log == [True, True, False]  # d, c, then b without its dx; a is never called
    assert grads == {"a": {}, "b": {"s": full["b"]["s"]}, "c": {}, "d": {"s": full["d"]["s"]}}
    # by hand: y = s_d * 2 * s_b * 2 * x = 36 x and dy/ds_b = s_d * 2 * 2 * x = 12 x
    assert np.allclose(y, 36 * x) and np.allclose(dx, 36 * dy)
    assert np.isclose(full["b"]["s"], np.vdot(dy, 12 * x))


def test_serial_without_params_and_without_dx_calls_no_vjp():
    log = []
    net = serial(Scale(log, False), ReLU())
    _, vjp = net.apply(net.init(KEY, (2,)), x_of((3, 2)))
    assert vjp(x_of((3, 2)), need_dx=False) == ({"scale_0": {}, "relu_0": {}}, None) and log == []


def test_serial_vjp_matches_finite_differences():
    net = serial(Dense(4), Tanh(), ("inner", serial(Dense(3), Tanh())), Dense(2))
    params = net.init(KEY, (3,), np.float64)
    errors = check_vjp(net, params, x_of((4, 3), np.float64))
    assert "['params']['inner']['dense_0']['w']" in errors and "['x']" in errors


def test_serial_apply_errors_name_the_layer():
    net = serial(Dense(4), ReLU(), ("out", Dense(2)))
    params = net.init(KEY, (3,))
    with pytest.raises(ValueError, match="^serial layer 0 'dense_0' \\(Dense\\(4\\)\\): Dense\\(4\\): params\\['w'\\]"):
        net.apply(params, x_of((2, 5)))
    _, vjp = net.apply(params, x_of((2, 3)))
    with pytest.raises(ValueError, match="^serial layer 2 'out' \\(Dense\\(2\\)\\): Dense\\(2\\).vjp: dy has shape"):
        vjp(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"^serial layer 0 'dense_0' \(Dense\(4\)\): Dense\(4\): input x has dtype int"):
        net.apply(params, np.ones((2, 3), np.int64))


@pytest.mark.parametrize("mutate", [
    lambda p: {k: v for k, v in p.items() if k != "out"},
    lambda p: {**p, "extra": {}},
    lambda p: list(p.values()),
])
def test_serial_params_from_another_architecture_raise(mutate):
    net = serial(Dense(4), ReLU(), ("out", Dense(2)))
    params = net.init(KEY, (3,))
    expects = "but this serial expects \\['dense_0', 'out', 'relu_0'\\]"
    with pytest.raises(ValueError, match=f"^serial: params has keys .* {expects}"):
        net.apply(mutate(params), x_of((2, 3)))


# ---------------------------------------------------------------- serial: options, keys and state

def test_serial_passes_train_to_every_layer_and_collects_state_per_name():
    log = []
    net = serial(Dense(3), ("c1", Counter()), Noise(log), ReLU(), ("inner", serial(Counter(), Dense(2))))
    params = net.init(KEY, (3,))
    x = x_of((2, 3))
    log.clear()  # init applied the layers once, in evaluation mode, to learn shapes

    out = net.apply(params, x)
    assert out.state == {"c1": {"count": 0}, "inner": {"counter_0": {"count": 0}}}
    assert [opts.train for what, opts in log if what == "apply"] == [False]

    state = None
    for step in range(3):
        out = net.apply(params, x, train=True, key=random.fold_in(KEY, step), state=state)
        state = out.state
        assert set(state) == {"c1", "inner"} and set(state["inner"]) == {"counter_0"}
        assert int(state["c1"]["count"]) == step + 1 and int(state["inner"]["counter_0"]["count"]) == step + 1
    assert [opts.train for what, opts in log if what == "apply"] == [False, True, True, True]

    # y depends on the state passed in; the state dict passed in is not modified.
    frozen = {"c1": {"count": np.array(5)}, "inner": {"counter_0": {"count": np.array(7)}}}
    y5, _ = net.apply(params, x, state=frozen)
    y0, _ = net.apply(params, x, state=None)
    assert int(frozen["c1"]["count"]) == 5 and not np.array_equal(y5, y0)
    # Entries for some layers only: the others start from their initial state.
    assert int(net.apply(params, x, state={"c1": {"count": np.array(2)}}).state["inner"]["counter_0"]["count"]) == 0


def test_serial_layers_without_state_return_empty_state():
    net = mlp()
    out = net.apply(net.init(KEY, (4,)), x_of((2, 4)), train=True, key=KEY)
    assert out.state == {}


def test_serial_rejects_bad_state():
    net = serial(Dense(3), ("c", Counter()))
    params = net.init(KEY, (3,))
    with pytest.raises(TypeError, match="state must be a dict keyed by layer name, fnn.INITIAL_STATE or None, got"):
        net.apply(params, x_of((2, 3)), state=[1])
    with pytest.raises(ValueError, match="state has entries \\['nope'\\] for layers this serial does not have"):
        net.apply(params, x_of((2, 3)), state={"nope": {}})


def test_serial_gives_each_layer_a_distinct_key_derived_from_the_given_one():
    log = []
    net = serial(("a", Noise(log)), Dense(3), ("b", Noise(log)), ("inner", serial(Noise(log), Noise(log))))
    params = net.init(KEY, (3,))
    log.clear()
    k = random.key(42)
    net.apply(params, x_of((2, 3)), train=True, key=k)
    got = [opts.key for what, opts in log]
    top = random.split(k, 4)
    inner = random.split(top[3], 2)
    assert [g.tobytes() for g in got] == [top[0].tobytes(), top[2].tobytes(), inner[0].tobytes(), inner[1].tobytes()]
    assert len({g.tobytes() for g in got} | {k.tobytes()}) == 5


def test_serial_same_key_same_randomness_different_key_different():
    log = []
    net = serial(Dense(3), Noise(log), Noise(log))
    params = net.init(KEY, (3,))
    x = x_of((4, 3))
    a, _ = net.apply(params, x, train=True, key=random.key(1))
    b, _ = net.apply(params, x, train=True, key=random.key(1))
    c, _ = net.apply(params, x, train=True, key=random.key(2))
    assert a.tobytes() == b.tobytes() and not np.array_equal(a, c)
    where = "serial layer 1 'noise_0' \\(Noise\\(\\)\\)"
    with pytest.raises(ValueError, match=f"^{where}: Noise\\(\\): train=True needs a key"):
        net.apply(params, x, train=True)


def test_output_shape_and_top_level_exports():
    net = serial(Flatten(), Dense(7))
    params = net.init(KEY, (2, 2))
    assert output_shape(net, params, (2, 2)) == (7,)
    assert fnn.serial is serial and fnn.Output is Output and fnn.Layer is Layer
