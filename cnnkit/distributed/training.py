"""``fit`` on several ranks: sharded loaders, per-epoch seeds, epoch sums and validation over ranks.

    comm = world()
    train_loader = shard_loader(train_set, 64, comm, seed=0)           # this rank's shard
    val_loader = shard_loader(val_set, 1000, comm, shuffle=False)      # each sample on one rank
    opt = DistributedOptimizer(optim.SGD(model.parameters(), lr=0.1), comm)
    fit(model, train_loader, epochs=10, optimizer=opt, val_loader=val_loader,
        callbacks=[DataParallel(comm, seed=0, loaders=[train_loader])] + rank0_callbacks)

``DataParallel`` is the callback that makes ``fit`` a data-parallel loop: at each epoch's
start it gives every rank the epoch's permutation (``sampler.set_epoch``) and reseeds the
rank's own generators (augmentation, dropout) from (seed, epoch, rank), so a run resumed
at an epoch boundary replays exactly what an uninterrupted one does; at each epoch's end
``fit`` asks it for the sums over every rank (loss, accuracy, images) and for the
validation metrics, which it computes from every rank's outputs gathered together.
Every rank ends each epoch with the same logs, so callbacks that decide (early stopping,
plateaus) decide the same everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import config
from ..config import no_grad
from ..data import DataLoader, DistributedSampler
from ..errors import DistributedError
from ..nn import Module, eval_mode
from ..tensor import Tensor
from ..train import Callback, evaluate
from ..train.loop import EpochStats
from .comm import Communicator, world

__all__ = ["shard_loader", "DataParallel", "gather_outputs", "evaluate_sharded", "dataset_fingerprint"]


def shard_loader(dataset: Any, batch_size: int, comm: Communicator | None = None, *, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, **loader_kwargs) -> DataLoader:
    """A DataLoader over this rank's shard of ``dataset``.

    Training (``shuffle=True``): each epoch's permutation of (seed, epoch), padded to a
    multiple of the ranks (``drop_last=True``: cut instead); batches of ``batch_size`` per
    rank, so the global batch is ranks x batch_size. Evaluation (``shuffle=False``): each
    sample on exactly one rank, in order, no padding.

    ``loader_kwargs`` go to the DataLoader (``num_workers``, ``collate_fn``, ...); its
    ``generator`` (augmentation seeds) defaults to one of its own per rank.
    """
    comm = comm or world()
    sampler = DistributedSampler(dataset, comm.size, comm.rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last if shuffle else False, pad=shuffle)
    loader_kwargs.setdefault("generator", np.random.default_rng([seed, comm.rank]))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **loader_kwargs)


class DataParallel(Callback):
    """The callback that runs ``fit`` as one data-parallel job over the ranks of ``comm``.

    Args:
        comm: the ranks (default: ``world()``).
        seed: the run's seed: epoch permutations come from (seed, epoch), each rank's
            augmentation and dropout streams from (seed, epoch, rank).
        loaders: the loaders whose ``DistributedSampler`` gets ``set_epoch`` and whose
            generator is reseeded each epoch.
        generators: more generators to reseed per epoch and rank (default: cnnkit's
            default generator, which dropout and random layers draw from).
    """

    def __init__(self, comm: Communicator | None = None, seed: int = 0, loaders: Sequence = (),
                 generators: Sequence[np.random.Generator] | None = None):
        self.comm = comm or world()
        self.seed = int(seed)
        self.loaders = list(loaders)
        self.generators = list(generators) if generators is not None else [config.default_generator()]

    def set_run(self, run) -> None:
        super().set_run(run)
        run.parallel = self

    def on_epoch_begin(self, epoch: int) -> None:
        streams = [loader.generator for loader in self.loaders] + self.generators
        for i, generator in enumerate(streams):
            fresh = np.random.default_rng([self.seed, epoch, self.comm.rank, i])
            generator.bit_generator.state = fresh.bit_generator.state
        for loader in self.loaders:
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def reduce_stats(self, stats: EpochStats) -> None:
        """Replace this rank's epoch sums (loss, correct, seen) by the sums over every rank.

        An agreement point for Ctrl-C and SIGTERM (``stop.py``): the ballot travels with the sums.
        """
        stop = self.comm.stop
        ballot = stop.ballot() if stop is not None else np.zeros(2)
        sums = np.array([stats.loss_sum, stats.correct, stats.seen, stats.classified, *ballot], dtype=np.float64)
        self.comm.allreduce(sums)
        if stop is not None:
            stop.decide(sums[4:])
        stats.loss_sum = float(sums[0])
        stats.correct, stats.seen, stats.classified = (int(round(v)) for v in sums[1:4])

    def evaluate(self, model, loader, **kwargs) -> dict[str, Any]:
        """``train.evaluate`` over every rank's share of ``loader`` (see ``evaluate_sharded``)."""
        return evaluate_sharded(model, loader, self.comm, **kwargs)


