"""The model zoo: classic CNNs with torchvision's architectures, state_dict keys and init.

    from cnnkit import models
    net = models.resnet18(num_classes=10, generator=np.random.default_rng(0))
    net = models.get_model("vgg16_bn", num_classes=100)
    models.list_models()   # every name get_model accepts

ImageNet-size models (``alexnet``, ``vgg*``, ``resnet18/34/50``, ``googlenet``,
``densenet121``) take (N, 3, 224, 224) and load torchvision checkpoints converted with
``{k: v.numpy() for k, v in torch_model.state_dict().items()}``. ``lenet5`` takes
(N, 1, 28, 28); ``resnet20`` and ``vgg11_cifar`` take (N, 3, 32, 32).

Every constructor takes ``num_classes`` and a keyword ``generator`` (a numpy Generator for the
initial weights; default: cnnkit's default generator, seeded by ``cnnkit.manual_seed``).

Every model the zoo builds knows its ``zoo_name`` and ``zoo_config`` (so ``cnnkit.save`` /
``cnnkit.load`` rebuild it), its natural ``input_shape`` (C, H, W) and ``head_name``, the path
of its classifier head (``registry.py``; ``models.model_info(name)`` without building).
"""

from __future__ import annotations

from .alexnet import AlexNet, alexnet
from .cifar import CifarResNet, VGGCifar, resnet20, vgg11_cifar
from .densenet import DenseNet, densenet121
from .googlenet import GoogLeNet, googlenet
from .lenet import LeNet5, lenet5
from .registry import (
    ZooEntry,
    default_input_shape,
    get_model,
    list_models,
    model_info,
    register,
    set_in_channels,
    zoo_entry,
)
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = [
    "get_model", "list_models", "model_info", "default_input_shape", "register", "ZooEntry", "zoo_entry",
    "set_in_channels",
    "LeNet5", "AlexNet", "VGG", "ResNet", "BasicBlock", "Bottleneck", "GoogLeNet", "DenseNet",
    "CifarResNet", "VGGCifar",
    "lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19",
    "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50",
    "googlenet", "densenet121", "resnet20", "vgg11_cifar",
]
