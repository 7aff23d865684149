"""Compiled CPU kernels (numba) for small convolutions, max pooling and ReLU.

NumPy cannot express a small convolution without materializing im2col columns, nor a
first-maximum max pooling without one pass per kernel tap. These kernels do each in
one pass per image, with the per-image working set in L1/L2 cache, split over the
cores. ``conv.py``, ``pool.py`` and ``activation.py`` call them for NumPy arrays when
numba is installed; the NumPy code there stays the reference path (CuPy arrays, no
numba) and the oracle that tests/test_kernels.py compares these kernels against.

Layout. A 4-D activation (N, C, H, W) reaches a kernel as ``planes`` (P, H, W), a
C-contiguous stack of its N*C image planes, plus two plane strides: plane (n, c) is
``planes[n*sn + c*sc]``. Both layouts the library produces are covered without a copy:
NCHW memory (sn = C, sc = 1) and the channel-major CNHW memory of conv/pool outputs
(sn = 1, sc = N).

Direct convolution ("flat rows"). For stride 1, one image's padded input plane
(Hp, Wp) is stored row after row in a flat buffer; output pixel (oh, ow) then reads
tap (kh, kw) at flat index (oh*Wp + ow) + (kh*Wp + kw). Over the flat index
i = oh*Wp + ow, every tap is a shifted contiguous slice, so the convolution is a sum
of C*KH*KW scaled vector additions ("axpy"s) of length L = (OH - 1)*Wp + OW, which
the compiler vectorizes. Entries with ow >= OW are computed and thrown away (a
waste of (KW - 1) / Wp) - the price of contiguous inner loops. The backward pass runs
the same index map: the output gradient is spread into a zeroed buffer of L entries
per filter, so the junk columns contribute nothing.

Image groups. A pass over a short flat row (LeNet-5's conv2: L = 136) costs a fixed
overhead that a long row spreads over more multiply-adds. Rows of at most
CONV_SHORT_ROW entries therefore interleave CONV_GROUP = 16 images, image index
innermost: entry i*16 + j is image j's entry i, every tap offset is multiplied by 16,
and the loops above run unchanged over 16*L entries. With 16 images (and buffers on
64-byte boundaries) every tap slice starts on a cache line, so the vector loads are
aligned. The input-gradient loop, whose passes read F rows of the output gradient,
goes over the flat index in blocks that keep those rows in L1.

Threads. Kernels are serial ``nogil`` functions over a range of images (or planes, or
elements); ``parallel_for`` splits that range over the calling thread and
NUM_THREADS - 1 helper threads that sleep when idle. Nothing spins, so BLAS (which
runs between kernels) and other processes keep their cores; and the calling thread
never waits for a helper that has not started. NUM_THREADS defaults to the CPUs this
process may use; the environment variable CNNKIT_NUM_THREADS overrides it, and
CNNKIT_KERNELS=0 switches the kernels off.

Numerics. ``fastmath`` is limited to reassociation and contraction (FMA) in the
convolutions: results differ from the NumPy path only by float rounding order, and
the per-group weight-gradient parts are summed in a fixed order (groups are fixed
ranges of images), so results do not depend on the number of threads. Pooling and ReLU
are exact: same maximum, same first maximum, same NaN and inf behaviour as the
reference.

Compilation. Kernels compile on first use per dtype (float32, float64) and are cached
on disk (``cache=True``): the first call in a fresh install costs a few seconds, later
processes load the cache in well under a second.
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the NumPy path still works
    njit = None

__all__ = [
    "AVAILABLE", "NUM_THREADS", "DIRECT_CONV_MAX_MACS", "ELEMENTWISE_MIN_SIZE",
    "PARALLEL_MIN_MACS", "PARALLEL_MIN_ELEMENTS",
    "parallel_for", "as_planes",
    "direct_conv_applies", "conv2d_direct", "conv2d_direct_grads",
    "max_pool_applies", "max_pool2d_fused", "max_pool2d_scatter",
    "relu_applies", "relu_with_mask", "relu_grad",
]

# CNNKIT_KERNELS=0 in the environment switches the kernels off: every op then runs its
# NumPy reference path (for debugging, and to time the difference).
AVAILABLE = njit is not None and os.environ.get("CNNKIT_KERNELS", "1") != "0"

# Reassociation lets reductions vectorize; contraction allows FMA. No nnan/ninf/nsz:
# those could change results on non-finite inputs, not only their rounding. Loops index
# 1-D slices from 0: numba's negative-index wraparound on any other index would turn
# each vector load into a gather.
_FASTMATH = {"reassoc", "contract"}


def _default_threads() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    return int(os.environ.get("CNNKIT_NUM_THREADS", 0)) or count


# Threads that run kernels: the calling thread plus NUM_THREADS - 1 helpers.
NUM_THREADS = _default_threads()


class _Job:
    """One kernel call split into chunks [i0, i1) that any thread may take, in order."""

    def __init__(self, fn, chunks, args):
        self.fn, self.args = fn, args
        self.chunks = iter(chunks)  # next() on a list iterator is atomic under the GIL
        self.left = len(chunks)
        self.lock, self.done = threading.Lock(), threading.Event()
        self.error: BaseException | None = None

    def drain(self) -> None:
        for i0, i1 in self.chunks:
            try:
                self.fn(i0, i1, *self.args)
            except BaseException as error:  # re-raised in the calling thread
                self.error = error
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.done.set()


class _Helpers:
    """Daemon threads that sleep on a queue (no spinning) and help drain jobs."""

    def __init__(self, count: int):
        self.count, self.jobs = count, queue.SimpleQueue()
        for _ in range(count):
            threading.Thread(target=self._serve, daemon=True, name="cnnkit-kernel").start()

    def _serve(self) -> None:
        while True:
            self.jobs.get().drain()


_helpers: _Helpers | None = None
_helpers_lock = threading.Lock()


def _forget_helpers() -> None:  # a forked child has none of the parent's threads
    global _helpers
    _helpers = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


def parallel_for(fn, count: int, *args, grain: int = 1) -> None:
    """Run fn(i0, i1, *args) over chunks covering range(count), on up to NUM_THREADS threads.

    ``fn`` is a ``nogil`` kernel. The calling thread works too and never waits for a
    helper that has not started: if the helpers are busy or descheduled (a loaded
    machine), it takes their chunks itself. Chunks are handed out dynamically, four
    per thread, so a slowed thread takes fewer. Each thread gets at least ``grain``
    items: waking a helper costs ~20-70 microseconds here, more than a small kernel.
    """
    global _helpers
    threads = min(NUM_THREADS, count // max(grain, 1))
    if threads <= 1:
        fn(0, count, *args)
        return
    pieces = min(count, 4 * threads)
    bounds = [count * k // pieces for k in range(pieces + 1)]
    job = _Job(fn, list(zip(bounds[:-1], bounds[1:])), args)
    if _helpers is None:
        with _helpers_lock:
            if _helpers is None:
                _helpers = _Helpers(NUM_THREADS - 1)
    for _ in range(threads - 1):
        _helpers.jobs.put(job)
    job.drain()
    job.done.wait()
    if job.error is not None:
        raise job.error


def as_planes(x):
    """View a 4-D array (N, C, H, W) as C-contiguous planes (P, H, W) with plane strides.

    Returns (planes, sn, sc): plane (n, c) is planes[n*sn + c*sc]. Copies only when
    neither NCHW nor CNHW memory order holds.
    """
    N, C, H, W = x.shape
    if x.flags.c_contiguous:
        return x.reshape(N * C, H, W), C, 1                            # (N*C, H, W)
    xc = x.transpose(1, 0, 2, 3)                                      # (C, N, H, W)
    if xc.flags.c_contiguous:
        return xc.reshape(C * N, H, W), 1, N                           # (C*N, H, W)
    return np.ascontiguousarray(x).reshape(N * C, H, W), C, 1


# Entries of g (F rows of a flat-index block) that the input-gradient loop keeps in L1.
_GX_BLOCK = 8192

if njit is not None:

    @njit(cache=True, fastmath=_FASTMATH)
    def _axpy_taps(acc, src, offs, wts, L):
        """acc[i] += sum_t wts[t] * src[offs[t] + i] for i < L: a correlation over flat rows.

        Taps go eight at a time (then four, then one), so each pass over acc loads and
        stores it once per eight multiply-adds (memory traffic, not arithmetic, bounds these loops). Every
        operand is a 1-D unit-stride slice, which is what lets the loop vectorize.
        """
        T = offs.shape[0]
        t = 0
        while t + 8 <= T:
            a0, a1 = src[offs[t] : offs[t] + L], src[offs[t + 1] : offs[t + 1] + L]
            a2, a3 = src[offs[t + 2] : offs[t + 2] + L], src[offs[t + 3] : offs[t + 3] + L]
            a4, a5 = src[offs[t + 4] : offs[t + 4] + L], src[offs[t + 5] : offs[t + 5] + L]
            a6, a7 = src[offs[t + 6] : offs[t + 6] + L], src[offs[t + 7] : offs[t + 7] + L]
            w0, w1, w2, w3 = wts[t], wts[t + 1], wts[t + 2], wts[t + 3]
            w4, w5, w6, w7 = wts[t + 4], wts[t + 5], wts[t + 6], wts[t + 7]
            for i in range(L):
                acc[i] += (w0 * a0[i] + w1 * a1[i] + w2 * a2[i] + w3 * a3[i]) + (
                    w4 * a4[i] + w5 * a5[i] + w6 * a6[i] + w7 * a7[i]
                )
            t += 8
        if t + 4 <= T:
            a0, a1 = src[offs[t] : offs[t] + L], src[offs[t + 1] : offs[t + 1] + L]
            a2, a3 = src[offs[t + 2] : offs[t + 2] + L], src[offs[t + 3] : offs[t + 3] + L]
            w0, w1, w2, w3 = wts[t], wts[t + 1], wts[t + 2], wts[t + 3]
            for i in range(L):
                acc[i] += w0 * a0[i] + w1 * a1[i] + w2 * a2[i] + w3 * a3[i]
            t += 4
        while t < T:
            a0, w0 = src[offs[t] : offs[t] + L], wts[t]
            for i in range(L):
                acc[i] += w0 * a0[i]
            t += 1

    @njit(cache=True, fastmath=_FASTMATH)
    def _dot_taps(out, g, src, offs, L):
        """out[t] = sum_{i < L} g[i] * src[offs[t] + i]: the adjoint of ``_axpy_taps`` in wts.

        Eight taps share each load of g.
        """
        T = offs.shape[0]
        zero = np.zeros(1, g.dtype)[0]
        t = 0
        while t + 8 <= T:
            a0, a1 = src[offs[t] : offs[t] + L], src[offs[t + 1] : offs[t + 1] + L]
            a2, a3 = src[offs[t + 2] : offs[t + 2] + L], src[offs[t + 3] : offs[t + 3] + L]
            a4, a5 = src[offs[t + 4] : offs[t + 4] + L], src[offs[t + 5] : offs[t + 5] + L]
            a6, a7 = src[offs[t + 6] : offs[t + 6] + L], src[offs[t + 7] : offs[t + 7] + L]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
            for i in range(L):
                gi = g[i]
                s0 += gi * a0[i]
                s1 += gi * a1[i]
                s2 += gi * a2[i]
                s3 += gi * a3[i]
                s4 += gi * a4[i]
                s5 += gi * a5[i]
                s6 += gi * a6[i]
                s7 += gi * a7[i]
            out[t], out[t + 1], out[t + 2], out[t + 3] = s0, s1, s2, s3
            out[t + 4], out[t + 5], out[t + 6], out[t + 7] = s4, s5, s6, s7
            t += 8
        if t + 4 <= T:
            a0, a1 = src[offs[t] : offs[t] + L], src[offs[t + 1] : offs[t + 1] + L]
            a2, a3 = src[offs[t + 2] : offs[t + 2] + L], src[offs[t + 3] : offs[t + 3] + L]
            s0 = s1 = s2 = s3 = zero
            for i in range(L):
                gi = g[i]
                s0 += gi * a0[i]
                s1 += gi * a1[i]
                s2 += gi * a2[i]
                s3 += gi * a3[i]
            out[t], out[t + 1], out[t + 2], out[t + 3] = s0, s1, s2, s3
            t += 4
        while t < T:
            a0 = src[offs[t] : offs[t] + L]
            s0 = zero
            for i in range(L):
                s0 += g[i] * a0[i]
            out[t] = s0
            t += 1

    @njit(cache=True)
    def _aligned_zeros(n, dtype_like):
        """np.zeros(n) like dtype_like's dtype, starting on a 64-byte boundary.

        Flat-row slices at multiples of 16 entries then never straddle cache lines.
        """
        size = dtype_like.itemsize
        buf = np.zeros(n + 64 // size, dtype_like.dtype)
        off = ((64 - buf.ctypes.data % 64) % 64) // size
        return buf[off : off + n]

    @njit(cache=True)
    def _load_padded(xpad, x, n_base, sn, nb, sc, C, Hv, Wv, pt, pl, Hp, Wp):
        """Copy nb images' C planes into zero-bordered flat rows, image index innermost.

        xpad (C*Hp*Wp*nb,): entry ((c*Hp + h)*Wp + w)*nb + j is image n_base + j's padded
        plane c at (h, w).
        """
        for c in range(C):
            for j in range(nb):
                src = x[(n_base + j) * sn + c * sc]
                for h in range(Hv):
                    start = ((c * Hp + h + pt) * Wp + pl) * nb + j
                    dst, row = xpad[start : start + Wv * nb], src[h]
                    if nb == 1:  # a contiguous copy, vectorized
                        for w in range(Wv):
                            dst[w] = row[w]
                    else:
                        for w in range(Wv):
                            dst[w * nb] = row[w]

    @njit(cache=True)
    def _tap_offsets(C, KH, KW, plane, Wp, base, sign):
        """Flat offsets of the taps (c, kh, kw) in row-major order: c*plane + base + sign*(kh*Wp + kw)."""
        offs = np.empty(C * KH * KW, np.int64)
        t = 0
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    offs[t] = c * plane + base + sign * (kh * Wp + kw)
                    t += 1
        return offs

    @njit(cache=True, nogil=True, fastmath=_FASTMATH)
    def conv2d_forward(g0, g1, x, sn, sc, wm, KH, KW, b, y, pt, pl, NB):
        """Direct stride-1 convolution of image groups g0..g1-1, in parallel over the batch.

        Group k holds images k*NB .. min(N, (k+1)*NB) - 1, interleaved in the flat rows
        (image index innermost), so the vector loops run over NB times more entries.

        Args:
            x: input planes (N*C, H, W); plane (n, c) is x[n*sn + c*sc].
            wm: filters as rows (F, C*KH*KW), C-contiguous.
            b: bias (F,) (zeros when the op has none).
            y: output (F, N, OH, OW), written in full.
            pt, pl: zero padding at the top and left; the bottom/right padding follows
                from y's size (stride 1: OH = H + PT + PB - KH + 1).
            NB: images per group.
        """
        F, N, OH, OW = y.shape
        H, W = x.shape[1], x.shape[2]
        C = wm.shape[1] // (KH * KW)
        Hp, Wp = OH + KH - 1, OW + KW - 1
        Hv, Wv = min(H, Hp - pt), min(W, Wp - pl)
        offs1 = _tap_offsets(C, KH, KW, Hp * Wp, Wp, 0, 1)
        for grp in range(g0, g1):
            n0 = grp * NB
            nb = min(NB, N - n0)
            L = ((OH - 1) * Wp + OW) * nb
            offs = offs1 * nb
            xpad = _aligned_zeros(C * Hp * Wp * nb, x)
            _load_padded(xpad, x, n0, sn, nb, sc, C, Hv, Wv, pt, pl, Hp, Wp)
            acc = _aligned_zeros(L, x)
            for f in range(F):
                acc[:] = b[f]
                _axpy_taps(acc, xpad, offs, wm[f], L)
                for j in range(nb):
                    for oh in range(OH):
                        row, dst = acc[oh * Wp * nb + j : (oh * Wp + OW) * nb], y[f, n0 + j, oh]
                        if nb == 1:
                            for ow in range(OW):
                                dst[ow] = row[ow]
                        else:
                            for ow in range(OW):
                                dst[ow] = row[ow * nb]

    @njit(cache=True, nogil=True, fastmath=_FASTMATH)
    def conv2d_backward(g0, g1, x, sn, sc, wt, KH, KW, gy, gsn, gsf, pt, pl, gx, gw_parts, gb_parts, need_x, need_w, NB):
        """Gradients of the direct stride-1 convolution for image groups g0..g1-1.

        gw[f, c, kh, kw] = sum_{n, oh, ow} gy[n, f, oh, ow] * xpad[n, c, oh + kh, ow + kw]
        gxpad[n, c, oh + kh, ow + kw] += sum_f w[f, c, kh, kw] * gy[n, f, oh, ow]
        gb[f]            = sum_{n, oh, ow} gy[n, f, oh, ow]
        Over flat rows both are the forward's index map run backwards: dot products of
        gy's rows with shifted x rows, and gy's rows added into shifted gx rows. Images
        are grouped and interleaved as in ``conv2d_forward``.

        Args:
            x: input planes (N*C, H, W) as in ``conv2d_forward``.
            wt: filters by input tap (C*KH*KW, F), C-contiguous (w transposed).
            gy: output-gradient planes (N*F, OH, OW); plane (n, f) is gy[n*gsn + f*gsf].
            gx: input gradient (C, N, H, W), written in full when need_x.
            gw_parts, gb_parts: per-group partial sums (groups, F, C*KH*KW) and (groups, F);
                the caller sums them in a fixed order, so results do not depend on the
                number of threads.
            NB: images per group.
        """
        H, W = x.shape[1], x.shape[2]
        F = gb_parts.shape[1]
        C = wt.shape[0] // (KH * KW)
        N = gy.shape[0] // F
        OH, OW = gy.shape[1], gy.shape[2]
        Hp, Wp = OH + KH - 1, OW + KW - 1
        Hv, Wv = min(H, Hp - pt), min(W, Wp - pl)
        offs1 = _tap_offsets(C, KH, KW, Hp * Wp, Wp, 0, 1)
        zero = np.zeros(1, gy.dtype)[0]
        for grp in range(g0, g1):
            n0 = grp * NB
            nb = min(NB, N - n0)
            L = ((OH - 1) * Wp + OW) * nb
            g = _aligned_zeros(F * L, gy)                             # gy's rows, junk columns 0
            for f in range(F):
                s = zero
                for j in range(nb):
                    src = gy[(n0 + j) * gsn + f * gsf]
                    for oh in range(OH):
                        start = f * L + oh * Wp * nb + j
                        dst, row = g[start : start + OW * nb], src[oh]
                        if nb == 1:
                            for ow in range(OW):
                                dst[ow] = row[ow]
                                s += row[ow]
                        else:
                            for ow in range(OW):
                                dst[ow * nb] = row[ow]
                                s += row[ow]
                gb_parts[grp, f] = s
            if need_w:
                offs = offs1 * nb
                xpad = _aligned_zeros(C * Hp * Wp * nb, x)
                _load_padded(xpad, x, n0, sn, nb, sc, C, Hv, Wv, pt, pl, Hp, Wp)
                for f in range(F):
                    _dot_taps(gw_parts[grp, f], g[f * L : (f + 1) * L], xpad, offs, L)
            if need_x:
                offs_g = _tap_offsets(F, 1, 1, L, 0, 0, 1)            # row f starts at f*L
                plane = Hp * Wp * nb
                gpads = _aligned_zeros(C * plane, gy)
                # Blocks of the flat index: the F rows of g a pass reads stay in L1
                # across every channel and tap.
                B = L if F * L <= _GX_BLOCK else max(16, _GX_BLOCK // F // 16 * 16)
                for i0 in range(0, L, B):
                    Lb = min(B, L - i0)
                    gb = g[i0:]
                    for c in range(C):
                        for kh in range(KH):
                            for kw in range(KW):
                                t = (c * KH + kh) * KW + kw
                                o = c * plane + (kh * Wp + kw) * nb + i0
                                _axpy_taps(gpads[o : o + Lb], gb, offs_g, wt[t], Lb)
                for c in range(C):
                    gpad = gpads[c * plane : (c + 1) * plane]
                    for j in range(nb):
                        for h in range(H):
                            dst = gx[c, n0 + j, h]
                            if h < Hv:
                                start = ((h + pt) * Wp + pl) * nb + j
                                row = gpad[start : start + Wv * nb]
                                if nb == 1:
                                    for ww in range(Wv):
                                        dst[ww] = row[ww]
                                else:
                                    for ww in range(Wv):
                                        dst[ww] = row[ww * nb]
                                dst[Wv:] = 0.0  # columns no window reached (right overhang)
                            else:
                                dst[:] = 0.0  # rows no window reached (bottom overhang)

    @njit(cache=True, nogil=True)
    def _take_if_greater(ym, am, r, k, OW):
        """One tap of max pooling over an output row: strictly greater replaces (first max wins).

        Written without branches (selects), so it vectorizes and MNIST's many exact ties
        cost no mispredictions. A NaN tap replaces the maximum and its tap, as in PyTorch
        (so the last NaN of a window takes the gradient).
        """
        for j in range(OW):
            v, m = r[j], ym[j]
            take = v > m or v != v
            ym[j] = v if take else m
            am[j] = k if take else am[j]

    @njit(cache=True, nogil=True)
    def max_pool2d_forward(q0, q1, x, xsn, xsc, C, y, arg, KH, KW, SH, SW, pads, DH, DW):
        """Max pooling with the first-maximum tap index, over image planes q0..q1-1.

        y[i, j]   = max over taps k = kh*KW + kw (row-major) of xpad[i*SH + kh*DH, j*SW + kw*DW]
        arg[i, j] = the first k reaching that maximum (strictly greater replaces it;
        a NaN always does, as in PyTorch), per plane. Padding (pads = (PT, PB, PL, PR), including ceil_mode's overhang)
        reads as -inf, through a padded copy of the plane as in the reference.

        Args:
            x: input planes (N*C, H, W); plane (n, c) is x[n*xsn + c*xsc].
            y, arg: outputs (N*C, OH, OW) with the same plane order as x.
        """
        H, W = x.shape[1], x.shape[2]
        OH, OW = y.shape[1], y.shape[2]
        PT, PB, PL, PR = pads
        padded = PT + PB + PL + PR > 0
        buf = np.full((H + PT + PB, W + PL + PR), -np.inf, x.dtype)
        for q in range(q0, q1):
            n, c = q // C, q % C
            p = n * xsn + c * xsc
            src, yp, ap = x[p], y[p], arg[p]
            if padded:
                buf[PT : PT + H, PL : PL + W] = src
                src = buf
            for i in range(OH):
                ym, am = yp[i], ap[i]
                for kh in range(KH):
                    row = src[i * SH + kh * DH]
                    for kw in range(KW):
                        r = row[kw * DW :: SW]                        # r[j] = row[kw*DW + j*SW]
                        if kh == 0 and kw == 0:
                            for j in range(OW):
                                ym[j] = r[j]
                                am[j] = 0
                        else:
                            _take_if_greater(ym, am, r, kh * KW + kw, OW)

    @njit(cache=True, nogil=True)
    def max_pool2d_forward_2x2(q0, q1, x, xsn, xsc, C, y, arg):
        """``max_pool2d_forward`` for the common 2x2 window, stride 2, no padding.

        The four taps of a window stay in registers: one pass, no stores in between.
        """
        OH, OW = y.shape[1], y.shape[2]
        for q in range(q0, q1):
            n, c = q // C, q % C
            p = n * xsn + c * xsc
            src, yp, ap = x[p], y[p], arg[p]
            for i in range(OH):
                r0, r1, ym, am = src[2 * i], src[2 * i + 1], yp[i], ap[i]
                for j in range(OW):
                    m, v1, v2, v3 = r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]
                    g1 = v1 > m or v1 != v1                   # a NaN wins, as in PyTorch
                    m = v1 if g1 else m
                    g2 = v2 > m or v2 != v2
                    m = v2 if g2 else m
                    g3 = v3 > m or v3 != v3
                    ym[j] = v3 if g3 else m
                    am[j] = 3 if g3 else (2 if g2 else (1 if g1 else 0))

    @njit(cache=True, nogil=True)
    def max_pool2d_backward(q0, q1, gy, gsn, gsc, arg, asn, asc, C, gx, KW, SH, SW, PT, PL, DH, DW):
        """Send each output gradient to its window's first maximum, over planes q0..q1-1.

        gx[h, w] = sum of gy[i, j] over the windows (i, j) whose first maximum is (h, w).

        Args:
            gy: output-gradient planes (N*C, OH, OW); plane (n, c) is gy[n*gsn + c*gsc].
            arg: tap indices from ``max_pool2d_forward``; plane (n, c) is arg[n*asn + c*asc].
            gx: input-gradient planes (N*C, H, W), in arg's plane order, written in full.
        """
        H, W = gx.shape[1], gx.shape[2]
        OH, OW = gy.shape[1], gy.shape[2]
        for q in range(q0, q1):
            n, c = q // C, q % C
            pa, pg = n * asn + c * asc, n * gsn + c * gsc
            dst, g, a = gx[pa], gy[pg], arg[pa]
            dst[:, :] = 0.0
            for i in range(OH):
                for j in range(OW):
                    k = a[i, j]
                    h = i * SH - PT + (k // KW) * DH
                    ww = j * SW - PL + (k % KW) * DW
                    if 0 <= h < H and 0 <= ww < W:  # else the maximum was padding
                        dst[h, ww] += g[i, j]

    @njit(cache=True, nogil=True)
    def max_pool2d_backward_2x2(q0, q1, gy, gsn, gsc, arg, asn, asc, C, gx):
        """``max_pool2d_backward`` for 2x2 windows, stride 2, no padding: one write per element."""
        OH, OW = gy.shape[1], gy.shape[2]
        zero = np.zeros(1, gx.dtype)[0]
        for q in range(q0, q1):
            n, c = q // C, q % C
            pa, pg = n * asn + c * asc, n * gsn + c * gsc
            dst, gp, ap = gx[pa], gy[pg], arg[pa]
            for i in range(OH):
                g, a, d0, d1 = gp[i], ap[i], dst[2 * i], dst[2 * i + 1]
                # loop over input columns (contiguous stores; interleaved stores by
                # output column would compile to scatters)
                for w in range(2 * OW):
                    j, odd = w >> 1, w & 1
                    gj, k = g[j], a[j]
                    d0[w] = gj if k == odd else zero
                    d1[w] = gj if k == odd + 2 else zero
                d0[2 * OW :] = zero  # an odd last column is in no window
                d1[2 * OW :] = zero
            dst[2 * OH :, :] = zero  # nor is an odd last row


    @njit(cache=True, nogil=True)
    def relu_forward(i0, i1, x, y, mask):
        """y = max(x, 0) and mask = not (y <= 0) over flat elements i0..i1-1, in one pass.

        A NaN passes through to y (NumPy's maximum) and gets mask 1: its gradient passes,
        as PyTorch's threshold_backward. mask is uint8 (a bool array's bytes).
        """
        zero = np.zeros(1, x.dtype)[0]
        xs, ys, ms = x[i0:i1], y[i0:i1], mask[i0:i1]  # 0-based loops: no index wraparound
        for i in range(i1 - i0):
            v = xs[i]
            kept = v > zero or v != v
            ys[i] = v if kept else zero
            ms[i] = 1 if kept else 0

    @njit(cache=True, nogil=True)
    def relu_backward(i0, i1, gy, mask, gx):
        """gx = gy where mask, else 0, over flat elements i0..i1-1 (a select, as the reference:
        an inf or NaN upstream gradient where the input was <= 0 gives 0, as PyTorch)."""
        gs, ms, xs = gy[i0:i1], mask[i0:i1], gx[i0:i1]
        zero = np.zeros(1, gx.dtype)[0]
        for i in range(i1 - i0):
            xs[i] = gs[i] if ms[i] else zero


# ---------------------------------------------------------------------------------------
# Array plumbing called by the ops: allocation, layouts and dispatch. Pure Python.
# ---------------------------------------------------------------------------------------

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# Direct convolution wins over im2col + BLAS while a filter bank is small: its loops run
# over one image at a time in cache, while BLAS needs big operands to reach its speed and
# im2col multiplies the memory traffic by KH*KW. The cut is measured by
# benchmarks/conv_dispatch.py (batch 64, float32, 2-core Zen 5): direct was 1.1-3x faster
# up to F*C*KH*KW = 9216 (LeNet-5's layers, 3x3 layers up to 32 -> 32 channels), level
# around 16384, and 1.4-2.5x slower from 18432 on (3x3 layers of 32 -> 64 channels and up)
# except on large 32x32 images; 1x1 kernels are a plain matrix product, BLAS's home turf.
DIRECT_CONV_MAX_MACS = 2**14


def direct_conv_applies(xp, x, w, stride, dilation, groups: int) -> bool:
    """True when ``conv2d_forward`` handles this convolution (and is faster than im2col)."""
    if not AVAILABLE or xp is not np or groups != 1 or x.dtype not in _FLOATS:
        return False
    if tuple(stride) != (1, 1) or tuple(dilation) != (1, 1):
        return False
    F, C, KH, KW = w.shape
    return KH * KW > 1 and F * C * KH * KW <= DIRECT_CONV_MAX_MACS


# Work below which one more thread does not pay for its wake-up (~20-70 us here, median
# 22 us): ~2e6 multiply-adds of a direct convolution, ~2**19 elements through pooling or
# ReLU (a quarter of that through the general pooling kernel, slower per element).
# Measured: LeNet-5 at batch 64 took 3.9 ms/step on one thread, 4.1 ms on two with
# every kernel split, 3.4 ms with these thresholds (PyTorch: 3.4 ms).
PARALLEL_MIN_MACS = 2_000_000
PARALLEL_MIN_ELEMENTS = 2**19


def _conv_grain(w_shape, OH: int, OW: int) -> int:
    """Images per thread: enough that each thread does PARALLEL_MIN_MACS multiply-adds."""
    F, C, KH, KW = w_shape
    return max(1, PARALLEL_MIN_MACS // max(1, F * C * KH * KW * OH * (OW + KW - 1)))


def _plane_grain(shape, elements: int) -> int:
    """Image planes per thread for ``elements`` input elements per thread."""
    return max(1, elements // max(1, shape[2] * shape[3]))


def _images_per_group(OH: int, OW: int, KH: int, KW: int) -> int:
    """Images interleaved in the flat rows: CONV_GROUP when a row is short, else 1."""
    L = (OH - 1) * (OW + KW - 1) + OW
    return CONV_GROUP if L <= CONV_SHORT_ROW else 1


# Flat rows of at most CONV_SHORT_ROW entries interleave CONV_GROUP images (image index
# innermost): each pass over a short row costs a fixed overhead that longer rows spread
# over more multiply-adds, and with 16 images every tap starts on a 64-byte boundary
# (aligned vector loads). Measured per kernel on one thread (batch 64, float32): LeNet-5's
# conv2 (rows of 136 entries) forward 2.2x and backward 1.9x faster; 3x3 layers on 16x16
# images (286 entries) forward 1.9x faster; conv1 (892 entries) is as fast without.
CONV_SHORT_ROW = 512
CONV_GROUP = 16


def conv2d_direct(x, w, b, pads):
    """y (F, N, OH, OW) channel-major memory of the stride-1 convolution of x (N, C, H, W)."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    pt, pb, pl, pr = pads
    OH, OW = H + pt + pb - KH + 1, W + pl + pr - KW + 1
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    wm = np.ascontiguousarray(w).reshape(F, C * KH * KW)             # (F, C*KH*KW)
    bias = np.zeros(F, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    y = np.empty((F, N, OH, OW), x.dtype)                             # (F, N, OH, OW)
    nb = _images_per_group(OH, OW, KH, KW)
    groups = -(-N // nb)
    parallel_for(conv2d_forward, groups, planes, sn, sc, wm, KH, KW, bias, y, pt, pl, nb,
                 grain=-(-_conv_grain(w.shape, OH, OW) // nb))
    return y


def conv2d_direct_grads(x, w, gy, pads, need_x: bool, need_w: bool):
    """(gx, gw, gb) of ``conv2d_direct``; gx is an (N, C, H, W) view of CNHW memory or None."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    pt, _, pl, _ = pads
    OH, OW = gy.shape[2:]
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    gplanes, gsn, gsf = as_planes(gy)                                 # (N*F, OH, OW)
    wt = np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(C * KH * KW, F)  # (C*KH*KW, F)
    nb = _images_per_group(OH, OW, KH, KW)
    groups = -(-N // nb)
    gx = np.empty((C, N, H, W) if need_x else (0, N, 0, 0), gy.dtype)  # (C, N, H, W)
    gw_parts = np.empty((groups, F, C * KH * KW) if need_w else (groups, 0, 0), gy.dtype)
    gb_parts = np.empty((groups, F), gy.dtype)
    parallel_for(conv2d_backward, groups, planes, sn, sc, wt, KH, KW, gplanes, gsn, gsf, pt, pl,
                 gx, gw_parts, gb_parts, need_x, need_w, nb,
                 grain=-(-_conv_grain(w.shape, OH, OW) // nb))
    gw = gw_parts.sum(axis=0).reshape(w.shape) if need_w else None    # (F, C, KH, KW)
    return (gx.transpose(1, 0, 2, 3) if need_x else None), gw, gb_parts.sum(axis=0)


def max_pool_applies(xp, x) -> bool:
    """True when ``max_pool2d_forward`` handles this input."""
    return AVAILABLE and xp is np and x.dtype in _FLOATS


def _is_2x2(kernel, stride, pads, dilation) -> bool:
    return kernel == (2, 2) and stride == (2, 2) and dilation == (1, 1) and not any(pads)


def max_pool2d_fused(x, kernel, stride, pads, dilation, out_hw):
    """(y, arg, order): y (N, C, OH, OW) and first-max tap indices, in x's plane order."""
    N, C = x.shape[:2]
    OH, OW = out_hw
    planes, sn, sc = as_planes(x)                                     # (P, H, W)
    (KH, KW), (SH, SW), (DH, DW) = kernel, stride, dilation
    y = np.empty((planes.shape[0], OH, OW), x.dtype)                  # (P, OH, OW)
    arg = np.empty(y.shape, np.uint8 if KH * KW < 256 else np.int32)
    if _is_2x2(kernel, stride, pads, dilation):
        parallel_for(max_pool2d_forward_2x2, N * C, planes, sn, sc, C, y, arg,
                     grain=_plane_grain(x.shape, PARALLEL_MIN_ELEMENTS))
    else:
        parallel_for(max_pool2d_forward, N * C, planes, sn, sc, C, y, arg, KH, KW, SH, SW,
                     np.asarray(pads, np.int64), DH, DW, grain=_plane_grain(x.shape, PARALLEL_MIN_ELEMENTS // 4))
    return _unplanes(y, N, C, sc), arg, (sn, sc)


def max_pool2d_scatter(gy, arg, order, x_shape, kernel, stride, pads, dilation):
    """gx (N, C, H, W) of max pooling: gy sent to each window's first maximum."""
    N, C, H, W = x_shape
    sn, sc = order
    gplanes, gsn, gsc = as_planes(gy)                                 # (P, OH, OW)
    (_, KW), (SH, SW), (DH, DW) = kernel, stride, dilation
    gx = np.empty((N * C, H, W), gy.dtype)                           # (P, H, W), arg's order
    if _is_2x2(kernel, stride, pads, dilation):
        parallel_for(max_pool2d_backward_2x2, N * C, gplanes, gsn, gsc, arg, sn, sc, C, gx,
                     grain=_plane_grain(x_shape, PARALLEL_MIN_ELEMENTS))
    else:
        parallel_for(max_pool2d_backward, N * C, gplanes, gsn, gsc, arg, sn, sc, C, gx,
                     KW, SH, SW, pads[0], pads[2], DH, DW, grain=_plane_grain(x_shape, PARALLEL_MIN_ELEMENTS // 4))
    return _unplanes(gx, N, C, sc)


def _unplanes(planes, N: int, C: int, sc: int):
    """(N, C, h, w) view of planes stored NCHW (sc == 1) or CNHW (sc == N)."""
    h, w = planes.shape[1:]
    if sc == 1:
        return planes.reshape(N, C, h, w)
    return planes.reshape(C, N, h, w).transpose(1, 0, 2, 3)


# Elementwise ops go to the kernels from this many elements on; below it one NumPy call
# is cheaper than waking the helper threads.
ELEMENTWISE_MIN_SIZE = 2**15


def relu_applies(xp, x) -> bool:
    """True when ``relu_forward`` handles x: a large float NumPy array laid out in one block."""
    return (
        AVAILABLE and xp is np and x.dtype in _FLOATS and x.size >= ELEMENTWISE_MIN_SIZE
        and _flat(x) is not None
    )


def _flat(a):
    """The elements of ``a`` in memory order as a 1-D view, or None if a has gaps."""
    flat = np.ravel(a, order="K")
    return flat if np.shares_memory(flat, a) else None


def relu_with_mask(x):
    """(y, mask) of ReLU: y like x (same memory layout), mask a bool array like x."""
    y, mask = np.empty_like(x), np.empty_like(x, dtype=np.bool_)
    parallel_for(relu_forward, x.size, _flat(x), _flat(y), _flat(mask).view(np.uint8),
                 grain=PARALLEL_MIN_ELEMENTS)
    return y, mask


def relu_grad(gy, mask):
    """gy * mask, in parallel when both share one memory layout; else None."""
    if not (AVAILABLE and isinstance(gy, np.ndarray) and gy.size >= ELEMENTWISE_MIN_SIZE):
        return None
    if gy.strides != tuple(st * gy.itemsize for st in mask.strides) or gy.dtype not in _FLOATS:
        return None
    g = _flat(gy)
    if g is None:
        return None
    gx = np.empty_like(gy)
    parallel_for(relu_backward, gy.size, g, _flat(mask).view(np.uint8), _flat(gx),
                 grain=PARALLEL_MIN_ELEMENTS)
    return gx
