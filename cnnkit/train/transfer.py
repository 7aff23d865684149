"""Transfer learning: start from trained weights, a new classifier head, a frozen backbone.

    report = init_backbone(model, "resnet18", "resnet18-imagenet.safetensors")
    frozen = freeze(model, "resnet18", "backbone")      # or "none", or N: the first N layers
    groups = param_groups(model, "resnet18", lr=0.01, backbone_lr_scale=0.1)

"The head" is the layer each zoo model declares (``cnnkit.models.zoo_entry(name).head``):
its weights are never taken from the source, so it fits the new classes. The first
convolution adapts to another channel count as timm does: RGB weights summed over their
input channels for one-channel images, one channel's weights spread over three.

Frozen BatchNorm layers stay in eval mode during training (``FrozenBatchNorm``): their
running statistics are the trained ones, as users expect when fine-tuning.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import models, nn
from ..errors import CheckpointError
from ..io.checkpoint import FORMAT, load_checkpoint
from .callbacks import Callback

__all__ = ["init_backbone", "read_weights", "freeze", "param_groups", "FrozenBatchNorm", "BackboneReport"]


@dataclass
class BackboneReport:
    """What ``init_backbone`` did: keys loaded, the head's keys left out, the stem adapted."""

    source: str
    loaded: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        text = f"{len(self.loaded)} tensors from {self.source}; new head ({', '.join(self.head) or 'none'})"
        if self.adapted:
            text += f"; {', '.join(self.adapted)}"
        return text


def read_weights(source: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A state_dict with PyTorch's keys, and what the source says about its inputs.

    Sources: a cnnkit checkpoint (its ``model/`` tensors; meta: the model name, classes,
    input shape, mean and std it was trained with) or a safetensors file of a PyTorch
    state_dict (meta: empty).

    Raises:
        CheckpointError: the file is missing, or neither of those.
    """
    # NOTE: the one reader of weights sources (torch.save files, timm/Hugging Face names,
    # torchvision weights names) is cnnkit.io.weights (issue 11); this function reads the
    # two sources issue 10 needs until it lands, and is then replaced by it.
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"--weights {source}: no such file")
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        raise CheckpointError(f"--weights {source}: not a safetensors file (a cnnkit checkpoint or a "
                              "state_dict saved with safetensors)")
    if FORMAT.encode() in path.read_bytes()[: 8 + struct.unpack("<Q", head[:8])[0]]:
        ckpt = load_checkpoint(path)
        extra = ckpt.meta.get("extra", {})
        meta = {k: extra[k] for k in ("mean", "std", "classes", "input_shape") if k in extra}
        meta["model"] = ckpt.model_name
        return dict(ckpt.model_state), meta
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path))), {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"--weights {source}: cannot read ({e})") from None


def _adapt_stem(weight: np.ndarray, channels: int) -> np.ndarray:
    """First-convolution weights (F, C, KH, KW) for ``channels`` inputs (timm's adapt_input_conv)."""
    C = weight.shape[1]
    if C == 3 and channels == 1:
        return weight.sum(axis=1, keepdims=True)
    if C == 1:
        return np.repeat(weight, channels, axis=1) / channels
    raise ValueError(f"cannot adapt {C}-channel weights to {channels} channels")


def init_backbone(model: nn.Module, name: str, source: str | os.PathLike) -> BackboneReport:
    """Load every weight of ``source`` into ``model`` except the zoo model's head.

    Raises:
        CheckpointError: the source lacks some of the backbone's keys, has keys the model
            does not, or shapes that differ (each listed).
    """
    entry = models.zoo_entry(name)
    state, meta = read_weights(source)
    report = BackboneReport(str(source), meta=meta)
    own = model.state_dict()
    head_prefix = entry.head + "."
    report.head = sorted(k for k in own if k.startswith(head_prefix))
    stem_key = entry.stem + ".weight"
    load: dict[str, np.ndarray] = {}
    mismatched = []
    for key, value in state.items():
        if key.startswith(head_prefix) or key not in own:
            continue
        target = np.shape(getattr(own[key], "data", own[key]))
        value = np.asarray(value)
        if key == stem_key and value.shape != target and value.shape[0] == target[0]:
            value = _adapt_stem(value, target[1])
            report.adapted.append(f"{key} adapted from {state[key].shape[1]} to {target[1]} input channels")
        if value.shape != target and value.size == 1 and target == ():  # a scalar saved as (1,)
            value = value.reshape(())
        if value.shape != target:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target)}")
            continue
        load[key] = value.astype(np.asarray(getattr(own[key], "data", own[key])).dtype, copy=False)
    missing = sorted(k for k in own if k not in load and not k.startswith(head_prefix) and k not in
                     [m.split(" ")[0] for m in mismatched])
    unexpected = sorted(k for k in state if k not in own and not k.startswith(head_prefix))
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"shapes differ: {', '.join(mismatched[:5])}")
        if missing:
            parts.append(f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in {name}: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"--weights {source} does not fit {name} (head {entry.head!r} excluded): "
                              + "; ".join(parts))
    model.load_state_dict({**{k: getattr(v, "data", v) for k, v in own.items()}, **load})
    report.loaded = sorted(load)
    return report


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(path, m) for path, m in model.named_modules()
            if path and any(True for _ in m.parameters(recurse=False))]


def freeze(model: nn.Module, name: str, what: str | int) -> tuple[list[nn.Module], str]:
    """Stop training part of ``model``: ``"backbone"`` (all but the head), ``"none"``, or N.

    N freezes the first N layers that hold weights (convolutions, BatchNorm, Linear), in
    the order the model defines them.

    Returns:
        (the frozen BatchNorm layers, to keep in eval mode; a one-line description).
    """
    entry = models.zoo_entry(name)
    layers = _weighted_layers(model)
    if what == "none":
        return [], "nothing frozen"
    if what == "backbone":
        chosen = [(p, m) for p, m in layers if not (p == entry.head or p.startswith(entry.head + "."))]
    else:
        n = int(what)
        if not 0 <= n <= len(layers):
            raise ValueError(f"--freeze {n}: {name} has {len(layers)} layers with weights")
        chosen = layers[:n]
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
