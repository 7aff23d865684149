"""Convolution and pooling: Conv, ConvTranspose, MaxPool, AveragePool, LpPool, global pools.

How ONNX's window attributes become cnnkit calls:

- ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID become explicit (top, bottom, left, right)
  pads by ONNX's formula. Symmetric pads go to cnnkit's own ``padding``; asymmetric pads
  (or, for pooling, pads wider than half the kernel, which cnnkit rejects like PyTorch) are
  applied with ``F.pad`` first when that is exactly equivalent: zeros before a convolution,
  an Lp pool or a count_include_pad=1 average, -inf before a max pool. An average pool with
  count_include_pad=0 over such pads is ``sum_pool2d(padded x) / sum_pool2d(padded ones)``.
  With ceil_mode, the pool of the padded input is cropped to ONNX's size: ONNX drops a last
  window that starts in the end padding, cnnkit only one that starts past its input.
- Pooling with dilations (which cnnkit's avg_pool2d and lp_pool2d, like PyTorch's, lack) is
  a window sum by a depthwise ``conv2d`` with a dilated all-ones kernel.
- ConvTranspose: ``pads`` / ``output_shape`` / ``auto_pad`` / ``output_padding`` become
  cnnkit's symmetric ``padding`` and ``output_padding`` plus, where needed, a crop.
- LpPool is ``(sum |x|**p)**(1/p)``: ``F.lp_pool2d(F.abs(x), p)`` (cnnkit, like PyTorch,
  raises x and not |x| to the power p).
- MaxPool's second output (Indices) is computed beside the pooling, with NumPy: the flat
  index of each window's first maximum in the unpadded input (row-major, or column-major
  over H and W with storage_order=1).
"""

from __future__ import annotations

import numpy as np

from ... import functional as F
from ...tensor import Tensor
from . import TRANSLATORS, Node

__all__ = ["explicit_pads", "cnnkit_padding", "pool_output_size"]

_FLOATS = (np.float32, np.float64)


# --------------------------------------------------------------------------- geometry
def _ints(node: Node, name: str, default) -> tuple[int, ...]:
    value = node.attr(name)
    return tuple(int(v) for v in value) if value is not None else tuple(default)


def explicit_pads(node: Node, hw, kernel, strides, dilations) -> tuple[int, int, int, int]:
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
    if auto_pad not in ("NOTSET", ""):
        raise node.unsupported(f"auto_pad={auto_pad!r} (expected NOTSET, SAME_UPPER, SAME_LOWER or VALID)")
    top, left, bottom, right = _ints(node, "pads", (0, 0, 0, 0))
    return top, bottom, left, right


def cnnkit_padding(kernel, pads) -> tuple[int, int] | None:
    """cnnkit's own (PH, PW) when the pads are symmetric and at most half the kernel."""
    top, bottom, left, right = pads
    if top == bottom and left == right and 2 * top <= kernel[0] and 2 * left <= kernel[1]:
        return top, left
    return None


