"""What the commands act on: a checkpoint or zoo model, its inputs, and names given on the command line.

``load_target`` (from ``cnnkit.io.targets``) turns CHECKPOINT|MODEL into a model with its
input shape, normalization, class names and file preprocessing; ``model_input`` prepares
an image (or the built-in sample) for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import models
from ..data import DATASETS
from ..errors import UsageError
from ..io.targets import Target, file_preprocessing, load_target, parse_shape
from ..train.tasks import Task, task_from_dict
from ..viz.image_filters import sample_picture

__all__ = [
    "Target", "load_target", "model_input", "parse_shape", "checkpoint_inputs", "dataset_name", "class_name",
    "wrote", "file_preprocessing", "checkpoint_task",
]

# torchvision's ImageNet statistics for RGB zoo models; MNIST's for one-channel ones.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MNIST = ((0.1307,), (0.3081,))


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
