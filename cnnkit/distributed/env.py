"""Was this process started by ``mpiexec``? Read from the environment, before importing mpi4py.

Every MPI launcher tells its processes their rank and the job's size in environment
variables. Reading them first lets ``cnnkit train`` run as a plain single process when
no launcher started it (``import mpi4py`` then never happens), and choose each rank's
threads before any work starts.

    MPICH / Intel MPI (Hydra)   PMI_RANK, PMI_SIZE; MPI_LOCALRANKID, MPI_LOCALNRANKS
    Open MPI                    OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
    MVAPICH2                    MV2_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
    PMIx (Slurm, others)        PMIX_RANK with a size from one of the above or SLURM_NTASKS

One debugging knob lives here too: ``CNNKIT_DEBUG_ALLREDUCE_DELAY=RANK:SECONDS`` makes that
rank sleep SECONDS before each gradient allreduce (``GradientBuckets.synchronize``), so the
other ranks wait inside the collective call. It makes timing races reproducible (the tests
use it to send a signal while rank 0 is provably blocked in MPI); never set it otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import DistributedError

__all__ = ["MPIEnvironment", "mpi_environment", "launched_by_mpi", "available_cores", "threads_per_rank",
           "allreduce_delay"]

# (rank, size, local rank, local size) variable names, in the order they are tried.
_LAUNCHERS = (
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"),
    ("PMIX_RANK", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)


@dataclass(frozen=True)
class MPIEnvironment:
    """What the launcher told this process: its rank, the job's size, and the same on its machine.

    ``local_size`` is the number of ranks on this machine (their cores are shared);
    ``source`` names the variable the rank came from (None: not started by a launcher).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    source: str | None = None

    @property
    def distributed(self) -> bool:
        """True when there is more than one rank: the job needs MPI."""
        return self.size > 1


def _int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def mpi_environment(environ: Mapping[str, str] | None = None) -> MPIEnvironment:
    """Read rank, size, local rank and local size from the launcher's variables (or os.environ)."""
    environ = os.environ if environ is None else environ
    for rank_var, size_var, local_rank_var, local_size_var in _LAUNCHERS:
        rank, size = _int(environ, rank_var), _int(environ, size_var)
        if rank is None or size is None or size < 1 or rank >= size:
            continue
        local_rank, local_size = _int(environ, local_rank_var), _int(environ, local_size_var)
        if local_size is None or local_rank is None or local_rank >= local_size:
            local_rank, local_size = rank, size  # unknown: assume every rank is on this machine
        return MPIEnvironment(rank, size, local_rank, local_size, rank_var)
    return MPIEnvironment()


def launched_by_mpi(environ: Mapping[str, str] | None = None) -> bool:
    """True when an MPI launcher started this process as one of several ranks."""
    return mpi_environment(environ).distributed


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def threads_per_rank(local_size: int, cores: int | None = None, machine_cores: int | None = None) -> int:
    """Each rank's share of its machine's cores: cores // ranks on the machine, at least 1.

    Two pools that each believe they own every core slow each other down (PERF_NOTES:
    12x in one case); ranks on one machine are such pools. A rank the launcher bound to
    some cores (its affinity is smaller than the machine) uses those cores, undivided.

    Args:
        local_size: ranks on this machine.
        cores: the cores this process may use (default: its affinity).
        machine_cores: the machine's cores (default: ``os.cpu_count()``).
    """
    cores = available_cores() if cores is None else cores
    machine_cores = (os.cpu_count() or cores) if machine_cores is None else machine_cores
    if cores < machine_cores:
        return max(1, cores)
    return max(1, cores // max(1, local_size))


def allreduce_delay(rank: int, environ: Mapping[str, str] | None = None) -> float:
    """Seconds rank ``rank`` sleeps before each gradient allreduce: ``CNNKIT_DEBUG_ALLREDUCE_DELAY=RANK:SECONDS``.

    0 when the variable is unset or names another rank. A debugging knob (see the module
    docstring), refused when malformed rather than ignored.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("CNNKIT_DEBUG_ALLREDUCE_DELAY", "").strip()
    if not text:
        return 0.0
    which, _, seconds = text.partition(":")
    try:
        which_rank, delay = int(which), float(seconds)
    except ValueError:
        which_rank, delay = -1, -1.0
    if which_rank < 0 or not 0 <= delay < 3600:
        raise DistributedError(f"CNNKIT_DEBUG_ALLREDUCE_DELAY expects RANK:SECONDS (a rank and 0 <= seconds < 3600, "
                               f"e.g. 1:0.2), got {text!r}")
    return delay if which_rank == rank else 0.0
