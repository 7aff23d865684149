"""The model zoo: classic CNNs with torchvision's architectures, state_dict keys and init.

    from cnnkit import models
    net = models.resnet18(num_classes=10, rng=np.random.default_rng(0))
    net = models.get_model("vgg16_bn", num_classes=100)
    models.list_models()   # every name get_model accepts

ImageNet-size models (``alexnet``, ``vgg*``, ``resnet18/34/50``, ``googlenet``,
``densenet121``) take (N, 3, 224, 224) and load torchvision checkpoints converted with
``{k: v.numpy() for k, v in torch_model.state_dict().items()}``. ``lenet5`` takes
(N, 1, 28, 28); ``resnet20`` and ``vgg11_cifar`` take (N, 3, 32, 32).

Every constructor takes ``num_classes`` and a keyword ``rng`` (a numpy Generator for the
initial weights; default: cnnkit's default generator, seeded by ``cnnkit.manual_seed``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..nn import Module
from .alexnet import AlexNet, alexnet
from .cifar import CifarResNet, VGGCifar, resnet20, vgg11_cifar
from .densenet import DenseNet, densenet121
from .googlenet import GoogLeNet, googlenet
from .lenet import LeNet5, lenet5
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = [
    "get_model", "list_models", "default_input_shape",
    "LeNet5", "AlexNet", "VGG", "ResNet", "BasicBlock", "Bottleneck", "GoogLeNet", "DenseNet",
    "CifarResNet", "VGGCifar",
    "lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19",
    "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50",
    "googlenet", "densenet121", "resnet20", "vgg11_cifar",
]

_REGISTRY: dict[str, Callable[..., Module]] = {
    fn.__name__: fn
    for fn in (
        lenet5, alexnet, vgg11, vgg13, vgg16, vgg19, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn,
        resnet18, resnet34, resnet50, googlenet, densenet121, resnet20, vgg11_cifar,
    )
}


def list_models() -> list[str]:
    """Return the names ``get_model`` accepts, sorted."""
    return sorted(_REGISTRY)


def get_model(name: str, **kwargs) -> Module:
    """Build the model registered as ``name`` (case-insensitive), passing ``kwargs`` on.

    Example: ``get_model("resnet18", num_classes=10, rng=np.random.default_rng(0))``.

    Raises:
        ValueError: no model has that name; the message lists the names there are.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(f"get_model: unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[key](**kwargs)


def default_input_shape(name: str) -> tuple[int, int, int]:
    """The (C, H, W) the zoo model ``name`` was designed for: 1x28x28, 3x32x32 or 3x224x224."""
    key = name.lower() if isinstance(name, str) else name
    if key.startswith("lenet"):
        return (1, 28, 28)
    if key in ("resnet20", "vgg11_cifar"):
        return (3, 32, 32)
    return (3, 224, 224)
