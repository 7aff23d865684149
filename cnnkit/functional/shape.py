"""Ops that move values around without arithmetic: reshape, permute, index, pad, cat, stack.

``transpose(x, dim0, dim1)`` swaps two dimensions and ``permute(x, dims)`` reorders them
all, as in PyTorch; both are one ``PermuteOp``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..backend import buffers
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor, as_tensor
from .dims import normalize_dim
from .dtypes import cast, result_type

__all__ = [
    "clone", "reshape", "transpose", "permute", "squeeze", "unsqueeze", "getitem", "flatten", "pad",
    "cat", "stack",
]


class ReshapeOp(Function):
    """forward: y = x.reshape(shape);  backward: gx = gy.reshape(x.shape)"""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ShapeError(
                f"reshape cannot turn an input of shape {x.shape} ({x.size} elements) "
                f"into shape {self.shape}"
            ) from None

    def backward(self, gy):
        return gy.reshape(self.x_shape)


class CloneOp(Function):
    """A copy in its own C-ordered memory. forward: y = copy(x);  backward: gx = gy"""

    def forward(self, x):
        return self.xp.array(x, order="C", copy=True)

    def backward(self, gy):
        return gy


class PermuteOp(Function):
    """Reorder the dimensions.

    forward:  y = x.transpose(dims)          y.shape[i] = x.shape[dims[i]]
    backward: gx = gy.transpose(argsort(dims))
    """

    def __init__(self, dims: tuple[int, ...]):
        self.dims = dims

    def forward(self, x):
        return x.transpose(self.dims)

    def backward(self, gy):
        return gy.transpose(np.argsort(self.dims))


class GetItemOp(Function):
    """Indexing and slicing.

    forward:  y = x[index]
    backward: gx = zeros_like(x); gx[index] += gy  (np.add.at for advanced indices, so
              repeated indices accumulate); gx laid out in memory as x (``zeros_like``)
    """

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        self.x_order = buffers.axis_order(x) if isinstance(x, np.ndarray) else None
        return x[self.index]

    def backward(self, gy):
        xp = self.xp
        if self.x_order is None:
            gx = xp.zeros(self.x_shape, dtype=self.x_dtype)
        else:  # x's layout: the gradient joins x's other gradients (ResNet-20's shortcut), adds of one layout
            gx = buffers.empty_ordered(self.x_shape, self.x_dtype, self.x_order)
            gx.fill(0)
        if _is_basic_index(self.index):
            gx[self.index] = gy  # basic indices select each element at most once
        else:
            xp.add.at(gx, self.index, gy)
        return gx


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice)) for i in items)


class PadOp(Function):
    """Pad the last dimensions (PyTorch's ``F.pad`` argument order).

    ``pad = (left, right, top, bottom, ...)`` names the last dimension first; a negative
    width crops. Along each padded axis of size n, output position j copies input index:
      replicate: src(j) = clip(j - lo, 0, n - 1)
      reflect:   src(j) = |j - lo| mirrored at n - 1 (the edge is not repeated)
      circular:  the axis cropped to n' elements first, then src(j) = (j - lo) mod n'
    (PyTorch's index rules, so a crop that empties the axis still copies the edge).
    forward:  constant: y = x cropped, then filled with value;  others: y = x[src].
    backward: constant: gx = gy where x survived the crop, 0 elsewhere;
              others: gx[i] = sum of gy over the positions j with src(j) = i (np.add.at).
    Constant padding of a NumPy array keeps its memory layout (a channel-major map stays
    channel-major: ResNet-20's padded shortcut is added to one), and its gradient keeps gy's.
    """

    _MODES = ("constant", "reflect", "replicate", "circular")

    def __init__(self, pad: Sequence[int], mode: str, value: float):
        self.pad, self.mode, self.value = tuple(pad), mode, value

    def forward(self, x):
        k = len(self.pad) // 2
        if k > x.ndim:
            raise ShapeError(
                f"pad got {k} pairs of widths {self.pad} for an input of shape {x.shape} "
                f"(at most one pair per dimension)"
            )
        self.x_shape = x.shape
        # widths per axis, first axis first
        widths = [(0, 0)] * (x.ndim - k) + [(self.pad[2 * i], self.pad[2 * i + 1]) for i in reversed(range(k))]
        for axis, ((lo, hi), n) in enumerate(zip(widths, x.shape)):
            if n + lo + hi < 0:
                raise ShapeError(
                    f"pad widths {(lo, hi)} crop more than the {n} elements of dimension {axis} "
                    f"(input shape {x.shape})"
                )
        self.widths = widths
        if self.mode == "constant":
            crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))
            pos = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
            if not isinstance(x, np.ndarray):
                return self.xp.pad(x[crop], pos, mode="constant", constant_values=self.value)
            return _pad_constant(x[crop], pos, self.value, buffers.axis_order(x))
        self.sources = {}
        y = x
        for axis, ((lo, hi), n) in enumerate(zip(widths, x.shape)):
            if lo or hi:
                self.sources[axis] = src = _pad_sources(self.mode, lo, hi, n, axis, x.shape)
                y = self.xp.take(y, self.xp.asarray(src), axis=axis)
        return y

    def backward(self, gy):
        xp = self.xp
        if self.mode == "constant":
            if isinstance(gy, np.ndarray):
                gx = buffers.empty_ordered(self.x_shape, gy.dtype, buffers.axis_order(gy))
                if any(lo < 0 or hi < 0 for lo, hi in self.widths):  # cropped: zeros where x was cut
                    gx.fill(0)
            else:
                gx = xp.zeros(self.x_shape, dtype=gy.dtype)
            inner = tuple(
                slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(self.widths, self.x_shape)
            )
            outer = tuple(
                slice(max(lo, 0), max(lo, 0) + max(n - max(-lo, 0) - max(-hi, 0), 0))
                for (lo, hi), n in zip(self.widths, self.x_shape)
            )
            gx[inner] = gy[outer]
            return gx
        g = gy
        for axis, src in reversed(self.sources.items()):
            moved = xp.moveaxis(g, axis, 0)
            acc = xp.zeros((self.x_shape[axis],) + moved.shape[1:], dtype=g.dtype)
            xp.add.at(acc, xp.asarray(src), moved)
            g = xp.moveaxis(acc, 0, axis)
        return g


def _pad_constant(x: np.ndarray, pos, value, order: tuple[int, ...]) -> np.ndarray:
    """``np.pad(x, pos, constant_values=value)`` laid out in memory in ``order`` (x's):
    the border slabs of each axis filled, x copied into the middle."""
    shape = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, pos))
    y = buffers.empty_ordered(shape, x.dtype, order)
    fill = np.asarray(value).astype(x.dtype)  # as np.pad casts constant_values
    for axis, ((lo, hi), n) in enumerate(zip(pos, x.shape)):
        before = (slice(None),) * axis
        if lo:
            y[before + (slice(0, lo),)] = fill
        if hi:
            y[before + (slice(lo + n, None),)] = fill
    y[tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, pos))] = x
    return y


def _pad_sources(mode: str, lo: int, hi: int, n: int, axis: int, shape) -> np.ndarray:
    """The input index each output position of one padded axis copies (host-side ints)."""
    j = np.arange(n + lo + hi) - lo                                  # output j -> unpadded index
    if mode == "replicate":
        if n == 0:
            raise ShapeError(f"pad(mode='replicate') cannot pad the empty dimension {axis} (input shape {shape})")
        return np.clip(j, 0, n - 1)
    if mode == "reflect":
        if max(lo, hi) >= n:
            raise ShapeError(
                f"pad(mode='reflect') needs widths smaller than the dimension, got {(lo, hi)} for "
                f"size {n} of dimension {axis} (input shape {shape})"
            )
        j = np.abs(j)
        return np.where(j > n - 1, 2 * (n - 1) - j, j)
    start, kept = max(-lo, 0), n - max(-lo, 0) - max(-hi, 0)        # circular: crop first
    if n + lo + hi == 0:  # cropped to nothing: an empty axis, as in PyTorch
        return np.zeros(0, dtype=np.intp)
    if kept <= 0:
        raise ShapeError(
            f"pad(mode='circular') has nothing to wrap: widths {(lo, hi)} leave dimension {axis} "
            f"empty (input shape {shape})"
        )
    return start + (np.arange(n + lo + hi) - max(lo, 0)) % kept


class ConcatOp(Function):
    """forward: y = concatenate(xs, axis);  backward: gx_i = gy split at the inputs' sizes"""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs):
        try:
            y = self.xp.concatenate(xs, axis=self.axis)
        except ValueError:
            raise ShapeError(
                f"cat(dim={self.axis}) needs inputs equal in every other dimension, got "
                f"shapes {[x.shape for x in xs]}"
            ) from None
        self.sizes = [x.shape[self.axis] for x in xs]
        return y

    def backward(self, gy):
        splits = np.cumsum(self.sizes)[:-1]
        return tuple(self.xp.split(gy, splits, axis=self.axis))


class StackOp(Function):
    """forward: y = stack(xs, axis);  backward: gx_i = gy.take(i, axis)"""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs):
        if len({x.shape for x in xs}) > 1:
            raise ShapeError(f"stack needs inputs of one shape, got {[x.shape for x in xs]}")
        return self.xp.stack(xs, axis=self.axis)

    def backward(self, gy):
        return tuple(self.xp.moveaxis(gy, self.axis, 0))


def clone(x) -> Tensor:
    """A copy of ``x`` with its own memory, still in the graph (``torch.clone``)."""
    return CloneOp()(as_tensor(x))


def reshape(x, shape: Sequence[int]) -> Tensor:
    return ReshapeOp(tuple(shape))(x)


def transpose(x, dim0: int, dim1: int) -> Tensor:
    """Swap dimensions ``dim0`` and ``dim1`` (torch.transpose); a 0-d tensor is returned as is.

    Raises:
        DimensionError: a dim out of range (an IndexError too).
    """
    x = as_tensor(x)
    a, b = normalize_dim(dim0, x.ndim, "transpose"), normalize_dim(dim1, x.ndim, "transpose")
    if x.ndim == 0:
        return PermuteOp(())(x)
    dims = list(range(x.ndim))
    dims[a], dims[b] = b, a
    return PermuteOp(tuple(dims))(x)


def permute(x, dims: Sequence[int]) -> Tensor:
    """Reorder the dimensions: ``y.shape[i] = x.shape[dims[i]]`` (torch.permute).

    Raises:
        ShapeError: ``dims`` is not a permutation of x's dimensions.
    """
    x = as_tensor(x)
    dims = tuple(dims)
    if len(dims) != x.ndim:
        raise ShapeError(
            f"permute expects {x.ndim} dims for an input of shape {x.shape}, got dims={dims}"
        )
    axes = tuple(normalize_dim(d, x.ndim, "permute") for d in dims)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"permute got a dimension twice: dims={dims} for input shape {x.shape}")
    return PermuteOp(axes if x.ndim else ())(x)


def squeeze(x, dim=None) -> Tensor:
    """Drop dimensions of size 1: all of them, or those among ``dim`` (an int or a tuple).

    A named dimension whose size is not 1 is kept, as in PyTorch.
    """
    x = as_tensor(x)
    if dim is None:
        axes = {i for i, n in enumerate(x.shape) if n == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = {normalize_dim(d, x.ndim, "squeeze") for d in dims} if x.ndim else set()
        axes = {a for a in axes if x.shape[a] == 1}
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def unsqueeze(x, dim: int) -> Tensor:
    """Insert a dimension of size 1 at ``dim`` (in ``[-ndim - 1, ndim]``), as torch.unsqueeze."""
    x = as_tensor(x)
    axis = normalize_dim(dim, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def getitem(x, index) -> Tensor:
    """``x[index]`` with PyTorch's rules, which differ from NumPy's in one place.

    PyTorch applies integer entries (Python ints, 0-d integer tensors) first, as plain
    selections, and only then the advanced ones (integer arrays, lists, masks); NumPy
    counts integers among the advanced indices. The two orders disagree when an integer
    and an advanced index are separated by a slice: ``x[0, :, [0, 2]]`` on (2, 3, 4) is
    (3, 2) in PyTorch and (2, 3) in NumPy. Such an index runs as two GetItemOps.
    """
    index = _unwrap_index(index)
    split = _integers_first(index)
    if split is not None:
        x = GetItemOp(split[0])(x)
        index = split[1]
    return GetItemOp(index)(x)


def _unwrap_index(index):
    """An index with its Tensors (masks, index tensors) replaced by their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def _is_integer(item) -> bool:
    """A Python/NumPy integer or a 0-d integer array (not a bool): a plain selection in PyTorch."""
    if isinstance(item, (bool, np.bool_)):
        return False
    if isinstance(item, (int, np.integer)):
        return True
    return getattr(item, "ndim", None) == 0 and getattr(item, "dtype", np.dtype(bool)).kind in "iu"


def _integers_first(index):
    """(the integer selections, the rest) when ``index`` mixes integers with advanced entries, else None."""
    if not isinstance(index, tuple) or not any(_is_integer(i) for i in index) or _is_basic_index(
        tuple(i for i in index if not _is_integer(i))
    ):
        return None
    first, rest = [], []
    for item in index:
        if _is_integer(item):
            first.append(int(item))
        elif item is None or isinstance(item, (bool, np.bool_)):
            rest.append(item)  # adds a dimension; consumes none
        elif item is Ellipsis:
            first.append(item)
            rest.append(item)
        else:
            consumed = 1
            if not isinstance(item, slice):  # an array or a list: a mask consumes its ndim
                array = np.asarray(item) if isinstance(item, (list, tuple)) else item
                consumed = array.ndim if array.dtype.kind == "b" else 1
            first += [slice(None)] * consumed
            rest.append(item)
    return tuple(first), tuple(rest)


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dimensions ``start_dim..end_dim`` into one, as torch.flatten (default: all).

    ``nn.Flatten`` keeps the batch axis (its start_dim is 1); call ``flatten(x, 1)`` for that.
    A 0-d tensor becomes shape (1,).

    Shape: (N, C, H, W) -> (N*C*H*W,) with the defaults; (N, C*H*W) with start_dim=1.

    Raises:
        DimensionError: a dim out of range. ShapeError: start_dim after end_dim.
    """
    x = as_tensor(x)
    shape = x.shape
    start = normalize_dim(start_dim, len(shape), "flatten")
    end = normalize_dim(end_dim, len(shape), "flatten")
    if start > end:
        raise ShapeError(
            f"flatten expects start_dim <= end_dim, got start_dim={start_dim} and "
            f"end_dim={end_dim} for input shape {shape}"
        )
    if not shape:
        return reshape(x, (1,))
    merged = 1
    for n in shape[start : end + 1]:
        merged *= n
    return reshape(x, shape[:start] + (merged,) + shape[end + 1 :])


def pad(input, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad (or, with negative widths, crop) the last ``len(pad) // 2`` dimensions, as torch's F.pad.

    Args:
        pad: (left, right, top, bottom, ...) ints, the last dimension first.
        mode: "constant", "reflect", "replicate" or "circular"; the non-constant modes pad
            any number of trailing dimensions (PyTorch limits them to 1-3 on 2-D to 5-D inputs).
        value: the fill of mode "constant" (default 0).

    Raises:
        ValueError: an odd number of widths, a width that is not an int, an unknown mode, or
            a fill value with a mode other than "constant".
        ShapeError: more pairs than dimensions, a crop larger than its dimension, a reflect
            width not smaller than its dimension, a circular width larger than its dimension,
            or an empty dimension to replicate or wrap.
    """
    pad = tuple(pad)
    if len(pad) % 2:
        raise ValueError(f"pad expects an even number of widths, got {pad}")
    if not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in pad):
        raise ValueError(f"pad expects integer widths, got {pad}")
    if mode not in PadOp._MODES:
        raise ValueError(f"pad mode must be one of {PadOp._MODES}, got {mode!r}")
    if mode != "constant" and value not in (None, 0):
        raise ValueError(f"pad(mode={mode!r}) takes no fill value, got value={value}")
    input = as_tensor(input)
    if mode == "circular":
        _check_wraps_once(pad, input.shape)
    if not any(pad):
        return PermuteOp(tuple(range(input.ndim)))(input) if input.requires_grad else Tensor._wrap(input.data.copy())
    return PadOp(tuple(int(p) for p in pad), mode, 0.0 if value is None else value)(input)


def _check_wraps_once(pad: Sequence[int], shape: tuple[int, ...]) -> None:
    """Refuse a circular width larger than its dimension, as PyTorch ("wrapping around more than once").

    ``PadOp`` itself wraps any number of times (ONNX's "wrap" mode is a torus, and a crop on
    one side may leave fewer elements than the other side's width).
    """
    for i in range(min(len(pad) // 2, len(shape))):
        lo, hi = pad[2 * i], pad[2 * i + 1]
        axis = len(shape) - 1 - i
        if max(lo, hi) > shape[axis]:
            raise ShapeError(
                f"pad(mode='circular') wraps around at most once: widths {(lo, hi)} exceed the "
                f"{shape[axis]} elements of dimension {axis} (input shape {shape})"
            )


def cat(tensors: Sequence, dim: int = 0) -> Tensor:
    """Concatenate along an existing dimension (torch.cat); dtypes promote as in PyTorch.

    Raises:
        ValueError: no tensors. ShapeError: 0-d tensors, or shapes that differ off ``dim``.
        DimensionError: ``dim`` out of range.
    """
    tensors = _same_dtype("cat", tensors)
    if any(t.ndim == 0 for t in tensors):
        raise ShapeError("cat cannot concatenate 0-d tensors (they have no dimension to join); use stack")
    # PyTorch's legacy rule: a 1-D empty tensor (shape (0,)) joins anything, by being skipped.
    joined = [t for t in tensors if t.shape != (0,)] or tensors[:1]
    return ConcatOp(normalize_dim(dim, joined[0].ndim, "cat"))(*joined)


def stack(tensors: Sequence, dim: int = 0) -> Tensor:
    """Stack along a new dimension (torch.stack); dtypes promote as in PyTorch.

    Raises:
        ValueError: no tensors. ShapeError: shapes that differ. DimensionError: ``dim``
            outside [-ndim - 1, ndim].
    """
    tensors = _same_dtype("stack", tensors)
    return StackOp(normalize_dim(dim, tensors[0].ndim + 1, "stack"))(*tensors)


def _same_dtype(op: str, tensors: Sequence) -> list[Tensor]:
    """The inputs as tensors of one dtype (PyTorch's result_type), differentiably cast."""
    if len(tensors) == 0:
        raise ValueError(f"{op} expects a non-empty sequence of tensors")
    tensors = [as_tensor(t) for t in tensors]
    dtype = result_type(*(t.data for t in tensors))
    return [t if t.dtype == dtype else cast(t, dtype) for t in tensors]
