"""Ctrl-C and SIGTERM on a job of several ranks: every rank stops at the same point.

    stop = StopSignals(size=comm.size)
    stop.install()                # in a rank's main thread (``Job`` does this)
    comm.stop = stop              # the agreement points below then vote
    ...
    comm.agree_on_stop()          # collective: raises on every rank, or on none

One process turns SIGINT into ``KeyboardInterrupt`` where it is, and ``cnnkit train``
saves its state from there. Ranks cannot do that: a rank blocked inside an MPI call (the
gradient allreduce, waiting for a slower rank) runs no Python code, so its handler waits
until the call returns, while a rank that was in Python leaves at once. The rank that left
never joins the collective again, the blocked one never returns from it, and the job ends
when a timer kills both: rank 0 had no chance to save ``interrupted.safetensors``.

So on a rank the signal is only recorded (``pending``), and the ranks decide together at
their next agreement point: each sends its ballot (received SIGINT? SIGTERM?) in a sum
over ranks, and if any rank received one, every rank raises the same ``KeyboardInterrupt``
(SIGTERM: ``errors.Terminated``) at that same point, marked ``collective``. A rank blocked
in a collective call meanwhile is no trouble: the others do not leave, they reach the
call too, and the ballot travels with it. The agreement points:

- every training step: the ballot rides in the first gradient bucket
  (``GradientBuckets.synchronize``), so it costs no extra message; the interrupt is raised
  before the averaged gradient is applied: the weights are those of the last completed
  step, the same on every rank;
- each epoch's sums (``DataParallel.reduce_stats``, the same way), each sharded evaluation
  (``gather_outputs``), the model and data checks (``check_same``), ``broadcast_parameters``,
  ``Ranks.root_first`` and the end of the ``Job`` block: a tiny allreduce of two numbers.

Between two points each rank computes on its own, so a signal takes effect within one
training step (or one evaluation pass). Work one rank does alone while the others wait
(rank 0 downloading a dataset in ``root_first``) runs ``immediate()``: there the signal
raises at once, as in one process, and that rank's exit ends the job.

Why not the other two designs: polling nonblocking collectives (``Iallreduce`` and a
``Test`` loop that lets Python run its handlers) frees a blocked rank, but each rank still
stops wherever its own signal found it (mid-step, or not at all when only one rank got
the signal), so correctness would rest again on how long the others wait; and letting the
ranks other than 0 ignore signals loses a signal sent to one of them alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import numpy as np

from ..errors import Terminated, raise_from_signal

__all__ = ["StopSignals", "interrupt_for"]

_HANDLED = (signal.SIGINT, signal.SIGTERM)


def interrupt_for(signum: int, message: str = "") -> KeyboardInterrupt:
    """The exception a signal raises: ``Terminated`` for SIGTERM, ``KeyboardInterrupt`` otherwise."""
    return Terminated(message) if signum == signal.SIGTERM else KeyboardInterrupt(message)


class StopSignals:
    """SIGINT and SIGTERM of one rank: recorded, then acted on by every rank together.

    Args:
        size: the ranks of the job (for the message of the agreed interrupt).

    Attributes:
        pending: the signal this rank received and the ranks have not yet agreed on
            (SIGTERM wins over SIGINT), or None.
        agreed: the signal every rank stopped for, once they agreed, or None.
    """

    def __init__(self, size: int = 1):
        self.size = size
        self.pending: int | None = None
        self.agreed: int | None = None
        self._immediate = False
        self._previous: dict[int, object] = {}

    # ------------------------------------------------------------- the handlers
    def install(self) -> bool:
        """Handle SIGINT and SIGTERM from now on; False (nothing changed) off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in _HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def restore(self) -> None:
        """Put back the handlers ``install`` replaced."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.record(signum)
        if self._immediate:  # inside a finalizer: raised when the signal, sent again, finds ordinary code
            received, self.pending = self.pending, None
            raise_from_signal(interrupt_for(received), signum, frame)

    def record(self, signum: int) -> None:
        """Note a received signal (what the handler does); SIGTERM wins over SIGINT."""
        if signum not in _HANDLED:
            raise ValueError(f"StopSignals handles SIGINT and SIGTERM, got signal {signum}")
        if self.pending != signal.SIGTERM:
            self.pending = signum

    def _raise_now(self) -> None:
        signum, self.pending = self.pending, None
        raise interrupt_for(signum)

    @contextlib.contextmanager
    def immediate(self) -> Iterator[None]:
        """Inside: a signal raises at once on this rank (work it does alone, the others waiting)."""
        if self.pending is not None:
            self._raise_now()
        previous, self._immediate = self._immediate, True
        try:
            yield
        finally:
            self._immediate = previous

    # ------------------------------------------------------------- the agreement
    def ballot(self) -> np.ndarray:
        """This rank's vote, summed over ranks: [received SIGINT, received SIGTERM] as 0/1, shape (2,)."""
        return np.array([self.pending == signal.SIGINT, self.pending == signal.SIGTERM], dtype=np.int64)

    def decide(self, votes: np.ndarray) -> None:
        """Raise the agreed interrupt if the summed ``votes`` count any signal (the same on every rank).

        The exception carries ``collective = True``: every rank raises it at the same
        point, so each can end normally with the same status (``Job``).
        """
        interrupts, terminations = int(round(float(votes[0]))), int(round(float(votes[1])))
        if interrupts == 0 and terminations == 0:
            return
        signum = signal.SIGTERM if terminations else signal.SIGINT
        self.agreed, self.pending = signum, None
        count = terminations or interrupts
        error = interrupt_for(signum, f"{signal.Signals(signum).name} received by {count} of {self.size} "
                                      f"rank{'s' if self.size != 1 else ''}; every rank stopped at the same point")
        error.collective = True
        raise error

    def __repr__(self) -> str:
        name = lambda s: signal.Signals(s).name if s is not None else None  # noqa: E731
        return f"StopSignals(pending={name(self.pending)}, agreed={name(self.agreed)})"
