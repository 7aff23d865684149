"""Elementwise arithmetic: the ops behind Tensor's operators.

Binary ops broadcast like NumPy; their backward sums the gradient back to each
input's shape (``sum_to``). Their result dtype follows PyTorch's promotion rules
(``result_type``), not NumPy's: an int tensor times a float32 tensor is float32, and a
0-d tensor does not widen a dimensioned tensor of its own kind.

Reductions (sum, mean, max, ...) are in ``reduction.py``.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..backend.kernels import elementwise
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor, as_tensor
from .dtypes import as_floating, cast, result_type, to_dtype

__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "matmul",
    "exp", "log", "sqrt", "abs", "sign", "clamp", "cast", "result_type", "as_floating", "sum_to",
]


def sum_to(g, shape: tuple[int, ...]):
    """Sum ``g`` over the axes NumPy broadcasting added or stretched, giving ``shape``."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1
    )
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if lead else g


class AddOp(Function):
    """Elementwise sum with broadcasting.

    forward:  y = a + b
    backward: ga = sum_to(gy, a.shape), gb = sum_to(gy, b.shape)
    """

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return elementwise.add(a, b)  # large NumPy sums: one parallel pass into pooled memory (ResNet's shortcuts)

    def backward(self, gy):
        return sum_to(gy, self.a_shape), sum_to(gy, self.b_shape)


class SubOp(Function):
    """Elementwise difference with broadcasting.

    forward:  y = a - b
    backward: ga = sum_to(gy, a.shape), gb = -sum_to(gy, b.shape)
    """

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, gy):
        gb = -sum_to(gy, self.b_shape) if self.needs_input_grad[1] else None
        return sum_to(gy, self.a_shape), gb


class MulOp(Function):
    """Elementwise product with broadcasting.

    forward:  y = a * b
    backward: ga = sum_to(gy * b, a.shape), gb = sum_to(gy * a, b.shape)
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        ga = sum_to(gy * self.b, self.a.shape) if need_a else None
        gb = sum_to(gy * self.a, self.b.shape) if need_b else None
        return ga, gb


class DivOp(Function):
    """Elementwise quotient with broadcasting.

    forward:  y = a / b
    backward: ga = sum_to(gy / b, a.shape), gb = sum_to(-gy * a / b**2, b.shape)
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        with np.errstate(divide="ignore", invalid="ignore"):  # x / 0: inf or NaN, silently as PyTorch
            return a / b

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        with np.errstate(divide="ignore", invalid="ignore"):
            ga = sum_to(gy / self.b, self.a.shape) if need_a else None
            gb = sum_to(-gy * self.a / (self.b * self.b), self.b.shape) if need_b else None
        return ga, gb


class RoundingDivOp(Function):
    """Division rounded to a whole number: torch.div(a, b, rounding_mode="trunc" | "floor").

    forward:  y = trunc(a / b) or floor(a / b), with broadcasting. Floats: floor is
              Python's floor division (as PyTorch's, exact where floor(a / b) is not),
              x / 0 gives inf or NaN; integers stay integers (dividing by 0 raises).
    backward: ga = sum_to(gy * 0, a.shape), gb = sum_to(gy * 0, b.shape)  (PyTorch's rule:
              the result is piecewise constant; a NaN or inf upstream still gives NaN)
    """

    def __init__(self, mode: str):
        self.mode = mode

    def forward(self, a, b):
        xp = self.xp
        self.a_shape, self.b_shape = a.shape, b.shape
        if a.dtype.kind == "b":
            raise TypeError(f"div(rounding_mode={self.mode!r}) is not defined for bool tensors, as in PyTorch")
        if a.dtype.kind in "iu":
            if (b == 0).any():
                raise ZeroDivisionError(f"div(rounding_mode={self.mode!r}): integer division by zero")
            q = xp.floor_divide(a, b)
            if self.mode == "trunc":  # floor and trunc differ where the exact quotient is negative
                q = q + ((q < 0) & (q * b != a)).astype(q.dtype)
            return q
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.floor_divide(a, b) if self.mode == "floor" else xp.trunc(a / b)

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        with np.errstate(invalid="ignore"):
            zero = gy * 0
        return (sum_to(zero, self.a_shape) if need_a else None,
                sum_to(zero, self.b_shape) if need_b else None)


