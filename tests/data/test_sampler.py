"""DistributedSampler: disjoint shards of each epoch's order; the DataLoader's sampler= argument."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.data import DataLoader, DistributedSampler, TensorDataset


def shards(n, ranks, epoch=0, **kw):
    samplers = [DistributedSampler(n, ranks, r, **kw) for r in range(ranks)]
    for s in samplers:
        s.set_epoch(epoch)
    return [s.indices() for s in samplers]


@pytest.mark.parametrize("n, ranks", [(12, 2), (12, 3), (12, 4), (1, 1), (100, 7)])
def test_divisible_datasets_give_every_sample_exactly_once(n, ranks):
    if n % ranks:
        pytest.skip("not divisible")
    parts = shards(n, ranks, epoch=3, seed=9)
    assert all(len(p) == n // ranks for p in parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))


@pytest.mark.parametrize("n, ranks", [(13, 2), (10, 4), (101, 7), (3, 5)])
def test_padding_repeats_the_first_few_of_the_order_so_ranks_get_equal_shares(n, ranks):
    parts = shards(n, ranks, epoch=1, seed=2)
    per_rank = -(-n // ranks)
    assert all(len(p) == per_rank for p in parts)
    counts = np.bincount(np.concatenate(parts), minlength=n)
    assert counts.min() >= 1                           # every sample seen
    assert counts.sum() - n == per_rank * ranks - n    # ranks * ceil(n / ranks) - n repeats
    order = DistributedSampler(n, ranks, 0, seed=2)
    order.set_epoch(1)
    whole = order.order()
    np.testing.assert_array_equal(whole[n:], np.resize(whole[:n], per_rank * ranks - n))


@pytest.mark.parametrize("n, ranks", [(13, 2), (10, 4), (101, 7)])
def test_drop_last_leaves_out_the_tail_of_each_epoch(n, ranks):
    parts = shards(n, ranks, epoch=0, drop_last=True)
    assert all(len(p) == n // ranks for p in parts)
    taken = np.concatenate(parts)
    assert len(set(taken.tolist())) == len(taken) == n - n % ranks


@pytest.mark.parametrize("n, ranks", [(13, 2), (10, 4), (3, 5)])
def test_unpadded_shards_for_evaluation_hold_every_sample_once(n, ranks):
    parts = shards(n, ranks, shuffle=False, pad=False)
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [len(DistributedSampler(n, ranks, r, shuffle=False, pad=False)) for r in range(ranks)] == list(map(len, parts))


def test_the_ranks_kth_batches_together_are_the_kth_global_batch():
    n, ranks, b = 50, 3, 4
    parts = shards(n, ranks, epoch=2, seed=7)
    order = DistributedSampler(n, ranks, 0, seed=7)
    order.set_epoch(2)
    whole = order.order()
    for k in range(len(parts[0]) // b):
        together = sorted(np.concatenate([p[k * b : (k + 1) * b] for p in parts]).tolist())
        assert together == sorted(whole[k * ranks * b : (k + 1) * ranks * b].tolist())


def test_each_epoch_a_new_permutation_the_same_on_every_rank_for_a_seed():
    a, b = DistributedSampler(40, 2, 0, seed=1), DistributedSampler(40, 2, 0, seed=1)
    a.set_epoch(5), b.set_epoch(5)
    np.testing.assert_array_equal(a.indices(), b.indices())       # another process, same numbers
    first = a.indices()
    a.set_epoch(6)
    assert not np.array_equal(first, a.indices())
    c = DistributedSampler(40, 2, 0, seed=2)
    c.set_epoch(5)
    assert not np.array_equal(first, c.indices())
    unshuffled = DistributedSampler(6, 2, 1, shuffle=False)
    assert list(unshuffled) == [1, 3, 5]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_replicas": 0, "rank": 0}, ValueError, r"num_replicas >= 1, got 0"),
    ({"num_replicas": 2, "rank": 2}, ValueError, r"rank in \[0, 1\], got 2"),
    ({"num_replicas": 2, "rank": -1}, ValueError, r"rank in \[0, 1\], got -1"),
    ({"num_replicas": 2.0, "rank": 0}, TypeError, r"integer num_replicas, got 2.0"),
    ({"num_replicas": 2, "rank": 0, "seed": -1}, ValueError, r"non-negative seed, got -1"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        DistributedSampler(10, **kwargs)
    with pytest.raises(ValueError, match=r"set_epoch expects a non-negative integer, got -1"):
        DistributedSampler(10, 1, 0).set_epoch(-1)


def test_dataloader_takes_a_sampler_and_seeds_augmentation_from_its_generator():
    x = np.arange(30, dtype=np.float32).reshape(30, 1)
    data = TensorDataset(x, np.arange(30))
    sampler = DistributedSampler(data, 2, 1, seed=4)
    loader = DataLoader(data, batch_size=4, sampler=sampler, generator=np.random.default_rng(0))
    assert len(loader) == 4                      # 15 samples, batches of 4
    seen = np.concatenate([t for _, t in loader])
    np.testing.assert_array_equal(seen, sampler.indices())
    assert loader._random_transforms()           # a shuffling sampler: batches get their own seeds
    assert not DataLoader(data, sampler=DistributedSampler(data, 2, 1, shuffle=False))._random_transforms()
    with pytest.raises(ValueError, match=r"give sampler= or shuffle=True, not both"):
        DataLoader(data, shuffle=True, sampler=sampler)
