"""Samplers: the order in which a DataLoader visits a dataset's indices.

``DistributedSampler`` gives each of several ranks (processes training one model
together) a disjoint shard of every epoch's shuffled order:

    sampler = DistributedSampler(train_set, num_replicas=4, rank=r, seed=0)
    loader = DataLoader(train_set, batch_size=32, sampler=sampler, generator=rank_generator)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)          # the same permutation on every rank, a new one per epoch
        for x, t in loader: ...

It needs no communication: every rank computes the same permutation from ``(seed,
epoch)`` and keeps every ``num_replicas``-th index starting at its rank. Taken that way
(strided, as PyTorch's), the ranks' k-th batches together are exactly the k-th batch of
``num_replicas * batch_size`` samples in that permutation: N ranks x batch b see what one
process with batch N*b sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """Disjoint shards of each epoch's order, one per rank (``torch.utils.data.DistributedSampler``).

    A dataset whose length ``n`` is not a multiple of ``num_replicas``:

    - ``drop_last=False`` (the default, PyTorch's): the order is padded with its own first
      ``num_replicas - n % num_replicas`` indices, so every rank gets ``ceil(n / num_replicas)``
      samples and the same number of batches; those few samples are seen twice that epoch.
    - ``drop_last=True``: the order's last ``n % num_replicas`` indices are left out of that
      epoch (a different few each epoch when shuffling); each rank gets ``n // num_replicas``.

    Either way every rank has the same number of samples: ranks that disagreed on the
    number of steps would wait for each other forever at a collective call. For
    evaluation, ``pad=False`` (with ``drop_last=False``) gives every sample to exactly one
    rank instead, in shards whose sizes differ by at most one.

    Args:
        dataset: anything with ``__len__`` (or an int, the number of samples).
        num_replicas: the number of ranks.
        rank: this rank, 0 .. num_replicas - 1.
        shuffle: a new permutation each epoch (else 0, 1, 2, ...).
        seed: with the epoch, seeds the permutation; must be the same on every rank.
        drop_last: see above.
        pad: False: no padding (evaluation: each sample once, uneven shards).
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, pad: bool = True):
        for name, value in (("num_replicas", num_replicas), ("rank", rank), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"DistributedSampler expects an integer {name}, got {value!r}")
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler expects num_replicas >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler expects rank in [0, {num_replicas - 1}], got {rank}")
        if seed < 0:
            raise ValueError(f"DistributedSampler expects a non-negative seed, got {seed}")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last, self.pad = shuffle, int(seed), drop_last, pad
        self.epoch = 0

    @property
    def total_size(self) -> int:
        """The samples of one epoch over all ranks (after padding or dropping)."""
        n = self._length()
        if self.drop_last:
            return n - n % self.num_replicas
        if not self.pad:
            return n
        return -(-n // self.num_replicas) * self.num_replicas

    @property
    def num_samples(self) -> int:
        """This rank's samples per epoch."""
        return len(range(self.rank, self.total_size, self.num_replicas))

    def _length(self) -> int:
        return int(self.dataset) if isinstance(self.dataset, (int, np.integer)) else len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation ``__iter__`` yields (call it at each epoch's start)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"set_epoch expects a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """This epoch's whole order over every rank (padded or cut to ``total_size``), int64."""
        n = self._length()
        if self.shuffle:
            # One stream per (seed, epoch): every rank draws the same permutation.
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        total = self.total_size
        if total <= n:
            return order[:total]
        if n == 0:
            return order
        repeats = -(-(total - n) // n)
        return np.concatenate([order] + [order] * repeats)[:total]

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch: every ``num_replicas``-th from ``rank``."""
        return self.order()[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f"DistributedSampler(rank {self.rank} of {self.num_replicas}, {self.num_samples} of "
                f"{self._length()} samples, shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch}, "
                f"drop_last={self.drop_last}, pad={self.pad})")
