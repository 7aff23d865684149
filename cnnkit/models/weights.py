"""Named pretrained weights for the zoo: torchvision's ImageNet checkpoints, and what each needs.

    from cnnkit import models
    net = models.resnet18(weights="IMAGENET1K_V1")        # downloaded once, then from the cache
    w = models.weights.get_weights("resnet18", "DEFAULT")
    w.preprocessing(photo_path)   # (3, 224, 224) float32, exactly the weights' own eval transform
    w.categories[281]             # 'tabby'
    w.metrics                     # {'acc@1': 69.758, 'acc@5': 89.078} (torchvision's published figures)

Each entry is torchvision's (same file, address and published accuracy): its download
address, the first hex digits of the file's SHA-256 (torchvision publishes only this
prefix, in the file name: ``resnet18-f37072fd.pth``; cnnkit checks the SHA-256 of the
downloaded bytes starts with it, as ``torch.hub`` does), the eval preprocessing (resize
the shorter side, center crop, mean/std, interpolation), the class names and the
constructor settings the weights need (GoogLeNet's ``transform_input=True``).

This module is data only; downloading and converting live in ``cnnkit.io.weights``
(``fetch``), reached through the constructors' ``weights=`` argument.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from ..data.folder import load_image
from ..data.transforms import CenterCrop, resize_output_size

__all__ = [
    "Preprocessing", "Weights", "get_weights", "find_weights", "list_weights", "imagenet_classes", "pretrained",
    "set_weights_loader",
    "IMAGENET_MEAN", "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.cache
def _imagenet_classes() -> tuple[str, ...]:
    text = resources.files("cnnkit.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names, in class-index order (torchvision's names)."""
    return list(_imagenet_classes())


