"""Register-blocked direct stride-1 convolution over flat rows (numba + explicit vectors).

Flat rows, as in ``conv_direct``: one image's zero-padded planes (C, Hp, Wp) are stored
row after row, so output pixel i = oh*Wp + ow reads tap (c, kh, kw) at c*Hp*Wp + kh*Wp + kw
+ i, and every tap is a shifted contiguous run over i. Entries with ow >= OW are computed
and thrown away (a waste of (KW - 1)/Wp).

What differs from ``conv_direct`` is where the partial sums live. There, each pass over
a flat row loads and stores its accumulators in memory (eight taps per pass), and memory
traffic bounds the loop. Here a tile of FR output channels times PV vectors of VL
consecutive pixels (VL = 16 float32 / 8 float64: one 64-byte AVX-512 register) stays in
FR*PV registers for the whole sum over C*KH*KW taps (``simd``): per tap, PV vector
loads of the input and FR filter values, each broadcast, feed FR*PV fused multiply-adds.
The tile is then stored once, and the valid entries of each row copied to the output.
No layout conversion beyond the zero padding: input and output stay planar.

- forward: tiles of FR = 8 channels by PV = 2 vectors (16 accumulators: enough
  independent chains to cover the FMA latency), then smaller ones for the remainders.
- input gradient: for stride 1, gx is the forward convolution of gy, padded by
  KH-1-pt (KW-1-pl), with the filters flipped and transposed, w[f, c, KH-1-kh, KW-1-kw]
  as (C, F, KH, KW): the same kernel.
- weight gradient: gw[f, c, kh, kw] = sum_i g[f, i] * xpad[c, kh*Wp + kw + i] with g the
  output gradient on the flat rows (junk columns zero). A tile of RF filters times NT
  neighbouring taps (RF = 8, NT = 3 for 3x3 kernels; else RF = 4, NT = 5, 3 or 1) keeps
  RF*NT vector partial sums in registers while i runs over a group of images; per step
  RF + NT vector loads feed RF*NT FMAs (8x3 against 4x3 on ResNet-20's layers, one
  thread, interleaved: gw 1.06x faster at 16 channels 32x32, 1.07x at 32 16x16, 1.16x at
  64 8x8, batch 128).
  The lanes are added at the end in a fixed order. Images are taken in fixed groups of
  ``wgrad_group`` images, whose partial sums the caller adds in a fixed order, so results do not
  depend on the number of threads.

Lane rows (``row_layout``; small maps, W <= OW <= VL): k = VL // OW images side by side,
output row oh of the pack one vector at oh*VL, and the padded input stored once per column
tap kw (copy kw: entry (c*Hp + h)*VL + j*OW + ow holds image j's padded (h, ow + kw)), so
tap (c, kh, kw) of output vector v is the aligned vector at kw*kws + (c*Hp + kh + v)*VL and
no entry is junk (8x8 maps: 64 entries per image instead of 80). The forward tiles are the
same; the weight gradient's tiles run along kh (8 filters x 3 row taps, one vector apart).

Planes (``plane_forward``; the forward and the input gradient where the output has the
input's size and a plane is whole vectors: ResNet-20's 3x3 layers): no padded copy at all.
Output vector v of a plane (pixels v*VL ..) reads tap (c, kh, kw) as one vector load at a
fixed shift of the unpadded input plane, its lanes outside the image masked to zero
(AVX-512 zero-masking), and the tile is stored straight into the output planes: no copy
in, no junk entry, no copy out. Tiles of 16 channels x 1 vector; taps by kernel position,
channels inside.

Numerics: sums in a different order than the NumPy path (tap by tap per output for the
forward; lane-split for the weight gradient), each step one FMA: equal up to float
rounding. Padding larger than the kernel minus one is not handled here (the dispatch
keeps such layers on ``conv_direct``).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import buffers, dispatch
from ..cores import parallel_for
from . import FASTMATH, aligned_zeros, as_planes, njit
from .conv_direct import _load_padded, _tap_offsets
from .conv_lanes import GROUP as LANES_GROUP
from .conv_lanes import lanes_forward, lanes_forward_rows, lanes_grad_w, lanes_grad_w_applies
from .simd import (
    acc_alloc,
    acc_bias,
    acc_dot,
    acc_dot_masked,
    acc_hsum,
    acc_outer,
    acc_outer_masked,
    acc_put,
    acc_zero,
)

__all__ = ["conv2d_blocked", "conv2d_blocked_grads", "conv2d_blocked_weight_grads_by_images", "blocked_forward", "blocked_grad_w", "plane_forward",
           "plane_layout", "plane_masks", "shift_masks", "row_layout", "stacked_forward", "stacked_layout"]

# Flat rows of fewer vectors than this take forward tiles of 16 channels by one vector,
# longer ones 8 channels by two (`python benchmarks/conv_dispatch.py ...`, one thread, CPU
# time: 64 channels on 8x8 maps (5 vectors), batch 128: 7.7 vs 9.6 ms; 32 channels on
# 16x16 (18 vectors): 7.5 vs 6.9 ms).
SHORT_ROW_VECTORS = 8

# Output channels per forward work item (a multiple of 16: channel tiles stay whole). The
# forward splits over (image, channel block) pairs, so a batch of one uses every thread;
# the block is fixed, so results do not depend on the number of threads.
FORWARD_CHANNEL_BLOCK = 32

# Lane rows (``row_layout``) when they compute at most this fraction of flat rows' entries;
# they copy the input KW times. One thread, CPU time, b128, flat / lane rows: 8x8 (0.8 of the
# entries) fwd 1.16x, gx 1.16x, gw 1.20x; 16x16 (0.89) 1.02x, 1.03x, 1.03-1.05x; 15-wide
# maps (0.94) would be level at best.
LANE_ROWS_MAX_WORK = 0.9


def wgrad_group(Lp: int) -> int:
    """Images per weight-gradient group: fixed per shape, so partial sums do not depend on threads.

    Each tile's lanes are added once per group; short rows take more images (8x8 maps,
    64 channels, batch 128: 9.3 ms with 16 images against 10.3 with 8, one thread).
    """
    return 16 if Lp <= 256 else 8


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _fwd_tile(FR, PV, xpad, xo, offs, wt, bias, yflat, yo, f0, Lp):
    """yflat[yo + (f0 + k)*Lp + p*VL : +VL] for k < FR, p < PV (literals): the sum over every tap,
    tap t read at xpad[offs[t] + xo + p*VL : +VL]."""
    F = wt.shape[1]
    acc = acc_alloc(32, xpad)
    acc_bias(acc, FR, PV, bias, f0)
    for t in range(offs.shape[0]):
        acc_outer(acc, FR, PV, wt, t * F + f0, xpad, offs[t] + xo)
    acc_put(acc, FR, PV, yflat, yo + f0 * Lp, Lp)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _fwd_channels(FR, PV, xpad, offs, wt, bias, yflat, f0, Lp, VL, nv, xo, yo):
    """Output channels f0 .. f0 + FR - 1 over nv vectors (vector v: x at xo + v*VL, y at yo + v*VL),
    PV vectors at a time (literals)."""
    v = 0
    while v + PV <= nv:
        _fwd_tile(FR, PV, xpad, xo + v * VL, offs, wt, bias, yflat, yo + v * VL, f0, Lp)
        v += PV
    while v < nv:
        _fwd_tile(FR, 1, xpad, xo + v * VL, offs, wt, bias, yflat, yo + v * VL, f0, Lp)
        v += 1


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _fwd_image(PV, xpad, offs, wt, bias, yflat, Lp, VL, f0, F, nv, xo, yo):
    """Output channels f0 .. F-1 over nv vectors (``_fwd_channels``) of one image (or one stacked
    run): tiles of 16/PV channels by PV vectors, then 6 (a remainder of exactly 6) or 4, 2, 1 channels.

    Each output's sum is the same whatever the tile (one FMA per tap, taps in order). A last
    6 channels in one tile instead of 4 + 2 read the input once, not twice: LeNet-5's conv1
    forward and conv2's input gradient (F = 6) 1.17x faster (one thread, CPU time, batch 64).
    """
    if PV == 1:
        while f0 + 16 <= F:
            _fwd_channels(16, 1, xpad, offs, wt, bias, yflat, f0, Lp, VL, nv, xo, yo)
            f0 += 16
    while f0 + 8 <= F:
        _fwd_channels(8, PV, xpad, offs, wt, bias, yflat, f0, Lp, VL, nv, xo, yo)
        f0 += 8
    if F - f0 == 6:
        _fwd_channels(6, PV, xpad, offs, wt, bias, yflat, f0, Lp, VL, nv, xo, yo)
        f0 += 6
    if f0 + 4 <= F:
        _fwd_channels(4, PV, xpad, offs, wt, bias, yflat, f0, Lp, VL, nv, xo, yo)
        f0 += 4
    if f0 + 2 <= F:
        _fwd_channels(2, PV, xpad, offs, wt, bias, yflat, f0, Lp, VL, nv, xo, yo)
        f0 += 2
    if f0 < F:
        _fwd_channels(1, PV, xpad, offs, wt, bias, yflat, f0, Lp, VL, nv, xo, yo)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _plane_tile(FR, PV, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, v, VL):
    """ys[yo + (f0 + k)*ystride + (v + p)*VL : +VL] for k < FR, p < PV (literals): the sum over every
    tap, read straight from the unpadded input planes (plane c at xo + c*plane) under lane masks.

    Taps are summed kernel position by position, channels inside ((kh, kw) outer, c inner), so one
    mask serves C taps: with c outer (the flat rows' order) the mask load per tap held the 16 x 1
    tile at 99-103 GF/s, this order 101-108 (one thread, ResNet-20's layers at batch 128)."""
    F = wt.shape[1]
    KK = d.shape[0]
    C = wt.shape[0] // KK
    acc = acc_alloc(32, xs)
    acc_bias(acc, FR, PV, bias, f0)
    mo = v * KK
    for kk in range(KK):                      # tap position outermost: its lane mask stays in a register
        xk = xo + v * VL + d[kk]
        for c in range(C):
            acc_outer_masked(acc, FR, PV, wt, (c * KK + kk) * F + f0, xs, xk + c * plane, masks, mo + kk, KK)
    acc_put(acc, FR, PV, ys, yo + f0 * ystride + v * VL, ystride)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _plane_channels(FR, PV, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, nv, VL):
    """Output channels f0 .. f0 + FR - 1 of one image, PV vectors at a time (literals)."""
    v = 0
    while v + PV <= nv:
        _plane_tile(FR, PV, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, v, VL)
        v += PV
    while v < nv:
        _plane_tile(FR, 1, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, v, VL)
        v += 1


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _plane_image(xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, F, nv, VL):
    """Output channels f0 .. F-1 of one image: tiles of 16 channels x 1 vector (one masked load
    feeds 16 FMAs; 8 x 2 tiles ran 91-99 GF/s against 95-108), then 8, 4, 2, 1 channels x 2
    vectors (more independent sums for the short tiles) and a last 6 channels x 4 vectors (LeNet-5's
    conv1, one input channel: 67 GF/s against 60 with 6 x 2, b64, one thread, CPU time: the taps'
    per-tap costs spread over 24 FMAs instead of 12)."""
    while f0 + 16 <= F:
        _plane_channels(16, 1, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, nv, VL)
        f0 += 16
    if f0 + 8 <= F:
        _plane_channels(8, 2, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, nv, VL)
        f0 += 8
    if F - f0 == 6:
        _plane_channels(6, 4, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, nv, VL)
        f0 += 6
    if f0 + 4 <= F:
        _plane_channels(4, 2, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, nv, VL)
        f0 += 4
    if f0 + 2 <= F:
        _plane_channels(2, 2, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, nv, VL)
        f0 += 2
    if f0 < F:
        _plane_channels(1, 2, xs, xo, plane, d, masks, wt, bias, ys, yo, ystride, f0, nv, VL)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def plane_forward(i0, i1, x, sn, sc, wt, d, masks, bias, y, CB):
    """Work items i0..i1-1 (as ``blocked_forward``'s) of a stride-1 convolution whose output has
    the input's size; y (F, N, H, W) written in full, straight from and into the planes.

    Output pixel p = oh*W + ow of a plane reads tap (c, kh, kw) at p + d[kh*KW + kw] of input
    plane c, d = (kh - pt)*W + kw - pl, where the input pixel lies inside the image: vector v
    (pixels v*VL ..) loads under the lane mask masks[v*KH*KW + kh*KW + kw] (``plane_masks``),
    so there is no padded copy, no junk entry and no output copy. Each output is one FMA chain
    over its taps, as on flat rows, in another order (``_plane_tile``): equal up to rounding;
    the padding's zeros are the masked lanes' zeros (w * 0 is summed as there).

    Args:
        x: input planes (N*C, H, W); plane (n, c) is x[n*sn + c*sc]. H*W a multiple of VL.
        wt: filters by tap (C*KH*KW, F), C-contiguous.
        d, masks: from ``plane_masks``.
        bias: (F,) (zeros when the op has none).
        y: (F, N, H, W), C-contiguous.
        CB: output channels per item, a multiple of 16.
    """
    F, N = y.shape[0], y.shape[1]
    HW = y.shape[2] * y.shape[3]
    VL = 64 // x.itemsize
    nv = HW // VL
    xs, ys = x.reshape(x.size), y.reshape(y.size)
    nb = -(-F // CB)
    for q in range(i0, i1):
        n, fa = q // nb, (q % nb) * CB
        fb = min(F, fa + CB)
        _plane_image(xs, n * sn * HW, sc * HW, d, masks, wt, bias, ys, n * HW, N * HW, fa, fb, nv, VL)


@functools.lru_cache(maxsize=64)
def plane_masks(H: int, W: int, KH: int, KW: int, pt: int, pl: int, VL: int):
    """(d, masks) of ``plane_forward`` for H x W maps: tap offsets d (KH*KW,) and lane masks
    (H*W // VL * KH*KW,): bit l of masks[v*KH*KW + kh*KW + kw] is set where output pixel
    v*VL + l, shifted by tap (kh, kw), lies inside the image. Cached (~0.05-0.09 ms to build
    on 16x16-32x32 maps); the kernels only read them."""
    kh, kw = np.divmod(np.arange(KH * KW), KW)                          # (KH*KW,) each
    return shift_masks(H, W, tuple(zip((kh - pt).tolist(), (kw - pl).tolist())), VL)


def shift_masks(H: int, W: int, shifts, VL: int):
    """(d, masks) for taps that read an H x W plane shifted by (dh, dw) each (``shifts``, T of them):
    d[t] = dh*W + dw, and bit l of masks[v*T + t] is set where pixel v*VL + l shifted by tap t lies
    inside the plane."""
    dh, dw = (np.array(s, dtype=np.int64) for s in zip(*shifts))       # (T,) each
    d = dh * W + dw
    p = np.arange(H * W)
    ih = p[:, None] // W + dh[None, :]                                  # (H*W, T)
    iw = p[:, None] % W + dw[None, :]
    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    bits = inside.reshape(H * W // VL, VL, len(d)) << np.arange(VL)[None, :, None]
    return d.astype(np.int64), bits.sum(axis=1).astype(np.int64).reshape(-1)


@njit(cache=True, nogil=True)
def _load_lanes(xs, x, n0, cnt, k, sn, sc, C, Hv, W, pt, pl, Hp, OW, KW, kws):
    """Images n0 .. n0 + cnt - 1 side by side in lane rows, one copy of the input per column tap.

    xs (KW*kws,): entry kw*kws + (c*Hp + h)*VL + j*OW + ow is image n0 + j's plane c at
    padded row h and input column ow + kw - pl (zero outside the image), j < k; the lanes
    of images j >= cnt (a last, partial pack) are zero. Needs W <= OW (``row_layout``).
    Copy kw = pl gets the rows; the others are that copy shifted by kw - pl entries, with
    the lanes that crossed into a neighbouring image or row zeroed.
    """
    VL = 64 // xs.itemsize
    size = C * Hp * VL
    ref = xs[pl * kws : pl * kws + size]
    for c in range(C):
        for j in range(k):
            if j < cnt:
                src = x[(n0 + j) * sn + c * sc]
                for h in range(Hv):
                    start = (c * Hp + h + pt) * VL + j * OW
                    dst, row = ref[start : start + W], src[h]
                    for w in range(W):
                        dst[w] = row[w]
            else:
                for h in range(Hp):
                    start = (c * Hp + h) * VL + j * OW
                    dst = ref[start : start + OW]
                    for w in range(OW):
                        dst[w] = 0.0
    for kw in range(KW):
        s = kw - pl
        if s == 0:
            continue
        dst = xs[kw * kws : kw * kws + size]
        lo, hi = max(0, -s), size - max(0, s)
        part, shifted = dst[lo:hi], ref[lo + s : hi + s]
        for i in range(hi - lo):
            part[i] = shifted[i]
        w0, w1 = (0, -s) if s < 0 else (OW - s, OW)   # columns ow whose ow + s left the image's segment
        for r in range(C * Hp):
            for j in range(k):
                for ow in range(w0, w1):
                    dst[r * VL + j * OW + ow] = 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def blocked_forward(i0, i1, x, sn, sc, wt, KH, KW, bias, y, pt, pl, CB, k):
    """Work items i0..i1-1 of the stride-1 convolution; y (F, N, OH, OW) written in full.

    Item q is pack q // nb's output channels j*CB .. (j+1)*CB - 1, j = q % nb, with
    nb = ceil(F / CB) blocks: a batch of one splits over threads by channel blocks. Each
    output is one item's, summed in the same order whatever the split. A pack is one
    image on flat rows (k == 0) or k images side by side in lane rows (``row_layout``);
    both sum each output's taps in the same order, so they give the same bits.

    Args:
        x: input planes (N*C, H, W); plane (n, c) is x[n*sn + c*sc].
        wt: filters by tap (C*KH*KW, F), C-contiguous (w transposed, as ``conv_direct``'s).
        bias: (F,) (zeros when the op has none).
        pt, pl: zero padding at the top and left (0 .. K-1); the bottom/right padding
            follows from y's size, OH = H + pt + pb - KH + 1.
        CB: output channels per item, a multiple of 16 (tiles never straddle two blocks).
        k: images per lane row, or 0: flat rows.
    """
    F, N, OH, OW = y.shape[0], y.shape[1], y.shape[2], y.shape[3]
    H, W = x.shape[1], x.shape[2]
    C = wt.shape[0] // (KH * KW)
    VL = 64 // x.itemsize
    Hp, Wp = OH + KH - 1, OW + KW - 1
    Hv, Wv = min(H, Hp - pt), min(W, Wp - pl)
    nb = -(-F // CB)
    if k > 0:
        Lp, rs, kk = OH * VL, VL, k
        kws = _copy_stride(C * Hp * VL, VL)
        offs = _tap_offsets(C, KH, KW, Hp * VL, VL, 0, 1)
        for t in range(offs.shape[0]):            # tap kw reads copy kw at its kw = 0 position
            offs[t] += (t % KW) * (kws - 1)
        xpad = aligned_zeros(KW * kws, x)
    else:
        L = (OH - 1) * Wp + OW
        Lp, rs, kk, kws = -(-L // VL) * VL, Wp, 1, 0
        offs = _tap_offsets(C, KH, KW, Hp * Wp, Wp, 0, 1)
        xpad = aligned_zeros(C * Hp * Wp + VL, x)      # the tail: the last vectors read past the planes
    yflat = aligned_zeros(F * Lp, x)
    loaded = -1
    for q in range(i0, i1):
        n, fa = q // nb, (q % nb) * CB
        fb = min(F, fa + CB)
        n0 = n * kk
        cnt = min(kk, N - n0)
        if n != loaded:
            if k > 0:
                _load_lanes(xpad, x, n0, cnt, k, sn, sc, C, Hv, W, pt, pl, Hp, OW, KW, kws)
            else:
                _load_padded(xpad, x, n0, sn, 1, sc, C, Hv, Wv, pt, pl, Hp, Wp)
            loaded = n
        if Lp < SHORT_ROW_VECTORS * VL:
            _fwd_image(1, xpad, offs, wt, bias, yflat, Lp, VL, fa, fb, Lp // VL, 0, 0)
        else:
            _fwd_image(2, xpad, offs, wt, bias, yflat, Lp, VL, fa, fb, Lp // VL, 0, 0)
        for f in range(fa, fb):
            for j in range(cnt):
                for oh in range(OH):
                    start = f * Lp + oh * rs + j * OW
                    dst, row = y[f, n0 + j, oh], yflat[start : start + OW]
                    for ow in range(OW):
                        dst[ow] = row[ow]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def stacked_forward(i0, i1, x, sn, sc, wt, KH, KW, bias, y, m):
    """Work items i0..i1-1 (item q: images q*m .. q*m + m - 1) of a "full" stride-1 convolution
    (padding KH - 1 and KW - 1 on every side: the input gradient of an unpadded layer); y (F, N,
    OH, OW) written in full, straight into its planes.

    Stacked rows: the flat rows of one channel hold the item's images one after the other, each as
    KH - 1 zero rows and then its H rows, every row OW = W + KW - 1 entries long (W values, KW - 1
    zeros). Output pixel i of the run (image j, row oh, column ow at i = (j*OH + oh)*OW + ow,
    OH = H + KH - 1) reads tap (c, kh, kw) at the fixed offset kh*OW + kw - (KW - 1) from
    i: a column left of the image reads the previous row's zeros, a row above it the image's own
    zero rows or the previous image's, one below the next image's zero rows. So the padding on the
    left and right (and top and bottom) is shared and no output entry is junk, and since y[f]
    holds the batch's images one after the other, the run of outputs is y[f]'s own memory: the
    tiles are stored in place, no copy out. Each output's sum is the same FMA chain as on flat or
    lane rows (taps in order, the padding's zeros at the same taps): the same bits.

    Args:
        x: input planes (N*C, H, W); plane (n, c) is x[n*sn + c*sc].
        wt: filters by tap (C*KH*KW, F), C-contiguous.
        bias: (F,) (zeros when the op has none).
        y: (F, N, OH, OW), C-contiguous; OH = H + KH - 1, OW = W + KW - 1.
        m: images per item, such that m*OH*OW is a multiple of VL (``stacked_images``).
    """
    F, N, OH, OW = y.shape[0], y.shape[1], y.shape[2], y.shape[3]
    H, W = x.shape[1], x.shape[2]
    C = wt.shape[0] // (KH * KW)
    VL = 64 // x.itemsize
    HW = OH * OW
    Xc = (1 + m * OH + KH) * OW + VL                      # one channel's run: a guard row, m images, KH rows
    offs = _tap_offsets(C, KH, KW, Xc, OW, OW - (KW - 1), 1)
    xs = aligned_zeros(C * Xc, x)
    ys = y.reshape(y.size)
    tail = aligned_zeros(F * VL, x)
    short = HW * m < SHORT_ROW_VECTORS * VL
    for q in range(i0, i1):
        n0 = q * m
        cnt = min(m, N - n0)
        for c in range(C):
            for j in range(cnt):
                src = x[(n0 + j) * sn + c * sc]
                for h in range(H):
                    start = c * Xc + (1 + j * OH + KH - 1 + h) * OW
                    dst, row = xs[start : start + W], src[h]
                    for w in range(W):
                        dst[w] = row[w]
        nv, rem = divmod(cnt * HW, VL)
        if short:
            _fwd_image(1, xs, offs, wt, bias, ys, N * HW, VL, 0, F, nv, 0, n0 * HW)
        else:
            _fwd_image(2, xs, offs, wt, bias, ys, N * HW, VL, 0, F, nv, 0, n0 * HW)
        if rem:                                            # the batch's last entries: a tile into ``tail``
            _fwd_image(1, xs, offs, wt, bias, tail, VL, VL, 0, F, 1, nv * VL, 0)
            for f in range(F):
                for i in range(rem):
                    ys[f * N * HW + n0 * HW + nv * VL + i] = tail[f * VL + i]


def stacked_images(HW: int, VL: int) -> int:
    """Images per ``stacked_forward`` item: the fewest (at least 4) whose pixels are whole vectors."""
    m = VL // np.gcd(HW, VL)
    return m * -(-4 // m)


@njit(cache=True, nogil=True)
def _copy_stride(size, VL):
    """Entries from one column tap's copy of the input to the next: size plus three vectors.

    Copies exactly size apart sat a multiple of 4 KiB apart on power-of-two channel counts
    (L1 set conflicts and 4K aliasing between the loads of neighbouring taps).
    """
    return size + 3 * VL


def wgrad_rows(F: int) -> int:
    """Filter rows of the weight gradient's tiles: F rounded up to 4 (the rows past F are zero),
    except a last 6 after multiples of 8, which is one tile of 6 rows (LeNet-5's conv1: one
    6 x 5 tile per kernel row instead of two 4 x 5, one of them half zero)."""
    return F if F % 8 == 6 else -(-F // 4) * 4


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _wgrad_tile(RF, NT, TV, xs, gs, part, f0, t0, xo, npk, Xs, Gs, Lp):
    """part[f0 + a, t0 + j] += sum over npk packs and i < Lp of g[f0 + a, i] * x[xo + j*s + i]
    (a < RF, j < NT, s = 1 (TV = 0, flat rows: neighbouring column taps) or VL (TV = 1, lane
    rows: neighbouring row taps); literals)."""
    VL = 64 // xs.itemsize
    acc = acc_alloc(32, xs)
    acc_zero(acc, 32, xs)
    for m in range(npk):
        go, xm = m * Gs + f0 * Lp, m * Xs + xo
        for i in range(0, Lp, VL):
            acc_dot(acc, RF, NT, TV, gs, go + i, Lp, xs, xm + i)
    acc_hsum(acc, RF, NT, part, f0 * part.shape[1] + t0, part.shape[1])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _wgrad_taps(xs, gs, part, f0, rows, t0, xo, NK, npk, Xs, Gs, Lp):
    """Flat rows: the NK taps t0 .. t0 + NK - 1 of one kernel row (x one entry further per tap) of
    filters f0 .. f0 + rows - 1: 8 x 3 tiles (rows 8, NK 3); the last 6 filters in one tile, 6 x 3
    and 6 x 2 (6 x 5 spills); else 4 x 5, 4 x 3, 4 x 1."""
    if rows == 8:
        _wgrad_tile(8, 3, 0, xs, gs, part, f0, t0, xo, npk, Xs, Gs, Lp)
        return
    j = 0
    if rows == 6:
        while j + 3 <= NK:
            _wgrad_tile(6, 3, 0, xs, gs, part, f0, t0 + j, xo + j, npk, Xs, Gs, Lp)
            j += 3
        while j + 2 <= NK:
            _wgrad_tile(6, 2, 0, xs, gs, part, f0, t0 + j, xo + j, npk, Xs, Gs, Lp)
            j += 2
        while j < NK:
            _wgrad_tile(6, 1, 0, xs, gs, part, f0, t0 + j, xo + j, npk, Xs, Gs, Lp)
            j += 1
        return
    while j + 5 <= NK:
        _wgrad_tile(4, 5, 0, xs, gs, part, f0, t0 + j, xo + j, npk, Xs, Gs, Lp)
        j += 5
    while j + 3 <= NK:
        _wgrad_tile(4, 3, 0, xs, gs, part, f0, t0 + j, xo + j, npk, Xs, Gs, Lp)
        j += 3
    while j < NK:
        _wgrad_tile(4, 1, 0, xs, gs, part, f0, t0 + j, xo + j, npk, Xs, Gs, Lp)
        j += 1


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def blocked_grad_w(g0, g1, x, sn, sc, C, gy, gsn, gsf, KH, KW, pt, pl, parts, gb_parts, group, k, need_b):
    """Partial weight and bias gradients of image groups g0..g1-1 (group q: images q*group*max(k, 1) ...).

    Flat rows (k == 0): a tile runs along a kernel row (taps kw, x one entry further per
    tap), parts[q, f, (c*KH + kh)*KW + kw]. Lane rows (k images per vector, the forward's
    layout; 3-row kernels and F a multiple of 8 only, which keeps to one more compiled tile):
    a tile of 8 filters runs along a kernel column (taps kh, x one vector further per tap, so
    the aligned loads of neighbouring steps share two of their three vectors),
    parts[q, f, (c*KW + kw)*KH + kh].

    Args:
        x: input planes (N*C, H, W) as in ``blocked_forward``; C its channels.
        gy: output-gradient planes (N*F, OH, OW); plane (n, f) is gy[n*gsn + f*gsf].
        parts: (groups, F4, C*KH*KW), F4 = ``wgrad_rows(F)`` (or (groups, 0, 0): no weight
            gradient); group q's sum of gw[f, tap] as above, written in full.
        gb_parts: (groups, F), group q's sum of gy per output channel (written if need_b).
        group: packs per group (a pack: one image, or k images side by side).
    """
    F4 = parts.shape[1]
    F = gb_parts.shape[1]
    N = gy.shape[0] // F
    OH, OW = gy.shape[1], gy.shape[2]
    H, W = x.shape[1], x.shape[2]
    VL = 64 // x.itemsize
    Hp, Wp = OH + KH - 1, OW + KW - 1
    Hv, Wv = min(H, Hp - pt), min(W, Wp - pl)
    if k > 0:
        kk, rs, plane = k, VL, Hp * VL
        kws = _copy_stride(C * Hp * VL, VL)
        Lp, Xs = OH * VL, KW * kws
    else:
        kk, rs, plane, kws = 1, Wp, Hp * Wp, 0
        L = (OH - 1) * Wp + OW
        Lp, Xs = -(-L // VL) * VL, C * Hp * Wp + VL
    Gs = F4 * Lp
    need_w = F4 > 0
    xs = aligned_zeros(group * Xs if need_w else 0, x)
    gs = aligned_zeros(group * Gs, gy)                 # junk entries and rows F..F4-1 stay 0
    zero = np.zeros(1, gy.dtype)[0]
    gflat, HW = gy.reshape(gy.size), OH * OW
    per_group = group * kk
    for grp in range(g0, g1):
        n0 = grp * per_group
        nimg = min(per_group, N - n0)
        for f in range(F if need_b else 0):            # one loop over each whole plane: it vectorizes
            s = zero
            for m in range(nimg):
                go = ((n0 + m) * gsn + f * gsf) * HW
                gplane = gflat[go : go + HW]
                for i in range(HW):
                    s += gplane[i]
            gb_parts[grp, f] = s
        if not need_w:
            continue
        part = parts[grp]
        part[:] = 0.0
        npk = -(-nimg // kk)
        for m in range(npk):
            na = n0 + m * kk
            cnt = min(kk, N - na)
            if k > 0:
                _load_lanes(xs[m * Xs :], x, na, cnt, k, sn, sc, C, Hv, W, pt, pl, Hp, OW, KW, kws)
            else:
                _load_padded(xs[m * Xs :], x, na, sn, 1, sc, C, Hv, Wv, pt, pl, Hp, Wp)
            for j in range(kk):
                for f in range(F):
                    for oh in range(OH):
                        start = m * Gs + f * Lp + oh * rs + j * OW
                        dst = gs[start : start + OW]
                        if j < cnt:
                            row = gy[(na + j) * gsn + f * gsf][oh]
                            for ow in range(OW):
                                dst[ow] = row[ow]
                        else:
                            for ow in range(OW):
                                dst[ow] = 0.0
        f0 = 0
        while f0 < F4:
            if k > 0:  # (3-row kernels, F a multiple of 8: ``conv2d_blocked_grads``)
                rows = 8
                for c in range(C):
                    for kw in range(KW):
                        _wgrad_tile(8, 3, 1, xs, gs, part, f0, (c * KW + kw) * 3, kw * kws + c * plane,
                                    npk, Xs, Gs, Lp)
            else:
                rows = 6 if F4 - f0 == 6 else (8 if f0 + 8 <= F4 and KW == 3 else 4)
                for c in range(C):
                    for kh in range(KH):
                        _wgrad_taps(xs, gs, part, f0, rows, (c * KH + kh) * KW, c * plane + kh * Wp,
                                    KW, npk, Xs, Gs, Lp)
            f0 += rows


# The weight gradient's tiles on planes of at most this many vectors run over the images
# innermost (each step one image further, the vector's lane masks loaded once per vector), on
# larger planes over the vectors innermost (images one plane apart: on 16x16 and 32x32 planes,
# 1-4 KiB apart, the 8 filters' and the input's streams fell into the same L1 sets and gW took
# 10.7 and 18.7 ms against 6.2 and 6.6). 64x8x8 (4 vectors) at b128, one thread, CPU time, CNHW,
# each backward timed inside ResNet-20 training steps (gx + gW): 12.25-12.27 ms against
# 12.49-13.88 (three processes).
PLANE_WGRAD_IMAGES_INNER = 4


def plane_wgrad_group(HW: int) -> int:
    """Images per weight-gradient group on planes: 32 on maps of at most 64 pixels (each tile's
    lanes are added once per group: 8x8, 64 channels, b128, one thread, CNHW: 6.40 ms against
    6.66 with 16), else as ``wgrad_group`` (16x16: 32 images 6.13 against 6.20 with 16; 32x32:
    7.22 against 6.60 with 8)."""
    return 32 if HW <= 64 else wgrad_group(HW)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _plane_wtile(xs, gs, part, f0, t0, xo, go, gstride, xstep, gstep, nimg, d0, masks, mo, KK, nv, inner):
    """part[f0 + a, t0 + j] += sum over nimg images and nv vectors of g . x shifted by d0 + j, a < 8,
    j < 3 (three neighbouring column taps of one kernel row; lane masks masks[v*KK + mo + j])."""
    VL = 64 // xs.itemsize
    acc = acc_alloc(32, xs)
    acc_zero(acc, 32, xs)
    if inner:
        for v in range(nv):                   # images innermost: the three lane masks stay in registers
            xv, gv = xo + d0 + v * VL, go + v * VL
            for m in range(nimg):
                acc_dot_masked(acc, 8, 3, gs, gv + m * gstep, gstride, xs, xv + m * xstep, masks, v * KK + mo)
    else:
        for m in range(nimg):
            xm, gm = xo + m * xstep + d0, go + m * gstep
            for v in range(nv):
                acc_dot_masked(acc, 8, 3, gs, gm + v * VL, gstride, xs, xm + v * VL, masks, v * KK + mo)
    acc_hsum(acc, 8, 3, part, f0 * part.shape[1] + t0, part.shape[1])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def plane_grad_w(g0, g1, x, sn, sc, C, gy, gsn, gsf, KH, d, masks, parts, gb_parts, group, need_b, inner):
    """``blocked_grad_w`` on planes (``plane_forward``'s layout; 3-column kernels, F a multiple of 8):
    x and gy read in place, image groups g0..g1-1 of ``group`` images, parts[q, f, (c*KH + kh)*3 + kw].

    A tile of 8 filters x the 3 column taps of one kernel row keeps 24 vector sums over a group's
    images: per vector 8 loads of gy and 3 masked loads of x feed 24 FMAs. Read in place, no copy
    of x or gy: on CNHW maps (b128, one thread, CPU time) 6.60 / 6.20 / 6.40 ms against flat / lane
    rows' 7.68 / 7.54 / 6.72 on 16x32x32 / 32x16x16 / 64x8x8; gy copied into a buffer whose filter
    planes are not 4 KiB multiples apart (L1 sets) was slower, 9.07 / 7.51 / 7.29.
    """
    F = gb_parts.shape[1]
    N = gy.shape[0] // F
    HW = gy.shape[1] * gy.shape[2]
    VL = 64 // x.itemsize
    nv = HW // VL
    KK = KH * 3
    xs, gs = x.reshape(x.size), gy.reshape(gy.size)
    zero = np.zeros(1, gy.dtype)[0]
    for grp in range(g0, g1):
        n0 = grp * group
        nimg = min(group, N - n0)
        for f in range(F if need_b else 0):
            s = zero
            for m in range(nimg):
                go = ((n0 + m) * gsn + f * gsf) * HW
                for i in range(HW):
                    s += gs[go + i]
            gb_parts[grp, f] = s
        if parts.shape[1] == 0:
            continue
        part = parts[grp]
        part[:] = 0.0
        for f0 in range(0, F, 8):
            for c in range(C):
                xo = (n0 * sn + c * sc) * HW
                for kh in range(KH):
                    _plane_wtile(xs, gs, part, f0, (c * KH + kh) * 3, xo, (n0 * gsn + f0 * gsf) * HW, gsf * HW,
                                 sn * HW, gsn * HW, nimg, d[kh * 3], masks, kh * 3, KK, nv, inner)


# ---------------------------------------------------------------------------------------
# Array plumbing called by Conv2dDirectOp: allocation, layouts, threads. Pure Python.
# ---------------------------------------------------------------------------------------


def _grain(w_shape, OH: int, OW: int) -> int:
    """Images per thread: enough that each thread does PARALLEL_MIN_MACS multiply-adds."""
    F, C, KH, KW = w_shape
    return max(1, dispatch.PARALLEL_MIN_MACS // max(1, F * C * KH * KW * OH * OW))


def row_layout(N: int, OH: int, W: int, OW: int, KW: int, VL: int) -> int:
    """Images per "lane row", or 0: flat rows.

    Lane rows put k = VL // OW images side by side in one vector per output row, with one
    copy of the input per column tap (shifted by the tap), so no output entry is junk.
    Taken where W <= OW <= VL and they compute at most ``LANE_ROWS_MAX_WORK`` of flat rows'
    entries for the batch (``dispatch.DIRECT_CONV_LANE_ROWS`` = 0: never).
    """
    if not dispatch.DIRECT_CONV_LANE_ROWS or OW > VL or W > OW:
        return 0
    k = VL // OW
    flat = -(-((OH - 1) * (OW + KW - 1) + OW) // VL) * VL
    return k if -(-N // k) * OH * VL <= LANE_ROWS_MAX_WORK * N * flat else 0


def plane_layout(H: int, W: int, OH: int, OW: int, VL: int) -> bool:
    """Whether ``plane_forward`` runs: the output has the input's size ("same" padding) and a
    plane is whole vectors (``dispatch.DIRECT_CONV_PLANES`` = 0: never)."""
    return bool(dispatch.DIRECT_CONV_PLANES) and (H, W) == (OH, OW) and (H * W) % VL == 0


def stacked_layout(H: int, W: int, OH: int, OW: int, KH: int, KW: int, pt: int, pl: int) -> bool:
    """Whether ``stacked_forward`` runs: a "full" convolution (padding KH - 1 and KW - 1 on every
    side, the input gradient of an unpadded layer; ``dispatch.DIRECT_CONV_STACKED`` = 0: never)."""
    return (bool(dispatch.DIRECT_CONV_STACKED) and (pt, pl) == (KH - 1, KW - 1)
            and (OH, OW) == (H + KH - 1, W + KW - 1))


def _forward_args(x, w, b, pt, pl, OH, OW):
    """(y, kernel, args, items, item_macs): y (F, N, OH, OW) to be written by ``kernel(i0, i1, *args)``
    (``plane_forward`` or ``blocked_forward``) over items 0..items-1 (pack of images, channel block)
    of the stride-1 convolution, x placed at (pt, pl) of the padded plane; item_macs: the
    multiply-adds of one item."""
    N, _, H, W = x.shape
    F, C, KH, KW = w.shape
    VL = 64 // x.dtype.itemsize
    wt = np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(C * KH * KW, F)  # (C*KH*KW, F)
    bias = np.zeros(F, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    planes, sn, sc = as_planes(x)                                      # (P, H, W)
    y = buffers.empty((F, N, OH, OW), x.dtype)                         # (F, N, OH, OW)
    nb = -(-F // FORWARD_CHANNEL_BLOCK)
    if plane_layout(H, W, OH, OW, VL):
        d, masks = plane_masks(H, W, KH, KW, pt, pl, VL)
        item_macs = min(F, FORWARD_CHANNEL_BLOCK) * C * KH * KW * OH * OW
        args = (planes, sn, sc, wt, d, masks, bias, y, FORWARD_CHANNEL_BLOCK)
        return y, plane_forward, args, N * nb, item_macs
    stacked = stacked_layout(H, W, OH, OW, KH, KW, pt, pl)
    if not stacked and lanes_forward_rows(F, H, W, OH, OW, VL):
        args = (planes, sn, sc, wt, KH, KW, bias, y, pt, pl)
        return y, lanes_forward, args, N, F * C * KH * KW * OH * OW
    if stacked:
        m = stacked_images(OH * OW, VL)
        args = (planes, sn, sc, wt, KH, KW, bias, y, m)
        return y, stacked_forward, args, -(-N // m), F * C * KH * KW * OH * OW * _present(m, N)
    k = row_layout(N, OH, W, OW, KW, VL)
    packs = -(-N // k) if k else N
    item_macs = min(F, FORWARD_CHANNEL_BLOCK) * C * KH * KW * OH * OW * _present(max(1, k), N)
    args = (planes, sn, sc, wt, KH, KW, bias, y, pt, pl, FORWARD_CHANNEL_BLOCK, k)
    return y, blocked_forward, args, packs * nb, item_macs


def _present(size: int, there: int) -> int:
    """What a work item of ``size`` images (or a unit of ``size`` items) holds when only ``there``
    exist, for its multiply-adds, which set a region's grain: a pack of 4 images or a group of 16
    holds one at batch 1 (``dispatch.CONV_GRAIN_PRESENT_IMAGES``; 0: ``size``, as before Dec 6).
    At least 1: an empty batch (``there`` 0) has no work, and its grain must not divide by 0."""
    return max(1, min(size, there)) if dispatch.CONV_GRAIN_PRESENT_IMAGES else size


def _forward(x, w, b, pt, pl, OH, OW):
    """y (F, N, OH, OW) of the stride-1 convolution, x placed at (pt, pl) of the padded plane."""
    y, kernel, args, items, item_macs = _forward_args(x, w, b, pt, pl, OH, OW)
    parallel_for(kernel, items, *args, grain=max(1, dispatch.PARALLEL_MIN_MACS // max(1, item_macs)))
    return y


def conv2d_blocked(x, w, b, pads):
    """y (F, N, OH, OW) channel-major memory of the stride-1 convolution of x (N, C, H, W)."""
    H, W = x.shape[2:]
    KH, KW = w.shape[2:]
    pt, pb, pl, pr = pads
    return _forward(x, w, b, pt, pl, H + pt + pb - KH + 1, W + pl + pr - KW + 1)


def _grads_units(u0, u1, groups, wgrad_kernel, wgrad_args, items, per_unit, forward_kernel, forward_args,
                 then=None, images=0, N=0):
    """Units u0..u1-1 of the backward's one parallel region: units 0..groups-1 are weight-gradient
    groups (``blocked_grad_w``), the others blocks of ``per_unit`` input-gradient items
    (``blocked_forward`` on gy), each followed, with ``then`` = (kernel, args), by
    kernel(n0, n1, *args) on the block's images (``images`` per item, N in all). Python around
    nogil kernels."""
    g0, g1 = min(u0, groups), min(u1, groups)
    if g1 > g0:
        wgrad_kernel(g0, g1, *wgrad_args)
    i0, i1 = (max(u0, groups) - groups) * per_unit, min(items, (max(u1, groups) - groups) * per_unit)
    if i1 > i0:
        forward_kernel(i0, i1, *forward_args)
        if then is not None:
            then[0](i0 * images, min(N, i1 * images), *then[1])


def _images_per_item(kernel, args) -> int:
    """Images per work item of ``_forward_args``' kernel, or 0 where an item is a block of a
    pack's channels (more than FORWARD_CHANNEL_BLOCK output channels)."""
    if kernel is stacked_forward:
        return args[-1]                                                # m
    if kernel is lanes_forward:
        return 1
    y, CB = args[7], args[-2] if kernel is blocked_forward else args[-1]
    if -(-y.shape[0] // CB) > 1:
        return 0
    return max(1, args[-1]) if kernel is blocked_forward else 1       # a pack of k images, or one


def _weight_grads(x, w, gy, pads, need_w: bool, need_b: bool):
    """The weight-gradient half of ``conv2d_blocked_grads``: (kernel, args, groups, images, group_macs,
    finish). kernel(g0, g1, *args) computes the partial sums of groups g0..g1-1 (group g: images
    g*images ..), finish() adds them in order into (gw, gb) (None where not needed)."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    pt, _, pl, _ = pads
    OH, OW = gy.shape[2:]
    VL = 64 // x.dtype.itemsize
    planes, sn, sc = as_planes(x)                                      # (P, H, W)
    gplanes, gsn, gsf = as_planes(gy)                                  # (N*F, OH, OW)
    on_planes = plane_layout(H, W, OH, OW, VL) and KW == 3 and F % 8 == 0 and dispatch.DIRECT_CONV_PLANES_GRAD_W
    lanes = not on_planes and dispatch.DIRECT_CONV_LANES_GRAD_W and lanes_grad_w_applies(F, KH, KW, VL)
    if lanes:                                                          # filters in the lanes (conv_lanes)
        k, F4, group = 0, F, LANES_GROUP
    elif on_planes:                                                    # tiles: 8 filters x 3 columns
        k, F4, group = 0, F, plane_wgrad_group(OH * OW)
    else:
        k = row_layout(N, OH, W, OW, KW, VL) if KH == 3 and F % 8 == 0 else 0   # lane tiles: 8 filters x 3 rows
        Lp = OH * VL if k else -(-((OH - 1) * (OW + KW - 1) + OW) // VL) * VL
        group, F4 = wgrad_group(Lp), wgrad_rows(F)                     # packs of max(1, k) images
    groups = -(-N // (group * max(1, k)))
    parts = np.empty((groups, F4, C * KH * KW) if need_w else (groups, 0, 0), x.dtype)
    gb_parts = np.empty((groups, F), gy.dtype)
    if lanes:
        parts = parts.reshape(groups, -1)                              # (groups, F*C*KH*KW) or (groups, 0)
        wgrad_kernel = lanes_grad_w
        wgrad_args = (planes, sn, sc, C, gplanes, gsn, gsf, KH, KW, pt, pl, parts, gb_parts, group, need_b)
    elif on_planes:
        d, masks = plane_masks(H, W, KH, KW, pt, pl, VL)
        wgrad_kernel = plane_grad_w
        inner = OH * OW <= PLANE_WGRAD_IMAGES_INNER * VL                # images innermost in the tiles
        wgrad_args = (planes, sn, sc, C, gplanes, gsn, gsf, KH, d, masks, parts, gb_parts, group, need_b, inner)
    else:
        wgrad_kernel = blocked_grad_w
        wgrad_args = (planes, sn, sc, C, gplanes, gsn, gsf, KH, KW, pt, pl, parts, gb_parts, group, k, need_b)
    group_macs = _present(group * max(1, k), N) * F * C * KH * KW * OH * OW

    def finish():
        gw = None
        if need_w and lanes:
            gw = parts.sum(axis=0).reshape(F // VL, C, KH * KW, VL).transpose(0, 3, 1, 2)   # (F // VL, VL, C, KH*KW)
            gw = np.ascontiguousarray(gw).reshape(w.shape)             # (F, C, KH, KW)
        elif need_w and k:
            gw = parts.sum(axis=0)[:F].reshape(F, C, KW, KH).transpose(0, 1, 3, 2)  # (F, C, KH, KW)
            gw = np.ascontiguousarray(gw)
        elif need_w:
            gw = parts.sum(axis=0)[:F].reshape(w.shape)                # (F, C, KH, KW)
        return gw, gb_parts.sum(axis=0) if need_b else None

    return wgrad_kernel, wgrad_args, groups, group * max(1, k), group_macs, finish


def conv2d_blocked_grads(x, w, gy, pads, need_x: bool, need_w: bool, need_b: bool = True, then=None):
    """(gx, gw, gb) of ``conv2d_blocked``; gx is an (N, C, H, W) view of CNHW memory or None; gb None
    unless need_b (a pass over gy that a layer without bias, before a batch norm, does not need).

    With ``dispatch.CONV_GRADS_ONE_REGION``, gx and the weight and bias gradients are
    computed in one parallel region (one wake-up of the helpers, and the larger weight-gradient
    groups handed out first, the input-gradient items filling the threads' ends), else in two.
    Each result is computed as in two regions, bit for bit.

    ``then``: the backward of the op that made x, run per image in the same region (on the
    thread that has just written those images of gx, which stay in its cache): a function taking
    gx (unwritten yet, the very array returned) and the images per block (blocks start at its
    multiples), returning (kernel, args) or None, kernel(n0, n1, *args) then run on each block's
    images n0..n1-1 right after their gx (``pool.max_pool2d_scatter_by_images``). Called only where
    gx is computed in that region in items of whole images; not called otherwise (the caller's
    backward runs later, as without it).
    """
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    pt, _, pl, _ = pads
    OH, OW = gy.shape[2:]
    gx = None
    wgrad_kernel, wgrad_args, groups, group_images, group_macs, finish = _weight_grads(x, w, gy, pads, need_w, need_b)
    if need_x:
        wflip = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)             # (C, F, KH, KW)
        if dispatch.CONV_GRADS_ONE_REGION:
            y, forward_kernel, forward_args, items, item_macs = _forward_args(gy, wflip, None, KH - 1 - pt, KW - 1 - pl, H, W)
            per_unit = max(1, items * group_images // max(1, N))      # the items of one group's images (N = 0: none)
            units = groups + -(-items // per_unit)
            unit_macs = max(group_macs, _present(per_unit, items) * item_macs)
            gx = y.transpose(1, 0, 2, 3)                               # (N, C, H, W)
            images = _images_per_item(forward_kernel, forward_args) if then is not None else 0
            after = then(gx, per_unit * images) if images else None   # (kernel, args) or None
            parallel_for(_grads_units, units, groups, wgrad_kernel, wgrad_args, items, per_unit, forward_kernel, forward_args,
                         after, images, N, grain=-(-dispatch.PARALLEL_MIN_MACS // unit_macs))
        else:
            gx = _forward(gy, wflip, None, KH - 1 - pt, KW - 1 - pl, H, W).transpose(1, 0, 2, 3)
    if gx is None or not dispatch.CONV_GRADS_ONE_REGION:
        parallel_for(wgrad_kernel, groups, *wgrad_args, grain=-(-_grain(w.shape, OH, OW) // group_images))
    gw, gb = finish()
    return gx, gw, gb


def _weight_grads_of_images(n0, n1, wgrad_kernel, wgrad_args, group_images):
    """The weight-gradient groups of images n0..n1-1 (n0 a multiple of group_images; n1 too, or N)."""
    wgrad_kernel(n0 // group_images, -(-n1 // group_images), *wgrad_args)


def conv2d_blocked_weight_grads_by_images(x, w, gy, pads, need_w: bool, need_b: bool, step: int):
    """(kernel, args, finish) of the weight and bias gradients of ``conv2d_blocked`` computed image by
    image while gy is being written (another op's backward region: ``pool.max_pool2d_scatter_by_images``):
    kernel(n0, n1, *args) takes images n0..n1-1 of gy (n0 a multiple of ``step``, n1 too or N),
    finish() -> (gw, gb) once every image has run; the same groups, so the same bits as
    ``conv2d_blocked_grads``. None where a block of ``step`` images is not whole groups, or gy's
    memory is neither NCHW nor CNHW (``as_planes`` would copy it now, before it is written)."""
    if not (gy.flags.c_contiguous or gy.transpose(1, 0, 2, 3).flags.c_contiguous):
        return None
    wgrad_kernel, wgrad_args, _, group_images, _, finish = _weight_grads(x, w, gy, pads, need_w, need_b)
    if step % group_images:
        return None
    return _weight_grads_of_images, (wgrad_kernel, wgrad_args, group_images), finish
