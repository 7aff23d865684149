"""Ctrl-C and SIGTERM on several ranks: every rank stops after the same step (distributed/stop.py).

The agreement is tested with ranks as threads (the ballot, the piggyback in the gradient
buckets, which interrupt wins), then with real `mpiexec -n 2` jobs and real signals, sent
while the other rank is blocked inside the gradient allreduce.
"""

from __future__ import annotations

import signal
import textwrap

import numpy as np
import pytest

from cnnkit import nn, optim
from cnnkit.distributed import DistributedOptimizer, check_parameters_in_sync
from cnnkit.distributed.parallel import parameters_digest
from cnnkit.distributed.stop import StopSignals
from cnnkit.errors import Terminated
from cnnkit.tensor import Tensor
from tests.distributed.mpi import run_mpi
from tests.distributed.threads import run_ranks


def _train_until_stopped(comm, signals: dict[int, list[int]], at_step: int = 3):
    """Steps of a small model on ``comm``; rank r records ``signals[r]`` before step ``at_step``."""
    comm.stop = StopSignals(comm.size)
    model = nn.Linear(4, 3, generator=np.random.default_rng(0))
    opt = DistributedOptimizer(optim.SGD(model.parameters(), lr=0.1, momentum=0.9), comm)
    x = Tensor(np.full((2, 4), comm.rank + 1.0, np.float32))
    for step in range(10):
        if step == at_step:
            for signum in signals.get(comm.rank, []):
                comm.stop.record(signum)
        before = parameters_digest(model)
        opt.zero_grad()
        (model(x) ** 2).sum().backward()
        try:
            opt.step()
        except KeyboardInterrupt as error:
            assert parameters_digest(model) == before   # raised before the averaged step is applied
            return step, type(error), getattr(error, "collective", False), str(error), before
    return None


@pytest.mark.parametrize("signals, raised", [
    ({1: [signal.SIGINT]}, KeyboardInterrupt),
    ({0: [signal.SIGTERM]}, Terminated),
    ({0: [signal.SIGINT], 2: [signal.SIGTERM]}, Terminated),            # SIGTERM wins on every rank
    ({1: [signal.SIGTERM, signal.SIGINT]}, Terminated),                 # and on one rank
])
def test_a_signal_on_any_rank_stops_every_rank_at_the_same_step(signals, raised):
    results = run_ranks(3, lambda comm: _train_until_stopped(comm, signals))
    assert [r[:3] for r in results] == [(3, raised, True)] * 3
    assert len({r[4] for r in results}) == 1                            # the same weights everywhere
    count = sum(len(v) > 0 for v in signals.values()) if raised is KeyboardInterrupt else \
        sum(signal.SIGTERM in v for v in signals.values())
    name = "SIGTERM" if raised is Terminated else "SIGINT"
    assert results[0][3] == f"{name} received by {count} of 3 ranks; every rank stopped at the same point"


def test_without_a_signal_nothing_stops_and_the_agreement_points_pass():
    def rank(comm):
        comm.stop = StopSignals(comm.size)
        comm.agree_on_stop()
        model = nn.Linear(2, 2, generator=np.random.default_rng(0))
        check_parameters_in_sync(model, comm)                           # check_same agrees first
        return _train_until_stopped(comm, {}), comm.stop.agreed

    assert run_ranks(2, rank) == [(None, None)] * 2


def test_agree_on_stop_raises_the_collective_interrupt_on_every_rank():
    def rank(comm):
        comm.stop = StopSignals(comm.size)
        if comm.rank == 2:
            comm.stop.record(signal.SIGINT)
        try:
            comm.agree_on_stop()
        except KeyboardInterrupt as error:
            return type(error), error.collective, comm.stop.agreed, comm.stop.pending
        return None

    assert run_ranks(3, rank) == [(KeyboardInterrupt, True, signal.SIGINT, None)] * 3


def test_immediate_raises_at_once_and_only_handles_sigint_and_sigterm():
    stop = StopSignals(2)
    stop.record(signal.SIGTERM)
    with pytest.raises(Terminated):
        with stop.immediate():
            pass
    assert stop.pending is None and stop.agreed is None     # not collective: this rank alone
    with pytest.raises(ValueError, match=r"StopSignals handles SIGINT and SIGTERM, got signal 10"):
        stop.record(signal.SIGUSR1)


# ----------------------------------------------------------------------------- real jobs, real signals
# Rank `sender` sends itself the signal at step 3 after a pause, so the other rank is by then
# blocked inside step 3's gradient allreduce (where CPython cannot run a signal handler).
WORKER = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    from cnnkit import nn, optim
    from cnnkit.distributed import DistributedOptimizer, Job
    from cnnkit.distributed.parallel import parameters_digest
    from cnnkit.tensor import Tensor

    with Job("job test", grace=0.2) as job:
        model = nn.Linear(4, 3, generator=np.random.default_rng(0))
        opt = DistributedOptimizer(optim.SGD(model.parameters(), lr=0.1), job.comm)
        x = Tensor(np.full((2, 4), job.rank + 1.0, np.float32))
        step = 0
        try:
            while step < 1000:
                if step == 3 and job.rank == {sender}:
                    time.sleep(0.5)
                    {action}
                elif step == 3 and {signal_the_other}:
                    os.kill(os.getpid(), signal.SIGINT)
                opt.zero_grad()
                (model(x) ** 2).sum().backward()
                opt.step()
                step += 1
        except KeyboardInterrupt as error:
            print(f"<rank {{job.rank}} stopped after {{step}} steps: {{type(error).__name__}} "
                  f"{{parameters_digest(model)[:16]}}>", file=sys.__stdout__, flush=True)
            raise
""")


@pytest.mark.mpi
@pytest.mark.parametrize("sender, signum, status, line", [
    (1, "SIGINT", 130, "job test: interrupted"),
    (0, "SIGTERM", 143, "job test: terminated"),
])
def test_a_signal_while_the_other_rank_waits_in_the_allreduce_stops_both_after_the_same_step(
        sender, signum, status, line):
    action = f"os.kill(os.getpid(), signal.{signum})"
    result = run_mpi(["-c", WORKER.format(sender=sender, action=action, signal_the_other=False)], timeout=120,
                     check=False)
    assert result.returncode == status, result.stdout + result.stderr
    stopped = sorted(part.split(">")[0] for part in result.stdout.split("<")[1:])
    kind = "Terminated" if signum == "SIGTERM" else "KeyboardInterrupt"
    assert [s.rsplit(" ", 1)[0] for s in stopped] == [f"rank {r} stopped after 3 steps: {kind}" for r in (0, 1)]
    assert len({s.rsplit(" ", 1)[1] for s in stopped}) == 1          # the same weights on both ranks
    assert result.stderr.strip() == line                               # one line, printed once


@pytest.mark.mpi
@pytest.mark.parametrize("action, status, message", [
    ("raise ValueError('rank 1 failed')", 1, "job test: rank 1 of 2: rank 1 failed"),
    ("os.kill(os.getpid(), signal.SIGKILL)", None, ""),
])
def test_a_rank_that_dies_while_a_stop_is_pending_ends_the_job(action, status, message):
    """Rank 0 received SIGINT and waits for the agreement inside the allreduce; rank 1 fails or is
    killed instead of arriving: the job ends (no hang), with rank 1's error when it had one."""
    worker = WORKER.format(sender=1, action=action, signal_the_other=True)
    result = run_mpi(["-c", worker], timeout=120, check=False)
    assert result.returncode != 0 and (status is None or result.returncode == status), result.stderr
    assert message in result.stderr
    assert "stopped after" not in result.stdout
