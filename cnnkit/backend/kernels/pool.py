"""Max pooling with the first-maximum index (numba), forward and backward.

One pass per image plane computes the maximum of every window and the index of the tap
that first reaches it (row-major, strictly greater replaces, and a NaN always does:
PyTorch's rule, so the last NaN of a window takes the gradient), and the
backward pass sends each output gradient to that tap. The 2x2/2 windows of LeNet and VGG
and the 3x3/2 windows of ResNet's stem have their own kernels that keep a window's taps
in registers. Exact: the same
maximum, the same first maximum, the same NaN and inf behaviour as the NumPy reference.

Every kernel visits the planes (N*C, H, W) of ``as_planes`` in memory order, whichever
(n, c) each is: the forward's outputs share x's plane order, and the backward's gx shares
arg's, so plane p of one is plane p of the other. Visiting them in (n, c) order instead
jumped N planes at every step through the direct convolution's CNHW maps, a new memory
stream per plane: LeNet-5's first pooling at b256, one thread, 625 -> 494 us with x in
cache, 977 -> 592 us from memory (b64 in cache: level).
"""

from __future__ import annotations

import numpy as np

from .. import buffers, dispatch
from ..cores import parallel_for
from . import AVAILABLE, as_planes, njit, simd, unplanes

__all__ = ["max_pool2d_fused", "max_pool2d_scatter", "max_pool2d_scatter_by_images", "relu_mask_applies", "TAP_BITS",
           "NOT_POSITIVE"]

# Row-packed 2x2 windows: up to this many output rows per vector (``_rows_per_vector``).
PACKED_ROWS = 4

