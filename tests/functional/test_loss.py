"""Losses: float64 finite-difference gradients (soft targets included) and errors (runs without PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor
from cnnkit.errors import ShapeError

from .inputs import Check, checks, classes, const, normal, probabilities

W4 = np.array([0.5, 2.0, 1.0, 1.5])

GRADCHECKS = [
    Check("cross_entropy", F.cross_entropy, normal(4, 3), classes(3, 4)),
    Check("cross_entropy-weight-sum", lambda x, t: F.cross_entropy(x, t, weight=W4, reduction="sum"), normal(5, 4),
          classes(4, 5)),
    Check("cross_entropy-ignore-none", lambda x, t: F.cross_entropy(x, t, ignore_index=1, reduction="none"),
          normal(5, 3), const([0, 1, 2, 1, 0])),
    Check("cross_entropy-smoothing-weight-ignore",
          lambda x, t: F.cross_entropy(x, t, weight=W4, ignore_index=-100, label_smoothing=0.2), normal(4, 4),
          const([3, -100, 0, 2])),
    Check("cross_entropy-spatial", lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), normal(2, 3, 2, 2),
          classes(3, 2, 2, 2)),
    # probability targets are inputs too: both gradients are checked
    Check("cross_entropy-probabilities", lambda x, q: F.cross_entropy(x, q, weight=W4, label_smoothing=0.3),
          normal(3, 4), probabilities(3, 4)),
    Check("cross_entropy-probabilities-spatial-none", lambda x, q: F.cross_entropy(x, q, reduction="none"),
          normal(2, 4, 2, 1), probabilities(2, 4, 2, 1)),
    Check("nll_loss", F.nll_loss, normal(4, 3), classes(3, 4)),
    Check("nll_loss-weight-ignore-spatial", lambda x, t: F.nll_loss(x, t, weight=W4[:3], ignore_index=2),
          normal(2, 3, 2, 2), classes(3, 2, 2, 2)),
    Check("nll_loss-none", lambda x, t: F.nll_loss(x, t, reduction="none"), normal(4, 3), classes(3, 4)),
    Check("mse_loss", F.mse_loss, normal(3, 4), normal(3, 4)),
    Check("mse_loss-sum", lambda x, t: F.mse_loss(x, t, reduction="sum"), normal(2, 3), normal(2, 3)),
    Check("mse_loss-none", lambda x, t: F.mse_loss(x, t, reduction="none"), normal(2, 3), normal(2, 3)),
    Check("bce_with_logits", F.binary_cross_entropy_with_logits, normal(3, 4), lambda rng: rng.random((3, 4))),
    Check("bce_with_logits-weight-pos_weight-sum",
          lambda x, t: F.binary_cross_entropy_with_logits(x, t, weight=W4, reduction="sum", pos_weight=W4[::-1]),
          lambda rng: 3 * rng.standard_normal((3, 4)), lambda rng: rng.random((3, 4))),
    Check("bce_with_logits-none", lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none"),
          normal(2, 3), lambda rng: rng.random((2, 3))),
    # probabilities away from 0 and 1 (where the gradient's denominator is clamped): both inputs
    Check("binary_cross_entropy-weight", lambda x, t: F.binary_cross_entropy(x, t, weight=W4),
          lambda rng: rng.uniform(0.05, 0.95, (3, 4)), lambda rng: rng.random((3, 4))),
    Check("binary_cross_entropy-none", lambda x, t: F.binary_cross_entropy(x, t, reduction="none"),
          lambda rng: rng.uniform(0.05, 0.95, (2, 3)), lambda rng: rng.random((2, 3))),
    Check("l1_loss", F.l1_loss, normal(3, 4), normal(3, 4)),
    Check("smooth_l1_loss", lambda x, t: F.smooth_l1_loss(x, t, reduction="sum", beta=0.7), normal(3, 4), normal(3, 4)),
    Check("huber_loss", lambda x, t: F.huber_loss(x, t, "none", delta=0.6), normal(3, 4), normal(3, 4)),
]


@checks(GRADCHECKS)
def test_losses_gradcheck(check, rng):
    check.run(rng)


def test_soft_targets_receive_their_gradient(rng):
    """d loss / d q[i, k] = -(1 - e) w[k] log p[i, k] / M: knowledge distillation trains through it."""
    x, q = rng.standard_normal((3, 4)), probabilities(3, 4)(rng)
    target = Tensor(q, requires_grad=True)
    F.cross_entropy(Tensor(x), target).backward()
    log_p = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(target.grad, -log_p / 3, rtol=1e-12)


def test_loss_errors_name_the_loss_and_what_was_received():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="does not support ignore_index, got ignore_index=2"):
        F.cross_entropy(x, np.full((3, 4), 0.25), ignore_index=2)
    with pytest.raises(ShapeError, match=r"cross_entropy expects target of shape \(3,\) for input of shape "
                                         r"\(3, 4\), got \(4,\)"):
        F.cross_entropy(x, np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="cross_entropy target 7 is out of range for 4 classes"):
        F.cross_entropy(x, np.array([0, 7, 1]))
    with pytest.raises(ValueError, match="cross_entropy target -1 is out of range for 4 classes"):
        F.cross_entropy(x, np.array([0, -1, 9]))  # the first bad target, in row order
    with pytest.raises(ValueError, match="mse_loss expects reduction in"):
        F.mse_loss(x, x, reduction="avg")


def test_cross_entropy_range_check_skips_ignored_rows_and_empty_batches():
    x = Tensor(np.zeros((3, 4)))
    loss = F.cross_entropy(x, np.array([0, -5, 3]), ignore_index=-5, reduction="sum")
    np.testing.assert_allclose(loss.data, 2 * np.log(4))
    empty = F.cross_entropy(Tensor(np.zeros((0, 4))), np.zeros(0, dtype=np.int64), reduction="sum")
    assert empty.data == 0


def test_losses_need_at_least_one_class():
    with pytest.raises(ShapeError, match=r"cross_entropy expects at least one class \(input shape \(2, 0\) has K = 0\)"):
        F.cross_entropy(Tensor(np.zeros((2, 0))), np.zeros(2, dtype=np.int64))
