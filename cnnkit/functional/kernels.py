"""Compiled CPU kernels (numba) for the small convolutions and the pooling of CNNs.

NumPy cannot express a small convolution without materializing im2col columns, nor a
first-maximum max pooling without one pass per kernel tap. These kernels do each in
one pass per image, in parallel over images (or image planes), with the per-image
working set in L1/L2 cache. ``conv.py`` and ``pool.py`` call them for NumPy arrays when
numba is installed; the NumPy code there stays the reference path (CuPy arrays, no
numba) and the oracle the tests compare these kernels against.

Layout. A 4-D activation (N, C, H, W) reaches a kernel as ``planes`` (P, H, W), a
C-contiguous stack of its N*C image planes, plus two plane strides: plane (n, c) is
``planes[n*sn + c*sc]``. Both layouts the library produces are covered without a copy:
NCHW memory (sn = C, sc = 1) and the channel-major CNHW memory of conv/pool outputs
(sn = 1, sc = N).

Direct convolution ("flat rows"). For stride 1, one image's padded input plane
(Hp, Wp) is stored row after row in a flat buffer; output pixel (oh, ow) then reads
tap (kh, kw) at flat index (oh*Wp + ow) + (kh*Wp + kw). Over the flat index
i = oh*Wp + ow, every tap is a shifted contiguous slice, so the convolution is a sum
of KH*KW*C scaled vector additions ("axpy"s) of length L = (OH - 1)*Wp + OW, which
the compiler vectorizes. Entries with ow >= OW are computed and thrown away (a
waste of (Wp - OW) / Wp) - the price of contiguous inner loops. The backward passes
run the same index map: the output gradient is spread into a zeroed (OH, Wp) buffer,
so the junk columns contribute nothing.

Threads. numba's parallel loops own the cores while a kernel runs; BLAS runs between
kernels. ``fastmath`` is limited to reassociation and contraction (FMA): results may
differ from the NumPy path only by float rounding order; NaN and inf behave the same.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is a dependency; kept for minimal installs
    numba = None

__all__ = [
    "AVAILABLE",
    "as_planes",
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
]

AVAILABLE = numba is not None

# Reassociation lets reductions vectorize; contraction allows FMA. No nnan/ninf/nsz:
# those could change results on non-finite inputs, not only their rounding.
_FASTMATH = {"reassoc", "contract"}


def as_planes(x):
    """View a 4-D array (N, C, H, W) as C-contiguous planes (P, H, W) with plane strides.

    Returns (planes, sn, sc): plane (n, c) is planes[n*sn + c*sc]. Copies only when
    neither NCHW nor CNHW memory order holds.
    """
    N, C, H, W = x.shape
    if x.flags.c_contiguous:
        return x.reshape(N * C, H, W), C, 1                            # (N*C, H, W)
    xc = x.transpose(1, 0, 2, 3)                                      # (C, N, H, W)
    if xc.flags.c_contiguous:
        return xc.reshape(C * N, H, W), 1, N                           # (C*N, H, W)
    return np.ascontiguousarray(x).reshape(N * C, H, W), C, 1


if AVAILABLE:

    @njit(cache=True, inline="always")
    def _load_padded(xpad, x, n_base, sc, C, H, W, pt, pl, Wp):
        """Copy the C planes of one image into the zero-bordered flat rows xpad (C, Hp*Wp)."""
        for c in range(C):
            src = x[n_base + c * sc]
            for h in range(H):
                row = (h + pt) * Wp + pl
                for w in range(W):
                    xpad[c, row + w] = src[h, w]

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def conv2d_forward(x, sn, sc, w, b, y, pt, pl):
        """Direct stride-1 convolution of every image, in parallel over the batch.

        Args:
            x: input planes (N*C, H, W); plane (n, c) is x[n*sn + c*sc].
            w: filters (F, C, KH, KW), C-contiguous.
            b: bias (F,) (zeros when the op has none).
            y: output (F, N, OH, OW), written in full.
            pt, pl: zero padding at the top and left (bottom/right follow from y's size).
        """
        F, C, KH, KW = w.shape
        _, N, OH, OW = y.shape
        H, W = x.shape[1], x.shape[2]
        Hp, Wp = OH + KH - 1, OW + KW - 1
        L = (OH - 1) * Wp + OW
        for n in prange(N):
            xpad = np.zeros((C, Hp * Wp), x.dtype)
            _load_padded(xpad, x, n * sn, sc, C, min(H, Hp - pt), min(W, Wp - pl), pt, pl, Wp)
            acc = np.empty(L, x.dtype)
            for f in range(F):
                acc[:] = b[f]
                for c in range(C):
                    for kh in range(KH):
                        for kw in range(KW):
                            wv = w[f, c, kh, kw]
                            off = kh * Wp + kw
                            for i in range(L):
                                acc[i] += wv * xpad[c, off + i]
                for oh in range(OH):
                    for ow in range(OW):
                        y[f, n, oh, ow] = acc[oh * Wp + ow]

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def conv2d_backward(x, sn, sc, w, gy, gsn, gsf, pt, pl, gx, gw_parts, gb_parts, need_x, need_w):
        """Gradients of the direct stride-1 convolution, in parallel over the batch.

        gw[f, c, kh, kw] = sum_{n, oh, ow} gy[n, f, oh, ow] * xpad[n, c, oh + kh, ow + kw]
        gx[n, c, h, w]   = sum_{f, kh, kw} w[f, c, kh, kw] * gy[n, f, h + pt - kh, w + pl - kw]
        gb[f]            = sum_{n, oh, ow} gy[n, f, oh, ow]

        Args:
            x: input planes (N*C, H, W) as in ``conv2d_forward``.
            gy: output-gradient planes (N*F, OH, OW); plane (n, f) is gy[n*gsn + f*gsf].
            gx: input gradient (C, N, H, W), written in full when need_x.
            gw_parts, gb_parts: per-image partial sums (N, F, C, KH, KW) and (N, F); the
                caller sums them over the batch (a fixed order: results do not depend on
                the number of threads).
        """
        F, C, KH, KW = w.shape
        N, H, W = gx.shape[1], x.shape[1], x.shape[2]
        OH, OW = gy.shape[1], gy.shape[2]
        Hp, Wp = OH + KH - 1, OW + KW - 1
        L = (OH - 1) * Wp + OW
        Hv, Wv = min(H, Hp - pt), min(W, Wp - pl)
        for n in prange(N):
            g = np.zeros((F, L), gy.dtype)
            for f in range(F):
                src = gy[n * gsn + f * gsf]
                s = 0.0
                for oh in range(OH):
                    for ow in range(OW):
                        v = src[oh, ow]
                        g[f, oh * Wp + ow] = v
                        s += v
                gb_parts[n, f] = s
            if need_w:
                xpad = np.zeros((C, Hp * Wp), x.dtype)
                _load_padded(xpad, x, n * sn, sc, C, Hv, Wv, pt, pl, Wp)
                for f in range(F):
                    for c in range(C):
                        for kh in range(KH):
                            for kw in range(KW):
                                off = kh * Wp + kw
                                s = 0.0
                                for i in range(L):
                                    s += g[f, i] * xpad[c, off + i]
                                gw_parts[n, f, c, kh, kw] = s
            if need_x:
                gpad = np.zeros((C, Hp * Wp), gy.dtype)
                for c in range(C):
                    for f in range(F):
                        for kh in range(KH):
                            for kw in range(KW):
                                wv = w[f, c, kh, kw]
                                off = kh * Wp + kw
                                for i in range(L):
                                    gpad[c, off + i] += wv * g[f, i]
                    for h in range(H):
                        for ww in range(W):
                            if h < Hv and ww < Wv:
                                gx[c, n, h, ww] = gpad[c, (h + pt) * Wp + ww + pl]
                            else:  # rows/columns no window reached (bottom/right overhang)
                                gx[c, n, h, ww] = 0.0

    @njit(cache=True, parallel=True)
    def max_pool2d_forward(x, xsn, xsc, C, y, arg, KH, KW, SH, SW, PT, PL, DH, DW):
        """Max pooling with the first-maximum tap index, in parallel over image planes.

        y[i, j]   = max over taps k = kh*KW + kw (row-major) of xpad[i*SH + kh*DH, j*SW + kw*DW]
        arg[i, j] = the first k reaching that maximum (strictly greater replaces it),
        per plane. Padding reads as -inf; a NaN propagates to y as in NumPy's maximum.

        Args:
            x: input planes (N*C, H, W); plane (n, c) is x[n*xsn + c*xsc].
            y, arg: outputs (N*C, OH, OW) with the same plane order as x.
        """
        H, W = x.shape[1], x.shape[2]
        OH, OW = y.shape[1], y.shape[2]
        ninf = -np.inf
        for q in prange(x.shape[0]):
            n, c = q // C, q % C
            p = n * xsn + c * xsc
            src = x[p]
            for i in range(OH):
                for j in range(OW):
                    m = ninf
                    a = 0
                    for kh in range(KH):
                        h = i * SH - PT + kh * DH
                        for kw in range(KW):
                            ww = j * SW - PL + kw * DW
                            if 0 <= h < H and 0 <= ww < W:
                                v = src[h, ww]
                            else:
                                v = ninf
                            k = kh * KW + kw
                            if k == 0:
                                m = v
                            elif v > m:
                                m = v
                                a = k
                            elif v != v:
                                m = v
                    y[p, i, j] = m
                    arg[p, i, j] = a

    @njit(cache=True, parallel=True)
    def max_pool2d_backward(gy, gsn, gsc, arg, asn, asc, C, gx, KW, SH, SW, PT, PL, DH, DW):
        """Send each output gradient to its window's first maximum, in parallel over planes.

        gx[h, w] = sum of gy[i, j] over the windows (i, j) whose first maximum is (h, w).

        Args:
            gy: output-gradient planes (N*C, OH, OW); plane (n, c) is gy[n*gsn + c*gsc].
            arg: tap indices from ``max_pool2d_forward``; plane (n, c) is arg[n*asn + c*asc].
            gx: input-gradient planes (N*C, H, W), in arg's plane order, written in full.
        """
        H, W = gx.shape[1], gx.shape[2]
        OH, OW = gy.shape[1], gy.shape[2]
        for q in prange(gy.shape[0]):
            n, c = q // C, q % C
            pa, pg = n * asn + c * asc, n * gsn + c * gsc
            dst = gx[pa]
            dst[:, :] = 0.0
            for i in range(OH):
                for j in range(OW):
                    k = arg[pa, i, j]
                    h = i * SH - PT + (k // KW) * DH
                    ww = j * SW - PL + (k % KW) * DW
                    if 0 <= h < H and 0 <= ww < W:
                        dst[h, ww] += gy[pg, i, j]
