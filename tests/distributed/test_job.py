"""A rank that leaves the job early ends the whole job (no MPI hang), with its status and message."""

from __future__ import annotations

import textwrap

import pytest

from cnnkit.distributed.job import exit_status
from tests.distributed.mpi import run_mpi

# Rank 1 leaves inside the Job block while rank 0 waits at a barrier it would never pass.
WORKER = textwrap.dedent("""
    import sys
    from cnnkit.distributed.job import Job
    with Job("job test", grace=0.2) as job:
        if job.rank == 1:
            {leave}
        job.comm.barrier()
        print("rank", job.rank, "passed the barrier", flush=True)
""")


@pytest.mark.parametrize("leave, status, message", [
    ("sys.exit(3)", 3, "job test: rank 1 of 2: exited with status 3"),
    ("sys.exit('the data folder is empty')", 1, "job test: rank 1 of 2: the data folder is empty"),
    ("raise ValueError('bad shard')", 1, "job test: rank 1 of 2: bad shard"),
])
@pytest.mark.mpi
def test_a_rank_leaving_with_an_error_ends_every_rank_with_its_status(leave, status, message):
    result = run_mpi(["-c", WORKER.format(leave=leave)], timeout=120, check=False)
    assert result.returncode == status, result.stderr
    assert message in result.stderr
    assert "passed the barrier" not in result.stdout


@pytest.mark.mpi
def test_every_rank_leaving_with_status_0_ends_the_job_quietly():
    worker = textwrap.dedent("""
        import sys
        from cnnkit.distributed.job import Job
        with Job("job test", grace=0.2) as job:
            job.comm.barrier()
            print("rank", job.rank, "leaves", flush=True)
            sys.exit(0)
    """)
    result = run_mpi(["-c", worker], timeout=120)
    assert "rank 0 leaves" in result.stdout
    assert "job test" not in result.stderr


@pytest.mark.mpi
def test_an_error_every_rank_raises_at_a_collective_check_ends_the_job_with_its_status_once():
    """Ranks that disagree (Communicator.check_same raises on every rank): each rank ends
    normally with status 1, rank 0 alone prints; repeated, since the old ending raced."""
    worker = textwrap.dedent("""
        from cnnkit.distributed.job import Job
        with Job("job test", grace=0.2) as job:
            job.comm.check_same("the model", str(job.rank), "build the same model")
            print("rank", job.rank, "went on", flush=True)
    """)
    for _ in range(3):
        result = run_mpi(["-c", worker], timeout=120, check=False)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("ranks disagree on the model: rank 1 differs from rank 0") == 1
        assert "job test: rank 0 of 2:" in result.stderr and "went on" not in result.stdout


@pytest.mark.parametrize("error, status", [
    (SystemExit(3), 3), (SystemExit("message"), 1), (SystemExit(300), 1), (KeyboardInterrupt(), 130),
    (ValueError("x"), 1),
])
def test_exit_status(error, status):
    assert exit_status(error) == status
