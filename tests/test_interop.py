"""fnn.interop: PyTorch state dicts to and from fnn params, matched by structure.

The tests against PyTorch itself skip cleanly without torch; the others use hand-made
state dicts of numpy arrays.
"""

import numpy as np
import pytest
from gpt_models import fnn_gpt, torch_gpt

import fnn
from fnn import random, tree
from fnn.core import make_layer
from fnn.interop import from_torch_state_dict, to_torch_state_dict
from fnn.layers import GRU, LSTM, BatchNorm, Conv2D, Dense, Flatten, LastStep, LayerNorm, MaxPool2D, ReLU, Tanh

KEY = random.key(0)


def rng(seed=0):
    return np.random.default_rng(seed)


# -- hand-made state dicts (no torch) -------------------------------------------------------------

def mlp():
    return fnn.serial(Dense(4), ReLU(), Dense(3, bias=False), Tanh(), Dense(2))


def mlp_state_dict(seed=0):
    r = rng(seed)
    return {"0.weight": r.standard_normal((4, 5)), "0.bias": r.standard_normal(4),
            "2.weight": r.standard_normal((3, 4)),
            "4.weight": r.standard_normal((2, 3)), "4.bias": r.standard_normal(2)}


def test_dense_weights_are_transposed_and_biases_copied():
    sd = mlp_state_dict()
    params, state = from_torch_state_dict(mlp(), sd, (5,), np.float64)
    assert state == {}
    np.testing.assert_array_equal(params["dense_0"]["w"], sd["0.weight"].T)
    np.testing.assert_array_equal(params["dense_0"]["b"], sd["0.bias"])
    assert set(params["dense_1"]) == {"w"}
    np.testing.assert_array_equal(params["dense_1"]["w"], sd["2.weight"].T)
    np.testing.assert_array_equal(params["dense_2"]["b"], sd["4.bias"])
    assert params["relu_0"] == {} and params["tanh_0"] == {}
    # the forward is the PyTorch formula y = x W^T + b
    x = rng(1).standard_normal((3, 5))
    h = np.tanh(np.maximum(x @ sd["0.weight"].T + sd["0.bias"], 0) @ sd["2.weight"].T)
    np.testing.assert_allclose(mlp().apply(params, x)[0], h @ sd["4.weight"].T + sd["4.bias"], rtol=1e-13)


def test_loaded_params_are_fresh_arrays_of_the_requested_dtype():
    sd = mlp_state_dict()
    params, _ = from_torch_state_dict(mlp(), sd, (5,))
    assert {a.dtype for a in tree.leaves(params)} == {np.dtype(np.float32)}
    p64, _ = from_torch_state_dict(mlp(), sd, (5,), np.float64)
    assert not any(np.shares_memory(a, b) for a in tree.leaves(p64) for b in sd.values())
    w = p64["dense_0"]["w"]
    assert w.flags.writeable


def test_conv_batchnorm_layernorm_mapping_and_state():
    net = fnn.serial(Conv2D(3, 2, bias=False), BatchNorm(), ReLU(), Flatten(), Dense(4), LayerNorm())
    r = rng(2)
    sd = {"conv.weight": r.standard_normal((3, 2, 2, 2)),
          "bn.weight": r.standard_normal(3), "bn.bias": r.standard_normal(3),
          "bn.running_mean": r.standard_normal(3), "bn.running_var": r.uniform(0.5, 2, 3),
          "bn.num_batches_tracked": np.array(7),
          "fc.weight": r.standard_normal((4, 3 * 3 * 3)), "fc.bias": r.standard_normal(4),
          "ln.weight": r.standard_normal(4), "ln.bias": r.standard_normal(4)}
    params, state = from_torch_state_dict(net, sd, (2, 4, 4), np.float64)
    np.testing.assert_array_equal(params["conv2d_0"]["w"], sd["conv.weight"])
    np.testing.assert_array_equal(params["batch_norm_0"]["gamma"], sd["bn.weight"])
    np.testing.assert_array_equal(params["batch_norm_0"]["beta"], sd["bn.bias"])
    assert set(state) == {"batch_norm_0"}
    np.testing.assert_array_equal(state["batch_norm_0"]["mean"], sd["bn.running_mean"])
    np.testing.assert_array_equal(state["batch_norm_0"]["var"], sd["bn.running_var"])
    np.testing.assert_array_equal(params["layer_norm_0"]["gamma"], sd["ln.weight"])
    # and back, keyed by the template
    out = to_torch_state_dict(net, params, (2, 4, 4), state=state, template=sd)
    assert list(out) == list(sd)
    for k in sd:
        if k != "bn.num_batches_tracked":
            assert out[k].dtype == np.float64 and np.array_equal(out[k], sd[k]), k


