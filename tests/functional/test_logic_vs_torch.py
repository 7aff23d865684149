"""Comparisons, logic, ``where`` and ``masked_fill`` against PyTorch: values, dtypes, gradients, errors.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit  # noqa: E402
import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor  # noqa: E402
from cnnkit.errors import ShapeError  # noqa: E402

from .inputs import normal  # noqa: E402
from .torch_compare import Case, cases, check_op, dtypes, inputs_of, same_error  # noqa: E402

COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
               ">": operator.gt, ">=": operator.ge}
METHODS = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


def _ties(rng, shape, dtype=np.float32):
    """Small integers as floats, a NaN among them: every comparison meets equal values and NaN."""
    x = rng.integers(-2, 3, shape).astype(dtype)
    if x.size:
        x.reshape(-1)[0] = np.nan
    return x


def _assert_same(ours, theirs) -> None:
    assert isinstance(ours, Tensor), f"a {type(ours).__name__}, not a Tensor"
    expected = theirs.numpy()
    assert ours.dtype == expected.dtype, f"dtype {ours.dtype}, torch's {expected.dtype}"
    assert not ours.requires_grad and ours.creator is None
    np.testing.assert_array_equal(ours.data, expected)


# --------------------------------------------------------------------------- comparisons
SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1, 5), (4, 1)), ((), (2, 3)), ((0, 3), (3,))]


@pytest.mark.parametrize("symbol", list(COMPARISONS))
@pytest.mark.parametrize("a_shape, b_shape", SHAPES, ids=[f"{a}x{b}" for a, b in SHAPES])
def test_comparison_of_two_tensors_broadcasts_like_torch(symbol, a_shape, b_shape, rng):
    a, b = _ties(rng, a_shape), _ties(rng, b_shape)
    op = COMPARISONS[symbol]
    x = Tensor(a, requires_grad=True)
    _assert_same(op(x, Tensor(b)), op(torch.from_numpy(a).requires_grad_(), torch.from_numpy(b)))
    _assert_same(getattr(x, METHODS[symbol])(b), getattr(torch, METHODS[symbol])(torch.from_numpy(a),
                                                                                 torch.from_numpy(b)))
    _assert_same(getattr(F, METHODS[symbol])(a, Tensor(b)), op(torch.from_numpy(a), torch.from_numpy(b)))


OPERANDS = {
    "python-int": 1,
    "python-float": 0.5,
    "python-bool": True,
    "numpy-float64-scalar": np.float64(-1.0),
    "numpy-array-float64": np.array([0.0, 1.0, np.nan, -2.0]),
    "numpy-array-int": np.array([[1], [0], [-1]]),
}


@pytest.mark.parametrize("symbol", list(COMPARISONS))
@pytest.mark.parametrize("name", list(OPERANDS))
def test_comparison_with_scalars_and_arrays_either_side_like_torch(symbol, name, rng):
    a = _ties(rng, (3, 4))
    other = OPERANDS[name]
    theirs = other if not isinstance(other, np.ndarray) else torch.from_numpy(other)
    op = COMPARISONS[symbol]
    _assert_same(op(Tensor(a), other), op(torch.from_numpy(a), theirs))
    _assert_same(op(other, Tensor(a)), op(theirs, torch.from_numpy(a)))


@pytest.mark.parametrize("symbol", list(COMPARISONS))
@pytest.mark.parametrize("a, b", [
    (np.array([1, 2, 3]), 2.5),                                       # int tensor vs float: in float
    (np.array([1, 2, 3], np.int32), np.array(2, np.int64)),           # a 0-d int64 does not widen int32
    (np.array([0.1, 0.2], np.float32), 0.1),                          # float32 against its own 0.1
    (np.array([0.1, 0.2], np.float32), np.array(0.1)),                # a 0-d float64 tensor: float32
    (np.array([0.1, 0.2], np.float32), np.array([0.1, 0.2])),         # a float64 tensor: float64
    (np.array([True, False]), 0.5),                                   # bool against a float
    (np.array([True, False]), np.array([False, False])),              # bool against bool
], ids=["int-vs-2.5", "int32-vs-0d-int64", "f32-vs-0.1", "f32-vs-0d-f64", "f32-vs-f64", "bool-vs-0.5",
        "bool-vs-bool"])
def test_comparison_promotes_dtypes_like_torch(symbol, a, b):
    op = COMPARISONS[symbol]
    other = Tensor(b) if isinstance(b, np.ndarray) else b
    theirs = torch.from_numpy(b) if isinstance(b, np.ndarray) else b
    _assert_same(op(Tensor(a), other), op(torch.from_numpy(a), theirs))


@pytest.mark.parametrize("other", [None, "a", object()], ids=["None", "str", "object"])
def test_comparison_with_a_non_number_is_false_as_in_torch(other):
    ours, theirs = Tensor(np.ones(3)), torch.ones(3)
    assert (ours == other) is (theirs == other) is False
    assert (ours != other) is (theirs != other) is True
    with pytest.raises(TypeError):
        theirs < other  # noqa: B015 - the comparison raises
    with pytest.raises(TypeError, match="'<' not supported between instances of 'Tensor'"):
        Tensor(np.ones(3)) < other  # noqa: B015


@pytest.mark.parametrize("symbol", list(COMPARISONS))
def test_comparison_of_shapes_that_do_not_broadcast_names_both(symbol):
    name = METHODS[symbol]
    same_error(lambda: COMPARISONS[symbol](Tensor(np.ones((2, 3))), Tensor(np.ones(4))),
               lambda: COMPARISONS[symbol](torch.ones(2, 3), torch.ones(4)),
               ShapeError, rf"{name} \({symbol}\): shapes \(2, 3\) and \(4,\) do not broadcast together")


def test_a_comparison_is_a_constant_in_the_graph_and_other_branches_keep_their_gradients(rng):
    a = rng.standard_normal((3, 4))
    x, t = Tensor(a, requires_grad=True), torch.from_numpy(a).requires_grad_()

    def loss(v, mask_of):
        mask = mask_of(v > 0)                       # no gradient through the comparison
        return (v * v * mask).sum() + (v * 3).sum()

    ours, theirs = loss(x, lambda m: m.double()), loss(t, lambda m: m.double())
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12)
    ours.backward()
    theirs.backward()
    np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-12)


# --------------------------------------------------------------------------- logic
def _masks(rng, *shape):
    return rng.random(shape) > 0.5


@pytest.mark.parametrize("name, symbol", [("bitwise_and", operator.and_), ("bitwise_or", operator.or_),
                                          ("bitwise_xor", operator.xor)])
def test_and_or_xor_of_bool_and_integer_tensors_like_torch(name, symbol, rng):
    m, n = _masks(rng, 3, 4), _masks(rng, 4)
    i = rng.integers(-4, 5, (3, 4))
    for a, b in [(m, n), (m, i), (i, i[0])]:
        _assert_same(symbol(Tensor(a), Tensor(b)), symbol(torch.from_numpy(a), torch.from_numpy(b)))
        _assert_same(getattr(F, name)(a, Tensor(b)), getattr(torch, name)(torch.from_numpy(a), torch.from_numpy(b)))
    for scalar in (True, False, 1):
        _assert_same(symbol(Tensor(m), scalar), symbol(torch.from_numpy(m), scalar))
        _assert_same(symbol(scalar, Tensor(m)), symbol(scalar, torch.from_numpy(m)))


def test_invert_like_torch(rng):
    m, i = _masks(rng, 2, 3), rng.integers(-4, 5, (2, 3)).astype(np.int32)
    _assert_same(~Tensor(m), ~torch.from_numpy(m))
    _assert_same(~Tensor(i), ~torch.from_numpy(i))
    _assert_same(F.bitwise_not(m), torch.bitwise_not(torch.from_numpy(m)))


@pytest.mark.parametrize("name", ["logical_and", "logical_or", "logical_xor"])
def test_logical_ops_of_any_dtype_like_torch(name, rng):
    a = _ties(rng, (3, 4), np.float64)
    b = rng.integers(-1, 2, (4,))
    ours, theirs = Tensor(a), torch.from_numpy(a)
    _assert_same(getattr(ours, name)(Tensor(b)), getattr(theirs, name)(torch.from_numpy(b)))
    m = _masks(rng, 4)
    _assert_same(getattr(F, name)(a, m), getattr(torch, name)(theirs, torch.from_numpy(m)))
    _assert_same(ours.logical_not(), theirs.logical_not())
    _assert_same(F.logical_not(Tensor(b)), torch.logical_not(torch.from_numpy(b)))


@pytest.mark.parametrize("call", [lambda x: x & x, lambda x: x | True, lambda x: 1 ^ x, lambda x: ~x],
                         ids=["&", "|", "^", "~"])
def test_bitwise_ops_refuse_floats_like_torch(call):
    same_error(lambda: call(Tensor(np.ones(3, np.float32))), lambda: call(torch.ones(3)), TypeError,
               r"is defined for bool and integer tensors only \(as in PyTorch\), got float32")


def test_minus_on_a_bool_tensor_is_refused_like_torch():
    same_error(lambda: -(Tensor(np.ones(2)) > 0), lambda: -(torch.ones(2) > 0), TypeError, "use the `~` operator")


# --------------------------------------------------------------------------- where, masked_fill
WHERE_CASES = [
    Case("where-same-shape", lambda x, y, c: F.where(Tensor(c) > 0, x, y),
         lambda x, y, c: torch.where(c > 0, x, y), inputs_of(normal(3, 4), normal(3, 4), consts=[normal(3, 4)])),
    Case("where-broadcast", lambda x, y, c: cnnkit.where(Tensor(c) > 0, x, y),
         lambda x, y, c: torch.where(c > 0, x, y), inputs_of(normal(2, 1, 4), normal(3, 1), consts=[normal(2, 3, 1)])),
    Case("where-condition-widest", lambda x, y, c: cnnkit.where(Tensor(c) < 0, x, y),
         lambda x, y, c: torch.where(c < 0, x, y), inputs_of(normal(4), normal(), consts=[normal(2, 3, 4)])),
    Case("where-scalar-other", lambda x, c: cnnkit.where(Tensor(c) > 0, x, 0.0),
         lambda x, c: torch.where(c > 0, x, 0.0), inputs_of(normal(3, 4), consts=[normal(3, 4)])),
    Case("where-scalar-input", lambda x, c: cnnkit.where(Tensor(c) > 0, -1.5, x),
         lambda x, c: torch.where(c > 0, -1.5, x), inputs_of(normal(3, 4), consts=[normal(4)])),
    Case("Tensor.where", lambda x, y, c: x.where(Tensor(c) >= 0, y),
         lambda x, y, c: x.where(c >= 0, y), inputs_of(normal(3, 4), normal(4), consts=[normal(3, 4)])),
    Case("masked_fill", lambda x, c: x.masked_fill(Tensor(c) > 0, 0.0),
         lambda x, c: x.masked_fill(c > 0, 0.0), inputs_of(normal(3, 4), consts=[normal(3, 4)])),
    Case("masked_fill-broadcast-mask", lambda x, c: F.masked_fill(x, Tensor(c) > 0, -np.inf),
         lambda x, c: x.masked_fill(c > 0, -np.inf), inputs_of(normal(3, 4), consts=[normal(3, 1)])),
    Case("masked_fill-mask-widens", lambda x, c: x.masked_fill(Tensor(c) > 0, 2.0),
         lambda x, c: x.masked_fill(c > 0, 2.0), inputs_of(normal(4), consts=[normal(3, 1)])),
    Case("masked_fill-0d-value-tensor", lambda x, v, c: x.masked_fill(Tensor(c) > 0, v),
         lambda x, v, c: x.masked_fill(c > 0, v), inputs_of(normal(3, 4), normal(), consts=[normal(3, 4)])),
]


@dtypes()
@cases(WHERE_CASES)
def test_where_and_masked_fill_match_torch_values_and_gradients(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


@pytest.mark.parametrize("a, b", [(1, 0), (1.0, 0), (np.array([1, 2], np.int32), 2.5), (np.array([1, 2]), 7)],
                         ids=["int-int", "float-int", "int32-array-float", "int64-array-int"])
def test_where_promotes_its_candidates_like_torch(a, b):
    cond = np.array([True, False])
    ours_a = Tensor(a) if isinstance(a, np.ndarray) else a
    theirs_a = torch.from_numpy(a) if isinstance(a, np.ndarray) else a
    ours = cnnkit.where(Tensor(cond), ours_a, b)
    theirs = torch.where(torch.from_numpy(cond), theirs_a, b)
    assert ours.dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(ours.data, theirs.numpy())


@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_where_of_a_condition_alone_gives_the_indices_like_torch(shape, rng):
    cond = np.asarray(rng.random(shape) > 0.4)
    ours, theirs = cnnkit.where(Tensor(cond)), torch.where(torch.from_numpy(cond))
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        _assert_same(o, t)


def test_masked_fill_keeps_the_dtype_of_an_integer_tensor_like_torch():
    x, mask = np.array([1, 2, 3]), np.array([True, False, True])
    _assert_same(Tensor(x).masked_fill(Tensor(mask), 2.5), torch.from_numpy(x).masked_fill(torch.from_numpy(mask), 2.5))


def test_where_and_masked_fill_errors_name_what_they_received():
    cond = Tensor(np.array([True, False]))
    same_error(lambda: cnnkit.where(Tensor(np.ones(2, np.float32)), 1.0, 0.0),
               lambda: torch.where(torch.ones(2), 1.0, 0.0),
               TypeError, r"where expects a bool condition \(compare first, e.g. x > 0\), got dtype float32")
    same_error(lambda: cnnkit.where(cond, Tensor(np.ones(3)), 0.0),
               lambda: torch.where(torch.tensor([True, False]), torch.ones(3), 0.0),
               ShapeError, r"where: shapes \(2,\), \(3,\) and \(\) do not broadcast together")
    same_error(lambda: Tensor(np.ones(2)).masked_fill(Tensor(np.ones(2)), 0.0),
               lambda: torch.ones(2).masked_fill(torch.ones(2), 0.0),
               TypeError, "masked_fill expects a bool mask")
    same_error(lambda: Tensor(np.ones(2)).masked_fill(cond, Tensor(np.ones(1))),
               lambda: torch.ones(2).masked_fill(torch.tensor([True, False]), torch.ones(1)),
               ShapeError, r"masked_fill expects a number or a 0-d tensor as value, got shape \(1,\)")
    with pytest.raises(TypeError, match=r"needs both input and other \(or neither\)"):
        cnnkit.where(cond, 1.0)


@pytest.mark.parametrize("largest", [True, False], ids=["maximum", "minimum"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((), (2, 3))],
                         ids=["same", "row", "outer", "0d"])
@dtypes()
def test_maximum_and_minimum_match_torch_with_ties_and_nans(largest, shapes, dtype, rng, xp):
    """Ties share the gradient (half each), a NaN wins, shapes broadcast; x.max(other) is the same op."""
    a = rng.integers(-2, 3, shapes[0]).astype(float)  # many ties
    b = rng.integers(-2, 3, shapes[1]).astype(float)
    if a.ndim:
        a.flat[0] = np.nan
    ours, theirs = (F.maximum, torch.maximum) if largest else (F.minimum, torch.minimum)
    check_op(ours, theirs, [a, b], dtype=dtype, rng=rng, xp=xp)
    method = "max" if largest else "min"
    check_op(lambda a, b: getattr(a, method)(b), lambda a, b: getattr(a, method)(b), [a, b], dtype=dtype, rng=rng,
             xp=xp)


def test_maximum_promotes_dtypes_like_torch():
    a, b = np.array([1, 5, -3], dtype=np.int32), np.array([2.5, 1.0, -3.0], dtype=np.float32)
    for x, y in [(a, b), (b, a), (a, a.astype(np.int64)), (a > 0, a < 0)]:
        ours, theirs = cnnkit.maximum(Tensor(x), Tensor(y)), torch.maximum(torch.from_numpy(x), torch.from_numpy(y))
        assert ours.dtype == theirs.numpy().dtype
        np.testing.assert_array_equal(ours.data, theirs.numpy())
