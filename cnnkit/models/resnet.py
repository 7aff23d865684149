"""ResNet (He et al., 2016) for ImageNet-size input, in torchvision's form (ResNet v1.5).

v1.5: in a Bottleneck the stride sits on the 3x3 convolution, not on the first 1x1
(as in torchvision and most later work). Shortcuts that change shape are a 1x1
convolution and BatchNorm ("option B" of the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import functional as F
from .. import nn
from ..config import accepts_rng
from ..nn import init
from ..nn.norm import conv_batch_norm_relu, sequential_conv_batch_norm
from ..tensor import Tensor
from .registry import register
from .weights import pretrained

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50"]


@accepts_rng
def conv3x3(in_planes: int, out_planes: int, stride: int = 1, *, generator=None) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False, generator=generator)


@accepts_rng
def conv1x1(in_planes: int, out_planes: int, stride: int = 1, *, generator=None) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False, generator=generator)


def _shortcut(block: nn.Module, x: Tensor) -> Tensor:
    """A block's s(x): its ``downsample(x)`` (the convolution and batch norm in one call where
    nothing observes them: ``nn.norm.sequential_conv_batch_norm``), or x itself."""
    return sequential_conv_batch_norm(block.downsample, x) if block.downsample is not None else x


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut: y = relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x)).

    s is ``downsample`` when given (shape-changing blocks), else the identity.

    Shape: (N, inplanes, H, W) -> (N, planes, H/stride, W/stride).
    """

    expansion = 1

    @accepts_rng
    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
        *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, generator=generator)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)  # one module, called twice (as torchvision)
        self.conv2 = conv3x3(planes, planes, generator=generator)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        # relu(bn1(conv1(x))) and relu(bn2(conv2(.)) + s(x)): in eval-mode inference where nothing
        # observes the convolutions' and batch norms' outputs, applied in the convolutions'
        # output passes or one pass after (``nn.norm.conv_batch_norm_relu``)
        out = conv_batch_norm_relu(self.conv1, self.bn1, self.relu, x)
        return conv_batch_norm_relu(self.conv2, self.bn2, self.relu, out, lambda: _shortcut(self, x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, plus a shortcut.

    Shape: (N, inplanes, H, W) -> (N, 4*planes, H/stride, W/stride).
    """

    expansion = 4

    @accepts_rng
    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
        *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width, generator=generator)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, generator=generator)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion, generator=generator)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = conv_batch_norm_relu(self.conv1, self.bn1, self.relu, x)    # as BasicBlock's
        out = conv_batch_norm_relu(self.conv2, self.bn2, self.relu, out)
        return conv_batch_norm_relu(self.conv3, self.bn3, self.relu, out, lambda: _shortcut(self, x))


class ResNet(nn.Module):
    """ResNet with torchvision's layers, state_dict keys and init.

    stem:   conv1 3->64 7x7/2 pad 3, bn1, relu, maxpool 3x3/2 pad 1     (/4)
    layer1..layer4: blocks with 64, 128, 256, 512 planes; the first block of layer2..4
            has stride 2 and a downsample shortcut (conv1x1 + BatchNorm)  (/32)
    head:   avgpool (global average), flatten, fc 512*expansion -> K

    Init (torchvision's): conv weights kaiming normal, fan_out, relu gain; BatchNorm
    weight 1, bias 0; fc keeps PyTorch's default Linear init.

    Args:
        block: BasicBlock or Bottleneck.
        layers: number of blocks in each of the four stages.
        num_classes: K.
        zero_init_residual: start the last BatchNorm of every block at weight 0, so each
            residual branch begins as the identity (Goyal et al., 2017).
        generator: generator for the initial weights.

    Shape: x (N, 3, H, W) -> logits (N, K); any H, W >= 1 runs, 224x224 is the ImageNet size.
    """

    @accepts_rng
    def __init__(
        self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], num_classes: int = 1000,
        zero_init_residual: bool = False, *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False, generator=generator)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, generator)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, generator)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, generator)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, generator)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes, generator=generator)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                init.ones_(m.weight)
                init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    init.zeros_(m.bn2.weight)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, generator) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride, generator=generator),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, generator=generator)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, generator=generator))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(conv_batch_norm_relu(self.conv1, self.bn1, self.relu, x))  # (N, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512*e, H/32, W/32)
        x = F.flatten(self.avgpool(x), 1)                         # (N, 512*e)
        return self.fc(x)


@register("resnet18", input_shape=(3, 224, 224), head="fc")
def resnet18(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> ResNet:
    """Return ResNet-18 (BasicBlock x [2, 2, 2, 2]; 11,689,512 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("resnet18", weights, resnet18, num_classes=num_classes, generator=generator, **kwargs)
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, generator=generator, **kwargs)


@register("resnet34", input_shape=(3, 224, 224), head="fc")
def resnet34(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> ResNet:
    """Return ResNet-34 (BasicBlock x [3, 4, 6, 3]; 21,797,672 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("resnet34", weights, resnet34, num_classes=num_classes, generator=generator, **kwargs)
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, generator=generator, **kwargs)


@register("resnet50", input_shape=(3, 224, 224), head="fc")
def resnet50(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> ResNet:
    """Return ResNet-50 (Bottleneck x [3, 4, 6, 3]; 25,557,032 parameters).

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("resnet50", weights, resnet50, num_classes=num_classes, generator=generator, **kwargs)
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, generator=generator, **kwargs)
