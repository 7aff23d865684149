"""Direct stride-1 convolution over flat rows (numba), forward and backward.

Flat rows. For stride 1, one image's padded input plane (Hp, Wp) is stored row after
row in a flat buffer; output pixel (oh, ow) then reads tap (kh, kw) at flat index
(oh*Wp + ow) + (kh*Wp + kw). Over the flat index i = oh*Wp + ow, every tap is a shifted
contiguous slice, so the convolution is a sum of C*KH*KW scaled vector additions
("axpy"s) of length L = (OH - 1)*Wp + OW, which the compiler vectorizes. Entries with
ow >= OW are computed and thrown away (a waste of (KW - 1) / Wp) - the price of
contiguous inner loops. The backward pass runs the same index map: the output gradient
is spread into a zeroed buffer of L entries per filter, so the junk columns contribute
nothing.

Image groups. A pass over a short flat row (LeNet-5's conv2: L = 136) costs a fixed
overhead that a long row spreads over more multiply-adds. Rows of at most
``dispatch.CONV_SHORT_ROW`` entries therefore interleave ``dispatch.CONV_GROUP`` = 16
images, image index innermost: entry i*16 + j is image j's entry i, every tap offset is
multiplied by 16, and the loops above run unchanged over 16*L entries. With 16 images
(and buffers on 64-byte boundaries) every tap slice starts on a cache line, so the
vector loads are aligned. The input-gradient loop, whose passes read F rows of the
output gradient, goes over the flat index in blocks that keep those rows in L1.

Numerics: reassociation and FMA only (``kernels.FASTMATH``); the per-group weight-gradient
parts are summed in a fixed order (groups are fixed ranges of images), so results do not
depend on the number of threads.
"""

from __future__ import annotations

import numpy as np

from .. import buffers, dispatch
from ..cores import parallel_for
from . import FASTMATH, aligned_zeros, as_planes, njit

__all__ = ["conv2d_direct", "conv2d_direct_grads", "conv2d_forward", "conv2d_backward"]

# Entries of g (F rows of a flat-index block) that the input-gradient loop keeps in L1.
_GX_BLOCK = 8192



@njit(cache=True, fastmath=FASTMATH)
def _axpy_taps(acc, src, offs, wts, L):
    """acc[i] += sum_t wts[t] * src[offs[t] + i] for i < L: a correlation over flat rows.

    Taps go eight at a time (then four, then one), so each pass over acc loads and
    stores it once per eight multiply-adds (memory traffic, not arithmetic, bounds these loops). Every
    operand is a 1-D unit-stride slice, which is what lets the loop vectorize.
    """
    T = offs.shape[0]
    t = 0
    while t + 8 <= T:
        a0, a1 = src[offs[t] : offs[t] + L], src[offs[t + 1] : offs[t + 1] + L]
        a2, a3 = src[offs[t + 2] : offs[t + 2] + L], src[offs[t + 3] : offs[t + 3] + L]
        a4, a5 = src[offs[t + 4] : offs[t + 4] + L], src[offs[t + 5] : offs[t + 5] + L]
        a6, a7 = src[offs[t + 6] : offs[t + 6] + L], src[offs[t + 7] : offs[t + 7] + L]
        w0, w1, w2, w3 = wts[t], wts[t + 1], wts[t + 2], wts[t + 3]
        w4, w5, w6, w7 = wts[t + 4], wts[t + 5], wts[t + 6], wts[t + 7]
        for i in range(L):
            acc[i] += (w0 * a0[i] + w1 * a1[i] + w2 * a2[i] + w3 * a3[i]) + (
                w4 * a4[i] + w5 * a5[i] + w6 * a6[i] + w7 * a7[i]
            )
        t += 8
    if t + 4 <= T:
        a0, a1 = src[offs[t] : offs[t] + L], src[offs[t + 1] : offs[t + 1] + L]
        a2, a3 = src[offs[t + 2] : offs[t + 2] + L], src[offs[t + 3] : offs[t + 3] + L]
        w0, w1, w2, w3 = wts[t], wts[t + 1], wts[t + 2], wts[t + 3]
        for i in range(L):
            acc[i] += w0 * a0[i] + w1 * a1[i] + w2 * a2[i] + w3 * a3[i]
        t += 4
    while t < T:
        a0, w0 = src[offs[t] : offs[t] + L], wts[t]
        for i in range(L):
            acc[i] += w0 * a0[i]
        t += 1

