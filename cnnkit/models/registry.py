"""The zoo's registry: every model by name, with its natural input shape and its classifier head.

Each builder is registered with ``@register(name, input_shape, head)``. A model it builds,
called through ``get_model`` or directly (``models.resnet18(num_classes=10)``), carries:

- ``zoo_name``: the registered name, and ``zoo_config``: the constructor arguments that
  shape it (``num_classes``, ...), so ``cnnkit.save`` records them and ``cnnkit.load``
  rebuilds it;
- ``input_shape``: the (C, H, W) it was designed for (1x28x28, 3x32x32 or 3x224x224);
- ``head_name``: the dotted path of its classifier head, the last ``Linear`` (replace it to
  fine-tune the model on other classes: ``model.get_submodule(model.head_name)``).

Each entry also knows its first convolution (``stem``: ``get_model(name, in_channels=C)``
rebuilds it for C-channel images) and the square image sizes the model accepts
(``min_size``/``max_size``, measured by the zoo's tests), and whether it was designed for
small images (``small``: ``cnnkit train`` then keeps your images' own size when it fits).

Arguments that only draw the initial weights (``generator``, the deprecated ``generator``,
``init_weights``) are not part of ``zoo_config``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import rename_rng
from ..nn import Conv2d, Module

__all__ = ["ZooEntry", "register", "get_model", "list_models", "model_info", "default_input_shape",
           "zoo_entry", "set_in_channels"]

# Constructor arguments that draw the initial weights: not needed to rebuild a model.
_NOT_CONFIG = ("generator", "rng", "init_weights", "weights")  # weights: loaded once, not rebuilt


@dataclass(frozen=True)
class ZooEntry:
    """One registered model.

    Attributes:
        name, builder: the registered name and its (labelling) builder.
        input_shape: the (C, H, W) the model was designed for.
        head: dotted path of the classifier (the layer transfer learning replaces).
        stem: dotted path of the first convolution (the layer ``in_channels`` rebuilds).
        min_size, max_size: the square image sizes (pixels per side) the model accepts
            (``max_size`` None: any larger size, thanks to adaptive pooling).
        small: designed for small images (MNIST, CIFAR-10).
    """

    name: str
    builder: Callable[..., Module]
    input_shape: tuple[int, int, int]
    head: str
    stem: str = ""
    min_size: int = 1
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


_ZOO: dict[str, ZooEntry] = {}

# First convolution, smallest and largest square input, designed for small images. Sizes are
# measured by tests/models/test_models.py::test_zoo_entries_declare_the_sizes_each_model_accepts.
_VGG = ("features.0", 32, None, False)
_GEOMETRY: dict[str, tuple[str, int, int | None, bool]] = {
    "lenet5": ("features.0", 28, 31, True),
    "alexnet": ("features.0", 63, None, False),
    **{n: _VGG for n in ("vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")},
    "resnet18": ("conv1", 1, None, False), "resnet34": ("conv1", 1, None, False),
    "resnet50": ("conv1", 1, None, False),
    "googlenet": ("conv1.conv", 15, None, False),
    "densenet121": ("features.conv0", 29, None, False),
    "resnet20": ("conv1", 1, None, True),
    "vgg11_cifar": ("features.0", 32, 63, True),
}


def register(name: str, input_shape: tuple[int, int, int], head: str):
    """Register a builder as zoo model ``name``; the models it builds are labelled (see above)."""

    def wrap(builder: Callable[..., Module]) -> Callable[..., Module]:
        signature = inspect.signature(builder)

        @functools.wraps(builder)
        def build(*args, in_channels: int | None = None, **kwargs) -> Module:
            kwargs = rename_rng(kwargs, name)
            model = builder(*args, **kwargs)
            if in_channels is not None and in_channels != input_shape[0]:
                set_in_channels(model, _ZOO[name], in_channels, kwargs.get("generator"))
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            config: dict[str, Any] = {}
            for key, value in bound.arguments.items():
                if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                    config.update({k: v for k, v in value.items() if k not in _NOT_CONFIG})
                elif key not in _NOT_CONFIG:
                    config[key] = value
            if in_channels is not None and in_channels != input_shape[0]:
                config["in_channels"] = in_channels
            model.zoo_name = name
            # A builder that calls itself (weights=...: the pretrained model is built by a second
            # call) keeps what the inner call recorded, e.g. the weights' transform_input=True.
            model.zoo_config = {**getattr(model, "zoo_config", {}), **config}
            model.input_shape = (in_channels or input_shape[0], *input_shape[1:])
            model.head_name = head
            return model

        stem, min_size, max_size, small = _GEOMETRY.get(name, ("", 1, None, False))
        _ZOO[name] = ZooEntry(name, build, tuple(input_shape), head, stem, min_size, max_size, small)
        return build

    return wrap


def list_models() -> list[str]:
    """Return the names ``get_model`` accepts, sorted."""
    return sorted(_ZOO)


def model_info(name: str) -> ZooEntry:
    """The registry entry of zoo model ``name`` (case-insensitive).

    Raises:
        ValueError: no model has that name; the message lists the names there are.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _ZOO:
        raise ValueError(f"get_model: unknown model {name!r}; available: {', '.join(list_models())}")
    return _ZOO[key]


zoo_entry = model_info  # the name transfer learning and ``cnnkit train`` use


def set_in_channels(model: Module, entry: ZooEntry, in_channels: int, generator=None) -> None:
    """Rebuild ``entry.stem`` of ``model`` for ``in_channels`` input channels (new random weights)."""
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"{entry.name}: in_channels must be a positive integer, got {in_channels!r}")
    if getattr(model, "transform_input", False) and in_channels != 3:
        raise ValueError(f"{entry.name}: transform_input=True rescales 3 ImageNet channels; "
                         f"it cannot take in_channels={in_channels}")
    old = model.get_submodule(entry.stem)
    new = Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                 dilation=old.dilation, groups=1, bias=old.bias is not None, generator=generator)
    model.set_submodule(entry.stem, new)


def get_model(name: str, **kwargs) -> Module:
    """Build the model registered as ``name`` (case-insensitive), passing ``kwargs`` on.

    Example: ``get_model("resnet18", num_classes=10, generator=np.random.default_rng(0))``;
    ``in_channels=C`` rebuilds the first convolution for C-channel images.

    Raises:
        ValueError: no model has that name; the message lists the names there are.
    """
    return model_info(name).builder(**kwargs)


def default_input_shape(name: str) -> tuple[int, int, int]:
    """The (C, H, W) the zoo model ``name`` was designed for.

    Raises:
        ValueError: no model has that name.
    """
    return model_info(name).input_shape