def gather_outputs(model, loader, comm: Communicator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` (eval mode, no grad) over this rank's ``loader``; every rank's outputs and targets.

    Collective, and an agreement point for Ctrl-C and SIGTERM. Returns (outputs, targets)
    of every rank, concatenated rank by rank (the same arrays on every rank).
    """
    comm = comm or world()
    outputs, targets = [], []
    with no_grad(), (eval_mode(model) if isinstance(model, Module) else _nothing()):
        for x, t in loader:
            x = x.data if isinstance(x, Tensor) else np.asarray(x)
            outputs.append(np.asarray(model(Tensor(x)).data))
            targets.append(t.data if isinstance(t, Tensor) else np.asarray(t))
    comm.agree_on_stop()  # Ctrl-C / SIGTERM during the pass: every rank stops here (stop.py)
    return _gather(outputs, comm, "outputs"), _gather(targets, comm, "targets")


def _gather(chunks: list[np.ndarray], comm: Communicator, what: str) -> np.ndarray:
    """Concatenate this rank's chunks, then every rank's (a rank without any sends zero rows)."""
    local = np.concatenate(chunks) if chunks else None
    # Each rank's dtype and row shape, so that a rank with an empty share can send (0, ...).
    info = np.full((1, 10), -1, dtype=np.int64)           # [dtype char, ndim, shape (up to 8)]
    if local is not None:
        if local.ndim > 8:
            raise DistributedError(f"gather: {what} with {local.ndim} dimensions (at most 8)")
        info[0, :2] = ord(local.dtype.char), local.ndim
        info[0, 2 : 2 + local.ndim] = local.shape
    every = [row for row in comm.allgather(info) if row[1] >= 0]
    kinds = {(chr(row[0]), tuple(int(v) for v in row[3 : 2 + row[1]])) for row in every}
    if not kinds:
        raise DistributedError(f"gather: no rank has any {what} (an empty dataset)")
    if len(kinds) > 1:
        raise DistributedError(f"gather: ranks produced {what} of different dtypes or row shapes: {sorted(kinds)}")
    if local is None:
        char, row_shape = kinds.pop()
        local = np.zeros((0,) + row_shape, dtype=np.dtype(char))
    return comm.allgather(np.ascontiguousarray(local))


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class _Outputs:
    """The identity: ``train.evaluate`` applied to outputs already computed."""

    def __call__(self, x: Tensor) -> Tensor:
        return x


def evaluate_sharded(model, loader, comm: Communicator | None = None, *, chunk: int = 4096,
                     **kwargs) -> dict[str, Any]:
    """``train.evaluate`` over the union of every rank's ``loader``: the same numbers on every rank.

    Each rank runs the model over its own share (``shard_loader(..., shuffle=False)``); the
    outputs and targets of every rank are gathered (one allgather each) and every metric
    (loss, accuracy, top-k, precision/recall, ROC AUC, the confusion matrix) is computed
    from them by ``train.evaluate``, so it is exactly the metric of the whole set, not an
    average of per-rank averages. Memory: every rank holds all outputs (N x K values).
    """
    comm = comm or world()
    outputs, targets = gather_outputs(model, loader, comm)
    batches = [(outputs[i : i + chunk], targets[i : i + chunk]) for i in range(0, len(outputs), chunk)]
    return evaluate(_Outputs(), batches, **kwargs)


def dataset_fingerprint(dataset: Any, samples: int = 32) -> str:
    """A digest of a dataset: its length, its targets, and ``samples`` samples spread over it.

    The samples are read under one fixed generator (``config.generator_scope``), so random
    transforms draw the same numbers on every rank: equal datasets give equal digests.
    """
    digest = hashlib.sha256()
    n = len(dataset)
    digest.update(str(n).encode())
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        digest.update(np.ascontiguousarray(np.asarray(targets)).tobytes())
    with config.generator_scope(np.random.default_rng(0)):
        for i in np.unique(np.linspace(0, n - 1, num=min(samples, n), dtype=np.int64)) if n else []:
            for part in _flatten(dataset[int(i)]):
                digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def _flatten(sample: Any) -> list[np.ndarray]:
    if isinstance(sample, (tuple, list)):
        return [a for part in sample for a in _flatten(part)]
    if isinstance(sample, dict):
        return [a for key in sorted(sample) for a in _flatten(sample[key])]
    return [np.asarray(sample.data if isinstance(sample, Tensor) else sample)]
