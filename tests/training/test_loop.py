"""fnn.fit: the hand-written loop it stands for, bitwise; the best checkpoint and resume, bitwise;
early stopping and the plateau schedule inside a run; progress output; bad inputs."""

import re
import sys

import numpy as np
import pytest

import fnn
from fnn.layers import BatchNorm, Dense, Dropout, ReLU, Tanh
from fnn.training import Checkpoint, EarlyStopping, ReduceLROnPlateau

CE = fnn.losses.softmax_cross_entropy


def data(n=60, seed=0):
    kx, ky = fnn.random.split(fnn.random.key(seed))
    x = fnn.random.normal(kx, (n, 5), np.float64)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)) % 3
    return x, y


TRAIN, HELD = data(60), data(25, seed=1)


def net_and_params(batchnorm=True):
    layers = [Dense(12), BatchNorm(), ReLU(), Dropout(0.2), Dense(3)] if batchnorm else [Dense(12), Tanh(), Dense(3)]
    net = fnn.serial(*layers)
    return net, net.init(fnn.random.key(3), (5,), np.float64)


def run(epochs=3, **kwargs):
    net, params = net_and_params(kwargs.pop("batchnorm", True))
    options = {"batch_size": 16, "loss_fn": CE, "key": fnn.random.key(4), "eval_data": HELD, "progress": False,
               **kwargs}
    opt = options.pop("opt", fnn.optim.adam(1e-2))
    return fnn.fit(net, params, opt, TRAIN, epochs=epochs, **options)


def assert_trees_equal(a, b):
    fnn.tree.check_same_structure(a, b, shapes=True)
    for (path, u), v in zip(fnn.tree.flatten(a)[0], fnn.tree.leaves(b)):
        assert np.asarray(u).dtype == np.asarray(v).dtype, fnn.tree.path_str(path)
        np.testing.assert_array_equal(u, v, err_msg=fnn.tree.path_str(path))


def without_time(history):
    return {k: v for k, v in history.items() if k != "time"}


def test_fit_is_the_loop_written_by_hand_bitwise():
    net, params = net_and_params()
    opt, key, (x, y) = fnn.optim.adam(1e-2), fnn.random.key(4), TRAIN
    opt_state, state, losses, held = opt.init(params), None, [], []
    for epoch in range(3):
        order_key, step_key = fnn.random.split(fnn.random.fold_in(key, epoch))
        total = 0.0
        for i, (xb, yb) in enumerate(fnn.data.batches(order_key, (x, y), 16)):
            out = net.apply(params, xb, train=True, key=fnn.random.fold_in(step_key, i), state=state)
            (logits, vjp), state = out, out.state
            loss, dlogits = CE(logits, yb)
            grads, _ = vjp(dlogits, need_dx=False)
            params, opt_state = opt.update(params, grads, opt_state)
            total += loss * len(yb)
        losses.append(total / len(x))
        held.append(fnn.evaluate(net, params, *HELD, loss_fn=CE, state=state)["loss"])
    result = run()
    assert_trees_equal((result.params, result.opt_state, result.state), (params, opt_state, state))
    assert list(result.history) == ["loss", "accuracy", "eval_loss", "eval_accuracy", "time"]
    np.testing.assert_allclose(result.history["loss"], losses, rtol=1e-14)
    assert result.history["eval_loss"] == held and result.epoch == 3 and not result.stop
    again = run()  # the same arguments: the same bits
    assert_trees_equal(again.params, result.params)
    assert without_time(again.history) == without_time(result.history)


def test_accumulation_in_fit_equals_the_big_batches():
    one, four = run(batchnorm=False), run(batchnorm=False, accumulate=4)
    for a, b in zip(fnn.tree.leaves(one.params), fnn.tree.leaves(four.params)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one.history["loss"], four.history["loss"], rtol=1e-12)


def test_the_best_checkpoint_is_bitwise_the_run_stopped_at_its_epoch(tmp_path):
    result = run(epochs=5, callbacks=[Checkpoint(tmp_path, monitor="eval_accuracy")])
    accuracy = result.history["eval_accuracy"]
    best = int(np.argmax(accuracy)) + 1  # the first epoch with the highest accuracy
    assert fnn.load_metadata(tmp_path / "best.fnn")["epoch"] == best
    short = run(epochs=best)
    saved = fnn.load(tmp_path / "best.fnn")
    assert_trees_equal((saved["params"], saved["state"], saved["opt_state"]),
                       (short.params, short.state, short.opt_state))
    last = fnn.training.load_fit_state(tmp_path / "last.fnn")
    assert_trees_equal(last.params, result.params)
    assert last.epoch == 5 and without_time(last.history) == without_time(result.history)


def callbacks(directory):
    return [ReduceLROnPlateau(factor=0.5, patience=0, threshold=0.5), EarlyStopping(patience=10),
            Checkpoint(directory)]


