"""Elementwise kernels (numba): ReLU forward with its mask, and its backward, in one pass each;
the sum of two arrays of one layout; the error function erf (NumPy has none; GELU needs it).

Exact: the same values, NaN and inf behaviour as the NumPy reference (``ReLUOp``).
"""

from __future__ import annotations

import math

import numpy as np

from .. import buffers, dispatch
from ..cores import parallel_for
from . import FLOATS, flat, njit

__all__ = ["relu_with_mask", "relu_only", "relu_grad", "add", "erf"]


@njit(cache=True, nogil=True)
def relu_forward(i0, i1, x, y, mask):
    """y = max(x, 0) and mask = not (y <= 0) over flat elements i0..i1-1, in one pass.

    A NaN passes through to y (NumPy's maximum) and gets mask 1: its gradient passes,
    as PyTorch's threshold_backward. mask is uint8 (a bool array's bytes).
    """
    zero = np.zeros(1, x.dtype)[0]
    xs, ys, ms = x[i0:i1], y[i0:i1], mask[i0:i1]  # 0-based loops: no index wraparound
    for i in range(i1 - i0):
        v = xs[i]
        kept = v > zero or v != v
        ys[i] = v if kept else zero
        ms[i] = 1 if kept else 0


@njit(cache=True, nogil=True)
def relu_forward_only(i0, i1, x, y):
    """y = max(x, 0) over flat elements i0..i1-1 (relu_forward without the mask: inference)."""
    zero = np.zeros(1, x.dtype)[0]
    xs, ys = x[i0:i1], y[i0:i1]
    for i in range(i1 - i0):
        v = xs[i]
        ys[i] = v if (v > zero or v != v) else zero


@njit(cache=True, nogil=True)
def relu_backward(i0, i1, gy, mask, gx):
    """gx = gy where mask (uint8, or ReLU's output: nonzero there), else 0, over flat elements
    i0..i1-1 (a select, as the reference:
    an inf or NaN upstream gradient where the input was <= 0 gives 0, as PyTorch)."""
    gs, ms, xs = gy[i0:i1], mask[i0:i1], gx[i0:i1]
    zero = np.zeros(1, gx.dtype)[0]
    for i in range(i1 - i0):
        xs[i] = gs[i] if ms[i] else zero


@njit(cache=True, nogil=True)
def add_forward(i0, i1, a, b, y):
    """y = a + b over flat elements i0..i1-1 (IEEE sums: NumPy's, bit for bit)."""
    as_, bs, ys = a[i0:i1], b[i0:i1], y[i0:i1]
    for i in range(i1 - i0):
        ys[i] = as_[i] + bs[i]


@njit(cache=True, nogil=True)
def erf_forward(i0, i1, x, y):
    """y = erf(x) over flat elements i0..i1-1 (C's erf / erff: NaN in, NaN out; erf(+-inf) = +-1)."""
    xs, ys = x[i0:i1], y[i0:i1]
    for i in range(i1 - i0):
        ys[i] = math.erf(xs[i])


# ---------------------------------------------------------------------------------------
# Array plumbing called by ReLUOp. Pure Python.
# ---------------------------------------------------------------------------------------


def relu_with_mask(x):
    """(y, mask) of ReLU: y like x (same memory layout), mask a bool array like x."""
    y, mask = buffers.empty_like(x), buffers.empty_like(x, dtype=np.bool_)
    parallel_for(relu_forward, x.size, flat(x), flat(y), flat(mask).view(np.uint8),
                 grain=dispatch.PARALLEL_MIN_ELEMENTS)
    return y, mask


def relu_only(x, training: bool = False):
    """ReLU's y alone: y like x (same memory layout). Without a gradient to come each thread
    gets ``dispatch.inference_grain()`` elements; ``training`` (y kept as the mask: ``ReLUOp``)
    PARALLEL_MIN_ELEMENTS, as the pass with the mask."""
    y = buffers.empty_like(x)
    grain = dispatch.PARALLEL_MIN_ELEMENTS if training else dispatch.inference_grain()
    parallel_for(relu_forward_only, x.size, flat(x), flat(y), grain=grain)
    return y


def relu_grad(gy, mask):
    """gy where mask, else 0, in one parallel pass, laid out as the mask (the forward's x);
    None where the kernel does not apply (small arrays, other dtypes). ``mask`` is a bool
    array or ReLU's output y (nonzero exactly where the mask is set: ``ReLUOp``).

    A gy of another layout (the gradient of a branch that ends in a C-order op, next to a
    forward in the direct convolution's layout) or with gaps is first copied into the mask's
    layout (NumPy's copy), and the pass reads that copy: a select over two layouts at once
    would read one of them out of order. (Not in place: on overlapping input and output
    the compiled loop takes its scalar branch, 3x slower.)
    """
    if not (isinstance(gy, np.ndarray) and gy.size >= dispatch.ELEMENTWISE_MIN_SIZE and gy.dtype in FLOATS):
        return None
    m = flat(mask)
    if m is None:
        return None
    layout = mask.strides if mask.itemsize == gy.itemsize else tuple(st // mask.itemsize * gy.itemsize
                                                                     for st in mask.strides)
    g = flat(gy) if gy.strides == layout else None
    if g is None:
        copy = buffers.empty_like(mask, dtype=gy.dtype)
        np.copyto(copy, gy)
        g = flat(copy)
    gx = buffers.empty_like(mask, dtype=gy.dtype)
    out = flat(gx)
    keep = m.view(np.uint8) if m.dtype == np.bool_ else m
    parallel_for(relu_backward, gy.size, g, keep, out, grain=dispatch.PARALLEL_MIN_ELEMENTS)
    return gx


def add(a, b):
    """``a + b``: one parallel pass into pooled memory laid out as ``a`` when a and b are
    large float NumPy arrays of one shape, dtype and gap-free layout (ResNet's shortcut sums
    and the gradients the backward pass accumulates); anything else as ``buffers.add``."""
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.shape == b.shape and a.dtype == b.dtype
            and a.strides == b.strides and a.size >= dispatch.ELEMENTWISE_MIN_SIZE
            and dispatch.kernels_usable(np, a.dtype) and a.dtype in FLOATS):
        fa, fb = flat(a), flat(b)
        if fa is not None and fb is not None:
            y = buffers.empty_like(a)
            parallel_for(add_forward, a.size, fa, fb, flat(y), grain=dispatch.PARALLEL_MIN_ELEMENTS)
            return y
    return buffers.add(a, b)


def erf(x):
    """The error function of a float array, elementwise, in its dtype.

    One parallel pass of the compiled kernel; where kernels are off (``config``) or numba is
    missing, Python's ``math.erf`` per element (the same C function, slower).
    """
    x = np.asarray(x)
    if not x.flags.c_contiguous:
        x = np.copy(x, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    if not dispatch.kernels_usable(np, x.dtype):
        return np.vectorize(math.erf, otypes=[x.dtype])(x).astype(x.dtype, copy=False)
    y = np.empty_like(x)
    if x.size:
        parallel_for(erf_forward, x.size, x.reshape(-1), y.reshape(-1), grain=dispatch.PARALLEL_MIN_ELEMENTS)
    return y