class PowOp(Function):
    """Elementwise power with broadcasting.

    forward:  y = a ** b
    backward: ga = gy * b * a ** (b - 1), and 0 where b == 0 (so 0 ** 0 has gradient 0);
              gb = gy * y * log(a), and 0 where a == 0 and b >= 0   (each summed to its
              shape). NOTE: these are PyTorch's conventions (pow_backward_self and
              pow_backward_exponent): at a == 0 with b < 0 the gradients stay -inf / inf.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** -1 = inf, (-8) ** 0.5 = NaN
            self.y = a**b
        return self.y

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        xp = self.xp
        a, b = self.a, self.b
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** -1, log(-1): inf and NaN, as PyTorch
            if need_a:
                ga = xp.where(b == 0, 0, gy * b * a ** (b - 1))
                ga = sum_to(ga.astype(gy.dtype, copy=False), a.shape)
            if need_b:
                gb = xp.where((a == 0) & (b >= 0), 0, gy * self.y * xp.log(a))
                gb = sum_to(gb.astype(gy.dtype, copy=False), b.shape)
        return ga, gb


class NegOp(Function):
    """Elementwise negation.

    forward:  y = -x
    backward: gx = -gy
    """

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class MatMulOp(Function):
    """Matrix product with NumPy's matmul rules (batched, broadcast leading axes).

    forward:  y = a @ b          a (..., n, k), b (..., k, m) -> y (..., n, m)
    backward: ga = gy @ b^T,  gb = a^T @ gy   (summed over broadcast batch axes)
    1-D operands are promoted as in NumPy and the result squeezed back.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        xp = self.xp
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a          # (1, k) for a vector
        b2 = b[:, None] if b.ndim == 1 else b          # (k, 1) for a vector
        # Restore the dropped axes, the trailing one first: for vector @ vector gy is 0-d.
        gy2 = gy
        if b.ndim == 1:
            gy2 = xp.expand_dims(gy2, -1)
        if a.ndim == 1:
            gy2 = xp.expand_dims(gy2, -2)
        need_a, need_b = self.needs_input_grad
        ga = gb = None
        if need_a:
            ga = gy2 @ xp.swapaxes(b2, -1, -2)
            ga = sum_to(ga, a2.shape).reshape(a.shape)
        if need_b:
            gb = xp.swapaxes(a2, -1, -2) @ gy2
            gb = sum_to(gb, b2.shape).reshape(b.shape)
        return ga, gb


class ExpOp(Function):
    """forward: y = exp(x);  backward: gx = gy * y"""

    def forward(self, x):
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class LogOp(Function):
    """forward: y = log(x);  backward: gx = gy / x"""

    def forward(self, x):
        self.x = x
        with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf, log(-1) = NaN, as PyTorch
            return self.xp.log(x)

    def backward(self, gy):
        with np.errstate(divide="ignore", invalid="ignore"):
            return gy / self.x


class SqrtOp(Function):
    """forward: y = sqrt(x);  backward: gx = gy / (2 y)"""

    def forward(self, x):
        with np.errstate(invalid="ignore"):  # sqrt(-1) = NaN, as PyTorch
            self.y = self.xp.sqrt(x)
        return self.y

    def backward(self, gy):
        with np.errstate(divide="ignore", invalid="ignore"):  # 1 / (2 sqrt 0) = inf, as PyTorch
            return gy / (2 * self.y)


class AbsOp(Function):
    """forward: y = |x|;  backward: gx = gy * sign(x)  (sign is 0 at x = 0 and at NaN, as PyTorch)"""

    def forward(self, x):
        self.sign = _sign(x)
        return self.xp.abs(x)

    def backward(self, gy):
        return gy * self.sign


class ClampOp(Function):
    """forward: y = min(max(x, lo), hi)  (NaN stays NaN; lo > hi gives hi everywhere, as torch)
    backward: gx = gy where lo <= x <= hi, else 0  (0 at NaN inputs, as torch.clamp)
    """

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        xp = self.xp
        inside = xp.ones(x.shape, dtype=bool)
        y = x
        if self.lo is not None:
            inside &= x >= self.lo
            y = xp.maximum(y, x.dtype.type(self.lo))
        if self.hi is not None:
            inside &= x <= self.hi
            y = xp.minimum(y, x.dtype.type(self.hi))
        self.inside = inside
        return y if y is not x else x.copy()

    def backward(self, gy):
        return gy * self.inside