@njit(cache=True, fastmath=FASTMATH)
def _dot_taps(out, g, src, offs, L):
    """out[t] = sum_{i < L} g[i] * src[offs[t] + i]: the adjoint of ``_axpy_taps`` in wts.

    Eight taps share each load of g.
    """
    T = offs.shape[0]
    zero = np.zeros(1, g.dtype)[0]
    t = 0
    while t + 8 <= T:
        a0, a1 = src[offs[t] : offs[t] + L], src[offs[t + 1] : offs[t + 1] + L]
        a2, a3 = src[offs[t + 2] : offs[t + 2] + L], src[offs[t + 3] : offs[t + 3] + L]
        a4, a5 = src[offs[t + 4] : offs[t + 4] + L], src[offs[t + 5] : offs[t + 5] + L]
        a6, a7 = src[offs[t + 6] : offs[t + 6] + L], src[offs[t + 7] : offs[t + 7] + L]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
        for i in range(L):
            gi = g[i]
            s0 += gi * a0[i]
            s1 += gi * a1[i]
            s2 += gi * a2[i]
            s3 += gi * a3[i]
            s4 += gi * a4[i]
            s5 += gi * a5[i]
            s6 += gi * a6[i]
            s7 += gi * a7[i]
        out[t], out[t + 1], out[t + 2], out[t + 3] = s0, s1, s2, s3
        out[t + 4], out[t + 5], out[t + 6], out[t + 7] = s4, s5, s6, s7
        t += 8
    if t + 4 <= T:
        a0, a1 = src[offs[t] : offs[t] + L], src[offs[t + 1] : offs[t + 1] + L]
        a2, a3 = src[offs[t + 2] : offs[t + 2] + L], src[offs[t + 3] : offs[t + 3] + L]
        s0 = s1 = s2 = s3 = zero
        for i in range(L):
            gi = g[i]
            s0 += gi * a0[i]
            s1 += gi * a1[i]
            s2 += gi * a2[i]
            s3 += gi * a3[i]
        out[t], out[t + 1], out[t + 2], out[t + 3] = s0, s1, s2, s3
        t += 4
    while t < T:
        a0 = src[offs[t] : offs[t] + L]
        s0 = zero
        for i in range(L):
            s0 += g[i] * a0[i]
        out[t] = s0
        t += 1

@njit(cache=True)
def _load_padded(xpad, x, n_base, sn, nb, sc, C, Hv, Wv, pt, pl, Hp, Wp):
    """Copy nb images' C planes into zero-bordered flat rows, image index innermost.

    xpad (C*Hp*Wp*nb,): entry ((c*Hp + h)*Wp + w)*nb + j is image n_base + j's padded
    plane c at (h, w).
    """
    for c in range(C):
        for j in range(nb):
            src = x[(n_base + j) * sn + c * sc]
            for h in range(Hv):
                start = ((c * Hp + h + pt) * Wp + pl) * nb + j
                dst, row = xpad[start : start + Wv * nb], src[h]
                if nb == 1:  # a contiguous copy, vectorized
                    for w in range(Wv):
                        dst[w] = row[w]
                else:
                    for w in range(Wv):
                        dst[w * nb] = row[w]

@njit(cache=True)
def _tap_offsets(C, KH, KW, plane, Wp, base, sign):
    """Flat offsets of the taps (c, kh, kw) in row-major order: c*plane + base + sign*(kh*Wp + kw)."""
    offs = np.empty(C * KH * KW, np.int64)
    t = 0
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                offs[t] = c * plane + base + sign * (kh * Wp + kw)
                t += 1
    return offs

