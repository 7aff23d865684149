"""Argument normalization shared by the ops and layers: pairs, "same" padding, output sizes.

One place for the arithmetic every convolution and pooling layer needs, so a layer and
the op it calls agree on what they accept and on the message when they refuse.
"""

from __future__ import annotations

__all__ = ["output_size", "output_size_formula"]


def output_size(n: int, f: int, padding: int = 0, stride: int = 1) -> int:
    """The articles' (W - F + 2P)/S + 1, rounded down as every framework does."""
    return (n - f + 2 * padding) // stride + 1


def output_size_formula(n: int, f: int, padding: int = 0, stride: int = 1) -> str:
    """``"(W - F + 2P)/S + 1"`` with the numbers filled in, e.g. ``"(28 - 5 + 2*0)/1 + 1 = 24"``."""
    exact = (n - f + 2 * padding) / stride + 1
    result = output_size(n, f, padding, stride)
    text = f"({n} - {f} + 2*{padding})/{stride} + 1"
    if exact != result:
        return f"floor({text}) = floor({exact:g}) = {result}"
    return f"{text} = {result}"
