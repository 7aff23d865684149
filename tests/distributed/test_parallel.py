"""Gradient averaging in buckets, broadcasting weights, weight checksums (ranks as threads)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import functional as F
from cnnkit import models, nn, optim
from cnnkit.distributed import (
    DistributedOptimizer,
    GradientBuckets,
    broadcast_parameters,
    check_parameters_in_sync,
    model_fingerprint,
    parameters_digest,
)
from cnnkit.errors import DistributedError
from cnnkit.optim.lr_scheduler import OneCycleLR
from cnnkit.tensor import Tensor
from tests.distributed.threads import run_ranks


def test_the_averaged_gradient_is_the_global_batch_gradient(rng):
    x = rng.standard_normal((12, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, 12)
    model = models.lenet5(generator=np.random.default_rng(0))
    F.cross_entropy(model(Tensor(x)), t).backward()
    expected = {n: p.grad.copy() for n, p in model.named_parameters()}

    def rank(comm):
        m = models.lenet5(generator=np.random.default_rng(0))
        opt = DistributedOptimizer(optim.SGD(m.parameters(), lr=0.1), comm, bucket_cap_mb=0.05)
        part = slice(4 * comm.rank, 4 * comm.rank + 4)
        F.cross_entropy(m(Tensor(x[part])), t[part]).backward()
        opt.synchronize()
        return {n: p.grad for n, p in m.named_parameters()}, len(opt.gradients.buckets)

    for grads, buckets in run_ranks(3, rank):
        assert buckets > 1
        for name, g in expected.items():
            np.testing.assert_allclose(grads[name], g, rtol=1e-5, atol=1e-7, err_msg=name)


def test_buckets_are_filled_last_layer_first_up_to_the_cap():
    model = models.lenet5(generator=np.random.default_rng(0))
    params = list(model.parameters())
    buckets = GradientBuckets(params, bucket_cap_mb=0.1)
    assert buckets.buckets[0].params[0] is params[-1]          # the last layer's gradient is ready first
    assert [p for b in buckets.buckets for p in b.params] == params[::-1]
    cap = 0.1 * 2**20
    for b in buckets.buckets:
        assert sum(p.data.nbytes for p in b.params) <= cap or len(b.params) == 1
    assert len(GradientBuckets(params).buckets) == 1            # 25 MB: LeNet-5 in one
    with pytest.raises(ValueError, match=r"bucket_cap_mb must be positive, got 0"):
        GradientBuckets(params, bucket_cap_mb=0)


def test_a_parameter_without_a_gradient_on_every_rank_keeps_none_and_one_on_some_rank_is_averaged(rng):
    def rank(comm):
        a, b = nn.Linear(3, 2, generator=np.random.default_rng(1)), nn.Linear(3, 2, generator=np.random.default_rng(2))
        unused = nn.Parameter(np.ones(4, np.float32))
        opt = DistributedOptimizer(optim.SGD([*a.parameters(), *b.parameters(), unused], lr=0.1), comm)
        x = Tensor(np.full((1, 3), comm.rank + 1.0, np.float32))
        (a(x).sum() + (b(x).sum() if comm.rank == 0 else 0.0)).backward()   # b: used on rank 0 only
        opt.synchronize()
        return a.weight.grad, b.weight.grad, unused.grad

    (a0, b0, u0), (a1, b1, u1) = run_ranks(2, rank)
    np.testing.assert_allclose(a0, np.full((2, 3), 1.5))       # (1 + 2) / 2
    np.testing.assert_allclose(b0, np.full((2, 3), 0.5))       # (1 + 0) / 2: rank 1's share is zero
    np.testing.assert_array_equal(b0, b1)
    assert u0 is None and u1 is None


def test_broadcast_gives_every_rank_rank0s_weights_and_buffers():
    def rank(comm):
        m = nn.Sequential(nn.Conv2d(1, 2, 3, generator=np.random.default_rng(comm.rank)), nn.BatchNorm2d(2))
        m[1].running_mean[...] = comm.rank + 7
        m[1].num_batches_tracked[...] = comm.rank
        broadcast_parameters(m, comm)
        check_parameters_in_sync(m, comm)
        return parameters_digest(m), m[1].running_mean.copy(), int(m[1].num_batches_tracked)

    results = run_ranks(3, rank)
    assert len({r[0] for r in results}) == 1
    for _, mean, tracked in results:
        np.testing.assert_array_equal(mean, 7)
        assert tracked == 0


def test_diverged_weights_and_different_models_are_refused_on_every_rank():
    def rank(comm):
        m = nn.Linear(2, 2, generator=np.random.default_rng(comm.rank))
        check_parameters_in_sync(m, comm, when="after step 3")

    with pytest.raises(DistributedError, match=r"ranks disagree on the model's weights after step 3: rank 1 differs "
                                                r"from rank 0; the ranks' training steps have diverged"):
        run_ranks(2, rank)
    a, b = models.lenet5(generator=np.random.default_rng(0)), models.lenet5(num_classes=9, generator=np.random.default_rng(0))
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a, values=False) == model_fingerprint(models.lenet5(), values=False)
    assert model_fingerprint(a) == model_fingerprint(models.lenet5(generator=np.random.default_rng(0)))


def test_the_wrapper_shares_groups_and_state_with_the_wrapped_optimizer(rng):
    model = nn.Linear(3, 2, generator=rng)
    inner = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = DistributedOptimizer(inner)
    scheduler = OneCycleLR(opt, max_lr=0.5, total_steps=10)   # a schedule accepts it as an Optimizer
    model(Tensor(np.ones((1, 3), np.float32))).sum().backward()
    opt.step()
    scheduler.step()
    assert inner.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == scheduler.get_last_lr()[0]
    saved = opt.state_dict()
    assert saved["param_groups"] == inner.state_dict()["param_groups"]
    fresh = DistributedOptimizer(optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    fresh.load_state_dict(saved)
    np.testing.assert_array_equal(fresh.state[model.weight]["momentum_buffer"],
                                  inner.state[model.weight]["momentum_buffer"])
    with pytest.raises(TypeError, match=r"wraps a cnnkit optimizer, got list"):
        DistributedOptimizer([])
    with pytest.raises(TypeError, match=r"already averages gradients"):
        DistributedOptimizer(opt)
    with pytest.raises(ValueError, match=r"check_sync=True\) needs model="):
        DistributedOptimizer(inner, check_sync=True)
