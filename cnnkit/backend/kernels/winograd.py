"""Winograd minimal filtering for 3x3 stride-1 convolutions: the tile transforms (numba).

Winograd F(m x m, 3 x 3) computes an m x m block of outputs from an a x a input tile
(a = m + 2) with a*a multiplications per (filter, channel) pair instead of 9*m*m:

    Y = A^T [ (G g G^T) . (B^T d B) ] A        (. elementwise, Lavin & Gray 2016)

summed over input channels. With U = G g G^T (a x a per filter and channel) and
V = B^T d B (a x a per channel and tile), the sum over channels at each of the a*a
positions (xi, nu) is a matrix product  M[xi,nu] (F, T) = U[xi,nu] (F, C) @ V[xi,nu] (C, T)
over all T tiles: a*a batched GEMMs (``cores.matmul``). This module holds the transforms
that are not products: the input transform (x -> V), the output transform (M -> y) and
the transform of the output gradient (gy -> gM, the adjoint of the output transform).
The filter transform G g G^T and its adjoint are one matrix product each with
kron(G, G) (``winograd_filters``, ``winograd_filter_grads``).

Two sizes: F(2x2, 3x3) (a = 4; 16 products for 36 direct ones: 2.25x fewer) with
points (0, 1, -1, inf), and F(4x4, 3x3) (a = 6; 36 for 144: 4x fewer) with points
(0, 1, -1, 2, -2, inf). Their float32 errors differ (F(4x4) grows the rounding error of
the transforms' larger coefficients): tests/backend/test_winograd.py states both.

Layouts: V (a*a, C, T) and M (a*a, F, T), tile index t = (th*N + n)*TW + tw over tile
rows th, images n and tile columns tw (a row of tiles of all images of a block is one
contiguous run); planes of x and y as in ``kernels.as_planes``.

Each transform takes one channel (or filter) at a time, a row of tiles of all images at
once: the a columns of every tile are gathered from each input row (stride-m reads into
a contiguous streams), then each 1-D transform is one vector loop
over the row's tiles. (An earlier layout with images innermost needed a scatter with a
stride of the image count there; its input transform took 3x longer.)
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from .. import buffers, dispatch
from ..cores import blas_threads, matmul, parallel_for
from ..workspace import scratch
from . import FASTMATH, as_planes, njit
from .batchnorm import affine_relu, affine_relu_block
from .simd import interleave, lanes, transpose

__all__ = [
    "conv2d_winograd", "conv2d_winograd_grads", "winograd_filters", "winograd_filter_grads",
    "winograd_input", "winograd_output", "winograd_input_rowwise", "winograd_output_rowwise", "winograd_output_grad",
    "TILE",
]

# TILE[m] = a, the input tile size of F(m x m, 3 x 3).
TILE = {2: 4, 4: 6}

# The transform matrices (Lavin & Gray 2016; points 0, 1, -1, [2, -2,] inf).
_G = {
    2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
    4: np.array([
        [1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1],
    ]),
}
# The 1-D transforms as formulas, so each output is computed in registers in one pass
# (B^T for the input, A^T for the output, A for the output gradient; a = 4 or 6).


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _bt4(d0, d1, d2, d3):
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _bt6(d0, d1, d2, d3, d4, d5):
    return (4 * d0 - 5 * d2 + d4, d4 + d3 - 4 * (d1 + d2), d4 - d3 + 4 * (d1 - d2),
            d4 - d2 + 2 * (d3 - d1), d4 - d2 - 2 * (d3 - d1), 4 * d1 - 5 * d3 + d5)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _at4(m0, m1, m2, m3):
    return m0 + m1 + m2, m1 - m2 - m3


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _at6(m0, m1, m2, m3, m4, m5):
    p1, p2, p3, p4 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return m0 + p1 + p3, p2 + 2 * p4, p1 + 4 * p3, p2 + 8 * p4 + m5


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _a4(g0, g1):
    return g0, g0 + g1, g0 - g1, -g1


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _a6(g0, g1, g2, g3):
    e, o, e4, o2 = g0 + g2, g1 + g3, g0 + 4 * g2, 2 * g1 + 8 * g3
    return g0, e + o, e - o, e4 + o2, e4 - o2, g3


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _row(src, H, W, h, shift, buf):
    """buf[shift + w] = src[h, w] for the columns that fit; False (buf untouched) if h is outside src.

    buf starts zeroed and its other entries are never written: they stay the zero padding.
    """
    if h < 0 or h >= H:
        return False
    row, dst = src[h], buf[shift:]
    for w in range(min(W, dst.shape[0])):
        dst[w] = row[w]
    return True


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _tile_columns(buf, TW, m, width, D, i, o):
    """D[i, k, o + tw] = buf[m*tw + k] for k < width, tw < TW: column k of every tile of a row.

    One stream at a time (a strided read, a contiguous write): measured 3-10x faster
    than writing the ``width`` streams in one loop or through slices.
    """
    for k in range(width):
        d = D[i, k, o:]
        for tw in range(TW):
            d[tw] = buf[m * tw + k]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _store_tiles(Y, i1, o, TW, m, out):
    """out[m*tw + i2] = Y[i1, i2, o + tw] for i2 < m, tw < TW: one output row of a row of tiles."""
    for i2 in range(m):
        v = Y[i1, i2, o:]
        for tw in range(TW):
            out[m * tw + i2] = v[tw]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def winograd_input(c0, c1, x, sn, sc, nimg, n0, pt, pl, th0, TH, TW, m, V):
    """V[:, c, t] = B^T d B for every tile of channels c0..c1-1 of images n0..n0+nimg-1, in
    tile rows th0..th0+TH-1 (V holds those rows only).

    Per tile row: the a columns of every tile of each of the a input rows are gathered
    into D[i, k] (stride-m reads, contiguous writes; the tiles of all images of the
    block side by side), then B^T runs down the rows (Q = B^T D) and across the columns
    (V = Q B), each pass one vector loop over the row's tiles.

    Args:
        x: input planes (P, H, W); plane (n, c) is x[n*sn + c*sc].
        V: (a*a, C, T), T = TH*nimg*TW, tile t = (th*nimg + j)*TW + tw for image n0 + j and
            tile row th0 + th.
    """
    H, W = x.shape[1], x.shape[2]
    a = m + 2
    TL = nimg * TW
    D = np.zeros((a, a, TL), x.dtype)                                 # D[i, k, j*TW + tw] = d_tile[i, k]
    Q = np.empty((a, a, TL), x.dtype)                                 # Q[xi, k] = (B^T d)[xi, k]
    buf = np.zeros(m * TW + 2, x.dtype)                               # one zero-padded input row
    for c in range(c0, c1):
        for th in range(TH):
            for j in range(nimg):
                src = x[(n0 + j) * sn + c * sc]
                o = j * TW
                for i in range(a):
                    if _row(src, H, W, (th0 + th) * m - pt + i, pl, buf):
                        _tile_columns(buf, TW, m, a, D, i, o)
                    else:
                        D[i, :, o : o + TW] = 0
            base = th * TL
            if m == 2:
                for k in range(a):                                    # down the rows
                    for t in range(TL):
                        Q[0, k, t], Q[1, k, t], Q[2, k, t], Q[3, k, t] = _bt4(D[0, k, t], D[1, k, t], D[2, k, t],
                                                                              D[3, k, t])
                for xi in range(a):                                   # across the columns
                    o = xi * a
                    V0, V1, V2, V3 = V[o, c, base:], V[o + 1, c, base:], V[o + 2, c, base:], V[o + 3, c, base:]
                    for t in range(TL):
                        V0[t], V1[t], V2[t], V3[t] = _bt4(Q[xi, 0, t], Q[xi, 1, t], Q[xi, 2, t], Q[xi, 3, t])
            else:
                for k in range(a):
                    for t in range(TL):
                        Q[0, k, t], Q[1, k, t], Q[2, k, t], Q[3, k, t], Q[4, k, t], Q[5, k, t] = _bt6(
                            D[0, k, t], D[1, k, t], D[2, k, t], D[3, k, t], D[4, k, t], D[5, k, t])
                for xi in range(a):
                    o = xi * a
                    V0, V1, V2 = V[o, c, base:], V[o + 1, c, base:], V[o + 2, c, base:]
                    V3, V4, V5 = V[o + 3, c, base:], V[o + 4, c, base:], V[o + 5, c, base:]
                    for t in range(TL):
                        V0[t], V1[t], V2[t], V3[t], V4[t], V5[t] = _bt6(
                            Q[xi, 0, t], Q[xi, 1, t], Q[xi, 2, t], Q[xi, 3, t], Q[xi, 4, t], Q[xi, 5, t])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def winograd_output(f0, f1, M, nimg, n0, th0, TH, TW, m, b, y):
    """y[f, n0 + j] = A^T M A + b[f] for filters f0..f1-1 and tile rows th0..th0+TH-1, cropped
    to y's size.

    Args:
        M: (a*a, F, T) in the tile order of ``winograd_input`` (the TH tile rows only).
        b: bias (F,).
        y: (F, N, OH, OW), written in full for the filters and images given.
    """
    OH, OW = y.shape[2], y.shape[3]
    a = m + 2
    TL = TW * nimg
    S = np.empty((a, m, TL), y.dtype)                                 # S[xi, i2] = (M A)[xi, i2]
    Y = np.empty((m, m, TL), y.dtype)                                 # Y[i1, i2] = (A^T M A)[i1, i2]
    out = np.empty(m * TW, y.dtype)                                   # one output row of a row of tiles
    whole = OW == m * TW
    for f in range(f0, f1):
        bias = b[f]
        for th in range(TH):
            base = th * TL
            if m == 2:
                for xi in range(a):                                   # across the tile columns
                    o = xi * a
                    M0, M1, M2, M3 = M[o, f, base:], M[o + 1, f, base:], M[o + 2, f, base:], M[o + 3, f, base:]
                    for t in range(TL):
                        S[xi, 0, t], S[xi, 1, t] = _at4(M0[t], M1[t], M2[t], M3[t])
                for i2 in range(m):                                   # down the rows
                    for t in range(TL):
                        r0, r1 = _at4(S[0, i2, t], S[1, i2, t], S[2, i2, t], S[3, i2, t])
                        Y[0, i2, t], Y[1, i2, t] = r0 + bias, r1 + bias
            else:
                for xi in range(a):
                    o = xi * a
                    M0, M1, M2 = M[o, f, base:], M[o + 1, f, base:], M[o + 2, f, base:]
                    M3, M4, M5 = M[o + 3, f, base:], M[o + 4, f, base:], M[o + 5, f, base:]
                    for t in range(TL):
                        S[xi, 0, t], S[xi, 1, t], S[xi, 2, t], S[xi, 3, t] = _at6(M0[t], M1[t], M2[t], M3[t], M4[t],
                                                                                  M5[t])
                for i2 in range(m):
                    for t in range(TL):
                        r0, r1, r2, r3 = _at6(S[0, i2, t], S[1, i2, t], S[2, i2, t], S[3, i2, t], S[4, i2, t],
                                              S[5, i2, t])
                        Y[0, i2, t], Y[1, i2, t], Y[2, i2, t], Y[3, i2, t] = r0 + bias, r1 + bias, r2 + bias, r3 + bias
            rows = min(m, OH - (th0 + th) * m)
            for j in range(nimg):
                for i1 in range(rows):
                    dst = y[f, n0 + j, (th0 + th) * m + i1]
                    if whole:
                        _store_tiles(Y, i1, j * TW, TW, m, dst)
                    else:
                        _store_tiles(Y, i1, j * TW, TW, m, out)
                        for w in range(OW):
                            dst[w] = out[w]


# The same two transforms laid out for longer vector loops (``dispatch.WINOGRAD_ROWWISE_TRANSFORMS``;
# the same arithmetic on the same values in the same order, so the same bits: tested).


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def winograd_input_rowwise(c0, c1, x, sn, sc, nimg, n0, pt, pl, th0, TH, TW, m, V):
    """``winograd_input`` (same arguments, same V bit for bit), B^T applied to whole input rows.

    Per tile row of an image: its a zero-padded input rows P (a, L), then B^T down them in one
    vector loop over all L columns (R = B^T P: column m*tw + k of R is (B^T d)[:, k] of tile tw,
    each column computed once where ``winograd_input`` gathers the a columns of every tile first,
    a copies of the shared ones in short strided loops), then B across each tile's columns of R
    (stride-m reads). One thread, 64 channels at 56x56, F(2x2) / F(4x4): 0.78 / 0.80 ms -> 0.37 /
    0.48 ms (F(4x4)'s formulas compute in float64: their integer factors promote them).
    """
    H, W = x.shape[1], x.shape[2]
    a = m + 2
    TL = nimg * TW
    L = m * TW + 2
    P = np.zeros((a, L), x.dtype)                                     # the tile row's input rows, zero-padded
    R = np.empty((a, L), x.dtype)                                     # R[xi, w] = (B^T P)[xi, w]
    for c in range(c0, c1):
        for th in range(TH):
            for j in range(nimg):
                src = x[(n0 + j) * sn + c * sc]
                for i in range(a):
                    if not _row(src, H, W, (th0 + th) * m - pt + i, pl, P[i]):
                        P[i, :] = 0
                base = th * TL + j * TW
                if m == 2:
                    P0, P1, P2, P3 = P[0], P[1], P[2], P[3]
                    R0, R1, R2, R3 = R[0], R[1], R[2], R[3]
                    for w in range(L):                                # down the rows
                        R0[w], R1[w], R2[w], R3[w] = _bt4(P0[w], P1[w], P2[w], P3[w])
                    for xi in range(4):                               # across each tile's columns
                        o = xi * 4
                        r = R[xi]
                        V0, V1, V2, V3 = V[o, c, base:], V[o + 1, c, base:], V[o + 2, c, base:], V[o + 3, c, base:]
                        for t in range(TW):
                            V0[t], V1[t], V2[t], V3[t] = _bt4(r[2 * t], r[2 * t + 1], r[2 * t + 2], r[2 * t + 3])
                else:
                    P0, P1, P2, P3, P4, P5 = P[0], P[1], P[2], P[3], P[4], P[5]
                    R0, R1, R2, R3, R4, R5 = R[0], R[1], R[2], R[3], R[4], R[5]
                    for w in range(L):
                        R0[w], R1[w], R2[w], R3[w], R4[w], R5[w] = _bt6(P0[w], P1[w], P2[w], P3[w], P4[w], P5[w])
                    for xi in range(6):
                        o = xi * 6
                        r = R[xi]
                        V0, V1, V2 = V[o, c, base:], V[o + 1, c, base:], V[o + 2, c, base:]
                        V3, V4, V5 = V[o + 3, c, base:], V[o + 4, c, base:], V[o + 5, c, base:]
                        for t in range(TW):
                            V0[t], V1[t], V2[t], V3[t], V4[t], V5[t] = _bt6(
                                r[4 * t], r[4 * t + 1], r[4 * t + 2], r[4 * t + 3], r[4 * t + 4], r[4 * t + 5])


_OUTPUT_BLOCK_TILES = 2048  # F(4x4) output: tiles per block of tile rows (S and Y of a block stay in L2)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def winograd_output_rowwise(f0, f1, M, nimg, n0, th0, TH, TW, m, b, y):
    """``winograd_output`` (same arguments, same y bit for bit), output rows written whole.

    F(2x2): A across the tile columns of a tile row (one vector loop over its tiles) into S
    with each tile's two columns side by side (S[xi, 2*t + i2]), then A^T down the rows in one
    vector loop over the output row's columns, no per-tile scatter. F(4x4): both passes as
    ``winograd_output`` but over blocks of tile rows (longer vector loops: 14 tiles a row at
    56x56, 7 at 28x28, shorter than a float32 vector), then each output row's four columns of
    every tile merged by two rounds of lane interleaves (``simd.interleave``) instead of four
    stride-4 scatters per row. One thread, 64 filters at 56x56, F(2x2) / F(4x4): 0.22 / 0.37 ms
    -> 0.14 / 0.17 ms.
    """
    OH, OW = y.shape[2], y.shape[3]
    TL = TW * nimg
    if m == 2:
        S = np.empty((4, 2 * TL), y.dtype)                            # S[xi, 2*t + i2] = (M A)[xi, i2] of tile t
        Y = np.empty((2, 2 * TW), y.dtype)                            # an output row pair of one image
        for f in range(f0, f1):
            bias = b[f]
            for th in range(TH):
                h0 = (th0 + th) * 2
                base = th * TL
                for xi in range(4):                                   # across the tile columns
                    o = xi * 4
                    M0, M1, M2, M3 = M[o, f, base:], M[o + 1, f, base:], M[o + 2, f, base:], M[o + 3, f, base:]
                    s = S[xi]
                    for t in range(TL):
                        s[2 * t], s[2 * t + 1] = _at4(M0[t], M1[t], M2[t], M3[t])
                for j in range(nimg):                                 # down the rows
                    o = j * 2 * TW
                    S0, S1, S2, S3 = S[0, o:], S[1, o:], S[2, o:], S[3, o:]
                    Y0, Y1 = Y[0], Y[1]
                    for w in range(OW):
                        r0, r1 = _at4(S0[w], S1[w], S2[w], S3[w])
                        Y0[w], Y1[w] = r0 + bias, r1 + bias
                    for i1 in range(min(2, OH - h0)):
                        dst, row = y[f, n0 + j, h0 + i1], Y[i1]
                        for w in range(OW):
                            dst[w] = row[w]
        return
    VL = 64 // y.itemsize
    G = max(1, min(TH, _OUTPUT_BLOCK_TILES // TL))                    # tile rows per block
    Tp = G * TL + VL                                                  # (interleaves read up to VL past a row)
    S = np.empty((6, 4, G * TL), y.dtype)                             # S[xi, i2, t] = (M A)[xi, i2]
    Yf = np.zeros(16 * Tp, y.dtype)
    Y = Yf.reshape((4, 4, Tp))                                        # Y[i1, i2, t] = (A^T M A)[i1, i2] + b
    nb = -(-TW // VL)
    out = np.empty(4 * VL * nb, y.dtype)                              # one output row of an image
    P = np.empty(2 * VL, y.dtype)
    Q = np.empty(2 * VL, y.dtype)
    for f in range(f0, f1):
        bias = b[f]
        for g0 in range(0, TH, G):
            n = (min(TH, g0 + G) - g0) * TL
            base = g0 * TL
            for xi in range(6):
                o = xi * 6
                M0, M1, M2 = M[o, f, base:], M[o + 1, f, base:], M[o + 2, f, base:]
                M3, M4, M5 = M[o + 3, f, base:], M[o + 4, f, base:], M[o + 5, f, base:]
                S0, S1, S2, S3 = S[xi, 0], S[xi, 1], S[xi, 2], S[xi, 3]
                for t in range(n):
                    S0[t], S1[t], S2[t], S3[t] = _at6(M0[t], M1[t], M2[t], M3[t], M4[t], M5[t])
            for i2 in range(4):
                Y0, Y1, Y2, Y3 = Y[0, i2], Y[1, i2], Y[2, i2], Y[3, i2]
                for t in range(n):
                    r0, r1, r2, r3 = _at6(S[0, i2, t], S[1, i2, t], S[2, i2, t], S[3, i2, t], S[4, i2, t],
                                          S[5, i2, t])
                    Y0[t], Y1[t], Y2[t], Y3[t] = r0 + bias, r1 + bias, r2 + bias, r3 + bias
            for th in range(g0, min(TH, g0 + G)):
                h0 = (th0 + th) * 4
                for j in range(nimg):
                    for i1 in range(min(4, OH - h0)):
                        r = i1 * 4 * Tp + (th - g0) * TL + j * TW     # Y[i1, i2, t] at r + i2*Tp + t
                        for k in range(nb):
                            o, q = r + k * VL, 4 * VL * k
                            interleave(Yf, o, Yf, o + 2 * Tp, P, 0, VL)          # i2 = 0, 2, 0, 2, ...
                            interleave(Yf, o + Tp, Yf, o + 3 * Tp, Q, 0, VL)     # i2 = 1, 3, 1, 3, ...
                            interleave(P, 0, Q, 0, out, q, q + VL)              # i2 = 0, 1, 2, 3, ...
                            interleave(P, VL, Q, VL, out, q + 2 * VL, q + 3 * VL)
                        dst = y[f, n0 + j, h0 + i1]
                        for w in range(OW):
                            dst[w] = out[w]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def winograd_output_grad(f0, f1, gy, gsn, gsf, nimg, n0, TH, TW, m, gM):
    """gM[:, f, t] = A gy_tile A^T for filters f0..f1-1 of images n0..n0+nimg-1: the adjoint
    of ``winograd_output``; gy past its size reads as 0.

    Args:
        gy: output-gradient planes (P, OH, OW); plane (n, f) is gy[n*gsn + f*gsf].
        gM: (a*a, F, T) in the tile order of ``winograd_input``.
    """
    OH, OW = gy.shape[1], gy.shape[2]
    a = m + 2
    TL = TW * nimg
    D = np.zeros((m, m, TL), gy.dtype)                                # D[i, k, j*TW + tw] = g_tile[i, k]
    Q = np.empty((a, m, TL), gy.dtype)                                # Q[xi, k] = (A g)[xi, k]
    buf = np.zeros(m * TW, gy.dtype)                                  # one gy row, zero past OW
    for f in range(f0, f1):
        for th in range(TH):
            for j in range(nimg):
                src = gy[(n0 + j) * gsn + f * gsf]
                o = j * TW
                for i in range(m):
                    if _row(src, OH, OW, th * m + i, 0, buf):
                        _tile_columns(buf, TW, m, m, D, i, o)
                    else:
                        D[i, :, o : o + TW] = 0
            base = th * TL
            if m == 2:
                for k in range(m):                                    # down the rows
                    for t in range(TL):
                        Q[0, k, t], Q[1, k, t], Q[2, k, t], Q[3, k, t] = _a4(D[0, k, t], D[1, k, t])
                for xi in range(a):                                   # across the tile columns
                    o = xi * a
                    G0, G1, G2, G3 = gM[o, f, base:], gM[o + 1, f, base:], gM[o + 2, f, base:], gM[o + 3, f, base:]
                    for t in range(TL):
                        G0[t], G1[t], G2[t], G3[t] = _a4(Q[xi, 0, t], Q[xi, 1, t])
            else:
                for k in range(m):
                    for t in range(TL):
                        Q[0, k, t], Q[1, k, t], Q[2, k, t], Q[3, k, t], Q[4, k, t], Q[5, k, t] = _a6(
                            D[0, k, t], D[1, k, t], D[2, k, t], D[3, k, t])
                for xi in range(a):
                    o = xi * a
                    G0, G1, G2 = gM[o, f, base:], gM[o + 1, f, base:], gM[o + 2, f, base:]
                    G3, G4, G5 = gM[o + 3, f, base:], gM[o + 4, f, base:], gM[o + 5, f, base:]
                    for t in range(TL):
                        G0[t], G1[t], G2[t], G3[t], G4[t], G5[t] = _a6(Q[xi, 0, t], Q[xi, 1, t], Q[xi, 2, t], Q[xi, 3, t])


# ---------------------------------------------------------------------------------------
# F(2x2) with the channels in the vector lanes (the eager path split by output channels,
# ``_forward_by_filters``): V^T (16, T, C) with the input channels innermost, U^T (16, C, n)
# and M^T (16, T, n) with the filters innermost, so that every transform is a vector loop
# over channels or filters, not over a row's few tiles (7 at 14x14).
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def winograd_input2_lanes(r0, r1, x, sn, sc, nimg, n0, pt, pl, TW, Vt, VL, X, Q):
    """Vt[xi*4 + nu, t, c] = (B^T d B)[xi, nu] for tile d of channel c, F(2x2), every channel, tile
    rows r0..r1-1 of images n0..n0+nimg-1.

    Per image, the input rows those tiles read are copied into a zero-padded (row, column,
    channel) buffer (VL planes x VL columns transposed in registers, ``simd.transpose``), then
    per tile B^T down the rows (into Q (4, 4, C)) and across the columns (into Vt), each a loop
    over the channels with four loads and four stores: LLVM vectorizes those, not a loop with
    32 streams. Split by tile rows, each thread writes whole runs of Vt: split by channels, the
    two threads wrote alternate halves of each 1 KB row and the region took 4-6x its time.

    Args:
        x: input planes (P, H, W), C-contiguous; plane (n, c) is x[n*sn + c*sc].
        Vt: (16, T, C), T = TH*nimg*TW, tile t = (th*nimg + j)*TW + tw for image n0 + j.
        VL: ``simd.lanes(x.dtype)``.
        X: (2(r1 - r0) + 2, 2TW + 2, C): X[h - 2 r0, w, c] = padded plane c at (h, w) (the caller's
            scratch: a kernel's own arrays of this size are mapped and unmapped by the C
            library on every call).
        Q: (4, 4, C): Q[xi, k] = (B^T d)[xi, k].
    """
    H, W = x.shape[1], x.shape[2]
    C = Vt.shape[2]
    rows, Wp = X.shape[0], X.shape[1]
    top = 2 * r0 - pt                                                 # the input row of X's row 0
    w1 = min(W, Wp - pl)                                              # input columns 0..w1-1 fit
    for i in range(rows):                                             # the padding, once for all images
        if top + i < 0 or top + i >= H:
            X[i] = 0
        else:
            X[i, :pl] = 0
            X[i, pl + w1:] = 0
    xf, Xf = x.reshape(x.size), X.reshape(X.size)
    HW = H * W
    for j in range(nimg):
        for cb in range(0, C, VL):
            for i in range(rows):
                h = top + i
                if h < 0 or h >= H:
                    continue
                if cb + VL <= C:                                      # VL planes x VL columns transposed in registers
                    for w in range(0, w1, VL):
                        cols = min(VL, w1 - w)
                        transpose(xf, ((n0 + j) * sn + cb * sc) * HW + h * W + w, sc * HW, cols,
                                  Xf, (i * Wp + w + pl) * C + cb, C, VL, cols)
                else:
                    for w in range(w1):
                        d = X[i, w + pl]
                        for c in range(cb, C):
                            d[c] = x[(n0 + j) * sn + c * sc, h, w]
        for th in range(r0, r1):
            for tw in range(TW):
                t = (th * nimg + j) * TW + tw
                r, s = 2 * (th - r0), 2 * tw
                for k in range(4):                                    # down the rows
                    a0, a1, a2, a3 = X[r, s + k], X[r + 1, s + k], X[r + 2, s + k], X[r + 3, s + k]
                    b0, b1, b2, b3 = Q[0, k], Q[1, k], Q[2, k], Q[3, k]
                    for c in range(C):
                        b0[c], b1[c], b2[c], b3[c] = _bt4(a0[c], a1[c], a2[c], a3[c])
                for xi in range(4):                                   # across the columns
                    a0, a1, a2, a3 = Q[xi, 0], Q[xi, 1], Q[xi, 2], Q[xi, 3]
                    o = 4 * xi
                    b0, b1, b2, b3 = Vt[o, t], Vt[o + 1, t], Vt[o + 2, t], Vt[o + 3, t]
                    for c in range(C):
                        b0[c], b1[c], b2[c], b3[c] = _bt4(a0[c], a1[c], a2[c], a3[c])


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _g4(a, b, c):
    return a, 0.5 * (a + b + c), 0.5 * (a - b + c), c              # G (a) for F(2x2): rows of _G[2]


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def winograd_filters2_lanes(f0, f1, w9, Ut, VL, WT):
    """Ut[xi*4 + nu, c, f - f0] = (G w[f, c] G^T)[xi, nu] for filters f0..f1-1, F(2x2): U^T of those
    filters, the filters innermost.

    Per run of CB channels, the block's taps are first transposed to WT (CB, 9, n) (VL filters x
    VL taps in registers, ``simd.transpose``, where the block is whole vectors of filters; a run
    at a time, so WT stays in cache), then per channel G along
    the kernel's columns (Z (3, 4, n)) and along its rows (into Ut), each a loop over the
    filters with three loads and four stores.

    Args:
        w9: (F*C, 9), C-contiguous: w reshaped.
        Ut: (16, C, n), n = f1 - f0.
        VL: ``simd.lanes(w9.dtype)``.
        WT: (CB, 9, n): WT[c - c0, j, f - f0] = w9[f*C + c, j] for a run of channels c0.. (the
            caller's scratch, as ``winograd_input2_lanes``' X).
    """
    C, n = Ut.shape[1], Ut.shape[2]
    CB = WT.shape[0]
    wf, WTf = w9.reshape(w9.size), WT.reshape(WT.size)
    Z = np.empty((3, 4, n), w9.dtype)                                 # Z[kh, nu] = (w G^T)[kh, nu]
    for c0 in range(0, C, CB):
        cn = min(CB, C - c0)
        if n % VL == 0:
            for fb in range(0, n, VL):
                for q in range(0, cn * 9, VL):
                    cols = min(VL, cn * 9 - q)
                    transpose(wf, ((f0 + fb) * C + c0) * 9 + q, C * 9, cols, WTf, q * n + fb, n, VL, cols)
        else:
            for c in range(cn):
                for f in range(n):
                    src = w9[(f0 + f) * C + c0 + c]
                    for j in range(9):
                        WT[c, j, f] = src[j]
        for c in range(cn):
            for kh in range(3):                                       # along the columns
                a, b, d = WT[c, 3 * kh], WT[c, 3 * kh + 1], WT[c, 3 * kh + 2]
                z0, z1, z2, z3 = Z[kh, 0], Z[kh, 1], Z[kh, 2], Z[kh, 3]
                for f in range(n):
                    z0[f], z1[f], z2[f], z3[f] = _g4(a[f], b[f], d[f])
            for nu in range(4):                                       # along the rows
                a, b, d = Z[0, nu], Z[1, nu], Z[2, nu]
                u0, u1, u2, u3 = Ut[nu, c0 + c], Ut[4 + nu, c0 + c], Ut[8 + nu, c0 + c], Ut[12 + nu, c0 + c]
                for f in range(n):
                    u0[f], u1[f], u2[f], u3[f] = _g4(a[f], b[f], d[f])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def winograd_output2_lanes(Mt, nimg, n0, TH, TW, b, y):
    """y[f, n0 + j] = A^T M A + b[f] for the n filters of Mt (16, T, n), F(2x2), cropped to y's size.

    Per tile, A across the tile columns (into S (4, 2, n)) and down the rows (into Y (2TH, 2TW, n),
    with the bias), each a loop over the filters; then Y is copied into y's planes.

    Args:
        Mt: M^T (16, T, n) in the tile order of ``winograd_input2_lanes``.
        b: bias (n,).
        y: (n, N, OH, OW) (a block of filters of the output), written in full for the images given.
    """
    n = Mt.shape[2]
    OH, OW = y.shape[2], y.shape[3]
    S = np.empty((4, 2, n), y.dtype)                                  # S[xi, i2] = (M A)[xi, i2]
    Y = np.empty((2 * TH, 2 * TW, n), y.dtype)                        # Y[h, w, f]
    for j in range(nimg):
        for th in range(TH):
            for tw in range(TW):
                t = (th * nimg + j) * TW + tw
                for xi in range(4):                                   # across the tile columns
                    o = 4 * xi
                    a0, a1, a2, a3 = Mt[o, t], Mt[o + 1, t], Mt[o + 2, t], Mt[o + 3, t]
                    s0, s1 = S[xi, 0], S[xi, 1]
                    for f in range(n):
                        s0[f], s1[f] = _at4(a0[f], a1[f], a2[f], a3[f])
                for i2 in range(2):                                   # down the rows
                    a0, a1, a2, a3 = S[0, i2], S[1, i2], S[2, i2], S[3, i2]
                    y0, y1 = Y[2 * th, 2 * tw + i2], Y[2 * th + 1, 2 * tw + i2]
                    for f in range(n):
                        r0, r1 = _at4(a0[f], a1[f], a2[f], a3[f])
                        y0[f], y1[f] = r0 + b[f], r1 + b[f]
        for f in range(n):
            for h in range(OH):
                src, dst = Y[h], y[f, n0 + j, h]
                for w in range(OW):
                    dst[w] = src[w, f]


# ---------------------------------------------------------------------------------------
# Array plumbing called by Conv2dWinogradOp: blocks, scratch buffers, threads. Pure Python.
# ---------------------------------------------------------------------------------------


def _geometry(OH: int, OW: int, m: int):
    return -(-OH // m), -(-OW // m)                                  # tile rows TH, columns TW


def _block(N: int, per_image_bytes: int, block_bytes: int | None) -> int:
    """Images per block: a block's transformed tiles fit block_bytes (default dispatch.WINOGRAD_BLOCK_BYTES)."""
    limit = dispatch.WINOGRAD_BLOCK_BYTES if block_bytes is None else block_bytes
    return max(1, min(N, limit // max(1, per_image_bytes)))


def _grain(nimg: int, plane_elements: int) -> int:
    """Channels per thread: enough elements that one more thread pays for its wake-up."""
    return max(1, dispatch.PARALLEL_MIN_ELEMENTS // 4 // max(1, nimg * plane_elements))


_FILTER_MATRICES: dict = {}  # (m, dtype) -> read-only K; np.kron costs ~13 us a call


def _filter_matrix(m: int, dtype):
    """K (a*a, 9) = kron(G, G): K[xi*a + nu, kh*3 + kw] = G[xi, kh] * G[nu, kw], so that
    U[xi*a + nu] = sum over taps of K[xi*a + nu, tap] * w[tap] is G w G^T in one product.
    Made once per size and dtype (read-only)."""
    key = (m, np.dtype(dtype))
    k = _FILTER_MATRICES.get(key)
    if k is None:
        k = _FILTER_MATRICES[key] = np.kron(_G[m], _G[m]).astype(dtype)
        k.flags.writeable = False
    return k


def winograd_filters(w, m: int):
    """U (a*a, F, C) = G w G^T for every filter and channel; w (F, C, 3, 3).

    U[:, p] = K (a*a, 9) @ w[p] (9,) for every filter-channel pair p, K = kron(G, G).
    Banks whose U takes at most ``dispatch.WINOGRAD_FILTER_KERNEL_MAX_BYTES``: compiled
    (``_filter_block``: blocks of pairs transposed to tap-major rows in L1, then each U
    row summed from K's nonzero entries times those rows, vectorized over the pairs; an
    inner dimension of 9 kept BLAS at ~20 GFLOP/s). Larger ones: one matrix product
    K @ w^T (w's transpose is a view: BLAS reads it as it lies). The kernel adds the taps
    in order, skipping K's zeros; tests/backend/test_winograd.py holds it to the product.
    """
    F, C = w.shape[:2]
    a2 = TILE[m] ** 2
    U = buffers.empty((a2, F, C), w.dtype)
    w9 = np.ascontiguousarray(w).reshape(F * C, 9)                    # (F*C, 9)
    K = _filter_matrix(m, w.dtype)
    if 0 < U.nbytes <= dispatch.WINOGRAD_FILTER_KERNEL_MAX_BYTES and w9.dtype in (np.float32, np.float64):
        parallel_for(_filter_block, F * C, w9, K, U.reshape(a2, F * C),
                     grain=max(1, dispatch.WINOGRAD_FILTER_MIN_ELEMENTS // a2))
    else:
        matmul(K, w9.T, out=U.reshape(a2, F * C))
    return U


_FILTER_RUN = 32  # channels per run of winograd_filters2_lanes (WT (32, 9, 64) is 72 KiB)
_FILTER_BLOCK = 256  # filter-channel pairs per block: 9 rows of taps (9 KiB in float32) stay in L1


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _filter_block(p0, p1, w9, K, U):
    """U[k, p] = sum over taps j of K[k, j] * w9[p, j] for p in [p0, p1), zero K entries skipped.

    Per block of pairs: the taps transposed to rows (T[j] holds tap j of every pair), then
    each U row is one vector pass per nonzero K entry, in tap order. (A loop over pairs with
    the a*a x 9 sums unrolled inside did not vectorize: 5-9x slower.)
    """
    a2 = K.shape[0]
    T = np.empty((9, _FILTER_BLOCK), w9.dtype)
    for q0 in range(p0, p1, _FILTER_BLOCK):
        n = min(_FILTER_BLOCK, p1 - q0)
        for i in range(n):
            for j in range(9):
                T[j, i] = w9[q0 + i, j]
        for k in range(a2):
            u = U[k, q0:q0 + n]
            first = True
            for j in range(9):
                c = K[k, j]
                if c == 0:
                    continue
                t = T[j]
                if first:
                    for i in range(n):
                        u[i] = c * t[i]
                    first = False
                else:
                    for i in range(n):
                        u[i] += c * t[i]
            if first:                                       # a row of zeros (kron(G, G) has none)
                u[:] = 0


def winograd_filter_grads(gu, m: int):
    """gw (F, C, 3, 3) = G^T gU G: the adjoint of ``winograd_filters``; gu (a*a, F, C).

    One matrix product gU^T (F*C, a*a) @ K (a*a, 9), written straight into gw.
    """
    a2, F, C = gu.shape
    gw = buffers.empty((F, C, 3, 3), gu.dtype)
    matmul(gu.reshape(a2, F * C).T, _filter_matrix(m, gu.dtype), out=gw.reshape(F * C, 9))
    return gw


def _transforms(m: int, nimg: int, TW: int):
    """(input, output) transform kernels for calls on ``nimg`` images of ``TW`` tile columns:
    the rowwise ones where ``dispatch.winograd_rowwise`` says so, else ``winograd_input`` and
    ``winograd_output`` (the same bits either way)."""
    rows_in, rows_out = dispatch.winograd_rowwise(m, nimg, TW)
    return (winograd_input_rowwise if rows_in else winograd_input,
            winograd_output_rowwise if rows_out else winograd_output)


def _input_transform(planes, sn, sc, C, nimg, n0, pt, pl, TH, TW, m, V, plane_elements):
    parallel_for(_transforms(m, nimg, TW)[0], C, planes, sn, sc, nimg, n0, pt, pl, 0, TH, TW, m, V,
                 grain=_grain(nimg, plane_elements))


def _forward_setup(x, F: int, b, OH: int, OW: int, m: int, block_bytes, planes_per_tile=None):
    """What the forwards start from: x's planes, the tile grid, y (F, N, OH, OW), the bias, and
    images per block, an image's tiles taking ``planes_per_tile`` (default max(C, F)) planes of
    a*a values each in the block's buffers."""
    N, C, H, W = x.shape
    a = m + 2
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    TH, TW = _geometry(OH, OW, m)
    y = buffers.empty((F, N, OH, OW), x.dtype)                        # (F, N, OH, OW)
    bias = np.zeros(F, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    per_tile = max(C, F) if planes_per_tile is None else planes_per_tile
    nbk = _block(N, a * a * per_tile * TH * TW * x.dtype.itemsize, block_bytes)
    return planes, sn, sc, TH, TW, y, bias, nbk


def _forward(x, U, b, pt: int, pl: int, OH: int, OW: int, m: int, block_bytes=None):
    """y (F, N, OH, OW) = the convolution whose transformed filters are U (a*a, F, C)."""
    N, C, H, W = x.shape
    F, a = U.shape[1], m + 2
    planes, sn, sc, TH, TW, y, bias, nbk = _forward_setup(x, F, b, OH, OW, m, block_bytes)
    for n0 in range(0, N, nbk):
        k = min(nbk, N - n0)
        V = scratch("winograd.V", (a * a, C, k * TH * TW), x.dtype)   # (a*a, C, T)
        _input_transform(planes, sn, sc, C, k, n0, pt, pl, TH, TW, m, V, H * W)
        M = scratch("winograd.M", (a * a, F, k * TH * TW), x.dtype)   # (a*a, F, T)
        matmul(U, V, out=M)
        parallel_for(_transforms(m, k, TW)[1], F, M, k, n0, 0, TH, TW, m, bias, y, grain=_grain(k, OH * OW))
    return y


def _tile_rows(r0, r1, planes, sn, sc, nimg, n0, pt, pl, TW, m, U, bias, y, epilogue=None):
    """The whole forward of tile rows r0..r1-1 of images n0..n0+nimg-1, on the calling thread.

    Input transform, products and output transform of those rows one after the other,
    their V and M in this thread's scratch buffers: what one core writes, the same core
    reads back from its own cache; then ``epilogue`` (scale, shift, r, relu) on those output rows
    (``batchnorm.affine_relu_block``).
    """
    a, C, F = m + 2, U.shape[2], U.shape[1]
    T = (r1 - r0) * nimg * TW
    transform_input, transform_output = _transforms(m, nimg, TW)
    V = scratch("winograd.rows.V", (a * a, C, T), y.dtype)           # (a*a, C, T)
    transform_input(0, C, planes, sn, sc, nimg, n0, pt, pl, r0, r1 - r0, TW, m, V)
    M = scratch("winograd.rows.M", (a * a, F, T), y.dtype)           # (a*a, F, T)
    np.matmul(U, V, out=M)                                            # one BLAS thread (the caller's setting)
    transform_output(0, F, M, nimg, n0, r0, r1 - r0, TW, m, bias, y)
    if epilogue is not None:
        affine_relu_block(0, F, y, n0, n0 + nimg, r0 * m, min(r1 * m, y.shape[2]), *epilogue)


def _forward_by_rows(x, U, b, pt: int, pl: int, OH: int, OW: int, m: int, block_bytes=None, epilogue=None):
    """``_forward`` with the threads splitting the tile rows, each running the whole pipeline on its rows.

    ``_forward`` splits each phase over the threads (channels, then products, then
    filters), so every phase reads what the other core wrote, and each phase must be
    big enough on its own for its split to pay; here a thread's tiles never leave it.
    """
    N, C, H, W = x.shape
    F, a = U.shape[1], m + 2
    planes, sn, sc, TH, TW, y, bias, nbk = _forward_setup(x, F, b, OH, OW, m, block_bytes)
    with blas_threads(1):
        for n0 in range(0, N, nbk):
            k = min(nbk, N - n0)
            parallel_for(_tile_rows, TH, planes, sn, sc, k, n0, pt, pl, TW, m, U, bias, y, epilogue,
                         grain=-(-dispatch.PARALLEL_MIN_MACS // (a * a * F * C * k * TW)),
                         per_thread=dispatch.ROWS_PER_THREAD, piece_grain=True)
    return y


def _input_lanes(inputs: dict, planes, sn, sc, nimg, n0, pt, pl, TH, TW, C, dtype, VL):
    """V^T (16, T, C) of images n0..n0+nimg-1 (``winograd_input2_lanes``) in this thread's scratch
    buffers, computed on the thread's first call for a block of images and kept in ``inputs`` (by
    thread) for its next ones."""
    key = threading.get_ident()
    Vt = inputs.get(key)
    if Vt is None:
        Vt = scratch("winograd.lanes.V", (16, nimg * TH * TW, C), dtype, kept=True)    # (16, T, C)
        X = scratch("winograd.lanes.X", (2 * TH + 2, 2 * TW + 2, C), dtype, kept=True)
        Q = scratch("winograd.lanes.Q", (4, 4, C), dtype, kept=True)
        winograd_input2_lanes(0, TH, planes, sn, sc, nimg, n0, pt, pl, TW, Vt, VL, X, Q)
        inputs[key] = Vt
    return Vt


def _lanes2_block(inputs, planes, sn, sc, nimg, n0, pt, pl, TH, TW, w9, bias, y, VL, f0, f1):
    """F(2x2), filters f0..f1-1 of images n0..: their U^T (16, C, n) (``winograd_filters2_lanes``),
    the 16 products M^T (16, T, n) = V^T (16, T, C) @ U^T, the output transform into y[f0:f1]. V^T
    is this thread's own (``_input_lanes``), U^T and M^T live in its scratch buffers (a block's U^T
    stays in its core's cache from transform to product) and are never written whole."""
    C = w9.shape[0] // y.shape[0]
    Vt = _input_lanes(inputs, planes, sn, sc, nimg, n0, pt, pl, TH, TW, C, y.dtype, VL)
    Ut = scratch("winograd.filters.U", (16, C, f1 - f0), y.dtype, kept=True)  # (16, C, n)
    WT = scratch("winograd.filters.WT", (min(C, _FILTER_RUN), 9, f1 - f0), y.dtype, kept=True)  # (CB, 9, n)
    winograd_filters2_lanes(f0, f1, w9, Ut, VL, WT)
    Mt = scratch("winograd.filters.M", (16, Vt.shape[1], f1 - f0), y.dtype, kept=True)  # (16, T, n)
    np.matmul(Vt, Ut, out=Mt)                                         # one BLAS thread (the caller's setting)
    winograd_output2_lanes(Mt, nimg, n0, TH, TW, bias[f0:f1], y[f0:f1])  # y[f0:f1] (n, N, OH, OW)


def _tiles_block(V, w9, filters, nimg, n0, TH, TW, m, bias, y, transform_output, f0, f1):
    """F(m x m) in the tile layout, filters f0..f1-1 of images n0..: their U (a*a, n, C)
    (``_filter_block`` on their rows of w9 into this thread's scratch, or their rows of the
    prepacked ``filters``), the products M (a*a, n, T) = U @ V with V (a*a, C, T) shared by all
    blocks, the output transform (``transform_output``, from ``_transforms``) into y[f0:f1]."""
    a2, C = (m + 2) ** 2, V.shape[1]
    if filters is None:
        U = scratch("winograd.tiles.U", (a2, f1 - f0, C), y.dtype)          # (a*a, n, C)
        _filter_block(0, (f1 - f0) * C, w9[f0 * C : f1 * C], _filter_matrix(m, y.dtype), U.reshape(a2, (f1 - f0) * C))
    else:
        U = filters[:, f0:f1]
    M = scratch("winograd.tiles.M", (a2, f1 - f0, V.shape[2]), y.dtype)       # (a*a, n, T)
    np.matmul(U, V, out=M)                                            # one BLAS thread (the caller's setting)
    transform_output(0, f1 - f0, M, nimg, n0, 0, TH, TW, m, bias[f0:f1], y[f0:f1])


def _filter_blocks(q0, q1, fb, block, nimg, n0, y, epilogue):
    """Blocks q0..q1-1 of ``fb`` filters each, on the calling thread: ``block(f0, f1)`` (their
    filter transform, products and output transform: ``_lanes2_block`` or ``_tiles_block``), then
    ``epilogue`` on their planes of images n0..n0+nimg-1."""
    F = y.shape[0]
    for q in range(q0, q1):
        f0, f1 = q * fb, min(F, q * fb + fb)
        block(f0, f1)
        if epilogue is not None:
            affine_relu_block(f0, f1, y, n0, n0 + nimg, 0, y.shape[2], *epilogue)


def _forward_by_filters(x, w, b, pt: int, pl: int, OH: int, OW: int, m: int, fb: int, filters=None,
                        block_bytes=None, epilogue=None):
    """The forward with the threads splitting the output channels in fixed blocks of ``fb``
    filters (``_filter_blocks``), each block's filter transform, products, output transform and
    epilogue on one thread (``dispatch.winograd_filter_block``: one image of few tiles).

    Against ``_forward_by_rows`` on U = ``winograd_filters(w, m)``: U (a*a, F, C) is never written
    whole and read back by every thread; each thread transforms and reads only its blocks'
    filters, and every product has all the tiles as columns (F(4x4) at 28x28 by rows: 7 tile
    rows, products of 14 columns). Two ways to V, the transformed input:
    - F(2x2) (``_lanes2_block``, filters transformed here): V^T (16, T, C) with the channels in
      the vector lanes, computed whole by each thread for itself in the same region. V^T is
      small (0.8 MB at 256x14x14): shared, every line of it written by one core after both had
      read it (the call before) took the other's copy away, and its input transform ran 4x
      longer on two threads than the whole on one (one more region too).
    - F(4x4) (``_tiles_block``, filters transformed here or prepacked): V (36, C, T) in the tile
      layout, its input transform a region of its own split by channels (at 28x28 V is 0.9 MB
      for 128 channels; a whole per thread would double that transform's time).
    The blocks do not depend on the thread count: the same bits on any number of threads (not
    the bits of the other Winograd paths: another order of the products' sums).
    """
    N, C, H, W = x.shape
    F, a = w.shape[0], m + 2
    planes, sn, sc, TH, TW, y, bias, nbk = _forward_setup(x, F, b, OH, OW, m, block_bytes, C)
    w9 = None if filters is not None else np.ascontiguousarray(w, dtype=x.dtype).reshape(F * C, 9)  # (F*C, 9)
    with blas_threads(1):
        for n0 in range(0, N, nbk):
            k = min(nbk, N - n0)
            if m == 2:
                block = functools.partial(_lanes2_block, {}, planes, sn, sc, k, n0, pt, pl, TH, TW, w9, bias, y,
                                          lanes(x.dtype))
            else:
                transform_input, transform_output = _transforms(m, k, TW)
                V = scratch("winograd.V", (a * a, C, k * TH * TW), x.dtype)   # (a*a, C, T)
                parallel_for(transform_input, C, planes, sn, sc, k, n0, pt, pl, 0, TH, TW, m, V, per_thread=2)
                block = functools.partial(_tiles_block, V, w9, filters, k, n0, TH, TW, m, bias, y, transform_output)
            parallel_for(_filter_blocks, -(-F // fb), fb, block, k, n0, y, epilogue,
                         per_thread=dispatch.WINOGRAD_FILTER_BLOCKS_PER_THREAD)
    return y


def conv2d_winograd(x, w, b, pads, m: int, block_bytes: int | None = None, filters=None, epilogue=None):
    """y (F, N, OH, OW) channel-major memory of the 3x3 stride-1 convolution of x (N, C, H, W).

    block_bytes: the size of a block's transformed tiles (default: dispatch's).
    filters: U = ``winograd_filters(w, m)`` computed beforehand (an inference layer's
        prepacked weight, ``backend/prepack.py``), or None to compute it here.
    epilogue: (scale, shift, r, relu): y = relu(y*scale + shift (+ r)) after the bias
        (``batchnorm.affine_relu_block``), by each thread on its rows where the threads split
        the tile rows, else in a pass of its own.
    """
    H, W = x.shape[2:]
    pt, pb, pl, pr = pads
    OH, OW = H + pt + pb - 2, W + pl + pr - 2
    fb = dispatch.winograd_filter_block(x.shape[0], OH, OW, m)
    if fb and (m == 4 or filters is None):                            # (F(2x2)'s lanes take no prepacked U)
        return _forward_by_filters(x, w, b, pt, pl, OH, OW, m, fb, filters, block_bytes, epilogue)
    U = winograd_filters(w, m) if filters is None else filters       # (a*a, F, C)
    if dispatch.winograd_by_rows(x.size, U.nbytes):
        return _forward_by_rows(x, U, b, pt, pl, OH, OW, m, block_bytes, epilogue)
    y = _forward(x, U, b, pt, pl, OH, OW, m, block_bytes)
    if epilogue is not None:
        affine_relu(y, *epilogue)
    return y


def conv2d_winograd_grads(x, w, gy, pads, m: int, need_x: bool, need_w: bool, block_bytes: int | None = None):
    """(gx, gw) of ``conv2d_winograd``; gx an (N, C, H, W) view of CNHW memory, or None.

    gx is the convolution of gy (padded by 2 - p on each side) with the flipped filters,
    w[f, c, 2 - kh, 2 - kw] as filter c of channel f, computed by the same forward path.
    gw is the adjoint of the forward: gU[xi,nu] = sum over tiles gM[xi,nu] @ V[xi,nu]^T,
    with gM = A gy_tile A^T, then gw = G^T gU G.
    """
    N, C, H, W = x.shape
    F = w.shape[0]
    pt, pb, pl, pr = pads
    OH, OW = gy.shape[2:]
    gx = gw = None
    if need_x:
        flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, F, 3, 3)
        gxc = _forward(gy, winograd_filters(flipped, m), None, 2 - pt, 2 - pl, H, W, m, block_bytes)
        gx = gxc.transpose(1, 0, 2, 3)                                # (N, C, H, W) view
    if need_w:
        a = m + 2
        planes, sn, sc = as_planes(x)                                 # (P, H, W)
        gplanes, gsn, gsf = as_planes(gy)                             # (P, OH, OW)
        TH, TW = _geometry(OH, OW, m)
        gu = buffers.empty((a * a, F, C), gy.dtype)                   # (a*a, F, C)
        gu[...] = 0
        nbk = _block(N, a * a * max(C, F) * TH * TW * x.dtype.itemsize, block_bytes)
        for n0 in range(0, N, nbk):
            k = min(nbk, N - n0)
            V = scratch("winograd.V", (a * a, C, k * TH * TW), x.dtype)
            _input_transform(planes, sn, sc, C, k, n0, pt, pl, TH, TW, m, V, H * W)
            gM = scratch("winograd.M", (a * a, F, k * TH * TW), x.dtype)
            parallel_for(winograd_output_grad, F, gplanes, gsn, gsf, k, n0, TH, TW, m, gM, grain=_grain(k, OH * OW))
            part = scratch("winograd.gU", (a * a, F, C), x.dtype)
            matmul(gM, V.transpose(0, 2, 1), out=part)                # (a*a, F, C)
            gu += part
        gw = winograd_filter_grads(gu, m)                             # (F, C, 3, 3)
    return gx, gw
