"""3x3 stride-2 convolutions (padding 1) on the input's stride phases, as planes (numba + vectors).

Input row 2*oh + kh - 1 of a 3x3 stride-2 convolution with padding 1 is row i = oh + di of the
input's row phase a (the rows 2i + a), with a = (kh - 1) mod 2 and di = -1 for kh = 0, else 0;
likewise for columns. Split into its four phases ph = 2a + b (H/2 x W/2 planes, the output's
size), the convolution is a stride-1 one over 4C planes with nine taps, tap (kh, kw) reading
phase ph(kh, kw) shifted by (di, dj) in {-1, 0}^2:

    y[f, p] = sum_{c, kh, kw} w[f, c, kh, kw] * phase[ph(kh, kw)][c, p + di*OW + dj]

(zero where the shifted pixel leaves the plane), and ``conv_blocked``'s plane kernel computes it
(``_plane_image``: tiles of 16 output channels x one vector, each tap one masked vector load).
Its adjoints are plane convolutions too:

- input gradient: gx's phase ph is the sum over the taps that read ph of gy shifted back by
  (-di, -dj): a stride-1 plane convolution of gy with a 1x1, 1x2, 2x1 or 2x2 sub-kernel of the
  filters (the taps of ph); no zero-inserted gy, no columns, no col2im. The four phases are
  interleaved back into gx's rows in registers (``simd.interleave``).
- weight gradient: gw[f, c, kh, kw] = sum_{n, p} gy[f, n, p] * phase[ph(kh, kw)][c, n, p + di*OW + dj]:
  tiles of 8 filters x the 3 taps of one kernel row (24 vector sums) over a fixed group of
  images, gy read in place.

The phases of one image (forward, input gradient) or of a group of images (weight gradient) are
split into a per-thread buffer that stays in cache (``simd.deinterleave``: two vectors of an input
row become a vector of each column phase); nothing of the batch's size is copied.

Applies (``dispatch.strided_planes_applies``) where H and W are even, an input row is whole vectors and so is a phase
plane (ResNet-20's 16->32 layer on 32x32 and 32->64 on 16x16, float32 and float64), any batch
and input channel count, F a multiple of 8 (the weight gradient's tiles).

Numerics: each output is one FMA chain over its taps, in another order than im2col's (equal up
to rounding); weight-gradient groups are fixed per shape and their partial sums added in order,
so results do not depend on the number of threads.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import buffers, dispatch
from ..cores import parallel_for
from ..workspace import scratch
from . import FASTMATH, as_planes, njit
from .conv_blocked import _grads_units, _plane_image, shift_masks
from .simd import acc_alloc, acc_dot_masked_at, acc_hsum, acc_zero, deinterleave, interleave

__all__ = ["conv2d_strided", "conv2d_strided_grads", "split_phases", "phase_forward",
           "phase_grad_x", "phase_grad_w"]

# Images per weight-gradient group: each tile's lanes are added once per group (fixed per shape,
# so the sums do not depend on the threads).
WGRAD_GROUP = 16

# Entries between two phases of a group's buffer beyond the planes themselves: with the planes a
# power-of-two size apart, the three taps' loads of a tile fell into one L1 set.
PHASE_SKEW = 16


def _taps():
    """(phase, di, dj) of the nine taps (kh, kw), row-major."""
    out = []
    for kh in range(3):
        for kw in range(3):
            a, b = (kh - 1) % 2, (kw - 1) % 2
            out.append((2 * a + b, -1 if kh == 0 else 0, -1 if kw == 0 else 0))
    return out


@functools.lru_cache(maxsize=32)
def _geometry(OH: int, OW: int, VL: int, phase_stride: int):
    """(d, masks) of the nine taps on OH x OW phase planes, d including the phase's offset
    (phase ph starts ph*phase_stride entries after phase 0)."""
    taps = _taps()
    d, masks = shift_masks(OH, OW, tuple((di, dj) for _, di, dj in taps), VL)
    return d + np.array([ph for ph, _, _ in taps], np.int64) * phase_stride, masks


@functools.lru_cache(maxsize=32)
def _back_geometry(OH: int, OW: int, VL: int):
    """For each phase ph: (its taps' indices kh*3 + kw, d, masks) of gy shifted back by (-di, -dj)."""
    taps = _taps()
    out = []
    for ph in range(4):
        index = [t for t, (p, _, _) in enumerate(taps) if p == ph]
        d, masks = shift_masks(OH, OW, tuple((-taps[t][1], -taps[t][2]) for t in index), VL)
        out.append((np.array(index, np.int64), d, masks))
    return tuple(out)


@njit(cache=True, nogil=True)
def split_phases(x, plane, H, W, out, oo, pstride):
    """The four phases of one H x W input plane (flat, from ``plane``): phase ph = 2a + b to
    out[oo + ph*pstride : + H*W // 4], entry i*W/2 + j = x[plane + (2i + a)*W + 2j + b].

    Row phase a's rows, end to end, are its two column phases interleaved entry by entry (W even),
    so each two vectors of them split into one vector of each (W a multiple of VL)."""
    VL = 64 // x.itemsize
    half = H * W // 4
    for a in range(2):
        e, o = oo + 2 * a * pstride, oo + (2 * a + 1) * pstride
        for k in range(half // VL):
            s0 = 2 * k * VL                       # position in row phase a's rows, end to end
            s1 = s0 + VL
            x0 = plane + (2 * (s0 // W) + a) * W + s0 % W
            x1 = plane + (2 * (s1 // W) + a) * W + s1 % W
            deinterleave(x, x0, x1, out, e + k * VL, out, o + k * VL)


@njit(cache=True, nogil=True)
def _merge_phases(src, so, pstride, gx, plane, H, W):
    """``split_phases``' inverse: the four phases at src[so + ph*pstride] into the plane gx[plane:]."""
    VL = 64 // gx.itemsize
    half = H * W // 4
    for a in range(2):
        e, o = so + 2 * a * pstride, so + (2 * a + 1) * pstride
        for k in range(half // VL):
            s0 = 2 * k * VL
            s1 = s0 + VL
            d0 = plane + (2 * (s0 // W) + a) * W + s0 % W
            d1 = plane + (2 * (s1 // W) + a) * W + s1 % W
            interleave(src, e + k * VL, src, o + k * VL, gx, d0, d1)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def phase_forward(i0, i1, x, sn, sc, C, H, W, wt, d, masks, bias, y, buf):
    """Images i0..i1-1 of the convolution; y (F, N, H/2, W/2) written in full.

    Each image's phases go to buf (C, 4, H*W/4) (``split_phases``), then ``_plane_image`` runs the
    nine taps (d, masks: ``_geometry`` with phase stride H*W/4) over them.

    Args:
        x: input planes (P, H, W), plane (n, c) is x[n*sn + c*sc].
        wt: filters by tap (C*9, F); bias (F,) (zeros without one).
        buf: scratch of at least C*H*W entries.
    """
    F, N = y.shape[0], y.shape[1]
    VL = 64 // x.itemsize
    HW = H * W // 4
    xs, ys = x.reshape(x.size), y.reshape(y.size)
    for n in range(i0, i1):
        for c in range(C):
            split_phases(xs, (n * sn + c * sc) * H * W, H, W, buf, c * 4 * HW, HW)
        _plane_image(buf, 0, 4 * HW, d, masks, wt, bias, ys, n * HW, N * HW, 0, F, HW // VL, VL)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def phase_grad_x(i0, i1, gy, gsn, gsf, H, W, w0, d0, m0, w1, d1, m1, w2, d2, m2, w3, d3, m3, bias, gx, buf):
    """Images i0..i1-1 of the input gradient; gx (C, N, H, W) written in full.

    Phase ph of gx is the plane convolution of gy with (w_ph, d_ph, m_ph) (``_back_geometry``:
    w_ph (F*T, C) the filters of ph's T taps), computed into buf (4, C, H*W/4) and interleaved
    into gx's planes (``_merge_phases``). bias: zeros (C,). gy: planes (N*F, OH, OW), plane
    (n, f) at gy[n*gsn + f*gsf]."""
    C, N = gx.shape[0], gx.shape[1]
    VL = 64 // gy.itemsize
    HW = H * W // 4
    nv = HW // VL
    gs, gxs = gy.reshape(gy.size), gx.reshape(gx.size)
    for n in range(i0, i1):
        go = n * gsn * HW
        _plane_image(gs, go, gsf * HW, d0, m0, w0, bias, buf, 0, HW, 0, C, nv, VL)
        _plane_image(gs, go, gsf * HW, d1, m1, w1, bias, buf, C * HW, HW, 0, C, nv, VL)
        _plane_image(gs, go, gsf * HW, d2, m2, w2, bias, buf, 2 * C * HW, HW, 0, C, nv, VL)
        _plane_image(gs, go, gsf * HW, d3, m3, w3, bias, buf, 3 * C * HW, HW, 0, C, nv, VL)
        for c in range(C):
            _merge_phases(buf, c * HW, C * HW, gxs, (c * N + n) * H * W, H, W)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _wgrad_tile(xs, gs, part, f0, t0, xo, go, gstride, nimg, offs, masks, kh, nv, HW):
    """part[f0 + a, t0 + j] += sum over nimg images and nv vectors of gy . (phase tap kh*3 + j),
    a < 8, j < 3; images one plane (HW entries) apart in both buffers.

    Images innermost: the three taps' offsets and lane masks of a vector stay in registers while
    the images stream past (vectors innermost, reloading them per step, ran 2x slower: 8.6-9.3 ms
    against 4.0-5.1 for the 16->32 layer's gW at b128, one thread)."""
    VL = 64 // xs.itemsize
    acc = acc_alloc(32, xs)
    acc_zero(acc, 32, xs)
    for v in range(nv):
        xv, gv = xo + v * VL, go + v * VL
        for m in range(nimg):
            acc_dot_masked_at(acc, 8, 3, gs, gv + m * HW, gstride, xs, xv + m * HW, offs, kh * 3, masks, v * 9 + kh * 3)
    acc_hsum(acc, 8, 3, part, f0 * part.shape[1] + t0, part.shape[1])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def phase_grad_w(g0, g1, x, sn, sc, C, H, W, gy, gsn, gsf, offs, masks, parts, group, buf, gbuf):
    """Image groups g0..g1-1 of the weight gradient (F a multiple of 8): parts[q, f, (c*3 + kh)*3 + kw].

    The group's phases go to buf, phase ph of image m of channel c at c*4*ps + ph*ps + m*H*W/4
    (ps = group*H*W/4 + PHASE_SKEW; offs, masks: ``_geometry`` with phase stride ps), and its
    output gradient to gbuf, filter f of image m at f*ps + m*H*W/4 (read in place, gy's CNHW filter
    planes a power of two apart, gW took 5.1-6.4 ms against 4.0-5.1 for the 16->32 layer at b128)."""
    F = parts.shape[1]
    N = gy.shape[0] // F
    HW = H * W // 4
    VL = 64 // x.itemsize
    nv = HW // VL
    ps = group * HW + PHASE_SKEW
    xs, gs = x.reshape(x.size), gy.reshape(gy.size)
    for grp in range(g0, g1):
        n0 = grp * group
        nimg = min(group, N - n0)
        for c in range(C):
            for m in range(nimg):
                split_phases(xs, ((n0 + m) * sn + c * sc) * H * W, H, W, buf, c * 4 * ps + m * HW, ps)
        for f in range(F):
            for m in range(nimg):
                dst = gbuf[f * ps + m * HW : f * ps + (m + 1) * HW]
                src = gs[((n0 + m) * gsn + f * gsf) * HW : ((n0 + m) * gsn + f * gsf + 1) * HW]
                for i in range(HW):
                    dst[i] = src[i]
        part = parts[grp]
        part[:] = 0.0
        for f0 in range(0, F, 8):
            for c in range(C):
                for kh in range(3):
                    _wgrad_tile(buf, gbuf, part, f0, (c * 3 + kh) * 3, c * 4 * ps, f0 * ps, ps, nimg,
                                offs, masks, kh, nv, HW)


# ---------------------------------------------------------------------------------------
# Array plumbing called by Conv2dStridedPlanesOp: buffers, threads. Pure Python.
# ---------------------------------------------------------------------------------------


def _forward_images(i0, i1, x, sn, sc, C, H, W, wt, d, masks, bias, y):
    """``phase_forward`` with this thread's phase buffer (kept across calls)."""
    buf = scratch("strided.phases", (C * H * W,), x.dtype)
    phase_forward(i0, i1, x, sn, sc, C, H, W, wt, d, masks, bias, y, buf)


def _grad_x_images(i0, i1, gy, gsn, gsf, H, W, *back):
    buf = scratch("strided.gx", (back[-1].shape[0] * H * W,), gy.dtype)
    phase_grad_x(i0, i1, gy, gsn, gsf, H, W, *back, buf)


def _grad_w_groups(g0, g1, x, sn, sc, C, H, W, gy, gsn, gsf, offs, masks, parts, group):
    ps = group * H * W // 4 + PHASE_SKEW
    buf = scratch("strided.gw", (C * 4 * ps,), x.dtype)
    gbuf = scratch("strided.gw_gy", (parts.shape[1] * ps,), x.dtype)
    phase_grad_w(g0, g1, x, sn, sc, C, H, W, gy, gsn, gsf, offs, masks, parts, group, buf, gbuf)


def _image_macs(w_shape, H: int, W: int) -> int:
    F, C = w_shape[:2]
    return F * C * 9 * (H // 2) * (W // 2)


def conv2d_strided(x, w, b):
    """y (F, N, H/2, W/2) channel-major memory of the 3x3 stride-2 convolution (padding 1) of x
    (N, C, H, W) (``dispatch.strided_planes_applies`` holds)."""
    N, C, H, W = x.shape
    F = w.shape[0]
    VL = 64 // x.dtype.itemsize
    wt = np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(C * 9, F)   # (C*9, F)
    bias = np.zeros(F, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    d, masks = _geometry(H // 2, W // 2, VL, H * W // 4)
    planes, sn, sc = as_planes(x)                                      # (P, H, W)
    y = buffers.empty((F, N, H // 2, W // 2), x.dtype)                 # (F, N, OH, OW)
    parallel_for(_forward_images, N, planes, sn, sc, C, H, W, wt, d, masks, bias, y,
                 grain=max(1, dispatch.PARALLEL_MIN_MACS // max(1, _image_macs(w.shape, H, W))))
    return y


def conv2d_strided_grads(x, w, gy, need_x: bool, need_w: bool):
    """(gx, gw) of ``conv2d_strided``; gx an (N, C, H, W) view of CNHW memory, or None.

    One parallel region: the weight-gradient groups first, then the input gradient's images."""
    N, C, H, W = x.shape
    F = w.shape[0]
    VL = 64 // x.dtype.itemsize
    gplanes, gsn, gsf = as_planes(gy)                                  # (N*F, OH, OW)
    group = WGRAD_GROUP
    groups = -(-N // group) if need_w else 0
    parts = np.empty((groups, F, C * 9), x.dtype)                      # (groups, F, C*9)
    planes, sn, sc = as_planes(x)                                      # (P, H, W)
    offs, masks = _geometry(H // 2, W // 2, VL, group * H * W // 4 + PHASE_SKEW)
    wgrad_args = (planes, sn, sc, C, H, W, gplanes, gsn, gsf, offs, masks, parts, group)
    gx = None
    items, per_unit, gx_args = 0, 1, ()
    if need_x:
        gx = buffers.empty((C, N, H, W), x.dtype)                      # (C, N, H, W)
        back = []
        for index, d, m in _back_geometry(H // 2, W // 2, VL):
            kh, kw = np.divmod(index, 3)
            wp = np.ascontiguousarray(w[:, :, kh, kw].transpose(0, 2, 1)).reshape(F * len(index), C)  # (F*T, C)
            back += [wp, d, m]
        gx_args = (gplanes, gsn, gsf, H, W, *back, np.zeros(C, x.dtype), gx)
        items, per_unit = N, group
    units = groups + -(-items // per_unit)
    unit_macs = max(1, min(group, N) * _image_macs(w.shape, H, W))      # a unit's work (N < group: all of it)
    parallel_for(_grads_units, units, groups, _grad_w_groups, wgrad_args, items, per_unit, _grad_x_images, gx_args,
                 grain=-(-dispatch.PARALLEL_MIN_MACS // unit_macs))
    gw = parts.sum(axis=0).reshape(w.shape) if need_w else None        # (F, C, 3, 3)
    return (gx.transpose(1, 0, 2, 3) if need_x else None), gw
