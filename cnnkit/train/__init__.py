"""Training: ``fit`` / ``evaluate`` / ``predict`` (Keras-style), callbacks, recipes.

    history = fit(model, loader, epochs=10, optimizer=opt, val_loader=val, callbacks=[CSVLogger("log.csv")])

- ``loop.py``: ``fit``, ``evaluate``, ``predict`` (outputs, as Keras), ``predict_proba``
  (softmax of them), ``TrainingRun`` (what callbacks see),
  the progress line and the evaluation report.
- ``history.py``: ``History`` (per-epoch logs) and ``read_history`` (from a run folder).
- ``callbacks.py``: ``Callback``, ``LearningRateScheduler``, ``EarlyStopping``,
  ``ModelCheckpoint``, ``CSVLogger``, ``NaNGuard`` (TensorBoard: ``cnnkit.viz.tensorboard``).
- ``recipes.py``: the defaults of ``cnnkit train``; fine-tuning after pruning.
- ``tasks.py``: multi-class (softmax) and binary (one logit) classifiers: loss, probabilities,
  metrics; ``metrics.py``: confusion matrix, precision/recall/F1, ROC AUC, top-k.
"""

from __future__ import annotations

from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    NaNGuard,
    first_nonfinite_output,
)
from .history import History, read_history
from .loop import EpochStats, TrainingRun, evaluate, fit, format_logs, format_report, predict, predict_proba
from .recipes import Recipe, default_lr, finetune, make_optimizer, recipe_for
from .tasks import BinaryTask, MulticlassTask, Task, task_for_outputs, task_from_dict

__all__ = [
    "BinaryTask",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "EpochStats",
    "History",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "MulticlassTask",
    "NaNGuard",
    "Recipe",
    "Task",
    "TrainingRun",
    "default_lr",
    "evaluate",
    "finetune",
    "first_nonfinite_output",
    "fit",
    "format_logs",
    "format_report",
    "make_optimizer",
    "predict",
    "predict_proba",
    "read_history",
    "recipe_for",
    "task_for_outputs",
    "task_from_dict",
]
