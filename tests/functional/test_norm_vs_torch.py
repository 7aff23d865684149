"""batch_norm against PyTorch: training and eval, affine or not, running statistics, eps checks.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor, nn  # noqa: E402
from cnnkit.backend import as_numpy  # noqa: E402

from .torch_compare import TF, TORCH_DTYPE, assert_close, check_op, dtypes, same_error  # noqa: E402


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", ["weight-bias", "weight", "none"])
@pytest.mark.parametrize("shape", [(8, 3), (1, 4, 5, 3), (4, 2, 3, 3), (3, 5, 7), (2, 1, 1, 2)])
@dtypes()
def test_batch_norm_matches_torch_including_running_stats(shape, affine, training, dtype, rng, xp):
    C = shape[1]
    x = rng.standard_normal(shape) * 2 + 0.5
    mean0, var0 = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    cn_stats = [xp.asarray(mean0.copy()), xp.asarray(var0.copy())]
    th_stats = [torch.from_numpy(mean0.copy()), torch.from_numpy(var0.copy())]
    kw = dict(training=training, momentum=0.3, eps=1e-3)
    inputs = [x, rng.uniform(0.5, 2, C), rng.standard_normal(C)][: {"weight-bias": 3, "weight": 2, "none": 1}[affine]]
    # In training the forward updates the running statistics: run it exactly once.
    check_op(lambda x, *wb: F.batch_norm(x, *cn_stats, *wb, **kw), lambda x, *wb: TF.batch_norm(x, *th_stats, *wb, **kw),
             inputs, dtype=dtype, rng=rng, xp=xp, check_no_grad=not training)
    # running_var is updated with the unbiased batch variance, as PyTorch does
    assert_close(as_numpy(cn_stats[0]), th_stats[0].numpy(), dtype, "running_mean")
    assert_close(as_numpy(cn_stats[1]), th_stats[1].numpy(), dtype, "running_var")
    if not training:
        np.testing.assert_array_equal(as_numpy(cn_stats[0]), mean0)
        np.testing.assert_array_equal(as_numpy(cn_stats[1]), var0)


@dtypes()
def test_batch_norm_running_stats_over_several_steps_match_torch(dtype, rng):
    C = 3
    cn_m, cn_v = np.zeros(C, dtype), np.ones(C, dtype)
    th_m, th_v = torch.zeros(C, dtype=TORCH_DTYPE[np.dtype(dtype)]), torch.ones(C, dtype=TORCH_DTYPE[np.dtype(dtype)])
    for step in range(4):
        x = (rng.standard_normal((5, C, 2, 3)) * (step + 1) + step).astype(dtype)
        F.batch_norm(Tensor(x), cn_m, cn_v, training=True)
        TF.batch_norm(torch.from_numpy(x), th_m, th_v, training=True)
    assert_close(cn_m, th_m.numpy(), dtype, "running_mean")
    assert_close(cn_v, th_v.numpy(), dtype, "running_var")


@dtypes()
def test_batch_norm_training_without_running_stats_matches_torch(dtype, rng, xp):
    x, w, b = rng.standard_normal((4, 3, 2, 2)), rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    check_op(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
             lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True), [x, w, b], dtype=dtype, rng=rng,
             xp=xp)


def test_batch_norm_with_eps_zero_in_eval_matches_torch(rng):
    stats = np.zeros(3), rng.uniform(0.5, 2, 3)
    check_op(lambda x: F.batch_norm(x, *stats, training=False, eps=0.0),
             lambda x: TF.batch_norm(x, *map(torch.from_numpy, stats), training=False, eps=0.0),
             [rng.standard_normal((4, 3))], dtype=np.float64, rng=rng)


@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_batch_norm_refuses_eps_that_is_not_positive_in_training_like_torch(eps, rng):
    x = rng.standard_normal((4, 3))
    same_error(lambda: F.batch_norm(Tensor(x), None, None, training=True, eps=eps),
               lambda: TF.batch_norm(torch.from_numpy(x), None, None, training=True, eps=eps), ValueError,
               f"batch_norm expects eps > 0 in training, got eps={eps}")
    # the layer refuses it earlier than PyTorch's does (at construction, not at the first training step)
    same_error(lambda: nn.BatchNorm1d(3, eps=eps)(Tensor(x)), lambda: torch.nn.BatchNorm1d(3, eps=eps)(
        torch.from_numpy(x).float()), ValueError, "BatchNorm1d expects eps > 0")
    same_error(lambda: F.batch_norm(Tensor(x), np.zeros(3), np.ones(3), eps=-1.0),
               lambda: TF.batch_norm(torch.from_numpy(x), torch.zeros(3), torch.ones(3), eps=-1.0), ValueError,
               "batch_norm expects eps >= 0, got eps=-1.0")
