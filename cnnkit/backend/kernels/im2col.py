"""im2col and col2im as compiled passes over the cores, into reused buffers (numba).

The column matrix of a convolution has one row per (channel, kernel tap) and one column
per (image, output pixel):

    cols[(c*KH + kh)*KW + kw, (j*OH + oh)*OW + ow] = xpad[n0 + j, c, oh*SH + kh*DH, ow*SW + kw*DW]

so the convolution of a block of images is the matrix product W (F, C*KH*KW) @ cols.
NumPy builds it with one strided copy per tap over the whole batch; these kernels build
it row by row in one pass, a channel per task (no two threads write the same row), for a
block of images at a time into a scratch buffer, so the columns never need to be kept
for backward: they are rebuilt there. col2im is the adjoint (scatter-add into the input
gradient), likewise one channel per task, so the adds never race.

Layouts: x and gx are planes as in ``kernels.as_planes``.
"""

from __future__ import annotations

import numpy as np

from .. import buffers, dispatch
from ..cores import blas_threads, matmul, parallel_for
from ..workspace import scratch
from . import as_planes, njit, unplanes
from .batchnorm import affine_relu, affine_relu_block, sum_affine_relu

__all__ = ["conv2d_gemm", "conv2d_gemm_grads", "im2col_rows", "im2col_rows_padded", "im2col_rows_stride2", "col2im_rows"]