class ClampTensorOp(Function):
    """Clamp between tensor bounds, all three broadcast together (either bound may be absent).

    forward:  y = min(max(x, lo), hi)   (a NaN in x, lo or hi gives NaN)
    backward: gx  = sum_to(gy where lo <= x <= hi, else 0, x.shape)
              glo = sum_to(gy where x < lo (and lo < hi), else 0, lo.shape)
              ghi = sum_to(gy where x > hi (or hi < lo), else 0, hi.shape)
    NOTE: PyTorch's rule, ties included: where lo == hi and x < lo no input gets the
    gradient, and NaN anywhere gives 0 to all three.

    Shapes: y and gy have the broadcast shape of x, lo and hi.
    """

    def __init__(self, has_lo: bool, has_hi: bool):
        self.has_lo, self.has_hi = has_lo, has_hi

    def forward(self, x, *bounds):
        xp = self.xp
        lo = bounds[0] if self.has_lo else None
        hi = bounds[-1] if self.has_hi else None
        y = x
        if lo is not None:
            y = xp.maximum(y, lo)
        if hi is not None:
            y = xp.minimum(y, hi)
        if self.saves_for_backward:
            self.x, self.lo, self.hi = x, lo, hi
        return y

    def backward(self, gy):
        xp, x, lo, hi = self.xp, self.x, self.lo, self.hi
        zero = xp.zeros((), dtype=gy.dtype)
        inside = True
        if lo is not None:
            inside = inside & (x >= lo)
        if hi is not None:
            inside = inside & (x <= hi)
        grads = [sum_to(xp.where(inside, gy, zero), x.shape)]
        if lo is not None:
            below = (x < lo) & (lo < hi) if hi is not None else x < lo
            grads.append(sum_to(xp.where(below, gy, zero), lo.shape))
        if hi is not None:
            above = (x > hi) | (hi < lo) if lo is not None else x > hi
            grads.append(sum_to(xp.where(above, gy, zero), hi.shape))
        return tuple(grads)


class SignOp(Function):
    """forward: y = sign(x) (-1, 0 or 1; 0 at NaN, as torch.sign);  backward: gx = 0"""

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return _sign(x)

    def backward(self, gy):
        return self.xp.zeros(self.x_shape, dtype=gy.dtype)


def _sign(x):
    if x.dtype.kind == "b":
        return x.copy()
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def _binary(op_cls, a, b, floating: bool = False) -> Tensor:
    # Python scalars take the tensor operand's dtype so float32 stays float32.
    like = a.data if isinstance(a, Tensor) else b.data if isinstance(b, Tensor) else None
    a, b = as_tensor(a, like=like), as_tensor(b, like=like)
    if a.dtype != b.dtype or (floating and a.dtype.kind != "f"):
        dtype = result_type(a.data, b.data)
        if floating and dtype.kind != "f":  # true division of integers: the default float dtype
            dtype = config.get_default_dtype()
        a, b = to_dtype(a, dtype), to_dtype(b, dtype)
    return op_cls()(a, b)


def add(a, b, *, alpha=1) -> Tensor:
    """a + alpha * b, as torch.add."""
    return _binary(AddOp, a, _scaled(a, b, alpha, "add"))


def sub(a, b, *, alpha=1) -> Tensor:
    """a - alpha * b, as torch.sub (bool operands are refused, as in PyTorch: use ``~``)."""
    if _is_bool(a) or _is_bool(b):
        raise TypeError("sub: subtraction with a bool tensor is not supported (as in PyTorch); "
                        "to invert a mask use ~ or logical_not")
    return _binary(SubOp, a, _scaled(a, b, alpha, "sub"))


def _is_bool(x) -> bool:
    return isinstance(x, (bool, np.bool_)) or getattr(x, "dtype", None) == np.bool_


def _scaled(a, b, alpha, op: str):
    """alpha * b in the dtype of the result, with PyTorch's checks of alpha's type."""
    if alpha == 1 and not isinstance(alpha, (bool, np.bool_)):
        return b
    like = a.data if isinstance(a, Tensor) else b.data if isinstance(b, Tensor) else None
    ta, tb = as_tensor(a, like=like), as_tensor(b, like=like)
    dtype = result_type(ta.data, tb.data)
    if dtype.kind in "biu" and isinstance(alpha, (float, np.floating)):
        raise TypeError(f"{op}: alpha={alpha!r} is a float but the result is {dtype}: "
                        "an integer result takes an integer alpha, as in PyTorch")
    if dtype.kind == "b":  # a bool result: alpha only says whether b counts
        return Tensor._wrap(tb.data & bool(alpha))
    if isinstance(alpha, (bool, np.bool_)):
        raise TypeError(f"{op}: a bool alpha is only allowed for a bool result, got alpha={alpha!r} "
                        f"for a {dtype} result (as in PyTorch)")
    return mul(to_dtype(tb, dtype), alpha)


