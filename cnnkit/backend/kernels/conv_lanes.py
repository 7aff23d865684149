"""Filter lanes: the direct convolution's weight gradient with the filters, not the pixels, in the vector lanes.

``conv_blocked``'s tiles put VL neighbouring pixels in a vector. On small maps that wastes lanes
(a 10-wide output on 14-wide flat rows: 4 junk columns in 14) and its weight-gradient tiles end
in lane sums. Where F is a multiple of VL (LeNet-5's conv2: 16 filters, one float32 vector), the
weight gradient can put the filters in the lanes instead:

    gw[f, c, kh, kw] = sum over images n and output pixels (oh, ow) of gy[n, f, oh, ow] * xpad[n, c, oh + kh, ow + kw]

A tile holds the KH*KW taps of one input channel c, each a vector of VL filters' sums; per output
pixel, one vector of gy (its VL filters, from a copy of gy with the filters innermost) is
multiplied by the KH*KW input values the pixel's window holds, each broadcast (KW neighbouring
values per kernel row: ``simd.acc_outer_rows``, one FMA with an embedded broadcast each). No
pixel is junk, no lane sum is needed, and each tap's sum over a group's pixels is one FMA chain
(image, row, column in order); groups of ``GROUP`` images are added in a fixed order by the
caller, so results do not depend on the number of threads. Equal to the other kernels up to
float rounding (another summation order).
"""

from __future__ import annotations

import numpy as np

from .. import dispatch
from . import FASTMATH, aligned_zeros, njit
from .conv_direct import _load_padded, _tap_offsets
from .simd import acc_alloc, acc_fill, acc_get, acc_outer_rows, acc_zero, transpose

__all__ = ["GROUP", "lanes_grad_w", "lanes_grad_w_applies", "lanes_forward", "lanes_forward_rows", "FORWARD_TILES"]

# Images per group: each tile's sums cover a group's pixels and are stored once per group.
GROUP = 16


def lanes_grad_w_applies(F: int, KH: int, KW: int, VL: int) -> bool:
    """Whether ``lanes_grad_w`` handles the layer: 5x5 kernels (the one tile compiled) and F a
    multiple of VL."""
    return (KH, KW) == (5, 5) and F % VL == 0


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _lanes_wtile(NR, FR, KK, xs, xo, xstep, Wp, gt, go, cnt, OH, OW, part, po):
    """part[po + t*VL : +VL] = sum over cnt images (x at xo + m*xstep, gy at go + m*OH*OW*VL) and
    their output pixels of gt's filter vector times the pixel's window value of tap t, t < KK =
    NR*FR (literals: the kernel's rows and columns)."""
    VL = 64 // xs.itemsize
    acc = acc_alloc(32, xs)
    acc_zero(acc, 32, xs)
    for m in range(cnt):
        xm, gm = xo + m * xstep, go + m * OH * OW * VL
        for oh in range(OH):
            xr, gr = xm + oh * Wp, gm + oh * OW * VL
            for ow in range(OW):
                acc_outer_rows(acc, NR, FR, xs, xr + ow, Wp, gt, gr + ow * VL)
    acc_get(acc, KK, part, po)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _lanes_sum(gt, go, count, ones, dst, do):
    """dst[do : +VL] = the sum of the vectors gt[go + i*VL : +VL], i < count, in order (one chain of
    FMAs with 1: exact additions)."""
    VL = 64 // gt.itemsize
    acc = acc_alloc(32, gt)
    acc_zero(acc, 32, gt)
    for i in range(count):
        acc_outer_rows(acc, 1, 1, ones, 0, 0, gt, go + i * VL)
    acc_get(acc, 1, dst, do)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def lanes_grad_w(g0, g1, x, sn, sc, C, gy, gsn, gsf, KH, KW, pt, pl, parts, gb_parts, group, need_b):
    """Partial weight and bias gradients of image groups g0..g1-1 (group q: images q*group ..).

    Args:
        x: input planes (N*C, H, W); plane (n, c) is x[n*sn + c*sc].
        gy: output-gradient planes (N*F, OH, OW); plane (n, f) is gy[n*gsn + f*gsf].
        KH, KW, pt, pl: the kernel (5x5: ``lanes_grad_w_applies``) and the top and left padding.
        parts: (groups, F // VL * C * KH * KW * VL) or (groups, 0): group q's sums, entry
            ((b*C + c)*KH*KW + kh*KW + kw)*VL + l for filter b*VL + l; written in full.
        gb_parts: (groups, F), group q's sum of gy per output channel (written if need_b).
        group: images per group.
    """
    F = gb_parts.shape[1]
    N = gy.shape[0] // F
    OH, OW = gy.shape[1], gy.shape[2]
    H, W = x.shape[1], x.shape[2]
    VL = 64 // x.itemsize
    FB = F // VL
    HW = OH * OW
    Hp, Wp = OH + KH - 1, OW + KW - 1
    Hv, Wv = min(H, Hp - pt), min(W, Wp - pl)
    xstep = C * Hp * Wp
    need_w = parts.shape[1] > 0
    xs = aligned_zeros(group * xstep + VL if need_w else 0, x)      # the group's padded planes
    gt = aligned_zeros(FB * group * HW * VL, gy)                   # gy, filters innermost
    gflat, gbflat = gy.reshape(gy.size), gb_parts.reshape(gb_parts.size)
    ones = np.ones(1, gy.dtype)
    for grp in range(g0, g1):
        n0 = grp * group
        cnt = min(group, N - n0)
        for m in range(cnt):
            if need_w:
                _load_padded(xs[m * xstep :], x, n0 + m, sn, 1, sc, C, Hv, Wv, pt, pl, Hp, Wp)
            for b in range(FB):                      # VL filters x VL pixels at a time, transposed in registers
                src = ((n0 + m) * gsn + b * VL * gsf) * HW
                for p0 in range(0, HW, VL):
                    valid = min(VL, HW - p0)
                    transpose(gflat, src + p0, gsf * HW, valid, gt, ((b * group + m) * HW + p0) * VL, VL, VL, valid)
        for b in range(FB if need_b else 0):         # gb: each filter's sum over the pixels in order
            _lanes_sum(gt, b * group * HW * VL, cnt * HW, ones, gbflat, grp * F + b * VL)
        if not need_w:
            continue
        part = parts[grp]
        for b in range(FB):
            for c in range(C):
                _lanes_wtile(5, 5, 25, xs, c * Hp * Wp, xstep, Wp, gt, b * group * HW * VL, cnt, OH, OW,
                             part, (b * C + c) * 25 * VL)


