"""Reading a row of symbols (a strip of handwritten digits) off a fully convolutional score map.

A classifier converted by ``to_fully_convolutional`` scores every window of a wide strip
in one pass; ``read_sequence`` turns that one-row score map into the symbols written on
the strip, left to right, using the strip's ink to find where each symbol is.
"""

from __future__ import annotations

import numpy as np

__all__ = ["read_sequence"]


def read_sequence(
    probs: np.ndarray, centres: np.ndarray, ink: np.ndarray, char_width: float,
    *, min_width: int = 2,
) -> list[tuple[int, float, int]]:
    """Read the symbols of a one-row strip, left to right, from a score map.

    The strip's ink is split into symbols at empty columns (a run of ink wider than
    1.5 symbols is split evenly: touching digits); each symbol is read at the score-map
    position whose window centre is nearest its centre of mass.

    Args:
        probs: (K, OW) class probabilities along the strip.
        centres: (OW,) input x coordinate of each position's window centre.
        ink: (W,) amount of ink in each column of the strip (0 where empty).
        char_width: the typical width of one symbol's ink, in pixels (20 for MNIST).
        min_width: runs of ink narrower than this many columns are noise.

    Returns:
        One (class index, probability, position index) per symbol, left to right.
    """
    has_ink = np.asarray(ink) > 0
    runs: list[tuple[int, int]] = []
    start = None
    for col, on in enumerate(np.append(has_ink, False)):
        if on and start is None:
            start = col
        elif not on and start is not None:
            if col - start >= min_width:
                runs.append((start, col))
            start = None
    read = []
    cols = np.arange(len(ink), dtype=float)
    for a, b in runs:
        parts = max(1, int(round((b - a) / char_width))) if (b - a) > 1.5 * char_width else 1
        edges = np.linspace(a, b, parts + 1).round().astype(int)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            mass = ink[lo:hi].sum()
            cx = (cols[lo:hi] * ink[lo:hi]).sum() / mass if mass > 0 else (lo + hi - 1) / 2
            j = int(np.argmin(np.abs(centres - cx)))
            k = int(np.argmax(probs[:, j]))
            read.append((k, float(probs[k, j]), j))
    return read
