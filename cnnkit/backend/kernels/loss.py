"""Softmax cross-entropy on class indices (numba): forward and backward in one pass each.

``CrossEntropyOp``'s NumPy code makes some 25 passes over a (64, 10) array per training step
(max, shift, exp, sum, log, the target's pick, the validity mask, the range check, the mean,
then the gradient's), each a NumPy call of 1-3 us on arrays that small. Here each row is
done once: its maximum, exp of the shifted logits (kept as the softmax), their sum, the
log-sum, the target's log-probability.

Numerics. The same operations per element as the reference (x - max, exp, sum, log, a
subtraction), except that the sums are taken in float64 in row order (NumPy sums float32
pairwise in float32) and exp/log are libm's (NumPy has its own vector versions), and the
softmax is exp(x - max) / sum instead of exp(log-probability): values within a few units in
the last place of the reference's (tests/functional/test_cross_entropy_kernel.py); the same
NaN / inf patterns (a NaN or +inf logit makes its row NaN, a -inf logit a zero
probability and, picked, an infinite loss). The backward is the reference's arithmetic on
the same softmax: (p - [k = t]) * s, +0.0 on ignored rows.
"""

from __future__ import annotations

import math

import numpy as np

from . import njit

__all__ = ["cross_entropy_forward", "cross_entropy_backward"]


@njit(cache=True, nogil=True)
def _forward(x, t, ignore, losses, p):
    """Per-row losses -log softmax(x)[t] into ``losses`` (-0.0 * that on ignored rows, as the
    reference's weight 0), the softmax into ``p`` (any (0, K) array when not wanted).
    Returns the number of counted rows, or -1 - i for the first row i whose target is out of range.
    """
    M, K = x.shape
    keep_p = p.shape[0] == M
    counted = 0
    for i in range(M):
        ti = t[i]
        ok = ti != ignore
        if ok and (ti < 0 or ti >= K):
            return -1 - i
    for i in range(M):
        row = x[i]
        m = row[0]
        for k in range(1, K):
            v = row[k]
            if v > m or v != v:         # NaN propagates, as NumPy's max
                m = v
        total = 0.0
        for k in range(K):
            e = math.exp(row[k] - m)
            total += e
            if keep_p:
                p[i, k] = e
        s = x.dtype.type(total)
        lse = math.log(s)
        ti = t[i]
        ok = ti != ignore
        tt = ti if ok else 0
        w = x.dtype.type(1.0) if ok else x.dtype.type(0.0)
        losses[i] = -w * ((row[tt] - m) - lse)
        counted += 1 if ok else 0
        if keep_p:
            for k in range(K):
                p[i, k] = p[i, k] / s
    return counted


@njit(cache=True, nogil=True)
def _backward(p, t, ignore, s, g):
    """g = (p - onehot(t)) * s per row (s of one entry, or one per row), +0.0 on ignored rows."""
    M, K = p.shape
    per_row = s.shape[0] == M and M != 1
    zero = p.dtype.type(0.0)
    one = p.dtype.type(1.0)
    for i in range(M):
        ti = t[i]
        if ti == ignore:
            for k in range(K):
                g[i, k] = zero
            continue
        si = s[i] if per_row else s[0]
        for k in range(K):
            v = p[i, k]
            if k == ti:
                v = v - one
            g[i, k] = v * si


def cross_entropy_forward(x, t, ignore_index: int, keep_softmax: bool):
    """(losses (M,), softmax (M, K) or None, counted rows) of logits x (M, K), targets t (M,);
    raises ValueError naming the first target out of range (the reference's message)."""
    M, K = x.shape
    losses = np.empty(M, x.dtype)
    p = np.empty((M, K) if keep_softmax else (0, K), x.dtype)
    counted = _forward(x, t, ignore_index, losses, p)
    if counted < 0:
        raise ValueError(f"cross_entropy target {t[-1 - counted]} is out of range for {K} classes")
    return losses, (p if keep_softmax else None), counted


def cross_entropy_backward(p, t, ignore_index: int, s):
    """The logits' gradient (M, K) from the softmax ``p``, targets ``t`` and the upstream
    scale ``s`` (a 0-d or (M,) array of p's dtype)."""
    g = np.empty_like(p)
    _backward(p, t, ignore_index, np.ascontiguousarray(s, dtype=p.dtype).reshape(-1), g)
    return g
