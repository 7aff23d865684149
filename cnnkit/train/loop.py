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

from ..config import no_grad
from ..errors import DataError
from ..nn import Module, eval_mode
from ..tensor import Tensor
from .callbacks import LearningRateScheduler
from .history import History
from .tasks import BinaryTask, MulticlassTask, Task, task_for_outputs

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
    # Training on several processes (``cnnkit.distributed.DataParallel`` sets it): adds up
    # every rank's epoch sums, and validates on every rank's share. None: one process.
    parallel: Any = None


class EpochStats:
    """Running loss, accuracy and throughput over one pass of a loader.

    The accuracy counts the ``task``'s decisions (arg-max, or the binary threshold);
    without a task it is inferred from the logits' width at the first batch.
    """

    def __init__(self, task: Task | None = None) -> None:
        self.task = task
        self.loss_sum = 0.0
        self.correct = 0
        self.seen = 0
        self.classified = 0
        self.start = time.perf_counter()

    def update(self, loss: float, logits: np.ndarray, target: np.ndarray) -> None:
        n = len(target)
        self.loss_sum += loss * n
        self.seen += n
        if logits.ndim != 2:
            return
        if self.task is None:
            self.task = task_for_outputs(logits.shape[1])
        if isinstance(self.task, BinaryTask) or (target.ndim == 1 and target.dtype.kind in "iu"):
            self.correct += self.task.correct(logits, target)
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
    loss: Callable | None = None,
    task: Task | None = None,
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
        loss: loss function of (outputs, targets); default: the task's (cross-entropy for
            multi-class, ``binary_cross_entropy_with_logits`` for one logit).
        task: a ``MulticlassTask`` or ``BinaryTask``: the loss, the accuracy's decision rule
            and the validation metrics; default: inferred from the model's output width at
            the first batch (one column: binary).
        val_loader: optional; adds ``val_loss``, ``val_accuracy`` (and for a binary task
            ``val_precision``, ``val_recall``, ``val_f1``, ``val_roc_auc``; for K > 5
            classes ``val_top5_accuracy``) to each epoch's logs.
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
            stats = EpochStats(task)
            progress = _Progress(epoch, epochs, _length(train_loader), verbose)
            for step, batch in enumerate(train_loader):
                x, t = _as_arrays(batch)
                out = model(Tensor(x))
                if task is None:
                    task = task_for_outputs(out.shape[1]) if out.ndim == 2 else MulticlassTask()
                    stats.task = task
                loss_value = (loss or task.loss)(out, t)
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
            if stats.seen == 0 and not run.skip_step and not run.stop_training:
                raise DataError(
                    f"fit: the training loader gave no batches in epoch {epoch + 1} (an empty dataset, or "
                    "drop_last with fewer samples than one batch): nothing to train on"
                )
            if run.parallel is not None:  # several processes: the epoch's sums over every rank
                run.parallel.reduce_stats(stats)
            logs = stats.logs()
            if val_loader is not None:
                validate = run.parallel.evaluate if run.parallel is not None else evaluate
                val = validate(model, val_loader, loss=loss or "task", task=task, confusion=False)
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
    loss: Callable | str | None = "task",
    topk: Sequence[int] = (1, 5),
    confusion: bool = True,
    num_classes: int | None = None,
    task: Task | None = None,
) -> dict[str, Any]:
    """The loss and the task's metrics over ``loader``.

    The model runs in eval mode under ``no_grad``; each module's mode is restored afterwards.

    Args:
        loss: a loss function of (outputs, targets), ``"task"`` for the task's own, or None.
        topk: for a multi-class task inferred here: the k of the top-k accuracies, each
            reported only when k < the number of classes.
        confusion: also return the detailed report: confusion matrix, per-class and
            macro-averaged precision/recall/F1.
        num_classes: the size of the confusion matrix (default: the model's output width).
        task: ``MulticlassTask`` / ``BinaryTask``; default: inferred from the output width.

    Returns:
        Multi-class: {"loss", "accuracy", "top{k}_accuracy" (k < K)}; binary: {"loss",
        "accuracy" (at the task's threshold), "precision", "recall", "f1" (of the positive
        class, label 1), "roc_auc"}. With ``confusion``: also "confusion_matrix" (K, K)
        int64 (rows: true class, columns: predicted), "per_class" {"precision", "recall",
        "f1", "support"} arrays (K,), "macro_precision", "macro_recall", "macro_f1".
    """
    loss_sum, seen = 0.0, 0
    acc = None
    with no_grad(), (eval_mode(model) if isinstance(model, Module) else nullcontext()):
        for batch in loader:
            x, t = _as_arrays(batch)
            out = model(Tensor(x))
            logits = out.data
            if task is None:
                task = task_for_outputs(logits.shape[1]) if logits.ndim == 2 else MulticlassTask()
                if isinstance(task, MulticlassTask):
                    task = MulticlassTask(topk)
            if acc is None:
                acc = task.accumulator(num_classes)
            if loss is not None:
                loss_fn = task.loss if loss == "task" else loss
                loss_sum += float(loss_fn(out, t).data) * len(t)
            seen += len(t)
            acc.update(logits, t)
    if seen == 0:  # an accuracy of 0.0 here would be a made-up number
        raise DataError("evaluate: the loader gave no samples, so there is nothing to evaluate (an empty "
                        "dataset, or drop_last with fewer samples than one batch)")
    results: dict[str, Any] = {}
    if loss is not None:
        results["loss"] = loss_sum / seen
    if acc is not None:
        results.update(acc.results(detailed=confusion))
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