def test_to_torch_state_dict_without_a_template_uses_fnn_names():
    net = fnn.serial(("conv1", Conv2D(2, 3)), ReLU(), ("block", fnn.serial(("bn", BatchNorm()), Flatten(),
                                                                              ("fc", Dense(3)))))
    params = net.init(KEY, (1, 5, 5))
    out = to_torch_state_dict(net, params, (1, 5, 5))
    assert list(out) == ["conv1.weight", "conv1.bias", "block.bn.weight", "block.bn.bias", "block.bn.running_mean",
                         "block.bn.running_var", "block.bn.num_batches_tracked", "block.fc.weight", "block.fc.bias"]
    np.testing.assert_array_equal(out["block.fc.weight"], params["block"]["fc"]["w"].T)
    assert out["block.fc.weight"].flags.c_contiguous
    np.testing.assert_array_equal(out["block.bn.running_mean"], np.zeros(2))  # no state given: the initial one
    np.testing.assert_array_equal(out["block.bn.running_var"], np.ones(2))
    # and it loads back into an identical copy
    back, state = from_torch_state_dict(net, out, (1, 5, 5))
    assert all(np.array_equal(a, b) for a, b in zip(tree.leaves(back), tree.leaves(params)))


def test_a_round_trip_through_a_state_dict_keeps_every_bit():
    net = fnn.serial(Dense(4), Tanh(), ("res", fnn.residual(fnn.serial(Dense(4), BatchNorm()))), Dense(2))
    params = net.init(KEY, (3,), np.float64)
    state = net.apply(params, rng(3).standard_normal((8, 3)), train=True).state
    sd = to_torch_state_dict(net, params, (3,), state=state)
    assert "res.inner.batch_norm_0.running_var" in sd
    back, back_state = from_torch_state_dict(net, sd, (3,), np.float64)
    assert tree.allclose(back, params, rtol=0, atol=0) and tree.allclose(back_state, state, rtol=0, atol=0)


def test_recurrent_weights_map_per_layer_and_direction():
    net = GRU(3, num_layers=2, bidirectional=True)
    params = net.init(KEY, (5, 2), np.float64)
    sd = to_torch_state_dict(net, params, (5, 2))
    assert set(sd) == {f"{w}_l{i}{d}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for i in (0, 1)
                       for d in ("", "_reverse")}
    assert sd["weight_ih_l0"].shape == (9, 2) and sd["weight_ih_l1_reverse"].shape == (9, 6)
    np.testing.assert_array_equal(sd["weight_hh_l1_reverse"], params["l1_reverse"]["w_hh"].T)
    back, _ = from_torch_state_dict(net, sd, (5, 2), np.float64)
    assert tree.allclose(back, params, rtol=0, atol=0)


def test_wrong_number_of_modules_names_fnn_layers_and_torch_prefixes():
    sd = mlp_state_dict()
    del sd["4.weight"], sd["4.bias"]
    with pytest.raises(ValueError, match=r"fnn has 3 layers with parameters \(dense_0, dense_1, dense_2\) but the "
                                         r"state dict has 2 module prefixes \('0', '2'\)"):
        from_torch_state_dict(mlp(), sd, (5,))


def test_wrong_shape_names_the_torch_key_and_the_fnn_layer():
    sd = mlp_state_dict()
    sd["2.weight"] = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"2\.weight has shape \(3, 5\), which does not fit fnn layer dense_1 "
                                         r"\('w',\) of shape \(4, 3\) \(transposed\)"):
        from_torch_state_dict(mlp(), sd, (5,))


def test_missing_or_extra_tensor_names_the_fnn_layer_and_the_torch_module():
    sd = mlp_state_dict()
    del sd["0.bias"]
    with pytest.raises(ValueError, match=r"fnn layer dense_0 \(Dense\) needs \['bias', 'weight'\] but module '0' "
                                         r"has \['weight'\]"):
        from_torch_state_dict(mlp(), sd, (5,))
    sd = mlp_state_dict()
    sd["2.bias"] = np.zeros(3)  # fnn's Dense(3, bias=False) has none
    with pytest.raises(ValueError, match=r"fnn layer dense_1 \(Dense\) needs \['weight'\] but module '2'"):
        from_torch_state_dict(mlp(), sd, (5,))


