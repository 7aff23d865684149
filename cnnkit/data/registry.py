"""The datasets the ``cnnkit`` command knows by name, with their shapes and normalization.

    train_set, spec = get_dataset("mnist", train=True, augment=True)
    spec.input_shape, spec.mean, spec.std, spec.classes

Mean and standard deviation are per channel, of the training split's pixels in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import transforms as T
from .cifar import CIFAR10
from .dataset import Dataset
from .mnist import KMNIST, MNIST, FashionMNIST

__all__ = ["DatasetSpec", "DATASETS", "get_dataset", "list_datasets"]


@dataclass(frozen=True)
class DatasetSpec:
    """How to load and normalize one dataset (class names come from the dataset class)."""

    cls: type
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.cls.classes)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(MNIST, (1, 28, 28), (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetSpec(FashionMNIST, (1, 28, 28), (0.2860,), (0.3530,)),
    "kmnist": DatasetSpec(KMNIST, (1, 28, 28), (0.1918,), (0.3483,)),
    "cifar10": DatasetSpec(CIFAR10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def list_datasets() -> list[str]:
    """The names ``get_dataset`` accepts."""
    return list(DATASETS)


def get_dataset(
    name: str, train: bool, root: str | None = None, augment: bool = False,
    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
) -> tuple[Dataset, DatasetSpec]:
    """Build the named dataset's split with ``ToTensor``, optional augmentation and ``Normalize``.

    Args:
        name: one of ``DATASETS``.
        train: the training split (else the test split).
        root: folder with the dataset files (default: ``$CNNKIT_DATA`` or the cache).
        augment: for the training split, random shifts and rotations (one-channel
            datasets) or random crops and horizontal flips (CIFAR-10).
        mean, std: normalization (default: the dataset's own).

    Raises:
        ValueError: an unknown name (the message lists the names there are).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[name]
    steps: list[Any] = [T.ToTensor()]
    if augment and train:
        if spec.input_shape[0] == 3:
            steps += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        else:
            steps += [T.RandomAffine(degrees=10, translate=(0.1, 0.1))]
    steps.append(T.Normalize(spec.mean if mean is None else mean, spec.std if std is None else std))
    return spec.cls(root=root, train=train, transform=T.Compose(steps)), spec
