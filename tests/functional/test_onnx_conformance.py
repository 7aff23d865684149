"""ONNX's own node conformance cases, run through cnnkit's ops.

The ONNX package ships, for every operator, small models of one node with NumPy-computed
inputs and expected outputs. Neither the cases nor their expected numbers were written by
anyone on this team, which makes them an independent oracle. This file runs them for the
operators a CNN needs and compares with ONNX's own tolerances (rtol 1e-3, atol 1e-7), after
checking the output's dtype and shape exactly.

Where the cases come from:

- ``load_model_tests(kind="node")`` builds the node cases in memory (onnx >= 1.23 no longer
  ships them as files). Every single-node case of the operators in ``OPERATORS`` is used.
- ``onnx/backend/test/data/pytorch-converted/`` and ``.../pytorch-operator/`` ship models
  exported from PyTorch layers as files. A model is used when it exercises one of
  ``OPERATORS`` and every node in it is one of ``OPERATORS`` or the plumbing ops in
  ``PLUMBING`` (Unsqueeze/Squeeze lifting a 1-D average pool to 2-D, the Neg of Softmin,
  a Constant zero bias).

How a node becomes cnnkit calls (one translator function per ONNX operator, below):

- ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID become explicit (top, bottom, left, right)
  pads by ONNX's formula. Symmetric pads go to cnnkit's own ``padding``; asymmetric pads (or,
  for pooling, pads wider than half the kernel, which cnnkit rejects like PyTorch) are applied
  with ``F.pad`` first when that is exactly equivalent: zeros before a convolution, an Lp pool
  or a count_include_pad=1 average, -inf before a max pool. An average pool with
  count_include_pad=0 over such pads is ``sum_pool2d(padded x) / sum_pool2d(padded ones)``.
- Pooling with dilations (which cnnkit's avg_pool2d and lp_pool2d, like PyTorch's, lack) is a
  window sum by a depthwise ``conv2d`` with a dilated all-ones kernel.
- ConvTranspose: ``pads`` / ``output_shape`` / ``auto_pad`` / ``output_padding`` become
  cnnkit's symmetric ``padding`` and ``output_padding`` plus, where needed, a crop (slicing).
- LpPool is ``(sum |x|**p)**(1/p)``: ``F.lp_pool2d(F.abs(x), p)`` (cnnkit, like PyTorch,
  raises x and not |x| to the power p). No ONNX case uses p=1 (sum pooling).
- Gemm exported from a PyTorch Linear (transB=1, alpha=beta=1, 1-D bias) is ``F.linear``;
  every other Gemm is ``F.matmul`` / ``F.transpose`` / ``*`` / ``+``.
- Softmax / LogSoftmax take a single axis from opset 13; older opsets flatten the input to
  2-D at ``axis`` first, done with ``F.reshape``.
- BatchNormalization in training mode: see the NOTE in ``batch_normalization`` on the
  running variance (ONNX-15 uses the biased batch variance, cnnkit and PyTorch the unbiased).

Cases cnnkit cannot express are skipped with the reason in ``SKIPPED`` (the complete list,
each case by name). ``test_skipped_cases_are_really_out_of_reach`` checks that every listed
case is refused by its translator, and a case missing from the list that cannot be
expressed fails instead of skipping, so the list stays exact.

Counts (onnx 1.23), run + skipped = total:

    operator             node cases     shipped PyTorch cases
    Conv                 6 + 0 = 6      12 + 15 = 27
    ConvTranspose        9 + 2 = 11      3 + 0 = 3
    MaxPool             11 + 8 = 19      2 + 7 = 9
    AveragePool         13 + 7 = 20      4 + 3 = 7
    GlobalAveragePool    2 + 0 = 2       -
    GlobalMaxPool        2 + 0 = 2       -
    LpPool               6 + 2 = 8       -
    Relu                 1 + 0 = 1       1 + 0 = 1
    LeakyRelu            3 + 0 = 3       2 + 0 = 2
    Elu                  3 + 0 = 3       1 + 0 = 1
    Sigmoid              2 + 0 = 2       1 + 0 = 1
    Tanh                 2 + 0 = 2       1 + 0 = 1
    Softmax              7 + 0 = 7       4 + 0 = 4
    LogSoftmax           7 + 0 = 7       3 + 0 = 3
    Gemm                11 + 0 = 11      3 + 0 = 3
    Flatten              9 + 0 = 9       2 + 0 = 2
    BatchNormalization   4 + 0 = 4       5 + 0 = 5
    Dropout              5 + 7 = 12      -
    total              103 + 26 = 129   44 + 25 = 69
"""