def test_a_kind_mismatch_is_reported():
    # PyTorch has a BatchNorm1d (with running statistics) where fnn has a LayerNorm
    sd = {"0.weight": np.zeros((4, 5)), "0.bias": np.zeros(4), "1.weight": np.ones(4), "1.bias": np.zeros(4),
          "1.running_mean": np.zeros(4), "1.running_var": np.ones(4), "1.num_batches_tracked": np.array(0)}
    with pytest.raises(ValueError, match=r"fnn layer layer_norm_0 \(LayerNorm\) needs \['bias', 'weight'\] but "
                                         r"module '1' has \['bias', 'running_mean', 'running_var', 'weight'\]"):
        from_torch_state_dict(fnn.serial(Dense(4), LayerNorm()), sd, (5,))


def test_nested_fnn_layer_paths_appear_in_errors():
    net = fnn.serial(("features", fnn.serial(("c", Conv2D(2, 3)), ReLU())), Flatten(), ("head", Dense(2)))
    sd = {"0.weight": np.zeros((2, 1, 3, 3)), "0.bias": np.zeros(2), "1.weight": np.zeros((2, 9)),
          "1.bias": np.zeros(2)}
    with pytest.raises(ValueError, match=r"1\.weight has shape \(2, 9\), which does not fit fnn layer head"):
        from_torch_state_dict(net, sd, (1, 5, 5))
    sd["0.weight"] = np.zeros((2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"0\.weight .* fnn layer features/c "):
        from_torch_state_dict(net, sd, (1, 5, 5))


def test_to_torch_state_dict_template_mismatches_name_the_fnn_layer_and_the_torch_key():
    net = mlp()
    params = net.init(KEY, (5,))
    sd = mlp_state_dict()
    short = {k: v for k, v in sd.items() if not k.startswith("4.")}
    with pytest.raises(ValueError, match=r"fnn has 3 layers with parameters \(dense_0, dense_1, dense_2\) but the "
                                         r"template has 2 module prefixes \('0', '2'\)"):
        to_torch_state_dict(net, params, (5,), template=short)
    wrong = {**sd, "2.weight": np.zeros((3, 5))}
    with pytest.raises(ValueError, match=r"fnn layer dense_1 \('w',\) gives 2\.weight of shape \(3, 4\), which "
                                         r"does not match the template's \(3, 5\)"):
        to_torch_state_dict(net, params, (5,), template=wrong)
    missing = {k: v for k, v in sd.items() if k != "0.bias"}
    with pytest.raises(ValueError, match=r"fnn layer dense_0 \(Dense\) gives \['bias', 'weight'\] but template "
                                         r"module '0' has \['weight'\]"):
        to_torch_state_dict(net, params, (5,), template=missing)
    extra = {**sd, "2.bias": np.zeros(3)}  # a tensor fnn's Dense(3, bias=False) would leave at its initial value
    with pytest.raises(ValueError, match=r"fnn layer dense_1 \(Dense\) gives \['weight'\] but template module '2' "
                                         r"has \['bias', 'weight'\]"):
        to_torch_state_dict(net, params, (5,), template=extra)


def test_to_torch_state_dict_of_a_model_without_parameters_but_with_state():
    # Regression: the dtype for the initial state came from the first parameter, an IndexError without any.
    net = fnn.serial(BatchNorm(affine=False), Tanh())
    params = net.init(KEY, (3,))
    sd = to_torch_state_dict(net, params, (3,))
    assert list(sd) == ["batch_norm_0.running_mean", "batch_norm_0.running_var", "batch_norm_0.num_batches_tracked"]
    np.testing.assert_array_equal(sd["batch_norm_0.running_var"], np.ones(3))
    _, state = from_torch_state_dict(net, {**sd, "batch_norm_0.running_mean": np.arange(3.0)}, (3,))
    np.testing.assert_array_equal(state["batch_norm_0"]["mean"], [0, 1, 2])


def test_a_layer_without_a_torch_mapping_raises_type_error_naming_it():
    def init(key, shape, dtype):
        return {"s": np.ones((), dtype)}

    def apply(params, x, opts):
        return x * params["s"], lambda dy, need_dx=True: ({"s": np.vdot(dy, x)}, dy * params["s"])

    net = fnn.serial(Dense(2), ("scale", make_layer("Scale()", init, apply)))
    with pytest.raises(TypeError, match=r"interop: layer scale \(Scale\(\)\) has no PyTorch mapping"):
        from_torch_state_dict(net, {"0.weight": np.zeros((2, 3)), "0.bias": np.zeros(2)}, (3,))
    with pytest.raises(TypeError, match="has no PyTorch mapping"):
        to_torch_state_dict(net, net.init(KEY, (3,)), (3,))


def square_modules(*prefixes, seed=0):
    """A state dict of Linear(4, 4) modules under ``prefixes``, listed in that (registration) order."""
    r = rng(seed)
    return {f"{p}.{t}": r.standard_normal((4, 4) if t == "weight" else 4) for p in prefixes for t in ("weight", "bias")}


def test_same_shaped_modules_registered_out_of_run_order_are_refused_not_loaded_by_order():
    # Regression: a module registering self.b before self.a, but running a then b, loaded a's weights into
    # fnn's first Dense and gave wrong logits without a word.
    sd = square_modules("b", "a")
    with pytest.raises(ValueError, match=r"^from_torch_state_dict: modules 'b', 'a' of the state dict have parameters "
                                         r"of the same names and shapes, so matching them by order to fnn layers "
                                         r"dense_0, dense_1 is ambiguous \(a state dict lists modules in the order "
                                         r"they were registered, not the order they run in\); name the fnn layers "
                                         r"after the torch modules, so that fnn's layer paths joined with '\.' are "
                                         r"the module prefixes \('b', 'a'\)$"):
        from_torch_state_dict(fnn.serial(Dense(4), Tanh(), Dense(4)), sd, (4,))
    net = fnn.serial(Dense(4), Tanh(), Dense(4))
    with pytest.raises(ValueError, match=r"^to_torch_state_dict: modules 'b', 'a' of the template have parameters "
                                         r"of the same names and shapes, so matching them by order to fnn layers "
                                         r"dense_0, dense_1 is ambiguous"):
        to_torch_state_dict(net, net.init(KEY, (4,)), (4,), template=sd)


def test_same_shaped_modules_load_by_name_when_fnn_layers_are_named_after_them():
    sd = square_modules("b", "a")
    net = fnn.serial(("a", Dense(4)), Tanh(), ("b", Dense(4)))
    params, _ = from_torch_state_dict(net, sd, (4,), np.float64)
    np.testing.assert_array_equal(params["a"]["w"], sd["a.weight"].T)
    np.testing.assert_array_equal(params["b"]["b"], sd["b.bias"])
    x = rng(7).standard_normal((3, 4))
    expected = np.tanh(x @ sd["a.weight"].T + sd["a.bias"]) @ sd["b.weight"].T + sd["b.bias"]
    np.testing.assert_allclose(net.apply(params, x)[0], expected, rtol=1e-13)
    out = to_torch_state_dict(net, params, (4,), template=sd)
    assert list(out) == list(sd)  # the template's order, not fnn's
    assert all(np.array_equal(out[k], sd[k]) for k in sd)


def test_names_that_only_partly_agree_do_not_settle_an_ambiguous_order():
    with pytest.raises(ValueError, match=r"modules 'b', 'a' .* to fnn layers a, c is ambiguous .* module prefixes "
                                         r"\('b', 'a'\)$"):
        from_torch_state_dict(fnn.serial(("a", Dense(4)), ("c", Dense(4))), square_modules("b", "a"), (4,))


@pytest.mark.parametrize("prefixes", [("0", "2", "4"), ("body.0", "body.1"), ("0.fc", "1.fc", "2.fc"),
                                      ("body.0", "body.1", "head")])
def test_same_shaped_modules_ambiguous_only_outside_one_sequential(prefixes):
    # Children of an nn.Sequential (or ModuleList) are named by index and run in index order, so matching
    # them by order is safe; a module beside them ("head") could run before or after.
    sd = square_modules(*prefixes)
    net = fnn.serial(*[Dense(4) for _ in prefixes])
    if prefixes[-1] == "head":
        with pytest.raises(ValueError, match=r"modules 'body\.0', 'body\.1', 'head' of the state dict .* to fnn "
                                             r"layers dense_0, dense_1, dense_2 is ambiguous"):
            from_torch_state_dict(net, sd, (4,))
        net = fnn.serial(("body", fnn.serial(("0", Dense(4)), ("1", Dense(4)))), ("head", Dense(4)))
    params, _ = from_torch_state_dict(net, sd, (4,), np.float64)
    weights = [w for path, w in tree.flatten(params)[0] if path[-1] == "w"]  # in fnn's (sorted) key order
    assert len(weights) == len(prefixes)
    for w, prefix in zip(weights, prefixes):
        np.testing.assert_array_equal(w, sd[f"{prefix}.weight"].T)


def test_same_shaped_modules_inside_one_block_are_ambiguous():
    with pytest.raises(ValueError, match=r"modules '0\.a', '0\.b', '1\.a', '1\.b' of the state dict"):
        from_torch_state_dict(fnn.serial(*[Dense(4) for _ in range(4)]), square_modules("0.a", "0.b", "1.a", "1.b"),
                              (4,))
    sd = square_modules("0.a", "1.a", "1.b")  # 0.a runs before 1.a and 1.b, but those two are unordered
    with pytest.raises(ValueError, match=r"modules '1\.a', '1\.b' of the state dict .* to fnn layers dense_1, "
                                         r"dense_2 is ambiguous"):
        from_torch_state_dict(fnn.serial(*[Dense(4) for _ in range(3)]), sd, (4,))


# -- against PyTorch --------------------------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch")


def to_numpy(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def fnn_lenet(names="auto", batchnorm=False):
    """LeNet-5 in fnn with its layers named ``"auto"`` (fnn's ``conv2d_0``, ...), as the attributes of
    a ``"module"`` (``conv1``, ..., ``bn1``) or as the indices of an ``nn.Sequential`` without BatchNorm."""
    rename = {"auto": {}, "module": {}, "sequential": {"conv1": "0", "conv2": "3", "fc1": "7", "fc2": "9", "fc3": "11"}}
    layers = [("conv1", Conv2D(6, 5, padding=2)), *([("bn1", BatchNorm())] if batchnorm else []), ReLU(),
              MaxPool2D(2), ("conv2", Conv2D(16, 5)), *([("bn2", BatchNorm())] if batchnorm else []), ReLU(),
              MaxPool2D(2), Flatten(), ("fc1", Dense(120)), ReLU(), ("fc2", Dense(84)), ReLU(), ("fc3", Dense(10))]
    named = [item if isinstance(item, fnn.Layer) else (rename[names].get(item[0], item[0]), item[1])
             for item in layers]
    return fnn.serial(*(item[1] if names == "auto" and not isinstance(item, fnn.Layer) else item for item in named))


def torch_lenet_sequential(nn, batchnorm=False):
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), *([nn.BatchNorm2d(6)] if batchnorm else []), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), *([nn.BatchNorm2d(16)] if batchnorm else []), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, 10))


