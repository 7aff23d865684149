"""Checkpoints: one safetensors file per checkpoint, written atomically, verified on load, never pickled.

Layout of a checkpoint file (safetensors: a JSON header, then raw little-endian arrays):

- tensors ``model/<state_dict key>``: the model's parameters and buffers (PyTorch's keys);
- tensors ``optimizer/<param index>/<slot>``: array-valued optimizer state
  (momentum buffers, Adam moments);
- metadata ``format`` = ``cnnkit-checkpoint``, ``version``, ``sha256`` and ``cnnkit``: a JSON
  document with the model's zoo name and constructor config, the optimizer's class, param
  groups and scalar state, the scheduler's state, the epoch, RNG states, metrics and
  training history. ``sha256`` (format version 2) is the digest of every tensor (name,
  dtype, shape, bytes), of the format name and version and of the ``cnnkit`` document
  (``io.safetensors.content_digest``). Format version 1 files (no digest) still load,
  unverified, but only a header with exactly version 1's fields is read as one: a version 2
  file whose ``version`` or ``sha256`` field was damaged is refused as corrupt, never loaded
  without its check.

``save`` writes to a temporary file in the same folder, fsyncs it and renames it
over the target (``cnnkit.files.atomic_write``), so a crash, a kill or a full disk during a
save leaves the previous checkpoint intact. ``load_checkpoint`` opens regular files only,
checks the header against the data before reading it (``io.safetensors``), verifies the
digest (a flipped bit is reported as corruption) and refuses non-finite weights, naming
the tensor; truncated, corrupt and foreign files are refused with a message naming the
file and what is wrong. ``load`` rebuilds the zoo model it names, pruned or not (the
weights' shapes give the channel counts), with its batch norms folded or not (a model of
``surgery.fold_batchnorm`` carries its (conv, bn) pairs, recorded as
``folded_batchnorm`` beside the model's name and config), and loads its weights; a model
of ``surgery.optimize_for_inference`` (``prepacked_for_inference``) is frozen and
prepacked again after loading. The rebuilt model declares the input size it was trained at
(``model.input_shape`` from ``extra["input_shape"]``, which ``cnnkit train`` stores), not the
size its zoo entry was designed for.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import models, nn
from ..errors import CheckpointError
from ..files import atomic_write_bytes
from ..nn.resize import set_array, sync_sizes
from ..nn.utils import fuse_conv_bn_pairs, prepack_for_inference
from .safetensors import content_digest, parse_json, read_safetensors, write_safetensors

__all__ = [
    "CheckpointError", "Checkpoint", "save", "save_checkpoint", "save_state_dict", "load_checkpoint", "load",
    "atomic_write_bytes",
    "capture_rng", "restore_rng", "resize_to_state",
]

FORMAT = "cnnkit-checkpoint"
VERSION = 2  # 2: the sha256 digest of the contents (version 1 files load, unverified)

# The metadata fields of each format version, exactly. A file is read as version 1 (no digest to
# verify) only if it has version 1's fields and no others: a version 2 file whose "version" lost a
# bit or two still carries its "sha256", and is refused as corrupt rather than loaded unverified.
# The version and the format name are part of the digested text, so they cannot change either.
_FIELDS = {1: ("format", "version", "cnnkit"), 2: ("format", "version", "cnnkit", "sha256")}


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
        """Rebuild the zoo model this checkpoint names, pruned or not, folded or not, with its weights, in eval mode.

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
        # A size in the config that no weight has (num_classes=10**9) would build a huge model
        # before the shapes are compared: refuse it first.
        largest = max((d for a in self.model_state.values() for d in np.shape(a)), default=0)
        for key in ("num_classes", "in_channels"):
            value = self.model_config.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > max(largest, 1):
                raise CheckpointError(f"{where}: model config {key}={value} does not match its weights (no tensor "
                                      f"has a dimension that large; the largest is {largest})")
        try:
            model = models.get_model(name, **self.model_config)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{where}: cannot rebuild model {name!r}: {e}") from None
        except MemoryError:
            raise CheckpointError(f"{where}: model config {self.model_config} asks for a model too large to "
                                  "build in memory") from None
        folded = [tuple(pair) for pair in self.meta.get("model", {}).get("folded_batchnorm", [])]
        if folded:  # saved after surgery.fold_batchnorm: the same pairs, then the folded weights
            model.eval()
            try:
                fuse_conv_bn_pairs(model, folded)
            except (ValueError, TypeError) as e:
                raise CheckpointError(f"{where}: cannot fold the batch norms of model {name!r} as saved: {e}") from None
            model.folded_batchnorm = folded
        resize_to_state(model, self.model_state)
        try:
            model.load_state_dict(self.model_state)
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{where}: the weights do not fit model {name!r}: {e}") from None
        if self.meta.get("model", {}).get("prepacked_for_inference"):  # saved after optimize_for_inference
            prepack_for_inference(model)
        trained = self._trained_input_shape(getattr(model, "input_shape", None))
        if trained is not None:  # the size it was trained at, not the one the zoo entry was designed for
            model.input_shape = trained
        model.eval()
        return model

    def _trained_input_shape(self, declared: tuple[int, ...] | None) -> tuple[int, int, int] | None:
        """The (C, H, W) stored beside the weights (``extra["input_shape"]``), checked; None if none is stored."""
        shape = self.extra.get("input_shape")
        if shape is None:
            return None
        where = self.path if self.path is not None else "checkpoint"
        if (not isinstance(shape, list) or len(shape) != 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            raise CheckpointError(f"{where}: corrupt checkpoint (stored input_shape {shape!r}; expected "
                                  "[C, H, W] of positive integers)")
        if declared and int(declared[0]) != shape[0]:
            raise CheckpointError(f"{where}: the stored input_shape {shape} has {shape[0]} channels, but model "
                                  f"{self.model_name!r} as rebuilt takes {int(declared[0])}")
        return (shape[0], shape[1], shape[2])

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
            normalization and class names). Without an ``input_shape`` in it, the model's
            declared ``input_shape`` (if any) is stored, which ``load`` gives the rebuilt model.

    Returns:
        The path written.
    """
    if isinstance(model, (str, os.PathLike)) and hasattr(path, "state_dict"):
        # cnnkit.save(path, model): the order of cnnkit <= 0.1 (save_checkpoint's)
        warnings.warn("cnnkit.save(path, model) is deprecated: use cnnkit.save(model, path), as torch.save",
                      DeprecationWarning, stacklevel=2)
        model, path = path, model
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
        "extra": _with_input_shape(extra, model),
    }
    folded = getattr(model, "folded_batchnorm", None)
    if folded:  # surgery.fold_batchnorm's (conv, bn) pairs: load folds the rebuilt model the same way
        meta["model"]["folded_batchnorm"] = [list(pair) for pair in folded]
    if getattr(model, "prepacked_for_inference", False):  # load freezes and prepacks the rebuilt model again
        meta["model"]["prepacked_for_inference"] = True
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
    return _write(path, tensors, meta)


def _with_input_shape(extra: dict[str, Any] | None, model) -> dict[str, Any]:
    """``extra``, plus the (C, H, W) the model declares (``model.input_shape``) when ``extra`` stores none.

    So a model rebuilt by ``load`` (which declares its trained size), then folded, pruned or
    fine-tuned and saved again, keeps declaring that size.
    """
    extra = dict(extra or {})
    declared = getattr(model, "input_shape", None)
    if ("input_shape" not in extra and isinstance(declared, (tuple, list)) and len(declared) == 3
            and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in declared)):
        extra["input_shape"] = [int(d) for d in declared]
    return extra


def save_state_dict(path: str | os.PathLike, state_dict, *, model_name: str,
                    model_config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a model-only checkpoint from a state dict (arrays with the model's keys), atomically.

    What ``cnnkit import`` writes for converted weights: ``cnnkit.load`` rebuilds the zoo
    model ``model_name`` with ``model_config`` from it, and it carries the same SHA-256 as
    every checkpoint.
    """
    tensors = {f"model/{k}": np.asarray(getattr(v, "data", v)) for k, v in state_dict.items()}
    meta = {"model": {"name": model_name, "config": dict(model_config or {}), "class": None}, "epoch": None,
            "metrics": {}, "history": {}, "rng_states": {}, "extra": dict(extra or {})}
    return _write(path, tensors, meta)


