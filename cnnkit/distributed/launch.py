"""Start a job: the ``mpiexec`` command line of ``cnnkit train --nproc N`` (and ``--hosts``, ``--hostfile``).

    cnnkit train resnet20 --dataset cifar10 --nproc 2
      -> mpiexec -n 2 /path/to/python -m cnnkit train resnet20 --dataset cifar10

Several machines (MPICH's Hydra launcher; Open MPI's spelling is used when its
``mpiexec`` is the one found):

    cnnkit train resnet20 --nproc 8 --hosts node1:4,node2:4
      -> mpiexec -n 8 -hosts node1:4,node2:4 ...          (Open MPI: --host node1:4,node2:4)
    cnnkit train resnet20 --nproc 8 --hostfile hosts.txt
      -> mpiexec -n 8 -f hosts.txt ...                     (Open MPI: --hostfile hosts.txt)

The ``mpiexec`` used is the one installed next to this Python (the ``mpich`` wheel puts it
in the environment's ``bin``), else the first on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MPIUnavailableError, UsageError
from .comm import INSTALL_HINT
from .env import available_cores

__all__ = ["find_mpiexec", "mpi_flavour", "mpiexec_command", "Launch", "plan_launch", "run_launch"]


def find_mpiexec() -> str | None:
    """The ``mpiexec`` beside this interpreter (a virtual environment's), else the first on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def mpi_flavour(mpiexec: str) -> str:
    """"mpich" (Hydra: MPICH, Intel MPI), "openmpi", or "unknown", from ``mpiexec --version``."""
    try:
        result = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (result.stdout + result.stderr).lower()
    if "hydra" in text or "mpich" in text or "intel" in text:
        return "mpich"
    if "open mpi" in text or "openrte" in text or "open-mpi" in text:
        return "openmpi"
    return "unknown"


def mpiexec_command(mpiexec: str, nproc: int, program: Sequence[str], *, hosts: str | None = None,
                    hostfile: str | None = None, flavour: str = "mpich") -> list[str]:
    """The command line that starts ``program`` as ``nproc`` ranks (on ``hosts`` / a hostfile)."""
    command = [mpiexec, "-n", str(nproc)]
    if hosts:
        command += ["--host", hosts] if flavour == "openmpi" else ["-hosts", hosts]
    if hostfile:
        command += ["--hostfile", hostfile] if flavour == "openmpi" else ["-f", hostfile]
    return command + list(program)


@dataclass
class Launch:
    """A planned job: the command, and the warnings to show before it starts."""

    command: list[str]
    nproc: int
    warnings: list[str]


def plan_launch(nproc: int, argv: Sequence[str], *, hosts: str | None = None, hostfile: str | None = None,
                cores: int | None = None) -> Launch:
    """Plan ``cnnkit <argv>`` as ``nproc`` ranks: find mpiexec, check the options, build the command.

    Raises:
        MPIUnavailableError: no mpiexec, or no mpi4py (names the package to install).
        UsageError: a hostfile that does not exist, hosts without a process count that adds up.
    """
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise MPIUnavailableError(f"--nproc needs MPI's mpiexec, which is not installed: {INSTALL_HINT}")
    try:
        import mpi4py  # noqa: F401  (the MPI extra: checked here, where the job would fail)
    except ImportError:
        raise MPIUnavailableError(f"--nproc needs MPI for Python (mpi4py), which is not installed: "
                                  f"{INSTALL_HINT}") from None
    if hostfile is not None and not Path(hostfile).is_file():
        raise UsageError(f"--hostfile {hostfile}: no such file")
    notes = []
    cores = available_cores() if cores is None else cores
    if hosts is None and hostfile is None and nproc > cores:
        notes.append(f"--nproc {nproc} is more than the {cores} cores of this machine: the ranks will share "
                     f"cores and each step waits for the slowest; --nproc {cores} is likely faster")
    program = [sys.executable, "-m", "cnnkit", *argv]
    command = mpiexec_command(mpiexec, nproc, program, hosts=hosts, hostfile=hostfile,
                              flavour=mpi_flavour(mpiexec) if (hosts or hostfile) else "mpich")
    return Launch(command, nproc, notes)


def run_launch(launch: Launch) -> int:
    """Run the job; return mpiexec's exit status (negative: it was killed by that signal).

    Ctrl-C reaches mpiexec (it shares the terminal's process group), which forwards it to
    the ranks; this process waits for the job to end. A SIGTERM sent to this process alone
    (``kill PID``, a batch system) is passed on to mpiexec, which forwards it to the ranks:
    they save their state and stop as one process would.
    """
    process = subprocess.Popen(launch.command)

    def forward(signum, frame):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                continue  # mpiexec got the signal too and is ending the ranks
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
