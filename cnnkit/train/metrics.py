"""Classification metrics on NumPy arrays: confusion matrix, precision/recall/F1, ROC AUC, top-k.

The definitions are scikit-learn's (the tests compare against it):

- precision_k = TP_k / (TP_k + FP_k), recall_k = TP_k / (TP_k + FN_k),
  F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k); a zero denominator gives 0 ("zero_division=0");
- macro averages are plain means over the classes (each class counts the same);
- ROC AUC is the probability that a random positive scores above a random negative, ties
  counting one half (the Mann-Whitney U statistic over the average ranks of the scores),
  which is the area under the ROC curve with its ties drawn as diagonal steps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_matrix", "per_class_scores", "roc_auc", "topk_hits"]


def confusion_matrix(target: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (K, K) int64: rows are the true class, columns the predicted one."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(target, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of every class of a confusion matrix, each (K,)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    return {
        "precision": _ratio(tp, predicted),
        "recall": _ratio(tp, actual),
        "f1": _ratio(2 * tp, predicted + actual),
        "support": actual.astype(np.int64),
    }


def roc_auc(scores: np.ndarray, target: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the binary labels ``target`` (1 = positive).

    Returns NaN when only one class is present (the curve is undefined).
    """
    scores = np.asarray(scores, np.float64).ravel()
    positive = np.asarray(target).ravel() > 0.5
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    # average rank (1-based) of each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = 0.5 * (a + 1 + b)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def topk_hits(logits: np.ndarray, target: np.ndarray, k: int) -> int:
    """How many rows have their target among the ``k`` largest logits."""
    if k >= logits.shape[1]:
        return len(target)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # ties: the lower class index first
    return int((top == np.asarray(target)[:, None]).any(axis=1).sum())