def torch_lenet_module(torch):
    nn, F = torch.nn, torch.nn.functional

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = torch.flatten(x, 1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    return LeNet()


@pytest.mark.parametrize("style", ["sequential", "module"])
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_torch_lenet_gives_the_same_logits(style, dtype, tol):
    torch = _torch()
    torch.manual_seed(0)
    model = torch_lenet_sequential(torch.nn) if style == "sequential" else torch_lenet_module(torch)
    model = model.to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    net = fnn_lenet("module" if style == "module" else "auto")
    params, state = from_torch_state_dict(net, to_numpy(model), (1, 28, 28), dtype)
    assert state == {}
    x = rng(4).standard_normal((6, 1, 28, 28)).astype(dtype)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    y, _ = net.apply(params, x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("style", ["sequential", "module"])
def test_torch_lenet_round_trips_with_and_without_a_template(style):
    torch = _torch()
    torch.manual_seed(1)
    make = (lambda: torch_lenet_sequential(torch.nn)) if style == "sequential" else (lambda: torch_lenet_module(torch))
    model = make()
    template = to_numpy(model)
    net = fnn_lenet(style)  # fnn's names are the module's names
    params, _ = from_torch_state_dict(net, template, (1, 28, 28))
    for tmpl in (template, None):
        sd = to_torch_state_dict(net, params, (1, 28, 28), template=tmpl)
        fresh = make()
        fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        for k, v in model.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k


def test_torch_batchnorm_running_stats_map_to_state_and_eval_outputs_agree():
    torch = _torch()
    torch.manual_seed(2)
    model = torch_lenet_sequential(torch.nn, batchnorm=True).double()
    model.train()
    with torch.no_grad():  # move the running statistics away from their initial values
        for seed in range(3):
            model(torch.from_numpy(rng(seed).standard_normal((8, 1, 28, 28)) * 2 + 1))
        for m in model:
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    net = fnn_lenet("module", batchnorm=True)
    template = to_numpy(model)
    params, state = from_torch_state_dict(net, template, (1, 28, 28), np.float64)
    assert set(state) == {"bn1", "bn2"}
    np.testing.assert_array_equal(state["bn1"]["mean"], template["1.running_mean"])
    np.testing.assert_array_equal(state["bn2"]["var"], template["5.running_var"])
    assert not np.allclose(state["bn1"]["var"], 1)
    x = rng(9).standard_normal((5, 1, 28, 28))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.apply(params, x, state=state)[0], expected, rtol=1e-12, atol=1e-12)
    # fnn's training step updates the statistics like PyTorch's
    x_train = rng(10).standard_normal((8, 1, 28, 28))
    model.train()
    with torch.no_grad():
        y_train = model(torch.from_numpy(x_train)).numpy()
    out = net.apply(params, x_train, train=True, state=state)
    np.testing.assert_allclose(out[0], y_train, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.state["bn2"]["mean"], model[5].running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(out.state["bn2"]["var"], model[5].running_var.numpy(), rtol=1e-12)
    # and back: everything but num_batches_tracked (fnn does not count steps) is exact
    sd = to_torch_state_dict(net, params, (1, 28, 28), state=state, template=template)
    assert list(sd) == list(template)
    for k, v in template.items():
        if not k.endswith("num_batches_tracked"):
            assert np.array_equal(sd[k], v), k


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_torch_recurrent_two_layers_bidirectional_outputs_agree(cell):
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(3)

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(nn, cell)(3, 5, num_layers=2, bidirectional=True, batch_first=True)
            self.fc = nn.Linear(10, 4)

        def forward(self, x):
            out, _ = self.rnn(x)
            return out, self.fc(out[:, -1])

    model = Tagger().double().eval()
    layer = {"LSTM": LSTM, "GRU": GRU}[cell](5, num_layers=2, bidirectional=True)
    net = fnn.serial(("rnn", layer), LastStep(), ("fc", Dense(4)))
    template = to_numpy(model)
    params, state = from_torch_state_dict(net, template, (7, 3), np.float64)
    assert state == {}
    assert set(params["rnn"]) == {"l0", "l0_reverse", "l1", "l1_reverse"}
    np.testing.assert_array_equal(params["rnn"]["l1_reverse"]["w_ih"], template["rnn.weight_ih_l1_reverse"].T)
    x = rng(5).standard_normal((4, 7, 3))
    with torch.no_grad():
        seq, logits = (t.numpy() for t in model(torch.from_numpy(x)))
    np.testing.assert_allclose(layer.apply(params["rnn"], x)[0], seq, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.apply(params, x)[0], logits, rtol=1e-12, atol=1e-12)
    # float32 too
    p32, _ = from_torch_state_dict(net, template, (7, 3))
    np.testing.assert_allclose(net.apply(p32, x.astype(np.float32))[0], logits, rtol=1e-5, atol=1e-5)
    # round trip, with the template and with fnn's names (the same as the module's here)
    for tmpl in (template, None):
        sd = to_torch_state_dict(net, params, (7, 3), template=tmpl)
        fresh = Tagger().double()
        fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
        for k, v in model.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k


def test_torch_layernorm_and_linear_on_sequences_agree():
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 2)).double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-1, 1)
    net = fnn.serial(Dense(6), LayerNorm(), Tanh(), Dense(2))
    params, _ = from_torch_state_dict(net, to_numpy(model), (4, 3), np.float64)
    x = rng(6).standard_normal((2, 4, 3))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.apply(params, x)[0], expected, rtol=1e-12, atol=1e-12)