@dataclass(frozen=True)
class Preprocessing:
    """An image classifier's eval transform: resize, center crop, scale to [0, 1], normalize.

    As torchvision's ``ImageClassification`` preset: the shorter side is resized to
    ``resize_size`` (the longer one to ``int(resize_size * long / short)``: ``Resize``'s
    rule, ``resize_output_size``) by Pillow, antialiased; the center ``crop_size`` square is
    kept (``CenterCrop``: top/left offsets rounded, zeros padded around a smaller image);
    pixels are divided by 255, then ``(x - mean) / std`` per channel.
    """

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __call__(self, image: Any) -> np.ndarray:
        """Apply the transform to an image file path, a PIL image or an (H, W, 3) uint8 array.

        Returns:
            float32 (3, crop_size, crop_size).
        """
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            image = load_image(image, mode="RGB")
        if isinstance(image, np.ndarray):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        image = image.convert("RGB")
        w, h = image.size
        new_h, new_w = resize_output_size(h, w, self.resize_size)  # the shorter side to resize_size
        resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                    "nearest": Image.Resampling.NEAREST}[self.interpolation]
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), resample)
        x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0  # (3, new_h, new_w)
        x = CenterCrop(self.crop_size)(x)                                   # (3, c, c); zeros padded if smaller
        mean = np.asarray(self.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(3, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)     # (3, c, c)

    def to_dict(self) -> dict[str, Any]:
        return {"resize_size": self.resize_size, "crop_size": self.crop_size, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(int(d["resize_size"]), int(d["crop_size"]), tuple(d["mean"]), tuple(d["std"]),
                   str(d.get("interpolation", "bilinear")))


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights for a zoo model.

    Attributes:
        model, name: the zoo model and the weights name (``"resnet18"``, ``"IMAGENET1K_V1"``).
        url: the download address (torchvision's).
        sha256: the hex prefix of the file's SHA-256 that torchvision publishes (8 digits).
        preprocessing: the eval transform the published accuracy was measured with.
        categories: the class names (None: not for classification, e.g. VGG-16's features).
        metrics: published ImageNet-1k top-1/top-5 accuracy (percent; NaN when not published).
        num_params: parameter count; file_size_mb: the download's size.
        model_config: constructor arguments the weights need (beyond ``num_classes``).
        notes: what the weights are (from torchvision's description).
    """

    model: str
    name: str
    url: str
    sha256: str
    preprocessing: Preprocessing
    categories: tuple[str, ...] | None
    metrics: dict[str, float]
    num_params: int
    file_size_mb: float
    model_config: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.model}.{self.name}"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def num_classes(self) -> int:
        return len(self.categories) if self.categories is not None else 1000


_TV = "https://download.pytorch.org/models/"
_IMAGENET = "imagenet"


def _entry(model, name, file, acc1, acc5, params, size_mb, *, resize=256, config=None, notes="",
           categories=_IMAGENET, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Weights:
    prefix = file.rsplit("-", 1)[-1].split(".")[0]
    return Weights(
        model=model, name=name, url=_TV + file, sha256=prefix,
        preprocessing=Preprocessing(resize, 224, tuple(mean), tuple(std), "bilinear"),
        categories=None if categories is None else _imagenet_classes(),
        metrics={"acc@1": acc1, "acc@5": acc5}, num_params=params, file_size_mb=size_mb,
        model_config=dict(config or {}), notes=notes,
    )


_SIMPLE = "These weights reproduce closely the results of the paper using a simple training recipe."
_VGG = "These weights were trained from scratch by using a simplified training recipe."
_NAN = float("nan")

# torchvision's published weights for every zoo model that has some (torchvision 0.13+ metadata).
_ENTRIES = [
    _entry("alexnet", "IMAGENET1K_V1", "alexnet-owt-7be5be79.pth", 56.522, 79.066, 61_100_840, 233.087,
           notes="These weights reproduce closely the results of the paper using a simplified training recipe."),
    _entry("vgg11", "IMAGENET1K_V1", "vgg11-8a719046.pth", 69.020, 88.628, 132_863_336, 506.84, notes=_VGG),
    _entry("vgg11_bn", "IMAGENET1K_V1", "vgg11_bn-6002323d.pth", 70.370, 89.810, 132_868_840, 506.881, notes=_VGG),
    _entry("vgg13", "IMAGENET1K_V1", "vgg13-19584684.pth", 69.928, 89.246, 133_047_848, 507.545, notes=_VGG),
    _entry("vgg13_bn", "IMAGENET1K_V1", "vgg13_bn-abd245e5.pth", 71.586, 90.374, 133_053_736, 507.59, notes=_VGG),
    _entry("vgg16", "IMAGENET1K_V1", "vgg16-397923af.pth", 71.592, 90.382, 138_357_544, 527.796, notes=_VGG),
    _entry("vgg16", "IMAGENET1K_FEATURES", "vgg16_features-amdegroot-88682ab5.pth", _NAN, _NAN, 138_357_544,
           527.802, categories=None, mean=(0.48235, 0.45882, 0.40784), std=(1 / 255, 1 / 255, 1 / 255),
           notes="Ported from amdegroot/ssd.pytorch. Only `features` holds valid values (the classifier "
                 "has NaNs): for feature extraction, not classification. Inputs use the original "
                 "0-255 standardization (std 1/255)."),
    _entry("vgg16_bn", "IMAGENET1K_V1", "vgg16_bn-6c64b313.pth", 73.360, 91.516, 138_365_992, 527.866, notes=_VGG),
    _entry("vgg19", "IMAGENET1K_V1", "vgg19-dcbb9e9d.pth", 72.376, 90.876, 143_667_240, 548.051, notes=_VGG),
    _entry("vgg19_bn", "IMAGENET1K_V1", "vgg19_bn-c79401a0.pth", 74.218, 91.842, 143_678_248, 548.143, notes=_VGG),
    _entry("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758, 89.078, 11_689_512, 44.661, notes=_SIMPLE),
    _entry("resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314, 91.420, 21_797_672, 83.275, notes=_SIMPLE),
    _entry("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.130, 92.862, 25_557_032, 97.781, notes=_SIMPLE),
    _entry("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 80.858, 95.434, 25_557_032, 97.79, resize=232,
           notes="These weights improve upon the results of the original paper by using TorchVision's "
                 "new training recipe."),
    _entry("googlenet", "IMAGENET1K_V1", "googlenet-1378be20.pth", 69.778, 89.530, 6_624_904, 49.731,
           config={"transform_input": True},
           notes="These weights are ported from the original paper. The checkpoint's auxiliary heads "
                 "(aux1, aux2) are dropped: cnnkit's GoogLeNet has none."),
    _entry("densenet121", "IMAGENET1K_V1", "densenet121-a639ec97.pth", 74.434, 91.972, 7_978_856, 30.845,
           notes="These weights are ported from LuaTorch."),
]

_REGISTRY: dict[str, dict[str, Weights]] = {}
for _w in _ENTRIES:
    _REGISTRY.setdefault(_w.model, {})[_w.name] = _w
# torchvision's DEFAULT: the best classification weights of each model.
_DEFAULTS = {m: ("IMAGENET1K_V2" if m == "resnet50" else "IMAGENET1K_V1") for m in _REGISTRY}


def list_weights(model: str | None = None) -> list[str]:
    """Every named weights, as ``"model.NAME"`` (only ``model``'s when given), sorted."""
    return sorted(w.full_name for m, ws in _REGISTRY.items() if model in (None, m) for w in ws.values())


def find_weights(model: str | None, name: str) -> Weights | None:
    """The weights ``name`` names, or None when it names none.

    ``name`` may be ``"IMAGENET1K_V1"`` or ``"DEFAULT"`` (with ``model``), ``"resnet18.IMAGENET1K_V1"``
    or torchvision's ``"ResNet18_Weights.IMAGENET1K_V1"`` (case-insensitive).
    """
    if not isinstance(name, str):
        return None
    head, dot, tail = name.rpartition(".")
    if dot:
        candidate = head.lower().removesuffix("_weights")
        if model is not None and candidate != model.lower():
            return None
        model, name = candidate, tail
    if model is None or model.lower() not in _REGISTRY:
        return None
    entries = _REGISTRY[model.lower()]
    key = name.upper()
    if key == "DEFAULT":
        key = _DEFAULTS[model.lower()]
    return entries.get(key)


def get_weights(model: str, name: str) -> Weights:
    """The named weights of ``model`` (see ``find_weights`` for the forms of ``name``).

    Raises:
        ValueError: no such weights; the message lists the model's weights.
    """
    found = find_weights(model, name)
    if found is None:
        known = ", ".join(list_weights(model)) or "none"
        raise ValueError(f"{model}: no pretrained weights named {name!r}; available: {known}, DEFAULT")
    return found


# The loader is cnnkit.io.weights.load_weights, plugged in when cnnkit.io is imported (which
# ``import cnnkit`` does): io sits above models, so models never imports it.
_loader: Callable[..., Any] | None = None


def set_weights_loader(loader: Callable[..., Any]) -> None:
    """Install the function ``pretrained`` loads weights with: ``loader(model, name, model_name=...)``."""
    global _loader
    _loader = loader


def pretrained(model: str, name: str, builder: Callable[..., Any], *, num_classes: int | None = None,
               init_flag: str | None = None, **kwargs):
    """Build zoo model ``model`` with its named weights (what ``models.resnet18(weights=...)`` calls).

    The weights are fetched once (downloaded, checked and converted into the cache; see
    ``cnnkit.io.weights.fetch_weights``) and copied in. The model keeps the entry as
    ``model.weights`` (its ``preprocessing``, ``categories`` and ``metrics``).

    Args:
        model: the zoo name; name: the weights (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...).
        builder: the zoo constructor (called without ``weights``).
        num_classes: must be the weights' class count (1000) when given: to fine-tune on K
            classes, build ``model(num_classes=K)`` and ``load_weights(net, name, skip=("fc",))``.
        init_flag: the constructor's switch for its random init (``"init_weights"``), turned
            off since every weight is overwritten.
        kwargs: other constructor arguments (the weights' own settings, e.g. GoogLeNet's
            ``transform_input=True``, are applied unless given here).

    Raises:
        ValueError: unknown weights, or a ``num_classes`` the weights do not have.
        DownloadError: the weights are not cached and cannot be downloaded.
    """
    entry = get_weights(model, name)
    if num_classes is not None and num_classes != entry.num_classes:
        raise ValueError(
            f"{model}: weights {entry.name} have {entry.num_classes} classes, got num_classes={num_classes}; "
            f"to fine-tune, build {model}(num_classes={num_classes}) and load the weights without the head "
            f"(cnnkit.io.load_weights(model, {entry.name!r}, skip=(<head>,)))"
        )
    config = {**entry.model_config, **kwargs}
    if init_flag is not None:
        config.setdefault(init_flag, False)
    net = builder(num_classes=entry.num_classes, **config)
    if _loader is None:  # pragma: no cover - import cnnkit installs it
        raise RuntimeError("no weights loader installed: import cnnkit.io first")
    _loader(net, entry.full_name, model_name=model)
    net.weights = entry
    return net
