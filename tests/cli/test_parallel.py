"""`cnnkit train` on several processes: --nproc, real mpiexec jobs, a killed rank, --resume, refusals.

Each job trains LeNet-5 on 1,200 MNIST images with a 600-image validation share: seconds
per epoch, so that the whole file stays within its CI budget.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from cnnkit.cli import parallel
from cnnkit.distributed import launch as launch_module
from cnnkit.distributed.launch import mpiexec_command, plan_launch
from cnnkit.errors import MPIUnavailableError, UsageError
from cnnkit.io.checkpoint import load_checkpoint
from tests.conftest import interrupt_training
from tests.distributed.mpi import MARKER, finish, job_pids, mpi_env, mpiexec, rank_pid, run_bounded, start
from tests.distributed.threads import run_ranks

SMALL = ["--limit", "1200", "--val-split", "0.01", "--batch-size", "32"]


def cnnkit(*args: str, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """``python -m cnnkit args...``; a job still running after ``timeout`` is killed (ranks too) and fails."""
    return run_bounded([sys.executable, "-m", "cnnkit", *args], timeout=timeout, env=env)


def weights(path: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(path).model_state


# ----------------------------------------------------------------------------- real jobs
TRAIN = ["train", "lenet5", "--epochs", "3", *SMALL, "--seed", "3", "--lr-scaling", "linear", "--warmup-epochs", "1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run of 3 epochs on 2 ranks started by --nproc: (run folder, the command's result)."""
    mpiexec()
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, cnnkit(*TRAIN, "--out", str(out), "--nproc", "2")


@pytest.mark.mpi
def test_nproc_trains_on_two_ranks_and_only_rank0_writes_and_prints(reference):
    out, result = reference
    assert result.returncode == 0, result.stderr
    assert "starting 2 ranks:" in result.stdout and " -n 2 " in result.stdout
    assert ("data parallel: 2 ranks x 1 thread; global batch 64 = 2 x 32; lr 0.1 = 0.05 x 2 ranks (linear "
            "scaling rule), one-cycle with 1 warm-up epochs") in result.stdout
    for epoch in (1, 2, 3):
        assert result.stdout.count(f"Epoch {epoch}/3") == 1          # rank 0 alone prints
    assert result.stdout.count("last: validation accuracy") == 1
    assert result.stderr == ""
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    recipe = load_checkpoint(out / "last.safetensors").meta["extra"]["recipe"]
    assert recipe["ranks"] == 2 and recipe["lr_scaling"] == "linear" and recipe["lr"] == 0.05


