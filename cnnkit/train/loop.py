"""fit / evaluate / predict: the Keras-style training loop over cnnkit models.

``fit`` is one loop you can read top to bottom: for each epoch, for each batch, forward,
loss, backward, optimizer step; then validation, the learning-rate schedule, the
History and the callbacks. Callbacks see a ``TrainingRun`` (the model, optimizer,
scheduler, history, and a ``stop_training`` flag they may set).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import functional as F
from ..config import no_grad
from ..nn import Module, eval_mode
from ..tensor import Tensor
from .callbacks import LearningRateScheduler
from .history import History

__all__ = ["TrainingRun", "fit", "evaluate", "predict", "predict_proba", "EpochStats", "format_logs", "format_report"]


@dataclass
class TrainingRun:
    """What callbacks can see and steer during ``fit``."""

    model: Any
    optimizer: Any
    scheduler: Any = None
    history: History = field(default_factory=History)
    epoch: int = 0
    epochs: int = 0
    stop_training: bool = False
    skip_step: bool = False
    train_loader: Any = None
    extra_state: dict[str, Any] = field(default_factory=dict)


class EpochStats:
    """Running loss, accuracy and throughput over one pass of a loader."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.correct = 0
        self.seen = 0
        self.classified = 0
        self.start = time.perf_counter()

    def update(self, loss: float, logits: np.ndarray, target: np.ndarray) -> None:
        n = len(target)
        self.loss_sum += loss * n
        self.seen += n
        if logits.ndim == 2 and target.ndim == 1 and target.dtype.kind in "iu":
            self.correct += int((logits.argmax(axis=1) == target).sum())
            self.classified += n

    def logs(self) -> dict[str, float]:
        out = {"loss": self.loss_sum / max(self.seen, 1)}
        if self.classified:
            out["accuracy"] = self.correct / self.classified
        out["images_per_sec"] = self.seen / max(time.perf_counter() - self.start, 1e-9)
        return out


def _as_arrays(batch) -> tuple[np.ndarray, np.ndarray]:
    x, t = batch
    x = x.data if isinstance(x, Tensor) else np.asarray(x)
    t = t.data if isinstance(t, Tensor) else np.asarray(t)
    return x, t


