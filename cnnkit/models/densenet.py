"""DenseNet (Huang et al., 2017), DenseNet-BC form, with torchvision's keys."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .. import functional as F
from .. import nn
from ..config import accepts_rng
from ..nn import init
from ..tensor import Tensor
from .registry import register
from .weights import pretrained

__all__ = ["DenseNet", "DenseLayer", "DenseBlock", "Transition", "densenet121"]


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (bottleneck to bn_size*growth_rate) then BN-ReLU-Conv3x3 (growth_rate).

    Its input is the list of every earlier feature map of the block, concatenated first.

    Shape: list of (N, C_i, H, W) with sum C_i = num_input_features -> (N, growth_rate, H, W).
    """

    @accepts_rng
    def __init__(
        self, num_input_features: int, growth_rate: int, bn_size: int, drop_rate: float,
        *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, bias=False, generator=generator)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False, generator=generator
        )
        self.drop_rate = float(drop_rate)
        self.generator = generator

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        x = F.cat(list(features), 1)                                 # (N, num_input_features, H, W)
        x = self.conv1(self.relu1(self.norm1(x)))                    # (N, bn_size*growth, H, W)
        x = self.conv2(self.relu2(self.norm2(x)))                    # (N, growth, H, W)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training, generator=self.generator)
        return x


class DenseBlock(nn.ModuleDict):
    """``num_layers`` DenseLayers (``denselayer1``...), each fed every earlier output.

    Shape: (N, C, H, W) -> (N, C + num_layers*growth_rate, H, W).
    """

    @accepts_rng
    def __init__(
        self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int,
        drop_rate: float, *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate, generator=generator)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return F.cat(features, 1)


class Transition(nn.Sequential):
    """BN, ReLU, 1x1 conv (halving the channels in DenseNet-BC), 2x2 average pool.

    Shape: (N, C, H, W) -> (N, num_output_features, H/2, W/2).
    """

    @accepts_rng
    def __init__(self, num_input_features: int, num_output_features: int, *, generator=None):
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(num_input_features)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(num_input_features, num_output_features, kernel_size=1, bias=False, generator=generator)),
            ("pool", nn.AvgPool2d(kernel_size=2, stride=2)),
        ]))


class DenseNet(nn.Module):
    """DenseNet-BC with torchvision's layers, state_dict keys and init.

    features:   conv0 7x7/2 (no bias), norm0, relu0, pool0 maxpool 3x3/2 pad 1,
                denseblock1, transition1, ..., denseblock4, norm5
    head:       relu, global average pool, flatten, classifier (Linear)

    Init (torchvision's): conv kaiming normal (fan_in, relu gain), BatchNorm weight 1
    and bias 0, classifier bias 0 (its weight keeps PyTorch's default init).

    Args:
        growth_rate: channels each dense layer adds (k in the paper).
        block_config: dense layers in each of the four blocks.
        num_init_features: channels of conv0.
        bn_size: bottleneck width, as a multiple of growth_rate.
        drop_rate: dropout after each dense layer (0 disables it).
        num_classes: K.
        generator: generator for the initial weights and the dropout masks.

    Shape: x (N, 3, H, W) with H, W >= 29 -> logits (N, K); 224x224 is the ImageNet size.
    """

    @accepts_rng
    def __init__(
        self, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0.0, num_classes: int = 1000,
        *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False, generator=generator)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, num_features, bn_size, growth_rate, drop_rate, generator=generator)
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                transition = Transition(num_features, num_features // 2, generator=generator)
                self.features.add_module(f"transition{i + 1}", transition)
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes, generator=generator)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.features(x))                  # (N, 1024, H/32, W/32) for densenet121
        x = F.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)  # (N, 1024)
        return self.classifier(x)


@register("densenet121", input_shape=(3, 224, 224), head="classifier")
def densenet121(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> DenseNet:
    """Return DenseNet-121 (k=32, blocks 6-12-24-16; 7,978,856 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("densenet121", weights, densenet121, num_classes=num_classes, generator=generator, **kwargs)
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes=num_classes, generator=generator, **kwargs)
