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

__all__ = ["parallel_for", "blas_threads", "matmul", "matmuls"]


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


def parallel_for(fn, count: int, *args, grain: int = 1, per_thread: int = 4, piece_grain: bool = False) -> None:
    """Run fn(i0, i1, *args) over chunks covering range(count), on up to get_num_threads() threads.

    ``fn`` is a ``nogil`` kernel (or Python that spends its time in such kernels and in
    BLAS, which release the GIL). The calling thread works too and never waits for a
    helper that has not started: if the helpers are busy or descheduled (a loaded
    machine), it takes their chunks itself. Chunks are handed out dynamically,
    ``per_thread`` per thread (four unless said), so a slowed thread takes fewer. Each
    thread gets at least ``grain`` items: waking a helper costs ~20-70 microseconds
    here, more than a small kernel. ``piece_grain``: each chunk too (a chunk with a fixed
    cost of its own, such as a BLAS call).
    """
    threads = min(config.get_num_threads(), count // max(grain, 1))
    if threads <= 1:
        fn(0, count, *args)
        return
    pieces = min(count // max(grain, 1) if piece_grain else count, per_thread * threads)
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


def _matmul_batches(i0, i1, a, b, out):
    np.matmul(a[i0:i1], b[i0:i1], out=out[i0:i1])  # NumPy releases the GIL inside BLAS


def _matmul_columns(j0, j1, a, b, out, step):
    c0, c1 = j0 * step, min(j1 * step, out.shape[-1])
    np.matmul(a, b[..., c0:c1], out=out[..., c0:c1])


def _matmul_rows(i0, i1, a, b, out, step):
    r0, r1 = i0 * step, min(i1 * step, out.shape[-2])
    np.matmul(a[..., r0:r1, :], b, out=out[..., r0:r1, :])


def matmul(a, b, out=None):
    """a @ b (batched over a leading axis like ``xp.matmul``), on the cores' one pool.

    NumPy arrays: products of at most ``dispatch.SMALL_PRODUCT_MACS`` multiply-adds run
    on the calling thread with one BLAS thread. Larger ones are split over the kernel
    pool's threads, each running its share on one BLAS thread: a batch of products
    (3-D a and b with one batch size, at least one per thread) by batch, anything else
    by blocks of the result's columns (or rows, when there are more of those). BLAS's own threads therefore never run (nor spin
    after a call while the kernels run). Other array modules (CuPy) are called as they are.
    """
    if not isinstance(a, np.ndarray):
        return get_array_module(a).matmul(a, b, out=out)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = a.shape[0] if a.ndim == 3 else (b.shape[0] if b.ndim == 3 else 1)
    threads = config.get_num_threads()
    if out is None:
        shape = (batch, m, n) if max(a.ndim, b.ndim) == 3 else (m, n)
        out = np.empty(shape, np.result_type(a, b))
    with blas_threads(1):
        if batch * m * k * n <= dispatch.SMALL_PRODUCT_MACS or threads == 1:
            return np.matmul(a, b, out=out)
        if a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0] and batch >= threads:
            parallel_for(_matmul_batches, batch, a, b, out)
        elif n >= m:
            step = _block_step(n, threads)
            parallel_for(_matmul_columns, -(-n // step), a, b, out, step)
        else:
            step = _block_step(m, threads)
            parallel_for(_matmul_rows, -(-m // step), a, b, out, step)
    return out


def _matmul_pairs(i0, i1, products, outs):
    for k in range(i0, i1):
        np.matmul(*products[k], out=outs[k])  # NumPy releases the GIL inside BLAS


def matmuls(products):
    """[a @ b for (a, b) in products], independent 2-D products run side by side on the pool.

    NumPy arrays: when there are several threads and every product is small enough to run
    on one BLAS thread (``dispatch.SMALL_PRODUCT_MACS``) but has at least
    ``dispatch.PARALLEL_MIN_MACS`` multiply-adds, the products are the work items of one
    parallel region, each on one BLAS thread (a linear layer's gx = gy @ W and gW = gy^T @ x:
    two small products that ``matmul`` would run one after the other on the calling thread).
    Otherwise each goes through ``matmul``. The same BLAS calls either way: the same results.
    """
    products = list(products)
    if not all(isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim == b.ndim == 2
               for a, b in products):
        return [matmul(a, b) for a, b in products]
    macs = [a.shape[0] * a.shape[1] * b.shape[1] for a, b in products]
    threads = config.get_num_threads()
    if (threads == 1 or len(products) < 2 or max(macs) > dispatch.SMALL_PRODUCT_MACS
            or min(macs) < dispatch.PARALLEL_MIN_MACS):
        return [matmul(a, b) for a, b in products]
    outs = [np.empty((a.shape[0], b.shape[1]), np.result_type(a, b)) for a, b in products]
    with blas_threads(1):
        parallel_for(_matmul_pairs, len(products), products, outs, per_thread=1)
    return outs


def _block_step(extent: int, threads: int) -> int:
    """Columns (or rows) per block: at most MATMUL_BLOCK, and the blocks a multiple of the threads.

    A product with fewer than 2 * MATMUL_BLOCK rows (ResNet-18's 256-filter layers at batch
    1) would otherwise be one block on one thread, and 784 columns 256+256+256+16. Extents
    that are a multiple of MATMUL_BLOCK * threads keep blocks of MATMUL_BLOCK.
    """
    blocks = -(-max(-(-extent // dispatch.MATMUL_BLOCK), threads) // threads) * threads
    return -(-extent // blocks)                                       # ceil(extent / blocks)
