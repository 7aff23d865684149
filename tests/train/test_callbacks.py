"""train.callbacks: EarlyStopping, NaNGuard, CSVLogger (with TensorBoard), LearningRateScheduler."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cnnkit import optim
from cnnkit.errors import NonFiniteError
from cnnkit.train import CSVLogger, EarlyStopping, NaNGuard, fit
from cnnkit.viz.tensorboard import TensorBoard
from tests.io.test_checkpoint import ArrayLoader, data, small_net, weights


def test_early_stopping_restores_the_best_weights_even_without_stopping_early():
    x, y = data()
    model = small_net(0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    snapshots = []

    class Snapshot:
        def on_epoch_end(self, epoch, logs):
            snapshots.append((logs["val_loss"], weights(model)))

    stopper = EarlyStopping(monitor="val_loss", patience=100, restore_best_weights=True)
    fit(model, ArrayLoader(x, y, 16, np.random.default_rng(0)), epochs=5, optimizer=opt, verbose=0,
        val_loader=ArrayLoader(x, y, 96, np.random.default_rng(1)), callbacks=[Snapshot(), stopper])
    assert stopper.stopped_epoch is None
    best_loss, best_weights = min(snapshots, key=lambda s: s[0])
    for key, value in weights(model).items():
        np.testing.assert_array_equal(value, best_weights[key])


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    x, y = data()
    model = small_net(0)
    opt = optim.SGD(model.parameters(), lr=0.01)
    stopper = EarlyStopping(monitor="loss", patience=2, min_delta=10.0)  # no epoch after the first improves by 10
    history = fit(model, ArrayLoader(x, y, 16, np.random.default_rng(0)), epochs=20, optimizer=opt,
                  verbose=0, callbacks=[stopper])
    assert history.epoch == [0, 1, 2] and stopper.stopped_epoch == 2


def test_nan_guard_names_the_first_layer_whose_output_went_non_finite():
    x, y = data()
    model = small_net(0)
    model[6].weight.data[0] = 3e38  # finite weights of the Linear layer at index 6, whose output overflows
    opt = optim.SGD(model.parameters(), lr=0.1)
    guard = NaNGuard()
    with pytest.raises(NonFiniteError, match=r"non-finite loss at batch 1: first non-finite output: 6 \(Linear\)"):
        fit(model, ArrayLoader(x, y, 16, np.random.default_rng(0)), epochs=1, optimizer=opt, verbose=0,
            callbacks=[guard])


def test_nan_guard_names_non_finite_weights_and_inputs_before_blaming_a_layer():
    x, y = data()
    model = small_net(0)
    model[6].weight.data[0, 0] = np.inf
    loader = ArrayLoader(x, y, 16, np.random.default_rng(0))
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteError, match=r"batch 1: the weights are already non-finite \(6.weight\): the "
                                             r"previous optimizer step diverged; lower the learning rate"):
        fit(model, loader, epochs=1, optimizer=opt, verbose=0, callbacks=[NaNGuard()])
    x = x.copy()
    x[:, :, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"the input batch itself holds non-finite values \(16 NaN\)"):
        fit(small_net(0), ArrayLoader(x, y, 16, np.random.default_rng(0)), epochs=1, optimizer=opt, verbose=0,
            callbacks=[NaNGuard()])


def test_nan_guard_says_when_the_loss_itself_is_non_finite():
    x, y = data()
    model = small_net(0)

    def nll_of_a_zero_probability(out, t):  # finite outputs, infinite loss: -log(0)
        return (out * 0.0).sum() - np.log(np.float32(0.0))

    with np.errstate(divide="ignore"), pytest.raises(
        NonFiniteError, match=r"non-finite loss at batch 1: the loss itself is inf although every layer's "
                              r"output is finite: the loss function produced it"):
        fit(model, ArrayLoader(x, y, 16, np.random.default_rng(0)), epochs=1, loss=nll_of_a_zero_probability,
            optimizer=optim.SGD(model.parameters(), lr=0.1), verbose=0, callbacks=[NaNGuard()])


def test_csv_logger_and_tensorboard_write_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = data()
    model = small_net(0)
    opt = optim.SGD(model.parameters(), lr=0.05)
    fit(model, ArrayLoader(x, y, 16, np.random.default_rng(0)), epochs=3, optimizer=opt, verbose=0,
        callbacks=[CSVLogger(tmp_path / "log.csv"), TensorBoard(tmp_path / "tb", batch_every=2)])
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and "loss" in rows[0]
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = [e.value for e in events.Scalars("epoch/loss")]
    np.testing.assert_allclose(losses, [float(r["loss"]) for r in rows], rtol=1e-4)
    assert "epoch/lr" in events.Tags()["scalars"] and "batch/loss" in events.Tags()["scalars"]


def test_schedules_step_per_epoch_per_batch_and_on_plateau():
    x, y = data()
    model = small_net(0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, ArrayLoader(x, y, 16, np.random.default_rng(0)), epochs=3, optimizer=opt, verbose=0,
                  scheduler=optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    np.testing.assert_allclose(history.history["lr"], [0.1, 0.05, 0.025])

    opt = optim.SGD(model.parameters(), lr=0.1)
    loader = ArrayLoader(x, y, 16, np.random.default_rng(0))
    cycle = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=2, steps_per_epoch=len(loader))
    fit(model, loader, epochs=2, optimizer=opt, verbose=0, scheduler=cycle)
    assert cycle.last_epoch == 2 * len(loader)

    opt = optim.SGD(model.parameters(), lr=1e-3)
    # threshold 10 (relative): no epoch counts as an improvement, so each one halves lr
    plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=10.0)
    history = fit(model, loader, epochs=3, optimizer=opt, verbose=0, scheduler=plateau, monitor="loss")
    np.testing.assert_allclose(history.history["lr"], [1e-3, 5e-4, 2.5e-4])
