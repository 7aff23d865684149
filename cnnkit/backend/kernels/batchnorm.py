"""Batch normalization of (N, C, H, W) activations in a few passes per channel (numba).

NumPy's batch norm makes a full pass over the activation for every elementwise step
(mean, x - mu, its square, its mean, x_hat, the scale, the shift: seven arrays, four of
them new) and keeps x_hat for backward. These kernels take one channel at a time: its
N*H*W values (at most a few hundred KB in the networks measured) stay in cache between
the passes, so each direction reads the activation (and gradient) once from memory and
writes one array:

- training forward: mean (pass 1), variance about the mean (pass 2, the two-pass
  formula NumPy's reference uses), y = x*scale + shift (pass 3);
- eval forward: y = x*scale + shift, per plane;
- backward: sums of gy and gy*x_hat (pass 1, x_hat recomputed from x), then
  gx = k*(gy - mean(gy) - x_hat*mean(gy*x_hat)) in training or gx = k*gy in eval.

Backward therefore needs x (the op's input, alive in the graph anyway) and the per-channel
statistics, never a saved x_hat. Sums are accumulated per row in the data's dtype and
across rows in float64.

Layouts: activations are planes as in ``kernels.as_planes``: plane (n, c) is
planes[n*sn + c*sc].
"""

from __future__ import annotations

import numpy as np

from .. import buffers, dispatch
from ..cores import parallel_for
from . import as_planes, njit, unplanes

__all__ = ["batch_norm_train", "batch_norm_eval", "batch_norm_relu_eval", "eval_scale_shift", "conv_epilogue", "affine_relu", "affine_relu_block", "sum_affine_relu",
           "batch_norm_grads"]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _train_forward(c0, c1, x, sn, sc, N, scale_in, shift_in, eps, y, mean, var, inv_std):
    """Statistics and output of channels c0..c1-1 (training): two passes for the statistics."""
    H, W = x.shape[1], x.shape[2]
    count = N * H * W
    for c in range(c0, c1):
        total = 0.0
        for n in range(N):
            p = x[n * sn + c * sc]
            for h in range(H):
                row = p[h]
                s = row[0] * 0
                for w in range(W):
                    s += row[w]
                total += s
        mu = total / count
        m = x.dtype.type(mu)
        total = 0.0
        for n in range(N):
            p = x[n * sn + c * sc]
            for h in range(H):
                row = p[h]
                s = row[0] * 0
                for w in range(W):
                    d = row[w] - m
                    s += d * d
                total += s
        v = total / count
        istd = 1.0 / np.sqrt(v + eps)
        mean[c], var[c], inv_std[c] = mu, v, istd
        k = x.dtype.type(scale_in[c] * istd)
        b = x.dtype.type(shift_in[c] - mu * scale_in[c] * istd)
        for n in range(N):
            p, q = x[n * sn + c * sc], y[n * sn + c * sc]
            for h in range(H):
                row, out = p[h], q[h]
                for w in range(W):
                    out[w] = row[w] * k + b


