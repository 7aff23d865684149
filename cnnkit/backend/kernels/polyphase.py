"""Strided convolutions of few channels: polyphase columns and products in cache-sized blocks (numba).

A stride-S convolution reads input row S*oh + kh: row oh + kh // S of the input's phase
kh % S, the rows whose index has that residue modulo S (likewise for columns). With the
zero-padded input split into its SH*SW phases (a space-to-depth rearrangement),

    phases[n, c, a, b, i, j] = xpad[n, c, SH*i + a, SW*j + b]
    y[n, f, oh, ow] = sum_{c, kh, kw} w[f, c, kh, kw]
                      * phases[n, c, kh % SH, kw % SW, oh + kh // SH, ow + kw // SW]

the convolution becomes stride 1 on the phases, and each row of the column matrix of one
output row is a contiguous run of OW entries of a phase row: building the columns is a
series of short contiguous copies instead of a strided gather. The columns of R output
rows of one image at a time (R chosen so they fit ``dispatch.POLYPHASE_BLOCK_BYTES``, a
share of the core's L2 cache) are built and multiplied at once,
W (F, C*KH*KW) @ cols (C*KH*KW, R*OW), straight into the output: they never travel to
memory and back, which is what the whole-batch im2col of ``kernels/im2col.py`` costs on
ResNet's 7x7/2 stem (3 input channels: a reduction of only 147 per output, C*KH*KW/(SH*SW)
= 37 times the input's size in columns).

Backward: the weight gradient rebuilds the same blocks, gW^T += cols @ gY_block^T, summed
per fixed group of blocks and then over groups in order (the result does not depend on
the number of threads); the input gradient (rarely needed: a network's first layer) is
``kernels/im2col.py``'s col2im path.

Layouts: the phases are built for blocks of images of at most
``dispatch.COLUMNS_BLOCK_BYTES`` (the scratch stays bounded); the k-th image of a block is
one flat run ``phases[k*C*SH*SW*PH*PW : ...]`` in (c, a, b, i, j) order; x planes as in
``kernels.as_planes``; y (F, N, OH, OW) memory.
"""

from __future__ import annotations

import numpy as np

from .. import dispatch
from ..cores import blas_threads, parallel_for
from ..workspace import scratch
from . import as_planes, im2col, njit

__all__ = ["conv2d_polyphase", "conv2d_polyphase_grads", "phase_planes", "polyphase_columns"]


