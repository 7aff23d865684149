"""Image transforms: ToTensor, Normalize, Resize, random crops, flips and affine jitter.

Each transform is a callable on one sample. Those that subclass ``Transform`` also have
``batch(xs)``, which transforms a whole stack at once (leading axis ``N``); the
DataLoader uses it for array-backed datasets, so augmentation costs a few vectorized
NumPy calls per batch instead of a Python loop over images.

Layouts follow torchvision: ``ToTensor`` turns a uint8 image (H, W) or (H, W, C), or a
PIL image, into float32 (C, H, W) in [0, 1]. Every other transform works on arrays whose
last two axes are (H, W): (C, H, W) after ``ToTensor``, or (H, W) before it.

Random transforms take ``generator``, a ``numpy.random.Generator``; without one they use
cnnkit's default generator (``cnnkit.manual_seed`` seeds it) at call time. One sample
and a batch draw from the same distributions, but not the same numbers.
"""

from __future__ import annotations

from .base import Compose, Lambda, Transform, apply_batch
from .convert import Normalize, ToTensor
from .geometric import (
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    Resize,
    affine,
    resize_output_size,
    resize_weights,
)
from .photo import CenterCrop, ColorJitter, RandomResizedCrop, resized_crop

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Lambda",
    "Normalize",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomVerticalFlip",
    "Resize",
    "ToTensor",
    "Transform",
    "affine",
    "apply_batch",
    "resize_output_size",
    "resize_weights",
    "resized_crop",
]
