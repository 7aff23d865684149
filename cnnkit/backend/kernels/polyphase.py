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

Forward without columns ("direct", ``dispatch.POLYPHASE_DIRECT``): being stride 1 on the
phases, the convolution is also a direct one over their flat rows, as in
``kernels/conv_blocked.py``: output pixel i = oh*PW + ow reads tap (c, kh, kw) at the
fixed offset ((c*SH + kh % SH)*SW + kw % SW)*PH*PW + (kh // SH)*PW + kw // SW from i, and
a tile of 8 output channels by 2 vectors of pixels stays in registers over all C*KH*KW
taps (``simd``). Only the taps that exist are visited (no zero-padded 8x8 kernel); the
waste is the flat rows' junk columns, (PW - OW)/PW (3 of 115 on the stem). Work items are
bands of output rows of one image, all channels, written through a band buffer that
stays in L2. ResNet-18's stem at batch 1, one thread, CPU time: 3.1-3.4 ms against the
columns' 4.4-4.7 and PyTorch's 3.0-3.1 (Dec 4, load 5-6).

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

from .. import buffers, dispatch
from ..cores import blas_threads, parallel_for
from ..workspace import scratch
from . import FASTMATH, as_planes, im2col, njit
from .simd import acc_alloc, acc_bias, acc_outer, acc_put

__all__ = ["conv2d_polyphase", "conv2d_polyphase_grads", "phase_planes", "polyphase_columns", "polyphase_direct"]


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


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _band_tile(FR, PV, phases, base, offs, wt, bias, band, f0, i0, ib, Lb):
    """band[(f0 + k)*Lb + i0 - ib + p*VL : +VL] for k < FR, p < PV (literals): bias plus
    the sum over every tap t of wt[t, f] * phases[base + offs[t] + i]."""
    F = wt.shape[1]
    acc = acc_alloc(32, phases)
    acc_bias(acc, FR, PV, bias, f0)
    for t in range(offs.shape[0]):
        acc_outer(acc, FR, PV, wt, t * F + f0, phases, base + offs[t] + i0)
    acc_put(acc, FR, PV, band, f0 * Lb + i0 - ib, Lb)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _band_channels(FR, phases, base, offs, wt, bias, band, f0, ib, Lb, VL):
    """Channels f0 .. f0 + FR - 1 (a literal) of one band: tiles of two vectors, then one."""
    nv = Lb // VL
    v = 0
    while v + 2 <= nv:
        _band_tile(FR, 2, phases, base, offs, wt, bias, band, f0, ib + v * VL, ib, Lb)
        v += 2
    if v < nv:
        _band_tile(FR, 1, phases, base, offs, wt, bias, band, f0, ib + v * VL, ib, Lb)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def polyphase_direct(k0, k1, phases, image, offs, wt, bias, y, PW, R, bands, band):
    """Bands k0..k1-1 of the convolution on the phases; y (F, N, OH, OW) written in full.

    Band k is output rows (k % bands)*R .. + R - 1 of image k // bands, every channel:
    flat pixels i = oh*PW + ow from oh0*PW on, each output one band's, summed tap by tap
    in ``offs`` order whatever the split (results do not depend on the threads).

    Args:
        phases: the phases of every image, flat (``phase_planes``), image n from n*image,
            followed by at least PW + VL entries (the last vectors read past the planes).
        offs: flat offset of each tap (c, kh, kw), row-major, within an image's phases.
        wt: filters by tap (C*KH*KW, F), C-contiguous; bias (F,) (zeros without one).
        band: scratch of at least F * ceil(((R - 1)*PW + OW) / VL) * VL entries.
    """
    F, OH, OW = y.shape[0], y.shape[2], y.shape[3]
    VL = 64 // phases.itemsize
    for k in range(k0, k1):
        n, oh0 = k // bands, (k % bands) * R
        r = min(R, OH - oh0)
        ib = oh0 * PW
        Lb = -(-((r - 1) * PW + OW) // VL) * VL          # whole vectors over the band's flat rows
        f0 = 0
        while f0 + 8 <= F:
            _band_channels(8, phases, n * image, offs, wt, bias, band, f0, ib, Lb, VL)
            f0 += 8
        if f0 + 4 <= F:
            _band_channels(4, phases, n * image, offs, wt, bias, band, f0, ib, Lb, VL)
            f0 += 4
        if f0 + 2 <= F:
            _band_channels(2, phases, n * image, offs, wt, bias, band, f0, ib, Lb, VL)
            f0 += 2
        if f0 < F:
            _band_channels(1, phases, n * image, offs, wt, bias, band, f0, ib, Lb, VL)
        for f in range(F):
            for q in range(r):
                dst, src = y[f, n, oh0 + q], band[f * Lb + q * PW : f * Lb + q * PW + OW]
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


def _direct_bands(k0, k1, phases, image, offs, wt, bias, y, PW, R, bands):
    """``polyphase_direct`` on bands k0..k1-1 with this thread's band buffer (kept across calls:
    no fresh memory map per call)."""
    VL = 64 // phases.itemsize
    band = scratch("polyphase.band", (y.shape[0] * (-(-((R - 1) * PW + y.shape[3]) // VL) * VL),), phases.dtype)
    polyphase_direct(k0, k1, phases, image, offs, wt, bias, y, PW, R, bands, band)


_offsets: dict = {}       # (C, KH, KW, SH, SW, PH, PW) -> tap offsets (C*KH*KW,), never written


def _tap_offsets(g: _Geometry):
    """Offset of tap (c, kh, kw) in the flat phases from the output pixel it serves:
    ((c*SH + kh % SH)*SW + kw % SW)*PH*PW + (kh // SH)*PW + kw // SW, in (c, kh, kw) order.
    With ``dispatch.POLYPHASE_OFFSETS_CACHE`` made once per geometry (a meshgrid and a dozen
    array operations, 24 us hot and ~0.2 ms as the first op of a ResNet-18 pass; 0: per call)."""
    key = (g.C, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW)
    offs = _offsets.get(key) if dispatch.POLYPHASE_OFFSETS_CACHE else None
    if offs is None:
        c, kh, kw = np.meshgrid(np.arange(g.C), np.arange(g.KH), np.arange(g.KW), indexing="ij")
        offs = ((((c * g.SH + kh % g.SH) * g.SW + kw % g.SW) * g.PH + kh // g.SH) * g.PW + kw // g.SW).ravel()
        if dispatch.POLYPHASE_OFFSETS_CACHE:
            if len(_offsets) >= 256:    # many input sizes: start again rather than grow
                _offsets.clear()
            _offsets[key] = offs
    return offs


def _direct(x, w, b, g: _Geometry, y):
    """``polyphase_direct`` over every band of every image, into y (F, N, OH, OW)."""
    VL = 64 // x.dtype.itemsize
    offs = _tap_offsets(g)
    wt = np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(g.K, g.F)            # (C*KH*KW, F)
    bias = np.zeros(g.F, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    R = max(1, dispatch.POLYPHASE_DIRECT_BAND_ROWS)
    bands = -(-g.OH // R)
    band_macs = g.F * g.K * min(R, g.OH) * g.OW
    for n0, n1 in _image_blocks(g, x.dtype.itemsize):
        planes, sn, sc = as_planes(x)                                 # (P, H, W)
        phases = scratch("polyphase.phases", ((n1 - n0) * g.image + g.PW + 2 * VL,), x.dtype)
        parallel_for(phase_planes, n1 - n0, planes, sn, sc, n0, g.C, g.SH, g.SW, g.pt, g.pl, g.PH, g.PW, phases,
                     grain=max(1, dispatch.PARALLEL_MIN_ELEMENTS // max(1, g.image)))
        parallel_for(_direct_bands, (n1 - n0) * bands, phases, g.image, offs, wt, bias, y[:, n0:n1], g.PW, R,
                     bands, grain=max(1, dispatch.PARALLEL_MIN_MACS // max(1, band_macs)))
    return y


def conv2d_polyphase(x, w, b, stride, pads, out_hw, block_bytes=None):
    """y (F, N, OH, OW) channel-major memory of the convolution of x (N, C, H, W) (dilation 1, one group).

    ``dispatch.POLYPHASE_DIRECT``: the direct kernel on the phases (``polyphase_direct``),
    else columns and products per block of output rows.
    """
    g = _Geometry(x.shape, w.shape, tuple(stride), pads, out_hw, x.dtype.itemsize, block_bytes)
    y = buffers.empty((g.F, g.N, g.OH, g.OW), x.dtype)                # (F, N, OH, OW)
    if dispatch.POLYPHASE_DIRECT and block_bytes is None:
        return _direct(x, w, b, g, y)
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
