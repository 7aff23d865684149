"""What the commands act on: a checkpoint or zoo model, its inputs, and names given on the command line.

``load_target`` (from ``cnnkit.io.targets``) turns CHECKPOINT|MODEL into a model with its
input shape, normalization and class names; ``model_input`` prepares an image (or the
built-in sample) for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data import DATASETS, prepare_image
from ..errors import UsageError
from ..io.targets import Target, load_target, parse_shape
from ..viz.image_filters import sample_picture

__all__ = [
    "Target", "load_target", "model_input", "parse_shape", "checkpoint_inputs", "dataset_name", "class_name",
    "wrote",
]


def model_input(target: Target, image: str | None, invert: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Return (picture (C, H, W) in [0, 1], model input (1, C, H, W) normalized).

    Args:
        image: a PNG/JPEG path (prepared as ``cnnkit predict`` does), or None for the
            built-in sample: an MNIST digit for one channel, the generated scene otherwise.

    Raises:
        FileNotFoundError, ValueError: the image is missing or unreadable.
    """
    C, H, W = target.input_shape
    raw = prepare_image(image, (C, H, W), invert) if image is not None else sample_picture((C, H, W))
    mean = np.asarray(target.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(target.std, np.float32).reshape(-1, 1, 1)
    return raw, ((raw - mean) / std)[None].astype(np.float32)        # (1, C, H, W)


def wrote(path: Path | str) -> None:
    """Tell the user a file was written."""
    print(f"wrote {path}")


def class_name(target: Target, k: int) -> str:
    """The name of class ``k`` (its index when the checkpoint names no classes)."""
    return target.classes[k] if k < len(target.classes) else str(k)


def checkpoint_inputs(extra: dict[str, Any]) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, list[str]]:
    """(input shape, mean (C, 1, 1), std (C, 1, 1), class names) that ``cnnkit train`` stored.

    Checkpoints without them (saved from Python) get MNIST's: (1, 28, 28), digits 0-9.
    """
    shape = tuple(int(v) for v in extra.get("input_shape", (1, 28, 28)))
    mean = np.asarray(extra.get("mean", (0.1307,)), np.float32).reshape(-1, 1, 1)
    std = np.asarray(extra.get("std", (0.3081,)), np.float32).reshape(-1, 1, 1)
    classes = list(extra.get("classes") or [str(i) for i in range(10)])
    return shape, mean, std, classes  # type: ignore[return-value]


def dataset_name(name: str) -> str:
    """A dataset name from the command line, checked against ``cnnkit.data.DATASETS``."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return name
