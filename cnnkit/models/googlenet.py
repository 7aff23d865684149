"""GoogLeNet / Inception v1 (Szegedy et al., 2015) in torchvision's form, without auxiliary heads.

torchvision's variant differs from the paper in two ways kept here so its checkpoints
load: every convolution is followed by BatchNorm (eps 0.001), and the "5x5" branch of
each Inception block uses a 3x3 convolution.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..config import accepts_rng
from ..nn import init
from ..tensor import Tensor
from .registry import register
from .weights import pretrained

__all__ = ["GoogLeNet", "Inception", "BasicConv2d", "googlenet"]


class BasicConv2d(nn.Module):
    """Conv (no bias), BatchNorm(eps=0.001), ReLU: y = relu(bn(conv(x))).

    The ReLU is a functional call, not a module, as in torchvision.
    """

    @accepts_rng
    def __init__(self, in_channels: int, out_channels: int, *, generator=None, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, generator=generator, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches concatenated along channels.

    branch1: 1x1 -> ch1x1
    branch2: 1x1 -> ch3x3red, 3x3 -> ch3x3
    branch3: 1x1 -> ch5x5red, 3x3 -> ch5x5   (3x3, as torchvision, despite the name)
    branch4: maxpool 3x3/1 pad 1, 1x1 -> pool_proj

    Shape: (N, in_channels, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W).
    """

    @accepts_rng
    def __init__(
        self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
        pool_proj: int, *, generator=None,
    ):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1, generator=generator)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1, generator=generator),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1, generator=generator),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1, generator=generator),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1, generator=generator),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1, generator=generator),
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return F.cat(branches, 1)


@accepts_rng
def trunc_normal_(param, std: float, a: float, b: float, generator: np.random.Generator):
    """Fill ``param`` from N(0, std**2) truncated to [a, b] (absolute bounds); return it.

    Draws outside [a, b] are drawn again until none is left (rejection sampling).
    """
    values = init.normal(param.shape, 0.0, std, generator=generator, dtype=param.dtype)
    outside = (values < a) | (values > b)
    while outside.any():
        values[outside] = init.normal((int(outside.sum()),), 0.0, std, generator=generator, dtype=param.dtype)
        outside = (values < a) | (values > b)
    param.data[...] = values
    return param


class GoogLeNet(nn.Module):
    """GoogLeNet with torchvision's layers, state_dict keys and init (no auxiliary classifiers).

    conv1 7x7/2 -> maxpool1 -> conv2 1x1 -> conv3 3x3 -> maxpool2 -> inception3a, 3b ->
    maxpool3 -> inception4a..4e -> maxpool4 -> inception5a, 5b -> avgpool -> dropout -> fc.
    Every max pool uses ceil_mode=True.

    Init (torchvision's): conv and fc weights from a normal with std 0.01 truncated to
    [-2, 2]; BatchNorm weight 1, bias 0; the fc bias keeps PyTorch's default init.

    Args:
        num_classes: K.
        transform_input: rescale inputs normalized with the ImageNet mean/std to the
            [-1, 1] normalization of Google's original weights (torchvision turns it on
            for its pretrained checkpoint).
        init_weights: apply the init above (False keeps PyTorch's default layer init).
        dropout: drop probability before fc.
        generator: generator for the initial weights and the dropout mask.

    Shape: x (N, 3, H, W) with H, W >= 31 -> logits (N, K); 224x224 is the ImageNet size.
    """

    @accepts_rng
    def __init__(
        self, num_classes: int = 1000, transform_input: bool = False, init_weights: bool = True,
        dropout: float = 0.2, *, generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3, generator=generator)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1, generator=generator)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1, generator=generator)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32, generator=generator)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64, generator=generator)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64, generator=generator)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64, generator=generator)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64, generator=generator)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64, generator=generator)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128, generator=generator)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128, generator=generator)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128, generator=generator)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout, generator=generator)
        self.fc = nn.Linear(1024, num_classes, generator=generator)

        if init_weights:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    trunc_normal_(m.weight, std=0.01, a=-2.0, b=2.0, generator=generator)
                elif isinstance(m, nn.BatchNorm2d):
                    init.ones_(m.weight)
                    init.zeros_(m.bias)

    def _transform_input(self, x: Tensor) -> Tensor:
        # x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5: undo the ImageNet normalization and
        # apply (x - 0.5) / 0.5 instead, channel by channel.
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        channels = [x[:, c : c + 1] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)]
        return F.cat(channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.transform_input:
            x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))                       # (N, 64, H/4, W/4)
        x = self.maxpool2(self.conv3(self.conv2(x)))           # (N, 192, H/8, W/8)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (N, 480, H/16, W/16)
        for block in (self.inception4a, self.inception4b, self.inception4c, self.inception4d,
                      self.inception4e):
            x = block(x)                                       # (N, 832, H/16, W/16) at the end
        x = self.maxpool4(x)                                   # (N, 832, H/32, W/32)
        x = self.inception5b(self.inception5a(x))              # (N, 1024, H/32, W/32)
        x = F.flatten(self.avgpool(x), 1)                      # (N, 1024)
        return self.fc(self.dropout(x))


@register("googlenet", input_shape=(3, 224, 224), head="fc")
def googlenet(
    num_classes: int = 1000, *, weights: str | None = None, generator: np.random.Generator | None = None,
    **kwargs,
) -> GoogLeNet:
    """Return GoogLeNet without auxiliary heads (6,624,904 parameters). See ``GoogLeNet``.

    ``weights``: pretrained weights' name (``"DEFAULT"``, ``"IMAGENET1K_V1"``; see models.weights).
    """
    if weights is not None:
        return pretrained("googlenet", weights, googlenet, init_flag="init_weights", num_classes=num_classes, generator=generator, **kwargs)
    return GoogLeNet(num_classes, generator=generator, **kwargs)