def pool_output_size(size: int, k: int, s: int, lo: int, hi: int, d: int, ceil_mode: bool) -> int:
    """ONNX's pooled size; with ceil_mode a last window starting in the end padding is dropped."""
    room = size + lo + hi - (d * (k - 1) + 1)
    if not ceil_mode:
        return room // s + 1
    out = -(-room // s) + 1
    return out - 1 if (out - 1) * s >= size + lo else out


def _ceil_mode(node: Node) -> bool:
    # ceil_mode arrived in opset 10; before, pooled sizes are always rounded down.
    return bool(node.attr("ceil_mode", 0)) if node.opset >= 10 else False


def _window_geometry(node: Node, x: Tensor):
    kernel = _ints(node, "kernel_shape", ())
    if len(kernel) != 2:
        raise node.unsupported(f"kernel_shape {kernel} for input of shape {x.shape}")
    strides, dilations = _ints(node, "strides", (1, 1)), _ints(node, "dilations", (1, 1))
    return kernel, strides, dilations, explicit_pads(node, x.shape[2:], kernel, strides, dilations)


def _refuse_ceil_mode(node: Node, x: Tensor, kernel, strides, dilations, pads) -> None:
    """Refuse ceil_mode where it changes the output size on a path that has no ceil_mode."""
    if not _ceil_mode(node):
        return
    top, bottom, left, right = pads
    for size, k, s, d, lo, hi in zip(
        x.shape[2:], kernel, strides, dilations, (top, left), (bottom, right), strict=True
    ):
        if pool_output_size(size, k, s, lo, hi, d, True) != pool_output_size(size, k, s, lo, hi, d, False):
            raise node.unsupported(
                "ceil_mode together with asymmetric or wide pads or dilations changes the output size "
                "on a path cnnkit computes without ceil_mode"
            )


def _ceil_crop(node: Node, y: Tensor, x: Tensor, kernel, strides, dilations, pads) -> Tensor:
    """Crop a ceil_mode pool of the explicitly padded input to ONNX's output size.

    cnnkit drops a ceil_mode window that starts past its (explicitly padded) input; ONNX drops
    one that starts in the end padding, so at most one more window per axis is cut here.
    """
    if not _ceil_mode(node):
        return y
    top, bottom, left, right = pads
    OH, OW = (pool_output_size(n, k, s, lo, hi, d, True) for n, k, s, lo, hi, d in zip(
        x.shape[2:], kernel, strides, (top, left), (bottom, right), dilations, strict=True))
    return y if y.shape[2:] == (OH, OW) else y[:, :, :OH, :OW]


def _pad(x: Tensor, pads, value: float = 0.0) -> Tensor:
    top, bottom, left, right = pads
    return F.pad(x, (left, right, top, bottom), value=value)


def _dilated_window_sum(x: Tensor, kernel, strides, dilations) -> Tensor:
    """Sum over each dilated window: a depthwise conv2d with an all-ones kernel."""
    C = x.shape[1]
    ones = Tensor(np.ones((C, 1) + tuple(kernel), dtype=x.dtype))  # (C, 1, KH, KW)
    return F.conv2d(x, ones, None, strides, 0, dilations, groups=C)


# --------------------------------------------------------------------------- 1-D as 2-D
_LIFTED_ATTRS = {  # attribute -> value of the added leading (height) axis
    "kernel_shape": 1, "strides": 1, "dilations": 1, "output_padding": 0, "output_shape": 1,
}


def _spatial(node: Node, translate_2d, weight_inputs: tuple[int, ...] = ()) -> Tensor | tuple:
    """Run a 2-D translator on 4-D input; lift 1-D (N, C, L) input to (N, C, 1, L) first."""
    x = node.input(0)
    if x.ndim == 4:
        return translate_2d(node)
    if x.ndim != 3:
        raise node.unsupported(
            f"{x.ndim - 2}-D input of shape {x.shape}: cnnkit's convolution and pooling are 1-D "
            "(as 2-D) and 2-D only"
        )
    inputs = list(node.inputs)
    for i in (0,) + weight_inputs:
        t = inputs[i]
        inputs[i] = F.reshape(t, t.shape[:2] + (1,) + t.shape[2:])    # (N, C, 1, L)
    attrs = dict(node.attrs)
    for name, value in _LIFTED_ATTRS.items():
        if name in attrs:
            attrs[name] = [value] + list(attrs[name])
    if "pads" in attrs:
        begin, end = attrs["pads"]
        attrs["pads"] = [0, begin, 0, end]
    lifted = Node(node.op_type, node.name, inputs, attrs, node.opset, node.n_outputs)
    out = translate_2d(lifted)
    outs = out if isinstance(out, tuple) else (out,)
    squeezed = tuple(F.reshape(y, y.shape[:2] + y.shape[3:]) for y in outs)  # (N, C, OL)
    return squeezed if isinstance(out, tuple) else squeezed[0]


def _require_float(node: Node, x: Tensor) -> None:
    if x.dtype not in _FLOATS:
        raise node.unsupported(f"{x.dtype} input: cnnkit computes {node.op_type} in float32/float64 only")


def _check_kernel_shape(node: Node, kernel) -> None:
    stated = node.attr("kernel_shape")
    if stated is not None and tuple(stated) != tuple(kernel):
        raise node.unsupported(f"kernel_shape {tuple(stated)} differs from the weight's {tuple(kernel)}")


# --------------------------------------------------------------------------- Conv
def _conv_2d(node: Node) -> Tensor:
    x, w, b = node.input(0), node.input(1), node.input(2)
    _require_float(node, x)
    _check_kernel_shape(node, w.shape[2:])
    strides, dilations = _ints(node, "strides", (1, 1)), _ints(node, "dilations", (1, 1))
    pads = explicit_pads(node, x.shape[2:], w.shape[2:], strides, dilations)
    groups = int(node.attr("group", 1))
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return F.conv2d(x, w, b, strides, (top, left), dilations, groups)
    # Zero padding is part of a convolution's input, so padding first is exact.
    return F.conv2d(_pad(x, pads), w, b, strides, 0, dilations, groups)


def conv(node: Node) -> Tensor:
    return _spatial(node, _conv_2d, weight_inputs=(1,))


def _conv_transpose_2d(node: Node) -> Tensor:
    x, w, b = node.input(0), node.input(1), node.input(2)
    _require_float(node, x)
    kernel = w.shape[2:]
    _check_kernel_shape(node, kernel)
    strides, dilations = _ints(node, "strides", (1, 1)), _ints(node, "dilations", (1, 1))
    out_pad = _ints(node, "output_padding", (0, 0))
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
        out_shape = list(out_shape)[-2:]
        totals = [f + op - o for f, op, o in zip(full, out_pad, out_shape, strict=True)]
        begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        ends = [t - b_ for t, b_ in zip(totals, begins, strict=True)]
    elif auto_pad == "VALID":
        begins, ends = [0, 0], [0, 0]
    else:
        top, left, bottom, right = _ints(node, "pads", (0, 0, 0, 0))
        begins, ends = [top, left], [bottom, right]
    # cnnkit crops `padding` from both sides and adds `output_padding` at the end; anything
    # more asymmetric is a crop of cnnkit's output.
    padding, extra, crops = [], [], []
    for f, op, lo, hi, s, d in zip(full, out_pad, begins, ends, strides, dilations, strict=True):
        hi_net = hi - op  # rows cropped from the end, net of output_padding
        if lo < 0:
            raise node.unsupported("an output extended at the start: cnnkit's conv_transpose2d pads the end only")
        p = max(0, min(lo, hi_net))
        e = max(0, p - hi_net)
        if e >= max(s, d):
            raise node.unsupported(f"output_padding {e} not below stride {s} or dilation {d}")
        padding.append(p)
        extra.append(e)
        crops.append(slice(lo - p, f - hi_net - p))  # in cnnkit's output, which starts at row p
    y = F.conv_transpose2d(
        x, w, b, strides, tuple(padding), tuple(extra), int(node.attr("group", 1)), dilations
    )
    if any(c.start != 0 or c.stop != n for c, n in zip(crops, y.shape[2:], strict=True)):
        y = y[:, :, crops[0], crops[1]]
    return y


def conv_transpose(node: Node) -> Tensor:
    return _spatial(node, _conv_transpose_2d, weight_inputs=(1,))


# --------------------------------------------------------------------------- pooling
def _max_pool_indices(x: np.ndarray, kernel, strides, dilations, pads, ceil_mode, storage_order) -> np.ndarray:
    """Flat index of each window's first maximum in the unpadded input, int64 (N, C, OH, OW)."""
    N, C, H, W = x.shape
    top, bottom, left, right = pads
    OH = pool_output_size(H, kernel[0], strides[0], top, bottom, dilations[0], ceil_mode)
    OW = pool_output_size(W, kernel[1], strides[1], left, right, dilations[1], ceil_mode)
    best = np.full((N, C, OH, OW), -np.inf)
    rows = np.zeros((N, C, OH, OW), np.int64)
    cols = np.zeros((N, C, OH, OW), np.int64)
    oh = np.arange(OH)[:, None] * strides[0] - top                     # (OH, 1) first row of a window
    ow = np.arange(OW)[None, :] * strides[1] - left                    # (1, OW)
    for kh in range(kernel[0]):
        for kw in range(kernel[1]):
            r, c = oh + kh * dilations[0], ow + kw * dilations[1]      # (OH, 1), (1, OW)
            inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)           # (OH, OW)
            rr, cc = np.clip(r, 0, H - 1), np.clip(c, 0, W - 1)
            value = np.where(inside, x[:, :, rr, cc], -np.inf)         # (N, C, OH, OW)
            better = value > best                                      # strictly: first maximum wins
            best = np.where(better, value, best)
            rows = np.where(better, rr, rows)
            cols = np.where(better, cc, cols)
    base = np.arange(N * C).reshape(N, C, 1, 1) * (H * W)
    return base + (cols * H + rows if storage_order else rows * W + cols)


