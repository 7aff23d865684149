"""VGG (Simonyan and Zisserman, 2015): stacks of 3x3 convolutions, configurations A, B, D, E."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import functional as F
from .. import nn
from ..config import accepts_rng
from ..nn import init
from ..tensor import Tensor
from .registry import register
from .weights import pretrained

__all__ = [
    "VGG", "CONFIGS", "make_layers", "init_vgg_weights",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
]

# Output channels of each 3x3 conv (padding 1), "M" a 2x2 max pool with stride 2.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],                # VGG-11
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],       # VGG-13
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M"],                                                          # VGG-16
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],                                                     # VGG-19
}


@accepts_rng
def make_layers(
    cfg: Sequence[int | str], batch_norm: bool = False, in_channels: int = 3,
    *, generator: np.random.Generator | None = None,
) -> nn.Sequential:
    """Return the convolutional part of a VGG as one Sequential (torchvision's numbering).

    Each number v adds conv 3x3 pad 1 -> v channels, [BatchNorm2d(v)], ReLU; "M" adds
    max pooling 2x2 stride 2.
    """
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1, generator=generator))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        in_channels = int(v)
    return nn.Sequential(*layers)


@accepts_rng
def init_vgg_weights(model: nn.Module, generator: np.random.Generator, linear_std: float | None = 0.01) -> None:
    """Apply torchvision's VGG init to every layer of ``model``.

    Conv: kaiming normal, fan_out, relu gain (std = sqrt(2 / (F*KH*KW))), bias 0.
    BatchNorm: weight 1, bias 0. Linear: N(0, linear_std**2), bias 0 (None: keep PyTorch's
    default Linear init).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            init.ones_(m.weight)
            init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            init.normal_(m.weight, 0.0, linear_std, generator=generator)
            init.zeros_(m.bias)


class VGG(nn.Module):
    """A VGG network for ImageNet-size input, with torchvision's layers, keys and init.

    features:   ``make_layers(cfg)``: five stages, each ending in a 2x2 max pool (/32)
    avgpool:    adaptive average pool to 7x7 (so inputs other than 224x224 work)
    classifier: linear 25088->4096, relu, dropout, 4096->4096, relu, dropout, 4096->K

    Args:
        features: the convolutional part (see ``make_layers``).
        num_classes: K.
        init_weights: apply ``init_vgg_weights`` (False keeps PyTorch's default layer init,
            which is quicker when weights will be loaded anyway).
        dropout: drop probability of the two Dropout layers.
        generator: generator for the initial weights and the dropout masks.

    Shape: x (N, 3, H, W) with H, W >= 32 -> logits (N, K); 224x224 is the ImageNet size.
    """

    @accepts_rng
    def __init__(
        self, features: nn.Module, num_classes: int = 1000, init_weights: bool = True,
        dropout: float = 0.5, *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096, generator=generator),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout, generator=generator),
            nn.Linear(4096, 4096, generator=generator),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout, generator=generator),
            nn.Linear(4096, num_classes, generator=generator),
        )
        if init_weights:
            init_vgg_weights(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))   # (N, 512, 7, 7)
        x = F.flatten(x, 1)                  # (N, 25088)
        return self.classifier(x)


def _vgg(cfg: str, batch_norm: bool, num_classes: int, generator, **kwargs) -> VGG:
    return VGG(make_layers(CONFIGS[cfg], batch_norm, generator=generator), num_classes, generator=generator, **kwargs)


@register("vgg11", input_shape=(3, 224, 224), head="classifier.6")
def vgg11(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> VGG:
    """Return VGG-11 (configuration A; 132,863,336 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("vgg11", weights, vgg11, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return _vgg("A", False, num_classes, generator, **kwargs)


@register("vgg13", input_shape=(3, 224, 224), head="classifier.6")
def vgg13(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> VGG:
    """Return VGG-13 (configuration B; 133,047,848 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("vgg13", weights, vgg13, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return _vgg("B", False, num_classes, generator, **kwargs)


@register("vgg16", input_shape=(3, 224, 224), head="classifier.6")
def vgg16(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> VGG:
    """Return VGG-16 (configuration D; 138,357,544 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("vgg16", weights, vgg16, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return _vgg("D", False, num_classes, generator, **kwargs)


@register("vgg19", input_shape=(3, 224, 224), head="classifier.6")
def vgg19(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> VGG:
    """Return VGG-19 (configuration E; 143,667,240 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("vgg19", weights, vgg19, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return _vgg("E", False, num_classes, generator, **kwargs)


@register("vgg11_bn", input_shape=(3, 224, 224), head="classifier.6")
def vgg11_bn(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> VGG:
    """Return VGG-11 with BatchNorm after each conv (132,868,840 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("vgg11_bn", weights, vgg11_bn, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return _vgg("A", True, num_classes, generator, **kwargs)


@register("vgg13_bn", input_shape=(3, 224, 224), head="classifier.6")
def vgg13_bn(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> VGG:
    """Return VGG-13 with BatchNorm after each conv (133,053,736 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("vgg13_bn", weights, vgg13_bn, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return _vgg("B", True, num_classes, generator, **kwargs)


@register("vgg16_bn", input_shape=(3, 224, 224), head="classifier.6")
def vgg16_bn(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> VGG:
    """Return VGG-16 with BatchNorm after each conv (138,365,992 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("vgg16_bn", weights, vgg16_bn, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return _vgg("D", True, num_classes, generator, **kwargs)


@register("vgg19_bn", input_shape=(3, 224, 224), head="classifier.6")
def vgg19_bn(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> VGG:
    """Return VGG-19 with BatchNorm after each conv (143,678,248 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("vgg19_bn", weights, vgg19_bn, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return _vgg("E", True, num_classes, generator, **kwargs)