def test_torch_mismatches_name_the_fnn_layer_path_and_the_torch_key():
    torch = _torch()
    template = to_numpy(torch_lenet_module(torch))
    with pytest.raises(ValueError, match=r"fc1\.weight has shape \(120, 400\), which does not fit fnn layer fc1 "):
        from_torch_state_dict(fnn_lenet("module"), template, (1, 32, 32))  # 32x32 input: fc1 needs 576 inputs
    no_fc3 = fnn.serial(*[item for item in fnn_lenet("module").children if item[0] != "fc3"])
    with pytest.raises(ValueError, match=r"fnn has 4 layers with parameters \(conv1, conv2, fc1, fc2\) but the "
                                         r"state dict has 5 module prefixes .*'fc3'"):
        from_torch_state_dict(no_fc3, template, (1, 28, 28))
    partial = {k: v for k, v in template.items() if k != "conv2.bias"}
    with pytest.raises(ValueError, match=r"fnn layer conv2 \(Conv2D\) needs \['bias', 'weight'\] but module "
                                         r"'conv2' has \['weight'\]"):
        from_torch_state_dict(fnn_lenet("module"), partial, (1, 28, 28))


def torch_reordered_module(torch):
    """Registers ``b`` before ``a`` but runs ``a`` first: the state dict's order is not the run order."""
    nn = torch.nn

    class Reordered(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Linear(4, 4)
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    return Reordered()


def test_torch_module_registered_out_of_run_order_is_refused_or_loaded_by_name():
    torch = _torch()
    torch.manual_seed(5)
    model = torch_reordered_module(torch).double().eval()
    template = to_numpy(model)
    assert list(template) == ["b.weight", "b.bias", "a.weight", "a.bias"]
    with pytest.raises(ValueError, match=r"modules 'b', 'a' of the state dict have parameters of the same names and "
                                         r"shapes, so matching them by order to fnn layers dense_0, dense_1 is "
                                         r"ambiguous .* name the fnn layers after the torch modules"):
        from_torch_state_dict(fnn.serial(Dense(4), ReLU(), Dense(4)), template, (4,), np.float64)
    net = fnn.serial(("a", Dense(4)), ReLU(), ("b", Dense(4)))
    params, _ = from_torch_state_dict(net, template, (4,), np.float64)
    x = rng(8).standard_normal((5, 4))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.apply(params, x)[0], expected, rtol=1e-12, atol=1e-12)
    fresh = torch_reordered_module(torch).double()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(net, params, (4,),
                                                                                     template=template).items()})
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_torch_sequential_of_same_shaped_layers_still_loads_by_order_and_a_head_beside_it_needs_names():
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(6)
    body = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)).double().eval()
    x = rng(9).standard_normal((5, 4))
    net = fnn.serial(Dense(4), Tanh(), Dense(4))
    params, _ = from_torch_state_dict(net, to_numpy(body), (4,), np.float64)
    with torch.no_grad():
        np.testing.assert_allclose(net.apply(params, x)[0], body(torch.from_numpy(x)).numpy(), rtol=1e-12, atol=1e-12)

    class WithHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 4)  # registered first, runs last
            self.body = body

        def forward(self, x):
            return self.head(self.body(x))

    model = WithHead().double().eval()
    template = to_numpy(model)
    with pytest.raises(ValueError, match=r"modules 'head', 'body\.0', 'body\.2' of the state dict"):
        from_torch_state_dict(fnn.serial(Dense(4), Tanh(), Dense(4), Dense(4)), template, (4,), np.float64)
    for named in (fnn.serial(("body.0", Dense(4)), Tanh(), ("body.2", Dense(4)), ("head", Dense(4))),
                  fnn.serial(("body", fnn.serial(("0", Dense(4)), Tanh(), ("2", Dense(4)))), ("head", Dense(4)))):
        params, _ = from_torch_state_dict(named, template, (4,), np.float64)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(named.apply(params, x)[0], expected, rtol=1e-12, atol=1e-12)


