"""Datasets: the indexable protocol, in-memory datasets, subsets and random splits.

A dataset is anything with ``__len__`` and ``__getitem__(i)`` returning one sample,
usually an ``(image, label)`` pair. Datasets held in arrays also define
``get_batch(indices)``, which returns a whole collated batch at once: the DataLoader's
fast path (one fancy-indexing call plus vectorized transforms per batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import config
from ..errors import ShapeError
from ..tensor import Tensor
from .transforms import apply_batch

__all__ = ["ArrayDataset", "Dataset", "Subset", "TensorDataset", "random_split"]


class Dataset:
    """Base class of datasets: a length and one sample per index.

    Subclasses define ``__len__`` and ``__getitem__``; any object with those two works
    with ``DataLoader``. Defining ``get_batch(indices)`` too enables the fast path.
    """

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not define __len__")

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define __getitem__")


def _unwrap(array: Any) -> np.ndarray:
    return np.asarray(array.data if isinstance(array, Tensor) else array)


class TensorDataset(Dataset):
    """Samples taken along the first axis of equally long arrays: ``ds[i] = (a[i], b[i], ...)``.

    Args:
        *arrays: NumPy arrays or cnnkit Tensors with the same first dimension.
        transform: optional transform of the first array's samples (e.g. augmentation).

    Shape: each array (N, ...); a sample is a tuple of (...) slices.
    """

    def __init__(self, *arrays: Any, transform: Callable | None = None):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        self.arrays = tuple(_unwrap(a) for a in arrays)
        lengths = [len(a) if a.ndim else None for a in self.arrays]
        if any(n != lengths[0] for n in lengths) or lengths[0] is None:
            raise ShapeError(
                f"TensorDataset expects arrays with one first dimension, got shapes "
                f"{[a.shape for a in self.arrays]}"
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> tuple:
        sample = [a[index] for a in self.arrays]
        if self.transform is not None:
            sample[0] = self.transform(sample[0])
        return tuple(sample)

    def get_batch(self, indices: np.ndarray) -> tuple:
        batch = [a[indices] for a in self.arrays]
        batch[0] = apply_batch(self.transform, batch[0])
        return tuple(batch)


class ArrayDataset(Dataset):
    """Images and integer labels held in memory (the base of MNIST, CIFAR10, ...).

    Attributes:
        data: the images, uint8 (N, H, W) or (N, H, W, C), as the files store them.
        targets: the labels, int64 (N,).
        classes: the class names, ``classes[k]`` for label k.
        transform: applied to each image (vectorized over a batch when it is a ``Transform``).
        target_transform: applied to each label.

    A sample is ``(transform(data[i]), target_transform(int(targets[i])))``; without a
    transform the image is the raw uint8 array, so add ``ToTensor()`` to get float32
    (C, H, W) in [0, 1].
    """

    classes: list[str] = []

    def __init__(
        self,
        data: np.ndarray,
        targets: np.ndarray,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ):
        if len(data) != len(targets):
            raise ShapeError(
                f"{type(self).__name__} images and labels differ in length: {data.shape} vs {targets.shape}"
            )
        self.data = data
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.data[index], int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(images, labels)`` for ``indices``, transformed and stacked."""
        images = apply_batch(self.transform, self.data[indices])
        targets = self.targets[indices]
        if self.target_transform is not None:
            targets = np.asarray([self.target_transform(int(t)) for t in targets])
        return images, targets

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(N={len(self)}, image shape {self.data.shape[1:]}, "
            f"{len(self.classes) or 'unnamed'} classes, transform={self.transform!r})"
        )


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Any, indices: Sequence[int] | np.ndarray):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __getattr__(self, name: str) -> Any:
        # get_batch exists exactly when the wrapped dataset has it
        if name == "get_batch" and hasattr(self.dataset, "get_batch"):
            return lambda indices: self.dataset.get_batch(self.indices[indices])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def random_split(
    dataset: Any,
    lengths: Sequence[int | float],
    generator: np.random.Generator | None = None,
) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random subsets of the given lengths.

    Args:
        dataset: any dataset.
        lengths: sizes summing to ``len(dataset)``, or fractions summing to 1 (the
            remainder of the rounding goes to the first subsets, one each, as PyTorch).
        generator: the permutation's generator (default: cnnkit's default generator).

    Returns:
        One ``Subset`` per length.
    """
    n = len(dataset)
    if all(isinstance(x, float) for x in lengths) and abs(sum(lengths) - 1) < 1e-9:
        sizes = [int(np.floor(n * f)) for f in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
    else:
        sizes = [int(x) for x in lengths]
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ValueError(
            f"random_split lengths must be sizes summing to the dataset length {n} "
            f"or fractions summing to 1, got {list(lengths)}"
        )
    generator = generator if generator is not None else config.default_generator()
    order = generator.permutation(n)
    bounds = np.cumsum([0] + sizes)
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
