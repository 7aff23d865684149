"""``cnnkit train`` on several processes: ``--nproc``/``--hosts`` launch, and what each rank does differently.

    mpiexec -n 4 cnnkit train resnet20 --dataset cifar10       # MPI started the ranks
    cnnkit train resnet20 --dataset cifar10 --nproc 4          # cnnkit starts mpiexec itself

Under a launcher every rank runs the same ``cnnkit train`` command; ``Ranks`` is what
changes: rank 0 alone takes the run lock, writes the recipe, checkpoints, logs and
progress; the training loader gives each rank its shard; the optimizer averages
gradients; the model is checked (same structure and weights on every rank), broadcast,
and optionally given SyncBatchNorm; validation and test metrics are computed from every
rank's outputs. In one plain process ``Ranks`` changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..data import DataLoader
from ..distributed import (
    DataParallel,
    DistributedOptimizer,
    Job,
    broadcast_parameters,
    convert_sync_batchnorm,
    dataset_fingerprint,
    evaluate_sharded,
    model_fingerprint,
    mpi_environment,
    shard_loader,
)
from ..distributed.launch import plan_launch, run_launch
from ..errors import UsageError
from ..io.checkpoint import load_checkpoint
from ..nn import BatchNorm1d, BatchNorm2d
from ..train import evaluate
from .main import positive_float, positive_int

__all__ = ["add_options", "launch_requested", "launch", "command", "Ranks"]

T = TypeVar("T")


def _hosts(text: str) -> str:
    """--hosts, checked when parsed: comma-separated machines, each ``host`` or ``host:ranks`` (passed on as typed)."""
    for item in text.split(","):
        host, colon, count = item.partition(":")
        if not host.strip() or (colon and not (count.isascii() and count.isdigit() and int(count) > 0)):
            raise argparse.ArgumentTypeError(f"expected host or host:ranks (a positive integer) for each machine, "
                                              f"e.g. node1:4,node2:4, got {text!r}")
    return text


def add_options(parser) -> None:
    """The data-parallel options of ``cnnkit train``."""
    group = parser.add_argument_group(
        "several processes (MPI)",
        "Run under `mpiexec -n N cnnkit train ...`, or let --nproc start mpiexec. --batch-size is per rank: "
        "the global batch is ranks x batch size.")
    group.add_argument("--nproc", type=positive_int, default=None, metavar="N",
                       help="train on N processes (ranks) started with mpiexec on this machine (or on --hosts)")
    group.add_argument("--hosts", type=_hosts, default=None, metavar="H1:N1,H2:N2",
                       help="with --nproc: the machines and their ranks, e.g. node1:4,node2:4 (ssh must reach them, "
                            "and this Python and the data must be at the same paths there)")
    group.add_argument("--hostfile", default=None, metavar="FILE",
                       help="with --nproc: a file of machines for mpiexec (one `host:ranks` per line)")
    group.add_argument("--lr-scaling", choices=["none", "linear"], default=None,
                       help="linear: multiply the learning rate by the number of ranks (Goyal et al., 2017); "
                            "default none: the lr is used as given for the global batch")
    group.add_argument("--warmup-epochs", type=positive_float, default=None, metavar="E",
                       help="epochs of the one-cycle schedule's rising phase, the warm-up to the peak lr "
                            "(default: its usual 30%% of the steps)")
    group.add_argument("--sync-bn", action="store_true", default=None,
                       help="several ranks: BatchNorm statistics over the global batch (SyncBatchNorm2d)")


def launch_requested(args) -> bool:
    """True when this process should start mpiexec (``--nproc`` > 1 or hosts) rather than train."""
    if args.hosts is not None or args.hostfile is not None:
        if args.nproc is None:
            raise UsageError("--hosts/--hostfile say where the ranks run; give their number with --nproc N")
    env = mpi_environment()
    if env.distributed:
        if args.nproc is not None and args.nproc != env.size:
            raise UsageError(f"--nproc {args.nproc}, but this process is one of {env.size} ranks that mpiexec "
                             f"started: drop --nproc (or give --nproc {env.size})")
        return False  # a rank of the job --nproc (or the user) started: train
    return args.nproc is not None and (args.nproc > 1 or args.hosts is not None or args.hostfile is not None)


def launch(args, run_folder: Path) -> int:
    """Start ``cnnkit <the same arguments>`` as ``--nproc`` ranks and wait; explain a job that died."""
    plan = plan_launch(args.nproc, args.argv, hosts=args.hosts, hostfile=args.hostfile)
    for note in plan.warnings:
        print(f"warning: {note}", file=sys.stderr, flush=True)
    print(f"starting {args.nproc} ranks: {' '.join(plan.command)}", flush=True)
    status = run_launch(plan)
    if status in (0, 1, 2, 130, 143):  # the ranks said what happened (or Ctrl-C / SIGTERM)
        return status
    code = -status if status < 0 else status
    try:
        name = signal.Signals(code).name
        what = f"a rank was killed by signal {code} ({name}{': out of memory, or killed by hand' if name == 'SIGKILL' else ''})"
    except ValueError:
        what = f"a rank ended with status {code}"
    last = run_folder / "last.safetensors"
    where = (f"the last finished epoch is in {last}" if last.exists() else "no epoch had finished")
    print(f"cnnkit train: the job of {args.nproc} ranks stopped: {what}; {where}; "
          f"`cnnkit train --out {run_folder} --resume --nproc {args.nproc}` continues the run", file=sys.stderr)
    return 1


def command(handler, run_folder):
    """Wrap ``cnnkit train``'s handler: launch the ranks, or run as one rank of a job, or as one process.

    ``run_folder(args)`` names the run folder (for the message when a launched job dies).
    The handler finds its ``Ranks`` in ``args.ranks``.
    """

    def run(args) -> int:
        if launch_requested(args):
            return launch(args, run_folder(args))
        if not mpi_environment().distributed:
            args.ranks = Ranks(None)
            return handler(args)
        debug = bool(getattr(args, "debug", False)) or os.environ.get("CNNKIT_DEBUG", "") not in ("", "0")
        with Job("cnnkit train", debug=debug) as job:
            args.ranks = Ranks(job)
            return job.finish(handler(args))

    run.__name__ = run.__qualname__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


class Ranks:
    """What ``cnnkit train`` does differently on each rank of a job (nothing, in one process).

    Args:
        job: the ``distributed.Job`` of this rank, or None for one process.
    """

    def __init__(self, job: Job | None):
        self.job = job
        self.comm = job.comm if job is not None else None
        self.size = job.size if job is not None else 1
        self.root = job is None or job.rank == 0
        self.loaders: list = []

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def local_size(self) -> int:
        """The ranks on this machine (they share its memory and cores); 1 in one process."""
        return self.comm.local_size if self.distributed else 1

    # --------------------------------------------------------------- rank 0 only
    def root_only(self, context):
        """``context`` (a run lock, a file writer) on rank 0; nothing on the others."""
        return context if self.root else contextlib.nullcontext()

    def writers(self, callbacks: list) -> list:
        """Callbacks that write files (checkpoints, logs, TensorBoard): rank 0's alone."""
        return list(callbacks) if self.root else []

    def root_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, then (after a barrier) on the other ranks; one call in one process.

        For work that fills a cache the ranks share, such as a dataset download: rank 0
        does it alone, with its progress shown, and the others then find the files ready.
        An error on rank 0 ends the job (``Job``), the others included.
        """
        if not self.distributed:
            return fn()
        if self.root:
            stop = getattr(self.comm, "stop", None)
            # rank 0 works alone, the others wait: Ctrl-C acts at once here, and rank 0's exit ends the job
            with stop.immediate() if stop is not None else contextlib.nullcontext():
                result = fn()
            self.comm.barrier()
            return result
        self.comm.barrier()
        return fn()

    # --------------------------------------------------------------- the learning rate
    def check_options(self, args) -> None:
        if args.warmup_epochs is not None and args.warmup_epochs <= 0:
            raise UsageError(f"--warmup-epochs expects a positive number, got {args.warmup_epochs:g}")

    def lr(self, lr: float, scaling: str) -> float:
        """The peak learning rate for the global batch: ``lr`` x ranks with linear scaling."""
        return lr * self.size if scaling == "linear" else lr

    @staticmethod
    def pct_start(warmup_epochs: float | None, epochs: int) -> float:
        """The one-cycle schedule's rising share for ``--warmup-epochs`` (0.3 when not given)."""
        if warmup_epochs is None:
            return 0.3
        if warmup_epochs >= epochs:
            raise UsageError(f"--warmup-epochs {warmup_epochs:g} must be less than the {epochs} epochs of the run")
        return warmup_epochs / epochs

    def banner(self, batch_size: int, lr: float, base_lr: float, scaling: str, warmup: float | None,
               epochs: int) -> str | None:
        """The line saying how the ranks share the work, the global batch and the lr rule."""
        if not self.distributed:
            return None
        rule = (f"lr {lr:g} = {base_lr:g} x {self.size} ranks (linear scaling rule)" if scaling == "linear" else
                f"lr {lr:g} as given for the global batch (not scaled; --lr-scaling linear: {base_lr * self.size:g})")
        ramp = (f"{warmup:g} warm-up epochs" if warmup is not None else f"warm-up over {0.3 * epochs:g} epochs")
        line = (f"data parallel: {self.size} ranks x {self.job.threads} thread{'s' if self.job.threads != 1 else ''}; "
                f"global batch {self.size * batch_size} = {self.size} x {batch_size}; {rule}, one-cycle with {ramp}")
        if self._batchnorm:
            line += ("; BatchNorm statistics over the global batch (SyncBatchNorm2d)" if self._sync_bn else
                     f"; BatchNorm statistics per rank (batches of {batch_size}; --sync-bn: over the global batch)")
        return line

    _sync_bn = _batchnorm = False

    def relaunch(self) -> str:
        """What a command continuing this run needs beyond one process's (``" --nproc N"``)."""
        return f" --nproc {self.size}" if self.distributed else ""

    def check_resume(self, recipe: dict, out: Path) -> None:
        """Refuse to resume a run on another number of ranks: its global batch, so its steps, would change."""
        stored = int(recipe.get("ranks", 1))
        if stored != self.size:
            how = "in one process (no --nproc)" if stored == 1 else f"on {stored} ranks (--nproc {stored})"
            raise UsageError(
                f"--resume: the run in {out} was trained on {stored} rank{'s' if stored != 1 else ''}, this job has "
                f"{self.size}; each rank takes a batch, so the global batch and the steps would change. Resume it "
                f"{how}, or start a new run with another --out")

    # --------------------------------------------------------------- data, model, optimizer
    def train_loader(self, dataset, batch_size: int, generator: np.random.Generator, workers: int,
                     seed: int) -> DataLoader:
        """The training loader: the whole set shuffled, or this rank's shard of each epoch."""
        if not self.distributed:
            return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                              num_workers=workers)
        loader = shard_loader(dataset, batch_size, self.comm, seed=seed, num_workers=workers)
        self.loaders.append(loader)
        return loader

    def eval_loader(self, dataset, batch_size: int, workers: int) -> DataLoader | None:
        """A validation or test loader: the whole set, or this rank's share (each image once)."""
        if dataset is None:
            return None
        if not self.distributed:
            return DataLoader(dataset, batch_size=batch_size, num_workers=workers)
        return shard_loader(dataset, batch_size, self.comm, shuffle=False, num_workers=workers)

    def prepare(self, model, train_set, sync_bn: bool) -> None:
        """Refuse ranks that disagree on the model or the data; give every rank rank 0's weights.

        The model (structure, zoo config and initial weights: a different ``--weights``
        file or seed shows) and the training data (length, labels, 32 samples) are
        compared by SHA-256 across ranks before the first step.
        """
        if not self.distributed:
            if sync_bn:
                print("note: --sync-bn changes nothing in one process", file=sys.stderr)
            return
        comm = self.comm
        self._batchnorm = any(isinstance(m, (BatchNorm1d, BatchNorm2d)) for m in model.modules())
        comm.check_same("the model", model_fingerprint(model),
                        hint="each rank must build the same model from the same options and weights files")
        comm.check_same("the training data", dataset_fingerprint(train_set),
                        hint="each rank must read the same images (the same files at the same paths)")
        if sync_bn:
            convert_sync_batchnorm(model, comm)
            self._sync_bn = True
        broadcast_parameters(model, comm)

    def optimizer(self, opt):
        """The optimizer ``fit`` steps: gradients averaged over the ranks first."""
        return DistributedOptimizer(opt, self.comm) if self.distributed else opt

    def callbacks(self, seed: int) -> list:
        """The ``DataParallel`` callback (epoch seeds and shards, sums and validation over ranks)."""
        if not self.distributed:
            return []
        return [DataParallel(self.comm, seed=seed, loaders=self.loaders)]

    def evaluate(self, model, loader, **kwargs):
        """``train.evaluate`` over the whole set: this rank's share, combined with the others'."""
        if not self.distributed:
            return evaluate(model, loader, **kwargs)
        return evaluate_sharded(model, loader, self.comm, **kwargs)

    def root_says(self, value: bool) -> bool:
        """Rank 0's answer on every rank (a file rank 0 wrote may be on its machine only)."""
        if not self.distributed:
            return value
        flag = np.array([1 if value else 0], dtype=np.int64)
        return bool(self.comm.broadcast(flag)[0])

    def load_weights(self, model, path: Path):
        """Load a checkpoint rank 0 wrote into ``model`` on every rank (only rank 0 reads the file)."""
        ckpt = load_checkpoint(path) if self.root else None
        if ckpt is not None:
            model.load_state_dict(ckpt.model_state)
        if self.distributed:
            broadcast_parameters(model, self.comm)
        return ckpt