from __future__ import annotations

import glob
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import Tensor

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402

OPERATORS = (
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "Relu",
    "LeakyRelu",
    "Elu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "Gemm",
    "Flatten",
    "BatchNormalization",
    "Dropout",
)
# Ops allowed around the operators above in the shipped PyTorch-exported models.
PLUMBING = ("Constant", "Neg", "Unsqueeze", "Squeeze")

# ONNX's tolerances for its backend tests (onnx.backend.test.runner); a case may only tighten them.
RTOL, ATOL = 1e-3, 1e-7

_ONE_D_POOL = "1-D pooling: cnnkit's pooling ops are 2-D only"
_THREE_D_POOL = "3-D pooling: cnnkit's pooling ops are 2-D only"
_ONE_D_CONV = "1-D convolution: cnnkit's conv2d is 2-D only"
_THREE_D_CONV = "3-D convolution: cnnkit's conv2d is 2-D only"
_INDICES = "second output Indices (argmax positions): F.max_pool2d returns no indices"
_MASK = "second output mask: F.dropout returns no mask"
_RANDOM_MASK = (
    "training-mode dropout with ratio > 0: the expected output holds the mask drawn by ONNX's "
    "np.random.seed(seed) stream, which cnnkit's numpy Generator cannot reproduce"
)

SKIPPED: dict[str, str] = {
    # --- ONNX node cases
    "test_convtranspose_1d": "1-D transposed convolution: cnnkit's conv_transpose2d is 2-D only",
    "test_convtranspose_3d": "3-D transposed convolution: cnnkit's conv_transpose2d is 2-D only",
    "test_maxpool_1d_default": _ONE_D_POOL,
    "test_maxpool_3d_default": _THREE_D_POOL,
    "test_maxpool_3d_dilations": _THREE_D_POOL,
    "test_maxpool_3d_dilations_use_ref_impl": _THREE_D_POOL,
    "test_maxpool_3d_dilations_use_ref_impl_large": _THREE_D_POOL,
    "test_maxpool_2d_uint8": "uint8 input: cnnkit's pooling computes in float32/float64 only",
    "test_maxpool_with_argmax_2d_precomputed_pads": _INDICES,
    "test_maxpool_with_argmax_2d_precomputed_strides": (
        _INDICES + " (and storage_order=1, column-major indices)"
    ),
    "test_averagepool_1d_default": _ONE_D_POOL,
    "test_averagepool_3d_default": _THREE_D_POOL,
    "test_averagepool_3d_dilations_small": _THREE_D_POOL,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": _THREE_D_POOL,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": _THREE_D_POOL,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": _THREE_D_POOL,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": _THREE_D_POOL,
    "test_lppool_1d_default": _ONE_D_POOL,
    "test_lppool_3d_default": _THREE_D_POOL,
    "test_dropout_default_mask": _MASK,
    "test_dropout_default_mask_ratio": _MASK,
    "test_training_dropout_zero_ratio_mask": _MASK,
    "test_training_dropout_default": _RANDOM_MASK,
    "test_training_dropout": _RANDOM_MASK,
    "test_training_dropout_default_mask": _RANDOM_MASK + "; " + _MASK,
    "test_training_dropout_mask": _RANDOM_MASK + "; " + _MASK,
    # --- shipped PyTorch-exported models (pytorch-converted, pytorch-operator)
    "test_Conv1d": _ONE_D_CONV,
    "test_Conv1d_dilated": _ONE_D_CONV,
    "test_Conv1d_groups": _ONE_D_CONV,
    "test_Conv1d_pad1": _ONE_D_CONV,
    "test_Conv1d_pad1size1": _ONE_D_CONV,
    "test_Conv1d_pad2": _ONE_D_CONV,
    "test_Conv1d_pad2size1": _ONE_D_CONV,
    "test_Conv1d_stride": _ONE_D_CONV,
    "test_Conv3d": _THREE_D_CONV,
    "test_Conv3d_dilated": _THREE_D_CONV,
    "test_Conv3d_dilated_strided": _THREE_D_CONV,
    "test_Conv3d_groups": _THREE_D_CONV,
    "test_Conv3d_no_bias": _THREE_D_CONV,
    "test_Conv3d_stride": _THREE_D_CONV,
    "test_Conv3d_stride_padding": _THREE_D_CONV,
    "test_MaxPool1d": _ONE_D_POOL,
    "test_MaxPool1d_stride": _ONE_D_POOL,
    "test_MaxPool1d_stride_padding_dilation": _ONE_D_POOL,
    "test_operator_maxpool": _ONE_D_POOL,
    "test_MaxPool3d": _THREE_D_POOL,
    "test_MaxPool3d_stride": _THREE_D_POOL,
    "test_MaxPool3d_stride_padding": _THREE_D_POOL,
    "test_AvgPool3d": _THREE_D_POOL,
    "test_AvgPool3d_stride": _THREE_D_POOL,
    "test_AvgPool3d_stride1_pad0_gpu_input": _THREE_D_POOL,
}


