"""Resampling to a new spatial size: nearest, nearest-exact and (bi)linear interpolation.

``interpolate`` follows ``torch.nn.functional.interpolate`` for (N, C, W) and (N, C, H, W)
inputs. Each spatial axis is resampled on its own (the modes are separable): an axis of
input length ``I`` and output length ``O`` is described by, for every output position
``o``, the source indices it reads and their weights. Nearest reads one source (weight 1),
linear reads two (weights ``1 - t`` and ``t``). Those tables are host-side index arithmetic
(as PyTorch computes them, in float32 for nearest and in the input's precision for linear);
the data are only gathered and weighted.

The backward pass is the adjoint of each axis's resampling, i.e. a scatter-add of the
upstream gradient onto the sources with the same weights, written as a product with the
transposed (O, I) resampling matrix. An inf or NaN in the upstream gradient would reach a
whole row through that product's zeros; then the sums are taken over the taps only, as
PyTorch does, so it reaches only the sources its output read.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor

__all__ = ["interpolate", "InterpolateOp", "MODES"]

MODES = ("nearest", "nearest-exact", "linear", "bilinear")


def _source_scale(in_size: int, out_size: int, scale, align_corners: bool, dtype):
    """The step, in source pixels, between two output pixels (PyTorch's rule).

    align_corners: (I - 1) / (O - 1) (0 when O == 1); else 1 / scale_factor when a scale
    factor reaches the op (``recompute_scale_factor`` not set), I / O otherwise.
    """
    if align_corners:
        return dtype(in_size - 1) / dtype(out_size - 1) if out_size > 1 else dtype(0)
    if scale is not None and scale > 0:
        return dtype(1.0 / scale)
    return dtype(in_size) / dtype(out_size)


def _nearest_table(in_size: int, out_size: int, scale, exact: bool) -> np.ndarray:
    """Source index of each output position (int64, shape (O,)).

    nearest:       src = min(floor(o * s), I - 1)   (o when O == I, o // 2 when O == 2I)
    nearest-exact: src = min(floor((o + 0.5) * s), I - 1)
    with s computed in float32, as PyTorch does.
    """
    o = np.arange(out_size)
    if not exact and out_size == in_size:
        return o
    if not exact and out_size == 2 * in_size:
        return o >> 1
    s = _source_scale(in_size, out_size, scale, False, np.float32)
    if exact:
        pos = ((o + 0.5) * np.float64(s)).astype(np.float32)
    else:
        pos = o.astype(np.float32) * s
    return np.minimum(np.floor(pos).astype(np.int64), in_size - 1)


def _linear_table(in_size: int, out_size: int, scale, align_corners: bool, dtype):
    """Two source indices and two weights per output position (each shape (O,)).

    align_corners: p = o * s; else p = max((o + 0.5) * s - 0.5, 0).
    i0 = floor(p), i1 = min(i0 + 1, I - 1), t = p - i0: y[o] = (1 - t) x[i0] + t x[i1].
    """
    s = _source_scale(in_size, out_size, scale, align_corners, dtype)
    o = np.arange(out_size).astype(dtype)
    pos = o * s if align_corners else np.maximum(s * (o + dtype(0.5)) - dtype(0.5), dtype(0))
    i0 = pos.astype(np.int64)                                   # pos >= 0: truncation is floor
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    t = np.clip(pos - i0.astype(dtype), 0, 1).astype(dtype)
    return i0, i1, (1 - t).astype(dtype), t


class _Axis:
    """How one spatial axis is resampled: its taps (index arrays) and their weights."""

    def __init__(self, in_size, out_size, scale, mode, align_corners, dtype):
        self.in_size, self.out_size = in_size, out_size
        if mode in ("nearest", "nearest-exact"):
            self.taps = [_nearest_table(in_size, out_size, scale, mode == "nearest-exact")]
            self.weights = None
        else:
            i0, i1, w0, w1 = _linear_table(in_size, out_size, scale, align_corners, dtype)
            self.taps, self.weights = [i0, i1], [w0, w1]

    def matrix(self, xp, dtype):
        """The (O, I) resampling matrix A of this axis: y = A @ x along the axis."""
        A = np.zeros((self.out_size, self.in_size), dtype=dtype)
        rows = np.arange(self.out_size)
        weights = self.weights or [np.ones(self.out_size, dtype=dtype)]
        for idx, w in zip(self.taps, weights, strict=True):
            np.add.at(A, (rows, idx), w)
        return xp.asarray(A)

    def adjoint(self, xp, g, axis: int):
        """A^T along ``axis``: each output's ``g`` added onto its sources, as a product with A."""
        moved = xp.moveaxis(g, axis, -1)                            # (..., O)
        return xp.moveaxis(moved @ self.matrix(xp, g.dtype), -1, axis)  # (..., I) back in place

    def scatter(self, xp, g, axis: int):
        """A^T along ``axis`` over the taps only (no product with A's zeros), as PyTorch's backward.

        The same sums as ``adjoint``, but a non-finite ``g`` reaches only the sources it was
        read from (a zero-weight tap gets 0 * inf = NaN, as in PyTorch), never a whole row.
        The source indices of a tap never decrease along the axis, so the outputs of one source
        are a run: one ``add.reduceat`` per tap sums them.
        """
        shape = list(g.shape)
        shape[axis] = self.in_size
        gx = xp.zeros(shape, g.dtype)                               # g's shape, I along axis
        where = [slice(None)] * g.ndim
        weight_shape = [1] * g.ndim
        weight_shape[axis] = self.out_size
        for k, idx in enumerate(self.taps):
            part = g if self.weights is None else g * xp.asarray(self.weights[k].astype(g.dtype)).reshape(weight_shape)
            starts = np.flatnonzero(np.diff(idx, prepend=-1))       # first output of each source run
            where[axis] = xp.asarray(idx[starts])
            gx[tuple(where)] += xp.add.reduceat(part, starts, axis=axis)  # the sources read, summed
        return gx

    def apply(self, xp, x, axis: int):
        """Resample ``x`` along ``axis`` (the gather; weighted when linear)."""
        if self.weights is None:
            return xp.take(x, xp.asarray(self.taps[0]), axis=axis)
        shape = [1] * x.ndim
        shape[axis] = self.out_size
        (i0, i1), (w0, w1) = self.taps, self.weights
        w0 = xp.asarray(w0.astype(x.dtype)).reshape(shape)
        w1 = xp.asarray(w1.astype(x.dtype)).reshape(shape)
        return w0 * xp.take(x, xp.asarray(i0), axis=axis) + w1 * xp.take(x, xp.asarray(i1), axis=axis)


class InterpolateOp(Function):
    """Separable resampling of the last one or two axes (nearest, nearest-exact, linear).

    forward:  per spatial axis, y[..., o, ...] = sum_k w_k[o] * x[..., i_k[o], ...]
              (nearest: one tap i_0[o] with weight 1; linear: i0, i1 with 1 - t, t);
              2-D: the W axis first, then the H axis (PyTorch's summation order).
    backward: the adjoint, axis by axis: gx = A_H^T @ gy @ A_W, with A the (O, I) matrix
              holding the taps' weights (a scatter-add of gy onto the sources); with an
              inf or NaN in gy, summed over the taps only, as PyTorch does.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW); x (N, C, W) -> y (N, C, OW).
    Saves for backward: only the per-axis tables (no activations).

    ``size_factors``: the scale_factor the output sizes came from (floor(size * factor)),
    None for an explicit size; ONNX export reads it to follow a dynamic input size.
    """

    def __init__(self, out_sizes, scales, mode: str, align_corners: bool, size_factors=None):
        self.out_sizes, self.scales = out_sizes, scales
        self.mode, self.align_corners = mode, align_corners
        self.size_factors = size_factors

    def forward(self, x):
        spatial = x.shape[2:]                                       # (H, W) or (W,)
        self.axes = [
            _Axis(i, o, s, self.mode, self.align_corners, np.dtype(x.dtype).type)
            for i, o, s in zip(spatial, self.out_sizes, self.scales, strict=True)
        ]
        y = x
        for k in reversed(range(len(self.axes))):                   # W first, then H
            y = self.axes[k].apply(self.xp, y, 2 + k)
        return y                                                    # (N, C, OH, OW)

    def backward(self, gy):
        gx = gy                                                     # (N, C, OH, OW)
        for k, axis in enumerate(self.axes):                        # H, then W
            gx = axis.adjoint(self.xp, gx, 2 + k)
        if not self.xp.isfinite(gx).all():
            # NOTE: the product with A multiplies an inf or NaN of gy by A's zeros too, making a
            # whole row NaN; PyTorch's backward adds over the taps only. Any non-finite gy makes
            # gx non-finite (each output has a tap of nonzero weight), so the taps-only sums are
            # redone then; a finite gy keeps the product (the same sums, plus exact zeros).
            gx = gy
            for k, axis in enumerate(self.axes):
                gx = axis.scatter(self.xp, gx, 2 + k)
        return gx                                                   # (N, C, H, W)


def _per_axis(value, name: str, dims: int):
    if isinstance(value, (tuple, list)):
        if len(value) != dims:
            raise ShapeError(
                f"interpolate expects {name} with {dims} value(s) for an input with {dims} spatial "
                f"dimension(s), got {name}={tuple(value)!r}"
            )
        return tuple(value)
    return (value,) * dims


def interpolate(input: Tensor, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                recompute_scale_factor=None, antialias: bool = False) -> Tensor:
    """Resample ``input`` to ``size`` or by ``scale_factor`` (``torch.nn.functional.interpolate``).

    Args:
        input: (N, C, W) for 'nearest', 'nearest-exact', 'linear'; (N, C, H, W) for
            'nearest', 'nearest-exact', 'bilinear'.
        size: the output spatial size, an int or one int per spatial axis.
        scale_factor: a float or one per axis; the output size is floor(in * scale).
            Unless ``recompute_scale_factor`` is True, the source coordinate of an output
            pixel uses 1 / scale_factor (as PyTorch), not in / out.
        mode: 'nearest' (PyTorch's legacy floor rule), 'nearest-exact' (pixel centres),
            'linear' or 'bilinear'.
        align_corners: linear modes only: map the corner pixels' centres onto each other
            (source = o * (I - 1) / (O - 1)); default False.
        recompute_scale_factor: with ``scale_factor``, use in / out in the index formula.
        antialias: not supported (must be False).

    Shape: (N, C, H, W) -> (N, C, OH, OW); (N, C, W) -> (N, C, OW).
    """
    if mode not in MODES:
        raise NotImplementedError(
            f"interpolate supports mode in {MODES} (not 'bicubic', 'trilinear', 'area'), got mode={mode!r}"
        )
    if antialias:
        raise NotImplementedError("interpolate does not support antialias=True")
    if mode in ("nearest", "nearest-exact"):
        if align_corners is not None:
            raise ValueError(
                "interpolate: align_corners can only be set with the interpolating modes "
                f"('linear', 'bilinear'), got align_corners={align_corners!r} with mode={mode!r}"
            )
    align_corners = bool(align_corners)
    shape = tuple(input.shape)
    wanted = {"linear": 3, "bilinear": 4}.get(mode)
    if len(shape) not in (3, 4) or (wanted is not None and len(shape) != wanted):
        expects = {3: "(N, C, W)", 4: "(N, C, H, W)", None: "(N, C, W) or (N, C, H, W)"}[wanted]
        raise ShapeError(f"interpolate(mode={mode!r}) expects input of shape {expects}, got {shape}")
    dims = len(shape) - 2
    if (size is None) == (scale_factor is None):
        raise ValueError(
            "interpolate expects exactly one of size or scale_factor, got "
            f"size={size!r}, scale_factor={scale_factor!r}"
        )
    factors = None
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
        out_sizes = tuple(int(s) for s in _per_axis(size, "size", dims))
        scales = (None,) * dims
    else:
        factors = tuple(float(f) for f in _per_axis(scale_factor, "scale_factor", dims))
        out_sizes = tuple(math.floor(float(n) * f) for n, f in zip(shape[2:], factors, strict=True))
        scales = (None,) * dims if recompute_scale_factor else factors
    if min(out_sizes) < 1 or min(shape[2:]) < 1:
        raise ShapeError(
            f"interpolate expects input and output sizes > 0, got input {shape} and output size {out_sizes}"
        )
    return InterpolateOp(out_sizes, scales, mode, align_corners, size_factors=factors)(input)
