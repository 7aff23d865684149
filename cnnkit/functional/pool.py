"""Pooling: max, average, sum (and Lp), adaptive average and adaptive max.

Windows are visited one kernel tap at a time: each tap is one strided view of the
(padded) input covering every window at once, so there is no Python loop over pixels,
only over the KH*KW taps. Max pooling also has a compiled one-pass algorithm
(``MaxPool2dFusedOp``) that ``max_pool2d`` picks through ``backend.dispatch``.
"""

from __future__ import annotations

import numpy as np

from ..backend import buffers, dispatch, get_array_module
from ..backend.kernels import pool as pool_kernels
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor
from .activation import ReLUOp
from .args import output_size, pair
from .im2col import padded_cnhw, window, windows_overlap
from .math import abs as abs_
from .math import pow as pow_

__all__ = [
    "max_pool2d", "avg_pool2d", "sum_pool2d", "lp_pool2d",
    "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "MaxPool2dOp", "MaxPool2dReferenceOp", "MaxPool2dFusedOp", "AvgPool2dOp", "AdaptiveAvgPool2dOp",
    "AdaptiveMaxPool2dOp", "LpRootOp",
]


class _PoolGeometry:
    """Kernel, stride, padding, dilation and ceil_mode of one pooling call, validated."""

    def __init__(self, op: str, kernel_size, stride, padding, dilation, ceil_mode: bool):
        self.op = op
        self.kernel = pair(kernel_size, "kernel_size", op)
        self.stride = self.kernel if stride is None or stride == () else pair(stride, "stride", op)
        self.padding = pair(padding, "padding", op)
        self.dilation = pair(dilation, "dilation", op)
        self.ceil_mode = bool(ceil_mode)
        self._resolved: dict[tuple, tuple] = {}     # resolve's results by input shape
        if min(self.kernel) <= 0:
            raise ShapeError(f"{op} expects kernel_size > 0, got {self.kernel}")
        if min(self.stride) <= 0:
            raise ShapeError(f"{op} expects stride > 0, got {self.stride}")
        if min(self.dilation) <= 0:
            raise ShapeError(f"{op} expects dilation > 0, got {self.dilation}")
        if min(self.padding) < 0 or any(
            2 * p > k for p, k in zip(self.padding, self.kernel)
        ):
            raise ShapeError(
                f"{op} expects padding between 0 and half the kernel size, got padding "
                f"{self.padding} for kernel_size {self.kernel}"
            )

    @classmethod
    def of(cls, op: str, kernel_size, stride, padding, dilation, ceil_mode: bool) -> _PoolGeometry:
        """``_PoolGeometry(...)``, one object per call of plain ints (and a bool ceil_mode): a
        geometry is never changed after it is made, so calls with the same arguments share it
        (a pooling layer's every step; ~3 us a call less). Other arguments (NumPy ints, pairs,
        floats to refuse) are checked anew each call."""
        if not (type(kernel_size) is int and (stride is None or type(stride) is int) and type(padding) is int
                and type(dilation) is int and type(ceil_mode) is bool):  # (a key 2.0 would find 2's geometry)
            return cls(op, kernel_size, stride, padding, dilation, ceil_mode)
        key = (op, kernel_size, stride, padding, dilation, ceil_mode)
        g = _GEOMETRIES.get(key)
        if g is None:
            g = cls(op, kernel_size, stride, padding, dilation, ceil_mode)   # (raises before it is kept)
            if len(_GEOMETRIES) >= _GEOMETRIES_MAX:
                _GEOMETRIES.clear()
            _GEOMETRIES[key] = g
        return g

    def resolve(self, shape):
        """Output size and the padded extent (incl. ceil_mode overhang) for input ``shape``.

        A function of the shape alone (the geometry does not change): kept per shape, so a
        shared geometry (``of``) resolves each input shape once."""
        resolved = self._resolved
        found = resolved.get(shape)
        if found is None:
            found = self._resolve(shape)            # (raises before anything is kept)
            if len(resolved) >= _GEOMETRIES_MAX:
                resolved.clear()
            resolved[shape] = found
        return found

    def _resolve(self, shape):
        if len(shape) != 4:
            raise ShapeError(f"{self.op} expects input of shape (N, C, H, W), got {shape}")
        _, _, H, W = shape
        (KH, KW), (SH, SW) = self.kernel, self.stride
        (PH, PW), (DH, DW) = self.padding, self.dilation
        OH = output_size(H, KH, SH, PH, DH, self.ceil_mode)
        OW = output_size(W, KW, SW, PW, DW, self.ceil_mode)
        # As PyTorch: a window larger than the padded input is an error unless ceil_mode
        # still places one (clipped) window on the input.
        if OH < 1 or OW < 1:
            raise ShapeError(
                f"{self.op} kernel {self.kernel} with dilation {self.dilation} is larger than the "
                f"padded input ({H + 2 * PH}, {W + 2 * PW}) (input shape {shape}, padding {self.padding})"
            )
        # ceil_mode's last window may run past the bottom/right padding: pad that too.
        extra_h = max(0, (OH - 1) * SH + DH * (KH - 1) + 1 - (H + 2 * PH))
        extra_w = max(0, (OW - 1) * SW + DW * (KW - 1) + 1 - (W + 2 * PW))
        pads = (PH, PH + extra_h, PW, PW + extra_w)
        return (OH, OW), pads, ((SH, SW), (DH, DW), (OH, OW))


