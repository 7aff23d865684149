"""batch_norm: float64 finite-difference gradients (runs without PyTorch)."""

from __future__ import annotations

import numpy as np

import cnnkit.functional as F

from .inputs import Check, checks, normal, positive


def batch_norm_train(x, gamma, beta):
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-3)


def batch_norm_eval(x, gamma, beta):
    stats = np.array([0.2, -0.1, 0.5]), np.array([0.7, 1.3, 2.0])
    return F.batch_norm(x, *stats, gamma, beta, training=False)


def batch_norm_train_with_stats(x, gamma, beta):
    # fresh running statistics per call: the update is a side effect, not an output
    return F.batch_norm(x, np.zeros(3), np.ones(3), gamma, beta, training=True, momentum=0.5)


GRADCHECKS = [
    Check("batch_norm-train-2d", batch_norm_train, normal(5, 3), positive(3), normal(3)),
    Check("batch_norm-train-4d", batch_norm_train, normal(2, 3, 2, 2), positive(3), normal(3)),
    Check("batch_norm-train-3d-running-stats", batch_norm_train_with_stats, normal(3, 3, 2), positive(3), normal(3)),
    Check("batch_norm-train-no-affine", lambda x: F.batch_norm(x, None, None, training=True), normal(4, 3, 2, 1)),
    Check("batch_norm-eval-2d", batch_norm_eval, normal(4, 3), positive(3), normal(3)),
    Check("batch_norm-eval-4d", batch_norm_eval, normal(2, 3, 2, 2), positive(3), normal(3)),
]


@checks(GRADCHECKS)
def test_batch_norm_gradcheck(check, rng):
    check.run(rng)