def _write(path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    text = json.dumps(_jsonable(meta))
    metadata = {"format": FORMAT, "version": str(VERSION), "cnnkit": text}
    return write_safetensors(path, tensors, metadata, digest_key="sha256", digest_text=_digest_text(VERSION, text))


def _digest_text(version: int, text: str) -> str:
    return f"{FORMAT}\0{version}\0{text}"


def _version(metadata: dict[str, str], path: Path) -> int:
    """The format version of a checkpoint's metadata, once its fields are exactly that version's.

    Only the exact texts cnnkit wrote ("1", "2") are versions: no default for a missing field,
    no "02" or other digits that ``int`` would also read.
    """
    text = metadata.get("version")
    if text is None:
        raise CheckpointError(f"{path}: corrupt checkpoint (no 'version' metadata)")
    versions = {str(v): v for v in _FIELDS}
    if text not in versions:
        if text.isascii() and text.isdigit() and int(text) > VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {int(text)} is newer than this cnnkit reads ({VERSION}); "
                "upgrade cnnkit"
            )
        raise CheckpointError(f"{path}: corrupt checkpoint (format version {text!r})")
    version = versions[text]
    expected = _FIELDS[version]
    missing = [k for k in expected if k not in metadata]
    if missing:
        raise CheckpointError(f"{path}: corrupt checkpoint (no {' or '.join(map(repr, missing))} metadata)")
    unexpected = sorted(k for k in metadata if k not in expected)
    if unexpected:
        raise CheckpointError(f"{path}: corrupt checkpoint (metadata {', '.join(map(repr, unexpected))} that "
                              f"format version {version} files do not have)")
    return version