@pytest.mark.mpi
def test_a_killed_rank_ends_the_job_and_resume_continues_exactly(tmp_path, reference):
    run = tmp_path / "run"
    env = mpi_env()
    proc = start([sys.executable, "-m", "cnnkit", *TRAIN, "--out", str(run), "--nproc", "2"], env)
    try:
        deadline = time.time() + 240
        while not (run / "last.safetensors").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        rank1 = rank_pid(env[MARKER], 1)
        assert rank1 is not None and proc.poll() is None, "the job ended (or rank 1 never started) before the kill"
        pending = interrupt_training(proc, signal.SIGKILL, run, 3, pid=rank1)
    finally:
        result = finish(proc, env, timeout=120)   # no hang: the whole job ends (else killed, and the test fails)
    stderr = result.stderr
    if result.returncode == 0:
        assert not pending, f"rank 1 was killed with epochs left and the job went on to its end\n{stderr}"
        pytest.skip("the job finished before the kill arrived")
    assert result.returncode == 1
    assert "cnnkit train: the job of 2 ranks stopped: a rank was killed by signal 9 (SIGKILL" in stderr
    assert f"`cnnkit train --out {run} --resume --nproc 2` continues the run" in stderr

    resumed = cnnkit(*TRAIN, "--out", str(run), "--nproc", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    # bit for bit what the uninterrupted run ended with: epochs reseed every rank from (seed, epoch, rank)
    final, expected = weights(run / "last.safetensors"), weights(reference[0] / "last.safetensors")
    for key in expected:
        np.testing.assert_array_equal(final[key], expected[key], err_msg=key)


@pytest.mark.mpi
@pytest.mark.parametrize("how", ["sigterm-to-the-launcher", "ctrl-c"])
def test_sigterm_or_ctrl_c_stops_the_ranks_as_it_stops_one_process(tmp_path, how):
    """`kill PID` of `cnnkit train --nproc 2` (a batch system's stop) -> 143; Ctrl-C (SIGINT to the
    terminal's process group: the launcher and mpiexec) -> 130. Either way every rank stops after the
    same step, rank 0 saves `interrupted.safetensors`, and the job ends with one line.

    The race that failed this now and then in CI, made certain: rank 1 sleeps 0.5 s before each
    gradient allreduce (CNNKIT_DEBUG_ALLREDUCE_DELAY), so when the signal comes rank 0 is blocked
    inside the collective call, where Python cannot run its signal handler, and rank 1 is in Python.
    When each rank acted on the signal alone, rank 1 left, ended the job after its grace period and
    rank 0 died in the allreduce without saving."""
    run = tmp_path / "run"
    env = mpi_env(CNNKIT_DEBUG_ALLREDUCE_DELAY="1:0.5")
    proc = start([sys.executable, "-m", "cnnkit", "train", "lenet5", "--epochs", "20", "--limit", "400",
                  "--val-split", "0.01", "--batch-size", "32", "--out", str(run), "--nproc", "2"], env)
    try:
        deadline = time.time() + 240
        while not (run / "last.safetensors").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before the first epoch was saved"
        time.sleep(0.2)   # rank 0 is in the first allreduce of epoch 2 (rank 1 sleeps 0.5 s before its own)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)   # the launcher alone, not its process group
    finally:
        result = finish(proc, env, timeout=120)
    # (20 epochs: far from done when the signal is sent)
    assert result.returncode == (130 if how == "ctrl-c" else 143), result.stderr
    assert (run / "interrupted.safetensors").exists(), result.stderr
    saved = load_checkpoint(run / "interrupted.safetensors")
    assert saved.meta["epoch"] == 0 and saved.meta["extra"]["recipe"]["ranks"] == 2   # stopped in epoch 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[mpiexec@")]
    assert lines == [f"interrupted: weights saved to {run / 'interrupted.safetensors'}; the last finished epoch "
                     f"is in {run / 'last.safetensors'}; `cnnkit train --out {run} --resume --nproc 2` continues "
                     "the run"], result.stderr
    time.sleep(0.5)
    assert job_pids(env[MARKER]) == []   # no rank left running


@pytest.mark.mpi
def test_sync_bn_from_the_command_line_and_its_checkpoint_is_plain_batchnorm(tmp_path):
    """--sync-bn on a BatchNorm model (ResNet-20 on a small image folder): the banner says so, the recipe
    stores it, and the checkpoint is ordinary BatchNorm state that one process loads and runs."""
    from cnnkit import nn
    from cnnkit.io.checkpoint import load
    from cnnkit.tensor import Tensor
    from tests.cli.test_owndata import make_shapes

    make_shapes(tmp_path / "shapes", n=8, size=20)
    out = tmp_path / "run"
    result = cnnkit("train", "resnet20", "--data", str(tmp_path / "shapes"), "--val-split", "0.25", "--epochs", "1",
                    "--batch-size", "4", "--nproc", "2", "--sync-bn", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "BatchNorm statistics over the global batch (SyncBatchNorm2d)" in result.stdout
    ckpt = load_checkpoint(out / "last.safetensors")
    assert ckpt.meta["extra"]["recipe"]["sync_bn"] is True and ckpt.meta["extra"]["recipe"]["ranks"] == 2
    model = load(out / "last.safetensors")
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any("Sync" in type(m).__name__ for m in model.modules())
    model.eval()
    assert np.isfinite(model(Tensor(np.zeros((2, 3, 20, 20), np.float32))).data).all()


@pytest.mark.mpi
def test_resuming_on_another_number_of_ranks_is_refused(reference):
    out, _ = reference
    result = cnnkit(*TRAIN, "--out", str(out), "--resume", env=mpi_env())
    assert result.returncode == 2
    assert (f"cnnkit train: --resume: the run in {out} was trained on 2 ranks, this job has 1; each rank takes a "
            "batch, so the global batch and the steps would change. Resume it on 2 ranks (--nproc 2)") in result.stderr


def _mpmd(tmp_path: Path, rank0: list[str], rank1: list[str]) -> subprocess.CompletedProcess:
    """Two ranks started with different arguments (MPI's MPMD syntax: `-n 1 A : -n 1 B`)."""
    base = [sys.executable, "-m", "cnnkit", "train", "lenet5", "--epochs", "1", *SMALL, "--out", str(tmp_path / "run")]
    command = [mpiexec(), "-n", "1", *base, *rank0, ":", "-n", "1", *base, *rank1]
    return run_bounded(command, timeout=300)


@pytest.mark.mpi
def test_ranks_that_disagree_on_the_model_or_the_data_are_refused(tmp_path):
    model = _mpmd(tmp_path, ["--seed", "0"], ["--seed", "1"])
    assert model.returncode == 1
    assert ("cnnkit train: rank 0 of 2: ranks disagree on the model: rank 1 differs from rank 0; each rank must "
            "build the same model") in model.stderr
    assert model.stderr.count("disagree") == 1
    data = _mpmd(tmp_path, [], ["--limit", "1100"])
    assert data.returncode == 1
    assert "ranks disagree on the training data: rank 1 differs from rank 0" in data.stderr


@pytest.mark.mpi
def test_an_error_on_one_rank_ends_the_whole_job_with_that_ranks_message(tmp_path):
    start = time.perf_counter()
    result = _mpmd(tmp_path, [], ["--data-dir", str(tmp_path / "missing")])
    assert result.returncode == 1
    assert f"cnnkit train: rank 1 of 2: --data-dir {tmp_path / 'missing'}: no such folder" in result.stderr
    assert time.perf_counter() - start < 120   # no hang


# ----------------------------------------------------------------------------- no job started
@pytest.mark.mpi
def test_hosts_and_a_hostfile_start_the_ranks_on_the_machines_named(tmp_path):
    """--hosts / --hostfile with this machine's own name: the multi-machine path, run for real on one machine."""
    host = socket.gethostname()
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text(f"{host}:2\n")
    for where in (["--hosts", f"{host}:2"], ["--hostfile", str(hostfile)]):
        out = tmp_path / where[0].strip("-")
        result = cnnkit("train", "lenet5", "--epochs", "1", *SMALL, "--out", str(out), "--nproc", "2", *where)
        assert result.returncode == 0, result.stderr
        flag = ["-hosts", f"{host}:2"] if where[0] == "--hosts" else ["-f", str(hostfile)]
        assert f" -n 2 {' '.join(flag)} " in result.stdout
        assert "data parallel: 2 ranks" in result.stdout
        assert load_checkpoint(out / "last.safetensors").meta["extra"]["recipe"]["ranks"] == 2


def test_mpi_not_installed_says_which_package(monkeypatch):
    monkeypatch.setattr(launch_module, "find_mpiexec", lambda: None)
    with pytest.raises(MPIUnavailableError, match=r'--nproc needs MPI\'s mpiexec, which is not installed: '
                                                   r'pip install "cnnkit\[mpi\]"'):
        plan_launch(2, ["train", "lenet5"])
    monkeypatch.setattr(launch_module, "find_mpiexec", lambda: "/usr/bin/mpiexec")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(MPIUnavailableError, match=r"needs MPI for Python \(mpi4py\), which is not installed"):
        plan_launch(2, ["train", "lenet5"])


def test_the_mpiexec_command_lines():
    program = ["python", "-m", "cnnkit", "train", "lenet5"]
    assert mpiexec_command("mpiexec", 4, program) == ["mpiexec", "-n", "4", *program]
    assert mpiexec_command("mpiexec", 8, program, hosts="a:4,b:4") == \
        ["mpiexec", "-n", "8", "-hosts", "a:4,b:4", *program]
    assert mpiexec_command("mpiexec", 8, program, hostfile="h.txt") == ["mpiexec", "-n", "8", "-f", "h.txt", *program]
    assert mpiexec_command("mpirun", 8, program, hosts="a:4,b:4", flavour="openmpi") == \
        ["mpirun", "-n", "8", "--host", "a:4,b:4", *program]
    assert mpiexec_command("mpirun", 8, program, hostfile="h.txt", flavour="openmpi") == \
        ["mpirun", "-n", "8", "--hostfile", "h.txt", *program]


def test_nproc_more_than_the_cores_is_a_warning_not_a_refusal(monkeypatch):
    monkeypatch.setattr(launch_module, "find_mpiexec", lambda: "/usr/bin/mpiexec")
    monkeypatch.setitem(sys.modules, "mpi4py", object())
    plan = plan_launch(3, ["train", "lenet5"], cores=2)
    assert plan.command[:3] == ["/usr/bin/mpiexec", "-n", "3"]
    assert plan.command[3:] == [sys.executable, "-m", "cnnkit", "train", "lenet5"]
    assert plan.warnings == ["--nproc 3 is more than the 2 cores of this machine: the ranks will share cores and "
                             "each step waits for the slowest; --nproc 2 is likely faster"]
    assert plan_launch(2, ["train"], cores=2).warnings == []
    with pytest.raises(UsageError, match=r"--hostfile nowhere.txt: no such file"):
        plan_launch(2, ["train"], hostfile="nowhere.txt")


class Args:
    def __init__(self, **kw):
        self.nproc, self.hosts, self.hostfile = None, None, None
        self.__dict__.update(kw)


def test_when_to_launch(monkeypatch):
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert parallel.launch_requested(Args(nproc=2))
    assert not parallel.launch_requested(Args(nproc=1)) and not parallel.launch_requested(Args())
    assert parallel.launch_requested(Args(nproc=1, hosts="a:1"))
    with pytest.raises(UsageError, match=r"give their number with --nproc N"):
        parallel.launch_requested(Args(hosts="a:2"))
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert not parallel.launch_requested(Args(nproc=2))   # a rank of the job --nproc 2 started
    with pytest.raises(UsageError, match=r"--nproc 4, but this process is one of 2 ranks that mpiexec started"):
        parallel.launch_requested(Args(nproc=4))


def test_the_memory_preflight_gives_each_rank_on_a_machine_its_share(monkeypatch):
    """Two ranks on one machine each take a step at once: a batch that fits once but not twice is refused."""
    from cnnkit import models
    from cnnkit.cli import preflight
    from cnnkit.train.memory import estimate_step_memory

    model = models.get_model("lenet5")
    need = estimate_step_memory(model, (1, 28, 28), 64, train=True).total
    monkeypatch.setattr(preflight, "available_memory", lambda: int(1.5 * need / preflight._USABLE_SHARE))
    preflight.check_step_memory(model, (1, 28, 28), 64, train=True, name="training lenet5")  # one process: fits
    with pytest.raises(UsageError, match=r"is available, shared by the 2 ranks on this machine: use --batch-size "
                                         r"(\d+) or less") as refused:
        preflight.check_step_memory(model, (1, 28, 28), 64, train=True, name="training lenet5", sharers=2)
    assert int(refused.value.args[0].rsplit("--batch-size ", 1)[1].split()[0]) < 64


def test_root_first_lets_rank_0_fill_the_cache_before_the_others_start():
    """`cnnkit train --dataset NAME` on several ranks: rank 0 downloads, the others then read its files."""
    events, started_early = [], threading.Event()

    def rank(comm):
        ranks = parallel.Ranks(types.SimpleNamespace(comm=comm, size=comm.size, rank=comm.rank))

        def load():
            events.append(("start", comm.rank))
            if comm.rank == 0:
                started_early.wait(0.5)  # set only by a rank that did not wait for rank 0
            else:
                started_early.set()
            events.append(("end", comm.rank))
            return comm.rank

        return ranks.root_first(load)

    assert run_ranks(3, rank) == [0, 1, 2]
    assert events[:2] == [("start", 0), ("end", 0)] and len(events) == 6
    assert parallel.Ranks(None).root_first(lambda: "one process") == "one process"
