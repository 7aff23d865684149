"""This process as one rank of a job: its threads, what it prints, and how it fails.

    with Job(prog="cnnkit train") as job:       # MPI starts here (under mpiexec)
        ... train ...
        job.finish(status)

Inside the block:

- threads: each rank uses its share of its machine's cores (cores // ranks there) for
  cnnkit's kernels and for BLAS, unless CNNKIT_NUM_THREADS says otherwise;
- output: rank 0 speaks for the job; other ranks' standard output, standard error and
  warnings are silenced (``quiet=True``); their errors still print, as below;
- failure: an exception on any rank ends the whole job, printing that rank's message
  (``<prog>: rank R of N: <message>``). Without this, the other ranks would wait at their
  next collective call forever, the classic MPI hang. Rank 0 reports first; other ranks
  wait ``grace`` seconds (so that an error every rank hits, e.g. a missing dataset, is
  printed once, by rank 0, whose exit ends the job) and then report and end the job.
  An error raised by a collective check on every rank at once (``error.collective``,
  e.g. ranks that disagree on the model) ends each rank normally with the same status,
  printed once by rank 0;
- signals: Ctrl-C (SIGINT) and SIGTERM are recorded and acted on by every rank together,
  at the next agreement point (``stop.py``): every rank raises the same interrupt there,
  ``cnnkit train``'s rank 0 saves its state, and each rank ends normally with 130 (143),
  rank 0 printing one line. No rank waits for a timer: ``grace`` is for errors only.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import traceback
import warnings

from .. import config
from ..backend.cores import blas_threads
from ..errors import CnnkitError, Terminated, UsageError
from .comm import Communicator, world
from .env import mpi_environment, threads_per_rank
from .stop import StopSignals

__all__ = ["Job", "exit_status"]


def exit_status(error: BaseException) -> int:
    """The command's exit status for an error: 2 usage, 130 Ctrl-C, 143 SIGTERM, ``sys.exit``'s own status, 1 otherwise."""
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) and 0 < error.code < 256 else 1
    if isinstance(error, UsageError):
        return 2
    if isinstance(error, Terminated):
        return 143
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 1


def _message(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):  # the line one process prints (cli/main.py)
        return "terminated" if isinstance(error, Terminated) else "interrupted"
    if isinstance(error, SystemExit):
        code = error.code
        return str(code) if isinstance(code, str) else f"exited with status {exit_status(error)}"
    if isinstance(error, (CnnkitError, OSError, ValueError)) and str(error):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class Job:
    """The job this process is a rank of, as a context manager (see the module docstring).

    Args:
        prog: the name errors start with ("cnnkit train").
        comm: the ranks (default: ``world()``, which starts MPI under a launcher).
        threads: threads per rank (default: CNNKIT_NUM_THREADS if set, else cores // local ranks).
        quiet: silence standard output, standard error and warnings on ranks other than 0.
        grace: seconds a failing rank other than 0 waits before it ends the job (errors; a
            signal stops the ranks together, without a timer).
        debug: print the failing rank's traceback too.

    Attributes:
        comm, rank, size, threads.
        stop: this rank's ``StopSignals`` inside the block (several ranks, main thread), else None.
    """

    def __init__(self, prog: str = "cnnkit", comm: Communicator | None = None, threads: int | None = None,
                 quiet: bool = True, grace: float = 2.0, debug: bool = False):
        self.prog, self.quiet, self.grace, self.debug = prog, quiet, grace, debug
        self.comm = comm or world()
        self.rank, self.size = self.comm.rank, self.comm.size
        if threads is None:
            if os.environ.get("CNNKIT_NUM_THREADS", "").strip() not in ("", "0"):
                threads = config.get_num_threads()
            else:
                env = mpi_environment()
                local = self.comm.local_size if self.size > 1 else env.local_size
                threads = threads_per_rank(local)
        self.threads = int(threads)
        self.stop: StopSignals | None = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> Job:
        stack = contextlib.ExitStack()
        if self.size > 1:
            stop = StopSignals(self.size)
            if stop.install():  # the main thread: SIGINT and SIGTERM stop every rank together
                self.stop, self.comm.stop = stop, stop
                stack.callback(self._forget_signals)
        stack.enter_context(config.num_threads(self.threads))
        stack.enter_context(blas_threads(self.threads))
        if self.quiet and self.rank != 0:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        self._stack = stack
        return self

    def _forget_signals(self) -> None:
        self.stop.restore()
        self.comm.stop = None

    def __exit__(self, kind, error, tb) -> bool:
        ended = error is None or (isinstance(error, SystemExit) and error.code in (None, 0))
        if ended and self.stop is not None and self.stop.agreed is None:
            # The last agreement point: a signal that came after the others is not lost.
            try:
                self.comm.agree_on_stop()
            except KeyboardInterrupt as interrupt:
                error, ended = interrupt, False
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        if ended or self.size == 1:
            return False
        # Any other exit, sys.exit(status) included: the other ranks would wait at their next
        # collective call (and this rank in MPI's finalization) forever; end the job.
        self._fail(error)
        return True  # not reached: _fail ends the process

    def _fail(self, error: BaseException) -> None:
        status = exit_status(error)
        # An error every rank raised at the same collective check (Communicator.check_same)
        # leaves no rank waiting in a collective call: each ends normally with the same status
        # (MPI finalizes at exit) and mpiexec reports that status. Ending them by exiting
        # without finalizing made MPICH kill the slower rank and report its signal (9) at times.
        collective = getattr(error, "collective", False)
        if self.rank != 0 and not collective:
            # Rank 0 reports an error every rank hits; its exit ends the job while we wait.
            time.sleep(self.grace)
        if self.debug:
            traceback.print_exception(type(error), error, error.__traceback__)
        if self.rank == 0 or not (collective or isinstance(error, KeyboardInterrupt)):
            # a signal stops the job, not one rank: the line one process prints
            who = "" if isinstance(error, KeyboardInterrupt) else f"rank {self.rank} of {self.size}: "
            line = f"{self.prog}: {who}{_message(error)}"
            print(line.replace("\n", " "), file=sys.stderr, flush=True)
        if collective:
            raise SystemExit(status)
        self.comm.abort(status)

    def finish(self, status: int) -> int:
        """Return ``status``; a non-zero one ends every rank now (rank 0 first, the others after ``grace``).

        A rank that returned with an error must not wait in MPI's finalization for ranks
        that may still be in a collective call. After a stop every rank agreed on (Ctrl-C,
        SIGTERM) each rank returns its status and ends normally.
        """
        if status and self.size > 1 and not (self.stop is not None and self.stop.agreed is not None):
            if self.rank != 0:
                time.sleep(self.grace)
            self.comm.abort(status)
        return status

    def __repr__(self) -> str:
        return f"Job(rank {self.rank} of {self.size}, {self.threads} thread{'s' if self.threads != 1 else ''})"

