"""Hold images out for validation: deterministic, stratified, stable when files are added.

- ``stratified_split``: in each class, the images are ordered by the SHA-256 of a key
  (their path relative to the dataset folder) and the first ``round(fraction * n_k)`` are
  held out (at least one per class with two or more images, never all of a class). The
  same files always land in the same split, whatever the seed, and adding or removing a
  file moves no other file between the splits.
- ``holdout_last``: the last ``count`` images (Keras' ``validation_split`` takes the last
  samples; for MNIST, 55,000 + 5,000).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["stratified_split", "holdout_last"]


def stratified_split(
    targets: Sequence[int] | np.ndarray, fraction: float, keys: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation), ``fraction`` of each class held out.

    Args:
        targets: the label of each sample (N,).
        fraction: the share of each class to hold out, in [0, 1).
        keys: one string per sample that orders it (e.g. its relative path).

    Returns:
        Sorted index arrays (train, validation), int64.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must lie in [0, 1), got {fraction}")
    targets = np.asarray(targets, np.int64)
    if len(keys) != len(targets):
        raise ValueError(f"stratified_split got {len(keys)} keys for {len(targets)} targets")
    val: list[int] = []
    for k in np.unique(targets):
        members = np.flatnonzero(targets == k)
        take = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        else:
            take = 0
        order = sorted(members, key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())
        val += order[:take]
    val_idx = np.sort(np.asarray(val, np.int64))
    train_idx = np.setdiff1d(np.arange(len(targets)), val_idx).astype(np.int64)
    return train_idx, val_idx


def holdout_last(n: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(first n - count indices, last count indices)."""
    if not 0 <= count < n:
        raise ValueError(f"cannot hold out {count} of {n} images")
    return np.arange(n - count, dtype=np.int64), np.arange(n - count, n, dtype=np.int64)
