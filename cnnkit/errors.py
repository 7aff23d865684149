"""Exception types shared across cnnkit."""

from __future__ import annotations

__all__ = ["ShapeError", "DimensionError", "GradcheckError"]


class ShapeError(ValueError):
    """An input's shape (or a shape-like argument) does not fit the op or layer.

    The message names the op or layer, what it expected and what it received.
    """


class DimensionError(ShapeError, IndexError):
    """A ``dim`` argument is out of range for the input's number of dimensions, or repeated.

    Also an ``IndexError``, the type PyTorch raises for a dimension out of range.
    """


class GradcheckError(AssertionError):
    """Analytic and finite-difference gradients disagree (raised by ``cnnkit.gradcheck``)."""
