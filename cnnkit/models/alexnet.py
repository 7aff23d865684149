"""AlexNet (Krizhevsky et al., 2012) in torchvision's one-tower form (Krizhevsky, 2014)."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..config import accepts_rng
from ..tensor import Tensor
from .registry import register
from .weights import pretrained

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    """AlexNet with torchvision's layers, state_dict keys and default (PyTorch) init.

    features:   conv 3->64 11x11/4 pad 2, relu, maxpool 3/2,
                conv 64->192 5x5 pad 2, relu, maxpool 3/2,
                conv 192->384 3x3, relu, conv 384->256 3x3, relu, conv 256->256 3x3, relu,
                maxpool 3/2
    avgpool:    adaptive average pool to 6x6
    classifier: dropout, linear 9216->4096, relu, dropout, 4096->4096, relu, 4096->K

    Args:
        num_classes: K.
        dropout: drop probability of the two Dropout layers.
        generator: generator for the initial weights and the dropout masks.

    Shape: x (N, 3, H, W) with H, W >= 63 -> logits (N, K); 224x224 is the ImageNet size.
    """

    @accepts_rng
    def __init__(
        self, num_classes: int = 1000, dropout: float = 0.5, *, generator: np.random.Generator | None = None
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2, generator=generator),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2, generator=generator),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1, generator=generator),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, generator=generator),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1, generator=generator),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, generator=generator),
            nn.Linear(256 * 6 * 6, 4096, generator=generator),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout, generator=generator),
            nn.Linear(4096, 4096, generator=generator),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes, generator=generator),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))   # (N, 256, 6, 6)
        x = F.flatten(x, 1)                  # (N, 9216)
        return self.classifier(x)


@register("alexnet", input_shape=(3, 224, 224), head="classifier.6")
def alexnet(
    num_classes: int = 1000, dropout: float = 0.5, *, weights: str | None = None,
    generator: np.random.Generator | None = None,
) -> AlexNet:
    """Return AlexNet (61,100,840 parameters for 1000 classes). See ``AlexNet``.

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("alexnet", weights, alexnet, num_classes=num_classes, dropout=dropout, generator=generator)
    return AlexNet(num_classes, dropout, generator=generator)
