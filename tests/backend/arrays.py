"""Helpers shared by the backend tests: channel-major arrays and one op run forward and backward."""

from __future__ import annotations

import numpy as np

from cnnkit import Tensor


def cnhw(a):
    """The same values as a, in channel-major memory (how conv/pool outputs are stored)."""
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def run_conv(cls, x, w, b, args, gy, needs=(True, True, True)):
    """``cls(*args)`` on x, w, b (each requiring grad as ``needs`` says): [y, gx, gw, gb]."""
    xs = [Tensor(a.copy(order="K"), requires_grad=n) for a, n in zip((x, w, b), needs)]  # layout kept
    y = cls(*args)(*xs)
    y.backward(gy)
    return [y.data] + [t.grad for t in xs]