def _max_pool_2d(node: Node):
    x = node.input(0)
    if x.dtype in (np.int8, np.uint8):  # exact in float32; the result is cast back
        return _cast_outputs(_max_pool_2d(_with_input(node, F.cast(x, np.float32))), x.dtype)
    _require_float(node, x)
    kernel, strides, dilations, pads = _window_geometry(node, x)
    ceil_mode = _ceil_mode(node)
    padding = cnnkit_padding(kernel, pads)
    if padding is not None:
        y = F.max_pool2d(x, kernel, strides, padding, dilations, ceil_mode)
    else:
        # ONNX max pooling ignores padded cells: padding with -inf is the same (a window of
        # padding only would give -inf, which a comparison with ONNX's cases would catch).
        y = F.max_pool2d(_pad(x, pads, -np.inf), kernel, strides, 0, dilations, ceil_mode)
        y = _ceil_crop(node, y, x, kernel, strides, dilations, pads)
    if node.n_outputs < 2:
        return y
    order = int(node.attr("storage_order", 0))
    indices = _max_pool_indices(x.data, kernel, strides, dilations, pads, ceil_mode, order)
    return y, Tensor(indices)


def _with_input(node: Node, x: Tensor) -> Node:
    return Node(node.op_type, node.name, [x] + list(node.inputs[1:]), node.attrs, node.opset, node.n_outputs)


