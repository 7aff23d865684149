"""Files in and out: checkpoints (one safetensors file, written atomically, never pickled).

    cnnkit.save(model, "lenet5.safetensors")        # = cnnkit.io.save
    model = cnnkit.load("lenet5.safetensors")       # rebuilds the zoo model, pruned or not

``checkpoint.py``: the checkpoint format, ``save`` (model and training state),
``load_checkpoint`` (read and verify a file: header, SHA-256 digest, finite weights),
``load`` (rebuild the model it names). ``safetensors.py``: the file format itself, read
with every field checked before any data is read, and written atomically.
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
from .safetensors import read_safetensors, write_safetensors

__all__ = [
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
]
