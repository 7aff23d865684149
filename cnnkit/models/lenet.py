"""LeNet-5 (LeCun et al., 1998) for 1x28x28 images such as MNIST."""

from __future__ import annotations

import numpy as np

from .. import nn
from ..config import accepts_rng
from ..tensor import Tensor
from .registry import register

__all__ = ["LeNet5", "lenet5"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
_POOLINGS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet5(nn.Module):
    """LeNet-5: two conv/pool stages and three fully connected layers.

    features:   conv 1->6 5x5 pad 2 (28x28), act, pool 2 (14x14),
                conv 6->16 5x5 (10x10), act, pool 2 (5x5)
    flatten:    16*5*5 = 400 features
    classifier: linear 400->120, act, 120->84, act, 84->num_classes

    The three parts are separate attributes so that a tool can rewrite ``classifier``
    (for instance its Linear layers as convolutions) without touching ``features``.

    Args:
        num_classes: K.
        activation: "relu" (modern) or "tanh" (closer to the 1998 network).
        pooling: "max" (modern) or "avg" (the 1998 network's subsampling, without its
            trainable scale and bias).
        generator: generator for the initial weights (PyTorch's default layer init).

    Shape: x (N, 1, 28, 28) -> logits (N, K).
    """

    @accepts_rng
    def __init__(
        self, num_classes: int = 10, activation: str = "relu", pooling: str = "max",
        *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"lenet5 expects activation in {sorted(_ACTIVATIONS)}, got {activation!r}")
        if pooling not in _POOLINGS:
            raise ValueError(f"lenet5 expects pooling in {sorted(_POOLINGS)}, got {pooling!r}")
        act, pool = _ACTIVATIONS[activation], _POOLINGS[pooling]
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2, generator=generator),
            act(),
            pool(2),
            nn.Conv2d(6, 16, kernel_size=5, generator=generator),
            act(),
            pool(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120, generator=generator),
            act(),
            nn.Linear(120, 84, generator=generator),
            act(),
            nn.Linear(84, num_classes, generator=generator),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


@register("lenet5", input_shape=(1, 28, 28), head="classifier.4")
def lenet5(
    num_classes: int = 10, activation: str = "relu", pooling: str = "max",
    *, generator: np.random.Generator | None = None,
) -> LeNet5:
    """Return LeNet-5 (61,706 parameters for 10 classes). See ``LeNet5``."""
    return LeNet5(num_classes, activation, pooling, generator=generator)
