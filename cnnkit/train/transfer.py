"""Transfer learning: start from trained weights, a new classifier head, a frozen backbone.

    source = cnnkit.io.read_weights("resnet18.IMAGENET1K_V1", "resnet18")  # or a .pth, safetensors, ...
    mean, std, why = pretrained_normalization(source)              # the weights' own, when they say
    report = init_backbone(model, "resnet18", source)
    frozen = freeze(model, "resnet18", "backbone")      # or "none", or N: the first N layers
    groups = param_groups(model, "resnet18", lr=0.01, backbone_lr_scale=0.1)

Every source ``cnnkit.io.weights`` reads works (one loader: ``read_weights`` /
``load_weights``): a cnnkit checkpoint, a ``torch.save`` file (read without unpickling), a
safetensors state_dict (timm, Hugging Face keys mapped) or a weights name (``DEFAULT``,
``IMAGENET1K_V1``, ``resnet18.IMAGENET1K_V1``: downloaded once into the cache).

"The head" is the layer each zoo model declares (``cnnkit.models.zoo_entry(name).head``):
its weights are never taken from the source, so it fits the new classes. The first
convolution adapts to another channel count as timm does: RGB weights summed over their
input channels for one-channel images, one channel's weights spread over three.

Frozen BatchNorm layers stay in eval mode during training (``FrozenBatchNorm``): their
running statistics are the trained ones, as users expect when fine-tuning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import models, nn
from ..io.weights import SourceWeights, WeightsReport, load_weights
from .callbacks import Callback

__all__ = ["init_backbone", "pretrained_normalization", "adapt_stem", "freeze", "param_groups",
           "FrozenBatchNorm", "BackboneReport"]


@dataclass
class BackboneReport:
    """What ``init_backbone`` did: the weights report, and the model's new head keys."""

    weights: WeightsReport
    head: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> list[str]:
        return sorted(self.weights.state_dict)

    def describe(self) -> str:
        w = self.weights
        name = w.meta.get("weights") if w.kind == "named weights" else None
        where = f"{name} ({w.kind}" if name and name != w.source else f"{w.source} ({w.kind}"
        text = f"{len(w.state_dict)} tensors from {where}, {w.convention} keys); new head ({', '.join(self.head) or 'none'})"
        for key, got, want in w.adapted:
            if len(want) == 4:
                text += f"; {key} adapted from {got[1]} to {want[1]} input channels"
            else:
                text += f"; {key} reshaped from {list(got)} to {list(want)}"
        return text


def pretrained_normalization(source: SourceWeights) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """The mean and std the weights were trained with, and where they come from (None: not stored).

    Named weights carry theirs (ImageNet's for torchvision's); a cnnkit checkpoint, the
    ones it was trained with. A plain state_dict (``.pth``, safetensors) says nothing.
    """
    mean, std = source.meta.get("mean"), source.meta.get("std")
    if not mean or not std or len(mean) != len(std):
        return None
    name = source.weights_name
    why = f"the weights' own: {name}" if name else f"the weights' own, from {source.source}"
    return tuple(float(v) for v in mean), tuple(float(v) for v in std), why


def adapt_stem(weight: np.ndarray, channels: int) -> np.ndarray:
    """First-convolution weights (F, C, KH, KW) for ``channels`` inputs (timm's adapt_input_conv).

    RGB weights are summed over their input channels for one channel (a gray image seen as
    three equal channels gives the same output); one channel's weights are spread evenly
    over ``channels``.

    Raises:
        ValueError: no such adaptation (e.g. 3 -> 4 channels).
    """
    C = weight.shape[1]
    if C == 3 and channels == 1:
        return weight.sum(axis=1, keepdims=True)
    if C == 1:
        return np.repeat(weight, channels, axis=1) / channels
    raise ValueError(f"cannot adapt {C}-channel weights to {channels} channels")


