"""From a file name (or a zoo name) to a ModelSource: the model and how to feed it.

``LOADERS`` maps a file suffix to the function that reads such a file, named as
"module:function" so nothing is imported before it is needed. Adding a format is one
line, e.g. ``".onnx": "cnnkit.onnx.explore:load_source"``; the function takes a Path and
returns a ModelSource.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .session import ModelSource

__all__ = ["LOADERS", "register_loader", "load_source", "checkpoint_source"]

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MNIST = ((0.1307,), (0.3081,))

LOADERS: dict[str, str | Callable[[Path], ModelSource]] = {
    ".safetensors": "cnnkit.explore.loaders:checkpoint_source",
}


def register_loader(suffix: str, loader: str | Callable[[Path], ModelSource]) -> None:
    """Teach ``load_source`` a file suffix (".onnx", ".pth"): ``loader(path) -> ModelSource``."""
    LOADERS[suffix.lower()] = loader


def _resolve(loader: str | Callable[[Path], ModelSource]) -> Callable[[Path], ModelSource]:
    if callable(loader):
        return loader
    module, _, name = loader.partition(":")
    return getattr(importlib.import_module(module), name)


def _default_normalization(C: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if C == 3:
        return _IMAGENET
    if C == 1:
        return _MNIST
    return (0.5,) * C, (0.5,) * C


def checkpoint_source(path: Path) -> ModelSource:
    """A cnnkit checkpoint (zoo model, pruned or not), with its dataset's normalization and classes."""
    from ..checkpoint import load, load_checkpoint
    from ..runner import default_input_shape  # LAYOUT: the models registry after the layout lands

    ckpt = load_checkpoint(path)
    extra = ckpt.meta.get("extra", {})
    model = load(path)
    shape = tuple(int(v) for v in (extra.get("input_shape") or default_input_shape(ckpt.model_name or "")))
    mean, std = tuple(extra.get("mean", ())), tuple(extra.get("std", ()))
    if len(mean) != shape[0] or len(std) != shape[0]:
        mean, std = _default_normalization(shape[0])
    dataset = extra.get("dataset")
    label = f"{path.name} ({ckpt.model_name}{', ' + dataset if dataset else ''}{', pruned' if extra.get('pruned') else ''})"
    return ModelSource(
        model=model, label=label, input_shape=shape, mean=mean, std=std,
        classes=[str(c) for c in extra.get("classes", ())], task=str(extra.get("task", "multiclass")),
        run_folder=path.resolve().parent, dataset=dataset, model_name=ckpt.model_name,
    )


def zoo_source(name: str) -> ModelSource:
    """A zoo model with random weights (seed 0): for looking at an architecture."""
    from .. import models
    from ..runner import default_input_shape  # LAYOUT: the models registry after the layout lands

    model = models.get_model(name, rng=np.random.default_rng(0))
    shape = tuple(default_input_shape(name))
    mean, std = _default_normalization(shape[0])
    return ModelSource(model=model, label=f"{name} (random weights)", input_shape=shape, mean=mean, std=std,
                       model_name=name)


def load_source(spec: str) -> ModelSource:
    """Load a model file by its suffix (see ``LOADERS``), or a zoo model by name.

    Raises:
        FileNotFoundError: no such file (and not a zoo name).
        ValueError: a suffix no loader knows (the message lists those known).
        CheckpointError: the file is not a valid checkpoint.
    """
    from .. import models

    path = Path(spec)
    if path.is_dir():
        raise ValueError(f"{spec} is a folder; pass a checkpoint file in it (e.g. {path / 'best.safetensors'})")
    if not path.exists():
        if spec.lower() in models.list_models():
            return zoo_source(spec.lower())
        raise FileNotFoundError(f"{spec}: no such model file (and not a zoo model name; `cnnkit models` lists them)")
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ValueError(f"{path}: cannot explore {path.suffix or 'suffix-less'} files; known: {', '.join(sorted(LOADERS))}")
    return _resolve(loader)(path)
