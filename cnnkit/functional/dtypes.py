"""Dtypes: PyTorch's promotion rules (``result_type``) and the differentiable cast.

An int tensor times a float32 tensor is float32 (not NumPy's float64), and a 0-d
tensor does not widen a dimensioned tensor of its own kind. Every op that mixes
dtypes (the binary ops, cat, stack) converts its inputs through here.
"""

from __future__ import annotations

from functools import reduce

import numpy as np

from .. import config
from ..function import Function
from ..tensor import Tensor, as_tensor

__all__ = ["cast", "result_type", "as_floating", "to_dtype", "CastOp"]


class CastOp(Function):
    """Change dtype. forward: y = x.astype(dtype);  backward: gx = gy.astype(x.dtype)"""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        self.x_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.x_dtype)


def _category(dtype) -> int:
    return {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}[dtype.kind]


def _promote_types(a, b):
    """PyTorch's promote_types: a higher kind wins outright (int64 with float32 is float32)."""
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def result_type(*arrays) -> np.dtype:
    """The dtype of an elementwise op on ``arrays``, by PyTorch's rules (``torch.result_type``).

    Dimensioned operands decide; 0-d operands (and Python scalars, already made 0-d
    arrays) only count when they are of a higher kind (bool < int < float): a 0-d
    float64 tensor times a float32 matrix is float32, an int matrix times 2.5 is the
    default float dtype.
    """
    dims = [a.dtype for a in arrays if a.ndim]
    zeros = [a.dtype for a in arrays if not a.ndim]
    if not dims:
        return reduce(_promote_types, zeros)
    dim_type = reduce(_promote_types, dims)
    if zeros:
        zero_type = reduce(_promote_types, zeros)
        if _category(zero_type) > _category(dim_type):
            return _promote_types(dim_type, zero_type)
    return dim_type


def to_dtype(t: Tensor, dtype) -> Tensor:
    if t.dtype == dtype:
        return t
    if t.requires_grad or t.creator is not None:  # (a creator without gradient: a mask recorded
        return CastOp(dtype)(t)                   # by config.record_logic, followed as an op)
    return Tensor._wrap(t.data.astype(dtype))


def as_floating(x) -> Tensor:
    """x as a tensor; integer and bool tensors become the default float dtype (as torch.exp)."""
    x = as_tensor(x)
    if x.dtype.kind in "biu":
        return Tensor._wrap(x.data.astype(config.get_default_dtype()))
    return x


def cast(x, dtype) -> Tensor:
    """Convert to ``dtype``; differentiable between floating dtypes, a constant otherwise."""
    x = as_tensor(x)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":  # integer outputs have no gradient, as in PyTorch
        return Tensor._wrap(x.data.astype(dtype))
    return CastOp(dtype)(x)