@njit(cache=True, nogil=True, fastmath={"contract"})
def _affine(q0, q1, x, sc, C, scale, shift, y):
    """y = x*scale[c] + shift[c] over planes q0..q1-1 in memory order: eval mode.

    x and y are C-contiguous planes (y in x's plane order), read as flat runs in memory
    order whichever layout: plane q holds channel q % C in NCHW planes (sc == 1), channel
    q // N in CNHW ones (sc == N), so the channel advances without a division per plane:
    on 7x7 maps the per-plane work was most of the time (ResNet-18's 512x7x7 at batch 1:
    18-20 us a call, one thread, CPU time, Dec 4). Visiting CNHW planes in (n, c) order
    instead jumped N planes at every step (as max pooling did, ``kernels/pool.py``).
    """
    HW = x.shape[1] * x.shape[2]
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    per = 1 if sc == 1 else sc                                        # planes per channel step
    c, left = (q0 % C, 1) if sc == 1 else (q0 // sc, sc - q0 % sc)
    for q in range(q0, q1):
        k, b = scale[c], shift[c]
        base = q * HW
        p, o = xf[base : base + HW], yf[base : base + HW]
        for i in range(HW):
            o[i] = p[i] * k + b
        left -= 1
        if left == 0:
            c, left = (c + 1) % C, per


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _affine_relu_run(x, y, k, b, r):
    """y[i] = relu(x[i]*k + b (+ r[i])) over a 1-D run x; y is x's length (or x itself: in
    place), r too, or of size 0 (no sum). The loop of the three eval batch norm + ReLU kernels.

    The same expressions as the unfused ops, in the same order and with the same flags:
    t = x*k + b as ``_affine`` (contracted to one FMA there and here: ``fastmath={"contract"}``
    on every kernel that inlines this, as on ``_affine``), then the IEEE sum t + r
    (``elementwise.add_forward``), then ReLU as ``elementwise.relu_forward_only`` (a NaN
    passes, -0.0 becomes +0.0): the same bits as the three passes. Inlined into the caller's
    IR (``inline="always"``), so its flags are the caller's and an in-place call (y is x)
    reads and writes through one pointer: no overlap check, no scalar fallback loop. The zero
    is a constant of y's dtype, not an array allocated per run (39e9e3a).
    """
    zero = y.dtype.type(0)
    if r.size > 0:
        for i in range(x.size):
            v = x[i] * k + b
            v = v + r[i]
            y[i] = v if (v > zero or v != v) else zero
    else:
        for i in range(x.size):
            v = x[i] * k + b
            y[i] = v if (v > zero or v != v) else zero


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _affine_run(x, y, k, b, r):
    """y[i] = x[i]*k + b (+ r[i]): ``_affine_relu_run`` without the ReLU (a shortcut's batch norm,
    ``conv_epilogue(..., relu=False)``): ``_affine``'s expression (one FMA), then the IEEE sum."""
    if r.size > 0:
        for i in range(x.size):
            v = x[i] * k + b
            y[i] = v + r[i]
    else:
        for i in range(x.size):
            y[i] = x[i] * k + b


@njit(cache=True, nogil=True, fastmath={"contract"})
def _affine_relu(q0, q1, x, r, sc, C, scale, shift, y):
    """y = relu(x*scale[c] + shift[c] (+ r)) over planes q0..q1-1: ``_affine`` with the ReLU
    (and a residual r laid out as x; ``r.size == 0``: none) applied to each value it makes,
    one plane a run of ``_affine_relu_run``.
    """
    HW = x.shape[1] * x.shape[2]
    xf, yf, rf = x.reshape(x.size), y.reshape(y.size), r.reshape(r.size)
    per = 1 if sc == 1 else sc
    c, left = (q0 % C, 1) if sc == 1 else (q0 // sc, sc - q0 % sc)
    for q in range(q0, q1):
        base = q * HW
        _affine_relu_run(xf[base : base + HW], yf[base : base + HW], scale[c], shift[c], rf[base : base + HW])
        left -= 1
        if left == 0:
            c, left = (c + 1) % C, per


@njit(cache=True, nogil=True, fastmath={"contract"})
def affine_relu_block(f0, f1, y, n0, n1, h0, h1, scale, shift, r, relu):
    """In place on a convolution's channel-major output y (F, N, OH, OW): y = relu(y*scale[f] +
    shift[f] (+ r)) for filters f0..f1-1, images n0..n1-1, rows h0..h1-1 (r (F, N, OH, OW)
    like y, or of size 0: no sum), one image's rows of a filter a run of ``_affine_relu_run``:
    eval batch norm, the residual sum and ReLU applied by the convolution to the rows it just
    wrote, with ``_affine_relu``'s bits. ``relu`` False: without the ReLU (``_affine_run``:
    ``_affine``'s bits, then the sum; a shortcut's batch norm).
    """
    N, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    yf, rf = y.reshape(y.size), r.reshape(r.size)
    length = (h1 - h0) * OW
    for f in range(f0, f1):
        for n in range(n0, n1):
            base = ((f * N + n) * OH + h0) * OW
            o = yf[base : base + length]
            if relu:
                _affine_relu_run(o, o, scale[f], shift[f], rf[base : base + length])
            else:
                _affine_run(o, o, scale[f], shift[f], rf[base : base + length])


@njit(cache=True, nogil=True, fastmath={"contract"})
def sum_affine_relu(f0, f1, parts, y, scale, shift, r, relu):
    """y[f] = relu((parts[0, f] + parts[1, f] + ...)*scale[f] + shift[f] (+ r[f])) for filters
    f0..f1-1: the channel groups' sum (in NumPy's order, ``im2col._forward_by_channels``), then
    ``_affine_relu_run`` in place on it (``_affine_run`` where ``relu`` is False). parts (S, F, P),
    y and r (F, P) (r of size 0: no sum).
    """
    S, P = parts.shape[0], parts.shape[2]
    rf = r.reshape(r.size)
    for f in range(f0, f1):
        o, p0, p1 = y[f], parts[0, f], parts[1, f]
        for i in range(P):
            o[i] = p0[i] + p1[i]
        for g in range(2, S):
            pg = parts[g, f]
            for i in range(P):
                o[i] = o[i] + pg[i]
        if relu:
            _affine_relu_run(o, o, scale[f], shift[f], rf[f * P : f * P + P])
        else:
            _affine_run(o, o, scale[f], shift[f], rf[f * P : f * P + P])


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _backward(c0, c1, x, sn, sc, gy, gsn, gsc, N, mean, inv_std, gamma, training, need_x, gx, sums):
    """gx and the per-channel sums (sum gy, sum gy*x_hat) of channels c0..c1-1."""
    H, W = x.shape[1], x.shape[2]
    count = N * H * W
    for c in range(c0, c1):
        m, istd = x.dtype.type(mean[c]), x.dtype.type(inv_std[c])
        s_gy = 0.0
        s_gyx = 0.0
        for n in range(N):
            p, g = x[n * sn + c * sc], gy[n * gsn + c * gsc]
            for h in range(H):
                row, grow = p[h], g[h]
                a = row[0] * 0
                b = row[0] * 0
                for w in range(W):
                    a += grow[w]
                    b += grow[w] * ((row[w] - m) * istd)
                s_gy += a
                s_gyx += b
        sums[c, 0], sums[c, 1] = s_gy, s_gyx
        if not need_x:
            continue
        k = x.dtype.type(gamma[c] * inv_std[c])
        if training:
            mg = x.dtype.type(s_gy / count)
            mgx = x.dtype.type(s_gyx / count)
            for n in range(N):
                p, g, o = x[n * sn + c * sc], gy[n * gsn + c * gsc], gx[n * sn + c * sc]
                for h in range(H):
                    row, grow, out = p[h], g[h], o[h]
                    for w in range(W):
                        out[w] = k * (grow[w] - mg - ((row[w] - m) * istd) * mgx)
        else:
            for n in range(N):
                g, o = gy[n * gsn + c * gsc], gx[n * sn + c * sc]
                for h in range(H):
                    grow, out = g[h], o[h]
                    for w in range(W):
                        out[w] = k * grow[w]


# ---------------------------------------------------------------------------------------
# Array plumbing called by BatchNorm2dFusedOp. Pure Python.
# ---------------------------------------------------------------------------------------


def _channel_grain(x_shape) -> int:
    N, _, H, W = x_shape
    return max(1, dispatch.PARALLEL_MIN_ELEMENTS // max(1, N * H * W))


_EPS: dict = {}  # (eps, its type, dtype) -> eps rounded to dtype (a NumPy scalar costs ~1-2 us per call)


def _eps(eps: float, dtype) -> float:
    """eps rounded to x's dtype first, as the reference adds it (``x.dtype.type(eps)``): an
    eps read from a float32 file (ONNX) and Python's 1e-5 then give the same results."""
    key = (eps, type(eps), dtype)
    rounded = _EPS.get(key)
    if rounded is None:
        rounded = float(np.dtype(dtype).type(eps))
        if len(_EPS) < 64:
            _EPS[key] = rounded
    return rounded


def batch_norm_train(x, gamma, beta, eps: float):
    """(y, mean, var, inv_std) of training-mode batch norm of x (N, C, H, W).

    mean, var (biased) and inv_std = 1/sqrt(var + eps) are float64 (C,) arrays; y has
    x's dtype and memory layout.
    """
    N, C = x.shape[:2]
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    y = buffers.empty_like(planes)
    scale = np.ones(C) if gamma is None else gamma.astype(np.float64)
    shift = np.zeros(C) if beta is None else beta.astype(np.float64)
    mean, var, inv_std = np.empty(C), np.empty(C), np.empty(C)
    parallel_for(_train_forward, C, planes, sn, sc, N, scale, shift, _eps(eps, x.dtype), y, mean, var, inv_std,
                 grain=_channel_grain(x.shape))
    return unplanes(y, N, C, sc), mean, var, inv_std


@njit(cache=True, nogil=True)
def _eval_coefficients(running_mean, running_var, gamma, beta, eps, mean, inv_std, scale, shift):
    """Eval mode's per-channel constants, in one compiled call instead of a dozen NumPy ones.

    mean = running_mean rounded to x's dtype, in float64; inv_std = 1 / sqrt(running_var
    (rounded likewise) + eps); scale = gamma*inv_std, shift = beta - mean*scale (float64,
    then rounded to x's dtype, the dtype of ``scale`` and ``shift``). gamma or beta may be
    None (1 and 0). The same operations as NumPy's, in the same order: the same bits.
    """
    for c in range(mean.shape[0]):
        scale[c] = running_mean[c]                                    # rounded to x's dtype
        m = np.float64(scale[c])
        scale[c] = running_var[c]
        istd = 1 / np.sqrt(np.float64(scale[c]) + eps)
        k = istd if gamma is None else np.float64(gamma[c]) * istd
        mean[c], inv_std[c] = m, istd
        scale[c] = k
        shift[c] = -m * k if beta is None else np.float64(beta[c]) - m * k


def batch_norm_eval(x, running_mean, running_var, gamma, beta, eps: float):
    """(y, mean, inv_std) of eval-mode batch norm of x (N, C, H, W) by the running statistics.

    y = x*scale[c] + shift[c] with scale = gamma*inv_std, shift = beta - mean*scale
    (computed in float64, applied in x's dtype); mean and inv_std are float64 (C,).
    """
    N, C, H, W = x.shape
    mean, inv_std = np.empty(C), np.empty(C)
    scale, shift = np.empty(C, x.dtype), np.empty(C, x.dtype)
    _eval_coefficients(running_mean, running_var, gamma, beta, _eps(eps, x.dtype), mean, inv_std, scale, shift)
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    y = buffers.empty_like(planes)
    parallel_for(_affine, N * C, planes, sc, C, scale, shift, y,
                 grain=max(1, dispatch.inference_grain() // max(1, H * W)))
    return unplanes(y, N, C, sc), mean, inv_std


def eval_scale_shift(running_mean, running_var, gamma, beta, eps: float, dtype):
    """Eval batch norm's (scale, shift) per channel in ``dtype``, as ``batch_norm_eval`` uses them."""
    C = running_mean.shape[0]
    mean, inv_std = np.empty(C), np.empty(C)
    scale, shift = np.empty(C, dtype), np.empty(C, dtype)
    _eval_coefficients(running_mean, running_var, gamma, beta, _eps(eps, dtype), mean, inv_std, scale, shift)
    return scale, shift


def conv_epilogue(running_mean, running_var, gamma, beta, eps, dtype, residual=None, out_shape=None,
                  bias=None, relu=True):
    """(scale, shift, r, relu) for a convolution's ``affine_relu_block`` epilogue: eval batch
    norm's constants in ``dtype`` and the residual (N, F, OH, OW) as channel-major (F, N, OH, OW)
    memory (copied only if it is not laid out so; empty: none); None for a residual of
    another type, shape (``out_shape``) or dtype. ``relu`` False: the affine pass (and sum)
    without the ReLU (a shortcut's batch norm).

    Without statistics (``running_mean`` None: the ReLU alone), scale 1 and shift ``bias`` (or
    0): y*1 + b is the IEEE sum y + b (one rounding, FMA or not), the convolution's own bias
    add, and y*1 + 0 is y but for -0.0, which the ReLU makes +0.0 either way.
    """
    if residual is None:
        r = np.empty((0, 0, 0, 0), dtype)
    else:
        if type(residual) is not np.ndarray or residual.shape != tuple(out_shape) or residual.dtype != dtype:
            return None
        r = residual.transpose(1, 0, 2, 3)                            # (F, N, OH, OW)
        if not r.flags.c_contiguous:
            r = np.ascontiguousarray(r)
    if running_mean is None:
        F = out_shape[1]
        return np.ones(F, dtype), (np.zeros(F, dtype) if bias is None else bias), r, relu
    scale, shift = eval_scale_shift(running_mean, running_var, gamma, beta, eps, dtype)
    return scale, shift, r, relu


def affine_relu(y, scale, shift, r, relu=True) -> None:
    """``affine_relu_block`` (without the ReLU where ``relu`` is False) over all of y (F, N, OH, OW),
    split over the threads by filters."""
    F, N, OH, OW = y.shape
    parallel_for(affine_relu_block, F, y, 0, N, 0, OH, scale, shift, r, bool(relu),
                 grain=max(1, dispatch.inference_grain() // max(1, N * OH * OW)))


def batch_norm_relu_eval(x, running_mean, running_var, gamma, beta, eps: float, residual=None):
    """relu(batch_norm_eval(x, ...)[0] (+ residual)) in one pass, or None where it does not
    apply: a residual of another shape, dtype or plane order than x (``_affine_relu``).

    y has x's memory layout; the same bits as the eval pass, the sum and the ReLU apart.
    """
    N, C, H, W = x.shape
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    if residual is None:
        r = planes[:0]
    else:
        if type(residual) is not np.ndarray or residual.shape != x.shape or residual.dtype != x.dtype:
            return None
        r, rsn, rsc = as_planes(residual)                             # (P, H, W)
        if (rsn, rsc) != (sn, sc):
            return None
    scale, shift = eval_scale_shift(running_mean, running_var, gamma, beta, eps, x.dtype)
    y = buffers.empty_like(planes)
    parallel_for(_affine_relu, N * C, planes, r, sc, C, scale, shift, y,
                 grain=max(1, dispatch.inference_grain() // max(1, H * W)))
    return unplanes(y, N, C, sc)


def batch_norm_grads(x, gy, mean, inv_std, gamma, training: bool, need_x: bool):
    """(gx or None, sum(gy * x_hat), sum(gy)) per channel; gx in x's memory layout."""
    N, C = x.shape[:2]
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    gplanes, gsn, gsc = as_planes(gy)                                 # (P, H, W)
    gx = buffers.empty_like(planes) if need_x else planes[:0]
    g = np.ones(C) if gamma is None else gamma.astype(np.float64)
    sums = np.empty((C, 2))
    parallel_for(_backward, C, planes, sn, sc, gplanes, gsn, gsc, N, mean, inv_std, g, training, need_x, gx,
                 sums, grain=_channel_grain(x.shape))
    dtype = gy.dtype
    return (unplanes(gx, N, C, sc) if need_x else None), sums[:, 1].astype(dtype), sums[:, 0].astype(dtype)