if AVAILABLE:
    import llvmlite.ir as ir
    from numba import types
    from numba.extending import intrinsic

    from .simd import (
        _I64,
        _at,
        _gradient_per_tap,
        _masked_load_lanes,
        _masked_store_lanes,
        _pool_types,
        _split_even_odd,
        _vector,
        _zip_lanes,
    )

    def _segments(builder, n, rows, length):
        """Per packed row r < PACKED_ROWS and half h (0: lanes 0..n-1 of the first vector, 1: n..2n-1
        of the second) of a 2n-entry virtual row: (any, mask), whether row r has entries there
        and the lane mask of its ``length`` entries at r * length (``rows``, ``length``: IR
        integers; no row from ``rows`` on). A (row, half) without entries skips its load or store
        (a predictable branch: the same for every call of a layer)."""
        i32 = ir.IntType(32)
        ivt = ir.VectorType(i32, n)
        length = builder.trunc(length, i32)
        rows = builder.trunc(rows, i32)
        masks = []
        for r in range(PACKED_ROWS):
            start = builder.mul(length, ir.Constant(i32, r))
            end = builder.add(start, length)
            live = builder.icmp_signed("<", ir.Constant(i32, r), rows)
            s, e = simd._splat(builder, start, ivt), simd._splat(builder, end, ivt)
            halves = []
            for h in (0, 1):
                lanes = ir.Constant(ivt, list(range(h * n, (h + 1) * n)))
                mask = builder.and_(builder.icmp_signed(">=", lanes, s), builder.icmp_signed("<", lanes, e))
                any_ = builder.and_(live, builder.and_(builder.icmp_signed("<", start, ir.Constant(i32, (h + 1) * n)),
                                                       builder.icmp_signed(">", end, ir.Constant(i32, h * n))))
                halves.append((any_, mask))
            masks.append(halves)
        return masks

    def _merge_load_if(builder, any_, ptr, vt, mask, passthru):
        """``simd._masked_load_lanes`` over ``passthru`` when ``any_`` (an i1), else ``passthru``
        without touching memory."""
        before = builder.block
        with builder.if_then(any_):
            loaded = _masked_load_lanes(builder, ptr, vt, mask, passthru)
            inside = builder.block
        phi = builder.phi(vt)
        phi.add_incoming(loaded, inside)
        phi.add_incoming(passthru, before)
        return phi

    @intrinsic
    def max_pool_2x2_rows(typingctx, x, o, w, length, rows, y, yo, arg, ao):
        """``simd.max_pool_2x2`` for ``rows`` output rows (row pairs of x from element o, row
        stride w, 2x2 windows over the first ``length`` = 2 * OW entries of each row) at once: the
        rows' entries packed one after the other into one virtual row of 2 * VL lanes (rows *
        length <= 2 * VL) by merging masked loads, so lane q is window q of the rows' q // OW,
        and the rows * OW maxima and tap bytes stored one after the other at yo and ao (the output
        rows are consecutive). The same compares and selects per window."""
        if not _pool_types(x, y, arg):
            return None

        def codegen(context, builder, sig, args):
            xa, o, w, length, rows, ya, yo, aa, ao = args
            vt = _vector(context, x.dtype)
            nl = vt.count
            segments = _segments(builder, nl, rows, length)
            taps = []
            for first in (ir.Constant(_I64, 0), w):                  # the top and the bottom rows
                v0 = v1 = ir.Constant(vt, None)
                for r, ((any0, lo), (any1, hi)) in enumerate(segments):
                    # row r's entry k sits in virtual lane r * length + k
                    src = builder.add(builder.add(o, first),
                                      builder.sub(builder.mul(w, ir.Constant(_I64, 2 * r)),
                                                  builder.mul(length, ir.Constant(_I64, r))))
                    v0 = _merge_load_if(builder, any0, _at(context, builder, x, xa, src), vt, lo, v0)
                    v1 = _merge_load_if(builder, any1, _at(context, builder, x, xa, builder.add(src, ir.Constant(_I64, nl))),
                                        vt, hi, v1)
                taps += _split_even_odd(builder, v0, v1)
            m, tap = simd._max_and_tap(builder, taps, vt)
            count = builder.sdiv(builder.mul(rows, length), ir.Constant(_I64, 2))
            out = simd._lanes_below(builder, nl, count)
            _masked_store_lanes(builder, m, _at(context, builder, y, ya, yo), out)
            _masked_store_lanes(builder, tap, _at(context, builder, arg, aa, ao), out)
            return context.get_dummy_value()

        return types.void(x, o, w, length, rows, y, yo, arg, ao), codegen

    @intrinsic
    def max_unpool_2x2_rows(typingctx, g, go, arg, ao, keep, dst, d, w, length, rows):
        """``simd.max_unpool_2x2`` for ``rows`` output rows at once (``max_pool_2x2_rows``'s
        packing): rows * OW gradients and tap bytes read one after the other from go and ao,
        each gradient or 0 selected per tap, zipped back into the virtual rows and stored by
        masked stores into the rows' first ``length`` entries (row pairs from element d, stride w)."""
        if not _pool_types(g, dst, arg):
            return None

        def codegen(context, builder, sig, args):
            ga, go, aa, ao, keep, da, d, w, length, rows = args
            vt = _vector(context, g.dtype)
            nl = vt.count
            segments = _segments(builder, nl, rows, length)
            count = builder.sdiv(builder.mul(rows, length), ir.Constant(_I64, 2))
            inside = simd._lanes_below(builder, nl, count)
            parts = _gradient_per_tap(context, builder, g, ga, go, arg, aa, ao, keep, vt, inside)
            for first, (even, odd) in zip((ir.Constant(_I64, 0), w), (parts[:2], parts[2:])):
                v0, v1 = _zip_lanes(builder, even, odd)
                for r, ((any0, lo), (any1, hi)) in enumerate(segments):
                    to = builder.add(builder.add(d, first),
                                     builder.sub(builder.mul(w, ir.Constant(_I64, 2 * r)),
                                                 builder.mul(length, ir.Constant(_I64, r))))
                    with builder.if_then(any0):
                        _masked_store_lanes(builder, v0, _at(context, builder, dst, da, to), lo)
                    with builder.if_then(any1):
                        _masked_store_lanes(builder, v1, _at(context, builder, dst, da,
                                                             builder.add(to, ir.Constant(_I64, nl))), hi)
            return context.get_dummy_value()

        return types.void(g, go, arg, ao, keep, dst, d, w, length, rows), codegen


@njit(cache=True, nogil=True)
def _take_if_greater(ym, am, r, k, OW):
    """One tap of max pooling over an output row: strictly greater replaces (first max wins).

    Written without branches (selects), so it vectorizes and MNIST's many exact ties
    cost no mispredictions. A NaN tap replaces the maximum and its tap, as in PyTorch.
    """
    for j in range(OW):
        v, m = r[j], ym[j]
        take = v > m or v != v
        ym[j] = v if take else m
        am[j] = k if take else am[j]


@njit(cache=True, nogil=True, inline="always")
def _tap(v, m, a, k):
    """(max, arg) after tap k of value v: strictly greater replaces (the first maximum keeps
    the gradient), and a NaN always does (PyTorch's rule: the last NaN takes the gradient)."""
    take = v > m or v != v
    return (v if take else m), (k if take else a)