# _PoolGeometry.of's shared geometries, by their arguments (plain ints only); at most _GEOMETRIES_MAX
_GEOMETRIES: dict[tuple, _PoolGeometry] = {}
_GEOMETRIES_MAX = 64


def _crop(gxc, pads, hw):
    pt, _, pl, _ = pads
    H, W = hw
    return gxc[:, :, pt : pt + H, pl : pl + W].transpose(1, 0, 2, 3)  # (N, C, H, W)


class MaxPool2dOp(Function):
    """Max pooling over KH x KW windows (padding counts as -inf).

    forward:  y[n, c, i, j] = max_{kh, kw} xpad[n, c, i*SH + kh*DH, j*SW + kw*DW]
    backward: gx[argmax window element] += gy; the argmax is the *first* maximum in
              the window in row-major order, or its last NaN (PyTorch's rule). NOTE: an
              equality mask would send the gradient to every tied element, and MNIST's
              black background ties constantly.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW).

    This class states the math; each algorithm is a subclass, and ``max_pool2d`` picks
    one through ``backend.dispatch.max_pool2d_algorithm``:

    - ``MaxPool2dReferenceOp``: one NumPy pass per kernel tap (any array module);
    - ``MaxPool2dFusedOp``: one compiled pass over each input plane.

    Both save only the first-maximum tap index of each window (uint8 below 256 taps).
    ``keeps_indices`` (``max_pool2d(return_indices=True)``) keeps them without a graph too.
    """

    keeps_indices = False

    def __init__(self, geometry: _PoolGeometry):
        self.g = geometry


