"""Files in and out: checkpoints (one safetensors file, written atomically, never pickled).

    cnnkit.save(model, "lenet5.safetensors")        # = cnnkit.io.save
    model = cnnkit.load("lenet5.safetensors")       # rebuilds the zoo model, pruned or not

``checkpoint.py``: the checkpoint format, ``save`` (model and training state),
``load_checkpoint`` (read and verify a file: header, SHA-256 digest, finite weights),
``load`` (rebuild the model it names). ``safetensors.py``: the file format itself, read
with every field checked before any data is read, and written atomically.
``pth.py``: the safe reader of PyTorch files (``read_pth``, ``load_pth``): opcodes walked,
never unpickled. ``weights.py``: any weights source (checkpoint, .pth, safetensors, timm,
Hugging Face, a weights name) as a state_dict with cnnkit's keys (``resolve_weights``,
``load_weights``), safetensors read memory-mapped and written by streaming, named weights
fetched and converted once (``fetch_weights``).
``targets.py``: the ``Target`` (a model with its input shape, normalization, class names
and file preprocessing), built from a model and what its file says (``target_from``).
"""

from __future__ import annotations

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write_bytes,
    capture_rng,
    load,
    load_checkpoint,
    resize_to_state,
    restore_rng,
    save,
    save_checkpoint,
)
from .pth import load_pth, read_pth
from .safetensors import read_safetensors, write_safetensors
from .targets import Target, target_from, zoo_target
from .weights import SourceWeights, WeightsReport, fetch_weights, load_weights, read_weights, resolve_weights

__all__ = [
    "Target",
    "target_from",
    "zoo_target",
    "Checkpoint",
    "CheckpointError",
    "atomic_write_bytes",
    "capture_rng",
    "load",
    "load_checkpoint",
    "resize_to_state",
    "restore_rng",
    "save",
    "save_checkpoint",
    "read_safetensors",
    "write_safetensors",
    "read_pth",
    "load_pth",
    "load_weights",
    "resolve_weights",
    "read_weights",
    "SourceWeights",
    "fetch_weights",
    "WeightsReport",
]
