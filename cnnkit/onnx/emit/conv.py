"""Emitters of convolutions and pools: Conv, ConvTranspose, MaxPool, AveragePool, the adaptive
pools (global pools, equal windows or slices), and lp_pool2d's last step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...functional.pool import _adaptive_bounds
from ..writer import Writer

__all__ = ["EMITTERS"]


def _pool_window(w: Writer, fn, x: str) -> tuple[str, dict]:
    """The input and window attributes of a MaxPool or AveragePool node.

    A ceil_mode window that would start in the end padding is dropped (PyTorch, cnnkit,
    onnxruntime and ONNX's reference all drop it), but ONNX's shape inference keeps it before
    opset 22, so the file would fail its own checks. On an axis that drops a window the
    output has floor mode's size and windows: where every axis does, ceil_mode=0 writes the
    same pool; where another axis needs ceil_mode, the dropping axis gets the end padding
    (or, when its windows stop short of the input's end, a crop of the input) that its last
    window reaches exactly, so that ceil and floor agree there.
    """
    g = fn.g
    (PH, PW) = g.padding
    pads = [PH, PW, PH, PW]
    ceil_mode = g.ceil_mode
    if ceil_mode and not w.dynamic_size:  # with a symbolic size, nothing is inferred to disagree
        geometry = list(zip(fn.inputs[0].shape[2:], w.output(fn).shape[2:], g.kernel, g.stride,
                            g.padding, g.dilation, strict=True))
        extents = [d * (k - 1) + 1 for _, _, k, _, _, d in geometry]
        floor = [(n + 2 * p - e) // s + 1 for (n, _, _, s, p, _), e in zip(geometry, extents, strict=True)]
        ceiled = [-(-(n + 2 * p - e) // s) + 1 for (n, _, _, s, p, _), e in zip(geometry, extents, strict=True)]
        outputs = [o for _, o, *_ in geometry]
        if outputs == floor:
            ceil_mode = False
        elif outputs != ceiled and w.opset < 22:
            crops = []
            for axis, ((n, o, _, s, p, _), e) in enumerate(zip(geometry, extents, strict=True)):
                if o == ceiled[axis]:
                    continue
                reach = (o - 1) * s + e - p - n  # how far the last window runs past the input's end
                pads[2 + axis] = max(reach, 0)
                if reach < 0:
                    crops.append((axis + 2, n + reach))
            if crops:
                axes, ends = [a for a, _ in crops], [n for _, n in crops]
                x = w.slice(x, [0] * len(axes), ends, axes, [1] * len(axes), "crop")
    return x, dict(kernel_shape=list(g.kernel), strides=list(g.stride), pads=pads, ceil_mode=int(ceil_mode))


def _conv(w: Writer, fn, xs) -> str:
    KH, KW = fn.inputs[1].shape[2:]
    pt, pb, pl, pr = fn.pads
    return w.add("Conv", xs, kernel_shape=[KH, KW], strides=list(fn.stride), pads=[pt, pl, pb, pr],
                 dilations=list(fn.dilation), group=int(fn.groups))


def _conv_transpose(w: Writer, fn, xs) -> str:
    """ConvTranspose, with output_padding folded into the end pads where they allow.

    cnnkit (like PyTorch) crops ``padding`` from both ends of the full output, then adds
    ``output_padding`` rows at the end, which any value below max(stride, dilation) may do;
    onnxruntime refuses an output_padding not below the stride. Cropping p - op rows from the
    end is the same output, so output_padding is written only where it exceeds the padding,
    and what is then still not below the stride (rows past the full output: the bias only)
    becomes a Pad of zeros and the bias added after it.
    """
    KH, KW = fn.inputs[1].shape[2:]
    begins, ends, extra, rest = [], [], [], []
    for p, op, s in zip(fn.padding, fn.output_padding, fn.stride, strict=True):
        fold = min(p, op)
        e = op - fold                       # rows added past the full output
        begins.append(p)
        ends.append(p - fold)
        extra.append(e if e < s else 0)
        rest.append(0 if e < s else e)
    attrs = dict(kernel_shape=[KH, KW], strides=list(fn.stride), pads=begins + ends,
                 output_padding=extra, dilations=list(fn.dilation), group=int(fn.groups))
    if not any(rest):
        return w.add("ConvTranspose", xs, **attrs)
    y = w.add("ConvTranspose", xs[:2], "conv_transpose", **attrs)
    y = w.add("Pad", [y, w.ints([0, 0, 0, 0, 0, 0] + rest, "pads")], "pad" if len(xs) > 2 else None,
              mode="constant")
    if len(xs) > 2:
        y = w.add("Add", [y, w.add("Reshape", [xs[2], w.ints([-1, 1, 1], "bias_shape")], "bias")])
    return y


def _max_pool(w: Writer, fn, xs) -> str:
    x, attrs = _pool_window(w, fn, xs[0])
    return w.add("MaxPool", [x], dilations=list(fn.g.dilation), **attrs)


def _avg_pool(w: Writer, fn, xs) -> str:
    g = fn.g
    if fn.divisor_override is None:
        x, attrs = _pool_window(w, fn, xs[0])
        return w.add("AveragePool", [x], count_include_pad=int(fn.count_include_pad), **attrs)
    # sum = mean over the full window (zeros included) * area; cnnkit divides by the override.
    x = fn.inputs[0]
    H, W = x.shape[2:]
    (KH, KW), (SH, SW), (PH, PW) = g.kernel, g.stride, g.padding
    OH, OW = w.output(fn).shape[2:]
    if g.ceil_mode and w.dynamic_size:
        raise w.error("divisor_override with ceil_mode and a dynamic size: at another size a ceil_mode "
                      "window may run past the padding, and ONNX's average would divide it by its "
                      "clipped area; export with dynamic_size=False")
    extra_h, extra_w = (OH - 1) * SH + KH - (H + 2 * PH), (OW - 1) * SW + KW - (W + 2 * PW)
    if extra_h > 0 or extra_w > 0:
        # A ceil_mode window runs past the padding, where ONNX's average would divide by the
        # clipped area: zeros there (they add nothing to a sum) make every window whole, and
        # floor mode then places the same windows.
        padded = w.add("Pad", [xs[0], w.ints([0, 0, 0, 0, 0, 0, max(extra_h, 0), max(extra_w, 0)], "pads")],
                       "pad_overhang", mode="constant")
        mean = w.add("AveragePool", [padded], "average", count_include_pad=1, kernel_shape=[KH, KW],
                     strides=[SH, SW], pads=[PH, PW, PH, PW], ceil_mode=0)
    else:
        x_name, attrs = _pool_window(w, fn, xs[0])
        mean = w.add("AveragePool", [x_name], count_include_pad=1, **attrs)
    scale = np.asarray(KH * KW / fn.divisor_override, dtype=x.dtype)
    return w.add("Mul", [mean, w.constant(scale, "scale")], "scale")


def _adaptive(reduce_op: str, global_op: str, pool_op: str) -> Callable:
    def emit(w: Writer, fn, xs) -> str:
        x = fn.inputs[0]
        H, W = x.shape[2:]
        OH, OW = w.output(fn).shape[2:]
        if (OH, OW) == (1, 1):
            return w.add(global_op, xs)
        if w.dynamic_size:
            raise w.error(f"adaptive pooling to a {OH}x{OW} grid has windows that depend on the input "
                          "size, which ONNX cannot express for a size it does not know; export with "
                          "dynamic_size=False (or pool to 1x1)")
        if H % OH == 0 and W % OW == 0:  # equal windows, side by side: an ordinary pool
            k = [H // OH, W // OW]
            return w.add(pool_op, xs, kernel_shape=k, strides=k)
        # Unequal windows (PyTorch's floor/ceil bounds): reduce each window of rows, then of
        # columns; a rectangle's mean (or max) is the mean (max) of its row means (maxes).
        value = xs[0]
        for axis, bounds in ((2, _adaptive_bounds(H, OH)), (3, _adaptive_bounds(W, OW))):
            parts = [w.reduce(reduce_op, w.slice(value, [a], [b], [axis], [1], f"slice{axis}_{i}"),
                              [axis], True, f"{reduce_op.lower()}{axis}_{i}")
                     for i, (a, b) in enumerate(bounds)]
            value = w.add("Concat", parts, "concat_rows" if axis == 2 else None, axis=axis)
        return value

    return emit


def _lp_root(w: Writer, fn, xs) -> str:
    # lp_pool2d's last step, (s * area) ** (1/p): NaN where an odd p meets a negative sum,
    # in ONNX's Pow as in PyTorch (sign(s) * relu(|s|) is s, NaN included)
    dtype = fn.inputs[0].dtype
    total = w.add("Mul", [xs[0], w.constant(np.asarray(fn.area, dtype), "area")], "window_sum")
    return w.add("Pow", [total, w.constant(np.asarray(1.0 / fn.p, dtype), "exponent")])


EMITTERS = {
    "Conv2dOp": _conv,
    "ConvTranspose2dOp": _conv_transpose,
    "MaxPool2dOp": _max_pool,
    "AvgPool2dOp": _avg_pool,
    "AdaptiveAvgPool2dOp": _adaptive("ReduceMean", "GlobalAveragePool", "AveragePool"),
    "AdaptiveMaxPool2dOp": _adaptive("ReduceMax", "GlobalMaxPool", "MaxPool"),
    "LpRootOp": _lp_root,
}
