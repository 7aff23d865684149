"""Callbacks for ``fit``: plain objects with optional hooks, as in Keras.

Hooks (all optional): ``set_run(run)``, ``on_train_begin(history)``,
``on_epoch_begin(epoch)``, ``on_after_backward(step, loss, inputs)`` (before the
optimizer step), ``on_batch_end(step, logs)``,
``on_epoch_end(epoch, logs)``, ``on_interrupt(epoch)``, ``on_train_end(history)``.
``run`` is the ``TrainingRun``: model, optimizer, scheduler, history, stop_training.

The ``TensorBoard`` callback draws what the network holds (filters, feature maps, its
graph), so it lives with the pictures: ``cnnkit.viz.tensorboard.TensorBoard``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NonFiniteError
from ..io.checkpoint import atomic_write_bytes, save
from ..nn import LayerCall, trace_layers
from ..tensor import Tensor

__all__ = [
    "Callback",
    "LearningRateScheduler",
    "EarlyStopping",
    "ModelCheckpoint",
    "CSVLogger",
    "NaNGuard",
    "NonFiniteError",
]


class Callback:
    """Base class: stores the run; every hook is optional."""

    run = None

    def set_run(self, run) -> None:
        self.run = run


def _mode_for(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


class _Monitor:
    """Tracks the best value of one metric."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor, self.mode, self.min_delta = monitor, _mode_for(monitor, mode), abs(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def value(self, logs: dict[str, float]) -> float:
        if self.monitor not in logs:
            raise KeyError(
                f"callback monitors {self.monitor!r}, which the epoch logs do not have "
                f"(available: {sorted(logs)}); pass val_loader to fit for val_* metrics"
            )
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def replay(self, history: dict[str, Any]) -> tuple[int | None, int]:
        """Set ``best`` from a resumed run's history; return (its best epoch or None, epochs since)."""
        epochs = list(history.get("epoch", []))
        values = history.get("history", {}).get(self.monitor, [])
        best_epoch, since = None, 0
        for epoch, value in zip(epochs, values):
            if self.improved(float(value)):
                self.best, best_epoch, since = float(value), epoch, 0
            else:
                since += 1
        return best_epoch, since


