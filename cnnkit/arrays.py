"""Python data as arrays (``as_array``: Python floats in the default dtype, scalars in an
array's dtype), and ``Size``, the element count that is also PyTorch's ``size()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import config
from .backend import get_array_module
from .errors import DimensionError

__all__ = ["as_array", "Size"]


def as_array(data: Any, dtype=None, like: np.ndarray | None = None) -> np.ndarray:
    """Convert ``data`` to an array; Python floats get the default dtype, arrays keep theirs.

    ``like`` gives the dtype for Python scalars combined with an existing array, so that
    ``x * 2.0`` stays float32 when ``x`` is float32.
    """
    if hasattr(data, "creator") and hasattr(data, "grad"):  # a Tensor (tensor.py imports this module)
        data = data.data
    if dtype is not None:
        xp = get_array_module(data)
        return xp.asarray(data, dtype=dtype)
    if isinstance(data, np.ndarray) or hasattr(data, "__cuda_array_interface__"):
        return data
    if isinstance(data, np.generic):
        if like is not None and like.dtype.kind == "f" and data.dtype.kind in "biuf":
            return np.asarray(data, dtype=like.dtype)  # NumPy scalars are weak too, as in PyTorch
        return np.asarray(data)
    if like is not None and isinstance(data, (int, float, bool)) and like.dtype.kind == "f":
        return np.asarray(data, dtype=like.dtype)
    array = np.asarray(data)
    if array.dtype == np.float64:  # Python floats: use the default dtype, as PyTorch does
        array = array.astype(config.get_default_dtype())
    return array


class Size(int):
    """``Tensor.size``: the element count (NumPy's ``x.size``) that, called, is PyTorch's
    ``x.size(dim=None)``: the shape as a tuple, or the length of dimension ``dim``.

    Both conventions meet in one name, so code written for either reads the same value:
    ``x.view(x.size(0), -1)`` and ``sum(p.size for p in model.parameters())`` both work.
    """

    def __new__(cls, shape: tuple[int, ...]):
        count = 1
        for n in shape:
            count *= n
        self = super().__new__(cls, count)
        self.shape = tuple(shape)
        return self

    def __call__(self, dim=None):
        """The shape (``dim=None``) or the length of dimension ``dim`` (negative counts from the end).

        Raises:
            DimensionError: ``dim`` out of range (a 0-d tensor has no dimension to ask about).
            TypeError: ``dim`` is not an int.
        """
        if dim is None:
            return self.shape
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, (bool, np.bool_)):
            raise TypeError(f"size() expects an int dim, got {dim!r}")
        ndim = len(self.shape)
        if ndim == 0:
            raise DimensionError(f"size({dim}): the tensor is 0-d, it has no dimensions")
        if not -ndim <= dim < ndim:
            raise DimensionError(
                f"size: dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], but got {dim})"
            )
        return self.shape[dim]

    def __repr__(self) -> str:
        return int.__repr__(self)

    def __reduce__(self):
        return int, (int(self),)
