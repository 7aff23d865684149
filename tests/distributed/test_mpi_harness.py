"""The tests' MPI runner never leaves a job behind: past its timeout every rank is killed."""

from __future__ import annotations

import re
import sys
import time

import pytest

from tests.distributed.mpi import MARKER, job_pids, mpi_env, run_mpi


@pytest.mark.mpi
def test_a_job_past_its_timeout_is_killed_rank_by_rank_and_the_test_fails():
    env = mpi_env()
    start = time.perf_counter()
    with pytest.raises(pytest.fail.Exception, match="did not end within 5s and was killed"):
        run_mpi(["-c", "import time; print('started', flush=True); time.sleep(600)"], timeout=5, env=env)
    assert time.perf_counter() - start < 60
    time.sleep(0.5)
    assert job_pids(env[MARKER]) == []  # mpiexec, its proxy and both ranks (each in a session of its own)


@pytest.mark.mpi
def test_a_job_that_ends_gives_its_output_and_status():
    result = run_mpi(["-c", "import os, sys; print(f\"<rank {os.environ['PMI_RANK']}>\"); sys.exit(0)"])
    # (the ranks' lines reach mpiexec's output interleaved, not always one per line)
    assert sorted(re.findall(r"<rank (\d+)>", result.stdout)) == ["0", "1"]
    assert sys.executable in result.args
