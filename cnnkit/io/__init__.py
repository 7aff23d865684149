"""Files in and out: checkpoints (one safetensors file, written atomically, never pickled).

    cnnkit.save(model, "lenet5.safetensors")        # = cnnkit.io.save
    model = cnnkit.load("lenet5.safetensors")       # rebuilds the zoo model, pruned or not

``checkpoint.py``: the checkpoint format, ``save`` (model and training state),
``load_checkpoint`` (read and verify a file), ``load`` (rebuild the model it names).
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
]
