"""fnn.training.callbacks driven directly on scripted sequences: EarlyStopping's documented epoch,
ReduceLROnPlateau against PyTorch's scheduler, Checkpoint's choice of the best epoch; bad inputs."""

import math

import numpy as np
import pytest

from fnn.training import Checkpoint, EarlyStopping, FitState, ReduceLROnPlateau


def run_with(history, opt_state=None, epoch=None):
    epoch = len(next(iter(history.values()))) if epoch is None else epoch
    return FitState({}, opt_state if opt_state is not None else {}, None, history, epoch)


def stop_epoch(callback, values, name="eval_loss"):
    """Drive ``callback`` through ``on_epoch_end`` with a fake history; the epoch it stops after, or None."""
    mine = callback.init(None)
    for epoch in range(1, len(values) + 1):
        mine, run = callback.on_epoch_end(mine, run_with({name: values[:epoch]}))
        if run.stop:
            return epoch
    return None


@pytest.mark.parametrize("values, patience, min_delta, stops", [
    ([1.0, 0.8, 0.9, 0.85, 0.7], 2, 0.0, 4),          # the docstring's example
    ([1.0, 0.8, 0.9, 0.85, 0.7], 3, 0.0, None),
    ([1.0, 0.8, 0.9], 0, 0.0, 3),                      # patience 0: the first epoch without improvement
    ([1.0, 0.95, 0.96, 0.9], 2, 0.06, 3),              # 0.95 and 0.96 are not 0.06 better than 1.0
    ([1.0, math.nan, math.nan, 0.5], 2, 0.0, 3),       # NaN never improves
    ([1.0, 1.0, 1.0, 1.0], 3, 0.0, 4),                 # equal is no improvement
])
def test_early_stopping_stops_at_the_documented_epoch(values, patience, min_delta, stops):
    assert stop_epoch(EarlyStopping(patience=patience, min_delta=min_delta), values) == stops


def test_early_stopping_on_accuracy_maximizes_and_records_the_best_epoch():
    es = EarlyStopping("eval_accuracy", patience=1)
    assert es.mode == "max" and stop_epoch(es, [0.5, 0.7, 0.6], "eval_accuracy") == 3
    mine = es.init(None)
    for epoch, value in enumerate([0.5, 0.7, 0.6], 1):
        mine, _ = es.update(mine, value, epoch)
    assert (float(mine["best"]), int(mine["best_epoch"]), int(mine["wait"])) == (0.7, 2, 1)
    assert stop_epoch(EarlyStopping("loss", mode="max", patience=1), [1.0, 2.0, 1.5], "loss") == 3


def torch_lrs(values, **kwargs):
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    lrs = []
    for v in values:
        opt.step()
        scheduler.step(v)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


PLATEAUS = [
    ({}, {}),
    ({"factor": 0.5, "patience": 2}, {"factor": 0.5, "patience": 2}),
    ({"factor": 0.5, "patience": 1, "cooldown": 2}, {"factor": 0.5, "patience": 1, "cooldown": 2}),
    ({"factor": 0.3, "patience": 0, "min_multiplier": 0.01}, {"factor": 0.3, "patience": 0, "min_lr": 0.01}),
    ({"patience": 1, "threshold": 0.1, "threshold_mode": "abs"},
     {"patience": 1, "threshold": 0.1, "threshold_mode": "abs"}),
    ({"factor": 0.5, "patience": 1, "mode": "max", "threshold": 0.05},
     {"factor": 0.5, "patience": 1, "mode": "max", "threshold": 0.05}),
    ({"factor": 0.7, "patience": 0, "eps": 0.2}, {"factor": 0.7, "patience": 0, "eps": 0.2}),  # stops at 0.49
]


@pytest.mark.parametrize("ours, theirs", PLATEAUS)
def test_reduce_lr_on_plateau_follows_pytorch(ours, theirs):
    rng = np.random.default_rng(0)
    values = list(np.round(np.concatenate([np.linspace(2, 1, 6), 1 + rng.uniform(0, 0.2, 14),
                                           np.linspace(1, 0.5, 5), [0.5] * 15]), 3))
    if theirs.get("mode") == "max":
        values = [-v for v in values]
    want = torch_lrs(values, **theirs)
    plateau = ReduceLROnPlateau(**ours)
    mine, multiplier, got = plateau.init(None), 1.0, []
    for v in values:
        mine, multiplier = plateau.update(mine, float(v), multiplier)
        got.append(multiplier)
    assert got == want
    assert len(set(got)) > 1  # the sequence does reduce


def test_reduce_lr_on_plateau_sets_the_multiplier_in_a_new_state_dict():
    plateau = ReduceLROnPlateau(factor=0.5, patience=0)
    opt_state = {"inner": {"step": np.array(3)}, "lr_multiplier": np.array(1.0)}
    mine = plateau.init(run_with({"eval_loss": []}, opt_state, 0))
    mine, run = plateau.on_epoch_end(mine, run_with({"eval_loss": [1.0]}, opt_state))
    assert run.opt_state is opt_state  # improved: nothing to change
    mine, run = plateau.on_epoch_end(mine, run_with({"eval_loss": [1.0, 1.0]}, opt_state))
    assert float(run.opt_state["lr_multiplier"]) == 0.5 and run.opt_state["lr_multiplier"].dtype == np.float64
    assert float(opt_state["lr_multiplier"]) == 1.0 and run.opt_state["inner"] is opt_state["inner"]


def test_reduce_lr_on_plateau_needs_the_lr_multiplier_wrapper():
    with pytest.raises(ValueError, match=r"no 'lr_multiplier'.*wrap the optimizer as fnn.optim.lr_multiplier\(opt\)"):
        ReduceLROnPlateau().init(run_with({}, {"step": np.array(0)}, 0))
    with pytest.raises(TypeError, match="must be the dict of fnn.optim.lr_multiplier"):
        ReduceLROnPlateau().init(FitState({}, (1, 2), None, {}))


def test_checkpoint_picks_the_strictly_best_epoch(tmp_path):
    ckpt = Checkpoint(tmp_path / "run", monitor="eval_accuracy")
    mine = ckpt.init(None)
    assert (tmp_path / "run").is_dir() and ckpt.best_path == str(tmp_path / "run" / "best.fnn")
    bests = []
    values = [0.5, 0.7, 0.7, 0.9, 0.8]
    for epoch in range(1, 6):
        mine, _ = ckpt.on_epoch_end(mine, run_with({"eval_accuracy": values[:epoch]}))
        bests.append(int(mine["best_epoch"]))
    assert bests == [1, 2, 2, 4, 4]


@pytest.mark.parametrize("make, error, match", [
    (lambda: EarlyStopping(patience=-1), ValueError, "EarlyStopping: patience must be >= 0"),
    (lambda: EarlyStopping(mode="lowest"), ValueError, r"mode must be one of \['auto', 'min', 'max'\]"),
    (lambda: EarlyStopping(monitor=3), TypeError, "monitor must be a history name"),
    (lambda: ReduceLROnPlateau(factor=1.0), ValueError, r"factor must be in \[0, 1\)"),
    (lambda: ReduceLROnPlateau(threshold_mode="relative"), ValueError, "threshold_mode must be one of"),
    (lambda: Checkpoint(None), TypeError, "Checkpoint: directory must be a path"),
    (lambda: Checkpoint("x", best="yes"), TypeError, "best must be True or False"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_monitor_missing_from_the_history_is_named():
    with pytest.raises(ValueError, match=r"monitor 'eval_loss' is not in the history, which has \['loss'\]"):
        stop_epoch(EarlyStopping(), [1.0], name="loss")
