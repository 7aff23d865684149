"""Dimension arguments, read as PyTorch reads them: ``dim`` / ``dims`` and their NumPy aliases.

A ``dim`` is an int in ``[-ndim, ndim)``; a 0-d tensor accepts ``0`` and ``-1`` (PyTorch
treats it as having one dimension of size 1 for this purpose). Reductions take ``dim``
(an int, a tuple or list, or None for all) and ``keepdim``, and also accept ``axis`` and
``keepdims`` as PyTorch does. Arrays in, ints out: no autograd here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DimensionError

__all__ = ["normalize_dim", "normalize_dims", "reduction_args"]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def normalize_dim(dim, ndim: int, op: str) -> int:
    """Return ``dim`` as an index in ``[0, max(ndim, 1))``.

    Raises:
        TypeError: ``dim`` is not an int.
        DimensionError: ``dim`` is out of range (an IndexError, as PyTorch raises).
    """
    if not _is_int(dim):
        raise TypeError(f"{op} expects dim as an int, got {dim!r}")
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise DimensionError(
            f"{op}: dimension out of range (expected to be in range of [{-size}, {size - 1}], "
            f"but got {dim}) for an input with {ndim} dimensions"
        )
    return int(dim) % size


def normalize_dims(dims, ndim: int, op: str) -> tuple[int, ...]:
    """Return the reduced axes of an array with ``ndim`` dimensions, sorted.

    ``None`` and an empty tuple or list mean every axis (as ``torch.sum(x, dim=())``).
    A 0-d input reduces over no axis (its dims 0 and -1 are accepted and name nothing).

    Raises:
        DimensionError: a dim out of range, or one named twice.
    """
    if dims is None:
        return tuple(range(ndim))
    if _is_int(dims):
        dims = (dims,)
    if not isinstance(dims, Sequence):
        raise TypeError(f"{op} expects dim as an int, a tuple of ints or None, got {dims!r}")
    if len(dims) == 0:
        return tuple(range(ndim))
    axes = [normalize_dim(d, ndim, op) for d in dims]
    if len(set(axes)) != len(axes):
        repeated = next(a for a in axes if axes.count(a) > 1)
        raise DimensionError(f"{op}: dim {repeated} appears more than once in dim={tuple(dims)}")
    if ndim == 0:
        return ()
    return tuple(sorted(axes))


def reduction_args(op: str, dim, keepdim, axis, keepdims) -> tuple[object, bool]:
    """Merge PyTorch's ``dim`` / ``keepdim`` with their NumPy spellings ``axis`` / ``keepdims``.

    Raises:
        TypeError: both spellings of one argument were given.
    """
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op} got both dim={dim!r} and axis={axis!r}; pass one of them")
        dim = axis
    if keepdims is not None:
        if keepdim:
            raise TypeError(f"{op} got both keepdim and keepdims; pass one of them")
        keepdim = keepdims
    return dim, bool(keepdim)
