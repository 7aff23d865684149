"""PyTorch twins of cnnkit's zoo models for the benchmarks (same layers, same state_dict keys).

torchvision is not a dependency, so the benchmarks build their own: ResNet-18 and
VGG-16 as torchvision's (ImageNet, 224x224), ResNet-20 and VGG-11 with BatchNorm as
cnnkit's CIFAR models (32x32). ``matching_pair(name)`` returns both models with the same
weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import cnnkit

VGG_CFG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ShortcutA(nn.Module):
    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


def _stages(widths, layers, inplanes, option_a):
    stages = {}
    for i, (planes, n) in enumerate(zip(widths, layers)):
        stride = 1 if i == 0 else 2
        shortcut = None
        if stride != 1 or inplanes != planes:
            shortcut = ShortcutA((planes - inplanes) // 2) if option_a else nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        blocks = [BasicBlock(inplanes, planes, stride, shortcut)] + [BasicBlock(planes, planes) for _ in range(n - 1)]
        stages[f"layer{i + 1}"] = nn.Sequential(*blocks)
        inplanes = planes
    return stages


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        for name, stage in _stages((64, 128, 256, 512), (2, 2, 2, 2), 64, False).items():
            setattr(self, name, stage)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(512, 1000)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        for name, stage in _stages((16, 32, 64), (3, 3, 3), 16, True).items():
            setattr(self, name, stage)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _vgg_features(depth, bn):
    layers, c = [], 3
    for v in VGG_CFG[depth]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if bn else []) + [nn.ReLU()]
            c = v
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    def __init__(self):
        super().__init__()
        self.features, self.avgpool = _vgg_features(16, False), nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(25088, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 1000),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG11Cifar(nn.Module):
    def __init__(self):
        super().__init__()
        self.features, self.flatten = _vgg_features(11, True), nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(), nn.Linear(512, 512), nn.ReLU(), nn.Dropout(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


TORCH = {"resnet18": ResNet18, "resnet20": ResNet20, "vgg16": VGG16, "vgg11_cifar": VGG11Cifar}


def build_torch(name: str, seed: int = 0) -> nn.Module:
    """The PyTorch twin, built without default init and filled with He-normal weights."""
    with torch.device("meta"):
        model = TORCH[name]()
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.num_batches_tracked.zero_()
    return model


def build_cnnkit(name: str):
    """cnnkit's zoo model of that name (VGG-16 without its init: the weights are replaced)."""
    kwargs = {"init_weights": False} if name == "vgg16" else {}
    return cnnkit.models.get_model(name, generator=np.random.default_rng(0), **kwargs)


def matching_pair(name: str, seed: int = 0):
    """(cnnkit model, PyTorch model) with the same weights and buffers."""
    theirs = build_torch(name, seed)
    ours = build_cnnkit(name)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    return ours, theirs
