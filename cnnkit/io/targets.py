"""A model to look inside, with what it takes to feed it: the ``Target``.

A ``Target`` is the model in eval mode with its input shape, the per-channel
normalization of its inputs, its class names, its task and where it came from.
``target_from(model, extra)`` builds one from a model and the checkpoint-style ``extra``
its file carried (a cnnkit checkpoint's, or an ONNX export's metadata); ``zoo_target``
one for a zoo architecture with random weights. Reading the files is
``cnnkit.cli.targets.load_target``'s (through ``load_inference``, the one reader of
checkpoints and .onnx files), the loader of every command that looks into a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import models
from ..data.folder import open_image
from ..data.pipeline import ImageSpec
from ..data.prepare import prepare_image
from ..errors import UsageError
from ..models.weights import Preprocessing

__all__ = ["Target", "target_from", "zoo_target", "default_normalization", "parse_shape", "file_preprocessing",
           "weights_preprocessing", "INFERENCE_KEYS"]

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
        file: the checkpoint or .onnx file the model was read from (None for zoo names and weights).
        dataset: the dataset it was trained on, when the file says.
        model_name: the zoo name, when known.
        extra: what the file says of its training (a checkpoint's ``meta["extra"]``, an
            ONNX export's cnnkit metadata in the same form; ``INFERENCE_KEYS``).
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
    file: Path | None = None
    dataset: str | None = None
    model_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
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


# What a checkpoint's ``extra`` says that inference needs; an ONNX export stores these too.
INFERENCE_KEYS = ("input_shape", "mean", "std", "classes", "dataset", "source", "task", "preprocessing")


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


def target_from(
    model, extra: dict[str, Any], *, label: str, model_name: str | None = None, run_folder: Path | None = None,
    input_shape: tuple[int, int, int] | None = None, file: Path | None = None,
) -> Target:
    """A ``Target`` from a model and the checkpoint-style ``extra`` its file carried.

    Pretrained weights (``cnnkit import``, named weights) bring their crop size and
    normalization; a model trained on a folder its ``ImageSpec``; otherwise the stored
    input shape (or ``input_shape``, or the zoo model's) and statistics. Missing
    statistics get ``default_normalization``.

    Raises:
        UsageError: no input shape anywhere (an ONNX file with free dims and no metadata).
    """
    shape = extra.get("input_shape") or input_shape or (models.default_input_shape(model_name) if model_name else None)
    if not shape:
        raise UsageError(f"{label} does not fix its input's size; pass --input-shape C,H,W")
    shape = tuple(int(v) for v in shape)
    mean, std = tuple(extra.get("mean") or ()), tuple(extra.get("std") or ())
    spec, pretrained = file_preprocessing(extra), weights_preprocessing(extra)
    if pretrained is not None:
        shape, mean, std = (3, pretrained.crop_size, pretrained.crop_size), tuple(pretrained.mean), tuple(pretrained.std)
    elif spec is not None:
        shape, mean, std = spec.input_shape, tuple(spec.mean), tuple(spec.std)
    if len(mean) != shape[0] or len(std) != shape[0]:
        mean, std = default_normalization(shape[0])
    model.eval()
    return Target(
        model=model, label=label, input_shape=shape, mean=mean, std=std,  # type: ignore[arg-type]
        classes=[str(c) for c in extra.get("classes") or ()], task=_task_name(extra.get("task")),
        run_folder=run_folder, file=file, dataset=extra.get("dataset"), model_name=model_name, extra=dict(extra),
        spec=spec, weights_preprocessing=pretrained,
    )


def zoo_target(name: str) -> Target:
    """A zoo model with random weights (seed 0): for looking at an architecture."""
    model = models.get_model(name, generator=np.random.default_rng(0))
    model.eval()
    C = models.default_input_shape(name)[0]
    return Target(model=model, label=f"{name} (random weights)", input_shape=models.default_input_shape(name),
                  mean=default_normalization(C)[0], std=default_normalization(C)[1], classes=[], model_name=name)
