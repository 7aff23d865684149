"""Emitters of ops that move values: Reshape / Flatten, Transpose, indexing (Slice, Squeeze,
Unsqueeze, Gather), Pad, Concat, stack, Identity (clone), and Resize (interpolate).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper

from ..writer import Writer, simple

__all__ = ["EMITTERS"]


def _reshape(w: Writer, fn, xs) -> str:
    x_shape = tuple(fn.inputs[0].shape)
    out_shape = tuple(w.output(fn).shape)
    moved = w.moved_shapes()
    if moved is not None and x_shape:
        return _reshape_following(w, xs[0], x_shape, out_shape, moved[0][0], moved[1])
    if not w.dynamic or not x_shape:
        return w.add("Reshape", [xs[0], w.ints(out_shape, "shape")])
    B = w.batch
    if out_shape[:1] == x_shape[:1] == (B,):  # the batch stays in front
        if len(out_shape) == 2 and len(x_shape) >= 2:
            return w.add("Flatten", xs, axis=1)
        return w.add("Reshape", [xs[0], w.ints((-1,) + out_shape[1:], "shape")])
    # The batch is folded into another dimension: that one becomes -1, if only one can hold it.
    rest = math.prod(x_shape[1:])
    holders = [j for j, n in enumerate(out_shape)
               if n % B == 0 and math.prod(out_shape) // n * (n // B) == rest]
    if len(holders) != 1:
        raise w.error(f"a reshape from {x_shape} to {out_shape} mixes the batch with other "
                      "dimensions; export with dynamic_batch=False")
    target = list(out_shape)
    target[holders[0]] = -1
    return w.add("Reshape", [xs[0], w.ints(target, "shape")])


def _reshape_following(w: Writer, x: str, x_shape, out_shape, x_moved, out_moved) -> str:
    """A reshape whose target follows the input's batch and size (seen in the second trace).

    Output dimensions equal in both traces are written as numbers. Of those that change,
    one the same as the input's dimension at its place is 0 (ONNX: copy it), one the product
    of a run of the dimensions of the input, or else of an earlier value of the graph (the
    model's input, an op's output: ``Writer.shapes``), in both traces, is that product read
    from its shape when the graph runs, and one left over is -1 (ONNX infers it). So a
    GroupNorm-style (N, G, C/G*H*W) -> (N, C, H, W) takes H and W from the tensor that had
    them. A batch-keeping flatten to 2-D is Flatten.
    """
    changing = [j for j, (a, b) in enumerate(zip(out_shape, out_moved, strict=True)) if a != b]
    if not changing:
        return w.add("Reshape", [x, w.ints(out_shape, "shape")])
    if (len(out_shape) == 2 and len(x_shape) >= 2 and out_shape[0] == x_shape[0]
            and out_moved[0] == x_moved[0] and out_shape[1] == math.prod(x_shape[1:])
            and out_moved[1] == math.prod(x_moved[1:])):
        return w.add("Flatten", [x], axis=1)
    if len(changing) == 1:
        target = list(out_shape)
        target[changing[0]] = -1
        return w.add("Reshape", [x, w.ints(target, "shape")])
    pieces: list = list(out_shape)  # an int, or the ONNX value of a computed dimension
    inferred = []
    sources = [(x, tuple(x_shape), tuple(x_moved)), *reversed(w.shapes)]  # the input first, then the latest
    for j in changing:
        if j < len(x_shape) and (x_shape[j], x_moved[j]) == (out_shape[j], out_moved[j]):
            pieces[j] = 0
            continue
        found = next(((value, a, b) for value, first, second in sources if len(first) == len(second)
                      for a in range(len(first)) for b in range(a + 1, len(first) + 1)
                      if math.prod(first[a:b]) == out_shape[j] and math.prod(second[a:b]) == out_moved[j]), None)
        if found is None:
            inferred.append(j)
            continue
        value, a, b = found
        dims = w.slice(w.add("Shape", [value], f"shape{j}"), [a], [b], [0], [1], f"dims{j}")
        pieces[j] = dims if b - a == 1 else w.reduce("ReduceProd", dims, [0], True, f"size{j}")
    if len(inferred) > 1:
        raise w.error(f"a reshape from {x_shape} to {out_shape} splits dimensions that follow the "
                      "input's batch or size in a way ONNX's Reshape cannot follow; export with a "
                      "fixed batch and size")
    for j in inferred:
        pieces[j] = -1
    if all(isinstance(p, int) for p in pieces):
        return w.add("Reshape", [x, w.ints(pieces, "shape")])
    parts, run = [], []
    for p in pieces:
        if isinstance(p, int):
            run.append(p)
            continue
        if run:
            parts.append(w.ints(run, "dims"))
            run = []
        parts.append(p)
    if run:
        parts.append(w.ints(run, "dims"))
    target = w.add("Concat", parts, "target", axis=0) if len(parts) > 1 else parts[0]
    return w.add("Reshape", [x, target])


def _transpose(w: Writer, fn, xs) -> str:
    ndim = fn.inputs[0].ndim
    return w.add("Transpose", xs, perm=[a % ndim for a in fn.dims])


def _index_array(i) -> np.ndarray | None:
    """An integer index array (advanced indexing), or None for an int, slice, None or ..."""
    if isinstance(i, (slice, int, np.integer)) or i is None or i is Ellipsis:
        return None
    return np.asarray(i)


_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_WHOLE_AXIS = {(start, None, step) for start in (None, 0) for step in (None, 1)}


def _getitem(w: Writer, fn, xs) -> str:
    x = fn.inputs[0]
    index = fn.index if isinstance(fn.index, tuple) else (fn.index,)
    arrays = [k for k, i in enumerate(index) if _index_array(i) is not None]
    if arrays:
        k = arrays[0]
        picked = _index_array(index[k])
        if len(arrays) > 1 or picked.dtype.kind not in "iu" or any(
            i != slice(None) for j, i in enumerate(index) if j != k
        ):
            raise w.error(f"indexing with {fn.index!r}: only ints, slices, None, ... and one integer "
                          "index array with full slices elsewhere have an ONNX counterpart")
        return w.add("Gather", [xs[0], w.constant(picked.astype(np.int64), "indices")], axis=k)
    if Ellipsis in index:  # expand ... to the full slices it stands for
        k = index.index(Ellipsis)
        fill = x.ndim - (len(index) - 1 - sum(i is None for i in index))
        index = index[:k] + (slice(None),) * fill + index[k + 1:]
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis = out_axis = 0
    for i in index:
        if i is None:
            unsqueeze.append(out_axis)
            out_axis += 1
            continue
        if isinstance(i, slice):
            # Skipped only when it keeps the whole axis at any size: x[..., -1:] of a traced
            # size 1 keeps it too, but not with a dynamic size.
            if (i.start, i.stop, i.step) not in _WHOLE_AXIS:
                # The slice as written, open ends as ONNX's clamped extremes (so a dynamic size
                # keeps "to the end"); ONNX reads negative and out-of-range bounds as Python does.
                step = 1 if i.step is None else int(i.step)
                first, last = (0, _INT64_MAX) if step > 0 else (_INT64_MAX, _INT64_MIN)
                starts.append(first if i.start is None else int(i.start))
                ends.append(last if i.stop is None else int(i.stop))
                axes.append(axis)
                steps.append(step)
            out_axis += 1
        else:
            # As written, so a negative index counts from the end at any size (-1: to the end).
            k = int(i)
            starts.append(k)
            ends.append(_INT64_MAX if k == -1 else k + 1)
            axes.append(axis)
            steps.append(1)
            squeeze.append(axis)
        axis += 1
    value = xs[0]
    if starts:
        value = w.slice(value, starts, ends, axes, steps, "slice" if squeeze or unsqueeze else None)
    if squeeze:
        value = w.squeeze(value, squeeze, "squeeze" if unsqueeze else None)
    if unsqueeze:
        value = w.unsqueeze(value, unsqueeze)
    return value if value != xs[0] else w.add("Identity", xs)


def _setitem(w: Writer, fn, xs) -> str:
    """``x[mask] = v`` -> Where(mask, v, x): the mask (its trailing axes added to x's rank) picks v.

    Written when v broadcasts against x's dims after the mask's: one value for every selected
    position (a number, a 0-d tensor, a row of x's trailing dims). A v with one value per
    selected element is a scatter in the order of the selection, and other indices (slices,
    integers, index arrays, where duplicates make the last write win) have no Where form.
    """
    x, v = fn.inputs[:2]
    if len(fn.inputs) < 3:
        raise w.error(f"x[index] = v with index {fn.index!r}: only a bool mask index (x[mask] = v, masked_fill) "
                      "is written, as Where; slices, integers and index arrays (where duplicate indices "
                      "make the last write win) have no Where form")
    mask = fn.inputs[2]
    rest = x.shape[mask.ndim:]                                        # x's dims after the mask's
    lead = v.shape[:max(v.ndim - len(rest), 0)]                       # v's dims against the selection
    if any(d != 1 for d in lead) or len(lead) > 1 or any(
            a not in (1, b) for a, b in zip(reversed(v.shape), reversed(rest))):
        raise w.error(f"x[mask] = v with v of shape {v.shape} for the {int(mask.data.sum())} selected entries of "
                      f"shape {rest} (mask {mask.shape}, x {x.shape}): only a v that broadcasts against {rest} "
                      "(the same values at every selected position) is written, as Where; one value per "
                      "selected entry is a scatter")
    condition = xs[2]
    if mask.ndim < x.ndim:                                            # (mask dims, 1, ..., 1)
        condition = w.unsqueeze(condition, list(range(mask.ndim, x.ndim)), "mask")
    value = xs[1]
    if v.dtype != x.dtype:                                            # assignment takes x's dtype
        value = w.add("Cast", [value], "value", to=helper.np_dtype_to_tensor_dtype(x.dtype))
    return w.add("Where", [condition, value, xs[0]])


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _circular_by_slices(w: Writer, fn, x: str, begins, ends) -> str:
    """Circular padding before opset 19 (Pad's "wrap" mode): per axis, the last b entries, the
    input and its first e entries, concatenated (an axis padded earlier is wrapped whole, as
    on a torus). Negative starts count from the end, so a dynamic size is followed."""
    sizes = fn.inputs[0].shape
    if any(b < 0 or e < 0 or max(b, e) > n for b, e, n in zip(begins, ends, sizes, strict=True)):
        raise w.error(f"circular padding {tuple(fn.pad)} that crops or wraps more than once needs "
                      f"opset 19 or newer (exporting opset {w.opset})")
    for axis in reversed(range(len(sizes))):
        b, e = begins[axis], ends[axis]
        if not b and not e:
            continue
        parts = [w.slice(x, [-b], [_INT64_MAX], [axis], [1], f"wrap_begin{axis}")] if b else []
        parts.append(x)
        if e:
            parts.append(w.slice(x, [0], [e], [axis], [1], f"wrap_end{axis}"))
        x = w.add("Concat", parts, f"wrap{axis}", axis=axis)
    return x


def _pad(w: Writer, fn, xs) -> str:
    x = fn.inputs[0]
    begins, ends = [0] * x.ndim, [0] * x.ndim
    for k in range(len(fn.pad) // 2):  # F.pad's widths start from the last dimension
        begins[x.ndim - 1 - k], ends[x.ndim - 1 - k] = fn.pad[2 * k], fn.pad[2 * k + 1]
    if fn.mode == "circular" and w.opset < 19:
        return _circular_by_slices(w, fn, xs[0], begins, ends)
    inputs = [xs[0], w.ints(begins + ends, "pads")]
    if fn.mode == "constant":
        inputs.append(w.constant(np.asarray(fn.value, dtype=x.dtype), "value"))
    return w.add("Pad", inputs, mode=_PAD_MODES[fn.mode])


def _concat(w: Writer, fn, xs) -> str:
    return w.add("Concat", xs, axis=fn.axis % fn.inputs[0].ndim)


def _stack(w: Writer, fn, xs) -> str:
    axis = fn.axis % (fn.inputs[0].ndim + 1)
    parts = [w.unsqueeze(x, [axis], f"unsqueeze{i}") for i, x in enumerate(xs)]
    return w.add("Concat", parts, axis=axis)


def _interpolate(w: Writer, fn, xs) -> str:
    """F.interpolate -> Resize with the attributes of its mode (see cnnkit/onnx/ops/resize.py).

    nearest: asymmetric + floor; nearest-exact: half_pixel + round_prefer_ceil; (bi)linear:
    half_pixel (PyTorch's rule, also at an output length 1) or align_corners. A scale factor
    used in the index formula is written as scales (right at any input size); an explicit size
    as sizes: the input's N and C, then the traced OH, OW; a recomputed scale as sizes too,
    floor(size * factor) of the input's size when that is dynamic.
    """
    if fn.mode in ("nearest", "nearest-exact"):
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        if fn.mode == "nearest-exact":
            attrs.update(coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil")
    else:
        attrs = dict(mode="linear", coordinate_transformation_mode="align_corners" if fn.align_corners
                     else "half_pixel")
    roi = w.constant(np.zeros(0, np.float32), "roi")
    if all(s is not None for s in fn.scales):
        scales = w.constant(np.asarray([1.0, 1.0, *fn.scales], np.float32), "scales")
        return w.add("Resize", [xs[0], roi, scales], **attrs)
    no_scales = w.constant(np.zeros(0, np.float32), "scales")
    shape = w.add("Shape", [xs[0]], "shape")
    n_c = w.slice(shape, [0], [2], [0], [1], "n_c")
    out_sizes = w.ints(fn.out_sizes, "out_size")
    moved = w.moved_shapes()
    if fn.size_factors is not None and moved is not None and moved[1][2:] != tuple(fn.out_sizes):
        # sizes from a scale factor (recompute_scale_factor) follow a dynamic size:
        # floor(size * factor) in float64, as PyTorch computes them
        spatial = w.add("Cast", [w.slice(shape, [2], [_INT64_MAX], [0], [1], "spatial")], "spatial_double",
                        to=TensorProto.DOUBLE)
        scaled = w.add("Mul", [spatial, w.constant(np.asarray(fn.size_factors, np.float64), "factors")], "scaled")
        out_sizes = w.add("Cast", [w.add("Floor", [scaled], "floor")], "out_size", to=TensorProto.INT64)
    sizes = w.add("Concat", [n_c, out_sizes], "sizes", axis=0)
    return w.add("Resize", [xs[0], roi, no_scales, sizes], **attrs)


EMITTERS = {
    "ReshapeOp": _reshape,
    "PermuteOp": _transpose,
    "GetItemOp": _getitem,
    "SetItemOp": _setitem,
    "PadOp": _pad,
    "ConcatOp": _concat,
    "StackOp": _stack,
    "CloneOp": simple("Identity"),
    "InterpolateOp": _interpolate,
}
