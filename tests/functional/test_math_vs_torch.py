"""Arithmetic, reductions and elementwise math against PyTorch: values, gradients, dtypes, edge cases.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor, config  # noqa: E402
from cnnkit.errors import DimensionError, ShapeError  # noqa: E402

from .inputs import away_from_zero, integers, normal, positive, with_nans, with_zeros  # noqa: E402
from .torch_compare import (  # noqa: E402
    Case,
    assert_close,
    cases,
    check_op,
    dtypes,
    inputs_of,
    same_error,
    unary,
)

BROADCAST_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1, 5), (4, 1)), ((1,), (2, 3)), ((), (2, 3)),
                    ((0, 3), (3,)), ((2, 0), (1,))]


# --------------------------------------------------------------------------- operators
def _operator_cases() -> list[Case]:
    out = []
    for a, b in BROADCAST_SHAPES:
        tag = f"{a}x{b}".replace(" ", "")
        out += [
            Case(f"add{tag}", lambda x, y: x + y, lambda x, y: x + y, inputs_of(normal(*a), normal(*b))),
            Case(f"sub{tag}", lambda x, y: x - y, lambda x, y: x - y, inputs_of(normal(*a), normal(*b))),
            Case(f"mul{tag}", lambda x, y: x * y, lambda x, y: x * y, inputs_of(normal(*a), normal(*b))),
            Case(f"div{tag}", lambda x, y: x / y, lambda x, y: x / y,
                 inputs_of(normal(*a), away_from_zero(*b))),
            Case(f"pow{tag}", lambda x, y: x**y, lambda x, y: x**y, inputs_of(positive(*a), normal(*b))),
        ]
    out += [
        # functional names and reflected operators with Python scalars and constant arrays
        Case("F.add", F.add, torch.add, inputs_of(normal(2, 3), normal(3))),
        Case("F.sub", F.sub, torch.sub, inputs_of(normal(2, 3), normal(2, 1))),
        Case("F.mul", F.mul, torch.mul, inputs_of(normal(2, 3), normal(1, 3))),
        Case("F.div", F.div, torch.div, inputs_of(normal(2, 3), away_from_zero(3))),
        Case("F.pow", F.pow, torch.pow, inputs_of(positive(2, 3), normal(2, 3))),
        Case("F.neg", F.neg, torch.neg, inputs_of(normal(2, 3))),
        Case("neg", lambda x: -x, lambda x: -x, inputs_of(normal(4, 5))),
        Case("pos", lambda x: +x * 1.0, lambda x: +x * 1.0, inputs_of(normal(4))),
        Case("scalar+x", lambda x: 2.5 + x, lambda x: 2.5 + x, inputs_of(normal(3, 2))),
        Case("x-scalar", lambda x: x - 1.5, lambda x: x - 1.5, inputs_of(normal(3, 2))),
        Case("scalar-x", lambda x: 1.5 - x, lambda x: 1.5 - x, inputs_of(normal(3, 2))),
        Case("scalar*x", lambda x: 3.0 * x, lambda x: 3.0 * x, inputs_of(normal(3, 2))),
        Case("x/scalar", lambda x: x / 3.0, lambda x: x / 3.0, inputs_of(normal(3, 2))),
        Case("scalar/x", lambda x: 3.0 / x, lambda x: 3.0 / x, inputs_of(away_from_zero(3, 2))),
        Case("x**2", lambda x: x**2, lambda x: x**2, inputs_of(normal(3, 4))),
        Case("x**3", lambda x: x**3, lambda x: x**3, inputs_of(normal(3, 4))),
        Case("x**-1.5", lambda x: x**-1.5, lambda x: x**-1.5, inputs_of(positive(3, 4))),
        Case("x**0.5", lambda x: x**0.5, lambda x: x**0.5, inputs_of(positive(3, 4))),
        Case("2**x", lambda x: 2.0**x, lambda x: 2.0**x, inputs_of(normal(3, 4))),
        Case("x*x (reuse)", lambda x: x * x + x, lambda x: x * x + x, inputs_of(normal(3, 4))),
        Case("array+x", lambda x, c: c + x, lambda x, c: c + x, inputs_of(normal(2, 3), consts=[normal(2, 3)])),
        Case("array*x", lambda x, c: c * x, lambda x, c: c * x, inputs_of(normal(2, 3), consts=[normal(3)])),
        Case("array-x", lambda x, c: c - x, lambda x, c: c - x, inputs_of(normal(2, 3), consts=[normal(2, 3)])),
        Case("array/x", lambda x, c: c / x, lambda x, c: c / x,
             inputs_of(away_from_zero(2, 3), consts=[normal(2, 3)])),
        # pow at base 0 (PyTorch's conventions): 0**0 has gradient 0 for both inputs,
        # 0**negative gives -inf / inf gradients, 0**positive a zero exponent gradient
        Case("pow-base-0-tensor-exponent", lambda a, b: a**b, lambda a, b: a**b,
             lambda rng: ([np.array([0.0, 0.0, 0.0, 0.0, 2.0, -2.0]),
                           np.array([0.0, -1.0, 2.0, -1.5, 0.0, 0.5])], [])),
        Case("pow-base-0-scalar-exponent-0", lambda a: a**0.0, lambda a: a**0.0,
             inputs_of(with_zeros(3, 4))),
        Case("pow-base-0-scalar-exponent-negative", lambda a: a**-2.0, lambda a: a**-2.0,
             inputs_of(with_zeros(3, 4))),
        Case("pow-base-0-scalar-exponent-fraction", lambda a: a**0.5, lambda a: a**0.5,
             lambda rng: ([np.abs(with_zeros(3, 4)(rng))], [])),
        Case("rpow-base-0", lambda b: 0.0**b, lambda b: 0.0**b, inputs_of(with_zeros(3, 4))),
        Case("pow-negative-base-fraction", lambda a, b: a**b, lambda a, b: a**b,
             lambda rng: ([-positive(2, 3)(rng), np.full((2, 3), 0.5)], [])),  # NaN, as PyTorch
    ]
    for a, b in [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 2)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((5,), (2, 5, 3)), ((2, 3, 4), (4,)), ((0, 4), (4, 3)),
                 ((3, 0), (0, 2))]:
        tag = f"{a}@{b}".replace(" ", "")
        out.append(Case(f"matmul{tag}", lambda x, y: x @ y, lambda x, y: x @ y, inputs_of(normal(*a), normal(*b))))
    out += [
        Case("F.matmul", F.matmul, torch.matmul, inputs_of(normal(3, 4), normal(4, 2))),
        Case("array@x", lambda x, c: c @ x, lambda x, c: c @ x, inputs_of(normal(4, 2), consts=[normal(3, 4)])),
    ]
    return out


@cases(_operator_cases())
@dtypes()
def test_tensor_operators_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


# --------------------------------------------------------------------------- reductions
def _reduction_cases() -> list[Case]:
    out = []
    for dim, keep in itertools.product([None, 0, 1, -1, (0, 2), (-1, -3), (), [1, 2]], [False, True]):
        tag = f"(dim={dim},keepdim={keep})"
        tdim = tuple(range(3)) if dim is None else dim  # torch.amax needs dims spelled out
        out += [
            Case(f"sum{tag}", lambda x, d=dim, k=keep: x.sum(d, k), lambda x, d=tdim, k=keep: x.sum(d, k),
                 inputs_of(normal(2, 3, 4))),
            Case(f"mean{tag}", lambda x, d=dim, k=keep: x.mean(d, k), lambda x, d=tdim, k=keep: x.mean(d, k),
                 inputs_of(normal(2, 3, 4))),
            Case(f"amax{tag}", lambda x, d=dim, k=keep: x.amax(d, k), lambda x, d=tdim, k=keep: x.amax(d, k),
                 inputs_of(normal(2, 3, 4))),
            Case(f"amin{tag}", lambda x, d=dim, k=keep: F.amin(x, d, k), lambda x, d=tdim, k=keep: x.amin(d, k),
                 inputs_of(normal(2, 3, 4))),
            # NOTE: ties share the gradient evenly, as torch.amax does.
            Case(f"amax-ties{tag}", lambda x, d=dim, k=keep: F.amax(x, d, k),
                 lambda x, d=tdim, k=keep: x.amax(d, k), inputs_of(integers(2, 3, 4, low=0, high=2))),
        ]
    for dim, keep in itertools.product([0, 1, -1], [False, True]):
        tag = f"(dim={dim},keepdim={keep})"
        for name in ("max", "min"):
            # values: the gradient goes to the first extremum (ties included), as PyTorch
            out.append(Case(f"{name}{tag}.values", lambda x, n=name, d=dim, k=keep: getattr(x, n)(d, k).values,
                            lambda x, n=name, d=dim, k=keep: getattr(x, n)(d, k).values,
                            inputs_of(integers(2, 3, 4, low=0, high=3))))
    out += [
        Case("sum-1d", lambda x: F.sum(x), lambda x: x.sum(), inputs_of(normal(7))),
        Case("mean-all-of-4d", lambda x: F.mean(x), lambda x: x.mean(), inputs_of(normal(2, 3, 4, 5))),
        # the full max/min: ties share the gradient (PyTorch's evenly_distribute_backward)
        Case("max()-ties", lambda x: x.max(), lambda x: x.max(), inputs_of(integers(3, 4, low=0, high=2))),
        Case("min()-ties", lambda x: F.min(x), lambda x: x.min(), inputs_of(integers(3, 4, low=0, high=2))),
        # NumPy spellings, accepted as PyTorch accepts them
        Case("sum(axis,keepdims)", lambda x: x.sum(axis=1, keepdims=True), lambda x: x.sum(axis=1, keepdims=True),
             inputs_of(normal(2, 3, 4))),
        Case("mean(axis=tuple)", lambda x: F.mean(x, axis=(0, 2)), lambda x: x.mean(axis=(0, 2)),
             inputs_of(normal(2, 3, 4))),
        Case("amax(axis)", lambda x: x.amax(axis=-1), lambda x: x.amax(axis=-1), inputs_of(normal(2, 3, 4))),
        Case("max(axis).values", lambda x: x.max(axis=1).values, lambda x: x.max(axis=1).values,
             inputs_of(normal(2, 3, 4))),
        Case("max(dim,keepdims)", lambda x: x.max(dim=1, keepdims=True)[0],
             lambda x: x.max(dim=1, keepdims=True)[0], inputs_of(normal(2, 3, 4))),
        # empty tensors: a sum of nothing is 0, a mean of nothing NaN
        Case("sum-empty", lambda x: x.sum(), lambda x: x.sum(), inputs_of(normal(0, 3))),
        Case("sum-empty-dim0", lambda x: x.sum(0), lambda x: x.sum(0), inputs_of(normal(0, 3))),
        Case("mean-empty", lambda x: x.mean(), lambda x: x.mean(), inputs_of(normal(0, 3))),
        Case("mean-empty-dim0", lambda x: x.mean(0), lambda x: x.mean(0), inputs_of(normal(0, 3))),
        Case("mean-empty-dim1", lambda x: x.mean(1), lambda x: x.mean(1), inputs_of(normal(0, 3))),
        Case("amax-empty-dim1", lambda x: x.amax(1), lambda x: x.amax(1), inputs_of(normal(0, 3))),
        Case("max-empty-dim1", lambda x: x.max(1).values, lambda x: x.max(1).values, inputs_of(normal(0, 3))),
        # NaN wins: max/amax of a NaN is NaN; gradients as PyTorch's (amax: NaN everywhere
        # in that slice; max(): to the NaNs; max(dim): to the first NaN)
        Case("amax-nan", lambda x: x.amax(1), lambda x: x.amax(1), inputs_of(with_nans(3, 4))),
        Case("max()-nan", lambda x: x.max(), lambda x: x.max(), inputs_of(with_nans(3, 4))),
        Case("max(dim)-nan", lambda x: x.max(1).values, lambda x: x.max(1).values, inputs_of(with_nans(3, 4))),
        Case("min(dim)-nan", lambda x: x.min(0).values, lambda x: x.min(0).values, inputs_of(with_nans(3, 4))),
    ]
    # 0-d tensors take dim 0 and -1 (and (), None), as PyTorch
    for dim in [0, -1, (0,), (), None]:
        for name in ("sum", "mean", "amax", "amin"):
            out.append(Case(f"{name}-0d(dim={dim})", lambda x, n=name, d=dim: getattr(x, n)(d),
                            lambda x, n=name, d=dim: getattr(x, n)(() if d is None and n in ("amax", "amin") else d)
                            if d is not None else getattr(x, n)(), inputs_of(normal())))
    for dim in [0, -1]:
        out.append(Case(f"max-0d(dim={dim})", lambda x, d=dim: x.max(d).values, lambda x, d=dim: x.max(d).values,
                        inputs_of(normal())))
        out.append(Case(f"min-0d(dim={dim},keepdim)", lambda x, d=dim: x.min(d, True)[0],
                        lambda x, d=dim: x.min(d, True)[0], inputs_of(normal())))
    return out


@cases(_reduction_cases())
@dtypes()
def test_reductions_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


@pytest.mark.parametrize("name", ["max", "min", "argmax", "argmin"])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (0, False), (1, True), (-1, False), (-2, True)])
@pytest.mark.parametrize("gen", [normal(4, 5), integers(4, 5, low=0, high=2), with_nans(4, 5)],
                         ids=["normal", "ties", "nans"])
def test_indices_of_max_min_argmax_argmin_match_torch(name, dim, keepdim, gen, rng):
    x = gen(rng)
    ours, theirs = Tensor(x), torch.from_numpy(x)
    if name in ("max", "min") and dim is None:
        if keepdim:
            return
        np.testing.assert_array_equal(getattr(ours, name)().data, getattr(theirs, name)().numpy())
        return
    if name in ("max", "min"):
        values, indices = getattr(ours, name)(dim, keepdim)
        expected = getattr(theirs, name)(dim, keepdim)
        np.testing.assert_array_equal(values.data, expected.values.numpy())
    else:
        indices = getattr(ours, name)(dim, keepdim)
        expected = getattr(theirs, name)(dim, keepdim)
    expected_indices = expected.indices if name in ("max", "min") else expected
    assert indices.dtype == np.int64 and not indices.requires_grad
    np.testing.assert_array_equal(indices.data, expected_indices.numpy())


def test_reduction_errors_match_torch():
    x, empty, zero_d = Tensor(np.ones((2, 3))), Tensor(np.ones((0, 3))), Tensor(np.array(1.0))
    tx, tempty, tzero = torch.ones(2, 3), torch.ones(0, 3), torch.tensor(1.0)
    same_error(lambda: x.sum(2), lambda: tx.sum(2), DimensionError, r"sum: dimension out of range.*got 2")
    same_error(lambda: x.sum(2), lambda: tx.sum(2), IndexError, "out of range")
    same_error(lambda: zero_d.mean(1), lambda: tzero.mean(1), DimensionError, r"\[-1, 0\], but got 1")
    same_error(lambda: x.sum((1, -1)), lambda: tx.sum((1, -1)), DimensionError, "appears more than once")
    same_error(lambda: x.max(-3), lambda: tx.max(-3), DimensionError, "max: dimension out of range")
    same_error(lambda: empty.amax(0), lambda: tempty.amax(0), ShapeError, "empty dimension")
    same_error(lambda: empty.amax(), lambda: tempty.amax(), ShapeError, "empty dimension")
    same_error(lambda: empty.max(), lambda: tempty.max(), ShapeError, "empty tensor")
    same_error(lambda: empty.argmax(0), lambda: tempty.argmax(0), ShapeError, "size 0")
    same_error(lambda: Tensor(np.arange(3)).mean(), lambda: torch.arange(3).mean(), TypeError, "floating")
    same_error(lambda: x.sum(dim=0, axis=1), lambda: tx.sum(0, axis=1), TypeError, "both dim=0 and axis=1")


# --------------------------------------------------------------------------- elementwise math
ELEMENTWISE_CASES = [
    unary("exp", lambda x: x.exp(), torch.exp, normal(3, 5)),
    unary("F.exp", F.exp, torch.exp, normal(2, 3, 4)),
    unary("log", lambda x: x.log(), torch.log, positive(3, 5)),
    unary("F.log", F.log, torch.log, lambda rng: rng.uniform(1e-3, 10.0, (4, 4))),
    unary("sqrt", lambda x: x.sqrt(), torch.sqrt, positive(3, 5)),
    unary("F.sqrt", F.sqrt, torch.sqrt, lambda rng: rng.uniform(1e-2, 100.0, (4, 4))),
    unary("abs", lambda x: x.abs(), torch.abs, away_from_zero(3, 5)),
    unary("F.abs-at-zero", F.abs, torch.abs, with_zeros(4, 6)),  # gradient 0 at x = 0
    unary("F.abs-nan", F.abs, torch.abs, with_nans(4, 6)),  # sign(NaN) is 0 in PyTorch: gradient 0
    unary("sign", lambda x: x.sign() * x, lambda x: x.sign() * x, with_nans(4, 6)),
    unary("cast-f64", lambda x: F.cast(x, np.float64).astype(x.dtype), lambda x: x.double().to(x.dtype),
          normal(3, 4)),
    unary("to-f64", lambda x: x.to(np.float64).to(x), lambda x: x.to(torch.float64).to(x), normal(3, 4)),
    unary("double-float", lambda x: x.double().float().to(x.dtype), lambda x: x.double().float().to(x.dtype),
          normal(3, 4)),
    unary("exp-0d", F.exp, torch.exp, normal()),
    unary("log-empty", F.log, torch.log, normal(0, 4)),
]


@cases(ELEMENTWISE_CASES)
@dtypes()
def test_elementwise_math_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


@pytest.mark.parametrize("scalar", [np.float64(1.5), np.float32(1.5), np.int64(3), 2, 0.5],
                         ids=["np.float64", "np.float32", "np.int64", "int", "float"])
def test_scalars_do_not_change_a_float32_tensors_dtype(scalar, rng):
    """Python and NumPy scalars are weakly typed, as in PyTorch: float32 stays float32."""
    x = rng.standard_normal((2, 3)).astype(np.float32)
    for op in [lambda a, s: a * s, lambda a, s: s * a, lambda a, s: a + s, lambda a, s: s - a,
               lambda a, s: a / s, lambda a, s: s / (a * a + 1), lambda a, s: a**s]:
        check_op(lambda a, op=op: op(a, scalar), lambda a, op=op: op(a, scalar), [np.abs(x) + 0.5],
                 dtype=np.float32, rng=rng)


def test_mixed_float32_float64_ops_give_each_input_its_own_gradient_dtype(rng):
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(3)
    ca, cb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    ta, tb = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    cy, ty = (ca * cb + ca / (cb * cb + 1)).sum(), (ta * tb + ta / (tb * tb + 1)).sum()
    assert cy.dtype == np.float64
    cy.backward()
    ty.backward()
    assert ca.grad.dtype == np.float32 and cb.grad.dtype == np.float64
    assert_close(ca.grad, ta.grad.numpy(), np.float32, "float32 input's gradient")
    assert_close(cb.grad, tb.grad.numpy(), np.float64, "float64 input's gradient")


# --------------------------------------------------------------------------- dtype promotion
PROMOTION_DTYPES = [np.bool_, np.uint8, np.int8, np.int32, np.int64, np.float32, np.float64]
TORCH_OF = {np.dtype(d): getattr(torch, n) for d, n in [
    (np.bool_, "bool"), (np.uint8, "uint8"), (np.int8, "int8"), (np.int16, "int16"), (np.int32, "int32"),
    (np.int64, "int64"),
    (np.float32, "float32"), (np.float64, "float64")]}


def _operand(dtype, shape):
    if np.dtype(dtype) == np.bool_:
        return np.ones(shape, dtype=bool)
    return np.full(shape, 2, dtype=dtype)


@pytest.mark.parametrize("shapes", [((2,), (2,)), ((2,), ()), ((), (2,)), ((), ())], ids=["nd-nd", "nd-0d",
                                                                                            "0d-nd", "0d-0d"])
@pytest.mark.parametrize("op", ["add", "mul", "sub", "div"])
def test_binary_ops_promote_dtypes_like_torch(op, shapes):
    """torch.result_type: a higher kind wins, 0-d tensors do not widen dimensioned ones, and
    division of integers is the default float dtype."""
    for da, db in itertools.product(PROMOTION_DTYPES, repeat=2):
        if op == "sub" and np.dtype(np.bool_) in (np.dtype(da), np.dtype(db)):
            continue  # PyTorch refuses bool subtraction
        a, b = _operand(da, shapes[0]), _operand(db, shapes[1])
        expected = getattr(torch, op)(torch.from_numpy(a), torch.from_numpy(b)).dtype
        actual = getattr(F, op)(Tensor(a), Tensor(b)).dtype
        assert TORCH_OF[np.dtype(actual)] == expected, f"{op}({da.__name__}{shapes[0]}, {db.__name__}{shapes[1]})"


@pytest.mark.parametrize("scalar", [2, 2.5, True])
@pytest.mark.parametrize("dtype", PROMOTION_DTYPES)
def test_python_scalars_promote_like_torch(dtype, scalar):
    a = _operand(dtype, (3,))
    for op in ("add", "mul", "div"):
        expected = getattr(torch, op)(torch.from_numpy(a), scalar).dtype
        actual = getattr(F, op)(Tensor(a), scalar).dtype
        assert TORCH_OF[np.dtype(actual)] == expected, f"{op}({np.dtype(dtype)}, {scalar!r})"


def test_mixed_dtype_gradients_follow_promotion(rng):
    """A 0-d float64 tensor times a float32 matrix is float32 (PyTorch); each input's gradient keeps its dtype."""
    a, s = rng.standard_normal((2, 3)).astype(np.float32), np.array(1.5)
    ca, cs = Tensor(a, requires_grad=True), Tensor(s, requires_grad=True)
    ta, ts = torch.from_numpy(a).requires_grad_(), torch.from_numpy(s).requires_grad_()
    cy, ty = ca * cs, ta * ts
    assert cy.dtype == np.float32 and ty.dtype == torch.float32
    gy = rng.standard_normal((2, 3)).astype(np.float32)
    cy.backward(gy)
    ty.backward(torch.from_numpy(gy))
    assert ca.grad.dtype == np.float32 and cs.grad.dtype == np.float64
    assert_close(ca.grad, ta.grad.numpy(), np.float32, "matrix gradient")
    assert_close(cs.grad, ts.grad.numpy(), np.float32, "0-d gradient")


