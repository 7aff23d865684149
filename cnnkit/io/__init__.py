"""Files in and out: checkpoints (one safetensors file, written atomically, never pickled).

    cnnkit.save(model, "lenet5.safetensors")        # = cnnkit.io.save
    model = cnnkit.load("lenet5.safetensors")       # rebuilds the zoo model, pruned or not

``checkpoint.py``: the checkpoint format, ``save`` (model and training state),
``load_checkpoint`` (read and verify a file), ``load`` (rebuild the model it names).
``targets.py``: ``load_target``, a model file (read by its suffix) or a zoo name as a
``Target``: the model with its input shape, normalization and class names.
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
from .targets import LOADERS, Target, load_target, register_loader

__all__ = [
    "LOADERS",
    "Target",
    "load_target",
    "register_loader",
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
]