# -- attention, transformer blocks and a tied GPT -----------------------------------------------------

def test_torch_multihead_attention_state_dict_ports_as_it_is_and_round_trips():
    torch = _torch()
    from fnn.layers import MultiHeadAttention

    t = torch.nn.MultiheadAttention(6, 3, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        t.in_proj_bias.normal_()
        t.out_proj.bias.normal_()
    sd = to_numpy(t)
    layer = MultiHeadAttention(3)
    params, state = from_torch_state_dict(layer, sd, ((4, 6), (5, 6)), np.float64)
    assert state == {}
    np.testing.assert_array_equal(params["in_proj_weight"], sd["in_proj_weight"])
    np.testing.assert_array_equal(params["out_proj"]["bias"], sd["out_proj.bias"])
    q, kv = rng(0).standard_normal((2, 4, 6)), rng(1).standard_normal((2, 5, 6))
    ty, _ = t(torch.tensor(q), torch.tensor(kv), torch.tensor(kv), need_weights=False)
    np.testing.assert_allclose(layer.apply(params, (q, kv))[0], ty.detach().numpy(), rtol=0, atol=1e-12)
    out = to_torch_state_dict(layer, params, (4, 6))
    assert list(out) == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    fresh = torch.nn.MultiheadAttention(6, 3, batch_first=True, dtype=torch.float64)
    fresh.load_state_dict({k: torch.tensor(v) for k, v in out.items()})
    plain = MultiHeadAttention(3, bias=False)
    no_bias = to_torch_state_dict(plain, plain.init(KEY, (4, 6)), (4, 6))
    assert list(no_bias) == ["in_proj_weight", "out_proj.weight"]


@pytest.mark.parametrize("norm_first", [False, True])
def test_torch_transformer_encoder_layer_round_trips_through_torch(norm_first):
    torch = _torch()
    from fnn.layers import TransformerEncoderLayer

    layer = TransformerEncoderLayer(2, 8, dropout=0.0, norm_first=norm_first)
    params = layer.init(KEY, (5, 4), np.float64)
    sd = to_torch_state_dict(layer, params, (5, 4))
    t = torch.nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True, norm_first=norm_first,
                                         dtype=torch.float64)
    assert set(sd) == set(t.state_dict())
    t.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    x = rng(2).standard_normal((3, 5, 4))
    np.testing.assert_allclose(layer.apply(params, x)[0], t(torch.tensor(x)).detach().numpy(), rtol=0, atol=1e-12)
    back, _ = from_torch_state_dict(layer, to_numpy(t), (5, 4), np.float64)
    assert tree.allclose(back, params, rtol=0, atol=0)


