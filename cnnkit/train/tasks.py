"""What a classifier's outputs mean: multi-class (softmax over K logits) or binary (one logit).

A task knows its loss, how logits become probabilities and decisions, and which metrics
describe it. ``fit``, ``evaluate`` and ``predict`` take one (``task=``) or infer it from
the model's output width (one column: binary; more: multi-class).

- ``MulticlassTask``: K logits, ``cross_entropy``, softmax probabilities, the arg-max
  decision; accuracy, top-k accuracy for each k < K, per-class and macro-averaged
  precision/recall/F1, the confusion matrix.
- ``BinaryTask``: one logit, ``binary_cross_entropy_with_logits`` (PyTorch's
  ``BCEWithLogitsLoss``), the sigmoid probability of the positive class (label 1), the
  decision ``probability > threshold``; accuracy at that threshold, precision, recall
  and F1 of the positive class, ROC AUC (threshold-free), per-class scores and the 2x2
  confusion matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from .metrics import confusion_matrix, per_class_scores, roc_auc, topk_hits

__all__ = ["Task", "MulticlassTask", "BinaryTask", "task_for_outputs", "task_from_dict", "sigmoid"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow, as float32 for float32 input."""
    x = np.asarray(x)
    return (0.5 * (np.tanh(0.5 * x) + 1)).astype(x.dtype if x.dtype.kind == "f" else np.float32)


class Task:
    """Base class: the loss, probabilities and metrics of one kind of classifier."""

    name = "task"

    def outputs(self, num_classes: int) -> int:
        """The number of logits the model needs for ``num_classes`` classes."""
        raise NotImplementedError(f"{type(self).__name__} does not define outputs")

    def loss(self, out: Tensor, target: Any) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define loss")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define probabilities")

    def correct(self, logits: np.ndarray, target: np.ndarray) -> int:
        """How many of the batch's decisions are right (for the running training accuracy)."""
        raise NotImplementedError(f"{type(self).__name__} does not define correct")

    def accumulator(self, num_classes: int | None = None) -> _Accumulator:
        """A fresh collector of this task's statistics (``num_classes``: the confusion matrix's size)."""
        raise NotImplementedError(f"{type(self).__name__} does not define accumulator")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name}


class _Accumulator:
    """Collects a task's statistics over batches; ``results()`` gives the metrics."""

    def update(self, logits: np.ndarray, target: np.ndarray) -> None:
        raise NotImplementedError

    def results(self, detailed: bool) -> dict[str, Any]:
        raise NotImplementedError


class MulticlassTask(Task):
    """K mutually exclusive classes: softmax over K logits, cross-entropy.

    Args:
        topk: the k of the top-k accuracies to report; each only when k < K (with k >= K
            every prediction would count).
    """

    name = "multiclass"

    def __init__(self, topk: Sequence[int] = (5,)):
        self.topk = tuple(int(k) for k in topk if int(k) > 1)

    def outputs(self, num_classes: int) -> int:
        return num_classes

    def loss(self, out: Tensor, target: Any) -> Tensor:
        return F.cross_entropy(out, target)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def correct(self, logits: np.ndarray, target: np.ndarray) -> int:
        if logits.ndim != 2 or target.ndim != 1 or target.dtype.kind not in "iu":
            return 0
        return int((logits.argmax(axis=1) == target).sum())

    def accumulator(self, num_classes: int | None = None) -> _Accumulator:
        return _MulticlassAccumulator(self.topk, num_classes or 0)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name}


