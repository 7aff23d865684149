"""The backward pass: every op of a graph once, each before the ops that made its inputs.

``Tensor.backward`` checks its arguments and calls ``run_backward``. The walk is
``graph.op_order`` reversed (iterative: graphs deeper than the recursion limit work); each
op's gradient is the sum of what its consumers sent (a tensor used twice gets both), a leaf
accumulates into ``.grad``, and each op's saved arrays are freed after its backward unless
``retain_graph``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backend.kernels import elementwise
from .graph import op_order

if TYPE_CHECKING:
    from .function import Function
    from .tensor import Tensor

__all__ = ["run_backward", "accumulate_leaf"]


def run_backward(root: Tensor, grad: Any, retain_graph: bool = False) -> None:
    """Send ``grad`` (root's shape, checked by the caller) back through root's graph.

    Raises:
        RuntimeError: an op's graph was freed by an earlier backward, an op returned a
            gradient of the wrong shape, or memory it saved was written in place since.
    """
    if root.creator is None:
        accumulate_leaf(root, grad)
        return

    # Gradients with respect to each op's output, keyed by the op.
    grads: dict[Function, Any] = {root.creator: grad}
    for fn in reversed(op_order([root.creator])):  # each op before the ops that made its inputs
        gy = grads.pop(fn, None)
        if gy is None:  # no path from the root reaches this op's output
            continue
        inputs = fn.inputs
        if inputs is None:
            raise RuntimeError(
                f"backward() through {type(fn).__name__} a second time: its saved arrays "
                "were freed after the first backward; pass retain_graph=True to keep them"
            )
        if fn.output_ref is not None:
            output = fn.output_ref()
            if output is not None and output._retain_grad:
                output.grad = gy if output.grad is None else output.grad + gy
        fn.check_saved()  # memory it saved, written in place since (x[...] = v under no_grad)?
        gxs = fn.backward(gy)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        for x, creator, gx, needed in zip(inputs, fn.input_creators, gxs, fn.needs_input_grad):
            if not needed or gx is None:
                continue
            data = x.data  # (not x.shape, x.dtype: properties, a call each)
            if gx.shape != data.shape:
                raise RuntimeError(
                    f"{type(fn).__name__}.backward returned a gradient of shape {gx.shape} "
                    f"for an input of shape {data.shape}"
                )
            if gx.dtype != data.dtype:  # a mixed-dtype op: each gradient takes its input's dtype
                gx = gx.astype(data.dtype)
            if creator is None:
                accumulate_leaf(x, gx)
            else:  # the op that made x when fn ran (x may have changed in place since)
                previous = grads.get(creator)
                grads[creator] = gx if previous is None else elementwise.add(previous, gx)
        if not retain_graph:
            fn.release()


def accumulate_leaf(x: Tensor, gx) -> None:
    """Add ``gx`` into a leaf's ``.grad`` (the first gradient becomes it)."""
    # Never in place: gx may be an array another op also returned (Add passes gy through).
    x.grad = gx if x.grad is None else x.grad + gx