class NotExpressible(Exception):
    """Raised by a translator for an ONNX feature cnnkit's ops cannot compute exactly."""


# --------------------------------------------------------------------------- one node
@dataclass
class Node:
    """One ONNX node with its input values, ready for a translator."""

    op_type: str
    inputs: list  # Tensor, or None for an omitted optional input
    attrs: dict
    opset: int
    n_outputs: int

    def attr(self, name: str, default=None):
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def input(self, i: int):
        return self.inputs[i] if i < len(self.inputs) else None


def _require(x: Tensor, op: str, kind: str = "pooling") -> None:
    if x.ndim != 4:
        raise NotExpressible(f"{x.ndim - 2}-D {op}: cnnkit's {kind} is 2-D only (input {x.shape})")
    if x.dtype not in (np.float32, np.float64):
        raise NotExpressible(f"{x.dtype} input: cnnkit's {kind} computes in float32/float64 only")


def _pair(node: Node, name: str, default=(1, 1)) -> tuple[int, int]:
    return tuple(int(v) for v in node.attr(name, default))


def _explicit_pads(node: Node, hw, kernel, strides, dilations) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from ``auto_pad`` or ``pads`` (ONNX order: begins, then ends)."""
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        per_axis = []
        for size, k, s, d in zip(hw, kernel, strides, dilations, strict=True):
            out = -(-size // s)  # SAME: output = ceil(input / stride)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            per_axis.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        (top, bottom), (left, right) = per_axis
        return top, bottom, left, right
    top, left, bottom, right = (int(p) for p in node.attr("pads", (0, 0, 0, 0)))
    return top, bottom, left, right


def _check_kernel_shape(node: Node, kernel) -> None:
    stated = node.attr("kernel_shape")
    if stated is not None and tuple(stated) != tuple(kernel):
        raise NotExpressible(f"kernel_shape {tuple(stated)} differs from the weight's {tuple(kernel)}")


def _window_geometry(node: Node, x: Tensor):
    kernel = _pair(node, "kernel_shape", None)
    strides, dilations = _pair(node, "strides"), _pair(node, "dilations")
    return kernel, strides, dilations, _explicit_pads(node, x.shape[2:], kernel, strides, dilations)


def _cnnkit_padding(kernel, pads) -> tuple[int, int] | None:
    """cnnkit's own (PH, PW) when the pads are symmetric and at most half the kernel."""
    top, bottom, left, right = pads
    if top == bottom and left == right and 2 * top <= kernel[0] and 2 * left <= kernel[1]:
        return top, left
    return None