class LearningRateScheduler(Callback):
    """Step a learning-rate schedule from ``fit`` (what ``fit(scheduler=...)`` uses).

    Args:
        scheduler: a ``cnnkit.optim.lr_scheduler`` schedule.
        interval: "batch" (after every optimizer step), "epoch", or "auto": OneCycleLR
            per batch, every other schedule per epoch.
        monitor: the log value given to ``ReduceLROnPlateau.step`` (falls back to
            "loss" when the logs lack it, e.g. without a validation loader).
    """

    def __init__(self, scheduler, interval: str = "auto", monitor: str = "val_loss"):
        if interval not in ("auto", "batch", "epoch"):
            raise ValueError(f"LearningRateScheduler interval must be 'auto', 'batch' or 'epoch', got {interval!r}")
        if interval == "auto":
            interval = "batch" if type(scheduler).__name__ == "OneCycleLR" else "epoch"
        self.scheduler, self.interval, self.monitor = scheduler, interval, monitor

    def on_batch_end(self, step: int, logs: dict[str, float]) -> None:
        if self.interval == "batch":
            self.scheduler.step()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.interval != "epoch":
            return
        if type(self.scheduler).__name__ == "ReduceLROnPlateau":
            self.scheduler.step(logs[self.monitor if self.monitor in logs else "loss"])
        else:
            self.scheduler.step()


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    With ``restore_best_weights`` the model gets the weights of its best epoch back when
    training ends, whether or not it stopped early.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False):
        self.tracker = _Monitor(monitor, mode, min_delta)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.wait = 0
        self.best_epoch: int | None = None
        self.best_state: dict[str, Any] | None = None
        self.stopped_epoch: int | None = None

    def on_train_begin(self, history) -> None:
        # A resumed run (fit(run=...) with a history) goes on counting from its best epoch so far.
        if history and history.get("epoch"):
            self.best_epoch, self.wait = self.tracker.replay(history)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = self.tracker.value(logs)
        if self.tracker.improved(value):
            self.tracker.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_state = {k: np.array(getattr(v, "data", v), copy=True)
                                   for k, v in self.run.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:  # as Keras: patience epochs without improvement
            self.stopped_epoch = epoch
            self.run.stop_training = True

    def on_train_end(self, history) -> None:
        if self.restore_best_weights and self.best_state is not None:
            self.run.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Save a checkpoint after each epoch (or only when ``monitor`` improves).

    ``filepath`` may contain ``{epoch}`` and any log key, e.g.
    ``"ckpt/epoch{epoch:02d}-{val_loss:.3f}.safetensors"``. Each save is atomic.
    ``checkpoint_kwargs`` is passed to ``cnnkit.save`` (model name and config, RNG states).
    ``tie_break`` (e.g. ``"val_loss"``): with ``save_best_only``, an epoch that equals the best
    ``monitor`` value is saved when it improves this one (accuracy saturates on small
    validation sets; the loss still tells the better model).
    When ``fit`` resumes a run (its history has epochs), ``save_best_only`` replays that
    history first, so a worse epoch after a resume never becomes "best".
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto", save_on_interrupt: bool = True, tie_break: str | None = None,
                 **checkpoint_kwargs):
        self.filepath, self.save_best_only = str(filepath), save_best_only
        self.tracker = _Monitor(monitor, mode, 0.0)
        self.tie_tracker = _Monitor(tie_break, "auto", 0.0) if tie_break else None
        self.save_on_interrupt = save_on_interrupt
        self.checkpoint_kwargs = checkpoint_kwargs
        self.last_saved: Path | None = None

    def _save(self, path: str, epoch: int, logs: dict[str, float]) -> None:
        run = self.run
        kwargs = dict(self.checkpoint_kwargs)
        rng_states = kwargs.pop("rng_states", None)
        if callable(rng_states):
            rng_states = rng_states()
        self.last_saved = save(
            run.model, path, optimizer=run.optimizer, scheduler=run.scheduler, epoch=epoch,
            metrics={k: v for k, v in logs.items()}, history=run.history.to_dict(),
            rng_states=rng_states, **kwargs,
        )

    def on_train_begin(self, history) -> None:
        if not (self.save_best_only and history and history.get("epoch")):
            return
        logs = history.get("history", {})
        for i, _ in enumerate(history["epoch"]):  # the decisions the first part of the run made
            self._is_best({k: v[i] for k, v in logs.items() if i < len(v)})

    def _is_best(self, logs: dict[str, float]) -> bool:
        """Whether this epoch is the best so far (then it becomes the one to beat)."""
        value = self.tracker.value(logs)
        tie = self.tie_tracker.value(logs) if self.tie_tracker else None
        if self.tracker.improved(value):
            if self.tie_tracker:
                self.tie_tracker.best = tie
        elif value == self.tracker.best and self.tie_tracker and self.tie_tracker.improved(tie):
            self.tie_tracker.best = tie
        else:
            return False
        self.tracker.best = value
        return True

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.save_best_only and not self._is_best(logs):
            return
        self._save(self.filepath.format(epoch=epoch + 1, **logs), epoch, logs)

    def on_interrupt(self, epoch: int) -> None:
        if self.save_on_interrupt:
            base = Path(self.filepath.format(epoch=epoch + 1, **{k: 0.0 for k in ("loss", "val_loss", "accuracy", "val_accuracy")}))
            self._save(str(base.with_name("interrupted.safetensors")), epoch - 1, {"interrupted": 1.0})


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row (the file is rewritten atomically each epoch).

    With ``append=True`` an existing file is continued; and when ``fit`` resumes a run
    (its history has epochs), the rows are rebuilt from that history instead, so the log
    matches the checkpoint it resumed from even if the process was killed between writing
    the two, or the file was lost.
    """

    def __init__(self, filename: str | os.PathLike, append: bool = False):
        self.filename, self.append = Path(filename), append
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, history) -> None:
        if self.append and history and history.get("epoch"):
            logs = history.get("history", {})
            self.rows = [{"epoch": int(epoch) + 1, **{k: f"{float(v[i]):.6g}" for k, v in logs.items() if i < len(v)}}
                         for i, epoch in enumerate(history["epoch"])]
            self._write()
        elif self.append and self.filename.exists():
            with open(self.filename, newline="") as f:
                self.rows = list(csv.DictReader(f))

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.rows.append({"epoch": epoch + 1, **{k: f"{v:.6g}" for k, v in logs.items()}})
        self._write()

    def _write(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.filename, buf.getvalue().encode())


class NaNGuard(Callback):
    """Stop training at the first non-finite loss or gradient, saying where it came from.

    Runs after each backward pass and before the optimizer step. The check per batch is
    one scalar (the loss), plus every gradient with ``check_gradients=True``. On failure it
    looks, in this order, for the first cause it can name: the input batch itself holds
    NaN or Inf (a data problem); a weight is already non-finite (the previous optimizer
    step diverged: the learning rate is too high); the first layer, in execution order,
    whose output is non-finite (the batch's forward pass is replayed with hooks); the loss
    itself is non-finite although every layer's output is finite (the loss function
    produced it, e.g. the log of a zero probability); else the layer whose gradient first
    went non-finite in the backward pass. It raises ``NonFiniteError`` (or only stops
    training, with ``raise_error=False``); ``report`` keeps the message.
    """

    def __init__(self, check_gradients: bool = False, raise_error: bool = True):
        self.check_gradients, self.raise_error = check_gradients, raise_error
        self.report: str | None = None

    def on_after_backward(self, step: int, loss, x) -> None:
        model = self.run.model
        loss_value = np.asarray(loss.data)
        bad_loss = not np.all(np.isfinite(loss_value))
        named = list(model.named_parameters())
        bad_grads = []
        if bad_loss or self.check_gradients:
            bad_grads = [n for n, p in named if p.grad is not None and not np.all(np.isfinite(p.grad))]
        if not bad_loss and not bad_grads:
            return
        what = _nonfinite_cause(model, named, x, bad_loss, loss_value, bad_grads)
        self.report = f"non-finite {'loss' if bad_loss else 'gradient'} at batch {step + 1}: {what}"
        self.run.stop_training = True
        self.run.skip_step = True
        if self.raise_error:
            raise NonFiniteError(self.report)


def _count_nonfinite(a: np.ndarray) -> str:
    nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    return ", ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else "") if part)


def _nonfinite_cause(model, named, x, bad_loss: bool, loss_value: np.ndarray, bad_grads: list[str]) -> str:
    """The first nameable cause of a non-finite loss or gradient (see ``NaNGuard``)."""
    data = np.asarray(getattr(x, "data", x))
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        return f"the input batch itself holds non-finite values ({_count_nonfinite(data)}): check the data"
    bad_weights = [n for n, p in named if not np.all(np.isfinite(p.data))]
    if bad_weights:
        return (f"the weights are already non-finite ({', '.join(bad_weights[:3])}"
                f"{', ...' if len(bad_weights) > 3 else ''}): the previous optimizer step diverged; "
                "lower the learning rate")
    where = first_nonfinite_output(model, x)
    if where is not None:
        return f"first non-finite output: {where}"
    if bad_loss:
        return (f"the loss itself is {float(loss_value.reshape(-1)[0])} although every layer's output is "
                "finite: the loss function produced it (e.g. the log of a zero probability, or a bad target)")
    # gradients flow backwards: the last parameter in forward order goes bad first
    name = bad_grads[-1]
    layer = name.rsplit(".", 1)[0]
    return f"first non-finite gradient: {layer} ({type(model.get_submodule(layer)).__name__}), parameter {name}"


def first_nonfinite_output(model, x) -> str | None:
    """Run ``model(x)`` with hooks and return 'path (Type)' of the first non-finite layer output."""
    found: list[str] = []

    def check(call: LayerCall) -> None:
        data = getattr(call.output, "data", call.output)
        if not found and isinstance(data, np.ndarray) and not np.all(np.isfinite(data)):
            found.append(f"{call.path} ({type(call.module).__name__})")

    with trace_layers(model, None, on_call=check, keep=False):
        model(x if isinstance(x, Tensor) else Tensor(x))
    return found[0] if found else None
