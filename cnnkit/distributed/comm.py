"""The communicator: rank, size and the collective operations, on NumPy buffers.

    comm = world()                      # MPI's COMM_WORLD under mpiexec, else one process
    comm.allreduce(grad)                # in place: the sum over every rank
    comm.broadcast(weights, root=0)     # in place: rank 0's values everywhere

Arrays travel with mpi4py's buffer methods (``Allreduce``, ``Bcast``, ``Allgatherv``: the
uppercase ones), straight from their memory: nothing is ever pickled. A communicator of
size 1 (``SingleProcess``) does the same calls as no-ops, so code written for several
ranks runs unchanged in one plain process, without mpi4py installed.

mpi4py is imported when the first MPI communicator is made (``world()`` under a
launcher), never by ``import cnnkit``. Each communicator keeps ``stats``: calls, seconds
and bytes per operation, which the benchmarks read (time in allreduce per step).

A communicator may carry the job's ``StopSignals`` (``comm.stop``, set by ``Job``):
``agree_on_stop()`` is then an agreement point where a Ctrl-C or SIGTERM any rank
received stops every rank at once (``stop.py``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np

from ..errors import DistributedError, MPIUnavailableError
from .env import mpi_environment
from .stop import StopSignals

__all__ = ["Communicator", "SingleProcess", "MPICommunicator", "world", "INSTALL_HINT", "import_mpi"]

INSTALL_HINT = 'pip install "cnnkit[mpi]" (mpi4py and the mpich wheel, which provides mpiexec)'

_OPS = ("sum", "max", "min")


class Communicator:
    """A group of ranks and its collective operations; this base is the one-process group.

    Every method is collective: each rank of the group must call it, in the same order,
    with buffers of the same shape and dtype (the root's contents count for a broadcast).
    Arrays must be C-contiguous NumPy arrays; results are written in place.

    Attributes:
        rank: this process's index in the group, 0 .. size - 1 (rank 0 is the root).
        size: the number of ranks.
        local_rank, local_size: the same among the ranks on this machine.
        stats: {operation: {"calls", "seconds", "bytes"}} since creation (or ``reset_stats``).
        stop: the job's ``StopSignals`` (None: signals act as in one process).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    stop: StopSignals | None = None

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "seconds": 0.0, "bytes": 0})

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that writes checkpoints, logs and progress."""
        return self.rank == 0

    def reset_stats(self) -> None:
        """Forget the counted calls, seconds and bytes."""
        self.stats.clear()

    def _count(self, op: str, start: float, nbytes: int) -> None:
        entry = self.stats[op]
        entry["calls"] += 1
        entry["seconds"] += time.perf_counter() - start
        entry["bytes"] += nbytes

    # ------------------------------------------------------------- the collectives
    def barrier(self) -> None:
        """Wait until every rank has called ``barrier``."""

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite ``array`` on every rank with the root's; return it."""
        _check_buffer(array, "broadcast")
        return array

    def allreduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """Replace ``array`` on every rank by the elementwise ``op`` ("sum", "max", "min") over ranks."""
        _check_buffer(array, "allreduce")
        _check_op(op)
        return array

    def iallreduce(self, array: np.ndarray, op: str = "sum") -> Request:
        """Start an in-place ``allreduce`` and return at once; ``request.wait()`` finishes it."""
        self.allreduce(array, op)
        return Request(None)

    def allgather(self, array: np.ndarray) -> np.ndarray:
        """Concatenate every rank's ``array`` along axis 0 (lengths may differ; other axes may not)."""
        _check_buffer(array, "allgather")
        return array.copy()

    def broadcast_bytes(self, data: bytes | None, root: int = 0) -> bytes:
        """The root's bytes on every rank (other ranks pass None): for a file read once."""
        if data is None:
            raise DistributedError("broadcast_bytes: the root rank must pass the bytes, got None")
        return bytes(data)

    def abort(self, status: int = 1) -> None:
        """End every rank of the job now with ``status`` (one process: this one)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    # ------------------------------------------------------------- checks built on them
    def agree_on_stop(self) -> None:
        """Collective: raise the agreed interrupt on every rank if any rank received SIGINT/SIGTERM.

        One allreduce of two numbers (``stop.py``); nothing without ``stop`` or with one rank.
        """
        if self.stop is None or self.size == 1:
            return
        votes = self.stop.ballot()                                          # (2,)
        self.allreduce(votes)
        self.stop.decide(votes)

    def check_same(self, what: str, value: bytes | str | np.ndarray, hint: str = "") -> None:
        """Refuse to go on unless every rank passed the same ``value`` (compared by SHA-256).

        Collective: every rank raises the same ``DistributedError`` (with ``collective =
        True``) naming the ranks that differ from rank 0, so the job can end cleanly.
        An agreement point for Ctrl-C and SIGTERM.
        """
        self.agree_on_stop()
        digest = np.frombuffer(_digest(value), dtype=np.uint8).copy()     # (32,)
        every = self.allgather(digest[None, :])                            # (size, 32)
        differ = [r for r in range(1, self.size) if not np.array_equal(every[r], every[0])]
        if differ:
            ranks = ", ".join(str(r) for r in differ)
            error = DistributedError(
                f"ranks disagree on {what}: rank{'s' if len(differ) > 1 else ''} {ranks} "
                f"differ{'' if len(differ) > 1 else 's'} from rank 0{'; ' + hint if hint else ''}"
            )
            error.collective = True
            raise error

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class SingleProcess(Communicator):
    """The group of one plain process: every collective returns its input."""


class Request:
    """A started nonblocking operation; ``wait()`` returns when it is done (and counts its time)."""

    def __init__(self, request: Any, on_done=None):
        self._request, self._on_done = request, on_done

    def wait(self) -> None:
        if self._request is not None:
            self._request.Wait()
            self._request = None
            if self._on_done is not None:
                self._on_done()

    def test(self) -> bool:
        """True once the operation has finished (drives MPI's progress without blocking)."""
        if self._request is None:
            return True
        return bool(self._request.Test())


def import_mpi(environment: str = ""):
    """Import and initialise mpi4py's MPI module, or raise ``MPIUnavailableError`` naming the package.

    MPI is initialised for threads that never call MPI at once ("funneled"): cnnkit's
    kernel and loader threads compute, only the main thread communicates.
    """
    try:
        import mpi4py  # the MPI extra: only distributed runs load it

        mpi4py.rc.thread_level = "funneled"
        from mpi4py import MPI
    except ImportError as error:
        where = f" ({environment})" if environment else ""
        raise MPIUnavailableError(
            f"this process was started as one of several MPI ranks{where} but MPI for Python is not "
            f"usable: {error}; install it with {INSTALL_HINT}"
        ) from None
    return MPI


class MPICommunicator(Communicator):
    """A group of MPI ranks (``MPI.COMM_WORLD`` by default), through mpi4py's buffer methods."""

    def __init__(self, comm: Any = None):
        super().__init__()
        env = mpi_environment()
        MPI = import_mpi(f"{env.source}={env.rank}" if env.source else "")
        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # The ranks that share this machine: one shared-memory group per node.
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._mpich = MPI.Get_library_version().startswith("MPICH")

    def barrier(self) -> None:
        start = time.perf_counter()
        self.comm.Barrier()
        self._count("barrier", start, 0)

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        _check_buffer(array, "broadcast")
        start = time.perf_counter()
        self.comm.Bcast(array, root=root)
        self._count("broadcast", start, array.nbytes)
        return array

    def allreduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        _check_buffer(array, "allreduce")
        _check_op(op)
        start = time.perf_counter()
        self.comm.Allreduce(self._MPI.IN_PLACE, array, op=self._ops[op])
        self._count("allreduce", start, array.nbytes)
        return array

    def iallreduce(self, array: np.ndarray, op: str = "sum") -> Request:
        _check_buffer(array, "iallreduce")
        _check_op(op)
        start = time.perf_counter()
        request = self.comm.Iallreduce(self._MPI.IN_PLACE, array, op=self._ops[op])
        return Request(request, lambda: self._count("iallreduce", start, array.nbytes))

    def allgather(self, array: np.ndarray) -> np.ndarray:
        _check_buffer(array, "allgather")
        start = time.perf_counter()
        rows = np.array([array.shape[0] if array.ndim else 1], dtype=np.int64)
        counts = np.empty(self.size, dtype=np.int64)
        self.comm.Allgather(rows, counts)
        row_shape = array.shape[1:]
        row_size = int(np.prod(row_shape, dtype=np.int64))
        out = np.empty((int(counts.sum()),) + row_shape, dtype=array.dtype)
        sizes = counts * row_size
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.comm.Allgatherv(array, [out, sizes, offsets, self._MPI.Datatype.fromcode(array.dtype.char)])
        self._count("allgather", start, out.nbytes)
        return out

    def broadcast_bytes(self, data: bytes | None, root: int = 0) -> bytes:
        length = np.array([len(data) if self.rank == root and data is not None else -1], dtype=np.int64)
        self.comm.Bcast(length, root=root)
        if length[0] < 0:
            raise DistributedError(f"broadcast_bytes: the root rank {root} passed None")
        buffer = np.frombuffer(bytearray(data), np.uint8) if self.rank == root else np.empty(int(length[0]), np.uint8)
        self.comm.Bcast(buffer, root=root)
        return buffer.tobytes()

    def abort(self, status: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self._mpich:
            # MPICH's process manager (Hydra) ends the whole job, quietly and with this
            # status, when a rank exits without finalizing; MPI_Abort would print a line more.
            os._exit(status)
        try:
            self.comm.Abort(status)
        finally:
            # MPI_Abort may return while the process manager ends the job: this rank must not go on.
            os._exit(status)


def _check_buffer(array: Any, where: str) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{where} expects a NumPy array, got {type(array).__name__}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{where} expects a C-contiguous array (its memory is sent as is), got strides {array.strides}")


def _check_op(op: str) -> None:
    if op not in _OPS:
        raise ValueError(f"allreduce op must be one of {', '.join(_OPS)}, got {op!r}")


def _digest(value: bytes | str | np.ndarray) -> bytes:
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value).tobytes()
    elif isinstance(value, str):
        value = value.encode()
    return hashlib.sha256(value).digest()


_world: Communicator | None = None


def world() -> Communicator:
    """This job's communicator: MPI's world when a launcher started several ranks, else one process.

    Created once, on first use. A process started without ``mpiexec`` (or with one rank)
    never imports mpi4py.
    """
    global _world
    if _world is None:
        _world = MPICommunicator() if mpi_environment().distributed else SingleProcess()
    return _world
