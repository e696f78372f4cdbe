"""fnn.evaluate: its metrics against numpy on the whole set, in inference mode, in any batch size."""

import numpy as np
import pytest

import fnn
from fnn.layers import BatchNorm, Dense, Dropout, ReLU

CE = fnn.losses.softmax_cross_entropy


def setup():
    net = fnn.serial(Dense(16), BatchNorm(), ReLU(), Dropout(0.5), Dense(5))
    kx, ky = fnn.random.split(fnn.random.key(0))
    x = fnn.random.normal(kx, (103, 6), np.float64)
    y = fnn.random.permutation(ky, 103) % 5
    params = net.init(fnn.random.key(1), (6,), np.float64)
    state = net.apply(params, x, train=True, key=fnn.random.key(2)).state  # running statistics moved once
    return net, params, state, x, y


def numpy_metrics(logits, y, k):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    top = np.argsort(-logits, axis=1)[:, :k]
    confusion = np.zeros((5, 5), np.int64)
    np.add.at(confusion, (y, logits.argmax(axis=1)), 1)
    return {"loss": -logp[np.arange(len(y)), y].mean(), "accuracy": np.mean(logits.argmax(axis=1) == y),
            "top_k_accuracy": np.mean([y[i] in top[i] for i in range(len(y))]), "confusion_matrix": confusion}


@pytest.mark.parametrize("batch_size", [1, 10, 103, 500])
def test_metrics_equal_numpy_on_the_whole_set_in_evaluation_mode(batch_size):
    net, params, state, x, y = setup()
    logits = net.apply(params, x, state=state)[0]  # evaluation mode: running statistics, no dropout
    want = numpy_metrics(logits, y, 3)
    got = fnn.evaluate(net, params, x, y, loss_fn=CE, state=state, batch_size=batch_size, top_k=3,
                       metrics=["loss", "accuracy", "top_k_accuracy", "confusion_matrix"])
    assert list(got) == ["loss", "accuracy", "top_k_accuracy", "confusion_matrix"]
    assert abs(got["loss"] - want["loss"]) < 1e-12
    assert got["accuracy"] == want["accuracy"] and got["top_k_accuracy"] == want["top_k_accuracy"]
    np.testing.assert_array_equal(got["confusion_matrix"], want["confusion_matrix"])


def test_defaults_a_custom_metric_and_inference_without_residuals(monkeypatch):
    net, params, state, x, y = setup()
    calls = []
    real = fnn.training.evaluation.predict

    def spy(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(fnn.training.evaluation, "predict", spy)  # fnn.predict: need_vjp=False
    assert list(fnn.evaluate(net, params, x, y, loss_fn=CE, state=state, batch_size=50)) == ["loss", "accuracy"]
    assert calls == [50, 50, 3]
    assert list(fnn.evaluate(net, params, x, y, state=state)) == ["accuracy"]
    logits = net.apply(params, x, state=state)[0]
    margin = ("margin", lambda out, t: float(np.mean(out.max(axis=1) - out.min(axis=1))))
    got = fnn.evaluate(net, params, x, y, state=state, batch_size=7, metrics=[margin])
    assert abs(got["margin"] - np.mean(logits.max(axis=1) - logits.min(axis=1))) < 1e-12


def test_regression_outputs_get_the_loss_alone():
    net = Dense(2)
    x = np.ones((4, 3))
    params = net.init(fnn.random.key(0), (3,), np.float64)
    got = fnn.evaluate(net, params, x, np.zeros((4, 2)), loss_fn=fnn.losses.mse)
    assert list(got) == ["loss"] and abs(got["loss"] - np.mean(net.apply(params, x)[0] ** 2)) < 1e-15


def test_bad_inputs():
    net, params, state, x, y = setup()
    with pytest.raises(ValueError, match="metric 'loss' needs a loss_fn"):
        fnn.evaluate(net, params, x, y, state=state, metrics=["loss"])
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        fnn.evaluate(net, params, x, y, state=state, metrics=["f1"])
    with pytest.raises(ValueError, match="x holds no examples"):
        fnn.evaluate(net, params, x[:0], y[:0], state=state)
    with pytest.raises(ValueError, match="k must be <= 5"):
        fnn.evaluate(net, params, x, y, state=state, metrics=["top_k_accuracy"], top_k=6)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fnn.evaluate(net, params, x, y, state=state, batch_size=0)
    with pytest.raises(ValueError, match="BatchNorm"):  # state=None in evaluation: the statistics were forgotten
        fnn.evaluate(net, params, x, y)
    seq = Dense(2)  # outputs (N, 4, 2): not class scores (N, C)
    with pytest.raises(ValueError, match=r"confusion matrix needs class scores \(N, C\) as outputs, got \(3, 4, 2\)"):
        fnn.evaluate(seq, seq.init(fnn.random.key(0), (4, 3)), np.ones((3, 4, 3), np.float32), np.zeros(3, np.int64),
                     metrics=["confusion_matrix"])
