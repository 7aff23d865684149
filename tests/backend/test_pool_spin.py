"""The kernel pool's waiting and placement: the spinning wait (``dispatch.POOL_SPIN_US``,
``kernels/spin.py``) and the pinned threads (``dispatch.POOL_PIN``).

Helpers that spin for the next region, a caller that spins for the last chunk, threads held
on their own CPUs: each changes when and where threads run, never what they compute. Results
must be bit-identical with each switch on and off; a helper that never comes must not stall
the caller; errors, forks, nested regions and an idle process behave as with sleeping,
unpinned helpers; the caller gets its CPUs back when a region ends.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import cores, dispatch, kernels
from cnnkit.backend.kernels import spin

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

SPIN_US = 2000


@pytest.fixture
def spinning(monkeypatch):
    monkeypatch.setattr(dispatch, "POOL_SPIN_US", SPIN_US)
    monkeypatch.setattr(cores, "_others_busy", lambda: False)     # pinned regions: the spin applies


@pytest.fixture
def pinning(monkeypatch):
    if not cores._PIN_OK or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs sched_setaffinity and two CPUs")
    monkeypatch.setattr(dispatch, "POOL_PIN", 2)
    monkeypatch.setattr(cores, "_others_busy", lambda: False)     # as on a quiet machine
    yield
    with config.num_threads(2):
        monkeypatch.setattr(dispatch, "POOL_PIN", 0)
        cores.parallel_for(lambda i0, i1: None, 8)               # the helpers get their CPUs back


def _lenet_like(dtype):
    """A convolution -> ReLU -> max-pool -> linear step with every kernel split (LeNet-5's conv2 at batch 64)."""
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((64, 6, 14, 14)).astype(dtype), requires_grad=True)
    w = Tensor((rng.standard_normal((16, 6, 5, 5)) / 12).astype(dtype), requires_grad=True)
    fc = Tensor((rng.standard_normal((120, 400)) / 20).astype(dtype), requires_grad=True)
    y = F.max_pool2d(F.relu(F.conv2d(x, w)), 2)
    out = F.linear(y.reshape(64, 400), fc)
    out.backward(np.ones(out.shape, dtype))
    return [a.copy() for a in (out.data, x.grad, w.grad, fc.grad)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("spin, pin, lean, gil", [(SPIN_US, 0, 0, 1), (0, 1, 0, 1), (0, 2, 0, 1), (SPIN_US, 2, 0, 1),
                                                 (SPIN_US, 2, 1, 1), (SPIN_US, 2, 1, 0)])
def test_results_are_bit_identical_with_the_switches_on_and_off(dtype, threads, spin, pin, lean, gil, monkeypatch):
    monkeypatch.setattr(cores, "_others_busy", lambda: False)
    with config.num_threads(threads):
        monkeypatch.setattr(dispatch, "POOL_SPIN_US", 0)
        monkeypatch.setattr(dispatch, "POOL_PIN", 0)
        monkeypatch.setattr(dispatch, "POOL_LEAN_JOB", 1 - lean)
        monkeypatch.setattr(dispatch, "POOL_SPIN_GIL", 1 - gil)
        off = _lenet_like(dtype)
        monkeypatch.setattr(dispatch, "POOL_SPIN_US", spin)
        monkeypatch.setattr(dispatch, "POOL_PIN", pin)
        monkeypatch.setattr(dispatch, "POOL_LEAN_JOB", lean)
        monkeypatch.setattr(dispatch, "POOL_SPIN_GIL", gil)
        on = [_lenet_like(dtype) for _ in range(3)]      # back to back: helpers found spinning
        monkeypatch.setattr(dispatch, "POOL_PIN", 0)
        cores.parallel_for(lambda i0, i1: None, 8)      # helpers unpinned again
    for again in on:
        for a, b in zip(off, again):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("lean", [0, 1])
@pytest.mark.parametrize("threads", [2, 3])
def test_every_item_once_and_errors_reraised_in_the_caller(threads, lean, spinning, monkeypatch):
    monkeypatch.setattr(dispatch, "POOL_LEAN_JOB", lean)
    seen = np.zeros(200, int)

    def count(i0, i1, out):
        out[i0:i1] += 1

    def fail(i0, i1):
        if i0 > 0:
            raise ValueError(f"chunk {i0}")

    with config.num_threads(threads):
        for _ in range(20):
            cores.parallel_for(count, 200, seen)
        np.testing.assert_array_equal(seen, 20)
        for _ in range(3):
            with pytest.raises(ValueError, match="chunk"):
                cores.parallel_for(fail, 50)
        cores.parallel_for(count, 200, seen)                # the pool still works after an error
    np.testing.assert_array_equal(seen, 21)


@pytest.mark.parametrize("lean", [0, 1])
def test_the_job_ends_once_on_whichever_thread_finishes_last(lean, monkeypatch):
    """A job drained by two threads: every chunk run once, exactly one thread told it finished the
    last, and ``wait`` returns at once afterwards (the lean job's lock and count, or the Event)."""
    monkeypatch.setattr(dispatch, "POOL_LEAN_JOB", lean)
    seen = np.zeros(40, int)

    def count(i0, i1):
        time.sleep(0.0005)
        seen[i0:i1] += 1

    job = cores._Job(count, cores._chunks(40, 10), (), 1)
    lasts = []
    other = threading.Thread(target=lambda: lasts.append(job.drain()))
    other.start()
    lasts.append(job.drain())
    job.wait()
    other.join()
    job.wait()                                                # a second wait does not block
    np.testing.assert_array_equal(seen, 1)
    assert sorted(lasts) == [False, True]
    assert cores._chunks(40, 10) == [(4 * k, 4 * k + 4) for k in range(10)]
    assert (cores._chunks(40, 10) is cores._chunks(40, 10)) == bool(lean)   # lean: each list made once


@pytest.mark.skipif(sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11),
                    reason="the GIL's flag is looked for on CPython 3.11 only")