@njit(cache=True, nogil=True, fastmath=FASTMATH)
def conv2d_forward(g0, g1, x, sn, sc, wm, KH, KW, b, y, pt, pl, NB):
    """Direct stride-1 convolution of image groups g0..g1-1, in parallel over the batch.

    Group k holds images k*NB .. min(N, (k+1)*NB) - 1, interleaved in the flat rows
    (image index innermost), so the vector loops run over NB times more entries.

    Args:
        x: input planes (N*C, H, W); plane (n, c) is x[n*sn + c*sc].
        wm: filters as rows (F, C*KH*KW), C-contiguous.
        b: bias (F,) (zeros when the op has none).
        y: output (F, N, OH, OW), written in full.
        pt, pl: zero padding at the top and left; the bottom/right padding follows
            from y's size (stride 1: OH = H + PT + PB - KH + 1).
        NB: images per group.
    """
    F, N, OH, OW = y.shape
    H, W = x.shape[1], x.shape[2]
    C = wm.shape[1] // (KH * KW)
    Hp, Wp = OH + KH - 1, OW + KW - 1
    Hv, Wv = min(H, Hp - pt), min(W, Wp - pl)
    offs1 = _tap_offsets(C, KH, KW, Hp * Wp, Wp, 0, 1)
    for grp in range(g0, g1):
        n0 = grp * NB
        nb = min(NB, N - n0)
        L = ((OH - 1) * Wp + OW) * nb
        offs = offs1 * nb
        xpad = aligned_zeros(C * Hp * Wp * nb, x)
        _load_padded(xpad, x, n0, sn, nb, sc, C, Hv, Wv, pt, pl, Hp, Wp)
        acc = aligned_zeros(L, x)
        for f in range(F):
            acc[:] = b[f]
            _axpy_taps(acc, xpad, offs, wm[f], L)
            for j in range(nb):
                for oh in range(OH):
                    row, dst = acc[oh * Wp * nb + j : (oh * Wp + OW) * nb], y[f, n0 + j, oh]
                    if nb == 1:
                        for ow in range(OW):
                            dst[ow] = row[ow]
                    else:
                        for ow in range(OW):
                            dst[ow] = row[ow * nb]

