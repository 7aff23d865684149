"""Networks for 32x32 images (CIFAR-10/100 size): ResNet-20 and a VGG-11 with BatchNorm.

ImageNet-size models are slow on two CPU cores; these train in minutes per epoch.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..config import accepts_rng
from ..nn import init
from ..tensor import Tensor
from .registry import register
from .resnet import BasicBlock
from .vgg import CONFIGS, make_layers

__all__ = ["CifarResNet", "ShortcutA", "VGGCifar", "resnet20", "vgg11_cifar"]


class ShortcutA(nn.Module):
    """The parameter-free shortcut ("option A", He et al. 2016, section 4.2).

    Subsample by taking every ``stride``-th pixel and zero-pad the new channels, half on
    each side: y = pad_channels(x[:, :, ::stride, ::stride]).

    Shape: (N, C, H, W) -> (N, C + 2*pad, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        extra = out_planes - in_planes
        if extra < 0 or extra % 2:
            raise ValueError(
                f"ShortcutA pads channels evenly on both sides: expected out_planes - in_planes "
                f"to be even and >= 0, got {in_planes} -> {out_planes}"
            )
        self.pad, self.stride = extra // 2, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]               # (N, C, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))         # (N, C + 2*pad, H/s, W/s)

    def extra_repr(self) -> str:
        return f"pad={self.pad}, stride={self.stride}"


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016, section 4.2): 6n+2 layers, 16/32/64 channels.

    conv1 3x3 3->16, bn1, relu; layer1..layer3 with n BasicBlocks each (16, 32, 64
    channels; the first block of layer2 and layer3 has stride 2); global average pool;
    fc 64 -> K. Shortcuts that change shape use ``ShortcutA`` (parameter-free option A,
    as in the paper's CIFAR experiments), so ResNet-20 has 0.27M parameters.

    Init: conv kaiming normal, fan_out, relu gain (as torchvision's ResNets); BatchNorm
    weight 1, bias 0; fc keeps PyTorch's default Linear init.

    Args:
        n: blocks per stage (3: ResNet-20, 5: ResNet-32, 9: ResNet-56).
        num_classes: K.
        generator: generator for the initial weights.

    Shape: x (N, 3, 32, 32) -> logits (N, K) (any H, W >= 1 runs).
    """

    @accepts_rng
    def __init__(self, n: int = 3, num_classes: int = 10, *, generator: np.random.Generator | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False, generator=generator)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, 16, n, 1, generator)
        self.layer2 = self._make_layer(16, 32, n, 2, generator)
        self.layer3 = self._make_layer(32, 64, n, 2, generator)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes, generator=generator)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)

    @staticmethod
    def _make_layer(in_planes: int, planes: int, blocks: int, stride: int, generator) -> nn.Sequential:
        shortcut = ShortcutA(in_planes, planes, stride) if stride != 1 or in_planes != planes else None
        layers = [BasicBlock(in_planes, planes, stride, shortcut, generator=generator)]
        layers += [BasicBlock(planes, planes, generator=generator) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))                   # (N, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))             # (N, 64, 8, 8)
        x = F.flatten(self.avgpool(x), 1)                        # (N, 64)
        return self.fc(x)


class VGGCifar(nn.Module):
    """VGG-11 with BatchNorm for 32x32 images, whose head can be made fully convolutional.

    features:   torchvision's ``vgg11_bn`` features (8 convs, 5 max pools): 32x32 -> 1x1
    flatten:    512 features
    classifier: linear 512->512, relu, dropout, 512->512, relu, dropout, 512->K

    Init: conv kaiming normal, fan_out, relu gain, bias 0; BatchNorm 1 and 0; the Linear
    layers keep PyTorch's default init (the N(0, 0.01) of ImageNet VGG shrinks the
    signal of this narrow head).

    Args:
        num_classes: K.
        dropout: drop probability of the two Dropout layers.
        generator: generator for the initial weights and the dropout masks.

    Shape: x (N, 3, 32, 32) -> logits (N, K).
    """

    @accepts_rng
    def __init__(
        self, num_classes: int = 10, dropout: float = 0.5, *, generator: np.random.Generator | None = None
    ):
        super().__init__()
        self.features = make_layers(CONFIGS["A"], batch_norm=True, generator=generator)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(512, 512, generator=generator),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout, generator=generator),
            nn.Linear(512, 512, generator=generator),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout, generator=generator),
            nn.Linear(512, num_classes, generator=generator),
        )
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


@register("resnet20", input_shape=(3, 32, 32), head="fc")
def resnet20(num_classes: int = 10, *, generator: np.random.Generator | None = None) -> CifarResNet:
    """Return ResNet-20 for 32x32 input (option-A shortcuts; 269,722 parameters for 10 classes)."""
    return CifarResNet(3, num_classes, generator=generator)


@register("vgg11_cifar", input_shape=(3, 32, 32), head="classifier.6")
def vgg11_cifar(
    num_classes: int = 10, dropout: float = 0.5, *, generator: np.random.Generator | None = None
) -> VGGCifar:
    """Return the CIFAR-style VGG-11 with BatchNorm (9,756,426 parameters for 10 classes)."""
    return VGGCifar(num_classes, dropout, generator=generator)
