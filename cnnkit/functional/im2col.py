"""Index plumbing shared by convolution and pooling: geometry, padding, im2col, col2im.

No autograd here: arrays in, arrays out.

Layout. The column matrix is channel-major, ``cols[c, kh, kw, n, oh, ow]``, i.e. a
(C*KH*KW, N*OH*OW) matrix, so a convolution is one matrix product
``W (F, C*KH*KW) @ cols -> (F, N*OH*OW)`` whose result is already in channel-major
(F, N, OH, OW) memory. Ops hand that memory on as an (N, F, OH, OW) *view*; the next
op's ``padded_cnhw`` reads it back channel-major without a transpose copy.
"""

from __future__ import annotations

import math

from ..backend import get_array_module

__all__ = [
    "padded_cnhw",
    "window",
    "im2col",
    "col2im",
    "windows_overlap",
    "chunk_bounds",
]


def padded_cnhw(x, pads: tuple[int, int, int, int], value: float = 0.0):
    """Return x (N, C, H, W) as channel-major (C, N, H+pt+pb, W+pl+pr) with a border of value.

    Without padding this is a transposed view (no copy).
    """
    pt, pb, pl, pr = pads
    xc = x.transpose(1, 0, 2, 3)                                      # (C, N, H, W)
    if not (pt or pb or pl or pr):
        return xc
    C, N, H, W = xc.shape
    Hp, Wp = H + pt + pb, W + pl + pr
    buf = get_array_module(x).empty((C, N, Hp, Wp), dtype=x.dtype)                    # (C, N, Hp, Wp)
    # Fill only the border, then copy the interior once.
    buf[:, :, :pt] = value
    buf[:, :, pt + H :] = value
    buf[:, :, pt : pt + H, :pl] = value
    buf[:, :, pt : pt + H, pl + W :] = value
    buf[:, :, pt : pt + H, pl : pl + W] = xc
    return buf


def window(xc, kh: int, kw: int, geometry):
    """The strided view of xc (C, N, Hp, Wp) that kernel tap (kh, kw) sees: (C, N, OH, OW)."""
    (SH, SW), (DH, DW), (OH, OW) = geometry
    h0, w0 = kh * DH, kw * DW
    return xc[:, :, h0 : h0 + SH * (OH - 1) + 1 : SH, w0 : w0 + SW * (OW - 1) + 1 : SW]


def im2col(xc, kernel: tuple[int, int], geometry, out=None):
    """Gather every kernel tap's view of xc (C, N, Hp, Wp) into cols (C, KH, KW, N, OH, OW).

    One strided-slice copy per kernel tap (KH*KW copies, each C*N*OH*OW elements).
    """
    KH, KW = kernel
    C, N = xc.shape[:2]
    OH, OW = geometry[2]
    if out is None:
        out = get_array_module(xc).empty((C, KH, KW, N, OH, OW), dtype=xc.dtype)
    for kh in range(KH):
        for kw in range(KW):
            out[:, kh, kw] = window(xc, kh, kw, geometry)
    return out


def windows_overlap(kernel: tuple[int, int], geometry) -> bool:
    """True when windows may share input elements (stride shorter than the dilated kernel)."""
    (SH, SW), (DH, DW), _ = geometry
    KH, KW = kernel
    return SH < DH * (KH - 1) + 1 or SW < DW * (KW - 1) + 1


def col2im(gcols, padded_hw: tuple[int, int], geometry, out=None):
    """Scatter-add gcols (C, KH, KW, N, OH, OW) back to channel-major (C, N, Hp, Wp).

    The adjoint of ``im2col``: one strided-slice add per kernel tap (no ``np.add.at``).
    """
    C, KH, KW, N = gcols.shape[:4]
    Hp, Wp = padded_hw
    if out is None:
        out = get_array_module(gcols).zeros((C, N, Hp, Wp), dtype=gcols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            window(out, kh, kw, geometry)[...] += gcols[:, kh, kw]
    return out


def chunk_bounds(n: int, bytes_per_item: int, limit_bytes: int) -> list[tuple[int, int]]:
    """Split range(n) into consecutive chunks of at most ``limit_bytes`` worth of items."""
    per_chunk = max(1, limit_bytes // max(bytes_per_item, 1))
    count = math.ceil(n / per_chunk)
    size = math.ceil(n / count) if count else n
    return [(i, min(i + size, n)) for i in range(0, n, size)]
