"""fit over ranks: sharded evaluation equals evaluation of the whole set; epoch sums; seeds; fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import nn
from cnnkit.data import TensorDataset
from cnnkit.data import transforms as T
from cnnkit.distributed import DataParallel, dataset_fingerprint, evaluate_sharded, shard_loader
from cnnkit.train import BinaryTask, EpochStats, MulticlassTask, evaluate
from tests.distributed.threads import run_ranks


class Fixed(nn.Module):
    """A 'model' whose outputs are its inputs (the logits are the data)."""

    def forward(self, x):
        return x


@pytest.mark.parametrize("ranks, n, batch", [(2, 101, 16), (3, 50, 7), (4, 3, 2)])   # (4, 3): a rank gets nothing
def test_sharded_evaluation_equals_evaluating_the_whole_set(rng, ranks, n, batch):
    logits = rng.standard_normal((n, 7)).astype(np.float32)
    t = rng.integers(0, 7, n)
    data = TensorDataset(logits, t)
    task = MulticlassTask((1, 3))
    expected = evaluate(Fixed(), [(logits, t)], task=task, confusion=True)

    def rank(comm):
        return evaluate_sharded(Fixed(), shard_loader(data, batch, comm, shuffle=False), comm, task=task,
                                confusion=True, chunk=17)

    for result in run_ranks(ranks, rank):
        assert result["loss"] == pytest.approx(expected["loss"], rel=1e-6)
        assert result["accuracy"] == expected["accuracy"] and result["top3_accuracy"] == expected["top3_accuracy"]
        np.testing.assert_array_equal(result["confusion_matrix"], expected["confusion_matrix"])


def test_sharded_evaluation_of_a_binary_task_gives_the_roc_auc_of_the_whole_set(rng):
    logits = rng.standard_normal((60, 1)).astype(np.float32)
    t = (rng.random(60) < 0.5).astype(np.int64)
    expected = evaluate(Fixed(), [(logits, t)], task=BinaryTask())

    def rank(comm):
        return evaluate_sharded(Fixed(), shard_loader(TensorDataset(logits, t), 8, comm, shuffle=False), comm,
                                task=BinaryTask())

    for result in run_ranks(2, rank):
        for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
            assert result[key] == pytest.approx(expected[key]), key


def test_epoch_sums_are_added_over_ranks():
    def rank(comm):
        stats = EpochStats(MulticlassTask())
        stats.loss_sum, stats.correct, stats.seen, stats.classified = 2.0 * (comm.rank + 1), comm.rank + 3, 10, 10
        DataParallel(comm).reduce_stats(stats)
        return stats.logs()

    for logs in run_ranks(2, rank):
        assert logs["loss"] == pytest.approx(6.0 / 20) and logs["accuracy"] == pytest.approx(7 / 20)


def test_each_epoch_reseeds_every_rank_from_seed_epoch_and_rank():
    data = TensorDataset(np.zeros((20, 1), np.float32), np.arange(20))

    def rank(comm):
        loader = shard_loader(data, 4, comm, seed=11)
        extra = np.random.default_rng(123)
        callback = DataParallel(comm, seed=11, loaders=[loader], generators=[extra])
        draws = []
        for epoch in (0, 1, 0):
            callback.on_epoch_begin(epoch)
            draws.append((loader.sampler.epoch, loader.generator.random(), extra.random(),
                          np.concatenate([t for _, t in loader]).tolist()))
        return draws

    r0, r1 = run_ranks(2, rank)
    assert r0[0] == r0[2] and r1[0] == r1[2]          # epoch 0 again: the same numbers (resume is exact)
    assert r0[0][1:3] != r0[1][1:3]                   # a new epoch: new streams
    assert r0[0][1:3] != r1[0][1:3]                   # another rank: other streams
    assert sorted(r0[0][3] + r1[0][3]) == list(range(20)) and r0[0][3] != r0[1][3]


def test_dataset_fingerprint_sees_the_data_not_the_augmentation_draws(rng):
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    t = rng.integers(0, 3, 40)
    augmented = T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(8, padding=2)])
    a = TensorDataset(x, t, transform=augmented)
    b = TensorDataset(x.copy(), t.copy(), transform=augmented)
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    x2 = x.copy()
    x2[39, 0, 0, 0] += 1
    assert dataset_fingerprint(TensorDataset(x2, t)) != dataset_fingerprint(TensorDataset(x, t))
    assert dataset_fingerprint(TensorDataset(x[:39], t[:39])) != dataset_fingerprint(TensorDataset(x, t))