def test_the_gil_flag_reads_held_from_python_and_free_from_a_nogil_call():
    flag = cores._gil_word()
    assert flag is not None and flag.shape == (1,)
    assert flag[0] & 0xFFFFFFFF == 1                          # this thread holds the GIL
    assert any(spin.gil_word(flag) == 0 for _ in range(20))   # released while the compiled call runs


def test_other_interpreters_have_no_gil_flag(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 12, 0))
    assert cores._gil_word() is None


def test_a_gil_flag_that_stays_held_does_not_stall_the_spin():
    """The job is there but the GIL never reads free: the spin returns found at its bound."""
    state = np.zeros(32, np.int64)
    state[0] = 5
    held = np.ones(1, np.int64)
    ticks = 10**7                                            # a few milliseconds of cycles
    start = time.perf_counter()
    assert spin.spin_until(state, 0, 5, ticks, 10**15, 16, 8, 0, held, 0) == 1
    assert time.perf_counter() - start < 5.0
    free = np.zeros(1, np.int64)
    assert spin.spin_until(state, 0, 5, ticks, 10**15, 16, 8, 0, free, 0) == 1
    assert spin.spin_until(state, 0, 6, 1000, 10**15, 16, 8, 0, free, 0) == 0    # not posted: times out


def _in_thread(fn, timeout=30.0):
    """Run fn in a thread; fail (instead of hanging the suite) when it does not finish."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"no answer within {timeout} s: a deadlock"
    return result.get("value")


@contextmanager
def _helper_stuck():
    """The pool's helper exists and is stuck in another job until the block ends."""
    cores.parallel_for(lambda i0, i1: None, 8)              # the helper exists
    release = threading.Event()

    class Stuck:
        seq = 0

        def drain(self):
            release.wait()
            return False

    cores._helpers.jobs.put(Stuck())                         # the helper takes it and stays stuck
    time.sleep(0.05)
    try:
        yield
    finally:
        release.set()


def test_a_helper_that_never_comes_does_not_stall_the_caller(spinning):
    """Every helper held up (descheduled, or busy elsewhere): the caller runs all chunks itself."""
    with config.num_threads(2), _helper_stuck():
        ran = []

        def work():
            for _ in range(5):
                cores.parallel_for(lambda i0, i1: ran.append(threading.get_ident()), 8)
            return threading.get_ident()

        caller = _in_thread(work)
    assert len(ran) == 5 * 8 and set(ran) == {caller}


def test_a_slow_helper_chunk_is_waited_for_and_counted_once(spinning):
    seen = np.zeros(8, int)
    main = threading.get_ident()

    def slow(i0, i1):
        if threading.get_ident() != main:
            time.sleep(0.01)                                 # longer than the spin bound
        seen[i0:i1] += 1

    with config.num_threads(2):
        for _ in range(3):
            _in_thread(lambda: cores.parallel_for(slow, 8, per_thread=1))
    np.testing.assert_array_equal(seen, 3)