class MaxPool2dReferenceOp(MaxPool2dOp):
    """``MaxPool2dOp`` one kernel tap at a time: each tap is one strided view of the padded input."""

    def forward(self, x):
        xp = self.xp
        (OH, OW), pads, geometry = self.g.resolve(x.shape)
        KH, KW = self.g.kernel
        xc = padded_cnhw(x, pads, value=-xp.inf)                      # (C, N, Hp, Wp)
        y = window(xc, 0, 0, geometry).copy()                         # (C, N, OH, OW)
        track = self.saves_for_backward or self.keeps_indices
        if track:
            # index of the first maximum's tap; uint8 holds up to 255 taps
            arg = xp.zeros(y.shape, dtype=xp.uint8 if KH * KW < 256 else xp.int32)
        for k in range(1, KH * KW):
            tap = window(xc, k // KW, k % KW, geometry)
            if track:
                # strictly greater: first max wins; a NaN always wins (PyTorch's rule)
                xp.copyto(arg, k, where=(tap > y) | (tap != tap))
            xp.maximum(y, tap, out=y)
        if track:
            self.arg = _taps_inside(xp, arg, y, self.g, pads, geometry, x.shape[2:])
            self.pads, self.geometry = pads, geometry
            self.x_shape, self.padded_hw = x.shape, xc.shape[2:]
        return y.transpose(1, 0, 2, 3)                                # (N, C, OH, OW)

    def backward(self, gy):
        xp = self.xp
        KH, KW = self.g.kernel
        N, C, H, W = self.x_shape
        gyc = gy.transpose(1, 0, 2, 3)                                # (C, N, OH, OW)
        gxc = xp.zeros((C, N) + tuple(self.padded_hw), dtype=gy.dtype)
        overlap = windows_overlap(self.g.kernel, self.geometry)
        for k in range(KH * KW):
            tap = window(gxc, k // KW, k % KW, self.geometry)
            hit = self.arg == k
            if overlap:
                tap += xp.where(hit, gyc, 0)
            else:  # each input element is in one window at most: write, don't add
                xp.copyto(tap, gyc, where=hit)
        return _crop(gxc, self.pads, (H, W))


class MaxPool2dFusedOp(MaxPool2dOp):
    """``MaxPool2dOp`` in one compiled pass per plane (``backend/kernels/pool.py``).

    Computes the same maximum and the same first-maximum tap as the reference, exactly;
    backward sends each gradient to that tap in one pass. Without a backward to come
    (no grad), 3x3/2 windows compute the maxima alone, the same values.
    """

    def forward(self, x):
        (OH, OW), pads, geometry = self.g.resolve(x.shape)
        y, arg, order = pool_kernels.max_pool2d_fused(
            x, self.g.kernel, self.g.stride, pads, self.g.dilation, (OH, OW), indices=self.saves_for_backward
        )
        if self.saves_for_backward:
            arg = _taps_inside(self.xp, arg, y, self.g, pads, geometry, x.shape[2:])  # (any plane order)
            self.arg, self.order, self.pads, self.x_shape = arg, order, pads, x.shape
        return y                                                      # (N, C, OH, OW)

    ahead = None  # (gy, gx, relu): gx made from gy by its maker's backward (backward_by_images)

    def backward(self, gy):
        ahead, self.ahead = self.ahead, None
        if ahead is not None and gy is ahead[0]:  # the only gradient of y, scattered already
            gx, relu = ahead[1], ahead[2]
        else:
            g = self.g
            relu = _relu_before(self)
            gx = pool_kernels.max_pool2d_scatter(
                gy, self.arg, self.order, self.x_shape, g.kernel, g.stride, self.pads, g.dilation, relu is not None
            )
        if relu is not None:
            relu.premasked = gx   # its backward passes this array through (ReLUOp.backward)
        return gx

    def backward_by_images(self, gy, step: int):
        """(kernel, args) computing this op's backward image by image from gy, or None.

        For the op that consumed this op's output (a convolution, ``conv_blocked.conv2d_blocked_grads``'
        ``then``): gy is the input gradient it is about to compute, the very array it will
        return; kernel(n0, n1, *args) scatters images n0..n1-1 of gy (with the ReLU mask where
        ``_relu_before`` applies) as soon as they are written, on the thread that wrote them,
        and the caller runs it over every image before returning gy (in blocks of ``step``
        images). ``backward`` then passes the result on if gy is the gradient it receives, i.e.
        the consumer was the only one (another consumer's gradient is summed into a new array:
        the result is dropped and ``backward`` scatters the sum, so the fusion never changes a
        gradient). 2x2/2 windows only (``dispatch.FUSE_MAX_POOL_BACKWARD_INTO_CONV`` = 0: never).

        The op before (the ReLU's maker, or this op's when no ReLU is fused) may in turn take
        its weight gradients from the scattered images in the same blocks (``weight_grads_by_images``
        of ``Conv2dDirectOp``: the first convolution, which needs no input gradient).
        """
        g = self.g
        if (not dispatch.FUSE_MAX_POOL_BACKWARD_INTO_CONV or self.inputs is None
                or not pool_kernels.relu_mask_applies(g.kernel, g.stride, self.pads, g.dilation)):
            return None
        relu = _relu_before(self)
        plan = pool_kernels.max_pool2d_scatter_by_images(gy, self.arg, self.order, self.x_shape, relu is not None)
        if plan is None:
            return None
        gx, kernel, args = plan
        self.ahead = (gy, gx, relu)
        maker = relu.input_creators[0] if relu is not None else self.input_creators[0]
        chained = getattr(maker, "weight_grads_by_images", None)
        after = chained(gx, step) if chained is not None and dispatch.FUSE_CONV_WEIGHT_GRADS_INTO_NEXT_CONV else None
        if after is None:
            return kernel, args
        return _one_then_other, (kernel, args, after[0], after[1])


def _one_then_other(n0, n1, first, first_args, then, then_args):
    """first(n0, n1, *first_args), then then(n0, n1, *then_args): two ops' backwards on a block of images."""
    first(n0, n1, *first_args)
    then(n0, n1, *then_args)


def _relu_before(op: MaxPool2dFusedOp) -> ReLUOp | None:
    """The ReLU whose mask ``op``'s backward may apply itself (its output is ``op``'s input), or None.

    NOTE: max pooling sends each window's gradient to one input element, its first maximum,
    and ReLU's backward keeps a gradient where ReLU's mask is set. At the first maximum the
    mask is set exactly when the window's maximum is > 0 or NaN (ReLU's output there is its
    input when the mask is set, else 0), which the 2x2 kernel records in its tap byte. So
    gx_relu = where(mask, scatter(gy), 0) = scatter of gy from windows whose maximum is > 0
    or NaN: one pass instead of two, the same values (a select either way). The ReLU passes
    the array through only if it receives this very array, i.e. max pooling was the only
    consumer of its output (a second consumer's gradient is added into a new array, which
    the ReLU masks as usual; masking twice changes nothing). Not when the ReLU's output keeps
    its gradient (``retain_grad``: it must see the unmasked one), nor for windows other than
    2x2/2. ``dispatch.FUSE_RELU_INTO_MAX_POOL_BACKWARD = 0`` switches it off (A/B runs).
    """
    relu = op.input_creators[0] if op.input_creators else None
    if not dispatch.FUSE_RELU_INTO_MAX_POOL_BACKWARD or not isinstance(relu, ReLUOp) or relu.inputs is None:
        return None
    g = op.g
    if op.inputs[0]._retain_grad or not pool_kernels.relu_mask_applies(g.kernel, g.stride, op.pads, g.dilation):
        return None
    return relu


_MAX_POOL2D_ALGORITHMS = {"reference": MaxPool2dReferenceOp, "fused": MaxPool2dFusedOp}


class AvgPool2dOp(Function):
    """Average (or sum) pooling over KH x KW windows.

    forward:  y[n, c, i, j] = sum_{window} xpad / divisor[i, j]
              divisor = window area including padding (count_include_pad=True), or the
              number of real input elements (False), or divisor_override; sum pooling
              is divisor 1. Windows never count ceil_mode's overhang past the padding.
    backward: every element of a window receives gy[i, j] / divisor[i, j].

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW).
    """

    def __init__(self, geometry: _PoolGeometry, count_include_pad: bool, divisor_override):
        self.g, self.count_include_pad, self.divisor_override = geometry, count_include_pad, divisor_override

    def _divisor(self, x, pads, geometry, shape):
        xp = self.xp
        if self.divisor_override is not None:
            return x.dtype.type(self.divisor_override)
        _, _, H, W = shape
        PH, PW = self.g.padding
        pt, pb, pl, pr = pads
        # ones where an element counts, zeros where it does not; then sum-pool it
        counted = xp.zeros((1, 1, H + pt + pb, W + pl + pr), dtype=x.dtype)
        if self.count_include_pad:
            counted[:, :, : H + 2 * PH, : W + 2 * PW] = 1
        else:
            counted[:, :, pt : pt + H, pl : pl + W] = 1
        KH, KW = self.g.kernel
        total = sum(window(counted, k // KW, k % KW, geometry) for k in range(KH * KW))
        return total[0, 0]                                            # (OH, OW)

    def forward(self, x):
        if x.dtype.kind != "f":
            raise TypeError(f"{self.g.op} expects a floating input, got {x.dtype}")
        (OH, OW), pads, geometry = self.g.resolve(x.shape)
        KH, KW = self.g.kernel
        xc = padded_cnhw(x, pads)                                     # (C, N, Hp, Wp)
        y = window(xc, 0, 0, geometry).copy()                         # (C, N, OH, OW)
        for k in range(1, KH * KW):
            y += window(xc, k // KW, k % KW, geometry)
        divisor = self._divisor(x, pads, geometry, x.shape)
        y /= divisor
        if self.saves_for_backward:
            self.divisor, self.pads, self.geometry = divisor, pads, geometry
            self.x_shape, self.padded_hw = x.shape, xc.shape[2:]
        return y.transpose(1, 0, 2, 3)                                # (N, C, OH, OW)

    def backward(self, gy):
        xp = self.xp
        KH, KW = self.g.kernel
        N, C, H, W = self.x_shape
        share = gy.transpose(1, 0, 2, 3) / self.divisor               # (C, N, OH, OW)
        gxc = xp.zeros((C, N) + tuple(self.padded_hw), dtype=gy.dtype)
        for k in range(KH * KW):
            window(gxc, k // KW, k % KW, self.geometry)[...] += share
        return _crop(gxc, self.pads, (H, W))


def _adaptive_bounds(size: int, out: int):
    """PyTorch's adaptive windows: start = floor(i*size/out), end = ceil((i+1)*size/out)."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _check_adaptive(op: str, x, output_size):
    if x.ndim != 4:
        raise ShapeError(f"{op} expects input of shape (N, C, H, W), got {x.shape}")
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    oh, ow = output_size
    oh = x.shape[2] if oh is None else oh
    ow = x.shape[3] if ow is None else ow
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"{op} expects a positive output size, got {output_size}")
    return int(oh), int(ow)


class AdaptiveAvgPool2dOp(Function):
    """Average pooling to a fixed output size (global average pooling for (1, 1)).

    forward:  y[n, c, i, j] = mean of x over rows [hs_i, he_i) and columns [ws_j, we_j),
              hs_i = floor(i*H/OH), he_i = ceil((i+1)*H/OH) (likewise columns)
    backward: each element of window (i, j) receives gy[i, j] / window area.
    Computed separably: rows first, then columns (a rectangle's mean is the mean of its
    row means), one NumPy call per output row and per output column.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW).
    """

    def __init__(self, output_size):
        self.output_size = output_size

    def forward(self, x):
        xp = self.xp
        OH, OW = _check_adaptive("adaptive_avg_pool2d", x, self.output_size)
        N, C, H, W = x.shape
        self.rows, self.cols = _adaptive_bounds(H, OH), _adaptive_bounds(W, OW)
        self.x_shape = x.shape
        self.x_order = buffers.axis_order(x) if isinstance(x, np.ndarray) else None
        if (OH, OW) == (1, 1):
            return x.mean(axis=(2, 3), keepdims=True)
        r = xp.stack([x[:, :, a:b].mean(axis=2) for a, b in self.rows], axis=2)     # (N, C, OH, W)
        return xp.stack([r[..., a:b].mean(axis=3) for a, b in self.cols], axis=3)  # (N, C, OH, OW)

    def backward(self, gy):
        xp = self.xp
        N, C, H, W = self.x_shape
        if len(self.rows) == 1 and len(self.cols) == 1:
            g = gy / gy.dtype.type(H * W)
            if self.x_order is None:
                return xp.broadcast_to(g, self.x_shape).copy()
            gx = buffers.empty_ordered(self.x_shape, g.dtype, self.x_order)  # x's layout, as its other gradients
            gx[...] = g
            return gx
        gr = xp.zeros((N, C, len(self.rows), W), dtype=gy.dtype)     # (N, C, OH, W)
        for j, (a, b) in enumerate(self.cols):
            gr[..., a:b] += gy[..., j : j + 1] / gy.dtype.type(b - a)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        for i, (a, b) in enumerate(self.rows):
            gx[:, :, a:b] += gr[:, :, i : i + 1] / gy.dtype.type(b - a)
        return gx


class AdaptiveMaxPool2dOp(Function):
    """Max pooling to a fixed output size (global max pooling for (1, 1)).

    forward:  y[n, c, i, j] = max of x over the window of AdaptiveAvgPool2dOp.
    backward: gy goes to the first maximum of the window in row-major order, or to its
              last NaN (PyTorch's rule: a NaN always replaces the running maximum).
    Computed separably, columns first (first max within each row), then rows (first
    row reaching the maximum), which picks exactly the row-major first maximum (and the
    last NaN: the last row holding one, at its last NaN).

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW).
    """

    keeps_indices = False  # adaptive_max_pool2d(return_indices=True): flat_index without a graph too

    def __init__(self, output_size):
        self.output_size = output_size

    def forward(self, x):
        xp = self.xp
        OH, OW = _check_adaptive("adaptive_max_pool2d", x, self.output_size)
        N, C, H, W = x.shape
        rows, cols = _adaptive_bounds(H, OH), _adaptive_bounds(W, OW)
        # stage 1: within each row, over each column window -> (N, C, H, OW)
        col_arg = xp.stack([_first_max(xp, x[..., a:b], 3) + a for a, b in cols], axis=3)
        col_max = xp.take_along_axis(x, col_arg, axis=3)             # (N, C, H, OW)
        # stage 2: over each row window -> (N, C, OH, OW)
        row_arg = xp.stack([_first_max(xp, col_max[:, :, a:b], 2) + a for a, b in rows], axis=2)
        y = xp.take_along_axis(col_max, row_arg, axis=2)             # (N, C, OH, OW)
        if self.saves_for_backward or self.keeps_indices:
            # flat index h*W + w of each output's source element
            src_col = xp.take_along_axis(col_arg, row_arg, axis=2)   # (N, C, OH, OW)
            self.flat_index = row_arg * W + src_col
            self.x_shape = x.shape
            self.overlap = H % OH != 0 or W % OW != 0
        return y

    def backward(self, gy):
        xp = self.xp
        N, C, H, W = self.x_shape
        gx = xp.zeros((N * C, H * W), dtype=gy.dtype)
        idx = self.flat_index.reshape(N * C, -1)                     # (N*C, OH*OW)
        g = gy.reshape(N * C, -1)
        if self.overlap:
            # Windows overlap (H not a multiple of OH): several outputs may pick one
            # element, so their gradients must add up.
            rows = xp.arange(N * C)[:, None] * (H * W)
            xp.add.at(gx.reshape(-1), (idx + rows).reshape(-1), g.reshape(-1))
        else:
            xp.put_along_axis(gx, idx, g, axis=1)
        return gx.reshape(self.x_shape)


def _first_max(xp, a, axis: int):
    """Index of the first maximum along ``axis``, or of the last NaN where there is one."""
    arg = a.argmax(axis=axis)
    nan = a != a
    if nan.any():
        last_nan = a.shape[axis] - 1 - xp.flip(nan, axis=axis).argmax(axis=axis)
        arg = xp.where(nan.any(axis=axis), last_nan, arg)
    return arg


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _pool_unbatched(x: Tensor, op: str, fn) -> Tensor:
    """Apply ``fn`` to x (N, C, H, W), accepting PyTorch's unbatched (C, H, W) too."""
    x = _as_tensor(x)
    if x.ndim == 3:
        y = fn(x.reshape((1,) + x.shape))
        return y.reshape(y.shape[1:])
    return fn(x)


def _first_real(starts, dilation: int):
    """Each window's first tap inside the input: its start moved past the padding in dilation steps."""
    behind = starts < 0
    return starts + behind * ((-starts + dilation - 1) // dilation) * dilation


def _tap_positions(xp, arg, g: _PoolGeometry, pads, geometry):
    """(rows, cols) in the unpadded input of each window's tap ``arg`` (..., OH, OW), and the window starts."""
    KW = g.kernel[1]
    (SH, SW), (DH, DW), (OH, OW) = geometry
    h0 = xp.arange(OH).reshape(OH, 1) * SH - pads[0]                  # window starts (OH, 1)
    w0 = xp.arange(OW) * SW - pads[2]                                 # (OW,)
    arg = arg.astype(np.int64)
    return h0 + (arg // KW) * DH, w0 + (arg % KW) * DW, h0, w0


def _taps_inside(xp, arg, y, g: _PoolGeometry, pads, geometry, hw):
    """``arg`` with a tap in the padding moved to its window's first tap inside the input.

    Padding counts as -inf and the first maximum wins, so a window whose input elements are
    all -inf keeps its first tap, which may be padding; PyTorch looks at the input's
    elements only and picks the window's first one (its gradient must not be lost in the
    padding). Only a padded pooling with a -inf maximum can have such a window.
    """
    if not any(pads) or not (y == -xp.inf).any():
        return arg
    H, W = hw
    KW = g.kernel[1]
    (_, _), (DH, DW), _ = geometry
    rows, cols, h0, w0 = _tap_positions(xp, arg, g, pads, geometry)
    outside = (rows < 0) | (rows >= H) | (cols < 0) | (cols >= W)
    first = ((_first_real(h0, DH) - h0) // DH) * KW + (_first_real(w0, DW) - w0) // DW  # (OH, OW)
    return xp.where(outside, first, arg).astype(arg.dtype)


def _max_indices(op: MaxPool2dReferenceOp, x_shape) -> np.ndarray:
    """Flat index h * W + w, within its (H, W) plane, of each window's maximum (N, C, OH, OW), as PyTorch's.

    From the first-maximum tap k of each window (``op.arg``, moved inside the input by
    ``_taps_inside``): h = i*SH - PT + (k // KW)*DH, w = j*SW - PL + (k % KW)*DW.
    """
    rows, cols, _, _ = _tap_positions(op.xp, op.arg, op.g, op.pads, op.geometry)  # (C, N, OH, OW)
    return (rows * x_shape[3] + cols).transpose(1, 0, 2, 3)           # (N, C, OH, OW)


def max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max pooling, as ``torch.nn.functional.max_pool2d`` (stride defaults to kernel_size).

    ``return_indices=True`` also returns where each maximum is, as PyTorch: an int64 tensor
    of the output's shape holding its flat index h * W + w within the input plane (what
    ``max_unpool2d`` takes); the first maximum of a window, or its last NaN. It runs the
    reference algorithm (one NumPy pass per kernel tap).

    Shape: (N, C, H, W) -> (N, C, OH, OW), OH = floor((H + 2*PH - DH*(KH-1) - 1) / SH) + 1.
    Max pooling has no parameters.
    """
    g = _PoolGeometry.of("max_pool2d", kernel_size, stride, padding, dilation, ceil_mode)

    def pool(t: Tensor) -> Tensor:
        algorithm = dispatch.max_pool2d_algorithm(get_array_module(t.data), t.dtype)
        return _MAX_POOL2D_ALGORITHMS[algorithm](g)(t)

    if not return_indices:
        return _pool_unbatched(input, "max_pool2d", pool)
    x = _as_tensor(input)
    batched = x if x.ndim != 3 else x.reshape((1,) + x.shape)
    op = MaxPool2dReferenceOp(g)
    op.keeps_indices = True
    y = op(batched)
    indices = Tensor(_max_indices(op, batched.shape))
    if x.ndim == 3:  # PyTorch's unbatched (C, H, W)
        return y.reshape(y.shape[1:]), indices.reshape(indices.shape[1:])
    return y, indices


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
    count_include_pad: bool = True, divisor_override: int | None = None,
) -> Tensor:
    """Average pooling, as ``torch.nn.functional.avg_pool2d``."""
    g = _PoolGeometry.of("avg_pool2d", kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and divisor_override == 0:  # a negative one flips signs, as in PyTorch
        raise ValueError("avg_pool2d expects a nonzero divisor_override, got 0")
    return _pool_unbatched(
        input, "avg_pool2d", lambda t: AvgPool2dOp(g, count_include_pad, divisor_override)(t)
    )


def sum_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False) -> Tensor:
    """Sum pooling: the sum of each window (zero padding). Equals avg_pool2d times the area."""
    g = _PoolGeometry.of("sum_pool2d", kernel_size, stride, padding, 1, ceil_mode)
    return _pool_unbatched(input, "sum_pool2d", lambda t: AvgPool2dOp(g, True, 1)(t))


class LpRootOp(Function):
    """The last step of Lp pooling, as PyTorch writes it: y = (sign(s) * relu(|s|) * A) ** (1/p).

    s is the window mean of x**p and A the window area, so u = sign(s) relu(|s|) A is
    the window sum (NaN where s is NaN, since PyTorch's sign(NaN) is 0).
    forward:  y = u ** (1/p)       (NaN where u < 0 and 1/p is not an integer, as PyTorch)
    backward: gs = gy * A/p * u ** (1/p - 1) * sign(s)**2, and 0 where s == 0 (relu's
              gradient at 0 stops the infinite slope of the root: an all-zero window gets
              gradient 0). This is the chain rule through PyTorch's five ops, so NaNs
              and zero windows come out as in PyTorch.

    Shapes: s, y, gy, gs all (N, C, OH, OW).
    """

    def __init__(self, p: float, area: int):
        self.p, self.area = p, area

    def forward(self, s):
        xp = self.xp
        area, inv_p = s.dtype.type(self.area), s.dtype.type(1.0 / self.p)
        sign = (s > 0).astype(s.dtype) - (s < 0).astype(s.dtype)
        u = sign * xp.maximum(xp.abs(s), 0) * area
        with np.errstate(invalid="ignore"):                           # negative u: NaN, as PyTorch
            y = u**inv_p
        if self.saves_for_backward:
            self.s, self.u, self.sign = s, u, sign
        return y

    def backward(self, gy):
        xp = self.xp
        dtype = gy.dtype.type
        with np.errstate(divide="ignore", invalid="ignore"):          # 0 ** negative: masked below
            slope = dtype(self.area / self.p) * self.u ** dtype(1.0 / self.p - 1) * self.sign * self.sign
            return xp.where(xp.abs(self.s) <= 0, dtype(0), gy * slope)


def lp_pool2d(input, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False) -> Tensor:
    """Power-average pooling, as ``torch.nn.functional.lp_pool2d``: (sum x**p)**(1/p).

    Computed as PyTorch computes it, so values and gradients agree with it everywhere,
    edge cases included: s = avg_pool2d(x**p), then ``LpRootOp``. x**p is not |x|**p:
    where an odd p meets a negative window sum the root is NaN, as in PyTorch; an
    all-zero window gets gradient 0; a NaN input gives a NaN output; with ceil_mode a
    partial edge window's average is scaled by the full window area. norm_type=inf is
    max pooling of |x| (-inf: the smallest |x|), as in PyTorch.
    """
    p = float(norm_type)
    kh, kw = pair(kernel_size, "kernel_size", "lp_pool2d")
    input = _as_tensor(input)
    if p == float("inf"):
        return max_pool2d(abs_(input), kernel_size, stride, 0, 1, ceil_mode)
    if p == -float("inf"):
        return -max_pool2d(-abs_(input), kernel_size, stride, 0, 1, ceil_mode)
    s = avg_pool2d(pow_(input, p), kernel_size, stride, 0, ceil_mode)
    return LpRootOp(p, kh * kw)(s)


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    """Average-pool to ``output_size`` (an int or (OH, OW); None keeps that dimension)."""
    return _pool_unbatched(input, "adaptive_avg_pool2d", lambda t: AdaptiveAvgPool2dOp(output_size)(t))


def adaptive_max_pool2d(
    input, output_size, return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max-pool to ``output_size`` (an int or (OH, OW); None keeps that dimension).

    ``return_indices=True`` also returns where each maximum is, as PyTorch: an int64 tensor
    of the output's shape holding its flat index h * W + w within the input plane; the first
    maximum of a window, or its last NaN (the element the gradient goes to).
    """
    if not return_indices:
        return _pool_unbatched(input, "adaptive_max_pool2d", lambda t: AdaptiveMaxPool2dOp(output_size)(t))
    x = _as_tensor(input)
    batched = x if x.ndim != 3 else x.reshape((1,) + x.shape)
    op = AdaptiveMaxPool2dOp(output_size)
    op.keeps_indices = True
    y = op(batched)
    indices = Tensor(op.flat_index.astype(np.int64, copy=False))
    if x.ndim == 3:  # PyTorch's unbatched (C, H, W)
        return y.reshape(y.shape[1:]), indices.reshape(indices.shape[1:])
    return y, indices
