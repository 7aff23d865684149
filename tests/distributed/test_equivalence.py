"""N ranks x batch b == one process x batch N*b: real ``mpiexec -n 2`` runs against one process.

The worker (tests/distributed/workers/equivalence.py) trains each case of cases.py with
cnnkit.distributed (DistributedSampler shards, DistributedOptimizer with a weight checksum
after every step, SyncBatchNorm2d, fit with the DataParallel callback); here one process
trains the same model on the global batches (the padded epoch order cut into batches of
N*b, plain BatchNorm2d) and the weights, running statistics and logs must agree to 1e-5.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnkit import functional as F
from cnnkit import optim
from cnnkit.data import DistributedSampler
from cnnkit.tensor import Tensor
from cnnkit.train import evaluate
from tests.distributed.cases import CASES, make_data, make_model
from tests.distributed.mpi import RANKS, run_mpi

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    run_mpi(["tests/distributed/workers/equivalence.py", str(out)], timeout=600)
    return out


def one_process(case):
    """Train ``case`` in this process on the global batches; return (model, per-epoch logs)."""
    model = make_model(case)
    train_set, val_set = make_data(case)
    opt = optim.SGD(model.parameters(), lr=case.lr, momentum=0.9, weight_decay=1e-4)
    sampler = DistributedSampler(train_set, RANKS, 0, seed=case.seed, drop_last=case.drop_last)
    logs = {"loss": [], "val_loss": [], "val_accuracy": []}
    global_batch = RANKS * case.batch
    for epoch in range(case.epochs):
        sampler.set_epoch(epoch)
        order = sampler.order()
        model.train()
        loss_sum = 0.0
        for start in range(0, len(order), global_batch):
            x, t = train_set.get_batch(order[start : start + global_batch])
            # the ranks' mean losses, averaged: the mean over the global batch when shards are even
            loss = F.cross_entropy(model(Tensor(x)), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.data) * len(t)
        logs["loss"].append(loss_sum / len(order))
        val = evaluate(model, [val_set.get_batch(np.arange(len(val_set)))], confusion=False)
        logs["val_loss"].append(val["loss"])
        logs["val_accuracy"].append(val["accuracy"])
    return model, logs


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_ranks_train_as_one_process_on_the_global_batch(results, case):
    saved = np.load(results / f"{case.name}.npz")
    model, logs = one_process(case)
    for key, expected in model.state_dict().items():
        np.testing.assert_allclose(saved[f"state/{key}"], expected, rtol=1e-5, atol=1e-5, err_msg=key)
    for key, expected in logs.items():
        np.testing.assert_allclose(saved[f"log/{key}"], expected, rtol=1e-5, atol=1e-6, err_msg=key)


def test_sync_batchnorm_tracks_the_global_batch_statistics(results):
    case = next(c for c in CASES if c.sync_bn)
    saved = np.load(results / f"{case.name}.npz")
    # one process with BatchNorm2d on the global batch: the running statistics agree
    model, _ = one_process(case)
    stats = [k for k in model.state_dict() if "running" in k or "num_batches" in k]
    assert len(stats) == 6
    for key in stats:
        np.testing.assert_allclose(saved[f"state/{key}"], model.state_dict()[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_sample_once_per_epoch_in_disjoint_shards(results, case):
    indices = np.load(results / f"{case.name}.npz")["indices"]     # (ranks, epochs, per rank)
    ranks, epochs, per_rank = indices.shape
    assert ranks == RANKS
    n = case.samples
    for epoch in range(epochs):
        taken = indices[:, epoch].reshape(-1)
        counts = np.bincount(taken, minlength=n)
        if case.drop_last:
            assert per_rank == n // RANKS and counts.max() == 1 and counts.sum() == n - n % RANKS
        else:
            # padded as PyTorch's DistributedSampler: every sample at least once, n % ranks... extra
            assert per_rank == -(-n // RANKS)
            assert counts.min() == 1 and counts.sum() == per_rank * RANKS
            assert (counts == 2).sum() == per_rank * RANKS - n
        if n % RANKS == 0 or case.drop_last:
            assert counts.max() == 1
    if epochs > 1:
        assert not np.array_equal(indices[:, 0], indices[:, 1])  # a new permutation each epoch


def test_gradients_travel_in_the_requested_buckets(results):
    assert int(np.load(results / "lenet5.npz")["buckets"]) == 1
    assert int(np.load(results / "lenet5_buckets.npz")["buckets"]) > 3


def test_communicator_collectives(results):
    checks = json.loads((results / "comm.json").read_text())
    assert checks["allgather"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert checks["max"] == [1, 0] and checks["min"] == [0, -1]
    assert checks["sum"] == [2.0, 2.0, 2.0]
    assert checks["broadcast"] == [0.0, 1.0, 2.0, 3.0]
    assert checks["bytes"] == "from rank 0"
    assert checks["check_same"] == "ranks disagree on a value: rank 1 differs from rank 0"