def test_nested_regions_finish(spinning):
    seen = np.zeros((4, 16), int)

    def inner(j0, j1, row):
        row[j0:j1] += 1

    def outer(i0, i1):
        for i in range(i0, i1):
            cores.parallel_for(inner, 16, seen[i])

    with config.num_threads(3):
        for _ in range(5):
            _in_thread(lambda: cores.parallel_for(outer, 4, per_thread=1))
    np.testing.assert_array_equal(seen, 5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_gets_its_own_spinning_helpers(spinning):
    seen = np.zeros(64, int)

    def count(i0, i1):
        seen[i0:i1] += 1

    with config.num_threads(2):
        cores.parallel_for(count, 64)                        # the parent's helper is spinning now
        pid = os.fork()
        if pid == 0:                                         # pragma: no cover - the child
            try:
                seen[:] = 0
                for _ in range(10):
                    cores.parallel_for(count, 64)
                os._exit(0 if (seen == 10).all() else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _idle_cpu_seconds(interval):
    start = time.process_time()
    time.sleep(interval)
    return time.process_time() - start


def test_an_idle_process_burns_no_cpu_after_the_spin_bound(spinning):
    """Not a speed test: the helpers' spin ends and they sleep (generous bound: a tenth of the interval)."""
    with config.num_threads(2):
        for _ in range(5):
            cores.parallel_for(lambda i0, i1: None, 8)
        time.sleep(SPIN_US * 1e-6 + 0.05)                     # the spin bound has passed
        assert _idle_cpu_seconds(0.5) < 0.05


def test_helpers_do_not_spin_while_blas_owns_the_cores(monkeypatch):
    monkeypatch.setattr(dispatch, "POOL_SPIN_US", 2_000_000)   # two seconds: would show
    monkeypatch.setattr(cores, "_others_busy", lambda: False)
    with config.num_threads(2):
        with cores.blas_threads(2):
            for _ in range(5):
                cores.parallel_for(lambda i0, i1: None, 8)
            # OpenBLAS's own threads spin ~0.1 s after an earlier test's product: let that pass,
            # well inside the two seconds a wrongly spinning helper would burn
            time.sleep(0.25)
            assert _idle_cpu_seconds(0.3) < 0.05
        assert cores._helpers.state[cores._STOP] == 0


def test_pinned_regions_give_the_caller_its_cpus_back(pinning):
    before = os.sched_getaffinity(0)
    seen = {}

    def where(i0, i1):
        time.sleep(0.002)                                    # both threads get chunks
        seen.setdefault(threading.get_ident(), os.sched_getaffinity(0))

    with config.num_threads(2):
        for _ in range(3):
            seen.clear()
            cores.parallel_for(where, 8)
            assert os.sched_getaffinity(0) == before
            mine = seen.pop(threading.get_ident())
            assert len(mine) == 1 and mine <= before           # the caller: one of its CPUs
            for cpus in seen.values():                         # a helper: another one
                assert len(cpus) == 1 and cpus <= before and not cpus & mine


def test_helpers_are_unpinned_when_pinning_stops(pinning, monkeypatch):
    with config.num_threads(2):
        cores.parallel_for(lambda i0, i1: None, 8)
        assert cores._helpers.pinned
        monkeypatch.setattr(cores, "_others_busy", lambda: True)   # a loaded machine: the scheduler places
        cores.parallel_for(lambda i0, i1: None, 8)
    assert not cores._helpers.pinned
    for tid in cores._helpers.tids:
        assert os.sched_getaffinity(tid) == os.sched_getaffinity(0)


def test_a_busy_helper_cpu_does_not_stall_a_pinned_caller(pinning):
    """The helper pinned to a CPU it cannot get (here: stuck in another job): the caller runs every chunk."""
    with config.num_threads(2), _helper_stuck():
        ran = []
        _in_thread(lambda: cores.parallel_for(lambda i0, i1: ran.append(1), 8))
    assert len(ran) == 8


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_child_forked_after_pinned_regions_has_every_cpu(pinning):
    before = os.sched_getaffinity(0)
    with config.num_threads(2):
        cores.parallel_for(lambda i0, i1: None, 8)
        pid = os.fork()
        if pid == 0:                                         # pragma: no cover - the child
            try:
                ok = os.sched_getaffinity(0) == before
                cores.parallel_for(lambda i0, i1: None, 8)
                os._exit(0 if ok and os.sched_getaffinity(0) == before else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_pinning_helpers_only_leaves_the_caller_free(pinning, monkeypatch):
    monkeypatch.setattr(dispatch, "POOL_PIN", 1)
    before = os.sched_getaffinity(0)
    seen = {}

    def where(i0, i1):
        time.sleep(0.002)
        seen.setdefault(threading.get_ident(), os.sched_getaffinity(0))

    with config.num_threads(2):
        cores.parallel_for(where, 8)
    assert seen.pop(threading.get_ident()) == before
    for cpus in seen.values():
        assert len(cpus) == 1 and cpus <= before


def test_helpers_spin_only_when_pinned(spinning, monkeypatch):
    """Unpinned, a helper may share the caller's CPU: it sleeps at once (a spin there was measured slower)."""
    monkeypatch.setattr(dispatch, "POOL_SPIN_US", 2_000_000)
    monkeypatch.setattr(dispatch, "POOL_PIN", 0)
    with config.num_threads(2):
        for _ in range(5):
            cores.parallel_for(lambda i0, i1: None, 8)
        time.sleep(0.05)
        assert _idle_cpu_seconds(0.3) < 0.05
