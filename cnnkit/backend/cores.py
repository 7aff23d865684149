"""The one owner of the cores: cnnkit's kernel thread pool and the BLAS thread switch.

Two kinds of code keep the CPU's cores busy inside cnnkit: the compiled kernels
(``backend/kernels``), which this module's pool splits over threads (``parallel_for``),
and NumPy's BLAS, which runs matrix products on its own threads. They must never both
be busy at once: with both, the two pools fight for the same cores (LeNet-5 training fell
12x in an early prototype). Both are driven from the calling thread, one call after the
other, so they never overlap by construction; what remains is each pool's idle behaviour:

- the kernel pool's helpers sleep on a queue when idle (nothing spins), so BLAS, other
  processes and the next kernel keep their cores;
- BLAS's threads spin for a while after each multi-threaded call, which slows whatever
  runs next. So matrix products go through ``matmul``, which runs small products (where
  waking BLAS's helpers costs more than they save) on one BLAS thread and the others on
  ``config.get_num_threads()`` threads. The cut is ``dispatch.SMALL_PRODUCT_MACS``.

The number of threads is ``config.get_num_threads()`` (``config.num_threads(n)`` changes
it inside a block; the environment variable CNNKIT_NUM_THREADS sets its initial value).
"""

from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager

import numpy as np

from .. import config
from . import dispatch
from .arrays import get_array_module

__all__ = ["parallel_for", "blas_threads", "matmul"]


class _Job:
    """One kernel call split into chunks [i0, i1) that any thread may take, in order."""

    def __init__(self, fn, chunks, args):
        self.fn, self.args = fn, args
        self.chunks = iter(chunks)  # next() on a list iterator is atomic under the GIL
        self.left = len(chunks)
        self.lock, self.done = threading.Lock(), threading.Event()
        self.error: BaseException | None = None

    def drain(self) -> None:
        for i0, i1 in self.chunks:
            try:
                self.fn(i0, i1, *self.args)
            except BaseException as error:  # re-raised in the calling thread
                self.error = error
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.done.set()


class _Helpers:
    """Daemon threads that sleep on a queue (no spinning) and help drain jobs."""

    def __init__(self):
        self.count, self.jobs = 0, queue.SimpleQueue()
        self.lock = threading.Lock()

    def ensure(self, count: int) -> None:
        """Start helpers until there are at least ``count`` (they are never stopped)."""
        if self.count >= count:
            return
        with self.lock:
            while self.count < count:
                threading.Thread(target=self._serve, daemon=True, name="cnnkit-kernel").start()
                self.count += 1

    def _serve(self) -> None:
        while True:
            self.jobs.get().drain()


_helpers = _Helpers()


def _forget_helpers() -> None:  # a forked child has none of the parent's threads
    global _helpers
    _helpers = _Helpers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


def parallel_for(fn, count: int, *args, grain: int = 1) -> None:
    """Run fn(i0, i1, *args) over chunks covering range(count), on up to get_num_threads() threads.

    ``fn`` is a ``nogil`` kernel. The calling thread works too and never waits for a
    helper that has not started: if the helpers are busy or descheduled (a loaded
    machine), it takes their chunks itself. Chunks are handed out dynamically, four
    per thread, so a slowed thread takes fewer. Each thread gets at least ``grain``
    items: waking a helper costs ~20-70 microseconds here, more than a small kernel.
    """
    threads = min(config.get_num_threads(), count // max(grain, 1))
    if threads <= 1:
        fn(0, count, *args)
        return
    pieces = min(count, 4 * threads)
    bounds = [count * k // pieces for k in range(pieces + 1)]
    job = _Job(fn, list(zip(bounds[:-1], bounds[1:])), args)
    helpers = _helpers
    helpers.ensure(threads - 1)
    for _ in range(threads - 1):
        helpers.jobs.put(job)
    job.drain()
    job.done.wait()
    if job.error is not None:
        raise job.error


_blas_pools = None  # threadpoolctl's controllers of NumPy's BLAS, found on first use


def _blas_controllers():
    global _blas_pools
    if _blas_pools is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # without threadpoolctl BLAS keeps its own thread count
            _blas_pools = []
        else:
            _blas_pools = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_pools


@contextmanager
def blas_threads(count: int):
    """Run the block with NumPy's BLAS limited to ``count`` threads, then restore it.

    Costs ~3.5 microseconds per use (measured); a no-op when threadpoolctl is not installed.
    """
    pools = _blas_controllers()
    previous = [pool.get_num_threads() for pool in pools]
    for pool, n in zip(pools, previous):
        if n != count:
            pool.set_num_threads(count)
    try:
        yield
    finally:
        for pool, n in zip(pools, previous):
            if n != count:
                pool.set_num_threads(n)


def matmul(a, b, out=None):
    """a @ b (batched over leading axes like ``xp.matmul``) with the cores' thread policy.

    NumPy arrays: products of at most ``dispatch.SMALL_PRODUCT_MACS`` multiply-adds run on
    one BLAS thread, larger ones on ``config.get_num_threads()``. Other array modules
    (CuPy) are called as they are.
    """
    if not isinstance(a, np.ndarray):
        return get_array_module(a).matmul(a, b, out=out)
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    batch = max(int(np.prod(a.shape[:-2], dtype=np.int64)), int(np.prod(b.shape[:-2], dtype=np.int64)), 1)
    threads = 1 if batch * m * k * n <= dispatch.SMALL_PRODUCT_MACS else config.get_num_threads()
    with blas_threads(threads):
        return np.matmul(a, b, out=out)
