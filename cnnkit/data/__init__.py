"""Data: datasets, a DataLoader, transforms and downloads.

    from cnnkit.data import MNIST, DataLoader, transforms as T

    train = MNIST(train=True, transform=T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))]))
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=np.random.default_rng(0))
    for x, t in loader:          # x float32 (64, 1, 28, 28), t int64 (64,)
        ...

MNIST ships inside the package (no network). Fashion-MNIST, KMNIST and CIFAR-10 are
downloaded once, verified, into ``~/.cache/cnnkit`` (or ``$CNNKIT_DATA``, or ``root=``).

Files: ``idx.py`` (the IDX reader), ``mnist.py`` (MNIST and its IDX siblings),
``cifar.py`` (CIFAR-10 binary), ``folder.py`` (ImageFolder), ``dataset.py`` (Dataset,
TensorDataset, Subset, random_split), ``loader.py`` (DataLoader), ``sampler.py``
(DistributedSampler: one rank's shard of each epoch), ``transforms/`` (base,
convert, geometric), ``download.py`` (download with progress, checksum and atomic
write; the cache folder), ``registry.py`` (the datasets the ``cnnkit`` command knows by
name, with shapes and normalization), ``prepare.py`` (photos and drawings as model inputs).
"""

from __future__ import annotations

from . import transforms
from .cifar import CIFAR10, CIFARError, read_cifar_batch
from .dataset import ArrayDataset, Dataset, Subset, TensorDataset, random_split
from .download import DownloadError, data_root, download
from .folder import ImageFolder, load_image
from .idx import IDXError, read_idx
from .loader import DataLoader, default_collate
from .mnist import KMNIST, MNIST, FashionMNIST, load_mnist
from .prepare import compose_mnist_strip, crop_to_aspect, load_strip, prepare_image, resize_picture
from .registry import DATASETS, DatasetSpec, get_dataset, list_datasets
from .sampler import DistributedSampler

__all__ = [
    "ArrayDataset",
    "CIFAR10",
    "CIFARError",
    "DATASETS",
    "DatasetSpec",
    "DataLoader",
    "Dataset",
    "DistributedSampler",
    "DownloadError",
    "FashionMNIST",
    "IDXError",
    "ImageFolder",
    "KMNIST",
    "MNIST",
    "Subset",
    "TensorDataset",
    "compose_mnist_strip",
    "data_root",
    "default_collate",
    "download",
    "get_dataset",
    "list_datasets",
    "load_image",
    "load_mnist",
    "load_strip",
    "prepare_image",
    "crop_to_aspect",
    "resize_picture",
    "random_split",
    "read_cifar_batch",
    "read_idx",
    "transforms",
]