def _cast_outputs(out, dtype):
    if isinstance(out, tuple):
        return (F.cast(out[0], dtype),) + out[1:]
    return F.cast(out, dtype)


def max_pool(node: Node):
    return _spatial(node, _max_pool_2d)


def _average_pool_2d(node: Node) -> Tensor:
    x = node.input(0)
    _require_float(node, x)
    kernel, strides, dilations, pads = _window_geometry(node, x)
    ceil_mode = _ceil_mode(node)
    count_include_pad = bool(node.attr("count_include_pad", 0))
    if dilations != (1, 1):
        if any(pads):
            raise node.unsupported("dilated average pooling with pads")
        _refuse_ceil_mode(node, x, kernel, strides, dilations, pads)
        return _dilated_window_sum(x, kernel, strides, dilations) / float(kernel[0] * kernel[1])
    padding = cnnkit_padding(kernel, pads)
    if padding is not None:
        return F.avg_pool2d(x, kernel, strides, padding, ceil_mode, count_include_pad)
    if count_include_pad:  # the pads count as zeros: they may as well be real zeros
        # (a ceil_mode window running past them counts only what it covers, in ONNX as in cnnkit)
        y = F.avg_pool2d(_pad(x, pads), kernel, strides, 0, ceil_mode)
    else:
        # The mean of the real cells only: window sum over the number of real cells in the window.
        ones = Tensor(np.ones((1, 1) + x.shape[2:], dtype=x.dtype))       # (1, 1, H, W)
        y = (F.sum_pool2d(_pad(x, pads), kernel, strides, 0, ceil_mode)
             / F.sum_pool2d(_pad(ones, pads), kernel, strides, 0, ceil_mode))
    return _ceil_crop(node, y, x, kernel, strides, dilations, pads)


def average_pool(node: Node) -> Tensor:
    return _spatial(node, _average_pool_2d)


def _lp_pool_2d(node: Node) -> Tensor:
    x = node.input(0)
    _require_float(node, x)
    kernel, strides, dilations, pads = _window_geometry(node, x)
    p = node.attr("p", 2)
    # ONNX: y = (sum |x|**p)**(1/p). cnnkit's lp_pool2d, like PyTorch's, raises x to the p.
    ax = F.abs(x)
    if dilations != (1, 1):
        if any(pads):
            raise node.unsupported("dilated Lp pooling with pads")
        _refuse_ceil_mode(node, x, kernel, strides, dilations, pads)
        return F.pow(_dilated_window_sum(F.pow(ax, p), kernel, strides, dilations), 1.0 / p)
    if any(pads):
        _refuse_ceil_mode(node, x, kernel, strides, dilations, pads)
        ax = _pad(ax, pads)  # a zero cell adds |0|**p = 0 to its windows
    return F.lp_pool2d(ax, p, kernel, strides, _ceil_mode(node))


def lp_pool(node: Node) -> Tensor:
    return _spatial(node, _lp_pool_2d)


def _spatial_axes(node: Node, x: Tensor) -> tuple[int, ...]:
    if x.ndim < 3:
        raise node.unsupported(f"input of shape {x.shape}: expected (N, C, spatial...)")
    return tuple(range(2, x.ndim))


def global_average_pool(node: Node) -> Tensor:
    x = node.input(0)
    _require_float(node, x)
    if x.ndim == 4:
        return F.adaptive_avg_pool2d(x, 1)
    return F.mean(x, _spatial_axes(node, x), keepdims=True)


def global_max_pool(node: Node) -> Tensor:
    x = node.input(0)
    _require_float(node, x)
    if x.ndim == 4:
        return F.adaptive_max_pool2d(x, 1)
    return F.amax(x, _spatial_axes(node, x), keepdim=True)


TRANSLATORS.update({
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "LpPool": lp_pool,
    "GlobalAveragePool": global_average_pool,
    "GlobalMaxPool": global_max_pool,
})
