"""Running real MPI jobs from tests, bounded in time: ``run_mpi(args)`` starts ``mpiexec -n RANKS python args...``.

Every job started here carries a marker in its environment (``CNNKIT_TEST_JOB``). MPICH's
launcher puts each rank in a session of its own, so killing the launcher's process group
would leave the ranks running; a job that outlives its timeout is ended by killing every
process whose environment holds its marker, and the test fails with the job's output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from cnnkit.distributed.launch import find_mpiexec
from tests.conftest import subprocess_env

RANKS = 2
ROOT = Path(__file__).resolve().parents[2]
MARKER = "CNNKIT_TEST_JOB"


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
    env.setdefault(MARKER, uuid.uuid4().hex)
    env.update(extra)
    return env


def job_pids(marker: str, rank: int | None = None) -> list[int]:
    """The processes whose environment holds ``CNNKIT_TEST_JOB=marker`` (and ``PMI_RANK=rank``)."""
    wanted = [f"{MARKER}={marker}".encode()] + ([f"PMI_RANK={rank}".encode()] if rank is not None else [])
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(w in environ for w in wanted):
            found.append(int(entry.name))
    return found


def rank_pid(marker: str, rank: int, wait: float = 30) -> int | None:
    """The pid of rank ``rank`` of the job marked ``marker`` (waiting up to ``wait`` seconds for it)."""
    deadline = time.time() + wait
    while time.time() < deadline:
        pids = job_pids(marker, rank)
        if pids:
            return pids[0]
        time.sleep(0.05)
    return None


def start(command: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """Start a job (in a session of its own) whose output is collected by ``finish``."""
    return subprocess.Popen(list(command), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def kill_job(proc: subprocess.Popen, marker: str) -> None:
    """End the job: its launcher's process group and every rank (each in its own session)."""
    for _ in range(3):
        targets = job_pids(marker)
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if not targets:
            break
        time.sleep(0.1)


def finish(proc: subprocess.Popen, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Wait for the job at most ``timeout`` seconds; past that, kill all of it and fail with its output."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(proc, env[MARKER])
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(proc.args)} did not end within {timeout:g}s and was killed\n"
                    f"--- stdout\n{stdout}\n--- stderr\n{stderr}")
    finally:
        if proc.poll() is None:  # an exception (Ctrl-C) while waiting: never leave ranks behind
            kill_job(proc, env[MARKER])
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_bounded(command: Sequence[str], timeout: float = 300, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run`` for MPI jobs: the same result, and no process left behind after ``timeout``."""
    env = env or mpi_env()
    env.setdefault(MARKER, uuid.uuid4().hex)
    return finish(start(command, env, cwd), env, timeout)


def run_mpi(args: list[str], ranks: int = RANKS, timeout: float = 300, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python args...`` as ``ranks`` MPI ranks from the repository root; fail with its output."""
    command = [mpiexec(), "-n", str(ranks), sys.executable, *args]
    result = run_bounded(command, timeout=timeout, env=env, cwd=ROOT)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} ended with status {result.returncode}\n"
                    f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result
