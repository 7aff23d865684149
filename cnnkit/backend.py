"""The one place that chooses the array module (NumPy today, CuPy when present).

It also holds the one switch over BLAS's thread pool (``blas_threads``): on a CPU,
cnnkit's compiled kernels (``functional/kernels.py``) and BLAS must not both keep
threads busy on the same cores.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy

try:  # pragma: no cover - exercised only on machines with a GPU
    import cupy  # type: ignore[import-not-found]
except ImportError:  # CPU-only install: every array is a numpy array
    cupy = None

__all__ = ["get_array_module", "as_numpy", "blas_threads"]


def get_array_module(*arrays):
    """Return the module (numpy or cupy) that owns the given arrays."""
    if cupy is not None and any(isinstance(a, cupy.ndarray) for a in arrays):
        return cupy
    return numpy


def as_numpy(array) -> numpy.ndarray:
    """Return a host (NumPy) copy or view of ``array``."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return numpy.asarray(array)



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

    Small matrix products (a LeNet-5 linear layer at batch 64: 64 x 400 x 120) are
    faster on one BLAS thread: waking BLAS's helpers costs more than they save, and
    helpers that spin after the call slow down the kernels that run next. Measured on
    LeNet-5 training (2-core Zen 5): linear layers inside ``blas_threads(1)`` lifted
    cnnkit from 0.73x to 0.90x of PyTorch at batch 64. Costs a few microseconds per use;
    a no-op when threadpoolctl is not installed.
    """
    pools = _blas_controllers()
    previous = [pool.get_num_threads() for pool in pools]
    for pool in pools:
        pool.set_num_threads(count)
    try:
        yield
    finally:
        for pool, n in zip(pools, previous):
            pool.set_num_threads(n)
