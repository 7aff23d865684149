"""Optimizer updates (numba): SGD's step for one parameter in one pass, PyTorch's roundings.

``torch.optim.SGD`` (its per-tensor loop, the default on the CPU) updates with
``add_(other, alpha=a)``, which its CPU kernel computes as one fused multiply-add,
``fma(other, a, self)``: one rounding where ``self + a * other`` in NumPy takes two. The kernel
below makes the same fused steps in the same order, so a parameter follows PyTorch bit for
bit, float32 and float64 (tests/optim/test_sgd_kernel.py), where the NumPy update
(``optim/sgd.py``, the reference path: kernels off, CuPy) agrees to the last bits of
rounding. One read of p, g and the momentum buffer and one write of p and the buffer per
element, instead of one NumPy pass per term.
"""

from __future__ import annotations

import numpy as np

from ... import config
from .. import dispatch
from ..cores import parallel_for
from . import AVAILABLE, flat, njit

__all__ = ["sgd_step", "sgd_kernel_on"]

if AVAILABLE:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def _fma(typingctx, a, b, c):
        """a * b + c rounded once (LLVM's llvm.fma: one vfmadd instruction here)."""
        if not (a == b == c) or a not in (types.float32, types.float64):
            return None

        def codegen(context, builder, signature, args):
            lt = context.get_value_type(signature.return_type)
            name = "llvm.fma.f32" if lt == ir.FloatType() else "llvm.fma.f64"
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lt, [lt, lt, lt]), name)
            return builder.call(fn, args)

        return a(a, b, c), codegen
else:  # pragma: no cover - without numba sgd_step is never called

    def _fma(a, b, c):
        return a * b + c


@njit(cache=True, nogil=True)
def sgd_update(i0, i1, w, g, b, lr, momentum, keep, weight_decay, nesterov, maximize, first):
    """One SGD step over flat elements i0..i1-1 of parameter w, gradient g, momentum buffer b.

    As torch.optim.SGD: d = -g if maximize else g; d = fma(w, weight_decay, d) if weight_decay;
    with momentum: b = d on the first step, else b = fma(d, keep, b * momentum)
    (keep = 1 - dampening); d = fma(b, momentum, d) if nesterov else b; w = fma(d, -lr, w).
    The scalars arrive as Python floats and are rounded to w's dtype first, as PyTorch's
    kernels take them. With momentum 0, b is not touched (any array may be passed).
    """
    t = w.dtype.type
    lr_, m, k, wd = t(-lr), t(momentum), t(keep), t(weight_decay)
    ws, gs, bs = w[i0:i1], g[i0:i1], b[i0:i1]  # 0-based loops: no index wraparound
    use_momentum = momentum != 0.0
    for i in range(i1 - i0):
        d = -gs[i] if maximize else gs[i]
        if weight_decay != 0.0:
            d = _fma(ws[i], wd, d)
        if use_momentum:
            v = d if first else _fma(d, k, bs[i] * m)
            bs[i] = v
            d = _fma(v, m, d) if nesterov else v
        ws[i] = _fma(d, lr_, ws[i])


def sgd_kernel_on() -> bool:
    """True when ``sgd_step`` may run the kernel at all: numba present, kernels on
    (``config.kernels``), ``dispatch.SGD_KERNEL`` 1. (Read once per parameter group.)"""
    return AVAILABLE and bool(dispatch.SGD_KERNEL) and config.kernels_enabled()


def sgd_step(w, g, b, lr: float, momentum: float, keep: float, weight_decay: float, nesterov: bool,
             maximize: bool, first: bool, on: bool | None = None) -> bool:
    """One SGD step of parameter array ``w`` in place, and of its momentum buffer ``b`` (None
    without momentum); keep = 1 - dampening. False, doing nothing, where the kernel does not
    apply (the caller then runs the NumPy update): arrays that are not NumPy float32/float64
    of one shape, dtype and gap-free layout, kernels off (``config.kernels``) or
    ``dispatch.SGD_KERNEL`` 0 (``on``: ``sgd_kernel_on()`` read by the caller for a group).

    Called once per parameter per step (LeNet-5: ten times), so the checks are plain
    attribute tests, each attribute read once; arrays below two grains of elements run on
    the calling thread.
    """
    if not (sgd_kernel_on() if on is None else on) or type(w) is not np.ndarray or type(g) is not np.ndarray:
        return False
    dtype, shape, strides = w.dtype, w.shape, w.strides
    if (dtype.char not in "fd" or g.dtype != dtype or g.shape != shape or g.strides != strides
            or not w.flags.writeable):
        return False
    if b is not None and (type(b) is not np.ndarray or b.dtype != dtype or b.shape != shape
                          or b.strides != strides or not b.flags.writeable):
        return False
    if w.flags.c_contiguous:   # then so are g and b (the same shape and strides)
        fw, fg = w.reshape(-1), g.reshape(-1)
        fb = fw if b is None else b.reshape(-1)
    else:
        fw, fg = flat(w), flat(g)
        fb = fw if b is None else flat(b)
        if fw is None or fg is None or fb is None:
            return False
    n = fw.size
    if n < 2 * dispatch.PARALLEL_MIN_ELEMENTS:
        sgd_update(0, n, fw, fg, fb, lr, momentum, keep, weight_decay, nesterov, maximize, first)
    else:
        parallel_for(sgd_update, n, fw, fg, fb, lr, momentum, keep, weight_decay, nesterov, maximize, first,
                     grain=dispatch.PARALLEL_MIN_ELEMENTS)
    return True