def init_backbone(model: nn.Module, name: str, source: str | os.PathLike | SourceWeights) -> BackboneReport:
    """Load every weight of ``source`` into ``model`` except the zoo model's head.

    Args:
        model: the zoo model ``name``, built with the new number of classes (and channels).
        source: any weights source (``read_weights``), or what ``read_weights`` returned.

    Raises:
        WeightsError (a CheckpointError): the source lacks some of the backbone's keys,
            has keys the model does not, or shapes that differ (each listed).
    """
    entry = models.zoo_entry(name)
    stem_key = entry.stem + ".weight"

    def adapt(key: str, value: np.ndarray, shape: tuple) -> np.ndarray | None:
        if (key == stem_key and value.ndim == 4 and len(shape) == 4 and value.shape[0] == shape[0]
                and value.shape[2:] == shape[2:] and (value.shape[1], shape[1]) in ((3, 1), (1, 3))):
            return adapt_stem(np.asarray(value), shape[1])
        if value.size == 1 and shape == ():  # a scalar (num_batches_tracked) saved with shape (1,)
            return value.reshape(())
        return None

    report = load_weights(model, source, model_name=name, skip=(entry.head,), adapt=adapt)
    head_prefix = entry.head + "."
    head = sorted(k for k in model.state_dict() if k.startswith(head_prefix))
    return BackboneReport(report, head)


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(path, m) for path, m in model.named_modules()
            if path and any(True for _ in m.parameters(recurse=False))]


def freeze(model: nn.Module, name: str, what: str | int) -> tuple[list[nn.Module], str]:
    """Stop training part of ``model``: ``"backbone"`` (all but the head), ``"none"``, or N.

    N freezes the first N layers that hold weights (convolutions, BatchNorm, Linear), in
    the order the model defines them; the head is never among them (it is new: it trains).

    Raises:
        ValueError: N is larger than the number of layers with weights before the head.

    Returns:
        (the frozen BatchNorm layers, to keep in eval mode; a one-line description).
    """
    entry = models.zoo_entry(name)
    backbone = [(p, m) for p, m in _weighted_layers(model) if not (p == entry.head or p.startswith(entry.head + "."))]
    if what == "none":
        return [], "nothing frozen"
    if what == "backbone":
        chosen = backbone
    else:
        n = int(what)
        if not 0 <= n <= len(backbone):
            raise ValueError(f"--freeze {n}: {name} has {len(backbone)} layers with weights before its head "
                             f"({entry.head}), which always trains; give at most {len(backbone)} "
                             "(--freeze backbone freezes all of them)")
        chosen = backbone[:n]
    frozen_bn = []
    count = 0
    for _, m in chosen:
        for p in m.parameters(recurse=False):
            p.requires_grad = False
            count += p.data.size
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            frozen_bn.append(m)
    total = sum(p.data.size for p in model.parameters())
    where = "the backbone" if what == "backbone" else f"the first {len(chosen)} layers with weights"
    last = f" (up to {chosen[-1][0]})" if chosen and what != "backbone" else ""
    return frozen_bn, (f"froze {where}{last}: {count:,} of {total:,} parameters; "
                       f"{len(frozen_bn)} BatchNorm layers kept in eval mode")


def param_groups(model: nn.Module, name: str, lr: float, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the backbone at ``lr * backbone_lr_scale``, the head at ``lr``.

    Frozen parameters (``requires_grad=False``) are left out.
    """
    entry = models.zoo_entry(name)
    head, backbone = [], []
    for path, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (head if path.startswith(entry.head + ".") else backbone).append(p)
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_scale})
    if head:
        groups.append({"params": head, "lr": lr})
    return groups


class FrozenBatchNorm(Callback):
    """Keep frozen BatchNorm layers in eval mode (``fit`` puts the model in training mode each epoch)."""

    def __init__(self, layers: list[nn.Module]):
        self.layers = list(layers)

    def on_epoch_begin(self, epoch: int) -> None:
        for m in self.layers:
            m.eval()