def _current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def fit(
    model,
    train_loader: Iterable,
    *,
    epochs: int,
    optimizer,
    loss: Callable = F.cross_entropy,
    val_loader: Iterable | None = None,
    callbacks: Sequence = (),
    scheduler=None,
    initial_epoch: int = 0,
    verbose: int = 1,
    monitor: str = "val_loss",
    run: TrainingRun | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs; return the History.

    Args:
        model: a Module (or any callable) mapping a batch Tensor to outputs.
        train_loader: iterable of (inputs, targets) batches (arrays or Tensors).
        epochs: the epoch to stop at (as Keras: with ``initial_epoch`` > 0 it resumes).
        optimizer: a cnnkit optimizer.
        loss: loss function of (outputs, targets), cross-entropy by default.
        val_loader: optional; adds ``val_loss`` / ``val_accuracy`` to each epoch's logs.
        callbacks: objects with any of on_train_begin/on_epoch_begin/on_after_backward/
            on_batch_end/on_epoch_end/on_train_end/on_interrupt; each gets ``set_run(run)``
            first.
        scheduler: a learning-rate schedule, stepped by a ``LearningRateScheduler``
            callback that runs before the others (per epoch; OneCycleLR per batch;
            ReduceLROnPlateau with the ``monitor`` value).
        verbose: 0 silent, 1 progress bar on a terminal / one line per epoch otherwise.
        run: an existing TrainingRun to continue (resume); a new one otherwise.
    """
    run = run or TrainingRun(model, optimizer, scheduler)
    run.model, run.optimizer, run.scheduler = model, optimizer, scheduler
    run.epochs, run.train_loader = epochs, train_loader
    run.stop_training = run.skip_step = False
    if scheduler is not None:
        # First, so that checkpoints written by later callbacks hold the stepped schedule.
        callbacks = [LearningRateScheduler(scheduler, monitor=monitor), *callbacks]
    for cb in callbacks:
        if hasattr(cb, "set_run"):
            cb.set_run(run)
    _call(callbacks, "on_train_begin", run.history.to_dict())
    try:
        for epoch in range(initial_epoch, epochs):
            run.epoch = epoch
            model.train()
            _call(callbacks, "on_epoch_begin", epoch)
            stats = EpochStats()
            progress = _Progress(epoch, epochs, _length(train_loader), verbose)
            for step, batch in enumerate(train_loader):
                x, t = _as_arrays(batch)
                out = model(Tensor(x))
                loss_value = loss(out, t)
                optimizer.zero_grad()
                loss_value.backward()
                _call(callbacks, "on_after_backward", step, loss_value, x)
                if run.skip_step:  # a callback found the step unsafe (NaNGuard)
                    break
                optimizer.step()
                stats.update(float(loss_value.data), out.data, t)
                batch_logs = stats.logs()
                batch_logs["batch_loss"] = float(loss_value.data)
                progress.update(step + 1, batch_logs)
                _call(callbacks, "on_batch_end", step, batch_logs)
                if run.stop_training:
                    break
            logs = stats.logs()
            if val_loader is not None:
                val = evaluate(model, val_loader, loss=loss, confusion=False)
                logs.update({f"val_{k}": v for k, v in val.items() if np.isscalar(v)})
            logs["lr"] = _current_lr(optimizer)
            progress.close(logs)
            run.history.append(epoch, logs)
            _call(callbacks, "on_epoch_end", epoch, logs)
            if run.stop_training:
                break
    except KeyboardInterrupt:
        _call(callbacks, "on_interrupt", run.epoch)
        raise
    finally:
        _call(callbacks, "on_train_end", run.history.to_dict())
    return run.history


def _call(callbacks, name: str, *args) -> None:
    for cb in callbacks:
        method = getattr(cb, name, None)
        if method is not None:
            method(*args)


def _length(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def evaluate(
    model,
    loader: Iterable,
    *,
    loss: Callable | None = F.cross_entropy,
    topk: Sequence[int] = (1, 5),
    confusion: bool = True,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Loss, accuracy, top-k accuracy and (optionally) the confusion matrix over ``loader``.

    The model runs in eval mode under ``no_grad``; each module's mode is restored afterwards.

    Returns:
        {"loss", "accuracy", "top5_accuracy" (for each k > 1 with k <= classes),
         "confusion_matrix" (K, K) int64 array (rows: true class, columns: predicted)}.
    """
    loss_sum, seen = 0.0, 0
    hits = {k: 0 for k in topk}
    matrix = None
    with no_grad(), (eval_mode(model) if isinstance(model, Module) else nullcontext()):
        for batch in loader:
            x, t = _as_arrays(batch)
            out = model(Tensor(x))
            logits = out.data
            if loss is not None:
                loss_sum += float(loss(out, t).data) * len(t)
            seen += len(t)
            K = logits.shape[1]
            order = np.argsort(-logits, axis=1, kind="stable")
            for k in topk:
                if k <= K:
                    hits[k] += int((order[:, :k] == t[:, None]).any(axis=1).sum())
            if confusion:
                n_cls = num_classes or K
                if matrix is None:
                    matrix = np.zeros((n_cls, n_cls), np.int64)
                np.add.at(matrix, (t.astype(np.int64), order[:, 0]), 1)
    results: dict[str, Any] = {}
    if loss is not None:
        results["loss"] = loss_sum / max(seen, 1)
    for k in topk:
        if k == 1:
            results["accuracy"] = hits[1] / max(seen, 1)
        elif matrix is None or k <= matrix.shape[0]:
            results[f"top{k}_accuracy"] = hits[k] / max(seen, 1)
    if confusion and matrix is not None:
        results["confusion_matrix"] = matrix
    return results


def predict(model, data, batch_size: int = 256) -> np.ndarray:
    """The model's outputs for every input, as Keras' ``Model.predict``: logits for a classifier.

    Runs in eval mode (each module's mode is restored afterwards) without grad, one batch
    at a time; ``predict_proba`` turns a classifier's outputs into probabilities.

    Args:
        data: an array or Tensor of inputs (N, ...), or a loader yielding batches of inputs
            or (inputs, targets) pairs.
        batch_size: for an array of inputs.

    Returns:
        The outputs of every batch, concatenated along axis 0: (N, K) for a classifier.
    """
    if isinstance(data, (np.ndarray, Tensor)):
        x = data.data if isinstance(data, Tensor) else data
        batches = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    else:
        batches = (_as_arrays(b)[0] if isinstance(b, (tuple, list)) else b for b in data)
    chunks = []
    with no_grad(), (eval_mode(model) if isinstance(model, Module) else nullcontext()):
        for xb in batches:
            out = model(xb if isinstance(xb, Tensor) else Tensor(xb))
            chunks.append(np.asarray(out.data))
    return np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)


