"""Ranks from the launcher's environment variables, before (and without) importing mpi4py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cnnkit.distributed import mpi_environment, threads_per_rank
from cnnkit.distributed.comm import SingleProcess, import_mpi, world
from cnnkit.errors import MPIUnavailableError
from tests.conftest import subprocess_env


@pytest.mark.parametrize("environ, expected", [
    ({}, (0, 1, 0, 1, None)),
    ({"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, (1, 4, 1, 2, "PMI_RANK")),
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, (3, 8, 1, 4, "OMPI_COMM_WORLD_RANK")),
    ({"MV2_COMM_WORLD_RANK": "0", "MV2_COMM_WORLD_SIZE": "2"}, (0, 2, 0, 2, "MV2_COMM_WORLD_RANK")),
    ({"PMI_RANK": "0", "PMI_SIZE": "1"}, (0, 1, 0, 1, "PMI_RANK")),          # mpiexec -n 1: one process
    ({"PMI_RANK": "5", "PMI_SIZE": "2"}, (0, 1, 0, 1, None)),                # nonsense: ignored
    ({"PMI_RANK": "x", "PMI_SIZE": "2"}, (0, 1, 0, 1, None)),
])
def test_rank_and_size_from_the_launchers_variables(environ, expected):
    env = mpi_environment(environ)
    assert (env.rank, env.size, env.local_rank, env.local_size, env.source) == expected
    assert env.distributed == (expected[1] > 1)


@pytest.mark.parametrize("local, cores, machine, expected", [
    (1, 2, 2, 2), (2, 2, 2, 1), (4, 2, 2, 1), (2, 16, 16, 8), (3, 16, 16, 5),
    (2, 1, 16, 1), (2, 4, 16, 4),   # bound by the launcher to 1 or 4 cores: those, undivided
])
def test_each_rank_gets_its_share_of_the_cores(local, cores, machine, expected):
    assert threads_per_rank(local, cores, machine) == expected


def test_one_plain_process_never_imports_mpi4py():
    code = ("import sys, numpy as np\n"
            "import cnnkit.distributed as d\n"
            "from cnnkit.cli import main\n"
            "comm = d.world()\n"
            "assert type(comm).__name__ == 'SingleProcess' and comm.size == 1\n"
            "a = np.ones(3); comm.allreduce(a); comm.broadcast(a); assert (a == 1).all()\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n")
    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("PMI_", "OMPI_", "MV2_", "PMIX_"))}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_single_process_collectives_return_their_inputs():
    comm = world()
    assert isinstance(comm, SingleProcess) and comm.is_root
    a = np.arange(3.0)
    assert comm.allreduce(a, "max") is a and comm.broadcast(a) is a
    np.testing.assert_array_equal(comm.allgather(a[:, None]), a[:, None])
    assert comm.broadcast_bytes(b"x") == b"x"
    comm.check_same("anything", "value")  # one rank agrees with itself
    with pytest.raises(ValueError, match=r"allreduce op must be one of sum, max, min, got 'mean'"):
        comm.allreduce(a, "mean")
    with pytest.raises(ValueError, match=r"C-contiguous"):
        comm.allreduce(np.ones((3, 4))[:, ::2])
    with pytest.raises(TypeError, match=r"allreduce expects a NumPy array, got list"):
        comm.allreduce([1.0])


def test_mpi_missing_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # what an environment without the extra sees
    with pytest.raises(MPIUnavailableError, match=r'pip install "cnnkit\[mpi\]" \(mpi4py and the mpich wheel'):
        import_mpi("PMI_RANK=0")
    assert issubclass(MPIUnavailableError, ImportError)
