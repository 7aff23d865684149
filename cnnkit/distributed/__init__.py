"""Data-parallel training over MPI: one model, several processes, one shard of each batch each.

    mpiexec -n 4 cnnkit train resnet20 --dataset cifar10     # or: cnnkit train ... --nproc 4

Each rank (process) holds the whole model, trains on its share of every batch, and the
ranks average their gradients before each step, so they stay identical and N ranks x
batch b take the steps of one process with batch N*b. The engine is MPI, through mpi4py
(``pip install "cnnkit[mpi]"``: mpi4py and the ``mpich`` wheel, which provides
``mpiexec``; a system MPI works too). mpi4py is imported only when a launcher started
several ranks: ``import cnnkit`` (and one-process training) never loads it.

- ``env.py``: was this process started by ``mpiexec``? (environment variables, before
  importing mpi4py); each rank's share of the cores.
- ``comm.py``: ``Communicator`` (rank, size, barrier, broadcast, allreduce, allgather on
  NumPy buffers, never pickled), ``world()``, ``SingleProcess``.
- ``parallel.py``: ``broadcast_parameters``, ``DistributedOptimizer`` (gradient averaging
  in flat buckets, one allreduce each), checksums of weights and models.
- ``batchnorm.py``: ``SyncBatchNorm2d`` / ``SyncBatchNorm1d`` (statistics over every
  rank's batch), ``convert_sync_batchnorm``.
- ``training.py``: ``shard_loader`` (a ``DistributedSampler`` per rank), the ``DataParallel``
  callback for ``fit`` (per-epoch seeds, epoch sums and validation over every rank),
  ``evaluate_sharded``, ``dataset_fingerprint``.
- ``job.py``: ``Job``: this rank's threads and output, and the whole job ending (with the
  failing rank's message) when any rank raises, instead of hanging.
- ``stop.py``: ``StopSignals``: Ctrl-C and SIGTERM recorded on each rank and acted on by
  every rank at the same agreement point (the next training step), so rank 0 saves the
  state of the last completed step and the job ends with 130 / 143.
- ``launch.py``: ``cnnkit train --nproc N`` / ``--hosts``: the ``mpiexec`` command line.
"""

from __future__ import annotations

from ..data.sampler import DistributedSampler
from .batchnorm import (
    SyncBatchNorm1d,
    SyncBatchNorm2d,
    SyncBatchNormOp,
    convert_sync_batchnorm,
    sync_batch_norm,
)
from .comm import Communicator, MPICommunicator, SingleProcess, world
from .env import MPIEnvironment, launched_by_mpi, mpi_environment, threads_per_rank
from .job import Job
from .parallel import (
    DistributedOptimizer,
    GradientBuckets,
    broadcast_parameters,
    check_parameters_in_sync,
    model_fingerprint,
    parameters_digest,
)
from .training import DataParallel, dataset_fingerprint, evaluate_sharded, gather_outputs, shard_loader

__all__ = [
    "Communicator",
    "DataParallel",
    "DistributedOptimizer",
    "DistributedSampler",
    "GradientBuckets",
    "Job",
    "MPICommunicator",
    "MPIEnvironment",
    "SingleProcess",
    "SyncBatchNorm1d",
    "SyncBatchNorm2d",
    "SyncBatchNormOp",
    "broadcast_parameters",
    "check_parameters_in_sync",
    "convert_sync_batchnorm",
    "dataset_fingerprint",
    "evaluate_sharded",
    "gather_outputs",
    "launched_by_mpi",
    "model_fingerprint",
    "mpi_environment",
    "parameters_digest",
    "shard_loader",
    "sync_batch_norm",
    "threads_per_rank",
    "world",
]