def predict_proba(model, data, batch_size: int = 256) -> np.ndarray:
    """Class probabilities: the softmax over axis 1 of ``predict``'s outputs (logits).

    Returns:
        (N, K) probabilities, each row summing to 1.
    """
    logits = predict(model, data, batch_size)
    if logits.ndim < 2:
        return logits
    return F.softmax(Tensor(logits), dim=1).data


class _Progress:
    """A tqdm bar per epoch on a terminal; one line per epoch otherwise."""

    def __init__(self, epoch: int, epochs: int, total: int | None, verbose: int):
        self.prefix = f"Epoch {epoch + 1}/{epochs}"
        self.verbose = verbose
        self.start = time.perf_counter()
        self.bar = None
        if verbose and sys.stdout.isatty():
            try:
                from tqdm import tqdm  # the progress bar library loads only on a terminal
            except ImportError:  # pragma: no cover - tqdm is a dependency
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=self.prefix, unit="batch", leave=True, dynamic_ncols=True)

    def update(self, step: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.n = step
            post = {"loss": f"{logs['loss']:.4f}"}
            if "accuracy" in logs:
                post["acc"] = f"{logs['accuracy']:.4f}"
            post["img/s"] = f"{logs['images_per_sec']:.0f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(0)

    def close(self, logs: dict[str, float]) -> None:
        line = format_logs(logs)
        if self.bar is not None:
            self.bar.close()
            print(f"  {line}", flush=True)
        elif self.verbose:
            print(f"{self.prefix} - {time.perf_counter() - self.start:.1f}s - {line}", flush=True)


def format_logs(logs: dict[str, float]) -> str:
    parts = []
    for key, value in logs.items():
        if key == "images_per_sec":
            parts.append(f"{value:.0f} img/s")
        elif key == "lr":
            parts.append(f"lr: {value:.3g}")
        else:
            parts.append(f"{key}: {value:.4f}")
    return " - ".join(parts)


def format_report(result: dict[str, Any], classes: tuple[str, ...]) -> str:
    """Accuracy, per-class precision and recall, and the confusion matrix as text."""
    cm = result["confusion_matrix"]
    lines = [f"accuracy: {100 * result['accuracy']:.2f}%  loss: {result['loss']:.4f}"]
    if "top5_accuracy" in result:
        lines[0] += f"  top-5: {100 * result['top5_accuracy']:.2f}%"
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    width = max(len(c) for c in classes)
    lines.append(f"{'class':>{width}}  precision  recall  support")
    for i, name in enumerate(classes[: len(cm)]):
        precision = tp[i] / predicted[i] if predicted[i] else 0.0
        recall = tp[i] / actual[i] if actual[i] else 0.0
        lines.append(f"{name:>{width}}  {precision:9.4f}  {recall:6.4f}  {actual[i]:7d}")
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    cell = max(len(str(cm.max())), 3)
    lines.append(" " * (width + 2) + " ".join(f"{c[:cell]:>{cell}}" for c in classes[: len(cm)]))
    for i, row in enumerate(cm):
        lines.append(f"{classes[i]:>{width}}  " + " ".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)