@pytest.mark.parametrize("fn", ["exp", "log", "sqrt", "sigmoid", "tanh"])
def test_floating_ops_of_integer_tensors_give_the_default_dtype(fn):
    x = np.arange(1, 5, dtype=np.int64)
    ours = getattr(F, fn)(Tensor(x))
    theirs = getattr(torch, fn)(torch.from_numpy(x))
    assert ours.dtype == config.get_default_dtype() and theirs.dtype == torch.float32
    assert_close(ours.data, theirs.numpy(), np.float32, fn)


def test_integer_sums_are_int64_like_torch():
    for x in [np.array([True, True, False]), np.arange(4, dtype=np.uint8), np.arange(4, dtype=np.int32)]:
        ours, theirs = Tensor(x).sum(), torch.from_numpy(x).sum()
        assert TORCH_OF[ours.dtype] == theirs.dtype and ours.item() == theirs.item()


# --------------------------------------------------------------------------- div rounding_mode, add/sub alpha
ROUNDING_DTYPES = [np.float32, np.float64, np.int64, np.int32, np.int8, np.uint8]


@pytest.mark.parametrize("mode", ["trunc", "floor"])
@pytest.mark.parametrize("dtype", ROUNDING_DTYPES, ids=lambda d: np.dtype(d).name)
def test_div_rounding_modes_match_torch(mode, dtype, rng):
    """torch.div(a, b, rounding_mode=...): values, dtype (integers stay integers), x/0 for floats."""
    if np.dtype(dtype).kind == "f":
        a = (rng.standard_normal((4, 5)) * 5).astype(dtype)
        b = rng.standard_normal(5).astype(dtype)
        a[0, 0], b[0], b[1] = 0.0, 0.0, -0.0  # 0/0 is NaN, x/0 and x/-0 are +-inf
    else:
        low = 0 if dtype == np.uint8 else -9
        a = rng.integers(low, 10, (4, 5)).astype(dtype)
        b = rng.integers(1, 5, 5).astype(dtype)
        if low:
            b[1] = -3
    ours = F.div(Tensor(a), Tensor(b), rounding_mode=mode)
    theirs = torch.div(torch.from_numpy(a), torch.from_numpy(b), rounding_mode=mode)
    assert TORCH_OF[ours.dtype] == theirs.dtype
    np.testing.assert_array_equal(ours.data, theirs.numpy())


