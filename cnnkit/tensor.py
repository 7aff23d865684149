"""Tensor: an array, its gradient, and the op that created it.

A ``Tensor`` wraps a NumPy array (``.data``). When it was produced by an op while grad
mode was on and some input required grad, ``.creator`` is that op (a ``Function``),
which holds its input tensors: following creators from a tensor walks the
define-by-run graph backwards. ``backward()`` runs ``backward.run_backward``: it orders
that graph without recursion, calls each op's ``backward`` once, sums the gradients of
tensors used more than once, and frees the graph unless ``retain_graph=True``. The
conversion of Python data (``as_array``) and ``Size`` are in ``arrays.py``.

The one import cycle of the package is here, on purpose: ``Tensor``'s operators and
methods (``+``, ``@``, ``x[i]``, ``x.sum()``, ``x.transpose()``, ``x > 0``) call the ops of
``functional/math.py``, ``reduction.py``, ``shape.py``, ``activation.py`` (``x.softmax(1)``),
``logic.py`` (comparisons: bool tensors without gradient, as in PyTorch) and ``remainder.py``
(``x % y``), and those ops
are ``Function`` subclasses or plain functions that take and make Tensors. Both halves are
the autograd core seen from two sides; splitting them would mean either operators that know
no ops (no ``x + y``) or attaching methods to ``Tensor`` from elsewhere (a class no one
could read in one place). So this module imports the six op modules at its end, after
``Tensor`` exists; they import ``Tensor`` from here at their top.
"""

from __future__ import annotations

import numbers
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .arrays import Size, as_array
from .backend import as_numpy, get_array_module
from .backward import run_backward
from .errors import ShapeError

if TYPE_CHECKING:
    from .function import Function

__all__ = ["Tensor", "Size", "tensor", "as_tensor", "as_array"]

_FLOAT_KINDS = "f"


_DEVICES = ("cpu", "cuda", "mps", "meta", "xla")


def to_arguments(owner: str, args: tuple, dtype=None, device=None):
    """The dtype asked for by PyTorch's ``to`` forms (or None): ``to(dtype)``, ``to("cpu")``,
    ``to("cpu", dtype)``, ``to(tensor)`` (its dtype), ``dtype=`` / ``device=``.
    ``Tensor.to`` and ``Module.to`` read their arguments with it.

    Raises:
        ValueError: a device other than the CPU (cnnkit's arrays live in memory), naming ``owner``.
    """
    for arg in args:
        if isinstance(arg, Tensor):
            dtype = arg.dtype
        elif isinstance(arg, str) and arg.split(":")[0] in _DEVICES:
            device = arg
        else:
            dtype = arg
    if device is not None and str(device).split(":")[0] != "cpu":
        raise ValueError(f"{owner}.to supports device 'cpu' only, got {device!r}")
    return dtype

