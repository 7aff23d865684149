"""ReLU and 2x2 max pooling computed ahead, inside the convolution before them.

An eager op runs before anything knows what will consume its output, so the ReLU and the 2x2/2
max pooling after a convolution (LeNet-5's ``F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2)``) ran as
passes of their own after the convolution's parallel region, on one thread. A training loop
repeats the chain every step with the same weight array, so the chain is remembered per weight
array:

1. A blocked direct convolution (``Conv2dDirectOp``, recording a graph) whose output went, last
   time, to a ReLU and then straight to a 2x2/2 max pooling computes both in its own region, each
   thread on the images it has just written (``conv_blocked.conv2d_blocked``'s ``relu_pool``,
   ``pool.relu_max_pool_2x2_images``: the same kernels on the same planes, so the same bits).
2. ``ReLUOp`` called with exactly that convolution's output array, with nothing written in place
   since (``function.note_write``'s count), returns the ReLU output computed ahead (and keeps it
   as its mask, as it would); ``MaxPool2dFusedOp`` called with exactly that ReLU output returns the
   pooling computed ahead. Anything else and they compute as always; a guess that was computed
   and not taken is forgotten. The graph, the ops and their backwards are the same as without this.
3. Where no guess exists, the ReLU and the pooling note that they consumed the convolution's
   output in this order, and the next call of the convolution (same weight array) computes ahead.

Only where the ReLU keeps its output as its mask (``dispatch.relu_keeps_output``, its kernel
path) and the map's height and width are even. Per thread (a ``threading.local``); the
convolution's and the ReLU's outputs are held by weak references, what was computed ahead until
it is taken or the next convolution runs. ``dispatch.FUSE_RELU_MAX_POOL_INTO_CONV`` = 0: never
(A/B runs). docs/performance.md, "ReLU and max pooling inside the convolution's forward region
(Dec 6)".
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from .. import function
from ..backend import buffers, dispatch
from ..backend.kernels import pool as pool_kernels

__all__ = ["relu_pool_plan", "note_conv", "relu_output", "pooled_output"]

# id(weight array) -> weakref to it: a convolution with this weight was followed by ReLU -> 2x2 pool
_followed: dict[int, weakref.ref] = {}
_watched: set[int] = set()   # the keys whose weight array has a finalizer that removes them
_local = threading.local()


class _Ahead:
    """The last convolution's output on this thread (a weak reference: the graph holds it) and
    what was computed ahead from it (held until taken, or until the next convolution)."""

    __slots__ = ("key", "weight", "conv_out", "relu_out", "pooled", "writes")

    def __init__(self, key, weight, conv_out, relu_out, pooled):
        self.key, self.weight, self.conv_out = key, weight, conv_out       # weakrefs
        self.relu_out, self.pooled = relu_out, pooled   # arrays computed ahead, or None
        self.writes = function._count


def relu_pool_plan(w):
    """The ``relu_pool`` argument of ``conv_blocked.conv2d_blocked`` for a convolution with weight
    array ``w`` (recording a graph): None without a guess, else a function of its output y
    (F, N, H, W) giving the epilogue's arguments (or None where it does not apply) and keeping
    the arrays it will write for ``note_conv``."""
    previous = getattr(_local, "ahead", None)
    if previous is not None:   # the last convolution's results were not taken
        _local.ahead = None
        _forget(previous)
    ref = _followed.get(id(w))
    if not dispatch.FUSE_RELU_MAX_POOL_INTO_CONV or ref is None or ref() is not w:
        return None
    made = {}

    def plan(y):
        F, N, H, W = y.shape
        out = y.transpose(1, 0, 2, 3)                                  # (N, F, H, W): the op's output
        if (H % 2 or W % 2 or not y.flags.c_contiguous or not dispatch.relu_kernel_applies(np, out)
                or not dispatch.relu_keeps_output(out)):
            return None
        relu_out = buffers.empty((F, N, H, W), y.dtype).transpose(1, 0, 2, 3)  # (N, F, H, W), y's memory order
        made["relu_out"] = relu_out
        made["pooled"], args = pool_kernels.relu_max_pool_2x2_plan(y, relu_out)
        return args

    plan.made = made
    return plan


def note_conv(w, out, plan, ran: bool) -> None:
    """Remember a convolution's output ``out`` (the op's (N, F, H, W) result) for the ReLU that may
    follow, with what ``plan`` had computed ahead if ``ran``."""
    made = plan.made if ran else {}
    _local.ahead = _Ahead(id(w), weakref.ref(w), weakref.ref(out), made.get("relu_out"), made.get("pooled"))


def _unwatch(key: int) -> None:
    """The weight array with this id is gone: forget its guess."""
    _followed.pop(key, None)
    _watched.discard(key)


def _forget(ahead: _Ahead) -> None:
    """Drop a guess that was computed ahead and not taken."""
    if ahead.pooled is not None:
        _followed.pop(ahead.key, None)


def relu_output(x, compute):
    """ReLU's output for x (``ReLUOp`` recording a graph, on its kernel path keeping y as the mask):
    the one computed ahead if x is the last convolution's output on this thread, unwritten since,
    else compute(x)."""
    ahead = getattr(_local, "ahead", None)
    if ahead is None or ahead.conv_out is None or ahead.conv_out() is not x or ahead.writes != function._count:
        if ahead is not None:
            _local.ahead = None
            _forget(ahead)
        return compute(x)
    y = ahead.relu_out if ahead.relu_out is not None else compute(x)
    ahead.conv_out, ahead.relu_out = None, weakref.ref(y)     # now waiting for the pooling of y
    return y


def pooled_output(x, is_2x2: bool, out_hw):
    """(y, arg, order) of a 2x2/2 max pooling of x computed ahead, or None (compute it).

    x must be the ReLU output ``relu_output`` just gave, unwritten since; without a guess the
    convolution's weight is remembered for the next call (``is_2x2``: kernel 2, stride 2, no
    padding or dilation; out_hw its output size)."""
    ahead = getattr(_local, "ahead", None)
    if ahead is None:
        return None
    _local.ahead = None
    H, W = x.shape[2:]
    if (ahead.conv_out is not None or ahead.relu_out is None or ahead.relu_out() is not x
            or ahead.writes != function._count
            or not is_2x2 or tuple(out_hw) != (H // 2, W // 2)):
        _forget(ahead)
        return None
    if ahead.pooled is None:   # no guess was made: make it for the next call
        weight = ahead.weight()
        if weight is not None and dispatch.FUSE_RELU_MAX_POOL_INTO_CONV:
            if ahead.key not in _watched:   # one finalizer per weight array, however often relearned
                _watched.add(ahead.key)
                weakref.finalize(weight, _unwatch, ahead.key)
            _followed[ahead.key] = ahead.weight
        return None
    return ahead.pooled