@njit(cache=True, nogil=True)
def max_pool2d_forward_3x3s2(q0, q1, x, y, arg, PT, PL):
    """``max_pool2d_forward`` for 3x3 windows, stride 2 (ResNet's stem pooling), any padding.

    Columns whose three taps are all inside the row run in one vector loop with the
    nine taps in registers; the edge columns and rows (padding, ceil_mode's overhang)
    take the same taps with bounds checks. Padding counts as -inf: never greater.
    """
    H, W = x.shape[1], x.shape[2]
    OH, OW = y.shape[1], y.shape[2]
    ninf = -np.inf
    # output columns j whose taps 2j - PL .. 2j - PL + 2 are all in [0, W)
    jlo = min(OW, (PL + 1) // 2)
    jhi = max(jlo, min(OW, (W - 3 + PL) // 2 + 1))
    w0 = 2 * jlo - PL  # >= 0: the inner loop indexes slices from 0 (no wraparound checks, 4x faster)
    for p in range(q0, q1):  # planes in memory order (module doc)
        src, yp, ap = x[p], y[p], arg[p]
        for i in range(OH):
            h0 = 2 * i - PT
            ym, am = yp[i], ap[i]
            if h0 >= 0 and h0 + 2 < H:
                r0, r1, r2 = src[h0, w0:], src[h0 + 1, w0:], src[h0 + 2, w0:]
                yj, aj = ym[jlo:], am[jlo:]
                for j in range(jhi - jlo):
                    w = 2 * j
                    m, a = r0[w], 0
                    m, a = _tap(r0[w + 1], m, a, 1)
                    m, a = _tap(r0[w + 2], m, a, 2)
                    m, a = _tap(r1[w], m, a, 3)
                    m, a = _tap(r1[w + 1], m, a, 4)
                    m, a = _tap(r1[w + 2], m, a, 5)
                    m, a = _tap(r2[w], m, a, 6)
                    m, a = _tap(r2[w + 1], m, a, 7)
                    m, a = _tap(r2[w + 2], m, a, 8)
                    yj[j], aj[j] = m, a
                edges = True
            else:
                edges = False
            for j in range(OW):
                if edges and jlo <= j < jhi:
                    continue
                m, a = ninf, 0
                for kh in range(3):
                    h = h0 + kh
                    if 0 <= h < H:
                        for kw in range(3):
                            w = 2 * j - PL + kw
                            if 0 <= w < W:
                                if kh == 0 and kw == 0:
                                    m = src[h, w]
                                else:
                                    m, a = _tap(src[h, w], m, a, kh * 3 + kw)
                ym[j], am[j] = m, a


@njit(cache=True, nogil=True, inline="always")
def _larger(v, m):
    """The maximum after a tap of value v: v if strictly greater or NaN (so a NaN anywhere
    in the window gives NaN, as the tap-tracking kernels), else m."""
    return v if (v > m) | (v != v) else m


@njit(cache=True, nogil=True)
def max_pool2d_values_3x3s2(q0, q1, x, y, PT, PL):
    """``max_pool2d_forward_3x3s2`` without the tap index: the maxima alone (inference).

    Separable, in the taps' row-major order: first the maximum of each three-column
    window along every input row (``rowmax``, each row once although two windows' rows
    overlap), then of three consecutive rows of it. Strictly greater replaces and a NaN
    always does, in both steps, so the result is the first maximum in row-major order,
    bit for bit the value of the tap-tracking kernel (signed zeros and NaN included).
    Edge columns (padding, ceil_mode's overhang) take the direct bounds-checked path.
    """
    H, W = x.shape[1], x.shape[2]
    OH, OW = y.shape[1], y.shape[2]
    jlo = min(OW, (PL + 1) // 2)
    jhi = max(jlo, min(OW, (W - 3 + PL) // 2 + 1))
    w0 = 2 * jlo - PL
    n = jhi - jlo
    rowmax = np.empty((H, n), x.dtype)                            # (H, interior OW)
    for p in range(q0, q1):  # planes in memory order (module doc)
        src, yp = x[p], y[p]
        for h in range(H):
            r, hr = src[h, w0:], rowmax[h]
            for j in range(n):
                hr[j] = _larger(r[2 * j + 2], _larger(r[2 * j + 1], r[2 * j]))
        for i in range(OH):
            h0 = 2 * i - PT
            ha, hb = max(h0, 0), min(h0 + 3, H)                   # the rows inside the input
            yj = yp[i, jlo:jhi]
            if hb - ha == 3:
                r0, r1, r2 = rowmax[ha], rowmax[ha + 1], rowmax[ha + 2]
                for j in range(n):
                    yj[j] = _larger(r2[j], _larger(r1[j], r0[j]))
            elif hb > ha:
                yj[:] = rowmax[ha]
                for h in range(ha + 1, hb):
                    r = rowmax[h]
                    for j in range(n):
                        yj[j] = _larger(r[j], yj[j])
            else:
                yj[:] = -np.inf
            for e in range(OW - n):                               # the edge columns
                j = e if e < jlo else e + n
                m = -np.inf
                first = True
                for h in range(ha, hb):
                    for kw in range(3):
                        w = 2 * j - PL + kw
                        if 0 <= w < W:
                            m = src[h, w] if first else _larger(src[h, w], m)
                            first = False
                yp[i, j] = m


@njit(cache=True, nogil=True)
def max_pool2d_forward(q0, q1, x, y, arg, KH, KW, SH, SW, pads, DH, DW):
    """Max pooling with the first-maximum tap index, over image planes q0..q1-1.

    y[i, j]   = max over taps k = kh*KW + kw (row-major) of xpad[i*SH + kh*DH, j*SW + kw*DW]
    arg[i, j] = the first k reaching that maximum (strictly greater replaces it; a NaN always does),
    per plane. Padding (pads = (PT, PB, PL, PR), including ceil_mode's overhang)
    reads as -inf, through a padded copy of the plane as in the reference.

    Args:
        x: input planes (N*C, H, W) in either plane order of ``as_planes``.
        y, arg: outputs (N*C, OH, OW) with the same plane order as x.
    """
    H, W = x.shape[1], x.shape[2]
    OH, OW = y.shape[1], y.shape[2]
    PT, PB, PL, PR = pads
    padded = PT + PB + PL + PR > 0
    buf = np.full((H + PT + PB, W + PL + PR), -np.inf, x.dtype)
    for p in range(q0, q1):  # planes in memory order (module doc)
        src, yp, ap = x[p], y[p], arg[p]
        if padded:
            buf[PT : PT + H, PL : PL + W] = src
            src = buf
        for i in range(OH):
            ym, am = yp[i], ap[i]
            for kh in range(KH):
                row = src[i * SH + kh * DH]
                for kw in range(KW):
                    r = row[kw * DW :: SW]                        # r[j] = row[kw*DW + j*SW]
                    if kh == 0 and kw == 0:
                        for j in range(OW):
                            ym[j] = r[j]
                            am[j] = 0
                    else:
                        _take_if_greater(ym, am, r, kh * KW + kw, OW)

# The 2x2 kernel's tap byte: the tap (0-3) in its low bits, and NOT_POSITIVE when the
# window's maximum is neither > 0 nor NaN (what ReLU's mask would say of it).
TAP_BITS, NOT_POSITIVE = 0x7F, 0x80


@njit(cache=True, nogil=True)
def max_pool2d_forward_2x2(q0, q1, x, y, arg):
    """``max_pool2d_forward`` for the common 2x2 window, stride 2, no padding.

    The four taps of a window stay in registers: one pass, no stores in between. arg also
    carries NOT_POSITIVE (bit 7) for a maximum that is <= 0: after a ReLU that is exactly
    where ReLU's mask is 0 at the window's first maximum, which lets the backward apply it.
    """
    OH, OW = y.shape[1], y.shape[2]
    for p in range(q0, q1):  # planes in memory order (module doc)
        src, yp, ap = x[p], y[p], arg[p]
        for i in range(OH):
            r0, r1, ym, am = src[2 * i], src[2 * i + 1], yp[i], ap[i]
            for j in range(OW):
                m, v1, v2, v3 = r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]
                g1 = v1 > m or v1 != v1                       # a NaN wins, as in PyTorch
                m = v1 if g1 else m
                g2 = v2 > m or v2 != v2
                m = v2 if g2 else m
                g3 = v3 > m or v3 != v3
                m = v3 if g3 else m
                ym[j] = m
                tap = 3 if g3 else (2 if g2 else (1 if g1 else 0))
                am[j] = tap if (m > 0) | (m != m) else tap | NOT_POSITIVE

@njit(cache=True, nogil=True)
def max_pool2d_forward_2x2_simd(q0, q1, x, y, arg, VL):
    """``max_pool2d_forward_2x2`` in 64-byte vectors (``simd.max_pool_2x2``): VL windows of
    an output row at a time, the row pair split into even and odd columns by shuffles
    (LLVM leaves the scalar kernel's stride-2 loads unvectorized). The same taps in the same
    order with the same selects, so bit for bit its maxima and tap bytes (NaN, signed zeros,
    NOT_POSITIVE included). A row's last chunk is masked: odd sizes need no other path.

    Args:
        x: C-contiguous planes (P, H, W); y (P, OH, OW) and arg (P, OH, OW, uint8), C-contiguous.
        VL: ``simd.lanes(x.dtype)``.
    """
    H, W = x.shape[1], x.shape[2]
    OH, OW = y.shape[1], y.shape[2]
    for p in range(q0, q1):  # planes in memory order (module doc)
        xp, yq = p * H * W, p * OH * OW
        for i in range(OH):
            o0, yo = xp + 2 * i * W, yq + i * OW
            for j in range(0, OW, VL):
                simd.max_pool_2x2(x, o0 + 2 * j, o0 + W + 2 * j, min(VL, OW - j), y, yo + j, arg, yo + j)


@njit(cache=True, nogil=True)
def max_pool2d_forward_2x2_rows(q0, q1, x, y, arg, R):
    """``max_pool2d_forward_2x2_simd`` with R output rows per vector op (``max_pool_2x2_rows``):
    on narrow maps (LeNet-5's second pooling: 10x10 in, 5 windows a row) a vector op per row
    left most lanes idle. The same compares per window: bit for bit its maxima and tap bytes."""
    H, W = x.shape[1], x.shape[2]
    OH, OW = y.shape[1], y.shape[2]
    for p in range(q0, q1):  # planes in memory order (module doc)
        xp, yq = p * H * W, p * OH * OW
        for i in range(0, OH, R):
            max_pool_2x2_rows(x, xp + 2 * i * W, W, 2 * OW, min(R, OH - i), y, yq + i * OW, arg, yq + i * OW)


@njit(cache=True, nogil=True, inline="always")
def _gy_plane(pa, C, asc, gsn, gsc):
    """The plane of gy that goes with plane pa of arg and gx (arg's planes in memory order:
    (n, c) = (pa // C, pa % C) for NCHW planes, asc == 1; (pa % N, pa // N) for CNHW, asc == N)."""
    n, c = (pa // C, pa % C) if asc == 1 else (pa % asc, pa // asc)
    return n * gsn + c * gsc


@njit(cache=True, nogil=True)
def max_pool2d_backward(q0, q1, gy, gsn, gsc, arg, asc, C, gx, KW, SH, SW, PT, PL, DH, DW):
    """Send each output gradient to its window's first maximum, over planes q0..q1-1.

    gx[h, w] = sum of gy[i, j] over the windows (i, j) whose first maximum is (h, w).

    Args:
        gy: output-gradient planes (N*C, OH, OW); plane (n, c) is gy[n*gsn + c*gsc].
        arg: tap indices from ``max_pool2d_forward``, planes in x's order (asc: 1 NCHW, N CNHW).
        gx: input-gradient planes (N*C, H, W), in arg's plane order, written in full.
    """
    H, W = gx.shape[1], gx.shape[2]
    OH, OW = gy.shape[1], gy.shape[2]
    for pa in range(q0, q1):  # arg's (and gx's) planes in memory order (module doc)
        pg = _gy_plane(pa, C, asc, gsn, gsc)
        dst, g, a = gx[pa], gy[pg], arg[pa]
        dst[:, :] = 0.0
        for i in range(OH):
            for j in range(OW):
                k = a[i, j]
                h = i * SH - PT + (k // KW) * DH
                ww = j * SW - PL + (k % KW) * DW
                if 0 <= h < H and 0 <= ww < W:  # else the maximum was padding
                    dst[h, ww] += g[i, j]

@njit(cache=True, nogil=True)
def max_pool2d_backward_2x2(q0, q1, gy, gsn, gsc, arg, asc, C, gx, keep):
    """``max_pool2d_backward`` for 2x2 windows, stride 2, no padding: one write per element.

    ``keep``: TAP_BITS (every gradient goes to its tap) or 0xFF (a window whose maximum is
    flagged NOT_POSITIVE sends none: the gradient of max_pool2d(relu(x)) with respect to x).
    """
    OH, OW = gy.shape[1], gy.shape[2]
    zero = np.zeros(1, gx.dtype)[0]
    for pa in range(q0, q1):  # arg's (and gx's) planes in memory order (module doc)
        pg = _gy_plane(pa, C, asc, gsn, gsc)
        dst, gp, ap = gx[pa], gy[pg], arg[pa]
        for i in range(OH):
            g, a, d0, d1 = gp[i], ap[i], dst[2 * i], dst[2 * i + 1]
            # loop over input columns (contiguous stores; interleaved stores by
            # output column would compile to scatters)
            for w in range(2 * OW):
                j, odd = w >> 1, w & 1
                gj, k = g[j], a[j] & keep
                d0[w] = gj if k == odd else zero
                d1[w] = gj if k == odd + 2 else zero
            d0[2 * OW :] = zero  # an odd last column is in no window
            d1[2 * OW :] = zero
        dst[2 * OH :, :] = zero  # nor is an odd last row


@njit(cache=True, nogil=True)
def _zero_outside_windows(dst, OH, OW):
    """gx plane ``dst`` outside every 2x2 window of an OH x OW output: an odd last column and
    an odd last row get no gradient (the vector backward kernels' last pass over a plane of odd
    height or width; called only for those: an allocated zero and two empty slices per plane
    took 40-50 of LeNet-5 pool 2's 60 us at b64, 1,024 planes of 10x10)."""
    dst[: 2 * OH, 2 * OW :] = 0
    dst[2 * OH :, :] = 0


@njit(cache=True, nogil=True)
def max_pool2d_backward_2x2_simd(q0, q1, gy, gsn, gsc, arg, asc, C, gx, keep, VL):
    """``max_pool2d_backward_2x2`` in 64-byte vectors (``simd.max_unpool_2x2``): VL windows at a
    time, each gradient or 0 selected per tap and interleaved back into the two input rows by
    shuffles; the same selects, so bit for bit its gx. gy, arg, gx C-contiguous planes;
    VL = ``simd.lanes(gx.dtype)``."""
    H, W = gx.shape[1], gx.shape[2]
    OH, OW = gy.shape[1], gy.shape[2]
    for pa in range(q0, q1):  # arg's (and gx's) planes in memory order (module doc)
        pg = _gy_plane(pa, C, asc, gsn, gsc)
        go, ao, xo = pg * OH * OW, pa * OH * OW, pa * H * W
        for i in range(OH):
            d0 = xo + 2 * i * W
            for j in range(0, OW, VL):
                simd.max_unpool_2x2(gy, go + i * OW + j, min(VL, OW - j), arg, ao + i * OW + j, keep,
                                    gx, d0 + 2 * j, d0 + W + 2 * j)
        if H > 2 * OH or W > 2 * OW:
            _zero_outside_windows(gx[pa], OH, OW)


@njit(cache=True, nogil=True)
def max_pool2d_backward_2x2_rows(q0, q1, gy, gsn, gsc, arg, asc, C, gx, keep, R):
    """``max_pool2d_backward_2x2_simd`` with R output rows per vector op (``max_unpool_2x2_rows``);
    bit for bit its gx."""
    H, W = gx.shape[1], gx.shape[2]
    OH, OW = gy.shape[1], gy.shape[2]
    for pa in range(q0, q1):  # arg's (and gx's) planes in memory order (module doc)
        pg = _gy_plane(pa, C, asc, gsn, gsc)
        go, ao, xo = pg * OH * OW, pa * OH * OW, pa * H * W
        for i in range(0, OH, R):
            max_unpool_2x2_rows(gy, go + i * OW, arg, ao + i * OW, keep, gx, xo + 2 * i * W, W, 2 * OW, min(R, OH - i))
        if H > 2 * OH or W > 2 * OW:
            _zero_outside_windows(gx[pa], OH, OW)


@njit(cache=True, nogil=True)
def max_pool2d_backward_2x2_images(n0, n1, N, gy, gsn, gsc, arg, asc, C, gx, keep, kind, extra):
    """The 2x2 backward (``_backward_2x2_kind``: 2 ``_rows``, 1 ``_simd``, 0 scalar, ``extra`` their
    R or VL) over the planes of images n0..n1-1 only: one run of planes in NCHW order (asc == 1),
    one per channel in CNHW (asc == N). Each plane as the whole-batch call computes it."""
    runs = 1 if asc == 1 else C
    for c in range(runs):
        q0, q1 = (n0 * C, n1 * C) if asc == 1 else (c * N + n0, c * N + n1)
        if kind == 2:
            max_pool2d_backward_2x2_rows(q0, q1, gy, gsn, gsc, arg, asc, C, gx, keep, extra)
        elif kind == 1:
            max_pool2d_backward_2x2_simd(q0, q1, gy, gsn, gsc, arg, asc, C, gx, keep, extra)
        else:
            max_pool2d_backward_2x2(q0, q1, gy, gsn, gsc, arg, asc, C, gx, keep)


def _rows_per_vector(OW: int, dtype) -> int:
    """Output rows of 2x2 windows one vector op takes (row-packed kernels from 2 on): the rows'
    2 * OW entries must fit in two vectors."""
    return min(PACKED_ROWS, 2 * simd.lanes(dtype) // max(1, 2 * OW))


# ---------------------------------------------------------------------------------------
# Array plumbing called by MaxPool2dFusedOp: allocation, layouts, threads. Pure Python.
# ---------------------------------------------------------------------------------------


def _plane_grain(shape, elements: int) -> int:
    """Image planes per thread for ``elements`` input elements per thread."""
    return max(1, elements // max(1, shape[2] * shape[3]))


def _is_2x2(kernel, stride, pads, dilation) -> bool:
    return kernel == (2, 2) and stride == (2, 2) and dilation == (1, 1) and not any(pads)


def _is_3x3s2(kernel, stride, dilation) -> bool:
    return kernel == (3, 3) and stride == (2, 2) and dilation == (1, 1)


def max_pool2d_fused(x, kernel, stride, pads, dilation, out_hw, indices: bool = True):
    """(y, arg, order): y (N, C, OH, OW) and first-max tap indices, in x's plane order.

    ``indices=False`` (no backward to come): 3x3/2 windows compute the maxima alone
    (``max_pool2d_values_3x3s2``) and arg is None; other windows still write it.
    """
    N, C = x.shape[:2]
    OH, OW = out_hw
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    (KH, KW), (SH, SW), (DH, DW) = kernel, stride, dilation
    y = buffers.empty((planes.shape[0], OH, OW), x.dtype)             # (P, OH, OW)
    many = dispatch.PARALLEL_MIN_ELEMENTS
    if not indices and _is_3x3s2(kernel, stride, dilation):
        parallel_for(max_pool2d_values_3x3s2, N * C, planes, y, pads[0], pads[2],
                     grain=_plane_grain(x.shape, dispatch.POOL_VALUES_MIN_ELEMENTS))
        return unplanes(y, N, C, sc), None, (sn, sc)
    arg = buffers.empty(y.shape, np.uint8 if KH * KW < 256 else np.int32)
    if _is_2x2(kernel, stride, pads, dilation):
        R = _rows_per_vector(OW, x.dtype)
        if dispatch.MAX_POOL_2X2_SIMD and R >= 2 and dispatch.MAX_POOL_2X2_PACKED_ROWS:
            parallel_for(max_pool2d_forward_2x2_rows, N * C, planes, y, arg, R, grain=_plane_grain(x.shape, many))
        elif dispatch.MAX_POOL_2X2_SIMD:
            parallel_for(max_pool2d_forward_2x2_simd, N * C, planes, y, arg, simd.lanes(x.dtype),
                         grain=_plane_grain(x.shape, many))
        else:
            parallel_for(max_pool2d_forward_2x2, N * C, planes, y, arg,
                         grain=_plane_grain(x.shape, many))
    elif _is_3x3s2(kernel, stride, dilation):
        parallel_for(max_pool2d_forward_3x3s2, N * C, planes, y, arg, pads[0], pads[2],
                     grain=_plane_grain(x.shape, many))
    else:
        parallel_for(max_pool2d_forward, N * C, planes, y, arg, KH, KW, SH, SW,
                     np.asarray(pads, np.int64), DH, DW, grain=_plane_grain(x.shape, many // 4))
    return unplanes(y, N, C, sc), arg, (sn, sc)


def relu_mask_applies(kernel, stride, pads, dilation) -> bool:
    """True when ``max_pool2d_scatter`` can apply the mask of a ReLU before the pooling
    (``relu_masked``): the 2x2 kernel, whose taps carry NOT_POSITIVE."""
    return _is_2x2(kernel, stride, pads, dilation)


def _backward_2x2_kind(OW: int, dtype) -> tuple[int, int]:
    """(kind, extra) of the 2x2 backward kernel for an output row of OW windows: (2, R) row-packed,
    (1, VL) vector, (0, 0) scalar (``max_pool2d_backward_2x2_images``' numbering)."""
    R = _rows_per_vector(OW, dtype)
    if dispatch.MAX_POOL_2X2_SIMD and R >= 2 and dispatch.MAX_POOL_2X2_PACKED_ROWS:
        return 2, R
    if dispatch.MAX_POOL_2X2_SIMD:
        return 1, simd.lanes(dtype)
    return 0, 0


def max_pool2d_scatter_by_images(gy, arg, order, x_shape, relu_masked: bool = False):
    """(gx, kernel, args) of a 2x2/2 max pooling's backward (``max_pool2d_scatter``) run image by
    image: kernel(n0, n1, *args) writes images n0..n1-1 of gx (N, C, H, W) from the same images of
    gy, which may still be unwritten now (only its memory is taken). None where ``max_pool2d_scatter``
    would split the pass over threads itself (at least two threads' grain of elements: LeNet-5's
    pool 1 from batch 223 on), or gy's memory is neither NCHW nor CNHW (``as_planes`` would copy
    it now)."""
    N, C, H, W = x_shape
    if N * C >= 2 * _plane_grain(x_shape, dispatch.PARALLEL_MIN_ELEMENTS):
        return None
    if not (gy.flags.c_contiguous or gy.transpose(1, 0, 2, 3).flags.c_contiguous):
        return None
    gplanes, gsn, gsc = as_planes(gy)                                 # (P, OH, OW), gy's memory
    sc = order[1]                                                     # x's planes: 1 NCHW, N CNHW
    gx = buffers.empty((N * C, H, W), gy.dtype)                      # (P, H, W), arg's order
    kind, extra = _backward_2x2_kind(gplanes.shape[2], gx.dtype)
    keep = np.uint8(0xFF if relu_masked else TAP_BITS)
    args = (N, gplanes, gsn, gsc, arg, sc, C, gx, keep, kind, extra)
    return unplanes(gx, N, C, sc), max_pool2d_backward_2x2_images, args


def max_pool2d_scatter(gy, arg, order, x_shape, kernel, stride, pads, dilation, relu_masked: bool = False):
    """gx (N, C, H, W) of max pooling: gy sent to each window's first maximum.

    ``relu_masked`` (``relu_mask_applies`` only): a window whose maximum is <= 0 sends no
    gradient, which after a ReLU is where ReLU's backward would zero it.
    """
    N, C, H, W = x_shape
    sc = order[1]                                                     # x's planes: 1 NCHW, N CNHW
    gplanes, gsn, gsc = as_planes(gy)                                 # (P, OH, OW)
    (_, KW), (SH, SW), (DH, DW) = kernel, stride, dilation
    gx = buffers.empty((N * C, H, W), gy.dtype)                      # (P, H, W), arg's order
    many = dispatch.PARALLEL_MIN_ELEMENTS
    if _is_2x2(kernel, stride, pads, dilation):
        keep = np.uint8(0xFF if relu_masked else TAP_BITS)
        kind, extra = _backward_2x2_kind(gplanes.shape[2], gx.dtype)
        if kind == 2:
            parallel_for(max_pool2d_backward_2x2_rows, N * C, gplanes, gsn, gsc, arg, sc, C, gx, keep, extra,
                         grain=_plane_grain(x_shape, many))
        elif kind == 1:
            parallel_for(max_pool2d_backward_2x2_simd, N * C, gplanes, gsn, gsc, arg, sc, C, gx, keep, extra,
                         grain=_plane_grain(x_shape, many))
        else:
            parallel_for(max_pool2d_backward_2x2, N * C, gplanes, gsn, gsc, arg, sc, C, gx, keep,
                         grain=_plane_grain(x_shape, many))
    else:
        if relu_masked:
            raise ValueError(f"max_pool2d_scatter applies a ReLU mask to 2x2/2 windows only, got kernel {kernel}, "
                             f"stride {stride}, padding {pads}, dilation {dilation}")
        parallel_for(max_pool2d_backward, N * C, gplanes, gsn, gsc, arg, sc, C, gx,
                     KW, SH, SW, pads[0], pads[2], DH, DW, grain=_plane_grain(x_shape, many // 4))
    return unplanes(gx, N, C, sc)
