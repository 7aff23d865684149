"""SyncBatchNorm on ranks (threads here; processes in test_equivalence) == BatchNorm on the whole batch."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import nn
from cnnkit.config import default_dtype
from cnnkit.distributed import SyncBatchNorm1d, SyncBatchNorm2d, convert_sync_batchnorm
from cnnkit.errors import ShapeError
from cnnkit.tensor import Tensor
from tests.distributed.threads import run_ranks


def _split(n: int, size: int) -> list[slice]:
    bounds = np.linspace(0, n, size + 1).astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize("shape, ranks", [((7, 3, 4, 5), 2), ((9, 4, 3, 3), 3), ((6, 5), 2), ((5, 2, 6), 3)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_forward_backward_and_running_stats_equal_batchnorm_on_the_whole_batch(rng, shape, ranks, momentum):
    x = rng.standard_normal(shape) * 3 + 5          # a mean far from 0 and a non-unit variance
    gy = rng.standard_normal(shape)
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    Plain = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    Sync = SyncBatchNorm2d if len(shape) == 4 else SyncBatchNorm1d
    with default_dtype(np.float64):
        bn = Plain(C, momentum=momentum)
        bn.weight.data[...], bn.bias.data[...] = gamma, beta
        xt = Tensor(x, requires_grad=True)
        y = bn(xt)
        y.backward(gy)
    parts = _split(shape[0], ranks)

    def rank(comm):
        sbn = Sync(C, momentum=momentum, comm=comm, dtype=np.float64)
        sbn.weight.data[...], sbn.bias.data[...] = gamma, beta
        for _ in range(2):  # a second step: the running statistics keep agreeing
            part = Tensor(x[parts[comm.rank]], requires_grad=True)
            out = sbn(part)
            out.backward(gy[parts[comm.rank]])
        return out.data, part.grad, sbn.weight.grad, sbn.bias.grad, sbn

    # (default_dtype is process-wide: set here, never inside the rank threads)
    results = run_ranks(ranks, rank)
    y2 = bn(Tensor(x))  # the plain layer's second step, for the running statistics
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), y2.data, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), xt.grad, rtol=1e-9, atol=1e-12)
    # parameter gradients: each rank's own share; summed over ranks they are the whole batch's
    # (data parallelism averages them after dividing the loss per rank); two backward passes
    # accumulated on the ranks, one on the plain layer: hence / 2
    np.testing.assert_allclose(sum(r[2] for r in results) / 2, bn.weight.grad, rtol=1e-10)
    np.testing.assert_allclose(sum(r[3] for r in results) / 2, bn.bias.grad, rtol=1e-10)
    for _, _, _, _, sbn in results:
        np.testing.assert_allclose(sbn.running_mean, bn.running_mean, rtol=1e-12)
        np.testing.assert_allclose(sbn.running_var, bn.running_var, rtol=1e-12)
        assert int(sbn.num_batches_tracked) == int(bn.num_batches_tracked) == 2


def test_matches_torch_batchnorm_on_the_concatenated_batch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((10, 3, 5, 5)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    tbn = torch.nn.BatchNorm2d(3)
    tx = torch.tensor(x, requires_grad=True)
    tbn(tx).backward(torch.tensor(gy))

    def rank(comm):
        sbn = SyncBatchNorm2d(3, comm=comm)
        part = Tensor(x[5 * comm.rank : 5 * comm.rank + 5], requires_grad=True)
        sbn(part).backward(gy[5 * comm.rank : 5 * comm.rank + 5])
        return part.grad, sbn.running_var

    results = run_ranks(2, rank)
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results[0][1], tbn.running_var.numpy(), rtol=1e-5)


def test_a_rank_with_an_empty_batch_still_takes_part(rng):
    x = rng.standard_normal((4, 2, 3, 3))

    def rank(comm):
        sbn = SyncBatchNorm2d(2, comm=comm, dtype=np.float64)
        part = x if comm.rank == 0 else x[:0]
        return sbn(Tensor(part)).data

    with default_dtype(np.float64):
        expected = nn.BatchNorm2d(2)(Tensor(x)).data
    full, empty = run_ranks(2, rank)
    np.testing.assert_allclose(full, expected, rtol=1e-10)
    assert empty.shape == (0, 2, 3, 3)


def test_one_value_per_channel_over_all_ranks_is_refused(rng):
    def rank(comm):
        sbn = SyncBatchNorm2d(2, comm=comm)
        return sbn(Tensor(np.ones((1, 2, 1, 1), np.float32) if comm.rank == 0 else np.ones((0, 2, 1, 1), np.float32)))

    with pytest.raises(ShapeError, match=r"more than one value per channel over all ranks, got 1"):
        run_ranks(2, rank)


def test_eval_mode_and_one_process_are_plain_batchnorm(rng):
    x = rng.standard_normal((6, 3, 4, 4)).astype(np.float32)
    bn, sbn = nn.BatchNorm2d(3), SyncBatchNorm2d(3)  # comm: world(), one process here
    np.testing.assert_array_equal(sbn(Tensor(x)).data, bn(Tensor(x)).data)
    bn.eval(), sbn.eval()
    np.testing.assert_array_equal(sbn(Tensor(x)).data, bn(Tensor(x)).data)


def test_convert_keeps_the_same_parameter_objects_and_state_keys(rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, generator=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 5, generator=rng), nn.BatchNorm1d(5))
    model.eval()
    params_before = [id(p) for p in model.parameters()]
    keys_before = list(model.state_dict())
    x = Tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))
    before = model(x).data
    assert convert_sync_batchnorm(model) is model
    assert type(model[1]) is SyncBatchNorm2d and type(model[5]) is SyncBatchNorm1d
    assert isinstance(model[1], nn.BatchNorm2d)  # code that looks for BatchNorm layers still finds them
    assert not model[1].training
    assert [id(p) for p in model.parameters()] == params_before
    assert list(model.state_dict()) == keys_before
    np.testing.assert_array_equal(model(x).data, before)
    convert_sync_batchnorm(model)  # converting twice changes nothing
    assert type(model[1]) is SyncBatchNorm2d
    assert type(convert_sync_batchnorm(nn.BatchNorm2d(3))) is SyncBatchNorm2d