@njit(cache=True, nogil=True)
def phase_planes(k0, k1, x, sn, sc, first, C, SH, SW, pt, pl, PH, PW, out):
    """The phases of images first + k0..first + k1-1: out[(((k*C + c)*SH + a)*SW + b)*PH*PW
    + i*PW + j] = x[first + k, c, SH*i + a - pt, SW*j + b - pl], zero outside x (the
    padding and beyond)."""
    H, W = x.shape[1], x.shape[2]
    for k in range(k0, k1):
        n = first + k
        for c in range(C):
            src = x[n * sn + c * sc]
            for a in range(SH):
                for b in range(SW):
                    base = (((k * C + c) * SH + a) * SW + b) * PH * PW
                    off = b - pl
                    # phase columns j whose input column SW*j + off lies in [0, W)
                    lo = 0 if off >= 0 else (-off + SW - 1) // SW
                    hi = 0 if W - off <= 0 else min(PW, (W - off + SW - 1) // SW)
                    lo = min(lo, hi)
                    for i in range(PH):
                        dst = out[base + i * PW : base + (i + 1) * PW]
                        h = SH * i + a - pt
                        if h < 0 or h >= H:
                            for j in range(PW):
                                dst[j] = 0
                            continue
                        row = src[h]
                        for j in range(lo):
                            dst[j] = 0
                        for j in range(lo, hi):
                            dst[j] = row[SW * j + off]
                        for j in range(hi, PW):
                            dst[j] = 0


@njit(cache=True, nogil=True)
def polyphase_columns(phases, base, C, SH, SW, PH, PW, KH, KW, oh0, R, OW, cols):
    """The column matrix (C*KH*KW, R*OW), flat, of output rows oh0..oh0+R-1 of the image
    whose phases start at ``base``: row (c*KH + kh)*KW + kw, column r*OW + ow holds
    phase (c, kh % SH, kw % SW) at (oh0 + r + kh // SH, ow + kw // SW)."""
    n = R * OW
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                d = ((c * KH + kh) * KW + kw) * n
                s = base + (((c * SH + kh % SH) * SW + kw % SW) * PH + oh0 + kh // SH) * PW + kw // SW
                for r in range(R):
                    # 1-D slices indexed from 0: the copy vectorizes (see kernels/__init__.py)
                    dst = cols[d + r * OW : d + (r + 1) * OW]
                    src = phases[s + r * PW : s + r * PW + OW]
                    for ow in range(OW):
                        dst[ow] = src[ow]


# ---------------------------------------------------------------------------------------
# Array plumbing called by Conv2dPolyphaseOp: phases, blocks, threads. Pure Python.
# ---------------------------------------------------------------------------------------


class _Geometry:
    """Sizes shared by the block loops (one object instead of a dozen arguments)."""

    def __init__(self, x_shape, w_shape, stride, pads, out_hw, itemsize: int, block_bytes=None):
        N, C, H, W = x_shape
        F, _, KH, KW = w_shape
        self.N, self.C, self.F, self.KH, self.KW = N, C, F, KH, KW
        self.SH, self.SW = stride
        self.pt, _, self.pl, _ = pads
        self.OH, self.OW = out_hw
        # ceil(padded size / stride): the last phase row any tap reads
        self.PH = -(-(H + pads[0] + pads[1]) // self.SH)
        self.PW = -(-(W + pads[2] + pads[3]) // self.SW)
        self.K = C * KH * KW
        limit = dispatch.POLYPHASE_BLOCK_BYTES if block_bytes is None else block_bytes
        self.R = max(1, min(self.OH, limit // (self.K * self.OW * itemsize)))   # output rows per block
        self.blocks = -(-self.OH // self.R)                                     # blocks per image
        self.image = C * self.SH * self.SW * self.PH * self.PW                  # phase entries per image

    def block(self, t: int):
        """(image, first output row, rows) of block t."""
        n, k = divmod(t, self.blocks)
        oh0 = k * self.R
        return n, oh0, min(self.R, self.OH - oh0)


def _image_blocks(g: _Geometry, itemsize: int):
    """Ranges of images whose phases fit dispatch.COLUMNS_BLOCK_BYTES (scratch stays bounded)."""
    size = max(1, min(g.N, dispatch.COLUMNS_BLOCK_BYTES // max(1, g.image * itemsize)))
    return [(n0, min(g.N, n0 + size)) for n0 in range(0, g.N, size)]


def _phases(x, g: _Geometry, n0: int, n1: int):
    """The phases of images n0..n1-1, image n0 first (flat, in a scratch buffer)."""
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    out = scratch("polyphase.phases", ((n1 - n0) * g.image,), x.dtype)
    parallel_for(phase_planes, n1 - n0, planes, sn, sc, n0, g.C, g.SH, g.SW, g.pt, g.pl, g.PH, g.PW, out,
                 grain=max(1, dispatch.PARALLEL_MIN_ELEMENTS // max(1, g.image)))
    return out


def _image_rows(a):
    """(N, F, OH*OW) view of a 4-D (N, F, OH, OW) array in NCHW or CNHW memory (else a copy)."""
    N, F, OH, OW = a.shape
    if a.flags.c_contiguous:
        return a.reshape(N, F, OH * OW)                               # (N, F, OH*OW)
    ac = a.transpose(1, 0, 2, 3)                                      # (F, N, OH, OW)
    if not ac.flags.c_contiguous:
        ac = np.ascontiguousarray(ac)
    return ac.reshape(F, N, OH * OW).transpose(1, 0, 2)               # (N, F, OH*OW) view


def _columns(phases, g: _Geometry, k: int, oh0: int, r: int):
    """Columns of output rows oh0..oh0+r-1 of the k-th image in ``phases``."""
    cols = scratch("polyphase.cols", (g.K * g.R * g.OW,), phases.dtype)[: g.K * r * g.OW]
    polyphase_columns(phases, k * g.image, g.C, g.SH, g.SW, g.PH, g.PW, g.KH, g.KW, oh0, r, g.OW, cols)
    return cols.reshape(g.K, r * g.OW)                                # (C*KH*KW, r*OW)


def _forward_blocks(t0, t1, phases, n0, wm, b, y_rows, g: _Geometry):
    for t in range(t0, t1):
        k, oh0, r = g.block(t)
        out = y_rows[n0 + k, :, oh0 * g.OW : (oh0 + r) * g.OW]        # (F, r*OW) view of y
        np.matmul(wm, _columns(phases, g, k, oh0, r), out=out)
        if b is not None:
            out += b[:, None]


def _weight_grad_groups(i0, i1, phases, n0, gy_rows, parts, bounds, g: _Geometry):
    for i in range(i0, i1):
        part = parts[i]                                               # (C*KH*KW, F)
        part[...] = 0
        tmp = scratch("polyphase.gw", part.shape, part.dtype)
        for t in range(bounds[i], bounds[i + 1]):
            k, oh0, r = g.block(t)
            gyb = gy_rows[n0 + k, :, oh0 * g.OW : (oh0 + r) * g.OW]   # (F, r*OW)
            # gW^T = cols @ gY^T: 1.2x faster here than gY @ cols^T (BLAS reads the
            # columns along their rows)
            np.matmul(_columns(phases, g, k, oh0, r), gyb.T, out=tmp)
            part += tmp


# Blocks are summed in this many fixed groups (at most) per block of images, whatever the
# number of threads, so the weight gradient's rounding does not depend on it.
_WEIGHT_GRAD_GROUPS = 16


def conv2d_polyphase(x, w, b, stride, pads, out_hw, block_bytes=None):
    """y (F, N, OH, OW) channel-major memory of the convolution of x (N, C, H, W) (dilation 1, one group)."""
    g = _Geometry(x.shape, w.shape, tuple(stride), pads, out_hw, x.dtype.itemsize, block_bytes)
    y = np.empty((g.F, g.N, g.OH, g.OW), x.dtype)                     # (F, N, OH, OW)
    wm = np.ascontiguousarray(w).reshape(g.F, g.K)                    # (F, C*KH*KW)
    y_rows = y.reshape(g.F, g.N, g.OH * g.OW).transpose(1, 0, 2)      # (N, F, OH*OW) view
    with blas_threads(1):
        for n0, n1 in _image_blocks(g, x.dtype.itemsize):
            phases = _phases(x, g, n0, n1)
            parallel_for(_forward_blocks, (n1 - n0) * g.blocks, phases, n0, wm, b, y_rows, g)
    return y


def conv2d_polyphase_grads(x, w, gy, stride, pads, need_x: bool, need_w: bool, block_bytes=None):
    """(gx, gw) of ``conv2d_polyphase``; gx (or None) from ``kernels/im2col.py``'s col2im path."""
    gx = None
    if need_x:
        gx, _ = im2col.conv2d_gemm_grads(x, w, gy, tuple(stride), pads, (1, 1), 1, True, False)
    if not need_w:
        return gx, None
    g = _Geometry(x.shape, w.shape, tuple(stride), pads, gy.shape[2:], x.dtype.itemsize, block_bytes)
    gy_rows = _image_rows(gy)                                         # (N, F, OH*OW)
    gwt = np.zeros((g.K, g.F), gy.dtype)                              # (C*KH*KW, F)
    with blas_threads(1):
        for n0, n1 in _image_blocks(g, x.dtype.itemsize):
            tasks = (n1 - n0) * g.blocks
            groups = min(tasks, _WEIGHT_GRAD_GROUPS)
            bounds = [tasks * i // groups for i in range(groups + 1)]
            parts = np.empty((groups, g.K, g.F), gy.dtype)            # (groups, C*KH*KW, F)
            phases = _phases(x, g, n0, n1)
            parallel_for(_weight_grad_groups, groups, phases, n0, gy_rows, parts, bounds, g)
            gwt += parts.sum(axis=0)
    return gx, np.ascontiguousarray(gwt.T).reshape(w.shape)