@pytest.mark.parametrize("mode", ["trunc", "floor"])
@pytest.mark.parametrize("other", [2, 2.5, -3, "int32", "float32", "float64"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_div_rounding_modes_promote_like_torch(mode, other, dtype):
    a = np.array([7, -7, 5, -5, 0], dtype=dtype)
    b = np.array([2, 2, -3, -3, 4], dtype=other) if isinstance(other, str) else other
    ours = F.div(Tensor(a), Tensor(b) if isinstance(other, str) else b, rounding_mode=mode)
    theirs = torch.div(torch.from_numpy(a), torch.from_numpy(b) if isinstance(other, str) else b, rounding_mode=mode)
    assert TORCH_OF[ours.dtype] == theirs.dtype
    np.testing.assert_allclose(ours.data, theirs.numpy())


@pytest.mark.parametrize("mode", ["trunc", "floor"])
def test_div_rounding_mode_gradient_is_zero_like_torch(mode, rng):
    check_op(lambda a, b: F.div(a, b, rounding_mode=mode), lambda a, b: torch.div(a, b, rounding_mode=mode),
             [normal(3, 4)(rng) * 4, away_from_zero(4)(rng)], dtype=np.float64, rng=rng)


def test_div_rounding_mode_errors_match_torch():
    ints = np.array([1, 2], dtype=np.int64)
    same_error(lambda: F.div(Tensor(ints), Tensor(np.zeros(2, np.int64)), rounding_mode="floor"),
               lambda: torch.div(torch.from_numpy(ints), torch.zeros(2, dtype=torch.int64), rounding_mode="floor"),
               ZeroDivisionError, "integer division by zero")
    same_error(lambda: F.div(Tensor(np.ones(2)), 2.0, rounding_mode="round"),
               lambda: torch.div(torch.ones(2), 2.0, rounding_mode="round"), ValueError, "rounding_mode")


ALPHA_DTYPES = [np.bool_, np.int64, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("op", ["add", "sub"])
@pytest.mark.parametrize("alpha", [2, -1, 0.5, True, 0])
def test_add_sub_alpha_match_torch(op, alpha):
    """torch.add/sub(a, b, alpha=...): values and dtypes, and the same refusals (a float alpha
    for an integer result, a bool alpha for a non-bool result, bool subtraction)."""
    for da, db in itertools.product(ALPHA_DTYPES, repeat=2):
        a, b = np.array([1, 2, 3]).astype(da), np.array([1, 0, 1]).astype(db)
        try:
            theirs = getattr(torch, op)(torch.from_numpy(a), torch.from_numpy(b), alpha=alpha)
        except RuntimeError:
            with pytest.raises(TypeError):
                getattr(F, op)(Tensor(a), Tensor(b), alpha=alpha)
            continue
        ours = getattr(F, op)(Tensor(a), Tensor(b), alpha=alpha)
        what = f"{op}({np.dtype(da)}, {np.dtype(db)}, alpha={alpha!r})"
        assert TORCH_OF[ours.dtype] == theirs.dtype, what
        np.testing.assert_allclose(ours.data, theirs.numpy(), err_msg=what)


@pytest.mark.parametrize("op", ["add", "sub"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_sub_alpha_gradients_match_torch(op, dtype, rng):
    check_op(lambda a, b: getattr(F, op)(a, b, alpha=-2.5), lambda a, b: getattr(torch, op)(a, b, alpha=-2.5),
             [normal(2, 3)(rng), normal(3)(rng)], dtype=dtype, rng=rng)


def test_bool_subtraction_is_refused_like_torch():
    m = np.array([True, False])
    same_error(lambda: Tensor(m) - Tensor(m), lambda: torch.from_numpy(m) - torch.from_numpy(m), TypeError, "bool")
    same_error(lambda: Tensor(np.ones(2)) - True, lambda: torch.ones(2) - True, TypeError, "bool")


# --------------------------------------------------------------------------- var / std
VAR_ARGS = [((), {}), ((1,), {}), ((0,), dict(unbiased=False)), ((1, True, True), {}), ((1, False, True), {}),
            (((0, 2),), dict(keepdim=True)), ((-1,), dict(correction=0)), ((), dict(dim=1, correction=2)),
            ((), dict(dim=(0, 1), correction=0, keepdim=True))]


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("args, kwargs", VAR_ARGS, ids=[f"{a}{k}".replace(" ", "") for a, k in VAR_ARGS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_var_and_std_match_torch(name, args, kwargs, dtype, rng):
    """torch.var / torch.std with dim, unbiased (positional, legacy), correction and keepdim."""
    check_op(lambda x: getattr(x, name)(*args, **kwargs), lambda x: getattr(x, name)(*args, **kwargs),
             [normal(3, 4, 5)(rng)], dtype=dtype, rng=rng)
    check_op(lambda x: getattr(F, name)(x, *args, **kwargs), lambda x: getattr(torch, name)(x, *args, **kwargs),
             [normal(3, 4, 5)(rng)], dtype=dtype, rng=rng)


@pytest.mark.parametrize("name", ["var", "std"])
def test_var_and_std_edge_cases_match_torch(name, rng):
    """One element or correction >= N: NaN / inf with a warning; a 0-d input; a constant input."""
    for x, kw, warns in [(np.ones(1), {}, True), (np.ones((2, 3)), dict(dim=1, correction=5), True),
                         (rng.standard_normal((2, 3)), dict(dim=1, correction=3), True),
                         (rng.standard_normal((2, 3)), dict(dim=1, correction=2), False),
                         (np.array(1.5), dict(correction=0), False)]:
        with pytest.warns(UserWarning, match="degrees of freedom") if warns else contextlib.nullcontext():
            ours = getattr(Tensor(x), name)(**kw)
        theirs = getattr(torch.from_numpy(x), name)(**kw)
        np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-12)
    # a constant input: std's gradient is NaN (0/0) in both
    check_op(lambda x: getattr(x, name)(1), lambda x: getattr(x, name)(1), [np.full((2, 3), 2.0)],
             dtype=np.float64, rng=rng)


def test_var_errors_match_torch():
    ints = np.arange(3)
    same_error(lambda: Tensor(ints).var(), lambda: torch.from_numpy(ints).var(), TypeError, "floating input")
    same_error(lambda: Tensor(np.ones(3)).std(0, True, correction=0),
               lambda: torch.ones(3).std(0, True, correction=0), TypeError, "either unbiased or correction")
    same_error(lambda: Tensor(np.ones(3)).var(1), lambda: torch.ones(3).var(1), DimensionError, "out of range")


@pytest.mark.parametrize("name", ["all", "any"])
@pytest.mark.parametrize("kwargs", [{}, dict(dim=1), dict(dim=-1, keepdim=True), dict(dim=(0, 2)), dict(axis=0)],
                         ids=["all-dims", "dim1", "dim-1-keepdim", "dims-0-2", "axis0"])
def test_all_and_any_match_torch(name, kwargs, rng):
    for x in [rng.integers(0, 2, (2, 3, 4)).astype(bool), rng.integers(0, 3, (2, 3, 4)), with_nans(2, 3, 4)(rng),
              np.zeros((2, 0, 4))]:
        ours, theirs = getattr(Tensor(x), name)(**kwargs), getattr(torch.from_numpy(x), name)(**kwargs)
        assert ours.dtype == np.bool_ and theirs.dtype == torch.bool
        np.testing.assert_array_equal(ours.data, theirs.numpy())


# --------------------------------------------------------------------------- clamp
CLAMP_BOUNDS = [(0.0, 1.0), (-0.5, None), (None, 0.25), (1.0, -1.0), (0, 0)]


@pytest.mark.parametrize("lo, hi", CLAMP_BOUNDS, ids=[f"{lo}-{hi}" for lo, hi in CLAMP_BOUNDS])
@pytest.mark.parametrize("spelling", ["F.clamp", "Tensor.clamp", "Tensor.clip"])
@dtypes()
def test_clamp_matches_torch(lo, hi, spelling, dtype, rng, xp):
    """Values and gradients, NaN inputs (NaN out, gradient 0) and inverted bounds included."""
    if spelling == "F.clamp":
        ours, theirs = (lambda x: F.clamp(x, lo, hi)), (lambda x: torch.clamp(x, lo, hi))
    else:
        name = spelling.split(".")[1]
        ours = theirs = lambda x: getattr(x, name)(min=lo, max=hi)
    check_op(ours, theirs, [with_nans(4, 6)(rng)], dtype=dtype, rng=rng, xp=xp)
    check_op(ours, theirs, [np.array([-1.0, -0.5, 0.0, 0.25, 1.0, 2.0])], dtype=dtype, rng=rng, xp=xp)


@pytest.mark.parametrize("lo, hi", [(1, 3), (0.5, 2), (None, 2.5)])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float32])
def test_clamp_promotes_like_torch(lo, hi, dtype):
    x = np.arange(5).astype(dtype)
    ours, theirs = F.clamp(Tensor(x), lo, hi), torch.clamp(torch.from_numpy(x), lo, hi)
    assert TORCH_OF[ours.dtype] == theirs.dtype
    np.testing.assert_array_equal(ours.data, theirs.numpy())


def _clamp_edges(shape):
    """x, lo, hi hitting every branch of the gradient rule: x below, at and above each bound,
    lo == hi, lo > hi, and a NaN in each of the three (where the arrays line up)."""
    def make(rng):
        x = np.round(rng.standard_normal(shape) * 2, 0)              # integers: exact ties
        lo = np.round(rng.standard_normal(shape) - 1, 0)
        hi = lo + np.round(rng.random(shape) * 3, 0) - 0.5 * (rng.random(shape) < 0.2)
        x.flat[:3], lo.flat[3], hi.flat[4] = np.nan, np.nan, np.nan
        lo.flat[5], hi.flat[5], x.flat[5] = 1.0, 1.0, 0.0              # lo == hi, x below: no gradient
        return [x, lo, hi], []
    return make


@pytest.mark.parametrize("shapes", [((4, 6), (4, 6), (4, 6)), ((2, 3, 4), (3, 1), (4,)), ((5,), (2, 5), (1,))],
                         ids=["same", "broadcast", "bounds-wider"])
@pytest.mark.parametrize("which", ["both", "min", "max"])
@pytest.mark.parametrize("spelling", ["F.clamp", "Tensor.clip"])
@dtypes()
def test_clamp_with_tensor_bounds_matches_torch(shapes, which, spelling, dtype, rng, xp):
    """Tensor min / max broadcast against x; gradients for x and both bounds, as torch.clamp's."""
    flat = _clamp_edges((max(int(np.prod(s)) for s in shapes),))(rng)[0]
    x, lo, hi = (a[:int(np.prod(s))].reshape(s) for a, s in zip(flat, shapes, strict=True))
    keep = {"both": (True, True), "min": (True, False), "max": (False, True)}[which]

    def call(fn):
        def run(x, lo, hi):
            return fn(x, lo if keep[0] else None, hi if keep[1] else None)
        return run

    ours = call(F.clamp if spelling == "F.clamp" else lambda x, a, b: x.clip(min=a, max=b))
    theirs = call(lambda x, a, b: torch.clamp(x, a, b))
    # bounds wider than x: torch's forward broadcasts, its backward then fails (x's gradient
    # "doesn't match the broadcast shape"); cnnkit sums it to x's shape. Values only there.
    check_op(ours, theirs, [x, lo, hi], dtype=dtype, rng=rng, xp=xp, requires_grad=[True, keep[0], keep[1]],
             grad=x.shape == np.broadcast_shapes(*shapes))


def test_clamp_with_tensor_bounds_promotes_and_mixes_a_number_like_a_0d_tensor(rng):
    x, lo = np.arange(6).reshape(2, 3), rng.standard_normal(3).astype(np.float32)
    ours, theirs = F.clamp(Tensor(x), lo, 2.5), torch.clamp(torch.from_numpy(x), torch.from_numpy(lo),
                                                            torch.tensor(2.5))
    assert TORCH_OF[ours.dtype] == theirs.dtype == torch.float32
    np.testing.assert_array_equal(ours.data, theirs.numpy())
    ours = F.clamp(Tensor(np.ones(3, np.float32)), np.zeros(3))   # a float64 bound promotes, as torch
    assert ours.dtype == np.float64


def test_clamp_with_tensor_bounds_that_do_not_broadcast_is_refused_like_torch():
    same_error(lambda: F.clamp(Tensor(np.ones(3)), Tensor(np.zeros(2))),
               lambda: torch.clamp(torch.ones(3), torch.zeros(2)), ShapeError,
               r"clamp expects min and max that broadcast against the input, got shapes \(3,\), \(2,\) and None")


def test_clamp_errors_match_torch():
    same_error(lambda: F.clamp(Tensor(np.ones(2))), lambda: torch.clamp(torch.ones(2)), ValueError,
               "at least one of min and max")
