"""A resumed run's callbacks remember the run: the best so far, the epochs since it, the log's rows."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cnnkit import nn, optim
from cnnkit.io.checkpoint import load_checkpoint
from cnnkit.train import CSVLogger, EarlyStopping, History, ModelCheckpoint, TrainingRun


def _history(values):
    h = History()
    for epoch, v in enumerate(values):
        h.append(epoch, {"loss": 1.0 / (epoch + 1), "val_accuracy": v})
    return h


@pytest.fixture
def run():
    model = nn.Sequential(nn.Linear(3, 2, rng=np.random.default_rng(0)))
    return TrainingRun(model, optim.SGD(model.parameters(), lr=0.1))


def test_best_so_far_survives_a_resume(tmp_path, run):
    """Before: the best-so-far was forgotten on resume, so a worse epoch became best."""
    run.history = _history([0.50, 0.90, 0.70])
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy", save_best_only=True)
    best.set_run(run)
    best.on_train_begin(run.history.to_dict())
    best.on_epoch_end(3, {"val_accuracy": 0.80})          # worse than epoch 2's 0.90
    assert not (tmp_path / "best.safetensors").exists()
    best.on_epoch_end(4, {"val_accuracy": 0.95})
    assert load_checkpoint(tmp_path / "best.safetensors").meta["epoch"] == 4


def test_early_stopping_counts_from_the_best_epoch_before_the_resume(run):
    run.history = _history([0.50, 0.90, 0.70, 0.60])
    stopper = EarlyStopping(monitor="val_accuracy", patience=3)
    stopper.set_run(run)
    stopper.on_train_begin(run.history.to_dict())
    assert stopper.best_epoch == 1 and stopper.wait == 2
    stopper.on_epoch_end(4, {"val_accuracy": 0.85})
    assert run.stop_training and stopper.stopped_epoch == 4


@pytest.mark.parametrize("on_disk", ["lost", "one-row-short", "one-row-too-many", "garbage"])
def test_the_log_is_rebuilt_from_the_checkpoint_history_on_resume(tmp_path, run, on_disk):
    """Before: log.csv lost rows after a kill or Ctrl-C followed by --resume."""
    path = tmp_path / "log.csv"
    history = _history([0.5, 0.6, 0.7])
    rows = [f"{e + 1},{1 / (e + 1):.6g},{v:.6g}\n" for e, v in enumerate([0.5, 0.6, 0.7, 0.8])]
    content = {"lost": None, "one-row-short": rows[:2], "one-row-too-many": rows, "garbage": ["\0\0\xff\n"]}[on_disk]
    if content is not None:
        path.write_text("epoch,loss,val_accuracy\n" + "".join(content))
    logger = CSVLogger(path, append=True)
    logger.set_run(run)
    logger.on_train_begin(history.to_dict())
    logger.on_epoch_end(3, {"loss": 0.25, "val_accuracy": 0.9})
    with open(path, newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["epoch"] for r in got] == ["1", "2", "3", "4"]
    assert [r["val_accuracy"] for r in got] == ["0.5", "0.6", "0.7", "0.9"]


@pytest.mark.parametrize("done, old, new", [(4, 6, 9), (6, 6, 9), (2, 6, 4)])
def test_an_extended_one_cycle_schedule_follows_the_new_plan_from_the_step_reached(done, old, new):
    """--resume --epochs N: the schedule is re-planned over N epochs (documented), never 'stepped too often'."""
    from cnnkit.train.recipes import replan_schedule

    steps = 5

    def make(epochs):
        model = nn.Sequential(nn.Linear(3, 2, rng=np.random.default_rng(0)))
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return opt, optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=epochs, steps_per_epoch=steps)

    opt, sched = make(old)
    for _ in range(done * steps):
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    opt, sched = make(new)                     # the resumed process, planned for the new length
    opt.load_state_dict(saved_opt)
    replan_schedule(sched, saved_sched)
    ref_opt, ref = make(new)                   # a run planned that long from the start
    for _ in range(done * steps):
        ref.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["momentum"] == pytest.approx(ref_opt.param_groups[0]["momentum"])
    for _ in range((new - done) * steps):      # to the end of the new plan, never past it
        sched.step()
        ref.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
