"""fnn.training.step: value_and_grad is the manual forward/loss/vjp; train_step's update and
gradient accumulation equal one big batch; the metrics; bad inputs."""

import numpy as np
import pytest

import fnn
from fnn.layers import BatchNorm, Dense, Dropout, ReLU, Tanh

CE = fnn.losses.softmax_cross_entropy


def data(n=29, f=5, c=4, seed=0, dtype=np.float64):
    kx, ky = fnn.random.split(fnn.random.key(seed))
    return fnn.random.normal(kx, (n, f), dtype), fnn.random.permutation(ky, n) % c


def mlp():
    return fnn.serial(Dense(8), Tanh(), Dense(6), ReLU(), Dense(4))


def assert_trees_equal(a, b):
    fnn.tree.check_same_structure(a, b, shapes=True)
    for u, v in zip(fnn.tree.leaves(a), fnn.tree.leaves(b)):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)


def assert_trees_close(a, b, tol=1e-12):
    fnn.tree.check_same_structure(a, b, shapes=True)
    for (path, u), v in zip(fnn.tree.flatten(a)[0], fnn.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol, err_msg=fnn.tree.path_str(path))


def test_value_and_grad_is_the_manual_forward_loss_and_vjp():
    net = fnn.serial(Dense(8), BatchNorm(), ReLU(), Dropout(0.3), Dense(4))
    x, y = data()
    params = net.init(fnn.random.key(1), (5,), np.float64)
    key = fnn.random.key(2)
    out = net.apply(params, x, train=True, key=key, state=None)
    logits, vjp = out
    loss, dlogits = CE(logits, y)
    grads, _ = vjp(dlogits, need_dx=False)
    got = fnn.value_and_grad(net, CE)(params, x, y, key=key)
    assert isinstance(got, fnn.training.LossAndGrads)
    assert got.loss == loss
    assert_trees_equal(got.grads, grads)
    assert_trees_equal(got.state, out.state)
    np.testing.assert_array_equal(got.outputs, logits)
    # in evaluation mode, with the state training returned
    again = fnn.value_and_grad(net, CE)(params, x, y, state=out.state, train=False)
    ref = net.apply(params, x, state=out.state)
    np.testing.assert_array_equal(again.outputs, ref[0])
    assert_trees_equal(again.grads, ref[1](CE(ref[0], y)[1], need_dx=False)[0])


def test_value_and_grad_of_a_share_of_a_larger_batch_is_scaled_by_the_share():
    net, (x, y) = mlp(), data()
    params = net.init(fnn.random.key(1), (5,), np.float64)
    f = fnn.value_and_grad(net, CE)
    whole = f(params, x, y)
    parts = [f(params, x[lo:hi], y[lo:hi], total=len(x)) for lo, hi in ((0, 10), (10, 29))]
    assert abs(parts[0].loss + parts[1].loss - whole.loss) < 1e-14
    assert_trees_close(fnn.tree.add(parts[0].grads, parts[1].grads), whole.grads)
    assert_trees_equal(f(params, x, y, world=fnn.distributed.World()).grads, whole.grads)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("k", [2, 3, 29])
def test_accumulation_equals_one_big_batch(k, opt_name):
    """29 examples split into k micro-batches (unevenly for 2 and 3): three updates agree to 1e-12."""
    net, (x, y) = mlp(), data()
    opt = fnn.optim.sgd(0.1, momentum=0.9) if opt_name == "sgd" else fnn.optim.adam(1e-2)
    runs = []
    for accumulate in (1, k):
        step = fnn.train_step(net, CE, opt, accumulate=accumulate)
        params = net.init(fnn.random.key(1), (5,), np.float64)
        opt_state, state = opt.init(params), None
        for i in range(3):
            params, opt_state, state, metrics = step(params, opt_state, state, (x, y), fnn.random.key(i))
        runs.append((params, opt_state, metrics))
    (p1, o1, m1), (pk, ok, mk) = runs
    assert_trees_close(pk, p1)
    assert_trees_close(ok, o1)
    assert set(mk) == set(m1) == {"loss", "accuracy"}
    assert abs(mk["loss"] - m1["loss"]) < 1e-12 and mk["accuracy"] == m1["accuracy"]


def test_accumulation_with_batchnorm_is_not_the_big_batch():
    """As documented: each micro-batch is normalized with its own statistics."""
    net, (x, y) = fnn.serial(Dense(8), BatchNorm(), ReLU(), Dense(4)), data()
    opt = fnn.optim.sgd(0.1)
    params = net.init(fnn.random.key(1), (5,), np.float64)
    one = fnn.train_step(net, CE, opt)(params, opt.init(params), None, (x, y), None)
    two = fnn.train_step(net, CE, opt, accumulate=2)(params, opt.init(params), None, (x, y), None)
    assert not fnn.tree.allclose(one[0], two[0], rtol=1e-6, atol=1e-6)


