"""In-place assignment ``x[index] = value`` (``Tensor.__setitem__``), with PyTorch's autograd rules.

An op's output is never changed in place in cnnkit; the assignment is an op of its own
(``SetItemOp``, on a copy), after which the tensor ``x`` holds the new value and has that op
as its creator. The ops that read ``x`` before keep the value they read and the op that
made it (``Function.input_creators``), so their gradients stay right. Without a graph to
record (no grad mode, or nothing requiring grad) the assignment writes into ``x``'s array,
as NumPy and PyTorch do, and counts the write (``function.note_write``): a backward through
an op that saved that memory before is then refused, as PyTorch's version counters refuse it.
"""

from __future__ import annotations

import weakref

import numpy as np

from .. import config
from ..function import Function, note_write
from ..tensor import Tensor, as_tensor
from .math import sum_to
from .shape import _integers_first, _unwrap_index

__all__ = ["SetItemOp", "setitem"]


class SetItemOp(Function):
    """The value of ``x[index] = v``, made on a copy of x.

    forward:  y = copy(x); y[index] = v   (v broadcast to the selection, in x's dtype)
    backward: gx = gy with the selection set to 0;  gv = gy[index] summed down to v's shape

    A bool mask index (``x[mask] = v``) is also the op's third input (without gradient), so
    the graph shows where a recorded mask (``config.record_logic``) is used: the ONNX export
    writes the assignment as Where on it.

    Shapes: x, y, gy, gx the same; v and gv broadcast against x[index]; the mask, x's leading dims.
    """

    def __init__(self, index):
        self.index = index

    def forward(self, x, v, mask=None):
        y = x.copy()
        y[self.index] = v
        self.v_shape = v.shape
        return y

    def backward(self, gy):
        gx = gv = None
        if self.needs_input_grad[0]:
            gx = gy.copy()
            gx[self.index] = 0                                        # overwritten: no gradient to the old x
        if self.needs_input_grad[1]:
            gv = sum_to(gy[self.index], self.v_shape)                 # (v's shape)
        return (gx, gv) if len(self.needs_input_grad) == 2 else (gx, gv, None)


def _bool_mask(index) -> Tensor | None:
    """The mask of ``x[mask] = v`` (a bool Tensor or array, alone or in a 1-tuple), else None."""
    if isinstance(index, tuple) and len(index) == 1:
        index = index[0]
    if isinstance(index, Tensor) and index.dtype == np.bool_:
        return index
    if isinstance(index, np.ndarray) and index.dtype == np.bool_ and index.ndim > 0:
        return Tensor._wrap(index)
    return None


def setitem(x: Tensor, index, value) -> None:
    """``x[index] = value``, in place, as PyTorch's ``__setitem__``.

    With grad mode on and ``x`` or ``value`` requiring grad, ``x`` becomes the output of a
    ``SetItemOp`` of its old value and ``value``: gradients reach both (``value``'s summed
    over the positions it filled). Otherwise ``x``'s array is written in place.

    Raises:
        RuntimeError: ``x`` is a leaf that requires grad (a parameter) and grad mode is on,
            as PyTorch: its gradient would describe values it no longer holds. Assign under
            ``cnnkit.no_grad()`` (as an initializer does), or into ``x.clone()``.
        NotImplementedError: an index that mixes integers and advanced entries around a
            slice (``x[0, :, [0, 2]] = v``), where PyTorch's order differs from NumPy's.
    """
    mask = _bool_mask(index)
    index = _unwrap_index(index)
    if _integers_first(index) is not None:
        raise NotImplementedError(f"Tensor.__setitem__ does not take an index that mixes integers and index arrays "
                                  f"around a slice (PyTorch's order differs from NumPy's there), got {index!r}; "
                                  "index in two steps")
    v = value if isinstance(value, Tensor) else as_tensor(value, like=x.data)
    if not (config.is_grad_enabled() and (x.requires_grad or v.requires_grad)):
        x.data[index] = v.data                                        # a read-only array refuses, naming itself
        note_write(x.data)                                            # an op may have saved this memory
        return
    if x.creator is None and x.requires_grad:
        raise RuntimeError(
            f"x[...] = value on a leaf tensor that requires grad (shape {x.shape}), as PyTorch refuses: its "
            "gradient would describe values it no longer holds; assign under cnnkit.no_grad(), or into x.clone()"
        )
    old = Tensor._wrap(x.data)                                        # the value before, as the op's input
    old.creator, old.requires_grad = x.creator, x.requires_grad
    if old.creator is not None:  # the op that made the old value now points at it (graph.value_at)
        old.creator.output_ref = weakref.ref(old)
    y = SetItemOp(index)(old, v) if mask is None else SetItemOp(index)(old, v, mask)
    x.data, x.creator, x.requires_grad = y.data, y.creator, True
    y.creator.output_ref = weakref.ref(x)
