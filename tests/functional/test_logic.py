"""Comparisons, logic and selection without PyTorch: gradients of where / masked_fill, no gradient
through a comparison, the idioms a PyTorch user writes, errors (``test_logic_vs_torch.py`` compares
the values and dtypes with PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import Tensor
from cnnkit.errors import ShapeError

from .inputs import Check, away_from_zero, checks, normal

GRADCHECKS = [
    # The condition comes from a comparison of an input that is itself differentiated: the
    # comparison is a constant in the graph and the selection carries the gradient.
    Check("where-mask-of-input", lambda a, b: F.where(a > 0, a * a, b), away_from_zero(3, 4), normal(4)),
    Check("where-broadcast-both", lambda a, b: cnnkit.where(b < 0, a, b * 2.0), normal(2, 1, 3), away_from_zero(4, 1)),
    Check("where-scalar", lambda a: a.where(a >= 0.0, 0.0) + a, away_from_zero(5)),
    Check("masked_fill", lambda a: (a * 3.0).masked_fill(~(a > 0), -1.0), away_from_zero(3, 4)),
    Check("masked_fill-0d-value", lambda a, v: a.masked_fill(a.abs() > 1.0, v), away_from_zero(3, 4), normal()),
    Check("mask-as-float", lambda a: (a * (a > 0).double()).sum() + (a.abs() < 1.0).double() @ a,
          away_from_zero(4)),
]


@checks(GRADCHECKS)
def test_gradients_through_selections_by_a_comparison(check, rng):
    check.run(rng)


@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
                                "logical_not", "__invert__"])
def test_comparisons_and_logic_never_require_grad(op, xp):
    x = Tensor(xp.asarray(np.array([-1.0, 0.0, 2.0])), requires_grad=True)
    if op == "__invert__":
        y = ~(x > 0)
    else:
        y = getattr(x, op)() if op == "logical_not" else getattr(x, op)(0.0)
    assert y.dtype == np.bool_ and not y.requires_grad and y.creator is None
    with cnnkit.no_grad():
        assert not (x == x).requires_grad


def test_accuracy_idioms_give_plain_numbers():
    logits = Tensor(np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.2, 0.1, 0.3], [1.0, 1.5, 0.0]]),
                    requires_grad=True)
    labels = Tensor(np.array([1, 0, 0, 2]))
    correct = (logits.argmax(1) == labels).sum()
    assert correct.dtype == np.int64 and correct.item() == 2 and type(correct.item()) is int
    assert (logits.argmax(1) == labels).float().mean().item() == 0.5
    assert logits.argmax(1).eq(labels).long().sum().item() == 2
    assert bool((labels == labels).all()) and not (labels > 5).any()
    np.testing.assert_array_equal(logits.detach()[logits > 1.0].data, [2.0, 3.0, 1.5])


def test_masks_combine_with_and_or_xor_and_invert():
    x = Tensor(np.array([-2.0, -0.5, 0.5, 2.0]))
    inside = (x > -1) & (x < 1)
    np.testing.assert_array_equal(inside.data, [False, True, True, False])
    np.testing.assert_array_equal(((x < -1) | (x > 1)).data, (~inside).data)
    np.testing.assert_array_equal(((x > 0) ^ inside).data, [False, True, False, True])


def test_truth_value_of_a_tensor():
    assert bool(Tensor(np.array([[1.0]])) > 0) is True
    assert not Tensor(np.array(0.0)) > 0
    with pytest.raises(ValueError, match=r"Boolean value of Tensor with more than one value is ambiguous "
                                         r"\(shape \(2, 2\)\): reduce it first with .any\(\) or .all\(\)"):
        bool(Tensor(np.ones((2, 2))) > 0)
    with pytest.raises(ValueError, match=r"Boolean value of Tensor with no values is ambiguous \(shape \(0,\)\)"):
        bool(Tensor(np.ones(0)) == 1)


def test_tensors_stay_hashable_by_identity():
    a, b = Tensor(np.ones(2)), Tensor(np.ones(2))
    seen = {a: "a", b: "b"}
    assert seen[a] == "a" and seen[b] == "b" and len({a, b, a}) == 2


def test_comparison_errors_name_the_op_and_the_shapes():
    with pytest.raises(ShapeError, match=r"ge \(>=\): shapes \(2, 3\) and \(2,\) do not broadcast together"):
        Tensor(np.ones((2, 3))) >= np.ones(2)  # noqa: B015 - the comparison raises
    with pytest.raises(ShapeError, match=r"logical_and: shapes \(3,\) and \(4,\) do not broadcast together"):
        F.logical_and(np.ones(3), Tensor(np.ones(4)))
    with pytest.raises(TypeError, match=r"eq \(==\) expects numbers, bools, arrays or tensors, got an operand "
                                        r"of dtype <U1"):
        Tensor(np.ones(2)) == ["a", "b"]  # noqa: B015


def test_comparisons_are_leaves_unless_recorded_for_export():
    from cnnkit import config
    from cnnkit.functional.logic import LogicOp

    x = Tensor(np.array([-1.0, 0.5, 2.0]), requires_grad=True)
    mask = x > 0
    assert mask.creator is None and mask.grad_fn is None and not mask.requires_grad  # as PyTorch
    with config.record_logic():
        recorded = (x > 0) & ~(x == 2.0)
        y = F.where(recorded, x * 3, x)
    assert isinstance(recorded.creator, LogicOp) and recorded.creator.op == "and"
    assert not recorded.requires_grad
    y.sum().backward()   # the recorded mask gets no gradient; x's is that of where
    np.testing.assert_array_equal(x.grad, [1.0, 3.0, 1.0])
    assert not config.is_logic_recorded()