def test_the_step_is_value_and_grad_then_the_update_and_takes_a_shard():
    net, (x, y) = mlp(), data()
    opt = fnn.optim.adam(1e-2)
    params = net.init(fnn.random.key(1), (5,), np.float64)
    loss, grads, state, logits = fnn.value_and_grad(net, CE)(params, x, y)
    want = opt.update(params, grads, opt.init(params))
    step = fnn.train_step(net, CE, opt)
    for batch in ((x, y), next(fnn.distributed.batches(fnn.distributed.World(), None, (x, y), 29, shuffle=False))):
        p, o, s, metrics = step(params, opt.init(params), None, batch, None)
        assert_trees_equal((p, o), want)
        assert metrics == {"loss": loss, "accuracy": fnn.metrics.accuracy(logits, y)}


def test_metrics_by_name_by_function_and_none_for_regression():
    net = fnn.serial(Dense(3))
    x = fnn.random.normal(fnn.random.key(0), (6, 2), np.float64)
    params = net.init(fnn.random.key(1), (2,), np.float64)
    opt = fnn.optim.sgd(0.1)
    target = np.zeros((6, 3))
    _, _, _, m = fnn.train_step(net, fnn.losses.mse, opt)(params, opt.init(params), None, (x, target), None)
    assert set(m) == {"loss"}  # mse targets are not classes: no accuracy
    mean_abs = ("mean_abs", lambda out, t: float(np.mean(np.abs(out - t))))
    step = fnn.train_step(net, fnn.losses.mse, opt, metrics=[mean_abs], accumulate=2)
    _, _, _, m = step(params, opt.init(params), None, (x, target), None)
    logits = net.apply(params, x)[0]
    assert set(m) == {"loss", "mean_abs"} and abs(m["mean_abs"] - np.mean(np.abs(logits))) < 1e-15
    labels = np.array([0, 1, 2, 0, 1, 2])
    _, _, _, m = fnn.train_step(net, CE, opt, metrics=[])(params, opt.init(params), None, (x, labels), None)
    assert set(m) == {"loss"}
    _, _, _, m = fnn.train_step(net, CE, opt, metrics=["accuracy"])(params, opt.init(params), None, (x, labels), None)
    assert m["accuracy"] == fnn.metrics.accuracy(logits, labels)


def test_bad_inputs():
    net, (x, y) = mlp(), data()
    opt = fnn.optim.sgd(0.1)
    params = net.init(fnn.random.key(1), (5,), np.float64)
    with pytest.raises(TypeError, match="value_and_grad: expected an fnn Layer"):
        fnn.value_and_grad("net", CE)
    with pytest.raises(TypeError, match="value_and_grad: loss_fn must be a loss"):
        fnn.value_and_grad(net, "cross-entropy")
    with pytest.raises(TypeError, match=r"loss_fn must return \(value, doutputs\), got float"):
        fnn.value_and_grad(net, lambda out, t: 0.0)(params, x, y)
    with pytest.raises(ValueError, match="x has 29 examples but the targets have 28"):
        fnn.value_and_grad(net, CE)(params, x, y[:28])
    with pytest.raises(ValueError, match="total must be >= 29"):
        fnn.value_and_grad(net, CE)(params, x, y, total=10)
    with pytest.raises(TypeError, match="world must be an fnn.distributed.World"):
        fnn.value_and_grad(net, CE)(params, x, y, world=2)
    with pytest.raises(TypeError, match="train_step: opt must be an optimizer"):
        fnn.train_step(net, CE, lambda p, g, s: (p, s))
    with pytest.raises(ValueError, match="accumulate must be >= 1"):
        fnn.train_step(net, CE, opt, accumulate=0)
    with pytest.raises(ValueError, match="unknown metric 'top5'"):
        fnn.train_step(net, CE, opt, metrics=["top5"])
    with pytest.raises(TypeError, match="metrics must be a list"):
        fnn.train_step(net, CE, opt, metrics="accuracy")
    with pytest.raises(ValueError, match="may not be called 'loss'"):
        fnn.train_step(net, CE, opt, metrics=[("loss", lambda o, t: 0.0)])
    step = fnn.train_step(net, CE, opt, accumulate=4)
    with pytest.raises(TypeError, match=r"batch must be a pair \(x, y\)"):
        step(params, opt.init(params), None, [x, y], None)
    with pytest.raises(ValueError, match="3 examples cannot be split into accumulate=4"):
        step(params, opt.init(params), None, (x[:3], y[:3]), None)
