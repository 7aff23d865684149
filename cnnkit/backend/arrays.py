"""The one place that chooses the array module (NumPy today, CuPy when present)."""

from __future__ import annotations

import numpy

try:  # pragma: no cover - exercised only on machines with a GPU
    import cupy  # type: ignore[import-not-found]
except ImportError:  # CPU-only install: every array is a numpy array
    cupy = None

__all__ = ["get_array_module", "as_numpy"]


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
