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
``get_model(name, in_channels=C)`` rebuilds the first convolution for C-channel images.
``zoo_entry(name)`` tells each model's input shape, its classifier head (the layer
transfer learning replaces), its first convolution and the image sizes it accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..nn import Conv2d, Module
from .alexnet import AlexNet, alexnet
from .cifar import CifarResNet, VGGCifar, resnet20, vgg11_cifar
from .densenet import DenseNet, densenet121
from .googlenet import GoogLeNet, googlenet
from .lenet import LeNet5, lenet5
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = [
    "get_model", "list_models", "default_input_shape", "zoo_entry", "ZooEntry", "set_in_channels",
    "LeNet5", "AlexNet", "VGG", "ResNet", "BasicBlock", "Bottleneck", "GoogLeNet", "DenseNet",
    "CifarResNet", "VGGCifar",
    "lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19",
    "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50",
    "googlenet", "densenet121", "resnet20", "vgg11_cifar",
]

@dataclass(frozen=True)
class ZooEntry:
    """What the zoo knows about one model.

    Attributes:
        name: the name ``get_model`` takes.
        build: the constructor (``num_classes=``, ``rng=``, model-specific keywords).
        input_shape: the (C, H, W) the model was designed for.
        head: dotted path of the classifier layer (a Linear with ``num_classes`` outputs):
            the layer transfer learning replaces.
        stem: dotted path of the first convolution: the layer ``in_channels`` rebuilds.
        min_size: the smallest square image (pixels per side) the model accepts.
        max_size: the largest one, for models with a fixed-size head (None: any size).
        small: designed for small images (MNIST, CIFAR): ``cnnkit train`` then keeps your
            images' own size when the model accepts it, instead of resizing to ``input_shape``.
    """

    name: str
    build: Callable[..., Module]
    input_shape: tuple[int, int, int]
    head: str
    stem: str
    min_size: int
    max_size: int | None = None
    small: bool = False

    def accepts(self, size: int) -> bool:
        """True when a size x size image fits the model."""
        return size >= self.min_size and (self.max_size is None or size <= self.max_size)

    def size_range(self) -> str:
        """The accepted sizes in words: "at least 32x32" or "28x28 to 31x31"."""
        if self.max_size is None:
            return f"at least {self.min_size}x{self.min_size}"
        return f"{self.min_size}x{self.min_size} to {self.max_size}x{self.max_size}"


# Sizes measured by tests/models/test_models.py::test_zoo_entries_declare_the_sizes_each_model_accepts.
_ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("lenet5", lenet5, (1, 28, 28), "classifier.4", "features.0", 28, 31, small=True),
        ZooEntry("alexnet", alexnet, (3, 224, 224), "classifier.6", "features.0", 63),
        *(ZooEntry(fn.__name__, fn, (3, 224, 224), "classifier.6", "features.0", 32)
          for fn in (vgg11, vgg13, vgg16, vgg19, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn)),
        *(ZooEntry(fn.__name__, fn, (3, 224, 224), "fc", "conv1", 1) for fn in (resnet18, resnet34, resnet50)),
        ZooEntry("googlenet", googlenet, (3, 224, 224), "fc", "conv1.conv", 15),
        ZooEntry("densenet121", densenet121, (3, 224, 224), "classifier", "features.conv0", 29),
        ZooEntry("resnet20", resnet20, (3, 32, 32), "fc", "conv1", 1, small=True),
        ZooEntry("vgg11_cifar", vgg11_cifar, (3, 32, 32), "classifier.6", "features.0", 32, 63, small=True),
    )
}


def list_models() -> list[str]:
    """Return the names ``get_model`` accepts, sorted."""
    return sorted(_ZOO)


def zoo_entry(name: str) -> ZooEntry:
    """The ``ZooEntry`` of a model name (case-insensitive).

    Raises:
        ValueError: no model has that name; the message lists the names there are.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _ZOO:
        raise ValueError(f"get_model: unknown model {name!r}; available: {', '.join(list_models())}")
    return _ZOO[key]


def get_model(name: str, *, in_channels: int | None = None, **kwargs) -> Module:
    """Build the model registered as ``name`` (case-insensitive), passing ``kwargs`` on.

    Example: ``get_model("resnet18", num_classes=10, rng=np.random.default_rng(0))``.

    Args:
        in_channels: image channels, when not the model's own (3 for the ImageNet and
            CIFAR models, 1 for LeNet-5): the first convolution (``ZooEntry.stem``) is
            rebuilt for that many channels, with new weights.

    Raises:
        ValueError: no model has that name; the message lists the names there are.
    """
    entry = zoo_entry(name)
    model = entry.build(**kwargs)
    if in_channels is not None and in_channels != entry.input_shape[0]:
        set_in_channels(model, entry, in_channels, kwargs.get("rng"))
    return model


def set_in_channels(model: Module, entry: ZooEntry, in_channels: int, rng=None) -> None:
    """Rebuild ``entry.stem`` of ``model`` for ``in_channels`` input channels (new random weights)."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"{entry.name}: in_channels must be a positive integer, got {in_channels!r}")
    old = model.get_submodule(entry.stem)
    new = Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                 dilation=old.dilation, groups=1, bias=old.bias is not None, rng=rng)
    model.set_submodule(entry.stem, new)
    if getattr(model, "transform_input", False) and in_channels != 3:
        raise ValueError(f"{entry.name}: transform_input=True rescales 3 ImageNet channels; "
                         f"it cannot take in_channels={in_channels}")


def default_input_shape(name: str) -> tuple[int, int, int]:
    """The (C, H, W) the zoo model ``name`` was designed for: 1x28x28, 3x32x32 or 3x224x224."""
    return zoo_entry(name).input_shape