def test_a_tied_torch_gpt_ports_with_the_same_logits_and_gradients():
    torch = _torch()
    vocab, length, e = 11, 6, 8
    torch.manual_seed(0)
    t = torch_gpt(torch, vocab, length, e, heads=2, layers=2)
    sd = to_numpy(t)
    assert "head.weight" in sd and np.array_equal(sd["head.weight"], sd["tok.weight"])  # listed twice by torch
    gpt = fnn_gpt(vocab, length, e, heads=2, layers=2)
    params, _ = from_torch_state_dict(gpt, sd, (length,), np.float64)
    assert params["head"] == {}
    idx = rng(3).integers(0, vocab, (3, length))
    logits, vjp = gpt.apply(params, idx)
    t_logits = t(torch.tensor(idx))
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=0, atol=1e-10)
    dy = rng(4).standard_normal(logits.shape)
    t_logits.backward(torch.tensor(dy))
    grads, _ = vjp(dy)
    ours = to_torch_state_dict(gpt, grads, (length,))
    for name, p in t.named_parameters():  # named_parameters lists the shared weight once, as tok.weight
        np.testing.assert_allclose(ours[name], p.grad.numpy(), rtol=0, atol=1e-10, err_msg=name)
    # and back: fnn's params load into a fresh torch GPT, tied weight included
    fresh = torch_gpt(torch, vocab, length, e, heads=2, layers=2)
    fresh.load_state_dict({k: torch.tensor(v) for k, v in to_torch_state_dict(gpt, params, (length,)).items()})
    np.testing.assert_allclose(fresh(torch.tensor(idx)).detach().numpy(), logits, rtol=0, atol=1e-10)


def test_an_untied_torch_model_is_refused_by_a_tied_fnn_model():
    torch = _torch()
    torch.manual_seed(0)
    sd = to_numpy(torch_gpt(torch, 5, 4, 4, heads=1, layers=1, tied=False))
    with pytest.raises(ValueError, match=r"from_torch_state_dict: fnn ties 'head/w' to 'tok/weight', but the state "
                                         r"dict holds different values for them"):
        from_torch_state_dict(fnn_gpt(5, 4, 4, heads=1, layers=1), sd, (4,), np.float64)
