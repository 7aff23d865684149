"""Naive-loop oracles for the engine's core ops: written for obviousness, never for speed.

Each function computes its op the way a textbook states it, one output element (or one
input element, for the transposed convolution) at a time, with PyTorch's argument
semantics. Tests compare cnnkit's fast paths with these where PyTorch is not installed
(PyTorch stays the main oracle where it is). NumPy is used only to hold arrays and to
sum one window; no im2col, no strided views, nothing shared with cnnkit.

Shapes: x (N, C, H, W); conv weight (F, C/groups, KH, KW); conv_transpose weight
(C, F/groups, KH, KW); linear weight (D_out, D_in).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "sum_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "linear",
]


def _pair(v):
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    return (v[0], v[-1])


def _same_padding(kernel, dilation):
    """PyTorch's padding="same" for stride 1: total d*(k-1), the odd extra at the end."""
    pads = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return pads


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n, f, i, j] = b[f] + sum_{c in f's group, kh, kw} w[f, c, kh, kw] * xpad[n, c, i*SH + kh*DH, j*SW + kw*DW]."""
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    (SH, SW), (DH, DW) = _pair(stride), _pair(dilation)
    if padding == "valid":
        (pt, pb), (pl, pr) = (0, 0), (0, 0)
    elif padding == "same":
        (pt, pb), (pl, pr) = _same_padding((KH, KW), (DH, DW))
    else:
        ph, pw = _pair(padding)
        (pt, pb), (pl, pr) = (ph, ph), (pw, pw)
    xpad = np.zeros((N, C, H + pt + pb, W + pl + pr), dtype=x.dtype)
    xpad[:, :, pt : pt + H, pl : pl + W] = x
    OH = (H + pt + pb - DH * (KH - 1) - 1) // SH + 1
    OW = (W + pl + pr - DW * (KW - 1) - 1) // SW + 1
    F_per_group = F // groups
    y = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            g = f // F_per_group
            for i in range(OH):
                for j in range(OW):
                    total = 0.0 if b is None else b[f]
                    for c in range(Cg):
                        for kh in range(KH):
                            for kw in range(KW):
                                total += w[f, c, kh, kw] * xpad[n, g * Cg + c, i * SH + kh * DH, j * SW + kw * DW]
                    y[n, f, i, j] = total
    return y


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """The adjoint of conv2d: each input element scatters x[n, c, i, j] * w[c, f, :, :] into the output.

    y[n, f, i*SH + kh*DH - PH, j*SW + kw*DW - PW] += x[n, c, i, j] * w[c, f', kh, kw]
    for c in f's group (f' = f's index inside the group), positions outside the output dropped.
    """
    N, C, H, W = x.shape
    _, Fg, KH, KW = w.shape
    (SH, SW), (PH, PW) = _pair(stride), _pair(padding)
    (OPH, OPW), (DH, DW) = _pair(output_padding), _pair(dilation)
    F = Fg * groups
    C_per_group = C // groups
    OH = (H - 1) * SH - 2 * PH + DH * (KH - 1) + OPH + 1
    OW = (W - 1) * SW - 2 * PW + DW * (KW - 1) + OPW + 1
    y = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            g = c // C_per_group
            for i in range(H):
                for j in range(W):
                    for fg in range(Fg):
                        for kh in range(KH):
                            for kw in range(KW):
                                oi, oj = i * SH + kh * DH - PH, j * SW + kw * DW - PW
                                if 0 <= oi < OH and 0 <= oj < OW:
                                    y[n, g * Fg + fg, oi, oj] += x[n, c, i, j] * w[c, fg, kh, kw]
    if b is not None:
        y += np.asarray(b).reshape(1, F, 1, 1)
    return y


def _pool_out(size, k, s, p, d, ceil_mode):
    """Window count along one axis (PyTorch's rule: ceil_mode drops a window starting in the right padding)."""
    span = d * (k - 1) + 1
    if ceil_mode:
        out = math.ceil((size + 2 * p - span) / s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
    else:
        out = (size + 2 * p - span) // s + 1
    return out


def _geometry(kernel_size, stride, padding, dilation):
    k = _pair(kernel_size)
    s = k if stride is None or stride == () else _pair(stride)
    return k, s, _pair(padding), _pair(dilation)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """y[n, c, i, j] = the largest input element of window (i, j); padding never wins.

    With ``return_indices``, also the flat index h*W + w of each window's first maximum in
    row-major order (a NaN counts as the maximum, the last NaN winning), as PyTorch's.
    """
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = _geometry(kernel_size, stride, padding, dilation)
    OH = _pool_out(H, KH, SH, PH, DH, ceil_mode)
    OW = _pool_out(W, KW, SW, PW, DW, ceil_mode)
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    where = np.zeros((N, C, OH, OW), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best, best_at = -np.inf, -1
                    for kh in range(KH):
                        for kw in range(KW):
                            h, v = i * SH - PH + kh * DH, j * SW - PW + kw * DW
                            if 0 <= h < H and 0 <= v < W:
                                value = x[n, c, h, v]
                                if value > best or np.isnan(value) or best_at < 0:
                                    best, best_at = value, h * W + v
                    y[n, c, i, j], where[n, c, i, j] = best, best_at
    return (y, where) if return_indices else y


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """y[n, c, i, j] = sum of window (i, j) / divisor, as PyTorch counts it.

    The divisor is the window's area clipped to the padded input (count_include_pad) or to
    the input itself; a ceil_mode window hanging past the padding never counts that part.
    """
    N, C, H, W = x.shape
    (KH, KW), (SH, SW), (PH, PW), _ = _geometry(kernel_size, stride, padding, 1)
    OH = _pool_out(H, KH, SH, PH, 1, ceil_mode)
    OW = _pool_out(W, KW, SW, PW, 1, ceil_mode)
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    h0, w0 = i * SH - PH, j * SW - PW
                    h1, w1 = min(h0 + KH, H + PH), min(w0 + KW, W + PW)
                    padded_area = (h1 - h0) * (w1 - w0)
                    h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
                    total = 0.0
                    for h in range(h0, h1):
                        for v in range(w0, w1):
                            total += x[n, c, h, v]
                    if divisor_override is not None:
                        divisor = divisor_override
                    elif count_include_pad:
                        divisor = padded_area
                    else:
                        divisor = (h1 - h0) * (w1 - w0)
                    y[n, c, i, j] = total / divisor
    return y


def sum_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """The sum of each window (zero padding)."""
    return avg_pool2d(x, kernel_size, stride, padding, ceil_mode, divisor_override=1)


def _adaptive_windows(size, out):
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool2d(x, output_size):
    """Mean of window (i, j): rows floor(i*H/OH) .. ceil((i+1)*H/OH), likewise columns."""
    N, C, H, W = x.shape
    OH, OW = _pair(output_size)
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for i, (h0, h1) in enumerate(_adaptive_windows(H, OH)):
        for j, (w0, w1) in enumerate(_adaptive_windows(W, OW)):
            for n in range(N):
                for c in range(C):
                    y[n, c, i, j] = np.sum(x[n, c, h0:h1, w0:w1]) / ((h1 - h0) * (w1 - w0))
    return y


def adaptive_max_pool2d(x, output_size):
    """Largest element of window (i, j) (the windows of adaptive_avg_pool2d)."""
    N, C, H, W = x.shape
    OH, OW = _pair(output_size)
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for i, (h0, h1) in enumerate(_adaptive_windows(H, OH)):
        for j, (w0, w1) in enumerate(_adaptive_windows(W, OW)):
            for n in range(N):
                for c in range(C):
                    y[n, c, i, j] = max(x[n, c, h, v] for h in range(h0, h1) for v in range(w0, w1))
    return y


def linear(x, w, b=None):
    """y[..., o] = b[o] + sum_d x[..., d] * w[o, d]."""
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros((rows.shape[0], w.shape[0]), dtype=x.dtype)
    for r in range(rows.shape[0]):
        for o in range(w.shape[0]):
            total = 0.0 if b is None else b[o]
            for d in range(w.shape[1]):
                total += rows[r, d] * w[o, d]
            out[r, o] = total
    return out.reshape(x.shape[:-1] + (w.shape[0],))