class _MulticlassAccumulator(_Accumulator):
    def __init__(self, topk: tuple[int, ...], num_classes: int):
        self.topk, self.num_classes = topk, num_classes
        self.matrix: np.ndarray | None = None
        self.hits = {k: 0 for k in topk}
        self.seen = 0

    def update(self, logits: np.ndarray, target: np.ndarray) -> None:
        K = max(logits.shape[1], self.num_classes)
        if self.matrix is None:
            self.matrix = np.zeros((K, K), np.int64)
        target = np.asarray(target, np.int64)
        self.matrix += confusion_matrix(target, logits.argmax(axis=1), K)
        for k in self.topk:
            if k < K:
                self.hits[k] += topk_hits(logits, target, k)
        self.seen += len(target)

    def results(self, detailed: bool) -> dict[str, Any]:
        if self.matrix is None:
            return {}
        K, n = len(self.matrix), max(self.seen, 1)
        out: dict[str, Any] = {"accuracy": float(np.trace(self.matrix)) / n}
        for k in self.topk:
            if k < K:
                out[f"top{k}_accuracy"] = self.hits[k] / n
        if detailed:
            scores = per_class_scores(self.matrix)
            out.update({f"macro_{m}": float(scores[m].mean()) for m in ("precision", "recall", "f1")})
            out["per_class"] = scores
            out["confusion_matrix"] = self.matrix
        return out


class BinaryTask(Task):
    """Two classes with one logit x: P(label 1) = sigmoid(x), ``BCEWithLogitsLoss``.

    Args:
        threshold: an image is called positive (label 1) when its probability is above it.
    """

    name = "binary"

    def __init__(self, threshold: float = 0.5):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"BinaryTask threshold must lie in (0, 1), got {threshold}")
        self.threshold = float(threshold)

    def outputs(self, num_classes: int) -> int:
        if num_classes != 2:
            raise ValueError(f"a binary task has 2 classes, got {num_classes}")
        return 1

    def loss(self, out: Tensor, target: Any) -> Tensor:
        t = np.asarray(getattr(target, "data", target), dtype=out.data.dtype).reshape(out.shape)  # (N, 1)
        return F.binary_cross_entropy_with_logits(out, t)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits)

    def decisions(self, logits: np.ndarray) -> np.ndarray:
        """Labels (N,) int64: 1 where sigmoid(logit) > threshold."""
        return (sigmoid(np.asarray(logits).reshape(len(logits), -1)[:, 0]) > self.threshold).astype(np.int64)

    def correct(self, logits: np.ndarray, target: np.ndarray) -> int:
        return int((self.decisions(logits) == (np.asarray(target).reshape(len(target)) > 0.5)).sum())

    def accumulator(self, num_classes: int | None = None) -> _Accumulator:
        return _BinaryAccumulator(self)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, "threshold": self.threshold}


class _BinaryAccumulator(_Accumulator):
    def __init__(self, task: BinaryTask):
        self.task = task
        self.scores: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def update(self, logits: np.ndarray, target: np.ndarray) -> None:
        self.scores.append(np.asarray(logits, np.float64).reshape(len(logits), -1)[:, 0])
        self.targets.append((np.asarray(target).reshape(len(target)) > 0.5).astype(np.int64))

    def results(self, detailed: bool) -> dict[str, Any]:
        if not self.scores:
            return {}
        scores, target = np.concatenate(self.scores), np.concatenate(self.targets)
        matrix = confusion_matrix(target, self.task.decisions(scores), 2)
        per_class = per_class_scores(matrix)
        out: dict[str, Any] = {
            "accuracy": float(np.trace(matrix)) / max(len(target), 1),
            "precision": float(per_class["precision"][1]),
            "recall": float(per_class["recall"][1]),
            "f1": float(per_class["f1"][1]),
            "roc_auc": roc_auc(scores, target),
        }
        if detailed:
            out.update({f"macro_{m}": float(per_class[m].mean()) for m in ("precision", "recall", "f1")})
            out["per_class"] = per_class
            out["confusion_matrix"] = matrix
            out["threshold"] = self.task.threshold
        return out


def task_for_outputs(width: int) -> Task:
    """The task a model's output width implies: one logit is binary, more are multi-class."""
    return BinaryTask() if width == 1 else MulticlassTask()


def task_from_dict(data: dict[str, Any] | None, width: int | None = None) -> Task:
    """Rebuild a task from ``Task.to_dict()`` (as stored in checkpoints), or infer it from ``width``."""
    if not data:
        return task_for_outputs(width or 2)
    kind = data.get("type")
    if kind == "binary":
        return BinaryTask(float(data.get("threshold", 0.5)))
    if kind == "multiclass":
        return MulticlassTask()
    raise ValueError(f"unknown task type {kind!r} (expected 'multiclass' or 'binary')")
