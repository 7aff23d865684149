"""What the commands act on: a checkpoint or zoo model, its inputs, and names given on the command line.

``load_inference`` is the one reader of model files: a cnnkit checkpoint, or an .onnx
file (``cnnkit.onnx.load``) whose metadata stands in for the checkpoint's (``onnx_extra``).
``load_target`` turns CHECKPOINT|MODEL (a file, a zoo name, a weights name) into a
``cnnkit.io.targets.Target``: the model with its input shape, normalization, class names
and file preprocessing; ``model_input`` prepares an image (or the built-in sample) for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .. import models
from .. import onnx as cnnkit_onnx  # the onnx package itself loads on first use
from ..data import DATASETS
from ..errors import UsageError
from ..io.checkpoint import load_checkpoint
from ..io.targets import (
    INFERENCE_KEYS,
    Target,
    default_normalization,
    file_preprocessing,
    parse_shape,
    target_from,
    zoo_target,
)
from ..io.weights import build_for_loading, fetch_weights
from ..models.weights import find_weights
from ..train.tasks import Task, task_from_dict
from ..viz.image_filters import sample_picture
from .weights import import_model

__all__ = [
    "Target", "load_target", "model_input", "parse_shape", "checkpoint_inputs", "dataset_name", "class_name",
    "wrote", "file_preprocessing", "checkpoint_task", "is_onnx", "load_inference", "onnx_extra", "INFERENCE_KEYS",
    "WEIGHTS_ONLY", "input_shape_option",
]

# torchvision's ImageNet statistics for RGB zoo models; MNIST's for one-channel ones.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MNIST = ((0.1307,), (0.3081,))


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


# Files that hold weights only (a state_dict), not the network: they need the zoo model's name.
WEIGHTS_ONLY = (".pth", ".pt", ".bin", ".ckpt")


def input_shape_option(text: str) -> tuple[int, int, int]:
    """The argparse ``type`` of ``--input-shape``: ``C,H,W`` (or CxHxW) of positive integers."""
    try:
        return parse_shape(text)
    except UsageError:
        raise argparse.ArgumentTypeError(f"expected C,H,W with positive integers, got {text!r}") from None


def load_target(spec: str, input_shape: tuple[int, int, int] | str | None = None, *, model: str | None = None,
                num_classes: int | None = None) -> Target:
    """A model file, a zoo model name (random weights, seed 0) or a weights name, as a ``Target``.

    Files are read by ``load_inference`` (a checkpoint, or an .onnx file with its metadata);
    a weights name (``resnet18.IMAGENET1K_V1``, as ``cnnkit predict`` takes) is its cached
    checkpoint, fetched once. With ``model`` (a zoo name), ``spec`` is any weights source
    ``cnnkit import`` reads (a PyTorch .pth, never unpickled; a safetensors state_dict;
    timm / Hugging Face keys) loaded into that model, as ``cnnkit import`` would store it.
    ``input_shape`` ((C, H, W) or "C,H,W") replaces the file's or the zoo's.

    Raises:
        CheckpointError: a missing, unreadable or foreign checkpoint file (WeightsError,
            PthError: weights that do not fit ``model``, with the keys).
        OnnxFileError, OnnxUnsupportedError: an .onnx file cnnkit cannot read or run.
        UsageError: a folder, a weights-only file without ``model``, or neither a file nor a
            zoo or weights name (the message lists the zoo).
    """
    path = Path(spec)
    zoo = models.list_models()
    if path.is_dir():
        raise UsageError(f"{spec} is a folder; pass a checkpoint file in it (e.g. {path / 'last.safetensors'})")
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
    if model is not None:
        target = _weights_target(spec, model, num_classes, shape)
    elif path.suffix.lower() in WEIGHTS_ONLY and not is_onnx(spec):
        raise UsageError(f"{path.name} holds weights, not a network: name the zoo model they are for (--model NAME), "
                         f"or make a checkpoint of them once: cnnkit import {spec} --model NAME -o model.safetensors")
    elif path.is_file() or is_onnx(spec) or (spec.lower() not in zoo and (path.suffix or "/" in spec)
                                             and find_weights(None, spec) is None):
        target = _file_target(path, shape)
    elif spec.lower() in zoo:
        target = zoo_target(spec.lower())
    elif find_weights(None, spec) is not None:  # a weights name: its cached checkpoint
        target = _file_target(Path(fetch_weights(find_weights(None, spec))), shape)
    else:
        raise UsageError(f"{spec!r} is neither a checkpoint file nor a zoo model; zoo models: {', '.join(zoo)}")
    if shape is not None and shape != target.input_shape:
        target.input_shape = shape
        target.spec = None                   # another size asked for: plain resizing
        target.weights_preprocessing = None
        if len(target.mean) != shape[0]:
            target.mean, target.std = default_normalization(shape[0])
    return target


def _weights_target(source: str, model_name: str, num_classes: int | None,
                    input_shape: tuple[int, int, int] | None) -> Target:
    """Weights from any source in the zoo model ``model_name``, as ``cnnkit import`` stores them."""
    if model_name not in models.list_models():
        raise UsageError(f"--model: unknown model {model_name!r}; zoo models: {', '.join(models.list_models())}")
    net, config, extra, report = import_model(source, model_name, num_classes=num_classes)
    if any(k != "num_classes" for k in config):  # e.g. GoogLeNet's transform_input: rebuild as the checkpoint would
        rebuilt = build_for_loading(model_name, **config)
        rebuilt.load_state_dict(net.state_dict())
        net = rebuilt
    name = Path(source).name if Path(source).exists() else source
    return target_from(net, extra, label=f"{name} ({model_name}, {report.kind})", model_name=model_name,
                       input_shape=input_shape)


def _file_target(path: Path, input_shape: tuple[int, int, int] | None) -> Target:
    """A checkpoint or .onnx file as a ``Target`` (read by ``load_inference``)."""
    model, extra, model_name = load_inference(str(path))
    if is_onnx(str(path)):
        if not extra.get("input_shape") and input_shape is None:
            raise UsageError(f"{path.name} does not fix its input's size (dims {model.input_shapes[0]}); "
                             "pass --input-shape C,H,W")
        label = f"{path.name} (ONNX{', ' + model.producer if model.producer else ''})"
        return target_from(model, extra, label=label, input_shape=input_shape, file=path.resolve())
    notes = [n for n in (model_name, extra.get("dataset"), "pruned" if extra.get("pruned") else None) if n]
    return target_from(model, extra, label=f"{path.name} ({', '.join(notes)})", model_name=model_name,
                       run_folder=path.resolve().parent, input_shape=input_shape, file=path.resolve())


def model_input(target: Target, image: str | None, invert: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Return (picture (C, H, W) in [0, 1], model input (1, C, H, W) normalized).

    Args:
        image: a PNG/JPEG path (prepared as ``cnnkit predict`` does: ``Target.picture``), or
            None for the built-in sample: an MNIST digit for one channel, the generated scene otherwise.

    Raises:
        FileNotFoundError, ValueError: the image is missing or unreadable.
    """
    raw = target.picture(image, invert) if image is not None else sample_picture(target.input_shape)
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


def checkpoint_task(extra: dict[str, Any], outputs: int) -> Task:
    """The task stored in a checkpoint, or the one its output width implies."""
    return task_from_dict(extra.get("task"), outputs)


def dataset_name(name: str) -> str:
    """A dataset name from the command line, checked against ``cnnkit.data.DATASETS``."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return name