def _pool_out(size: int, k: int, s: int, lo: int, hi: int, d: int, ceil_mode: bool) -> int:
    """ONNX's pooled size; with ceil_mode a last window starting in the end padding is dropped."""
    room = size + lo + hi - (d * (k - 1) + 1)
    if not ceil_mode:
        return room // s + 1
    out = -(-room // s) + 1
    return out - 1 if (out - 1) * s >= size + lo else out


def _refuse_ceil_mode(node: Node, x: Tensor, kernel, strides, dilations, pads) -> None:
    """Refuse ceil_mode where it changes the output size: pre-padding and conv2d lack it."""
    if not node.attr("ceil_mode", 0):
        return
    top, bottom, left, right = pads
    for size, k, s, d, lo, hi in zip(
        x.shape[2:], kernel, strides, dilations, (top, left), (bottom, right), strict=True
    ):
        if _pool_out(size, k, s, lo, hi, d, True) != _pool_out(size, k, s, lo, hi, d, False):
            raise NotExpressible("ceil_mode changes the output size on a path without ceil_mode")


def _pad(x: Tensor, pads, value: float = 0.0) -> Tensor:
    top, bottom, left, right = pads
    return F.pad(x, (left, right, top, bottom), value=value)


def _dilated_window_sum(x: Tensor, kernel, strides, dilations) -> Tensor:
    """Sum over each dilated window: a depthwise conv2d with an all-ones kernel."""
    C = x.shape[1]
    ones = Tensor(np.ones((C, 1) + tuple(kernel), dtype=x.dtype))  # (C, 1, KH, KW)
    return F.conv2d(x, ones, None, strides, 0, dilations, groups=C)


# --------------------------------------------------------------------------- translators
def conv(node: Node) -> Tensor:
    x, w, b = node.input(0), node.input(1), node.input(2)
    _require(x, "Conv", "conv2d")
    _check_kernel_shape(node, w.shape[2:])
    strides, dilations = _pair(node, "strides"), _pair(node, "dilations")
    pads = _explicit_pads(node, x.shape[2:], w.shape[2:], strides, dilations)
    groups = int(node.attr("group", 1))
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return F.conv2d(x, w, b, strides, (top, left), dilations, groups)
    # Zero padding is part of a convolution's input, so padding first is exact.
    return F.conv2d(_pad(x, pads), w, b, strides, 0, dilations, groups)


def conv_transpose(node: Node) -> Tensor:
    x, w, b = node.input(0), node.input(1), node.input(2)
    _require(x, "ConvTranspose", "conv_transpose2d")
    kernel = w.shape[2:]
    _check_kernel_shape(node, kernel)
    strides, dilations = _pair(node, "strides"), _pair(node, "dilations")
    out_pad = _pair(node, "output_padding", (0, 0))
    auto_pad, out_shape = node.attr("auto_pad", "NOTSET"), node.attr("output_shape")
    full = [
        s * (n - 1) + d * (k - 1) + 1
        for n, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True)
    ]
    if out_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # ONNX's ConvTranspose formula: total_padding = full + output_padding - output_shape,
        # split with Python's floor division (a negative total adds rows at the end).
        if out_shape is None:
            out_shape = [n * s for n, s in zip(x.shape[2:], strides, strict=True)]
        totals = [f + op - o for f, op, o in zip(full, out_pad, out_shape, strict=True)]
        if auto_pad == "SAME_UPPER":
            begins = [t // 2 for t in totals]
        else:
            begins = [t - t // 2 for t in totals]
        ends = [t - b_ for t, b_ in zip(totals, begins, strict=True)]
    elif auto_pad == "VALID":
        begins, ends = [0, 0], [0, 0]
    else:
        top, left, bottom, right = (int(p) for p in node.attr("pads", (0, 0, 0, 0)))
        begins, ends = [top, left], [bottom, right]
    # cnnkit crops `padding` from both sides and adds `output_padding` at the end; anything
    # more asymmetric is a crop of cnnkit's output.
    padding, extra, crops = [], [], []
    for f, op, lo, hi, s, d in zip(full, out_pad, begins, ends, strides, dilations, strict=True):
        hi_net = hi - op  # rows cropped from the end, net of output_padding
        if lo < 0:
            raise NotExpressible("ConvTranspose output extended at the start: cnnkit pads the end only")
        p = max(0, min(lo, hi_net))
        e = max(0, p - hi_net)
        if e >= max(s, d):
            raise NotExpressible(f"output_padding {e} not below stride {s} or dilation {d}")
        padding.append(p)
        extra.append(e)
        crops.append(slice(lo - p, f - hi_net - p))  # in cnnkit's output, which starts at row p
    y = F.conv_transpose2d(
        x, w, b, strides, tuple(padding), tuple(extra), int(node.attr("group", 1)), dilations
    )
    if any(c.start != 0 or c.stop != n for c, n in zip(crops, y.shape[2:], strict=True)):
        y = y[:, :, crops[0], crops[1]]
    return y


def max_pool(node: Node) -> Tensor:
    x = node.input(0)
    if node.n_outputs > 1:
        raise NotExpressible(_INDICES)
    _require(x, "MaxPool")
    kernel, strides, dilations, pads = _window_geometry(node, x)
    ceil_mode = bool(node.attr("ceil_mode", 0))
    padding = _cnnkit_padding(kernel, pads)
    if padding is not None:
        return F.max_pool2d(x, kernel, strides, padding, dilations, ceil_mode)
    _refuse_ceil_mode(node, x, kernel, strides, dilations, pads)
    # ONNX max pooling ignores padded cells: padding with -inf is the same (a window of
    # padding only would give -inf, which the comparison would catch).
    return F.max_pool2d(_pad(x, pads, -np.inf), kernel, strides, 0, dilations)


def average_pool(node: Node) -> Tensor:
    x = node.input(0)
    _require(x, "AveragePool")
    kernel, strides, dilations, pads = _window_geometry(node, x)
    ceil_mode = bool(node.attr("ceil_mode", 0))
    count_include_pad = bool(node.attr("count_include_pad", 0))
    if dilations != (1, 1):
        if any(pads):
            raise NotExpressible("dilated average pooling with pads")
        _refuse_ceil_mode(node, x, kernel, strides, dilations, pads)
        return _dilated_window_sum(x, kernel, strides, dilations) / float(kernel[0] * kernel[1])
    padding = _cnnkit_padding(kernel, pads)
    if padding is not None:
        return F.avg_pool2d(x, kernel, strides, padding, ceil_mode, count_include_pad)
    _refuse_ceil_mode(node, x, kernel, strides, dilations, pads)
    if count_include_pad:  # the pads count as zeros: they may as well be real zeros
        return F.avg_pool2d(_pad(x, pads), kernel, strides, 0)
    # The mean of the real cells only: window sum over the number of real cells in the window.
    ones = Tensor(np.ones((1, 1) + x.shape[2:], dtype=x.dtype))  # (1, 1, H, W)
    return F.sum_pool2d(_pad(x, pads), kernel, strides) / F.sum_pool2d(_pad(ones, pads), kernel, strides)


def lp_pool(node: Node) -> Tensor:
    x = node.input(0)
    _require(x, "LpPool")
    kernel, strides, dilations, pads = _window_geometry(node, x)
    p = node.attr("p", 2)
    # ONNX: y = (sum |x|**p)**(1/p). cnnkit's lp_pool2d, like PyTorch's, raises x to the p.
    ax = F.abs(x)
    if dilations != (1, 1):
        if any(pads):
            raise NotExpressible("dilated Lp pooling with pads")
        _refuse_ceil_mode(node, x, kernel, strides, dilations, pads)
        return F.pow(_dilated_window_sum(F.pow(ax, p), kernel, strides, dilations), 1.0 / p)
    if any(pads):
        _refuse_ceil_mode(node, x, kernel, strides, dilations, pads)
        ax = _pad(ax, pads)  # a zero cell adds |0|**p = 0 to its windows
    return F.lp_pool2d(ax, p, kernel, strides, bool(node.attr("ceil_mode", 0)))


def global_average_pool(node: Node) -> Tensor:
    _require(node.input(0), "GlobalAveragePool")
    return F.adaptive_avg_pool2d(node.input(0), 1)


def global_max_pool(node: Node) -> Tensor:
    _require(node.input(0), "GlobalMaxPool")
    return F.adaptive_max_pool2d(node.input(0), 1)


def _softmax_like(fn: Callable) -> Callable[[Node], Tensor]:
    def translate(node: Node) -> Tensor:
        x = node.input(0)
        if node.opset >= 13:
            return fn(x, int(node.attr("axis", -1)))
        # Before opset 13, the input is a 2-D matrix split at `axis`, normalized over each row.
        axis = int(node.attr("axis", 1)) % x.ndim
        rows = math.prod(x.shape[:axis])
        return F.reshape(fn(F.reshape(x, (rows, -1)), 1), x.shape)

    return translate


def gemm(node: Node) -> Tensor:
    a, b, c = node.input(0), node.input(1), node.input(2)
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    if trans_b and not trans_a and alpha == beta == 1.0 and (c is None or c.shape == (b.shape[0],)):
        return F.linear(a, b, c)  # PyTorch's Linear: y = a @ b.T + c
    y = F.matmul(F.transpose(a) if trans_a else a, F.transpose(b) if trans_b else b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else c * beta)
    return y


def flatten(node: Node) -> Tensor:
    x = node.input(0)
    axis = int(node.attr("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    if axis == 0:
        return F.reshape(F.flatten(x, 0, -1), (1, -1))
    if axis == x.ndim:
        return F.reshape(F.flatten(x, 0, -1), (-1, 1))
    return F.flatten(F.flatten(x, axis, -1), 0, axis - 1)


def batch_normalization(node: Node):
    x, scale, bias, mean, var = node.inputs
    eps = float(node.attr("epsilon", 1e-5))
    if node.attr("spatial", 1) != 1:
        raise NotExpressible("spatial=0 (statistics per element, not per channel)")
    if node.opset >= 14:
        training = bool(node.attr("training_mode", 0))
    elif node.opset <= 6:
        training = not node.attr("is_test", 0)
    else:
        training = node.n_outputs > 1
    if not training:
        return F.batch_norm(x, mean.data, var.data, scale, bias, training=False, eps=eps)
    if node.opset < 14:
        raise NotExpressible("training outputs before opset 14 (saved mean and inverse std)")
    m = float(node.attr("momentum", 0.9))  # ONNX's momentum weighs the old running value
    running_mean, running_var = mean.data.copy(), var.data.copy()
    y = F.batch_norm(x, running_mean, running_var, scale, bias, training=True, momentum=1 - m, eps=eps)
    if node.n_outputs == 1:
        return y
    # NOTE: cnnkit (like PyTorch) blends the *unbiased* batch variance into running_var:
    #   cnnkit:  rv' = m*rv + (1 - m) * var_batch * n / (n - 1)
    #   ONNX-15: rv' = m*rv + (1 - m) * var_batch
    # Undo the Bessel factor n / (n - 1) on cnnkit's batch term to compare in ONNX's convention.
    n = x.size // x.shape[1]
    old = m * var.data
    onnx_var = old + (running_var - old) * ((n - 1) / n)
    return y, Tensor(running_mean), Tensor(onnx_var.astype(var.dtype))


def dropout(node: Node) -> Tensor:
    x = node.input(0)
    if node.n_outputs > 1:
        raise NotExpressible(_MASK)
    if node.opset >= 12:
        ratio = float(node.input(1).data) if node.input(1) is not None else 0.5
        training = bool(node.input(2).data) if node.input(2) is not None else False
    else:
        ratio = float(node.attr("ratio", 0.5))
        training = node.opset < 7 and not node.attr("is_test", 0)
    if training and ratio > 0:
        raise NotExpressible(_RANDOM_MASK)
    rng = np.random.default_rng(int(node.attr("seed", 0)))
    return F.dropout(x, ratio, training, generator=rng)


def _axes(node: Node) -> list[int]:
    return list(node.attr("axes")) if node.opset < 13 else node.input(1).data.tolist()


def unsqueeze(node: Node) -> Tensor:
    x, axes = node.input(0), _axes(node)
    shape = list(x.shape)
    for axis in sorted(a % (x.ndim + len(axes)) for a in axes):
        shape.insert(axis, 1)
    return F.reshape(x, shape)


def squeeze(node: Node) -> Tensor:
    x, axes = node.input(0), {a % node.input(0).ndim for a in _axes(node)}
    return F.reshape(x, [n for i, n in enumerate(x.shape) if i not in axes])


TRANSLATORS: dict[str, Callable[[Node], Tensor | tuple]] = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "LpPool": lp_pool,
    "GlobalAveragePool": global_average_pool,
    "GlobalMaxPool": global_max_pool,
    "Relu": lambda node: F.relu(node.input(0)),
    "LeakyRelu": lambda node: F.leaky_relu(node.input(0), float(node.attr("alpha", 0.01))),
    "Elu": lambda node: F.elu(node.input(0), float(node.attr("alpha", 1.0))),
    "Sigmoid": lambda node: F.sigmoid(node.input(0)),
    "Tanh": lambda node: F.tanh(node.input(0)),
    "Softmax": _softmax_like(F.softmax),
    "LogSoftmax": _softmax_like(F.log_softmax),
    "Gemm": gemm,
    "Flatten": flatten,
    "BatchNormalization": batch_normalization,
    "Dropout": dropout,
    # plumbing in the shipped PyTorch-exported models
    "Constant": lambda node: Tensor(numpy_helper.to_array(node.attrs["value"])),
    "Neg": lambda node: F.neg(node.input(0)),
    "Unsqueeze": unsqueeze,
    "Squeeze": squeeze,
}


def run_model(model, feeds: list[np.ndarray]) -> list[np.ndarray]:
    """Run a (small, topologically sorted) ONNX graph through cnnkit, node by node."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    graph = model.graph
    values = {t.name: Tensor(numpy_helper.to_array(t)) for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in values]
    assert len(names) == len(feeds), f"graph inputs {names}, got {len(feeds)} arrays"
    values.update((name, Tensor(a)) for name, a in zip(names, feeds, strict=True))
    with cnnkit.no_grad():
        for proto in graph.node:
            node = Node(
                proto.op_type,
                [values[name] if name else None for name in proto.input],
                {a.name: helper.get_attribute_value(a) for a in proto.attribute},
                opset,
                sum(1 for name in proto.output if name),
            )
            out = TRANSLATORS[proto.op_type](node)
            values.update(zip(proto.output, out if isinstance(out, tuple) else (out,), strict=True))
    return [values[o.name].data for o in graph.output]


# --------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    name: str
    op: str  # the operator under test
    model: object  # onnx.ModelProto
    data_sets: Callable[[], list]  # -> [(inputs, expected outputs)], loaded on demand
    rtol: float
    atol: float


def _read_data_sets(model_dir: str) -> list:
    def numbered(pattern: str) -> list[np.ndarray]:
        paths = sorted(glob.glob(pattern), key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
        return [numpy_helper.to_array(onnx.load_tensor(p)) for p in paths]

    return [
        (numbered(os.path.join(d, "input_*.pb")), numbered(os.path.join(d, "output_*.pb")))
        for d in sorted(glob.glob(os.path.join(model_dir, "test_data_set_*")))
    ]


def _collect() -> list[Case]:
    cases = []
    with warnings.catch_warnings():  # some unrelated generators overflow on purpose
        warnings.simplefilter("ignore")
        node_cases = load_model_tests(kind="node")
    for c in node_cases:
        ops = [n.op_type for n in c.model.graph.node]
        if len(ops) == 1 and ops[0] in OPERATORS:
            cases.append(Case(c.name, ops[0], c.model, lambda c=c: c.data_sets, c.rtol, c.atol))
    for kind in ("pytorch-converted", "pytorch-operator"):
        for c in sorted(load_model_tests(kind=kind), key=lambda c: c.name):
            model = onnx.load(os.path.join(c.model_dir, "model.onnx"))
            ops = [n.op_type for n in model.graph.node]
            tested = [op for op in ops if op in OPERATORS]
            if tested and all(op in OPERATORS or op in PLUMBING for op in ops):
                data = lambda d=c.model_dir: _read_data_sets(d)  # noqa: E731
                cases.append(Case(c.name, tested[0], model, data, c.rtol, c.atol))
    return cases


CASES = _collect()
BY_NAME = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "two ONNX cases share a name"


@pytest.mark.parametrize("name", list(BY_NAME))
def test_onnx_case(name: str) -> None:
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    case = BY_NAME[name]
    rtol, atol = min(case.rtol, RTOL), min(case.atol, ATOL)
    for inputs, expected in case.data_sets():
        try:
            actual = run_model(case.model, list(inputs))
        except NotExpressible as e:
            pytest.fail(f"{name} is not in SKIPPED but cnnkit cannot express it: {e}")
        assert len(actual) == len(expected)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert a.dtype == e.dtype, f"output {i}: dtype {a.dtype}, expected {e.dtype}"
            assert a.shape == e.shape, f"output {i}: shape {a.shape}, expected {e.shape}"
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"output {i}")


def test_skipped_cases_are_really_out_of_reach() -> None:
    """Every case in SKIPPED exists and its translator refuses it (no runnable case hides)."""
    assert not set(SKIPPED) - set(BY_NAME), "SKIPPED names cases ONNX does not have"
    for name in SKIPPED:
        inputs, _ = BY_NAME[name].data_sets()[0]
        with pytest.raises(NotExpressible):
            run_model(BY_NAME[name].model, list(inputs))