@njit(cache=True, nogil=True, fastmath=FASTMATH)
def conv2d_backward(g0, g1, x, sn, sc, wt, KH, KW, gy, gsn, gsf, pt, pl, gx, gw_parts, gb_parts, need_x, need_w, NB):
    """Gradients of the direct stride-1 convolution for image groups g0..g1-1.

    gw[f, c, kh, kw] = sum_{n, oh, ow} gy[n, f, oh, ow] * xpad[n, c, oh + kh, ow + kw]
    gxpad[n, c, oh + kh, ow + kw] += sum_f w[f, c, kh, kw] * gy[n, f, oh, ow]
    gb[f]            = sum_{n, oh, ow} gy[n, f, oh, ow]
    Over flat rows both are the forward's index map run backwards: dot products of
    gy's rows with shifted x rows, and gy's rows added into shifted gx rows. Images
    are grouped and interleaved as in ``conv2d_forward``.

    Args:
        x: input planes (N*C, H, W) as in ``conv2d_forward``.
        wt: filters by input tap (C*KH*KW, F), C-contiguous (w transposed).
        gy: output-gradient planes (N*F, OH, OW); plane (n, f) is gy[n*gsn + f*gsf].
        gx: input gradient (C, N, H, W), written in full when need_x.
        gw_parts, gb_parts: per-group partial sums (groups, F, C*KH*KW) and (groups, F);
            the caller sums them in a fixed order, so results do not depend on the
            number of threads.
        NB: images per group.
    """
    H, W = x.shape[1], x.shape[2]
    F = gb_parts.shape[1]
    C = wt.shape[0] // (KH * KW)
    N = gy.shape[0] // F
    OH, OW = gy.shape[1], gy.shape[2]
    Hp, Wp = OH + KH - 1, OW + KW - 1
    Hv, Wv = min(H, Hp - pt), min(W, Wp - pl)
    offs1 = _tap_offsets(C, KH, KW, Hp * Wp, Wp, 0, 1)
    zero = np.zeros(1, gy.dtype)[0]
    for grp in range(g0, g1):
        n0 = grp * NB
        nb = min(NB, N - n0)
        L = ((OH - 1) * Wp + OW) * nb
        g = aligned_zeros(F * L, gy)                             # gy's rows, junk columns 0
        for f in range(F):
            s = zero
            for j in range(nb):
                src = gy[(n0 + j) * gsn + f * gsf]
                for oh in range(OH):
                    start = f * L + oh * Wp * nb + j
                    dst, row = g[start : start + OW * nb], src[oh]
                    if nb == 1:
                        for ow in range(OW):
                            dst[ow] = row[ow]
                            s += row[ow]
                    else:
                        for ow in range(OW):
                            dst[ow * nb] = row[ow]
                            s += row[ow]
            gb_parts[grp, f] = s
        if need_w:
            offs = offs1 * nb
            xpad = aligned_zeros(C * Hp * Wp * nb, x)
            _load_padded(xpad, x, n0, sn, nb, sc, C, Hv, Wv, pt, pl, Hp, Wp)
            for f in range(F):
                _dot_taps(gw_parts[grp, f], g[f * L : (f + 1) * L], xpad, offs, L)
        if need_x:
            offs_g = _tap_offsets(F, 1, 1, L, 0, 0, 1)            # row f starts at f*L
            plane = Hp * Wp * nb
            gpads = aligned_zeros(C * plane, gy)
            # Blocks of the flat index: the F rows of g a pass reads stay in L1
            # across every channel and tap.
            B = L if F * L <= _GX_BLOCK else max(16, _GX_BLOCK // F // 16 * 16)
            for i0 in range(0, L, B):
                Lb = min(B, L - i0)
                gb = g[i0:]
                for c in range(C):
                    for kh in range(KH):
                        for kw in range(KW):
                            t = (c * KH + kh) * KW + kw
                            o = c * plane + (kh * Wp + kw) * nb + i0
                            _axpy_taps(gpads[o : o + Lb], gb, offs_g, wt[t], Lb)
            for c in range(C):
                gpad = gpads[c * plane : (c + 1) * plane]
                for j in range(nb):
                    for h in range(H):
                        dst = gx[c, n0 + j, h]
                        if h < Hv:
                            start = ((h + pt) * Wp + pl) * nb + j
                            row = gpad[start : start + Wv * nb]
                            if nb == 1:
                                for ww in range(Wv):
                                    dst[ww] = row[ww]
                            else:
                                for ww in range(Wv):
                                    dst[ww] = row[ww * nb]
                            dst[Wv:] = 0.0  # columns no window reached (right overhang)
                        else:
                            dst[:] = 0.0  # rows no window reached (bottom overhang)


# ---------------------------------------------------------------------------------------
# Array plumbing called by Conv2dDirectOp: allocation, layouts, threads. Pure Python.
# ---------------------------------------------------------------------------------------


def _conv_grain(w_shape, OH: int, OW: int) -> int:
    """Images per thread: enough that each thread does PARALLEL_MIN_MACS multiply-adds."""
    F, C, KH, KW = w_shape
    return max(1, dispatch.PARALLEL_MIN_MACS // max(1, F * C * KH * KW * OH * (OW + KW - 1)))


def _images_per_group(OH: int, OW: int, KH: int, KW: int) -> int:
    """Images interleaved in the flat rows: CONV_GROUP when a row is short, else 1."""
    L = (OH - 1) * (OW + KW - 1) + OW
    return dispatch.CONV_GROUP if L <= dispatch.CONV_SHORT_ROW else 1


def conv2d_direct(x, w, b, pads):
    """y (F, N, OH, OW) channel-major memory of the stride-1 convolution of x (N, C, H, W)."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    pt, pb, pl, pr = pads
    OH, OW = H + pt + pb - KH + 1, W + pl + pr - KW + 1
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    wm = np.ascontiguousarray(w).reshape(F, C * KH * KW)             # (F, C*KH*KW)
    bias = np.zeros(F, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    y = buffers.empty((F, N, OH, OW), x.dtype)                        # (F, N, OH, OW)
    nb = _images_per_group(OH, OW, KH, KW)
    groups = -(-N // nb)
    parallel_for(conv2d_forward, groups, planes, sn, sc, wm, KH, KW, bias, y, pt, pl, nb,
                 grain=-(-_conv_grain(w.shape, OH, OW) // nb))
    return y


def conv2d_direct_grads(x, w, gy, pads, need_x: bool, need_w: bool):
    """(gx, gw, gb) of ``conv2d_direct``; gx is an (N, C, H, W) view of CNHW memory or None."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    pt, _, pl, _ = pads
    OH, OW = gy.shape[2:]
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    gplanes, gsn, gsf = as_planes(gy)                                 # (N*F, OH, OW)
    wt = np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(C * KH * KW, F)  # (C*KH*KW, F)
    nb = _images_per_group(OH, OW, KH, KW)
    groups = -(-N // nb)
    gx = buffers.empty((C, N, H, W) if need_x else (0, N, 0, 0), gy.dtype)  # (C, N, H, W)
    gw_parts = np.empty((groups, F, C * KH * KW) if need_w else (groups, 0, 0), gy.dtype)
    gb_parts = np.empty((groups, F), gy.dtype)
    parallel_for(conv2d_backward, groups, planes, sn, sc, wt, KH, KW, gplanes, gsn, gsf, pt, pl,
                 gx, gw_parts, gb_parts, need_x, need_w, nb,
                 grain=-(-_conv_grain(w.shape, OH, OW) // nb))
    gw = gw_parts.sum(axis=0).reshape(w.shape) if need_w else None    # (F, C, KH, KW)
    return (gx.transpose(1, 0, 2, 3) if need_x else None), gw, gb_parts.sum(axis=0)
