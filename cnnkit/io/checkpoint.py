"""Checkpoints: one safetensors file per checkpoint, written atomically, never pickled.

Layout of a checkpoint file (safetensors: a JSON header, then raw little-endian arrays):

- tensors ``model/<state_dict key>``: the model's parameters and buffers (PyTorch's keys);
- tensors ``optimizer/<param index>/<slot>``: array-valued optimizer state
  (momentum buffers, Adam moments);
- metadata ``format`` = ``cnnkit-checkpoint``, ``version``, and ``cnnkit``: a JSON document
  with the model's zoo name and constructor config, the optimizer's class, param
  groups and scalar state, the scheduler's state, the epoch, RNG states, metrics and
  training history.

``save`` writes to a temporary file in the same folder, fsyncs it and renames it over
the target, so a crash or a kill during a save leaves the previous checkpoint intact.
``load_checkpoint`` reads a file and refuses truncated, corrupt and foreign files with a
message naming the file and what is wrong; ``load`` rebuilds the zoo model it names, pruned
or not (the weights' shapes give the channel counts), and loads its weights.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import models, nn
from ..errors import CheckpointError
from ..nn.resize import set_array, sync_sizes

__all__ = [
    "CheckpointError", "Checkpoint", "save", "save_checkpoint", "load_checkpoint", "load", "atomic_write_bytes",
    "capture_rng", "restore_rng", "resize_to_state",
]

FORMAT = "cnnkit-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """The contents of a checkpoint file (``load_checkpoint``); ``build_model()`` rebuilds its model.

    Attributes:
        model_state: the model's state dict (PyTorch's keys).
        meta: the ``cnnkit`` metadata: model name and config, optimizer, scheduler, epoch,
            RNG states, metrics, history and ``extra`` (what ``cnnkit train`` stores about the
            data: dataset, input_shape, mean, std, classes).
        optimizer_arrays: array-valued optimizer state, ``"<param index>/<slot>"``.
        path: the file it was read from (for messages).
    """

    model_state: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    optimizer_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def extra(self) -> dict[str, Any]:
        """What ``cnnkit train`` stored about the data (dataset, input_shape, mean, std, classes)."""
        return self.meta.get("extra", {})

    @property
    def model_name(self) -> str | None:
        return self.meta.get("model", {}).get("name")

    @property
    def model_config(self) -> dict[str, Any]:
        return self.meta.get("model", {}).get("config", {})

    def build_model(self) -> nn.Module:
        """Rebuild the zoo model this checkpoint names, pruned or not, with its weights, in eval mode.

        Raises:
            CheckpointError: no zoo model named, an unknown one, or weights that do not fit it.
        """
        where = self.path if self.path is not None else "checkpoint"
        name = self.model_name
        if not name:
            raise CheckpointError(
                f"{where}: the checkpoint does not name a zoo model; build the model yourself and "
                "call model.load_state_dict(load_checkpoint(path).model_state)"
            )
        try:
            model = models.get_model(name, **self.model_config)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{where}: cannot rebuild model {name!r}: {e}") from None
        resize_to_state(model, self.model_state)
        try:
            model.load_state_dict(self.model_state)
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{where}: the weights do not fit model {name!r}: {e}") from None
        model.eval()
        return model

    def optimizer_state(self) -> dict[str, Any] | None:
        """The optimizer state_dict in PyTorch's layout, arrays restored."""
        opt = self.meta.get("optimizer")
        if opt is None:
            return None
        state: dict[int, dict[str, Any]] = {}
        for index, slots in opt["scalar_state"].items():
            state[int(index)] = dict(slots)
        for key, array in self.optimizer_arrays.items():
            index, slot = key.split("/", 1)
            state.setdefault(int(index), {})[slot] = array
        return {"state": state, "param_groups": opt["param_groups"]}


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def save(
    model,
    path: str | os.PathLike,
    *,
    model_name: str | None = None,
    model_config: dict[str, Any] | None = None,
    optimizer=None,
    scheduler=None,
    epoch: int | None = None,
    metrics: dict[str, Any] | None = None,
    history: dict[str, Any] | None = None,
    rng_states: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a model (and optionally its training state) to one safetensors file, atomically.

    ``cnnkit.save(model, path)``, in ``torch.save``'s order. Zoo models are rebuilt by
    ``cnnkit.load(path)``; any model's weights load with
    ``model.load_state_dict(load_checkpoint(path).model_state)``.

    Args:
        model: the Module (its ``state_dict()`` is saved).
        path: the file to write (its folder is created); an existing file is replaced
            only once the new one is complete.
        model_name, model_config: how ``cnnkit.load`` rebuilds the model
            (``cnnkit.models.get_model(model_name, **model_config)``); default to the
            ``zoo_name`` / ``zoo_config`` attributes the zoo sets on its models.
        optimizer, scheduler, epoch, metrics, history, rng_states: training state, to resume.
        extra: anything JSON-friendly (``cnnkit train`` stores the dataset, input shape,
            normalization and class names).

    Returns:
        The path written.
    """
    if isinstance(model, (str, os.PathLike)) and hasattr(path, "state_dict"):
        # cnnkit.save(path, model): the order of cnnkit <= 0.1 (save_checkpoint's)
        warnings.warn("cnnkit.save(path, model) is deprecated: use cnnkit.save(model, path), as torch.save",
                      DeprecationWarning, stacklevel=2)
        model, path = path, model
    from safetensors.numpy import save as st_save  # safetensors loads only when a file is written

    tensors: dict[str, np.ndarray] = {}
    for key, value in model.state_dict().items():
        tensors[f"model/{key}"] = np.asarray(getattr(value, "data", value), order="C")  # keeps 0-d
    meta: dict[str, Any] = {
        "model": {
            "name": model_name or getattr(model, "zoo_name", None),
            "config": model_config if model_config is not None else getattr(model, "zoo_config", {}),
            "class": type(model).__name__,
        },
        "epoch": epoch,
        "metrics": metrics or {},
        "history": history or {},
        "rng_states": rng_states or {},
        "extra": extra or {},
    }
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalar_state: dict[str, dict[str, Any]] = {}
        for index, slots in sd["state"].items():
            scalars = {}
            for slot, value in slots.items():
                if isinstance(value, np.ndarray) and value.ndim > 0:
                    tensors[f"optimizer/{index}/{slot}"] = np.asarray(value, order="C")
                else:
                    scalars[slot] = _jsonable(value)
            scalar_state[str(index)] = scalars
        meta["optimizer"] = {
            "class": type(optimizer).__name__,
            "param_groups": _jsonable(sd["param_groups"]),
            "scalar_state": scalar_state,
        }
    if scheduler is not None:
        meta["scheduler"] = {"class": type(scheduler).__name__, "state": _jsonable(scheduler.state_dict())}
    metadata = {"format": FORMAT, "version": str(VERSION), "cnnkit": json.dumps(_jsonable(meta))}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))
    return Path(path)


def save_checkpoint(path: str | os.PathLike, model, **kwargs) -> Path:
    """Deprecated: ``save(model, path, ...)`` (``torch.save``'s order)."""
    warnings.warn("save_checkpoint(path, model) is deprecated: use cnnkit.save(model, path) "
                  "(cnnkit.io.save), as torch.save", DeprecationWarning, stacklevel=2)
    return save(model, path, **kwargs)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint file, checking that it is complete and is cnnkit's.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or not a cnnkit checkpoint.
    """
    from safetensors import SafetensorError  # safetensors loads only when a file is read
    from safetensors.numpy import load as st_load

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    if len(raw) < 8:
        raise CheckpointError(f"{path}: not a cnnkit checkpoint (only {len(raw)} bytes)")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > len(raw) - 8:
        if raw[:2] == b"PK" or raw[:1] == b"\x80":
            raise CheckpointError(
                f"{path}: not a cnnkit checkpoint (looks like a zip or pickle file, e.g. a PyTorch "
                ".pt file; cnnkit never unpickles files)"
            )
        raise CheckpointError(
            f"{path}: not a cnnkit checkpoint or truncated (header claims {header_len} bytes, "
            f"file has {len(raw)})"
        )
    try:
        header = json.loads(raw[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a cnnkit checkpoint (its header is not JSON)") from None
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: a safetensors file, but not a cnnkit checkpoint (no '{FORMAT}' metadata)"
        )
    if int(metadata.get("version", "0")) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {metadata.get('version')} is newer than this "
            f"cnnkit reads ({VERSION}); upgrade cnnkit"
        )
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end != len(raw):
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint (expected {8 + header_len + end} bytes, "
            f"found {len(raw)})"
        )
    try:
        arrays = st_load(raw)
        meta = json.loads(metadata["cnnkit"])
    except (SafetensorError, KeyError, json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint ({e})") from None
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optimizer_arrays = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
    return Checkpoint(model_state, meta, optimizer_arrays, path)


def load(path: str | os.PathLike) -> nn.Module:
    """Rebuild the zoo model saved in a checkpoint, pruned or not, and load its weights.

    The checkpoint names the zoo model and its constructor config; the weights' shapes
    give the channel counts of a pruned model (``resize_to_state``), so checkpoints of
    ``cnnkit prune`` load the same way as those of ``cnnkit train``. Same as
    ``load_checkpoint(path).build_model()``.

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: bad file, or a checkpoint whose model is not in the zoo.
    """
    return load_checkpoint(path).build_model()


def resize_to_state(model: nn.Module, state: dict[str, np.ndarray]) -> nn.Module:
    """Give ``model``'s layers the channel counts of a pruned state dict, in place.

    Conv2d, ConvTranspose2d, Linear and BatchNorm layers whose weights in ``state`` are
    smaller get parameters and buffers of the state's shapes (zeros, to be overwritten by
    ``load_state_dict``) and matching in/out channel counts; a depthwise convolution
    (groups == in_channels) keeps being depthwise. This is how a pruned checkpoint of a
    zoo model is rebuilt: ``get_model(name)``, ``resize_to_state``, ``load_state_dict``.
    Layers whose shapes already match are left alone.

    Returns:
        ``model``.
    """
    for path, m in model.named_modules():
        if not isinstance(m, nn.RESIZABLE):
            continue
        prefix = f"{path}." if path else ""
        for name, value in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            saved = state.get(prefix + name)
            if saved is not None and value is not None and tuple(np.shape(saved)) != tuple(value.shape):
                set_array(m, name, np.zeros(np.shape(saved), np.asarray(getattr(value, "data", value)).dtype))
        sync_sizes(m)
    return model


def capture_rng(generators: dict[str, np.random.Generator]) -> dict[str, Any]:
    """The bit-generator states of named generators (JSON-friendly), for a checkpoint."""
    return {name: g.bit_generator.state for name, g in generators.items()}


def restore_rng(states: dict[str, Any], generators: dict[str, np.random.Generator]) -> None:
    """Put saved states back into the named generators (the same objects keep being used)."""
    for name, g in generators.items():
        if name in states:
            g.bit_generator.state = states[name]
