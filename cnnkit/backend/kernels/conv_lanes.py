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

from . import FASTMATH, aligned_zeros, njit
from .conv_direct import _load_padded
from .simd import acc_alloc, acc_get, acc_outer_rows, acc_zero, transpose

__all__ = ["GROUP", "lanes_grad_w", "lanes_grad_w_applies"]

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
