"""NumPy's BLAS thread count around cnnkit's products (``cores.blas_threads``, ``cores.matmul``).

The rule: while any ``blas_threads`` block is open (in any Python thread), BLAS runs on the
count of the one entered last; when the last closes, BLAS gets back the count it had before
the first opened. So every product cnnkit runs uses one BLAS thread, a block may ask for
several, and NumPy code outside cnnkit sees its own count again, with two Python threads
calling cnnkit at once and in a forked child too.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import cores, dispatch

threadpoolctl = pytest.importorskip("threadpoolctl")
pytestmark = pytest.mark.skipif(not cores._blas_functions()[0], reason="no BLAS library threadpoolctl controls")

USER = 3   # the user's own BLAS count in these tests: neither 1 nor the machine's CPUs


def counts() -> list[int]:
    return [get() for get in cores._blas_functions()[0]]


@pytest.fixture
def user_count():
    with threadpoolctl.threadpool_limits(USER, user_api="blas"):
        assert counts() == [USER] * len(counts())
        yield [USER] * len(counts())
    assert not cores._blas_open


def test_products_use_one_blas_thread_and_the_users_count_comes_back(user_count, rng, monkeypatch):
    seen = []
    split = cores._matmul_columns
    monkeypatch.setattr(cores, "_matmul_columns", lambda *a: seen.append(counts()) or split(*a))
    a, b = rng.standard_normal((64, 96)), rng.standard_normal((96, 300))
    with config.num_threads(2):
        small = cores.matmul(a, b)
        assert counts() == user_count
        monkeypatch.setattr(dispatch, "SMALL_PRODUCT_MACS", 0)   # split over the pool
        large = cores.matmul(a, b)
    assert seen and all(c == [1] * len(user_count) for c in seen)
    assert counts() == user_count
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        np.testing.assert_array_equal(small, a @ b)      # (on 3 BLAS threads the bits may differ)
    np.testing.assert_allclose(large, small, rtol=1e-13, atol=1e-12)   # column blocks: another tiling


def test_a_training_step_leaves_the_users_count(user_count, rng):
    x = Tensor(rng.standard_normal((5, 7)).astype(np.float32))
    w = Tensor(rng.standard_normal((4, 7)).astype(np.float32), requires_grad=True)
    F.linear(x, w).sum().backward()
    assert counts() == user_count


def test_a_block_may_ask_for_several_threads_and_blocks_nest(user_count):
    with cores.blas_threads(2):
        assert counts() == [2] * len(user_count)
        with cores.blas_threads(1):
            assert counts() == [1] * len(user_count)
            cores.matmul(np.ones((3, 3)), np.ones((3, 3)))
            assert counts() == [1] * len(user_count)
        assert counts() == [2] * len(user_count)
        cores.matmul(np.ones((3, 3)), np.ones((3, 3)))         # its own block of 1, then 2 again
        assert counts() == [2] * len(user_count)
    assert counts() == user_count


def test_an_error_inside_a_block_restores_the_count(user_count):
    with pytest.raises(ValueError):
        cores.matmul(np.ones((3, 4)), np.ones((3, 4)))        # shapes do not match: NumPy raises
    assert counts() == user_count
    with pytest.raises(KeyError), cores.blas_threads(1):
        raise KeyError("inside")
    assert counts() == user_count


def _in_thread(fn):
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


@pytest.mark.parametrize("first, second", [(1, 1), (2, 1), (1, 2)])
def test_blocks_of_two_threads_closing_out_of_order(user_count, first, second):
    """Thread A opens, thread B opens, A closes first: B's count stays until B closes too."""
    b_open, a_closed, b_seen = threading.Event(), threading.Event(), []

    def thread_b():
        with cores.blas_threads(second):
            b_open.set()
            a_closed.wait(10)
            b_seen.append(counts())
        b_seen.append(counts())

    with cores.blas_threads(first):
        b = _in_thread(thread_b)
        assert b_open.wait(10)
        assert counts() == [second] * len(user_count)         # the block entered last
    a_closed.set()
    b.join(10)
    assert b_seen == [[second] * len(user_count), user_count]
    assert counts() == user_count


def test_two_threads_calling_matmul_at_once(user_count, rng):
    """Each product on one BLAS thread and the same bits as alone; the user's count after both."""
    pairs = [(rng.standard_normal((40, 50)).astype(np.float32), rng.standard_normal((50, 30)).astype(np.float32))
             for _ in range(2)]
    expected = [np.matmul(a, b) for a, b in pairs]
    errors = []

    def work(k):
        a, b = pairs[k]
        try:
            for _ in range(300):
                np.testing.assert_array_equal(cores.matmul(a, b), expected[k])
                with cores.blas_threads(1):
                    assert counts() == [1] * len(user_count)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    with config.num_threads(1):
        threads = [_in_thread(lambda k=k: work(k)) for k in range(2)]
        for thread in threads:
            thread.join(60)
    assert not errors, errors[0]
    assert counts() == user_count


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_the_users_count_back(user_count):
    """A block another thread held open when the process forked never closes in the child."""
    opened, release = threading.Event(), threading.Event()

    def hold():
        with cores.blas_threads(1):
            opened.set()
            release.wait(10)

    holder = _in_thread(hold)
    assert opened.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code
        ok = counts() == user_count and not cores._blas_open
        cores.matmul(np.ones((3, 3)), np.ones((3, 3)))
        os._exit(0 if ok and counts() == user_count else 1)
    release.set()
    holder.join(10)
    assert os.waitpid(pid, 0)[1] == 0
    assert counts() == user_count


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_keeps_its_own_open_block(user_count):
    """The forking thread's own block stays open in the child, and closing it there leaves
    the pool's no-spin count at 0 (before Dec 5 it went to -1: helpers never spun again)."""
    ok = False
    with cores.blas_threads(2):
        pid = os.fork()
        if pid == 0:
            ok = counts() == [2] * len(user_count) and cores._helpers.state[cores._STOP] == 1
    if pid == 0:  # the child, its block closed: report through the exit code
        try:
            ok = ok and counts() == user_count and cores._helpers.state[cores._STOP] == 0
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert counts() == user_count and cores._helpers.state[cores._STOP] == 0