class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    Args:
        data: an array, a nested list or a scalar. NumPy arrays keep their dtype;
            Python floats become the default dtype (float32 unless changed).
        requires_grad: record ops on this tensor so ``backward()`` fills ``.grad``.
        dtype: optional dtype to convert ``data`` to.

    Attributes:
        data: the NumPy array.
        grad: the gradient array accumulated by ``backward()``, or None.
        creator: the ``Function`` that produced this tensor (None for leaves).
    """

    # Make ndarray <op> Tensor dispatch to Tensor's reflected operators.
    __array_priority__ = 1000

    __slots__ = ("data", "grad", "requires_grad", "creator", "name", "_retain_grad", "__weakref__")

    def __init__(self, data: Any, requires_grad: bool = False, dtype=None, name: str | None = None):
        array = as_array(data, dtype)
        if requires_grad and array.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(
                f"Tensor(requires_grad=True) needs a floating dtype, got {array.dtype}"
            )
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator: Function | None = None
        self.name = name
        self._retain_grad = False

    @classmethod
    def _wrap(cls, array) -> Tensor:
        """Wrap an op's output array without conversion (internal fast path)."""
        t = cls.__new__(cls)
        t.data = array
        t.grad = None
        t.requires_grad = False
        t.creator = None
        t.name = None
        t._retain_grad = False
        return t

    # ----------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> Size:
        """The number of elements, which is also PyTorch's ``size()`` method.

        ``x.size`` is an int as in NumPy (``x.size == x.numel()``); called, it answers as
        PyTorch's: ``x.size()`` is the shape, ``x.size(dim)`` one dimension's length.
        """
        return Size(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def dim(self) -> int:
        """The number of dimensions (PyTorch's name for ``ndim``)."""
        return self.data.ndim

    def numel(self) -> int:
        """The number of elements (PyTorch's name; ``x.size`` is the same int)."""
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded op (user inputs, parameters)."""
        return self.creator is None

    @property
    def grad_fn(self) -> Function | None:
        """PyTorch's name for ``creator``."""
        return self.creator

    @property
    def T(self) -> Tensor:
        """The dimensions reversed; for a matrix, its transpose.

        As in PyTorch, using ``.T`` on a tensor that is not 1-D or 2-D warns (a 0-d tensor is
        returned as is): use ``.mT`` for batches of matrices, ``.permute`` otherwise.
        """
        if self.ndim == 0:
            warnings.warn(
                "Tensor.T is deprecated on 0-D tensors (as in PyTorch); it returns the tensor "
                "unchanged", UserWarning, stacklevel=2,
            )
        elif self.ndim > 2:
            warnings.warn(
                f"Tensor.T on a {self.ndim}-D tensor reverses all its dimensions; PyTorch deprecates "
                "this for tensors of other than 2 dimensions: use x.mT to transpose a batch of "
                "matrices or x.permute(*reversed(range(x.ndim))) to reverse the dimensions",
                UserWarning, stacklevel=2,
            )
        return _shape.permute(self, tuple(reversed(range(self.ndim))))

    @property
    def mT(self) -> Tensor:
        """The last two dimensions swapped: a batch of matrices, each transposed.

        Raises:
            ShapeError: the tensor has fewer than 2 dimensions.
        """
        if self.ndim < 2:
            raise ShapeError(
                f"Tensor.mT needs a matrix or a batch of matrices, got a {self.ndim}-D tensor "
                f"(shape {self.shape})"
            )
        return _shape.transpose(self, -2, -1)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(as_numpy(self.data), separator=", ", prefix="tensor(")
        extra = ""
        if self.creator is not None:
            extra = f", grad_fn={type(self.creator).__name__}"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        return f"tensor({body}, dtype={self.dtype}{extra})"

    # ----------------------------------------------------------------- conversion
    def numpy(self, force: bool = False) -> np.ndarray:
        """Return the data as a NumPy array (sharing memory on the CPU), as torch's ``numpy()``.

        Args:
            force: also for a tensor that requires grad (the array is then cut from the graph).

        Raises:
            RuntimeError: the tensor requires grad and ``force`` is False, as in PyTorch: the
                array would escape the graph silently; use ``x.detach().numpy()``.
        """
        if self.requires_grad and not force:
            raise RuntimeError(
                "numpy() on a tensor that requires grad: use tensor.detach().numpy() "
                "(or numpy(force=True))"
            )
        return as_numpy(self.data)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """``np.asarray(x)``: the data (refused for a tensor that requires grad, as PyTorch)."""
        array = self.numpy()
        if dtype is not None and array.dtype != dtype:
            return array.astype(dtype)
        return array.copy() if copy else array

    def item(self) -> float | int | bool:
        """Return the value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ShapeError(
                f"item() needs a tensor with one element, got shape {self.shape} "
                f"({self.data.size} elements)"
            )
        return self.data.reshape(-1)[0].item()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        """The truth of a one-element tensor (``if x > 0:``); PyTorch's wording otherwise.

        Raises:
            ValueError: the tensor has no element or several (``if (a == b).all():`` decides).
        """
        if self.data.size != 1:
            count = "no values" if self.data.size == 0 else "more than one value"
            raise ValueError(
                f"Boolean value of Tensor with {count} is ambiguous (shape {self.shape}): "
                "reduce it first with .any() or .all()"
            )
        return bool(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iub" or self.data.size != 1:
            raise TypeError(f"only one-element integer tensors can be used as an index, got {self!r}")
        return int(self.item())

    def tolist(self):
        """The data as (nested) Python lists of numbers; a 0-d tensor gives a number."""
        return as_numpy(self.data).tolist()

    def detach(self) -> Tensor:
        """Return a tensor sharing the data, cut from the graph (it does not require grad)."""
        return Tensor._wrap(self.data)

    def to(self, *args, dtype=None, device=None, copy: bool = False) -> Tensor:
        """Convert to a dtype (differentiably between floating dtypes), as torch's ``to``.

        Accepts ``x.to(np.float64)``, ``x.to("float64")``, ``x.to(other_tensor)`` (its dtype),
        ``x.to("cpu")`` and ``x.to(device="cpu", dtype=...)``. Returns ``self`` when nothing
        changes, unless ``copy``. Converting to an integer or bool dtype gives a tensor
        without gradient, as in PyTorch.

        Raises:
            ValueError: a device other than the CPU (cnnkit keeps tensors where their array is).
        """
        dtype = to_arguments("Tensor", args, dtype, device)
        if dtype is None or np.dtype(dtype) == self.dtype:
            return Tensor._wrap(self.data.copy()) if copy else self
        return _math.cast(self, dtype)

    def float(self) -> Tensor:
        """Convert to float32 (differentiable), as torch's ``float()``."""
        return self.to(np.float32)

    def double(self) -> Tensor:
        """Convert to float64 (differentiable), as torch's ``double()``."""
        return self.to(np.float64)

    def half(self) -> Tensor:
        """PyTorch's cast to float16: refused, as ``Module.half()``, since cnnkit's ops compute in
        float32 and float64 only.

        Raises:
            NotImplementedError: always; ``float()`` and ``double()`` are the casts to compute in.
        """
        raise NotImplementedError(
            "Tensor.half(): cnnkit's ops compute in float32 and float64 only (no float16 kernels or mixed "
            "precision); use float() or double() (x.to(numpy.float16) makes a float16 copy to store)"
        )

    def long(self) -> Tensor:
        """Convert to int64 (no gradient), as torch's ``long()``."""
        return self.to(np.int64)

    def int(self) -> Tensor:
        """Convert to int32 (no gradient; floats are truncated), as torch's ``int()``."""
        return self.to(np.int32)

    def bool(self) -> Tensor:
        """Convert to bool (nonzero is True; no gradient), as torch's ``bool()``."""
        return self.to(np.bool_)

    def cpu(self) -> Tensor:
        """Return ``self`` when the data is a NumPy array already (it always is without CuPy).

        Raises:
            ValueError: the data is a device array: cnnkit does not move tensors across devices.
        """
        if get_array_module(self.data) is np:
            return self
        raise ValueError("Tensor.cpu(): moving a device (CuPy) tensor to the host is not supported")

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(f"requires_grad needs a floating dtype, got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after ``backward()``."""
        self._retain_grad = True

    def zero_grad(self) -> None:
        self.grad = None

    # ----------------------------------------------------------------- autograd
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        Args:
            grad: the upstream gradient, same shape as this tensor. May be omitted for
                a one-element tensor (a loss), where it defaults to 1.
            retain_graph: keep the ops' saved arrays so backward can run again.

        Raises:
            RuntimeError: this tensor does not require grad, or the graph was freed.
            ShapeError: ``grad`` does not have this tensor's shape.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() called on a tensor that does not require grad "
                "(no input had requires_grad=True, or it was made under no_grad())"
            )
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element tensor, got shape "
                    f"{self.shape}; pass grad= of that shape"
                )
            grad = xp.ones(self.data.shape, self.data.dtype)   # (ones_like's layout search: one element)
        else:
            grad = xp.array(as_array(grad), dtype=self.dtype)  # a copy: the user keeps theirs
            if grad.shape != self.shape:
                raise ShapeError(
                    f"backward() expects grad of shape {self.shape}, got {grad.shape}"
                )
        run_backward(self, grad, retain_graph)

    # ----------------------------------------------------------------- operators
    def __add__(self, other):
        return _math.add(self, other)

    def __radd__(self, other):
        return _math.add(other, self)

    def __sub__(self, other):
        return _math.sub(self, other)

    def __rsub__(self, other):
        return _math.sub(other, self)

    def __mul__(self, other):
        return _math.mul(self, other)

    def __rmul__(self, other):
        return _math.mul(other, self)

    def __truediv__(self, other):
        return _math.div(self, other)

    def __rtruediv__(self, other):
        return _math.div(other, self)

    def __matmul__(self, other):
        return _math.matmul(self, other)

    def __rmatmul__(self, other):
        return _math.matmul(other, self)

    def __floordiv__(self, other):  # torch.floor_divide: div(rounding_mode="floor")
        return _math.div(self, other, rounding_mode="floor")

    def __rfloordiv__(self, other):
        return _math.div(other, self, rounding_mode="floor")

    def __mod__(self, other):  # torch.remainder: the sign of the divisor, as Python's %
        return _remainder(self, other)

    def __rmod__(self, other):
        return _remainder(other, self)

    def __pow__(self, exponent):
        return _math.pow(self, exponent)

    def __rpow__(self, base):
        return _math.pow(base, self)

    def __neg__(self):
        return _math.neg(self)

    def __pos__(self):
        return self

    # &, |, ^ and ~: bool and integer tensors (logical on bools), no gradient, as in PyTorch.
    def __and__(self, other):
        return _logic.bitwise_and(self, other)

    def __rand__(self, other):
        return _logic.bitwise_and(other, self)

    def __or__(self, other):
        return _logic.bitwise_or(self, other)

    def __ror__(self, other):
        return _logic.bitwise_or(other, self)

    def __xor__(self, other):
        return _logic.bitwise_xor(self, other)

    def __rxor__(self, other):
        return _logic.bitwise_xor(other, self)

    def __invert__(self):
        return _logic.bitwise_not(self)

    def __getitem__(self, index):
        return _shape.getitem(self, index)

    def __setitem__(self, index, value) -> None:
        """``x[index] = value`` in place, with PyTorch's autograd rules (``functional/setitem.py``)."""
        _setitem.setitem(self, index, value)

    # Comparisons give bool tensors without gradient, as in PyTorch. An operand that is not a
    # number, an array or a tensor (None, a string) is not compared: == is then False, != True.
    def __eq__(self, other):  # type: ignore[override]
        return _logic.eq(self, other) if _comparable(other) else NotImplemented

    def __ne__(self, other):  # type: ignore[override]
        return _logic.ne(self, other) if _comparable(other) else NotImplemented

    def __lt__(self, other):
        return _logic.lt(self, other) if _comparable(other) else NotImplemented

    def __le__(self, other):
        return _logic.le(self, other) if _comparable(other) else NotImplemented

    def __gt__(self, other):
        return _logic.gt(self, other) if _comparable(other) else NotImplemented

    def __ge__(self, other):
        return _logic.ge(self, other) if _comparable(other) else NotImplemented

    # Tensors stay hashable by identity (dict keys, sets), as in PyTorch.
    __hash__ = object.__hash__

    # ----------------------------------------------------------------- shape methods
    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _shape.reshape(self, shape)

    def view(self, *shape) -> Tensor:
        return self.reshape(*shape)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Swap two dimensions, as torch's ``transpose`` (``permute`` reorders them all)."""
        return _shape.transpose(self, dim0, dim1)

    def t(self) -> Tensor:
        """Transpose a matrix; a 0-d or 1-D tensor is returned as is (torch's ``t()``)."""
        if self.ndim > 2:
            raise ShapeError(f"t() expects a tensor with at most 2 dimensions, got shape {self.shape}")
        return _shape.permute(self, tuple(reversed(range(self.ndim))))

    def permute(self, *dims) -> Tensor:
        """Reorder the dimensions: ``x.permute(2, 0, 1)`` or ``x.permute((2, 0, 1))``."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return _shape.permute(self, dims)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _shape.flatten(self, start_dim, end_dim)

    def squeeze(self, dim=None) -> Tensor:
        return _shape.squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return _shape.unsqueeze(self, dim)

    # ----------------------------------------------------------------- reductions
    # dim: an int, a tuple or None (all); axis / keepdims are accepted too, as in PyTorch.
    def sum(self, dim=None, keepdim: bool = False, *, dtype=None, axis=None, keepdims=None) -> Tensor:
        return _reduction.sum(self, dim, keepdim, dtype=dtype, axis=axis, keepdims=keepdims)

    def mean(self, dim=None, keepdim: bool = False, *, dtype=None, axis=None, keepdims=None) -> Tensor:
        return _reduction.mean(self, dim, keepdim, dtype=dtype, axis=axis, keepdims=keepdims)

    def var(self, dim=None, unbiased=None, keepdim: bool = False, *, correction=None, axis=None,
            keepdims=None) -> Tensor:
        """Variance (Bessel-corrected unless ``correction=0`` / ``unbiased=False``), as torch's."""
        return _reduction.var(self, dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims)

    def std(self, dim=None, unbiased=None, keepdim: bool = False, *, correction=None, axis=None,
            keepdims=None) -> Tensor:
        """Standard deviation, with ``var``'s arguments, as torch's."""
        return _reduction.std(self, dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims)

    def all(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
        """Whether every element (over ``dim``) is nonzero: a bool tensor, as torch's."""
        return _reduction.all(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def any(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
        """Whether some element (over ``dim``) is nonzero: a bool tensor, as torch's."""
        return _reduction.any(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def amax(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
        return _reduction.amax(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def amin(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
        return _reduction.amin(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def max(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):
        """``x.max()``: a 0-d tensor; ``x.max(dim)``: ``(values, indices)``; ``x.max(other)``:
        the elementwise maximum, as in PyTorch."""
        return _reduction.max(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def min(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):
        """``x.min()``: a 0-d tensor; ``x.min(dim)``: ``(values, indices)``; ``x.min(other)``:
        the elementwise minimum, as in PyTorch."""
        return _reduction.min(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def maximum(self, other) -> Tensor:
        return _logic.maximum(self, other)

    def minimum(self, other) -> Tensor:
        return _logic.minimum(self, other)

    def argmax(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
        """Position of the largest element (int64 tensor; over the flattened tensor if dim is None)."""
        return _reduction.argmax(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def argmin(self, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
        return _reduction.argmin(self, dim, keepdim, axis=axis, keepdims=keepdims)

    # ----------------------------------------------------------------- elementwise
    def exp(self) -> Tensor:
        return _math.exp(self)

    def log(self) -> Tensor:
        return _math.log(self)

    def sqrt(self) -> Tensor:
        return _math.sqrt(self)

    def abs(self) -> Tensor:
        return _math.abs(self)

    def sign(self) -> Tensor:
        return _math.sign(self)

    def astype(self, dtype) -> Tensor:
        """NumPy's spelling of ``to(dtype)``."""
        return _math.cast(self, dtype)

    # ----------------------------------------------------------------- PyTorch's method spellings
    def add(self, other, *, alpha=1) -> Tensor:
        """self + alpha * other, as ``torch.Tensor.add``."""
        return _math.add(self, other, alpha=alpha)

    def sub(self, other, *, alpha=1) -> Tensor:
        """self - alpha * other, as ``torch.Tensor.sub``."""
        return _math.sub(self, other, alpha=alpha)

    def mul(self, other) -> Tensor:
        return _math.mul(self, other)

    def div(self, other, *, rounding_mode=None) -> Tensor:
        """Division as ``torch.Tensor.div`` (``rounding_mode`` None, "trunc" or "floor")."""
        return _math.div(self, other, rounding_mode=rounding_mode)

    def pow(self, exponent) -> Tensor:
        return _math.pow(self, exponent)

    def matmul(self, other) -> Tensor:
        return _math.matmul(self, other)

    def neg(self) -> Tensor:
        return _math.neg(self)

    def eq(self, other) -> Tensor:
        """``self == other`` (a bool tensor), as torch's ``eq``; ``ne lt le gt ge`` likewise."""
        return _logic.eq(self, other)

    def ne(self, other) -> Tensor:
        return _logic.ne(self, other)

    def lt(self, other) -> Tensor:
        return _logic.lt(self, other)

    def le(self, other) -> Tensor:
        return _logic.le(self, other)

    def gt(self, other) -> Tensor:
        return _logic.gt(self, other)

    def ge(self, other) -> Tensor:
        return _logic.ge(self, other)

    def logical_not(self) -> Tensor:
        return _logic.logical_not(self)

    def logical_and(self, other) -> Tensor:
        return _logic.logical_and(self, other)

    def logical_or(self, other) -> Tensor:
        return _logic.logical_or(self, other)

    def logical_xor(self, other) -> Tensor:
        return _logic.logical_xor(self, other)

    def where(self, condition, other) -> Tensor:
        """``self`` where ``condition`` holds, else ``other``, as torch's ``Tensor.where``."""
        return _logic.where(condition, self, other)

    def masked_fill(self, mask, value) -> Tensor:
        """A copy with ``value`` where the bool ``mask`` holds (differentiable in ``self``)."""
        return _logic.masked_fill(self, mask, value)

    def relu(self) -> Tensor:
        return _activation.relu(self)

    def sigmoid(self) -> Tensor:
        return _activation.sigmoid(self)

    def tanh(self) -> Tensor:
        return _activation.tanh(self)

    def softmax(self, dim: int, dtype=None) -> Tensor:
        """Softmax along ``dim`` (required, as in torch's method; ``F.softmax`` defaults to -1)."""
        return _activation.softmax(self, dim, dtype=dtype)

    def log_softmax(self, dim: int, dtype=None) -> Tensor:
        """Log-softmax along ``dim`` (required, as in torch's method)."""
        return _activation.log_softmax(self, dim, dtype=dtype)

    def clamp(self, min=None, max=None) -> Tensor:  # noqa: A002 - PyTorch's argument names
        """Limit the values to ``[min, max]`` (numbers or tensors; either may be None), as torch's."""
        return _math.clamp(self, min, max)

    clip = clamp  # PyTorch's alias

    def clone(self) -> Tensor:
        """A copy with its own memory that stays in the graph (the gradient flows back), as torch's."""
        return _shape.clone(self)

    def contiguous(self) -> Tensor:
        """The tensor itself if its memory is C-ordered, else a C-ordered copy (differentiable)."""
        if self.data.flags.c_contiguous:
            return self
        return _shape.clone(self)


def _comparable(other) -> bool:
    """Whether ``other`` can be an operand of a comparison (a number, array, sequence or tensor)."""
    return isinstance(other, (Tensor, numbers.Number, np.ndarray, np.generic, list, tuple)) or hasattr(
        other, "__cuda_array_interface__"
    )


def tensor(data: Any, requires_grad: bool = False, dtype=None) -> Tensor:
    """Make a tensor (PyTorch's ``torch.tensor``)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def as_tensor(data: Any, like: np.ndarray | None = None) -> Tensor:
    """Return ``data`` if it is a Tensor, else a constant tensor wrapping it."""
    if isinstance(data, Tensor):
        return data
    return Tensor._wrap(as_array(data, like=like))


# Imported last, after Tensor exists: the one cycle of the core (see the module docstring).
from .functional import activation as _activation  # noqa: E402
from .functional import logic as _logic  # noqa: E402
from .functional import math as _math  # noqa: E402
from .functional import reduction as _reduction  # noqa: E402
from .functional import setitem as _setitem  # noqa: E402
from .functional import shape as _shape  # noqa: E402
from .functional.remainder import remainder as _remainder  # noqa: E402 - the module name is shadowed by the function