def predict_proba(model, data, batch_size: int = 256, task: Task | None = None) -> np.ndarray:
    """Probabilities from ``predict``'s outputs (logits), as the task defines them.

    Multi-class: the softmax over axis 1, (N, K), each row summing to 1. Binary (one output
    column, or ``task=BinaryTask()``): the sigmoid, (N, 1), the probability of the positive
    class (label 1). The task is inferred from the output width when not given.
    """
    logits = predict(model, data, batch_size)
    if logits.ndim < 2:
        return logits
    return (task or task_for_outputs(logits.shape[1])).probabilities(logits)


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


def format_report(result: dict[str, Any], classes: Sequence[str]) -> str:
    """The ``evaluate(..., confusion=True)`` report as text.

    Accuracy and loss (top-k when present; for a binary task the threshold, precision,
    recall and F1 of the positive class and ROC AUC), then per-class precision, recall,
    F1 and support with their macro average, then the confusion matrix.
    """
    cm = result["confusion_matrix"]
    classes = [str(c) for c in classes][: len(cm)]
    classes += [str(k) for k in range(len(classes), len(cm))]
    head = f"accuracy: {100 * result['accuracy']:.2f}%"
    if "loss" in result:
        head += f"  loss: {result['loss']:.4f}"
    for key in sorted(k for k in result if k.startswith("top") and k.endswith("_accuracy")):
        head += f"  top-{key[3:-9]}: {100 * result[key]:.2f}%"
    lines = [head]
    if "roc_auc" in result:
        lines.append(
            f"positive class {classes[1]!r} (probability > {result.get('threshold', 0.5):g}): "
            f"precision {result['precision']:.4f}  recall {result['recall']:.4f}  "
            f"F1 {result['f1']:.4f}  ROC AUC {result['roc_auc']:.4f}"
        )
    scores = result["per_class"]
    width = max(max(len(c) for c in classes), len("macro avg"))
    lines.append(f"{'class':>{width}}  precision  recall      F1  support")
    for i, name in enumerate(classes):
        lines.append(f"{name:>{width}}  {scores['precision'][i]:9.4f}  {scores['recall'][i]:6.4f}  "
                     f"{scores['f1'][i]:6.4f}  {scores['support'][i]:7d}")
    lines.append(f"{'macro avg':>{width}}  {result['macro_precision']:9.4f}  {result['macro_recall']:6.4f}  "
                 f"{result['macro_f1']:6.4f}  {int(scores['support'].sum()):7d}")
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    cell = max(len(str(cm.max())), 3)
    lines.append(" " * (width + 2) + " ".join(f"{c[:cell]:>{cell}}" for c in classes))
    for i, row in enumerate(cm):
        lines.append(f"{classes[i]:>{width}}  " + " ".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)
