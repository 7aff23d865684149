"""A model to look inside, with what it takes to feed it: from a model file (by suffix) or a zoo name.

``load_target(spec)`` returns a ``Target``: the model in eval mode, its input shape, the
per-channel normalization of its inputs, its class names, and where it came from. The
readers of model files are registered by suffix in ``LOADERS``, as "module:function"
strings so nothing loads before it is needed; a new format is one line, e.g.

    LOADERS[".onnx"] = "cnnkit.onnx.targets:onnx_target"    # (path: Path) -> Target

or ``register_loader(".onnx", fn)``. ``cnnkit visualize``, ``cnnkit explore`` and the
other commands that look into a model all read it through ``load_target``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import models
from ..data.folder import open_image
from ..data.pipeline import ImageSpec
from ..data.prepare import prepare_image
from ..errors import UsageError
from ..models.weights import Preprocessing, find_weights
from .checkpoint import load_checkpoint
from .weights import fetch_weights

__all__ = ["Target", "LOADERS", "register_loader", "load_target", "checkpoint_target", "zoo_target",
           "default_normalization", "parse_shape", "file_preprocessing", "weights_preprocessing"]

# torchvision's ImageNet statistics for RGB models; MNIST's for one-channel ones.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MNIST = ((0.1307,), (0.3081,))


@dataclass
class Target:
    """A model to look inside, with what is needed to feed it an image.

    Attributes:
        model: the module, in eval mode.
        label: for titles: "best.safetensors (lenet5, mnist)", "resnet18 (random weights)".
        input_shape: (C, H, W); mean, std: per-channel normalization after scaling pixels
            to [0, 1]; classes: class names (may be empty).
        task: "multiclass" (softmax over the outputs), "binary" or "multilabel" (sigmoid).
        run_folder: the folder the file came from (a `cnnkit train` run folder holds log.csv).
        dataset: the dataset it was trained on, when the file says.
        model_name: the zoo name, when known.
        meta: everything else the file carried (a checkpoint's metadata).
        spec: how a model trained on a folder of images reads files (``cnnkit train --data``).
        weights_preprocessing: pretrained weights' eval transform (resize, centre crop).
    """

    model: Any
    label: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    task: str = "multiclass"
    run_folder: Path | None = None
    dataset: str | None = None
    model_name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    spec: ImageSpec | None = None
    weights_preprocessing: Preprocessing | None = None

    def picture(self, file, invert: str = "auto") -> np.ndarray:
        """An image file (a path or an open binary file) as this model's input picture, as
        ``cnnkit predict`` prepares it: (C, H, W) float32 in [0, 1], before normalization.

        Pretrained weights: their resize and centre crop; a model trained on a folder: its
        ``ImageSpec``; otherwise ``prepare_image`` (digits centred as MNIST's for one channel).

        Raises:
            FileNotFoundError: no such file. DataError (a ValueError): not a readable image.
        """
        if self.weights_preprocessing is not None:
            pre = self.weights_preprocessing
            x = pre(open_image(file, "RGB"))                                   # (3, c, c), normalized
            mean = np.asarray(pre.mean, np.float32).reshape(-1, 1, 1)
            std = np.asarray(pre.std, np.float32).reshape(-1, 1, 1)
            return np.clip(x * std + mean, 0.0, 1.0).astype(np.float32)
        if self.spec is not None:
            return self.spec.decode(file).astype(np.float32).transpose(2, 0, 1) / 255.0   # (C, H, W)
        return np.asarray(prepare_image(file, self.input_shape, invert), np.float32)


LOADERS: dict[str, str | Callable[[Path], Target]] = {
    ".safetensors": "cnnkit.io.targets:checkpoint_target",
}


def register_loader(suffix: str, loader: str | Callable[[Path], Target]) -> None:
    """Teach ``load_target`` a file suffix (".onnx", ".pth"): ``loader(path) -> Target``."""
    LOADERS[suffix.lower()] = loader


def _resolve(loader: str | Callable[[Path], Target]) -> Callable[[Path], Target]:
    if callable(loader):
        return loader
    module, _, name = loader.partition(":")
    return getattr(importlib.import_module(module), name)


def default_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for inputs that carry none: ImageNet's for RGB, MNIST's for one channel."""
    if channels == 3:
        return _IMAGENET
    if channels == 1:
        return _MNIST
    return (0.5,) * channels, (0.5,) * channels


def parse_shape(text: str) -> tuple[int, int, int]:
    """``C,H,W`` (or CxHxW) as a tuple of three positive integers.

    Raises:
        UsageError: anything else (the message quotes it).
    """
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise UsageError(f"--input-shape expects C,H,W with positive integers, got {text!r}")
    return shape  # type: ignore[return-value]


def _task_name(task: Any) -> str:
    """"multiclass", "binary" or "multilabel" from a checkpoint's task (a name, or a dict with "type")."""
    name = task.get("type") if isinstance(task, dict) else task
    return str(name) if name in ("multiclass", "binary", "multilabel") else "multiclass"


def file_preprocessing(extra: dict[str, Any]) -> ImageSpec | None:
    """The ``ImageSpec`` a model trained on a folder of images reads files with (None otherwise).

    Models trained on MNIST-like datasets keep ``prepare_image`` (digits centred as MNIST's).
    """
    if extra.get("source", {}).get("kind") == "folder" and "preprocessing" in extra:
        return ImageSpec.from_dict(extra["preprocessing"])
    return None


def weights_preprocessing(extra: dict[str, Any]) -> Preprocessing | None:
    """Pretrained weights' eval transform (``cnnkit import``, named weights), or None."""
    pre = extra.get("preprocessing")
    if isinstance(pre, dict) and {"resize_size", "crop_size"} <= set(pre):
        return Preprocessing.from_dict(pre)
    return None


def checkpoint_target(path: Path) -> Target:
    """A cnnkit checkpoint (a zoo model, pruned or not) with its dataset's normalization and classes."""
    ckpt = load_checkpoint(path)  # a missing file: "no such checkpoint file"
    extra = ckpt.meta.get("extra", {})
    model = ckpt.build_model()
    shape = tuple(int(v) for v in (extra.get("input_shape") or models.default_input_shape(ckpt.model_name or "")))
    mean, std = tuple(extra.get("mean", ())), tuple(extra.get("std", ()))
    dataset = extra.get("dataset")
    spec, pretrained = file_preprocessing(extra), weights_preprocessing(extra)
    if pretrained is not None:
        shape, mean, std = (3, pretrained.crop_size, pretrained.crop_size), tuple(pretrained.mean), tuple(pretrained.std)
    elif spec is not None:
        shape, mean, std = spec.input_shape, tuple(spec.mean), tuple(spec.std)
    notes = [n for n in (ckpt.model_name, dataset, "pruned" if extra.get("pruned") else None) if n]
    return Target(
        model=model, label=f"{path.name} ({', '.join(notes)})", input_shape=shape,  # type: ignore[arg-type]
        mean=mean, std=std, classes=[str(c) for c in extra.get("classes", ())],
        task=_task_name(extra.get("task")), run_folder=path.resolve().parent, dataset=dataset,
        model_name=ckpt.model_name, meta=ckpt.meta, spec=spec, weights_preprocessing=pretrained,
    )


def zoo_target(name: str) -> Target:
    """A zoo model with random weights (seed 0): for looking at an architecture."""
    model = models.get_model(name, generator=np.random.default_rng(0))
    model.eval()
    return Target(model=model, label=f"{name} (random weights)", input_shape=models.default_input_shape(name),
                  mean=(), std=(), classes=[], model_name=name)


def load_target(spec: str, input_shape: str | None = None) -> Target:
    """A model file (by its suffix, see ``LOADERS``) or a zoo model name (random weights, seed 0).

    Args:
        spec: a path, a name from ``cnnkit.models.list_models()`` (random weights), or a
            weights name (``resnet18.IMAGENET1K_V1``: its checkpoint, fetched once).
        input_shape: "C,H,W" to use instead of the one the file or the zoo gives.

    Raises:
        CheckpointError: a missing, unreadable or foreign checkpoint file.
        UsageError: a folder, or neither a file nor a zoo name (the message lists the zoo).
    """
    path = Path(spec)
    zoo = models.list_models()
    if path.is_dir():
        raise UsageError(f"{spec} is a folder; pass a checkpoint file in it (e.g. {path / 'last.safetensors'})")
    if path.is_file() or (spec.lower() not in zoo and (path.suffix or "/" in spec)):
        # an unknown suffix is read as a checkpoint, whose reader names what the file is not
        target = _resolve(LOADERS.get(path.suffix.lower(), LOADERS[".safetensors"]))(path)
    elif spec.lower() in zoo:
        target = zoo_target(spec.lower())
    elif find_weights(None, spec) is not None:  # a weights name, as `cnnkit predict` takes: its cached checkpoint
        target = checkpoint_target(Path(fetch_weights(find_weights(None, spec))))
    else:
        raise UsageError(f"{spec!r} is neither a checkpoint file nor a zoo model; zoo models: {', '.join(zoo)}")
    if input_shape:
        target.input_shape = parse_shape(input_shape)
        if target.spec is not None and target.spec.input_shape != target.input_shape:
            target.spec = None  # another size asked for: plain resizing
        target.weights_preprocessing = None
    C = target.input_shape[0]
    if len(target.mean) != C or len(target.std) != C:
        target.mean, target.std = default_normalization(C)
    return target
