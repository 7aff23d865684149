"""Function: the base of every differentiable op.

The contract, for an op ``class FooOp(Function)``:

- ``__init__`` takes the op's non-tensor arguments (stride, axis, ...).
- ``forward(*arrays)`` receives the inputs' arrays and returns one output array. It
  may read ``self.xp`` (numpy or cupy, chosen from the inputs), ``self.needs_input_grad``
  (one bool per input) and ``self.saves_for_backward`` (False under ``no_grad`` or when
  no input requires grad: skip saving then). It saves, by name, only what ``backward``
  reads.
- ``backward(gy)`` receives the gradient of the output and returns one gradient array
  per input (a tuple, or a single array for one input), each of its input's shape;
  ``None`` for an input whose ``needs_input_grad`` is False.

``Function.__call__`` converts inputs, runs ``forward`` and, when grad mode is on and an
input requires grad, records the op as the output's ``creator``.

Writes into memory an op saved for backward: an assignment without a graph
(``with no_grad(): w[0] = 0``, ``functional/setitem.py``) changes the array in place, so a
backward through an op that saved it would silently use the new values. PyTorch refuses
that backward through version counters; cnnkit counts such writes per memory block (the
array that owns the memory, so views and ``detach()`` count too: ``note_write``, which keeps
each block's number of the last write of all), and, once any write happened, each recorded op
notes the number of writes so far (one integer: nothing per input, so a training loop whose
optimizer counts its writes pays no more per op). Before its backward runs, ``check_saved``
raises if a block it read was written since and the op saved an array inside that block (an
op that saved nothing of it, like Add, is fine).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy

from . import config
from .backend import dispatch, get_array_module
from .tensor import Tensor, as_tensor

__all__ = ["Function", "op_name", "note_write"]

# id(memory-owning array) -> the number of the last in-place write into it, counted over all
# arrays (entries leave with the array); _count: the writes so far
_writes: dict[int, int] = {}
_count = 0
# attributes of the engine, not arrays an op saved for its backward
_NO_GRADS = tuple((False,) * n for n in range(8))  # needs_input_grad of n inputs under no_grad
_grad_mode = config._grad_mode  # read directly by Function.__call__ (config.is_grad_enabled's state)
_ENGINE_ATTRIBUTES = frozenset({"inputs", "input_creators", "needs_input_grad", "saves_for_backward", "output_ref",
                                "xp", "write_count"})


def _owner(array):
    """The array that owns ``array``'s memory (itself, or the base of a view; a device array
    is its own owner: its views are not followed)."""
    while isinstance(array, numpy.ndarray) and isinstance(array.base, numpy.ndarray):
        array = array.base
    return array


def note_write(*arrays) -> None:
    """Count an in-place write into each array's memory (checked by ``Function.check_saved``):
    one number per array, in order (an optimizer's step passes its parameters in one call)."""
    global _count
    for array in arrays:
        owner = _owner(array)
        key = id(owner)
        if key not in _writes:
            weakref.finalize(owner, _writes.pop, key, None)
        _count += 1
        _writes[key] = _count


class Function:
    """Base class of differentiable ops: subclass it and write ``forward`` and ``backward``."""

    inputs: list[Tensor] | None = None
    input_creators: tuple[Function | None, ...] = ()
    needs_input_grad: tuple[bool, ...] = ()
    saves_for_backward: bool = False
    output_ref: weakref.ref | None = None
    xp: Any = None

    def __call__(self, *inputs: Any) -> Tensor:
        # Plain loops, not comprehensions: this runs once per op (~30 times per LeNet-5 step),
        # and each comprehension is a call of its own.
        if not _grad_mode.enabled and dispatch.NO_GRAD_DIRECT:  # nothing records (no_grad): no graph to consider
            arrays = []
            for x in inputs:
                if not isinstance(x, Tensor):
                    break
                arrays.append(x.data)
            else:
                self.xp = get_array_module(*arrays)
                self.saves_for_backward = False
                self.needs_input_grad = _NO_GRADS[len(arrays)] if len(arrays) < 8 else (False,) * len(arrays)
                result = self.forward(*arrays)
                if isinstance(result, numpy.generic):
                    result = numpy.asarray(result)
                return Tensor._wrap(result)
        tensors = list(inputs)
        for x in inputs:
            if not isinstance(x, Tensor):  # Python or NumPy data: a constant, typed like the first tensor
                like = next((t.data for t in inputs if isinstance(t, Tensor)), None)
                tensors = [as_tensor(t, like=like) for t in inputs]
                break
        arrays = [t.data for t in tensors]
        self.xp = get_array_module(*arrays)
        # Inside config.record_logic, a mask computed by a recorded comparison (a creator,
        # no gradient) is followed too, so the graph shows what the mask became.
        record = False
        if config.is_grad_enabled():
            logic = config.is_logic_recorded()
            for t in tensors:
                if t.requires_grad or (logic and t.creator is not None):
                    record = True
                    break
        self.saves_for_backward = record
        self.needs_input_grad = tuple([t.requires_grad for t in tensors]) if record else (False,) * len(tensors)
        result = self.forward(*arrays)
        if isinstance(result, numpy.generic):  # NumPy reductions of 0-d arrays give scalars
            result = numpy.asarray(result)
        output = Tensor._wrap(result)
        if record:
            self.inputs = tensors
            # The op that made each input, now: an input changed in place later (x[mask] = v)
            # gets a new creator, but this op read the value the old one made.
            self.input_creators = tuple([t.creator for t in tensors])
            self.output_ref = weakref.ref(output)
            output.requires_grad = True
            output.creator = self
            if _writes:  # some memory was written in place: a later write has a higher number
                self.write_count = _count
        return output

    def check_saved(self) -> None:
        """Raise if memory this op read was written in place since it ran and it saved an array
        there for ``backward`` (PyTorch's "modified by an inplace operation" refusal).

        Called by ``Tensor.backward`` before ``backward``. Free until some in-place write happened.
        """
        if not _writes:
            return
        # without write_count, no block had been written when this op ran: every entry is later
        since = self.__dict__.get("write_count", 0)
        if since == _count:  # nothing written since this op ran (a training step's backward)
            return
        output = self.output_ref() if self.output_ref is not None else None
        places = [(f"input {k}", t) for k, t in enumerate(self.inputs)] + [("its output", output)]
        for where, t in places:
            if t is None:
                continue
            owner = _owner(t.data)
            if _writes.get(id(owner), 0) <= since:
                continue
            saved = [a for key, v in self.__dict__.items() if key not in _ENGINE_ATTRIBUTES
                     for a in (v if isinstance(v, (tuple, list)) else (v,)) if isinstance(a, numpy.ndarray)]
            if any(numpy.may_share_memory(a, owner) for a in saved):
                name = op_name(self)
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: {where} of {name} (shape {t.shape}), which {name} saved for its backward, was "
                    f"written in place after {name} ran (x[...] = v without a graph), so its gradient would use "
                    "the new values; write into a clone (x.clone()) or before the forward, as PyTorch requires"
                )

    def forward(self, *xs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, gy: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def release(self) -> None:
        """Free the arrays saved for backward and the links to the inputs.

        Called by ``Tensor.backward`` after this op's backward unless ``retain_graph``;
        a second backward through a released op raises ``RuntimeError``.
        """
        name = type(self).__name__
        self.__dict__.clear()
        self.released_name = name
        self.inputs = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def op_name(fn: Function) -> str:
    """The name of the op ``fn`` computes: its class's ancestor right below ``Function``.

    An op with several algorithms is a ``Function`` subclass stating the math, and each
    algorithm subclasses it (``Conv2dIm2colOp`` and ``Conv2dDirectOp`` are both
    ``"Conv2dOp"``); graphs, pruning and export name the op, not the algorithm.
    """
    ops = [c for c in type(fn).__mro__ if c is not Function and issubclass(c, Function)]
    return ops[-1].__name__ if ops else type(fn).__name__
