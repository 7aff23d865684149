"""A Ctrl-C or SIGTERM that arrives while a finalizer runs is raised just after it, not dropped.

Python prints and drops an exception raised inside ``__del__`` ("Exception ignored in"), and
cnnkit's pooled arrays give their memory back from ``__del__`` thousands of times a training
step: a SIGTERM handled there once let ``cnnkit train --epochs 50`` run to its end with exit 0
(CI, test_resume.py). Each test delivers the signal inside a finalizer on purpose
(``signal.raise_signal`` runs the handler before it returns), then lets ordinary code run.
"""

from __future__ import annotations

import signal
import sys
import time
import weakref

import numpy as np
import pytest

from cnnkit.backend import buffers
from cnnkit.cli.main import _on_signals, _restore_signals
from cnnkit.distributed.stop import StopSignals
from cnnkit.errors import Terminated, raise_from_signal


@pytest.fixture
def unraisable(monkeypatch):
    """What Python dropped from finalizers during the test."""
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: dropped.append(info.exc_type))
    return dropped


@pytest.fixture
def on_usr1():
    """Install a SIGUSR1 handler for the test; the old one is put back."""
    previous = signal.getsignal(signal.SIGUSR1)
    yield lambda handler: signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGUSR1, previous)


class _SignalsWhileCollected:
    """Sends ``signum`` to this process from inside its ``__del__``, then does more work there."""

    def __init__(self, signum: int, log: list):
        self.signum, self.log = signum, log

    def __del__(self):
        signal.raise_signal(self.signum)
        sum(range(1000))
        self.log.append("finalizer ended")


def _ordinary_code(seconds: float = 2.0) -> None:
    time.sleep(seconds)  # a signal interrupts the sleep and its handler raises here


def test_a_plain_raising_handler_loses_the_signal_in_a_finalizer(on_usr1, unraisable):
    """The failure being fixed: the interrupt is dropped and the program goes on."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    on_usr1(handler)
    log = []
    _SignalsWhileCollected(signal.SIGUSR1, log)
    _ordinary_code(0.05)
    assert unraisable == [KeyboardInterrupt] and log == []  # the finalizer did not even finish


def test_raise_from_signal_raises_after_the_finalizer_returns(on_usr1, unraisable):
    on_usr1(lambda signum, frame: raise_from_signal(KeyboardInterrupt("stop"), signum, frame))
    log = []
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt, match="stop"):
        _SignalsWhileCollected(signal.SIGUSR1, log)
        _ordinary_code()
    assert log == ["finalizer ended"] and unraisable == []
    assert time.perf_counter() - start < 1.0  # sent again within ~1 ms, not at the end of the sleep


def test_raise_from_signal_waits_out_a_weakref_finalize_callback(on_usr1, unraisable):
    on_usr1(lambda signum, frame: raise_from_signal(Terminated(), signum, frame))
    log = []

    def callback():
        signal.raise_signal(signal.SIGUSR1)
        log.append("callback ended")

    class Owner:
        pass

    owner = Owner()
    weakref.finalize(owner, callback)
    with pytest.raises(Terminated):
        del owner
        _ordinary_code()
    assert log == ["callback ended"] and unraisable == []


def test_outside_a_finalizer_the_handler_raises_at_once(on_usr1):
    on_usr1(lambda signum, frame: raise_from_signal(KeyboardInterrupt(), signum, frame))
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGUSR1)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_the_command_line_handlers_raise_after_a_pooled_array_returns_its_memory(signum, raised, monkeypatch,
                                                                                 unraisable):
    """What failed in CI: the signal found ``_Lease.__del__`` giving a pooled array's range back."""
    give_back = buffers._pool.give_back
    log = []

    def signalled_give_back(chunk, offset, nbytes):
        signal.raise_signal(signum)
        give_back(chunk, offset, nbytes)
        log.append("range returned")

    monkeypatch.setattr(buffers._pool, "give_back", signalled_give_back)
    monkeypatch.setattr(buffers.dispatch, "BUFFER_POOL", True)
    if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("the command line takes SIGINT over from Python's default handler only")
    live = buffers._pool.live_bytes
    previous = _on_signals()
    try:
        with pytest.raises(raised):
            array = buffers.empty((4 << 20,), np.float32)  # pooled: above the pool's floor
            assert isinstance(array.base, buffers._Lease)
            del array
            _ordinary_code()
    finally:
        _restore_signals(previous)
    assert log == ["range returned"] and unraisable == []
    assert buffers._pool.live_bytes == live  # nothing leaked by the interrupt


def test_a_rank_working_alone_raises_after_the_finalizer(unraisable):
    stop = StopSignals(2)
    if not stop.install():
        pytest.skip("signal handlers can only be installed from the main thread")
    log = []
    try:
        with pytest.raises(Terminated), stop.immediate():
            _SignalsWhileCollected(signal.SIGTERM, log)
            _ordinary_code()
    finally:
        stop.restore()
    assert log == ["finalizer ended"] and unraisable == [] and stop.pending is None