# The forward's tiles, (output rows, pixels a row): each shape is its own compiled tile, so only the
# measured one (LeNet-5's conv2: 10-pixel rows, two a tile, 20 accumulators).
FORWARD_TILES = ((2, 10),)


def lanes_forward_rows(F: int, H: int, W: int, OH: int, OW: int, VL: int) -> int:
    """Output rows per ``lanes_forward`` tile, or 0 where it does not run: F a multiple of VL, output
    rows as wide as a compiled tile's (``FORWARD_TILES``), an output smaller than the input (a
    "same" map keeps the planes kernel; ``dispatch.DIRECT_CONV_LANES_FORWARD`` = 0: never)."""
    if not dispatch.DIRECT_CONV_LANES_FORWARD or F % VL or (OH, OW) == (H, W):
        return 0
    return next((rows for rows, width in FORWARD_TILES if width == OW), 0)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _lanes_ftile(NR, FR, xs, xo, Wp, offs, wt, fo, bias, out):
    """out[(r*FR + k)*VL : +VL] = bias[fo : +VL] + sum over taps t of xs[xo + offs[t] + r*Wp + k] * wt[t, fo : +VL]
    for r < NR, k < FR (literals): NR output rows of FR pixels, each a vector of VL filters; each
    output one FMA chain from its bias over the taps in order, as the pixel tiles sum it."""
    F = wt.shape[1]
    acc = acc_alloc(32, xs)
    acc_fill(acc, 24, bias, fo)
    for t in range(offs.shape[0]):
        acc_outer_rows(acc, NR, FR, xs, xo + offs[t], Wp, wt, t * F + fo)
    acc_get(acc, 24, out, 0)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _lanes_images(NR, FR, i0, i1, x, sn, sc, wt, KH, KW, bias, y, pt, pl):
    """``lanes_forward`` with its tile's rows and width as literals."""
    F, N, OH, OW = y.shape[0], y.shape[1], y.shape[2], y.shape[3]
    H, W = x.shape[1], x.shape[2]
    C = wt.shape[0] // (KH * KW)
    VL = 64 // x.itemsize
    HW = OH * OW
    Hp, Wp = OH + KH - 1 + NR, OW + KW - 1             # NR more rows: a last band's junk rows read zeros
    Hv, Wv = min(H, Hp - NR - pt), min(W, Wp - pl)
    offs = _tap_offsets(C, KH, KW, Hp * Wp, Wp, 0, 1)
    xs = aligned_zeros(C * Hp * Wp + VL, x)
    out = aligned_zeros(32 * VL, x)                      # a last block's rows past the tile: read, not stored
    ys = y.reshape(y.size)
    for n in range(i0, i1):
        _load_padded(xs, x, n, sn, 1, sc, C, Hv, Wv, pt, pl, Hp, Wp)
        for fo in range(0, F, VL):
            for oh in range(0, OH, NR):
                _lanes_ftile(NR, FR, xs, oh * Wp, Wp, offs, wt, fo, bias, out)
                pixels = min(NR, OH - oh) * OW
                for q in range(0, pixels, VL):
                    transpose(out, q * VL, VL, VL, ys, fo * N * HW + n * HW + oh * OW + q, N * HW, min(VL, pixels - q), VL)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def lanes_forward(i0, i1, x, sn, sc, wt, KH, KW, bias, y, pt, pl):
    """Images i0..i1-1 of the stride-1 convolution with the filters in the vector lanes; y (F, N, OH, OW)
    written in full (F a multiple of VL, OW a compiled tile's width: ``lanes_forward_rows``).

    A tile is NR output rows of one image (NR*OW pixels, none junk) times VL filters: per tap one
    vector of filters and NR*OW input values as embedded broadcasts (``simd.acc_outer_rows``); the
    tile's pixel vectors are then transposed in registers into the filters' output planes. Each output
    is the same FMA chain as on flat rows (its bias, then the taps in order): the same bits.
    """
    _lanes_images(2, 10, i0, i1, x, sn, sc, wt, KH, KW, bias, y, pt, pl)