def save_checkpoint(path: str | os.PathLike, model, **kwargs) -> Path:
    """Deprecated: ``save(model, path, ...)`` (``torch.save``'s order)."""
    warnings.warn("save_checkpoint(path, model) is deprecated: use cnnkit.save(model, path) "
                  "(cnnkit.io.save), as torch.save", DeprecationWarning, stacklevel=2)
    return save(model, path, **kwargs)


def load_checkpoint(path: str | os.PathLike, *, allow_nonfinite: bool = False) -> Checkpoint:
    """Read a checkpoint file, checking that it is complete, intact and cnnkit's.

    Args:
        allow_nonfinite: accept weights holding NaN or Inf (to look at a diverged run);
            by default they are refused, naming the tensor.

    Raises:
        CheckpointError: the file is missing, not a regular file, truncated, corrupt (its
            contents do not match their SHA-256), not a cnnkit checkpoint, or holds
            non-finite weights.
    """
    path = Path(path)
    st = read_safetensors(path, "checkpoint file")
    metadata = st.metadata
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: a safetensors file, but not a cnnkit checkpoint (no '{FORMAT}' metadata)"
        )
    version = _version(metadata, path)
    if version >= 2:
        view = memoryview(st.data)
        items = [(e.name, e.dtype, e.shape, view[e.begin:e.end]) for e in st.entries]
        if content_digest(items, _digest_text(version, metadata["cnnkit"])) != metadata["sha256"]:
            raise CheckpointError(
                f"{path}: corrupt checkpoint: its contents do not match the SHA-256 stored in it (a changed "
                "bit, dtype or shape); use another copy (e.g. best.safetensors or the previous run)"
            )
    meta = parse_json(metadata["cnnkit"], str(path), "its cnnkit metadata")
    _check_meta(meta, path)
    arrays = st.tensors
    if not allow_nonfinite:
        _check_finite(arrays, path)
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optimizer_arrays = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
    for key in optimizer_arrays:
        index, _, slot = key.partition("/")
        if not index.isdigit() or not slot:
            raise CheckpointError(f"{path}: corrupt checkpoint (optimizer tensor {key!r})")
    return Checkpoint(model_state, meta, optimizer_arrays, path)


# The metadata fields readers use, and the JSON type each must have.
_META_TYPES = {"model": dict, "history": dict, "rng_states": dict, "extra": dict, "metrics": dict,
               "optimizer": dict, "scheduler": dict}


def _check_meta(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint (its cnnkit metadata is not an object)")
    for key, kind in _META_TYPES.items():
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise CheckpointError(f"{path}: corrupt checkpoint (metadata field {key!r} is a "
                                  f"{type(meta[key]).__name__}, expected an object)")
    model = meta.get("model") or {}
    if model.get("name") is not None and not isinstance(model["name"], str):
        raise CheckpointError(f"{path}: corrupt checkpoint (model name {model['name']!r})")
    if model.get("config") is not None and not isinstance(model["config"], dict):
        raise CheckpointError(f"{path}: corrupt checkpoint (model config {model['config']!r})")
    epoch = meta.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool)):
        raise CheckpointError(f"{path}: corrupt checkpoint (epoch {epoch!r})")


def _check_finite(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Refuse NaN or Inf in any floating-point tensor, naming the first one."""
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
            counts = " and ".join(p for p in (f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else "") if p)
            raise CheckpointError(
                f"{path}: tensor {name} holds non-finite values ({counts} of {a.size}); the weights were "
                "saved after training diverged. Use an earlier checkpoint, or "
                "load_checkpoint(path, allow_nonfinite=True) to look at them"
            )


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