def mul(a, b) -> Tensor:
    return _binary(MulOp, a, b)


def div(a, b, *, rounding_mode: str | None = None) -> Tensor:
    """Division, as torch.div.

    ``rounding_mode=None``: true division (integer operands give the default float
    dtype). ``"trunc"`` / ``"floor"``: the quotient rounded toward zero / down, in the
    operands' dtype (integers stay integers), with gradient 0 as PyTorch's.

    Raises:
        ValueError: another rounding_mode. ZeroDivisionError: a rounded integer division by 0.
    """
    if rounding_mode is None:
        return _binary(DivOp, a, b, floating=True)
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError(f"div expects rounding_mode None, 'trunc' or 'floor', got {rounding_mode!r}")
    return _binary(lambda: RoundingDivOp(rounding_mode), a, b)


def pow(a, b) -> Tensor:  # noqa: A001 - PyTorch's name
    return _binary(PowOp, a, b)


def neg(x) -> Tensor:
    return NegOp()(x)


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy's (and PyTorch's) rules for 1-D and batched operands.

    Raises:
        ShapeError: a 0-d operand, or inner dimensions that differ.
    """
    a, b = as_tensor(a), as_tensor(b, like=a.data)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul expects operands of at least 1 dimension, got shapes {a.shape} and {b.shape}")
    k_a, k_b = a.shape[-1], b.shape[-2] if b.ndim > 1 else b.shape[0]
    if k_a != k_b:
        raise ShapeError(f"matmul cannot multiply shapes {a.shape} and {b.shape} ({k_a} != {k_b})")
    return _binary(MatMulOp, a, b)


def exp(x) -> Tensor:
    return ExpOp()(as_floating(x))


def log(x) -> Tensor:
    return LogOp()(as_floating(x))


def sqrt(x) -> Tensor:
    return SqrtOp()(as_floating(x))


def abs(x) -> Tensor:  # noqa: A001
    return AbsOp()(x)


def clamp(x, min=None, max=None) -> Tensor:  # noqa: A002 - PyTorch's argument names
    """Limit ``x`` to ``[min, max]`` (either bound may be None), as torch.clamp.

    Bounds are numbers, or tensors (arrays) broadcast against ``x``, each differentiable
    (``ClampTensorOp``; a number beside a tensor bound counts as a 0-d tensor, where PyTorch
    refuses the mix). The result dtype follows PyTorch's promotion (an integer tensor with a
    float bound becomes the default float dtype). The gradient passes where
    ``min <= x <= max`` and is 0 elsewhere, NaN inputs included (PyTorch's rule).

    Raises:
        ValueError: both bounds are None. TypeError: a bound that is not a real number or
        an array. ShapeError: tensor bounds that do not broadcast against ``x``.
    """
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must not be None")
    if any(isinstance(b, Tensor) or hasattr(b, "__array_interface__") or hasattr(b, "__cuda_array_interface__")
           for b in (min, max) if b is not None and not np.isscalar(b)):
        return _clamp_between_tensors(x, min, max)
    for name, bound in (("min", min), ("max", max)):
        if bound is not None and (not isinstance(bound, (int, float, np.integer, np.floating))
                                  or isinstance(bound, (bool, np.bool_))):
            raise TypeError(f"clamp expects {name} as a number or None, got {type(bound).__name__}")
    x = as_tensor(x)
    bounds = [as_tensor(b, like=x.data).data for b in (min, max) if b is not None]  # weak scalars
    dtype = result_type(x.data, *bounds)
    return ClampOp(min, max)(to_dtype(x, dtype))


def _clamp_between_tensors(x, lo, hi) -> Tensor:
    x = as_tensor(x)
    bounds = [as_tensor(b, like=x.data) for b in (lo, hi) if b is not None]
    dtype = result_type(x.data, *(b.data for b in bounds))
    try:
        np.broadcast_shapes(x.shape, *(b.shape for b in bounds))
    except ValueError:
        raise ShapeError(
            f"clamp expects min and max that broadcast against the input, got shapes {x.shape}, "
            f"{None if lo is None else bounds[0].shape} and {None if hi is None else bounds[-1].shape}"
        ) from None
    return ClampTensorOp(lo is not None, hi is not None)(to_dtype(x, dtype), *(to_dtype(b, dtype) for b in bounds))


def sign(x) -> Tensor:
    """-1, 0 or 1 per element (0 at NaN, as torch.sign); its gradient is 0 everywhere."""
    return SignOp()(x)
