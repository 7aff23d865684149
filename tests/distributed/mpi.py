"""Running real MPI jobs from tests: ``run_mpi(args)`` starts ``mpiexec -n RANKS python args...``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cnnkit.distributed.launch import find_mpiexec
from tests.conftest import subprocess_env

RANKS = 2
ROOT = Path(__file__).resolve().parents[2]


def mpiexec() -> str:
    """The mpiexec the tests use; skips (saying why) where the MPI extra is not installed."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip('MPI tests need the mpi extra: pip install -e ".[mpi]"')
    found = find_mpiexec()
    if found is None:
        pytest.fail("mpi4py is installed but no mpiexec was found (the mpich wheel provides one)")
    return found


def mpi_env(**extra: str) -> dict[str, str]:
    env = subprocess_env()  # PYTHONPATH: the cnnkit under test (and its tests package)
    env.update(extra)
    return env


def run_mpi(args: list[str], ranks: int = RANKS, timeout: float = 300, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python args...`` as ``ranks`` MPI ranks from the repository root; fail with its output."""
    command = [mpiexec(), "-n", str(ranks), sys.executable, *args]
    result = subprocess.run(command, cwd=ROOT, env=env or mpi_env(), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} ended with status {result.returncode}\n"
                    f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result
