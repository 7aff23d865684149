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

__all__ = ["sgd_step"]

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


def sgd_step(w, g, b, lr: float, momentum: float, keep: float, weight_decay: float, nesterov: bool,
             maximize: bool, first: bool) -> bool:
    """One SGD step of parameter array ``w`` in place, and of its momentum buffer ``b`` (None
    without momentum); keep = 1 - dampening. False, doing nothing, where the kernel does not
    apply (the caller then runs the NumPy update): arrays that are not NumPy float32/float64
    of one shape, dtype and gap-free layout, kernels off (``config.kernels``) or
    ``dispatch.SGD_KERNEL`` 0.

    Called once per parameter per step (LeNet-5: ten times), so the checks are plain
    attribute tests; arrays below two grains of elements run on the calling thread.
    """
    if not (type(w) is np.ndarray and type(g) is np.ndarray and w.dtype.char in "fd" and g.dtype == w.dtype
            and g.shape == w.shape and g.strides == w.strides and w.flags.writeable and AVAILABLE
            and dispatch.SGD_KERNEL and config.kernels_enabled()):
        return False
    if b is not None and not (type(b) is np.ndarray and b.dtype == w.dtype and b.shape == w.shape
                              and b.strides == w.strides and b.flags.writeable):
        return False
    if w.flags.c_contiguous:   # then so are g and b (the same shape and strides)
        fw, fg = w.reshape(-1), g.reshape(-1)
        fb = fw if b is None else b.reshape(-1)
    else:
        fw, fg = flat(w), flat(g)
        fb = fw if b is None else flat(b)
        if fw is None or fg is None or fb is None:
            return False
    n = w.size
    if n < 2 * dispatch.PARALLEL_MIN_ELEMENTS:
        sgd_update(0, n, fw, fg, fb, lr, momentum, keep, weight_decay, nesterov, maximize, first)
    else:
        parallel_for(sgd_update, n, fw, fg, fb, lr, momentum, keep, weight_decay, nesterov, maximize, first,
                     grain=dispatch.PARALLEL_MIN_ELEMENTS)
    return True
