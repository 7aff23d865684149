"""What the commands act on: a checkpoint or zoo model, its inputs, and names given on the command line.

``load_target`` turns CHECKPOINT|MODEL into a model with its input shape, normalization
and class names; ``model_input`` prepares an image (or a built-in sample) for it. An .onnx
file is taken wherever a checkpoint is (``cnnkit.onnx.load``), its metadata standing in
for the checkpoint's (``onnx_extra``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import models
from .. import onnx as cnnkit_onnx  # the onnx package itself loads on first use
from ..data import DATASETS, prepare_image
from ..data.pipeline import ImageSpec
from ..errors import UsageError
from ..io.checkpoint import load_checkpoint
from ..train.tasks import Task, task_from_dict
from ..viz.image_filters import sample_image, to_grayscale

__all__ = [
    "Target", "load_target", "model_input", "parse_shape", "checkpoint_inputs", "dataset_name", "class_name",
    "wrote", "file_preprocessing", "checkpoint_task", "is_onnx", "load_inference", "onnx_extra", "INFERENCE_KEYS",
]

# torchvision's ImageNet statistics for RGB zoo models; MNIST's for one-channel ones.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MNIST = ((0.1307,), (0.3081,))


@dataclass
class Target:
    """A model to look inside, with what is needed to feed it an image.

    Attributes:
        label: for titles: the checkpoint's file name and model, or "resnet18 (random weights)".
        input_shape: (C, H, W); mean, std: per-channel normalization; classes: class names.
    """

    model: Any
    label: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    spec: ImageSpec | None = None  # how the checkpoint's training read image files (folder data)
    extra: dict[str, Any] = field(default_factory=dict)  # what the file says of its training


def parse_shape(text: str) -> tuple[int, int, int]:
    """``--input-shape C,H,W`` (or CxHxW) as a tuple of three positive integers."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise UsageError(f"--input-shape expects C,H,W with positive integers, got {text!r}")
    return shape  # type: ignore[return-value]


# What a checkpoint's ``extra`` says that inference needs; an ONNX export stores these too.
INFERENCE_KEYS = ("input_shape", "mean", "std", "classes", "dataset", "source", "task", "preprocessing")


def is_onnx(spec: str) -> bool:
    """True for an ONNX file name: ``cnnkit.onnx`` imports it."""
    return Path(spec).suffix.lower() == ".onnx"


def onnx_extra(model) -> dict[str, Any]:
    """A checkpoint-style ``extra`` from an imported ONNX model's cnnkit metadata."""
    pre = model.preprocessing
    extra = {k: pre[k] for k in INFERENCE_KEYS if k in pre and k != "preprocessing"}
    if "image" in pre:
        extra["preprocessing"] = pre["image"]
    if model.class_names:
        extra["classes"] = model.class_names
    if "input_shape" not in extra and model.input_shape:
        extra["input_shape"] = list(model.input_shape)
    return extra


def load_inference(spec: str) -> tuple[Any, dict[str, Any], str | None]:
    """(model, its checkpoint-style extra, zoo model name or None) of a checkpoint or .onnx file."""
    if is_onnx(spec):
        model = cnnkit_onnx.load(spec)  # OnnxFileError / OnnxUnsupportedError name file and node
        return model, onnx_extra(model), None
    ckpt = load_checkpoint(spec)
    return ckpt.build_model(), ckpt.meta.get("extra", {}), ckpt.model_name


