"""The training cases the MPI equivalence test runs on N ranks and compares with one process."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnkit import models, nn
from cnnkit.data import TensorDataset


@dataclass(frozen=True)
class Case:
    name: str
    model: str          # "lenet5" (no BatchNorm) or "convbn" (BatchNorm2d, converted to SyncBatchNorm2d)
    sync_bn: bool
    samples: int        # training samples (not a multiple of the ranks: padding is exercised)
    batch: int          # per rank
    epochs: int
    lr: float
    seed: int
    drop_last: bool = False
    bucket_mb: float = 25.0


CASES = (
    Case("lenet5", "lenet5", False, samples=83, batch=8, epochs=2, lr=0.05, seed=3),
    # tiny buckets: several allreduces per step, parameters split over them
    Case("lenet5_buckets", "lenet5", False, samples=64, batch=4, epochs=1, lr=0.05, seed=5, drop_last=True,
         bucket_mb=0.02),
    Case("convbn_sync", "convbn", True, samples=61, batch=6, epochs=2, lr=0.05, seed=4),
)


class ConvBN(nn.Module):
    """Two conv + BatchNorm blocks and a linear head: small, but BatchNorm shapes the gradients."""

    def __init__(self, generator: np.random.Generator):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, generator=generator), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, generator=generator), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(8, 5, generator=generator)

    def forward(self, x):
        return self.fc(self.features(x))


def make_model(case: Case) -> nn.Module:
    generator = np.random.default_rng(case.seed)
    if case.model == "lenet5":
        return models.lenet5(generator=generator)
    return ConvBN(generator)


def make_data(case: Case) -> tuple[TensorDataset, TensorDataset]:
    """Random images and labels (train, validation), the same on every rank."""
    rng = np.random.default_rng(100 + case.seed)
    shape, classes = ((1, 28, 28), 10) if case.model == "lenet5" else ((3, 8, 8), 5)
    x = rng.standard_normal((case.samples + 23,) + shape).astype(np.float32)
    t = rng.integers(0, classes, size=case.samples + 23).astype(np.int64)
    return TensorDataset(x[: case.samples], t[: case.samples]), TensorDataset(x[case.samples :], t[case.samples :])