def test_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    opt = fnn.optim.lr_multiplier(fnn.optim.adam(1e-2))
    whole = run(epochs=5, opt=opt, callbacks=callbacks(tmp_path / "whole"))
    assert whole.history["lr_multiplier"] == [1.0, 1.0, 0.5, 0.25, 0.125]  # the plateau acts inside the run
    first = run(epochs=2, opt=opt, callbacks=callbacks(tmp_path / "parts"))
    assert first.epoch == 2
    resumed = run(epochs=5, opt=opt, callbacks=callbacks(tmp_path / "parts"), resume=tmp_path / "parts" / "last.fnn")
    assert_trees_equal((resumed.params, resumed.opt_state, resumed.state, resumed.callbacks),
                       (whole.params, whole.opt_state, whole.state, whole.callbacks))
    assert resumed.epoch == 5 and without_time(resumed.history) == without_time(whole.history)
    parts, whole_file = (fnn.load(tmp_path / name / "last.fnn") for name in ("parts", "whole"))
    for tree in (parts, whole_file):
        del tree["history"]["time"]
    assert_trees_equal(parts, whole_file)


def test_early_stopping_inside_fit_stops_at_the_documented_epoch(capsys):
    """One batch of 8 per epoch and a metric that reads a scripted sequence: EarlyStopping's
    docstring example, which stops after epoch 4."""
    values = iter([1.0, 0.8, 0.9, 0.85, 0.7, 0.6])
    scripted = ("scripted", lambda outputs, targets: next(values))
    net, params = net_and_params(batchnorm=False)
    result = fnn.fit(net, params, fnn.optim.sgd(0.1), (TRAIN[0][:8], TRAIN[1][:8]), epochs=6, batch_size=8,
                     loss_fn=CE, key=fnn.random.key(0), metrics=[scripted], progress="plain",
                     callbacks=[EarlyStopping("scripted", patience=2)])
    assert result.stop and result.epoch == 4 and result.history["scripted"] == [1.0, 0.8, 0.9, 0.85]
    assert list(result.history) == ["loss", "scripted", "time"]
    assert capsys.readouterr().out.splitlines()[-1] == "stopped after epoch 4 by a callback"


LINE = (r"epoch [12]/2  loss \d\.\d{4}  accuracy \d+\.\d\d%  eval_loss \d\.\d{4}  eval_accuracy \d+\.\d\d%"
        r"  \(\d+\.\d s\)")


@pytest.mark.parametrize("progress", ["plain", "auto-without-tqdm"])
def test_progress_prints_one_line_per_epoch(progress, capsys, monkeypatch):
    if progress == "auto-without-tqdm":
        monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    run(epochs=2, progress="auto" if progress != "plain" else "plain")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and all(re.fullmatch(LINE, line) for line in lines), out
    assert err == ""


def test_progress_false_prints_nothing_and_tqdm_draws_a_bar(capsys, monkeypatch):
    run(epochs=2, progress=False)
    assert capsys.readouterr() == ("", "")
    pytest.importorskip("tqdm")
    run(epochs=1, progress="tqdm")
    out, err = capsys.readouterr()
    assert re.fullmatch(LINE.replace("[12]/2", "1/1"), out.strip()) and "epoch 1/1" in err and "batch" in err
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError, match="progress='tqdm' needs tqdm"):
        run(epochs=1, progress="tqdm")


def test_bad_inputs(tmp_path):
    x, y = TRAIN
    with pytest.raises(TypeError, match=r"fit: train_data must be a pair \(x, y\)"):
        fnn.fit(Dense(3), {}, fnn.optim.sgd(0.1), x, epochs=1, batch_size=4, loss_fn=CE, key=fnn.random.key(0))
    with pytest.raises(ValueError, match="arrays must share their first axis length"):
        run(eval_data=(x, y[:5]))
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        run(epochs=-1)
    with pytest.raises(TypeError, match="expected a key made by fnn.random.key"):
        run(key=4)
    with pytest.raises(TypeError, match="a callback must be a Callback"):
        run(callbacks=[lambda run: run])
    with pytest.raises(ValueError, match="drop_last=True with 60 examples and batch_size=100 leaves no batch"):
        run(batch_size=100, drop_last=True)
    with pytest.raises(ValueError, match=r"progress must be one of \['auto', 'tqdm', 'plain'\]"):
        run(progress="bar")
    with pytest.raises(ValueError, match="wrap the optimizer as fnn.optim.lr_multiplier"):
        run(callbacks=[ReduceLROnPlateau()])  # before any training
    run(epochs=1, callbacks=[Checkpoint(tmp_path)])
    with pytest.raises(ValueError, match="resume: the checkpoint .* was trained with key"):
        run(key=fnn.random.key(5), resume=tmp_path / "last.fnn")
    with pytest.raises(ValueError, match="the state of 1 callbacks but 0 were given"):
        run(resume=tmp_path / "last.fnn")
    with pytest.raises(ValueError, match="fit: resume: .*params"):
        run(resume=tmp_path / "last.fnn", batchnorm=False, callbacks=[Checkpoint(tmp_path)])
    fnn.save(tmp_path / "plain.fnn", {"w": np.ones(2)})
    with pytest.raises(fnn.CheckpointError, match="was not written by fnn.fit"):
        run(resume=tmp_path / "plain.fnn")
