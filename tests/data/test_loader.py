"""DataLoader, TensorDataset, ArrayDataset, Subset and random_split."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import ShapeError, Tensor
from cnnkit.data import (
    ArrayDataset,
    DataLoader,
    Dataset,
    TensorDataset,
    default_collate,
    random_split,
)
from cnnkit.data import transforms as T


class _Squares(Dataset):
    """A dataset without get_batch: the loader's per-item path."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((1, 2, 2), i, np.float32), i


@pytest.mark.parametrize(
    "n, batch_size, drop_last, sizes",
    [
        (10, 3, False, [3, 3, 3, 1]),
        (10, 3, True, [3, 3, 3]),
        (9, 3, True, [3, 3, 3]),
        (2, 5, True, []),
    ],
)
def test_batch_sizes_and_len(n, batch_size, drop_last, sizes):
    loader = DataLoader(_Squares(n), batch_size=batch_size, drop_last=drop_last)
    assert len(loader) == len(sizes)
    assert [len(t) for _, t in loader] == sizes


def test_per_item_batches_are_stacked_arrays_in_order():
    x, t = next(iter(DataLoader(_Squares(5), batch_size=4)))
    assert x.shape == (4, 1, 2, 2) and x.dtype == np.float32
    assert t.dtype == np.int64 and t.tolist() == [0, 1, 2, 3]


def test_shuffle_is_reproducible_and_reiterable():
    def epochs(seed):
        loader = DataLoader(_Squares(20), batch_size=6, shuffle=True, generator=np.random.default_rng(seed))
        return [np.concatenate([t for _, t in loader]).tolist() for _ in range(3)]

    a = epochs(0)
    assert a == epochs(0) and a != epochs(1)
    assert a[0] != a[1]  # a new order each epoch
    assert all(sorted(epoch) == list(range(20)) for epoch in a)


def test_state_dict_replays_the_next_epochs():
    loader = DataLoader(_Squares(50), batch_size=8, shuffle=True, generator=np.random.default_rng(5))
    list(loader)
    state = loader.state_dict()
    after = [np.concatenate([t for _, t in loader]) for _ in range(2)]
    resumed = DataLoader(_Squares(50), batch_size=8, shuffle=True, generator=np.random.default_rng(999))
    resumed.load_state_dict(state)
    np.testing.assert_array_equal([np.concatenate([t for _, t in resumed]) for _ in range(2)], after)
    state["generator"]["state"]["state"] = 0  # the saved state is a copy, not a live view
    assert loader.state_dict()["generator"]["state"]["state"] != 0


def test_state_dict_from_another_bit_generator_is_refused():
    loader = DataLoader(_Squares(4), shuffle=True, generator=np.random.default_rng(0))
    other = DataLoader(_Squares(4), shuffle=True, generator=np.random.Generator(np.random.MT19937(0)))
    with pytest.raises(
        ValueError, match=r"state is for bit generator 'MT19937', this loader's generator uses PCG64"
    ):
        loader.load_state_dict(other.state_dict())


def test_default_generator_follows_manual_seed():
    loader = DataLoader(_Squares(30), batch_size=30, shuffle=True)
    cnnkit.manual_seed(0)
    first = next(iter(loader))[1]
    cnnkit.manual_seed(0)
    np.testing.assert_array_equal(next(iter(loader))[1], first)
    assert loader.generator is cnnkit.default_generator()


def test_fast_path_equals_the_per_item_path(rng):
    images = rng.integers(0, 256, (23, 6, 6), dtype=np.uint8)
    labels = rng.integers(0, 10, 23)
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.25,))])
    ds = ArrayDataset(images, labels, transform=transform)
    fast = list(DataLoader(ds, batch_size=5))
    slow = list(DataLoader(ds, batch_size=5, collate_fn=default_collate))
    for (xf, tf), (xs, ts) in zip(fast, slow, strict=True):
        assert xf.shape == xs.shape and xf.dtype == np.float32 and tf.dtype == ts.dtype == np.int64
        np.testing.assert_allclose(xf, xs, rtol=1e-6)
        np.testing.assert_array_equal(tf, ts)
    assert ds[3][1] == labels[3] and isinstance(ds[3][1], int)


def test_fast_path_uses_batch_transforms(rng):
    calls = []
    ds = ArrayDataset(
        rng.integers(0, 256, (12, 4, 4), dtype=np.uint8),
        np.zeros(12),
        transform=T.Lambda(lambda x: x, batch_fn=lambda xs: calls.append(len(xs)) or xs),
        target_transform=lambda t: t + 1,
    )
    batches = list(DataLoader(ds, batch_size=5))
    assert calls == [5, 5, 2]
    assert batches[0][1].tolist() == [1] * 5


def test_fast_path_augmentation_is_reproducible_with_a_seeded_generator(rng):
    images = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)

    def run(seed):
        g = np.random.default_rng(seed)
        augment = T.Compose([T.ToTensor(), T.RandomCrop(8, padding=2, generator=g), T.RandomHorizontalFlip(generator=g)])
        loader = DataLoader(
            ArrayDataset(images, np.arange(40), augment), batch_size=16, shuffle=True, generator=g
        )
        return [x for x, _ in loader]

    np.testing.assert_array_equal(np.concatenate(run(3)), np.concatenate(run(3)))


def test_tensor_dataset_indexes_every_array_and_transforms_the_first(rng):
    x, y = rng.random((7, 2, 3, 3)).astype(np.float32), np.arange(7)
    ds = TensorDataset(Tensor(x), y, transform=T.Normalize(0.0, 2.0))
    np.testing.assert_allclose(ds[2][0], x[2] / 2)
    xb, yb = next(iter(DataLoader(ds, batch_size=4)))
    np.testing.assert_allclose(xb, x[:4] / 2)
    assert yb.tolist() == [0, 1, 2, 3]
    with pytest.raises(
        ShapeError,
        match=r"TensorDataset expects arrays with one first dimension, got shapes \[\(7, 2, 3, 3\), \(6,\)\]",
    ):
        TensorDataset(x, y[:6])


def test_random_split_partitions_and_keeps_the_fast_path(rng):
    ds = ArrayDataset(rng.integers(0, 256, (10, 2, 2), dtype=np.uint8), np.arange(10))
    a, b = random_split(ds, [7, 3], generator=np.random.default_rng(0))
    assert len(a) == 7 and len(b) == 3
    assert sorted(np.concatenate([a.indices, b.indices]).tolist()) == list(range(10))
    assert hasattr(a, "get_batch")
    x, t = next(iter(DataLoader(a, batch_size=7)))
    np.testing.assert_array_equal(t, a.indices)
    np.testing.assert_array_equal(x, ds.data[a.indices])
    assert [len(s) for s in random_split(ds, [0.5, 0.3, 0.2], generator=np.random.default_rng(0))] == [
        5,
        3,
        2,
    ]
    assert not hasattr(random_split(_Squares(4), [2, 2])[0], "get_batch")
    with pytest.raises(ValueError, match=r"sizes summing to the dataset length 10 .* got \[3, 3\]"):
        random_split(ds, [3, 3])


def test_collate_errors_and_loader_arguments_are_checked():
    with pytest.raises(ValueError, match=r"cannot stack samples of different shapes \[\(2,\), \(3,\)\]"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(ValueError, match=r"positive integer batch_size, got 0"):
        DataLoader(_Squares(3), batch_size=0)
    with pytest.raises(TypeError, match=r"numpy.random.Generator, got RandomState"):
        DataLoader(_Squares(3), generator=np.random.RandomState(0))
    assert default_collate([{"a": 1.5}, {"a": 2.5}])["a"].dtype == np.float32