def load_target(spec: str, input_shape: str | None = None) -> Target:
    """A checkpoint file (trained weights) or a zoo model name (random weights, seed 0).

    Raises:
        CheckpointError: a missing, unreadable or foreign checkpoint file.
        UsageError: neither a file nor a zoo name (the message lists the zoo).
    """
    path = Path(spec)
    zoo = models.list_models()
    if path.is_dir():
        raise UsageError(f"{spec} is a folder; pass a checkpoint file in it "
                         f"(e.g. {path / 'last.safetensors'})")
    extra: dict[str, Any] = {}
    if is_onnx(spec):
        model, extra, _ = load_inference(spec)
        if not extra.get("input_shape") and not input_shape:
            raise UsageError(f"{path.name} does not fix its input's size (dims {model.input_shapes[0]}); "
                             "pass --input-shape C,H,W")
        shape = tuple(extra.get("input_shape") or parse_shape(input_shape))
        mean, std = tuple(extra.get("mean", ())), tuple(extra.get("std", ()))
        classes = [str(c) for c in extra.get("classes", ())]
        label = f"{path.name} (ONNX{', ' + model.producer if model.producer else ''})"
        image_spec = file_preprocessing(extra)
    elif path.is_file() or (spec.lower() not in zoo and (path.suffix or "/" in spec)):
        ckpt = load_checkpoint(path)  # a missing file: "no such checkpoint file"
        extra = ckpt.meta.get("extra", {})
        model = ckpt.build_model()
        shape = tuple(extra.get("input_shape") or models.default_input_shape(ckpt.model_name or ""))
        mean, std = tuple(extra.get("mean", ())), tuple(extra.get("std", ()))
        classes = [str(c) for c in extra.get("classes", ())]
        dataset = f", {extra['dataset']}" if "dataset" in extra else ""
        label = f"{path.name} ({ckpt.model_name}{dataset})"
        image_spec = file_preprocessing(extra)
    elif spec.lower() in zoo:
        name = spec.lower()
        model = models.get_model(name, generator=np.random.default_rng(0))
        model.eval()
        shape = models.default_input_shape(name)
        mean, std, classes = (), (), []
        label = f"{name} (random weights)"
        image_spec = None
    else:
        raise UsageError(
            f"{spec!r} is neither a checkpoint file nor a zoo model; zoo models: {', '.join(zoo)}"
        )
    if input_shape:
        shape = parse_shape(input_shape)
    C = shape[0]
    if len(mean) != C or len(std) != C:
        mean, std = _IMAGENET if C == 3 else (_MNIST if C == 1 else ((0.5,) * C, (0.5,) * C))
    if image_spec is not None and image_spec.input_shape != tuple(shape):
        image_spec = None  # --input-shape asks for another size: plain resizing
    return Target(model, label, shape, mean, std, classes, image_spec, extra)  # type: ignore[arg-type]


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) in [0, 1] -> (C, H, W), bilinear."""
    from PIL import Image  # Pillow loads only when an image is resized

    if image.shape[1:] == tuple(hw):
        return image
    H, W = hw
    # a float32 array opens as a 32-bit float ("F") image: no rounding to 8 bits before resizing
    chans = [np.asarray(Image.fromarray(c.astype(np.float32)).resize((W, H), Image.BILINEAR)) for c in image]
    return np.clip(np.stack(chans), 0, 1).astype(np.float32)          # (C, H, W)


def _crop_to_aspect(image: np.ndarray, ratio: float) -> np.ndarray:
    """Centre-crop (C, h, w) to height/width = ratio, so resizing does not distort it."""
    _, h, w = image.shape
    if h / w > ratio:
        keep = max(1, round(w * ratio))
        top = (h - keep) // 2
        return image[:, top : top + keep]
    keep = max(1, round(h / ratio))
    left = (w - keep) // 2
    return image[:, :, left : left + keep]


def model_input(target: Target, image: str | None, invert: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Return (picture (C, H, W) in [0, 1], model input (1, C, H, W) normalized).

    Args:
        image: a PNG/JPEG path (prepared as ``cnnkit predict`` does), or None for the
            built-in sample: an MNIST digit for one channel, the generated scene otherwise.

    Raises:
        FileNotFoundError, ValueError: the image is missing or unreadable.
    """
    C, H, W = target.input_shape
    if image is not None and target.spec is not None:
        raw = target.spec.decode(image).astype(np.float32).transpose(2, 0, 1) / 255.0   # (C, H, W)
    elif image is not None:
        raw = prepare_image(image, (C, H, W), invert)
    else:
        sample = sample_image("digit" if C == 1 else "scene")
        if C == 1 and sample.shape[0] == 3:
            sample = to_grayscale(sample)
        if C not in (1, sample.shape[0]):
            sample = np.repeat(sample.mean(axis=0, keepdims=True), C, axis=0)
        raw = _resize(_crop_to_aspect(sample, H / W), (H, W))
    mean = np.asarray(target.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(target.std, np.float32).reshape(-1, 1, 1)
    return raw, ((raw - mean) / std)[None].astype(np.float32)        # (1, C, H, W)


def wrote(path: Path | str) -> None:
    """Tell the user a file was written."""
    print(f"wrote {path}")


def class_name(target: Target, k: int) -> str:
    """The name of class ``k`` (its index when the checkpoint names no classes)."""
    return target.classes[k] if k < len(target.classes) else str(k)


def checkpoint_inputs(
    extra: dict[str, Any], model_name: str | None = None,
) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, list[str]]:
    """(input shape, mean (C, 1, 1), std (C, 1, 1), class names) that ``cnnkit train`` stored.

    Checkpoints without them (saved from Python) get the zoo model's input shape and the
    statistics of its kind: ImageNet's for three channels, MNIST's for one (and digits 0-9).
    """
    default_shape = models.default_input_shape(model_name) if model_name in models.list_models() else (1, 28, 28)
    shape = tuple(int(v) for v in extra.get("input_shape", default_shape))
    fallback = _IMAGENET if shape[0] == 3 else _MNIST
    mean = np.asarray(extra.get("mean", fallback[0]), np.float32).reshape(-1, 1, 1)
    std = np.asarray(extra.get("std", fallback[1]), np.float32).reshape(-1, 1, 1)
    default_classes = [str(i) for i in range(10)] if shape[0] == 1 else []
    classes = list(extra.get("classes") or default_classes)
    return shape, mean, std, classes  # type: ignore[return-value]


def file_preprocessing(extra: dict[str, Any]) -> ImageSpec | None:
    """The ``ImageSpec`` a model trained on a folder of images reads files with (None otherwise).

    Models trained on MNIST-like datasets keep ``prepare_image`` (digits centred as MNIST's).
    """
    if extra.get("source", {}).get("kind") == "folder" and "preprocessing" in extra:
        return ImageSpec.from_dict(extra["preprocessing"])
    return None


def checkpoint_task(extra: dict[str, Any], outputs: int) -> Task:
    """The task stored in a checkpoint, or the one its output width implies."""
    return task_from_dict(extra.get("task"), outputs)


def dataset_name(name: str) -> str:
    """A dataset name from the command line, checked against ``cnnkit.data.DATASETS``."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return name