@njit(cache=True, nogil=True)
def im2col_rows(c0, c1, x, sn, sc, n0, k, KH, KW, SH, SW, DH, DW, pt, pl, OH, OW, cols):
    """Rows of channels c0..c1-1 of the column matrix of images n0..n0+k-1 (zero padding).

    Written with flat indices (no slices in the inner loops: numba's slice objects cost
    more than copying a short row).
    """
    H, W = x.shape[1], x.shape[2]
    zero = np.zeros(1, cols.dtype)[0]
    for c in range(c0, c1):
        for kh in range(KH):
            for kw in range(KW):
                dst = cols[(c * KH + kh) * KW + kw]
                off = kw * DW - pl
                # output columns whose input column w = ow*SW + off lies in [0, W)
                lo = 0 if off >= 0 else (-off + SW - 1) // SW
                hi = 0 if W - off <= 0 else min(OW, (W - off + SW - 1) // SW)
                lo = min(lo, hi)
                for j in range(k):
                    src = x[(n0 + j) * sn + c * sc]
                    for oh in range(OH):
                        d0 = (j * OH + oh) * OW
                        h = oh * SH + kh * DH - pt
                        if h < 0 or h >= H:
                            for ow in range(OW):
                                dst[d0 + ow] = zero
                            continue
                        for ow in range(lo):
                            dst[d0 + ow] = zero
                        if SW == 1:
                            for ow in range(lo, hi):
                                dst[d0 + ow] = src[h, ow + off]
                        else:
                            for ow in range(lo, hi):
                                dst[d0 + ow] = src[h, ow * SW + off]
                        for ow in range(hi, OW):
                            dst[d0 + ow] = zero


@njit(cache=True, nogil=True)
def im2col_rows_padded(c0, c1, x, sn, sc, n0, k, KH, KW, SH, SW, DH, DW, pt, pl, OH, OW, cols):
    """``im2col_rows`` by way of a zero-padded copy of each plane: every column row is then a
    plain strided copy, without the per-row bounds and zero fills (the same values).

    The padded plane holds exactly the rows and columns the taps read: row r is input row
    r - pt (zero outside the input), so pt may be negative (``_output_rows``' blocks).
    Faster for stride-1 kernels larger than 1x1, which read each input KH*KW times (one
    thread: 512x7x7 at batch 1 343 -> 226 us, 256x14x14 520 -> 347, 64x56x56 1763 -> 955);
    with stride 2 each input is read ~KH*KW/4 times and the plane's copy made 3x3/2 layers
    at batch 8 up to 1.3x slower; a 1x1 kernel reads each input once.
    """
    H, W = x.shape[1], x.shape[2]
    Hp, Wp = (OH - 1) * SH + (KH - 1) * DH + 1, (OW - 1) * SW + (KW - 1) * DW + 1
    pad = np.zeros((Hp, Wp), cols.dtype)
    h0, h1 = max(0, -pt), min(H, Hp - pt)                             # input rows inside the plane
    w0, w1 = max(0, -pl), min(W, Wp - pl)
    for c in range(c0, c1):
        for j in range(k):
            src = x[(n0 + j) * sn + c * sc]
            for h in range(h0, h1):
                for w in range(w0, w1):
                    pad[pt + h, pl + w] = src[h, w]
            for kh in range(KH):
                for kw in range(KW):
                    dst = cols[(c * KH + kh) * KW + kw]
                    first = kw * DW
                    for oh in range(OH):
                        d0 = (j * OH + oh) * OW
                        row = pad[oh * SH + kh * DH]
                        if SW == 1:
                            for ow in range(OW):
                                dst[d0 + ow] = row[first + ow]
                        else:
                            for ow in range(OW):
                                dst[d0 + ow] = row[first + ow * SW]


@njit(cache=True, nogil=True)
def im2col_rows_stride2(c0, c1, x, sn, sc, n0, k, KH, KW, SH, SW, DH, DW, pt, pl, OH, OW, cols):
    """``im2col_rows`` for a column stride of 2 (SW == 2; any row stride, dilation, padding):
    the same values, by way of each input row's two column phases.

    Output column ow of tap kw reads input column 2*ow + off (off = kw*DW - pl): entry
    ow + off // 2 of the row's column phase off % 2. Each input row the taps read is split
    into its phases once per channel and image (a per-call buffer with zeros where the taps
    run past the row), and every column row is then a unit-stride copy of OW phase entries;
    im2col_rows gathers with stride 2 per tap instead, KW times per input entry. Inner loops
    run over 1-D slices indexed from 0 (an offset index keeps numba's wraparound check in the
    loop, which LLVM then does not vectorize). Used for kernels wider than 1
    (``_columns_kernel``): a 1-column kernel reads each input entry once, and its split would
    be a second pass.
    """
    H, W = x.shape[1], x.shape[2]
    zero = np.zeros(1, cols.dtype)[0]
    h0 = max(0, -pt)                                                  # input rows the taps read
    h1 = min(H, (OH - 1) * SH + (KH - 1) * DH - pt + 1)
    PL = (pl + 1) // 2                                                # zeros before phase entry 0
    L = PL + max((W + 1) // 2, ((KW - 1) * DW - pl) // 2 + OW)        # a phase row, padded
    ph = np.zeros((2, max(1, h1 - h0), L), cols.dtype)                # (phase, input row, entry)
    We, Wo = (W + 1) // 2, W // 2                                     # entries of phase 0, 1
    for c in range(c0, c1):
        for j in range(k):
            src = x[(n0 + j) * sn + c * sc]
            for h in range(h0, h1):
                row = src[h]
                e = ph[0, h - h0, PL:]
                o = ph[1, h - h0, PL:]
                for q in range(Wo):
                    e[q] = row[2 * q]
                    o[q] = row[2 * q + 1]
                if We > Wo:
                    e[Wo] = row[W - 1]
            for kh in range(KH):
                for kw in range(KW):
                    dst = cols[(c * KH + kh) * KW + kw]
                    off = kw * DW - pl
                    b, q0 = off % 2, off // 2 + PL                    # its phase; the entry of ow = 0
                    for oh in range(OH):
                        d = dst[(j * OH + oh) * OW:]
                        h = oh * SH + kh * DH - pt
                        if h < 0 or h >= H:
                            for ow in range(OW):
                                d[ow] = zero
                        else:
                            r = ph[b, h - h0, q0:]
                            for ow in range(OW):
                                d[ow] = r[ow]


@njit(cache=True, nogil=True)
def col2im_rows(c0, c1, gcols, n0, k, C, KH, KW, SH, SW, DH, DW, pt, pl, OH, OW, gx, gsn, gsc):
    """gx[n0 + j, c] = the sum of gcols' entries that im2col took from there, for c0..c1-1.

    gx planes (N*C, H, W) are written in full for the channels and images given.
    """
    H, W = gx.shape[1], gx.shape[2]
    for c in range(c0, c1):
        for j in range(k):
            dst = gx[(n0 + j) * gsn + c * gsc]
            dst[:, :] = 0
            for kh in range(KH):
                for kw in range(KW):
                    src = gcols[(c * KH + kh) * KW + kw]
                    off = kw * DW - pl
                    lo = 0 if off >= 0 else (-off + SW - 1) // SW
                    hi = 0 if W - off <= 0 else min(OW, (W - off + SW - 1) // SW)
                    for oh in range(OH):
                        h = oh * SH + kh * DH - pt
                        if h < 0 or h >= H:
                            continue
                        s0 = (j * OH + oh) * OW
                        if SW == 1:
                            for ow in range(lo, hi):
                                dst[h, ow + off] += src[s0 + ow]
                        else:
                            for ow in range(lo, hi):
                                dst[h, ow * SW + off] += src[s0 + ow]


# ---------------------------------------------------------------------------------------
# Array plumbing called by Conv2dGemmOp: blocks, scratch buffers, threads. Pure Python.
# ---------------------------------------------------------------------------------------


def _is_pointwise(KH, KW, stride, pads, dilation) -> bool:
    """A 1x1 convolution without stride or padding: a plain matrix product, no columns."""
    return (KH, KW) == (1, 1) and tuple(stride) == (1, 1) and not any(pads)


def _blocks(N: int, per_image_bytes: int, block_bytes=None):
    """Ranges of images whose columns fit block_bytes (default dispatch.COLUMNS_BLOCK_BYTES)."""
    limit = dispatch.COLUMNS_BLOCK_BYTES if block_bytes is None else block_bytes
    size = max(1, min(N, limit // max(1, per_image_bytes)))
    return [(n0, min(N, n0 + size)) for n0 in range(0, N, size)]


def _columns_kernel(KH: int, KW: int, SH: int, SW: int):
    """The im2col kernel: ``im2col_rows_padded`` for stride-1 kernels beyond 1x1
    (``dispatch.IM2COL_PADDED``), ``im2col_rows_stride2`` for kernels wider than 1 with a
    column stride of 2 (``dispatch.IM2COL_STRIDE2``), else ``im2col_rows``."""
    if dispatch.IM2COL_PADDED and KH * KW > 1 and SH == SW == 1:
        return im2col_rows_padded
    return im2col_rows_stride2 if dispatch.IM2COL_STRIDE2 and SW == 2 and KW > 1 else im2col_rows


def _im2col(planes, sn, sc, n0, n1, C, w_shape, geometry, cols):
    (KH, KW), (SH, SW), (DH, DW), (pt, pl), (OH, OW) = geometry
    parallel_for(_columns_kernel(KH, KW, SH, SW), C, planes, sn, sc, n0, n1 - n0, KH, KW, SH, SW, DH, DW, pt, pl, OH,
                 OW, cols,
                 grain=max(1, dispatch.IM2COL_MIN_ELEMENTS // max(1, (n1 - n0) * OH * OW * KH * KW)))


def _output_rows(r0, r1, planes, sn, sc, C, wm, geometry, y, epilogue=None):
    """Output rows r0..r1-1 of the one image, on the calling thread: their columns into this
    thread's scratch buffer, then the product into y (one group), then ``epilogue`` on them."""
    (KH, KW), (SH, SW), (DH, DW), (pt, pl), (OH, OW) = geometry
    F, K = wm.shape
    cols = scratch("gemm.rows", (K, (r1 - r0) * OW), y.dtype)         # (C*KH*KW, r*OW)
    # row r0 is row 0 of an image whose top padding is pt - r0*SH
    _columns_kernel(KH, KW, SH, SW)(0, C, planes, sn, sc, 0, 1, KH, KW, SH, SW, DH, DW, pt - r0 * SH, pl, r1 - r0,
                                    OW, cols)
    np.matmul(wm, cols, out=y[:, 0, r0:r1].reshape(F, (r1 - r0) * OW))  # one BLAS thread (the caller's)
    if epilogue is not None:
        affine_relu_block(0, F, y, 0, 1, r0, r1, *epilogue)


def _channel_groups(s0, s1, planes, sc, bounds, wm, geometry, parts):
    """Channel groups s0..s1-1 of the one image, on the calling thread: a group's column rows
    into this thread's scratch buffer, then its share of the product, W[:, its rows] @ those
    rows, into parts[group] (one BLAS thread: the caller's setting)."""
    (KH, KW), (SH, SW), (DH, DW), (pt, pl), (OH, OW) = geometry
    kernel = _columns_kernel(KH, KW, SH, SW)
    for s in range(s0, s1):
        c0, c1 = bounds[s], bounds[s + 1]
        cols = scratch("gemm.group", ((c1 - c0) * KH * KW, OH * OW), parts.dtype)  # (group's C*KH*KW, OH*OW)
        kernel(0, c1 - c0, planes[c0 * sc:], 0, sc, 0, 1, KH, KW, SH, SW, DH, DW, pt, pl, OH, OW, cols)
        np.matmul(wm[:, c0 * KH * KW : c1 * KH * KW], cols, out=parts[s])


def _forward_by_channels(planes, sc, C, wm, geometry, y, epilogue=None):
    """y (F, 1, OH, OW) of one image as the sum of ``dispatch.GEMM_CHANNEL_GROUPS`` products
    over groups of input channels, each group's columns built and multiplied by one thread;
    ``epilogue`` in the sum's pass (``batchnorm.sum_affine_relu``).

    The groups and the order of their sum do not depend on the thread count: the same bits
    on any number of threads."""
    S = dispatch.GEMM_CHANNEL_GROUPS
    F, OH, OW = y.shape[0], y.shape[2], y.shape[3]
    bounds = [C * s // S for s in range(S + 1)]
    parts = scratch("gemm.parts", (S, F, OH * OW), y.dtype)           # (S, F, OH*OW)
    with blas_threads(1):
        parallel_for(_channel_groups, S, planes, sc, bounds, wm, geometry, parts, per_thread=1)
    out = y.reshape(F, OH * OW)                                       # (F, OH*OW)
    if epilogue is not None:
        scale, shift, r, relu = epilogue
        r = r.reshape(F, OH * OW) if r.size else r.reshape(0, 0)     # (F, OH*OW)
        parallel_for(sum_affine_relu, F, parts, out, scale, shift, r, bool(relu),
                     grain=max(1, dispatch.inference_grain() // max(1, OH * OW)))
        return
    np.add(parts[0], parts[1], out=out)
    for s in range(2, S):
        out += parts[s]


def conv2d_gemm(x, w, b, stride, pads, dilation, groups: int, out_hw, block_bytes=None, epilogue=None):
    """y (F, N, OH, OW) channel-major memory of the convolution of x (N, C, H, W).

    epilogue: (scale, shift, r, relu) with b None: y = relu(y*scale + shift (+ r)) (without
    the ReLU where ``relu`` is False)
    (``batchnorm.affine_relu_block``), by each thread on its rows where the threads split the
    output rows, in the channel groups' sum pass, else in a pass of its own.
    """
    if epilogue is not None and b is not None:
        raise ValueError("conv2d_gemm applies an epilogue to convolutions without a bias only")
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    G = groups
    OH, OW = out_hw
    pt, _, pl, _ = pads
    y = buffers.empty((F, N, OH, OW), x.dtype)                        # (F, N, OH, OW)
    wm = np.ascontiguousarray(w).reshape(G, F // G, Cg * KH * KW)     # (G, F/G, Cg*KH*KW)
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    pointwise = _is_pointwise(KH, KW, stride, pads, dilation)
    geometry = ((KH, KW), tuple(stride), tuple(dilation), (pt, pl), (OH, OW))
    if G == 1 and not pointwise and dispatch.gemm_by_rows(N, OH * OW, wm.nbytes, C * KH * KW * OH * OW * x.dtype.itemsize,
                                                           F * C * KH * KW * OH * OW):
        with blas_threads(1):
            parallel_for(_output_rows, OH, planes, sn, sc, C, wm[0], geometry, y, epilogue,
                         grain=-(-dispatch.PARALLEL_MIN_MACS // (F * Cg * KH * KW * OW)),
                         per_thread=dispatch.ROWS_PER_THREAD, piece_grain=True)
        if b is not None:
            y += b.reshape(F, 1, 1, 1)
        return y
    if G == 1 and not pointwise and dispatch.gemm_by_channels(N, OH * OW, C, F * C * KH * KW * OH * OW):
        _forward_by_channels(planes, sc, C, wm[0], geometry, y, epilogue)
        if b is not None:
            y += b.reshape(F, 1, 1, 1)
        return y
    for n0, n1 in _blocks(N, C * KH * KW * OH * OW * x.dtype.itemsize, block_bytes):
        k = n1 - n0
        if pointwise and sc == N:                                     # CNHW memory: x is already cols
            cols = planes.reshape(C, N * H * W)[:, n0 * H * W : n1 * H * W]  # (C, k*H*W) view
        else:
            cols = scratch("gemm.cols", (C * KH * KW, k * OH * OW), x.dtype)
            _im2col(planes, sn, sc, n0, n1, C, w.shape, geometry, cols)
        cols = cols.reshape(G, Cg * KH * KW, k * OH * OW)             # (G, Cg*KH*KW, k*OH*OW)
        yb = y.reshape(G, F // G, N * OH * OW)[:, :, n0 * OH * OW : n1 * OH * OW]
        matmul(wm, cols, out=yb)                                      # (G, F/G, k*OH*OW)
    if b is not None:
        y += b.reshape(F, 1, 1, 1)
    if epilogue is not None:
        affine_relu(y, *epilogue)
    return y


def conv2d_gemm_grads(x, w, gy, stride, pads, dilation, groups: int, need_x: bool, need_w: bool,
                      block_bytes=None):
    """(gx, gw) of ``conv2d_gemm``: columns rebuilt per block (gW = gY @ cols^T), and
    gx = col2im(W^T @ gY). gx is an (N, C, H, W) view in x's memory order, or None."""
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    G = groups
    OH, OW = gy.shape[2:]
    pt, _, pl, _ = pads
    (SH, SW), (DH, DW) = stride, dilation
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    gyc = gy.transpose(1, 0, 2, 3)                                    # (F, N, OH, OW)
    wm = np.ascontiguousarray(w).reshape(G, F // G, Cg * KH * KW)     # (G, F/G, Cg*KH*KW)
    wt = np.ascontiguousarray(wm.transpose(0, 2, 1))                  # (G, Cg*KH*KW, F/G)
    gw = np.zeros((G, F // G, Cg * KH * KW), gy.dtype) if need_w else None
    gx = buffers.empty_like(planes) if need_x else None               # (P, H, W), x's order
    pointwise = _is_pointwise(KH, KW, stride, pads, dilation)
    geometry = ((KH, KW), tuple(stride), tuple(dilation), (pt, pl), (OH, OW))
    for n0, n1 in _blocks(N, C * KH * KW * OH * OW * x.dtype.itemsize, block_bytes):
        k = n1 - n0
        g = np.ascontiguousarray(gyc[:, n0:n1]).reshape(G, F // G, k * OH * OW)  # (G, F/G, k*OH*OW)
        if need_w:
            if pointwise and sc == N:
                cols = planes.reshape(C, N * H * W)[:, n0 * H * W : n1 * H * W]
            else:
                cols = scratch("gemm.cols", (C * KH * KW, k * OH * OW), x.dtype)
                _im2col(planes, sn, sc, n0, n1, C, w.shape, geometry, cols)
            cols = cols.reshape(G, Cg * KH * KW, k * OH * OW)
            part = scratch("gemm.gw", gw.shape, gy.dtype)
            matmul(g, cols.transpose(0, 2, 1), out=part)              # (G, F/G, Cg*KH*KW)
            gw += part
        if need_x:
            gcols = scratch("gemm.gcols", (G, Cg * KH * KW, k * OH * OW), gy.dtype)
            matmul(wt, g, out=gcols)                                  # (G, Cg*KH*KW, k*OH*OW)
            parallel_for(col2im_rows, C, gcols.reshape(C * KH * KW, k * OH * OW), n0, k, C, KH, KW, SH, SW,
                         DH, DW, pt, pl, OH, OW, gx, sn, sc,
                         grain=max(1, dispatch.PARALLEL_MIN_ELEMENTS // max(1, k * OH * OW * KH * KW)))
    return (unplanes(gx, N, C, sc) if need_x else None), (gw.reshape(w.shape) if need_w else None)
