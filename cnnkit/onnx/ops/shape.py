"""Shapes and plumbing: Reshape, Flatten, Transpose, Slice, Pad, Concat, Expand, Identity, and
the shape-computing nodes exporters emit around them (Shape, Gather, GatherND, Unsqueeze, Squeeze,
Constant, ConstantOfShape, Cast).

Values that carry data (float tensors) go through ``cnnkit.functional`` so gradients flow;
shapes and indices are int64 arrays computed with NumPy.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ... import functional as F
from ...functional.shape import PadOp
from ...tensor import Tensor
from . import TRANSLATORS, Node

__all__ = ["tensor_dtype", "constant_value"]

# ONNX element types with no NumPy dtype of their own (they need ml_dtypes and their own
# rounding rules): a cast to or from them is refused.
_FOREIGN_TYPES = {
    getattr(TensorProto, name)
    for name in (
        "STRING", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
        "FLOAT8E8M0", "UINT4", "INT4", "FLOAT4E2M1", "UINT2", "INT2", "COMPLEX64", "COMPLEX128",
    )
    if hasattr(TensorProto, name)
}


def tensor_dtype(node: Node, elem_type: int) -> np.dtype:
    """The NumPy dtype of an ONNX element type; refuse the types cnnkit does not hold."""
    if elem_type in _FOREIGN_TYPES:
        raise node.unsupported(
            f"element type {TensorProto.DataType.Name(elem_type)}: cnnkit holds NumPy's own "
            "bool, integer and float16/32/64 types only"
        )
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _array(node: Node, proto) -> np.ndarray:
    tensor_dtype(node, proto.data_type)
    return numpy_helper.to_array(proto)


def constant_value(node: Node) -> np.ndarray:
    """The value of a Constant node (any of its attribute forms)."""
    a = node.attrs
    if "value" in a:
        return _array(node, a["value"])
    if "sparse_value" in a:
        sparse = a["sparse_value"]
        values, indices = _array(node, sparse.values), _array(node, sparse.indices)
        dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
        flat = indices if indices.ndim == 1 else np.ravel_multi_index(indices.T, dense.shape)
        dense.reshape(-1)[flat] = values
        return dense
    if "value_float" in a:
        return np.array(a["value_float"], dtype=np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], dtype=np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], dtype=np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], dtype=np.int64)
    raise node.unsupported(f"a Constant with attributes {sorted(a)}: string constants are not supported")


def _ints(t: Tensor | None) -> list[int]:
    return [] if t is None else t.data.astype(np.int64).reshape(-1).tolist()


# --------------------------------------------------------------------------- shape computing
def shape(node: Node) -> Tensor:
    dims = node.input(0).shape
    if node.opset < 15:
        return Tensor(np.array(dims, dtype=np.int64))
    n = len(dims)
    start, end = int(node.attr("start", 0)), node.attr("end")
    start = min(max(start + n if start < 0 else start, 0), n)
    end = n if end is None else int(end)
    end = min(max(end + n if end < 0 else end, 0), n)
    return Tensor(np.array(dims[start:end], dtype=np.int64))


def gather(node: Node) -> Tensor:
    x, indices = node.input(0), node.input(1).data.astype(np.int64)
    axis = int(node.attr("axis", 0)) % x.ndim
    n = x.shape[axis]
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise node.unsupported(f"indices outside [-{n}, {n - 1}] for axis {axis} of shape {x.shape}")
    indices = np.where(indices < 0, indices + n, indices)
    return F.getitem(x, (slice(None),) * axis + (indices,))


def gather_nd(node: Node) -> Tensor:
    """data[indices[..., 0], ..., indices[..., k - 1]] within each of the first b (batch_dims)
    dimensions: shape indices.shape[:-1] + data.shape[b + k:]."""
    x, indices = node.input(0), node.input(1).data.astype(np.int64)
    b, k = int(node.attr("batch_dims", 0)), indices.shape[-1]
    if b + k > x.ndim or x.shape[:b] != indices.shape[:b]:
        raise node.unsupported(
            f"indices of shape {indices.shape} (batch_dims {b}) for data of shape {x.shape}")
    bounds = np.array(x.shape[b:b + k])
    if indices.size and ((indices < -bounds).any() or (indices >= bounds).any()):
        raise node.unsupported(f"indices outside the data's shape {x.shape}")
    indices = np.where(indices < 0, indices + bounds, indices)
    rank = indices.ndim - 1
    # The batch dimensions pick themselves: arange(n) along their own axis, broadcast with the rest.
    batch = tuple(np.arange(n).reshape((1,) * j + (n,) + (1,) * (rank - j - 1))
                  for j, n in enumerate(x.shape[:b]))
    return F.getitem(x, batch + tuple(indices[..., i] for i in range(k)))


def _axes(node: Node) -> list[int]:
    return list(node.attr("axes", [])) if node.opset < 13 else _ints(node.input(1))


def unsqueeze(node: Node) -> Tensor:
    x, axes = node.input(0), _axes(node)
    rank = x.ndim + len(axes)
    shape_ = list(x.shape)
    for axis in sorted(a % rank for a in axes):
        shape_.insert(axis, 1)
    return F.reshape(x, shape_)


def squeeze(node: Node) -> Tensor:
    x = node.input(0)
    given = node.attr("axes") if node.opset < 13 else node.input(1)
    if given is None:  # no axes: every axis of size 1
        axes = {i for i, n in enumerate(x.shape) if n == 1}
    else:
        axes = {a % x.ndim for a in _axes(node)}
    if any(x.shape[a] != 1 for a in axes):
        raise node.unsupported(f"axes {sorted(axes)} of shape {x.shape} are not all of size 1")
    return F.reshape(x, [n for i, n in enumerate(x.shape) if i not in axes])


def concat(node: Node) -> Tensor:
    tensors = [t for t in node.inputs if t is not None]
    axis = int(node.attr("axis"))
    return F.cat(tensors, axis % tensors[0].ndim)


def constant(node: Node) -> Tensor:
    return Tensor(constant_value(node))


def constant_of_shape(node: Node) -> Tensor:
    value = node.attr("value")
    fill = _array(node, value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    return Tensor(np.full(tuple(_ints(node.input(0))), fill[0], dtype=fill.dtype))


def cast(node: Node) -> Tensor:
    x = node.input(0)
    dtype = tensor_dtype(node, int(node.attr("to")))
    if x.dtype.kind not in "biuf" or x.dtype.isbuiltin != 1:  # ml_dtypes (bfloat16, float8) are not builtin
        raise node.unsupported(
            f"a cast from {x.dtype}: cnnkit holds NumPy's own bool, integer and float16/32/64 types only"
        )
    if x.dtype.kind == "f" and dtype.kind == "f":
        return F.cast(x, dtype)
    return Tensor(x.data.astype(dtype))  # to or from integers: no gradient to carry


# --------------------------------------------------------------------------- data movement
def reshape(node: Node) -> Tensor:
    x, target = node.input(0), _ints(node.input(1))
    allow_zero = node.opset >= 14 and bool(node.attr("allowzero", 0))
    if not allow_zero:  # 0 copies the input's dimension at that position
        target = [x.shape[i] if n == 0 and i < x.ndim else n for i, n in enumerate(target)]
    return F.reshape(x, target)


def expand(node: Node) -> Tensor:
    """Broadcast the input to ``shape`` (both ways: a 1 in ``shape`` keeps the input's size)."""
    x, shape_ = node.input(0), tuple(_ints(node.input(1)))
    try:
        target = np.broadcast_shapes(x.shape, shape_)
    except ValueError:
        raise node.unsupported(f"shape {shape_} does not broadcast with the input's {x.shape}") from None
    if target == x.shape:
        return x
    if x.dtype.kind != "f":  # shapes, indices, masks: no gradient to carry
        return Tensor(np.broadcast_to(x.data, target).copy())
    # x * 1 is x exactly (-0.0, NaN and infinities included); its gradient sums over the copies.
    return F.mul(x, Tensor(np.ones(target, dtype=x.dtype)))


def flatten(node: Node) -> Tensor:
    x = node.input(0)
    axis = int(node.attr("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    return F.reshape(x, (rows, -1) if x.size else (rows, int(np.prod(x.shape[axis:], dtype=np.int64))))


def transpose(node: Node) -> Tensor:
    x = node.input(0)
    perm = node.attr("perm")
    return F.permute(x, tuple(perm) if perm is not None else tuple(reversed(range(x.ndim))))


def _slice_bounds(start: int, end: int, step: int, n: int) -> slice:
    """ONNX's clamping of one axis' start/end, as a Python slice."""
    start = start + n if start < 0 else start
    end = end + n if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), n), min(max(end, 0), n)
        return slice(start, end, step)
    start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
    return slice(start, None if end < 0 else end, step)  # -1 means "before index 0"


def slice_(node: Node) -> Tensor:
    x = node.input(0)
    if node.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes, steps = node.attr("axes"), None
        axes = list(axes) if axes is not None else None
    else:
        starts, ends = _ints(node.input(1)), _ints(node.input(2))
        axes = _ints(node.input(3)) if node.input(3) is not None else None
        steps = _ints(node.input(4)) if node.input(4) is not None else None
    axes = list(range(len(starts))) if axes is None else [a % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if 0 in steps:
        raise node.unsupported("a step of 0")
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        index[a] = _slice_bounds(s, e, st, x.shape[a])
    return F.getitem(x, tuple(index))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def pad(node: Node) -> Tensor:
    x = node.input(0)
    mode = node.attr("mode", "constant")
    if node.opset < 11:
        pads, value = list(node.attr("pads", node.attr("paddings", []))), float(node.attr("value", 0.0))
        axes = list(range(x.ndim))
    else:
        pads = _ints(node.input(1))
        value = node.input(2).data.reshape(-1)[0].item() if node.input(2) is not None else 0
        axes = _ints(node.input(3)) if node.opset >= 18 and node.input(3) is not None else list(range(x.ndim))
    if mode not in _PAD_MODES or (mode == "wrap" and node.opset < 19):
        raise node.unsupported(f"pad mode {mode!r}")
    if len(pads) != 2 * len(axes):
        raise node.unsupported(f"{len(pads)} pads for {len(axes)} axes")
    begins = dict(zip((a % x.ndim for a in axes), pads[: len(axes)], strict=True))
    ends = dict(zip((a % x.ndim for a in axes), pads[len(axes):], strict=True))
    widths = []  # F.pad's order: (begin, end) of the last axis first
    for axis in reversed(range(x.ndim)):
        widths += [begins.get(axis, 0), ends.get(axis, 0)]
    if mode == "wrap" and any(widths):  # a torus: any width wraps (F.pad, as PyTorch's, wraps at most once)
        return PadOp(tuple(widths), "circular", 0.0)(x)
    return F.pad(x, widths, _PAD_MODES[mode], value)


TRANSLATORS.update({
    "Shape": shape,
    "Gather": gather,
    "GatherND": gather_nd,
    "Unsqueeze": unsqueeze,
    "Squeeze": squeeze,
    "Concat": concat,
    "Constant": constant,
    "ConstantOfShape": constant_of_shape,
    "Cast": cast,
    "Reshape": reshape,
    "Expand": expand,
    "Flatten": flatten,
    "Transpose": transpose,
    "Slice": slice_,
    "Pad": pad,
    "Identity": lambda node: node.input(0),
})
