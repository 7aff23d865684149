"""Weights from anywhere, as a state_dict with cnnkit's keys: files, key maps, named weights.

    from cnnkit.io.weights import load_weights, resolve_weights
    report = load_weights(model, "resnet18.pth")              # torch.save file (read safely)
    report = load_weights(model, "model.safetensors")         # timm / Hugging Face / plain
    report = load_weights(model, "IMAGENET1K_V1")             # named weights of model.zoo_name
    report = load_weights(model, "run/best.safetensors", skip=("fc",), strict=False)  # fine-tuning

``read_weights(source, model_name)`` reads a source once (``SourceWeights``: its arrays, kind
and what it says about its inputs); ``resolve_weights`` and ``load_weights`` take a source
or what ``read_weights`` returned.

Sources (``read_weights`` tells them apart by content, not by file name):

- a cnnkit checkpoint (``cnnkit train`` / ``cnnkit import`` output): its ``model/`` tensors;
- a PyTorch file written by ``torch.save`` (read by ``cnnkit.io.pth``, never unpickled),
  holding a state_dict or a common wrapper of one;
- a safetensors state_dict (timm's and Hugging Face's ``model.safetensors``);
- a weights name (``"IMAGENET1K_V1"``, ``"DEFAULT"``, ``"resnet18.IMAGENET1K_V1"``): the
  torchvision weights listed in ``cnnkit.models.weights``, downloaded once into the cache
  and converted to a cnnkit checkpoint (``fetch_weights``).

Key maps (applied when the keys show the convention; each rename is reported):

- torchvision and timm's torchvision-compatible ResNets: identity;
- timm VGG: ``pre_logits.fc1`` (F, 512, 7, 7) and ``pre_logits.fc2`` (F, F, 1, 1) are
  convolutions; reshaped to ``classifier.0`` (F, 25088) and ``classifier.3`` (F, F), and
  ``head.fc`` -> ``classifier.6`` (the reverse of the fully convolutional conversion);
- Hugging Face ``transformers`` ResNet (``resnet.embedder...``, ``resnet.encoder.stages...``,
  ``classifier.1``) -> torchvision's ResNet keys;
- torchvision's DenseNet checkpoints (``denselayer1.norm.1.weight`` -> ``norm1.weight``)
  and GoogLeNet's auxiliary heads (``aux1.*``, ``aux2.*``: dropped when the model has none).

Safetensors files are memory-mapped copy-on-write (no copy until a tensor is written),
and written by streaming, atomically.
"""

from __future__ import annotations

import inspect
import json
import mmap
import os
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import models
from ..data.download import DownloadError, cache_lock, data_root, file_digest
from ..data.download import download as download_file
from ..errors import CheckpointError, PthError, WeightsError
from ..models.weights import Weights, find_weights, list_weights, set_weights_loader
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import load_checkpoint, save_state_dict
from .pth import load_pth, unwrap_state_dict
from .safetensors import write_safetensors as _write_safetensors

__all__ = [
    "WeightsError", "WeightsReport", "SourceWeights", "read_weights", "resolve_weights", "load_weights", "map_keys",
    "read_safetensors", "write_safetensors", "write_checkpoint", "source_kind", "fetch_weights",
    "weights_dir", "weights_url", "WEIGHTS_URL_ENV", "build_for_loading", "init_flag",
]


def _as_array(value: Any) -> np.ndarray:
    """The array behind a Parameter/Tensor (its ``.data``), or the array itself (a buffer)."""
    return value if isinstance(value, np.ndarray) else np.asarray(value.data)


# ------------------------------------------------------------------------ safetensors
_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_ST_NAMES = {np.dtype(v).newbyteorder("<") if np.dtype(v).itemsize > 1 else np.dtype(v): k
             for k, v in _ST_DTYPES.items() if k != "BF16"}
_MAX_HEADER = 100 << 20


def read_safetensors(path: str | os.PathLike, *, mmap_file: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: ``({name: array}, metadata)``, memory-mapped copy-on-write.

    Every offset, shape and dtype in the header is checked against the file's size before
    an array is made; BF16 tensors are widened to float32.

    Raises:
        WeightsError: the file is missing, truncated or not safetensors.
    """
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; the mmap outlives it
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise WeightsError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise WeightsError(f"{path}: not a safetensors file, or truncated (header claims {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise WeightsError(f"{path}: not a safetensors file (its header is not JSON)") from None
        if not isinstance(header, dict):
            raise WeightsError(f"{path}: not a safetensors file (its header is not a JSON object)")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise WeightsError(f"{path}: safetensors metadata is not an object")
        data_size = size - 8 - n
        buffer: Any = None
        if data_size and header:
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if mmap_file else bytearray(path.read_bytes())
        arrays: dict[str, np.ndarray] = {}
        for name, entry in header.items():
            try:
                dtype = _ST_DTYPES[entry["dtype"]]
                shape = tuple(entry["shape"])
                begin, end = entry["data_offsets"]
                ok = all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in (*shape, begin, end))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise WeightsError(f"{path}: tensor {name!r} has a malformed header entry")
            count = int(np.prod(shape, dtype=object)) if shape else 1
            if not begin <= end <= data_size or end - begin != count * dtype.itemsize:
                raise WeightsError(
                    f"{path}: tensor {name!r} ({entry['dtype']} {list(shape)}) needs "
                    f"{count * dtype.itemsize} bytes at [{begin}, {end}) of a {data_size}-byte data section "
                    "(truncated or corrupt)"
                )
            array = np.frombuffer(buffer, dtype=dtype, count=count, offset=8 + n + begin) if count else \
                np.zeros(0, dtype)
            array = array.reshape(shape)
            if entry["dtype"] == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            arrays[name] = array
    return arrays, {str(k): str(v) for k, v in metadata.items()}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> Path:
    """Write arrays to a safetensors file by streaming them, atomically (``cnnkit.io.safetensors``)."""
    try:
        return _write_safetensors(path, {name: _as_array(value) for name, value in tensors.items()},
                                  {str(k): str(v) for k, v in (metadata or {}).items()})
    except TypeError as e:
        raise WeightsError(f"{path}: {e}") from None


def write_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray], *, model_name: str,
                     model_config: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write a model-only cnnkit checkpoint (what ``cnnkit.load`` reads).

    The one checkpoint writer (``cnnkit.io.checkpoint.save_state_dict``): the layout of
    ``cnnkit.checkpoint``, written atomically, with the SHA-256 ``load_checkpoint`` verifies.
    """
    return save_state_dict(path, dict(state_dict), model_name=model_name, model_config=dict(model_config or {}),
                           extra=dict(extra or {}))


# ------------------------------------------------------------------------ key maps
_HF_STEM = "resnet.embedder.embedder."
_HF_LAYER = re.compile(r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(layer\.(\d+)|shortcut)\.(convolution|normalization)\.(.+)$")
_DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _hf_resnet_key(key: str) -> str | None:
    """One Hugging Face ``transformers`` ResNet key -> torchvision's name (None: not a ResNet key)."""
    if key.startswith(_HF_STEM):
        rest = key[len(_HF_STEM):]
        part, _, leaf = rest.partition(".")
        return {"convolution": "conv1", "normalization": "bn1"}.get(part, part) + "." + leaf
    m = _HF_LAYER.match(key)
    if m:
        stage, block, _, index, kind, leaf = m.groups()
        base = f"layer{int(stage) + 1}.{block}."
        if index is None:  # the shortcut: torchvision's downsample = Sequential(conv, bn)
            return base + ("downsample.0." if kind == "convolution" else "downsample.1.") + leaf
        n = int(index) + 1
        return base + (f"conv{n}." if kind == "convolution" else f"bn{n}.") + leaf
    if key.startswith("classifier.1."):
        return "fc." + key[len("classifier.1."):]
    return None


def map_keys(state: Mapping[str, np.ndarray], target_keys: Iterable[str] = ()) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """Rename (and reshape) a foreign state_dict to torchvision's keys, which cnnkit's zoo uses.

    Args:
        state: the source state_dict.
        target_keys: the model's keys; used to drop GoogLeNet's auxiliary heads only when
            the model has none.

    Returns:
        ``(mapped, convention, dropped)``: the renamed arrays, the convention recognised
        (``"torchvision"``, ``"timm-vgg"``, ``"huggingface-resnet"``, ``"torchvision-densenet"``)
        and the keys dropped on purpose.
    """
    targets = set(target_keys)
    mapped: dict[str, np.ndarray] = {}
    dropped: list[str] = []
    keys = list(state)
    if any(k.startswith(("resnet.embedder.", "resnet.encoder.")) for k in keys):
        convention = "huggingface-resnet"
        for k, v in state.items():
            new = _hf_resnet_key(k)
            mapped[new if new is not None else k] = v
        return mapped, convention, dropped
    if "pre_logits.fc1.weight" in state:
        convention = "timm-vgg"
        rename = {"pre_logits.fc1.": "classifier.0.", "pre_logits.fc2.": "classifier.3.", "head.fc.": "classifier.6."}
        for k, v in state.items():
            prefix = next((p for p in rename if k.startswith(p)), None)
            if prefix is None:
                mapped[k] = v
                continue
            new = rename[prefix] + k[len(prefix):]
            if new.endswith(".weight") and v.ndim == 4:  # (F, C, KH, KW) -> (F, C*KH*KW): a conv as a Linear
                v = v.reshape(v.shape[0], -1)
            mapped[new] = v
        return mapped, convention, dropped
    convention = "torchvision"
    for k, v in state.items():
        m = _DENSENET_LEGACY.match(k)
        if m:
            convention = "torchvision-densenet"
            k = m.group(1) + m.group(2)
        if k.startswith(("aux1.", "aux2.")) and targets and k not in targets:
            dropped.append(k)
            continue
        mapped[k] = v
    return mapped, convention, dropped


# ------------------------------------------------------------------------ sources
def source_kind(path: str | os.PathLike) -> str:
    """What a weights file is, from its first bytes: ``"pth"``, ``"safetensors"`` or ``"unknown"``."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80" or head[:2] == b"\x1f\x8b":
        return "pth"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and n < (1 << 40):
            return "safetensors"
    return "unknown"


# adapt(key, source array, model shape) -> the array made to fit, or None (see resolve_weights)
Adapter = Callable[[str, np.ndarray, tuple], "np.ndarray | None"]


@dataclass
class WeightsReport:
    """What ``resolve_weights`` found and how it fits the model.

    Attributes:
        state_dict: the arrays to load, with the model's keys (only keys that fit).
        source: the file or weights name as given; ``kind``: ``"cnnkit checkpoint"``,
            ``"pth"``, ``"safetensors"`` or ``"named weights"``.
        convention: the key convention recognised (see ``map_keys``).
        missing: model keys the source lacks; unexpected: source keys the model lacks;
        mismatched: ``(key, source shape, model shape)``; skipped: keys left out on request;
        dropped: keys the key map removed on purpose (GoogLeNet's auxiliary heads).
        adapted: ``(key, source shape, model shape)`` of arrays ``adapt`` reshaped to fit.
        meta: the checkpoint's ``extra`` (classes, preprocessing) for cnnkit checkpoints and
            named weights, else {}.
    """

    state_dict: dict[str, np.ndarray]
    source: str
    kind: str
    convention: str = "torchvision"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    adapted: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, limit: int = 40) -> str:
        """The misfits, one line each (empty when everything fits); at most ``limit`` keys a list."""

        def listed(keys: list[str]) -> str:
            more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        lines = []
        if self.missing:
            lines.append(f"missing from the weights ({len(self.missing)}): {listed(self.missing)}")
        if self.unexpected:
            lines.append(f"not in the model ({len(self.unexpected)}): {listed(self.unexpected)}")
        for key, got, want in self.mismatched[:limit]:
            lines.append(f"shape mismatch for {key}: weights have {list(got)}, model has {list(want)}")
        if len(self.mismatched) > limit:
            lines.append(f"... and {len(self.mismatched) - limit} more shape mismatches")
        return "\n".join(lines)


@dataclass
class SourceWeights:
    """A weights source as read, before its keys are mapped to a model's.

    Attributes:
        source: the file or weights name as given.
        state_dict: the source's arrays with its own keys (memory-mapped where possible).
        kind: ``"cnnkit checkpoint"``, ``"pth"``, ``"safetensors"`` or ``"named weights"``.
        meta: what the source says about its inputs: a cnnkit checkpoint's ``extra`` (and
            ``model``); for named weights, their checkpoint's (``weights``: the full name,
            ``classes``, ``preprocessing``, ``mean``, ``std``); {} for plain state_dicts.
    """

    source: str
    state_dict: dict[str, np.ndarray]
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_name(self) -> str | None:
        """``"resnet18.IMAGENET1K_V1"`` for named weights (or a checkpoint of them), else None."""
        name = self.meta.get("weights")
        return name if isinstance(name, str) else None


def read_weights(source: str | os.PathLike, model_name: str | None = None) -> SourceWeights:
    """Read any supported weights source once (a weights name is fetched into the cache first).

    Args:
        source: a cnnkit checkpoint, a torch.save file, a safetensors state_dict, or a
            weights name of ``model_name`` (``"DEFAULT"``, ``"IMAGENET1K_V1"``,
            ``"resnet18.IMAGENET1K_V1"``).
        model_name: the zoo model weights names are looked up under.

    Raises:
        WeightsError / PthError: not a readable weights file, nor a weights name.
        DownloadError: named weights not cached that cannot be downloaded.
    """
    source = str(source)
    path = Path(source)
    if not path.is_file():
        entry = find_weights(model_name, source)
        if entry is None:
            if path.exists():
                raise WeightsError(f"{source}: not a file")
            hint = ""
            if model_name:
                names = [n.partition(".")[2] for n in list_weights(model_name)]
                hint = (f" or a weights name of {model_name} (its weights: {', '.join(names + ['DEFAULT'])})" if names
                        else f" or a weights name of {model_name} (it has no named weights)")
            raise WeightsError(f"{source}: no such file{hint}")
        checkpoint = read_weights(fetch_weights(entry), model_name)
        return SourceWeights(source, checkpoint.state_dict, "named weights", checkpoint.meta)
    try:
        kind = source_kind(path)
    except OSError as e:
        raise WeightsError(f"{source}: cannot read ({e.strerror})") from None
    if kind == "pth":
        return SourceWeights(source, load_pth(path), "pth")
    if kind == "safetensors":
        arrays, metadata = read_safetensors(path)
        if metadata.get("format") == CHECKPOINT_FORMAT:
            # a cnnkit checkpoint is read by its own reader: digest verified, finite weights
            try:
                ckpt = load_checkpoint(path)
            except CheckpointError as e:
                raise WeightsError(str(e)) from None
            return SourceWeights(source, ckpt.model_state, "cnnkit checkpoint",
                                 dict(ckpt.extra or {}) | {"model": ckpt.meta.get("model", {})})
        try:
            return SourceWeights(source, unwrap_state_dict(arrays, str(path)), "safetensors")
        except PthError as e:
            raise WeightsError(str(e)) from None
    raise WeightsError(
        f"{source}: not a weights file cnnkit reads (expected a torch.save .pth/.pt zip archive, a "
        "safetensors file or a cnnkit checkpoint)"
    )


def _model_shapes(model) -> tuple[dict[str, tuple], set[str]]:
    shapes: dict[str, tuple] = {}
    optional: set[str] = set()
    for prefix, module in model.named_modules(remove_duplicate=False):
        dotted = f"{prefix}." if prefix else ""
        for name, value in module._own_state():
            shapes[dotted + name] = tuple(_as_array(value).shape)
        optional.update(dotted + name for name in module._optional_state_keys())
    return shapes, optional


def _skipped(key: str, skip: Iterable[str] | Callable[[str], bool]) -> bool:
    if callable(skip):
        return bool(skip(key))
    return any(key == s or key.startswith(s.rstrip(".") + ".") for s in skip)


def resolve_weights(source: str | os.PathLike | SourceWeights, model, *, model_name: str | None = None,
                    skip: Iterable[str] | Callable[[str], bool] = (), adapt: Adapter | None = None) -> WeightsReport:
    """Turn any supported weights source into a state_dict with ``model``'s keys, and check it.

    Args:
        source: a cnnkit checkpoint, a torch.save file, a safetensors state_dict (timm,
            Hugging Face) or a weights name of the model (``"IMAGENET1K_V1"``, ``"DEFAULT"``),
            or a source already read by ``read_weights``.
        model: the cnnkit model the weights are for.
        model_name: its zoo name, which weights names are looked up under (default: the
            model's ``zoo_name`` attribute when it has one).
        skip: module names whose weights are left out (``("fc",)`` drops ``fc.weight`` and
            ``fc.bias``: a new head), or a predicate on keys.
        adapt: ``adapt(key, array, model_shape)`` is asked for each array whose shape differs
            from the model's: it returns the array reshaped to fit (recorded in
            ``report.adapted``), or None (the key stays a mismatch). Transfer learning uses it
            for a first convolution of another channel count.

    Returns:
        A ``WeightsReport``: the arrays that fit, and the precise list of those that do not.

    Raises:
        WeightsError / PthError: the source cannot be read (message names it and why).
    """
    model_name = model_name or getattr(model, "zoo_name", None)
    read = source if isinstance(source, SourceWeights) else read_weights(source, model_name)
    shapes, optional = _model_shapes(model)
    mapped, convention, dropped = map_keys(read.state_dict, shapes)
    report = WeightsReport({}, read.source, read.kind, convention, dropped=dropped, meta=read.meta)
    for key, value in mapped.items():
        if _skipped(key, skip):
            report.skipped.append(key)
        elif key not in shapes:
            report.unexpected.append(key)
        elif tuple(value.shape) != shapes[key]:
            fitted = adapt(key, value, shapes[key]) if adapt is not None else None
            if fitted is not None and tuple(fitted.shape) == shapes[key]:
                report.adapted.append((key, tuple(value.shape), shapes[key]))
                report.state_dict[key] = fitted
            else:
                report.mismatched.append((key, tuple(value.shape), shapes[key]))
        else:
            report.state_dict[key] = value
    report.missing = [k for k in shapes if k not in mapped and k not in optional and not _skipped(k, skip)]
    return report


def load_weights(model, source: str | os.PathLike | SourceWeights, *, model_name: str | None = None,
                 strict: bool = True, skip: Iterable[str] | Callable[[str], bool] = (),
                 adapt: Adapter | None = None) -> WeightsReport:
    """Load weights from any supported source into ``model`` (see ``resolve_weights``).

    Args:
        model_name: the model's zoo name, for weights names (see ``resolve_weights``).
        strict: refuse unless every key fits (missing, unexpected and mismatched keys are
            all errors). With False, the keys that fit are loaded and the rest reported.
        skip: module names (or a key predicate) to leave out, e.g. a new classifier head.
        adapt: reshapes arrays that do not fit as they are (see ``resolve_weights``).

    Returns:
        The ``WeightsReport`` (its lists say what was not loaded).

    Raises:
        WeightsError: strict and something does not fit; the message lists every key.
    """
    report = resolve_weights(source, model, model_name=model_name, skip=skip, adapt=adapt)
    name = model_name or getattr(model, "zoo_name", None)
    if strict and not report.complete:
        raise WeightsError(
            f"{report.source}: the weights do not fit {type(model).__name__}{f' ({name})' if name else ''} "
            f"[{report.kind}, {report.convention} keys]:\n{report.problems()}"
        )
    _copy_into(model, report.state_dict)
    return report


_CHUNK = 8 << 20  # bytes copied between page releases


def _copy_into(model, state: Mapping[str, np.ndarray]) -> None:
    """Copy arrays into the model's parameters and buffers (cast to their dtype), in place.

    Shapes were checked by ``resolve_weights``. Arrays that are views of a memory-mapped
    file are copied in chunks and each chunk's pages are released after it is copied, so
    loading costs the model's size plus one chunk, not twice the model (VGG-16: 528 MB).
    """
    targets = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        dotted = f"{prefix}." if prefix else ""
        for name, value in module._own_state():
            targets[dotted + name] = value
    for key, source in state.items():
        dest = _as_array(targets[key])
        mapping = _mapped_file(source)
        if mapping is None or not (dest.flags.c_contiguous and source.flags.c_contiguous) or source.size == 0:
            dest[...] = source
            continue
        flat_dest, flat_src = dest.reshape(-1), source.reshape(-1)
        step = max(1, _CHUNK // source.itemsize)
        for start in range(0, flat_src.size, step):
            flat_dest[start:start + step] = flat_src[start:start + step]
            _release(mapping, flat_src[start:start + step])


def _mapped_file(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap):
        return base.obj
    return None


def _release(mapping: mmap.mmap, chunk: np.ndarray) -> None:
    """Drop the (never written, copy-on-write) file pages under ``chunk``; a later read refaults them."""
    if not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    origin = np.frombuffer(mapping, np.uint8, count=1).__array_interface__["data"][0]
    start = chunk.__array_interface__["data"][0] - origin
    end = start + chunk.nbytes
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page  # whole pages inside the chunk only
    if last > first:
        mapping.madvise(mmap.MADV_DONTNEED, first, last - first)


# ------------------------------------------------------------------------ named weights
WEIGHTS_URL_ENV = "CNNKIT_WEIGHTS_URL"


def weights_dir(root: str | os.PathLike | None = None) -> Path:
    """Where named weights are cached: ``<data root>/weights`` (``$CNNKIT_DATA`` or ``~/.cache/cnnkit``)."""
    return data_root(root) / "weights"


def _torch_hub_dir() -> Path:
    """torch.hub's checkpoint folder, where torchvision keeps the same files (looked in, never written)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


def weights_url(entry, mirror: str | None = None) -> str:
    """The address ``entry`` is downloaded from: ``mirror`` (or ``$CNNKIT_WEIGHTS_URL``) + its file
    name when set, else torchvision's address."""
    base = mirror if mirror is not None else os.environ.get(WEIGHTS_URL_ENV)
    return base.rstrip("/") + "/" + entry.filename if base else entry.url


def fetch_weights(entry, *, root: str | os.PathLike | None = None, mirror: str | None = None,
                  download: bool = True, progress: bool = True) -> Path:
    """Return the cnnkit checkpoint of named weights, downloading and converting them once.

    Looks for the converted checkpoint ``<weights_dir>/<model>-<NAME>.safetensors``; else
    for torchvision's file (``resnet18-f37072fd.pth``) in ``weights_dir`` and in torch.hub's
    checkpoint folder, accepting a copy whose SHA-256 starts with the published prefix;
    else downloads it (``cnnkit.data.download``: atomic, size and checksum checked) from
    ``weights_url(entry, mirror)``. The file is read safely (``cnnkit.io.pth``), mapped to
    the zoo's keys, checked against the model, written as a cnnkit checkpoint carrying
    the class names, preprocessing and published accuracy, and the download is removed.

    Args:
        entry: a ``cnnkit.models.weights.Weights``.
        root: the data root (default ``$CNNKIT_DATA`` or ``~/.cache/cnnkit``).
        mirror: a base address to download from instead of torchvision's (same file names);
            default ``$CNNKIT_WEIGHTS_URL``.
        download: False never downloads (offline): a missing file is an error.

    Raises:
        DownloadError: the file is not cached and cannot be downloaded (or fails its
            checksum); the message says where it was looked for, its address and where
            to put a copy downloaded by hand.
        WeightsError / PthError: the file does not hold the expected weights.
    """
    folder = weights_dir(root)
    converted = folder / f"{entry.model}-{entry.name}.safetensors"
    if converted.is_file():
        return converted
    # One process fetches and converts at a time (the ranks of `cnnkit train --nproc`, two runs
    # started together): the others wait, then find the converted file. Without it they
    # downloaded into the same ``.part`` file and one failed renaming it.
    with cache_lock(folder / f".{entry.model}-{entry.name}.lock", f"fetch the {entry.full_name} weights into {folder}"):
        if converted.is_file():
            return converted
        return _fetch_and_convert(entry, folder, converted, mirror, download, progress)


def _fetch_and_convert(entry, folder: Path, converted: Path, mirror: str | None, download: bool,
                       progress: bool) -> Path:
    candidates = [folder / entry.filename, _torch_hub_dir() / entry.filename]
    source = next((c for c in candidates if c.is_file() and file_digest(c, "sha256").startswith(entry.sha256)), None)
    url = weights_url(entry, mirror)
    if source is None:
        where = (f"Looked for {entry.filename} in {candidates[0].parent} and {candidates[1].parent}. To use a "
                 f"copy downloaded by hand, put {entry.filename} (SHA-256 starting {entry.sha256}) in "
                 f"{candidates[0].parent}, or set {WEIGHTS_URL_ENV} to a mirror holding it.")
        if not download:
            raise DownloadError(f"{entry.full_name} weights are not cached and downloading is off ({url}). {where}")
        try:
            source = download_file(url, candidates[0], sha256=entry.sha256, progress=progress)
        except DownloadError as e:
            raise DownloadError(f"{entry.full_name} weights: {e}. {where}") from None
    digest = file_digest(source, "sha256")
    state = load_pth(source)
    _convert(entry, state, converted, source_sha256=digest, url=url)
    if source.parent == folder:
        source.unlink(missing_ok=True)  # the converted checkpoint replaces it
    return converted


def init_flag(model_name: str) -> str | None:
    """The zoo constructor's switch for its random init (``"init_weights"``), if it has one."""
    builder = models.model_info(model_name).builder
    cls = getattr(models, str(builder.__annotations__.get("return", "")), None)
    params = set(inspect.signature(builder).parameters)
    if isinstance(cls, type):
        params |= set(inspect.signature(cls.__init__).parameters)
    return "init_weights" if "init_weights" in params else None


def build_for_loading(model_name: str, **kwargs):
    """Build a zoo model whose weights are about to be overwritten: its random init is skipped
    where the constructor allows it (VGG: 5 s and 0.5 GB of temporaries saved)."""
    flag = init_flag(model_name)
    if flag is not None:
        kwargs.setdefault(flag, False)
    return models.get_model(model_name, **kwargs)


def _convert(entry: Weights, state: Mapping[str, np.ndarray], dest: Path, *, source_sha256: str, url: str) -> None:
    config = {"num_classes": entry.num_classes, **entry.model_config}
    model = build_for_loading(entry.model, **config)
    shapes, optional = _model_shapes(model)
    del model
    mapped, convention, dropped = map_keys(state, shapes)
    report = WeightsReport({}, entry.full_name, "named weights", convention, dropped=dropped)
    for key, value in mapped.items():
        if key not in shapes:
            report.unexpected.append(key)
        elif tuple(value.shape) != shapes[key]:
            report.mismatched.append((key, tuple(value.shape), shapes[key]))
    report.missing = [k for k in shapes if k not in mapped and k not in optional]
    if not report.complete:
        raise WeightsError(f"{url}: the file does not hold {entry.full_name}'s weights:\n{report.problems()}")
    p = entry.preprocessing
    extra = {
        "weights": entry.full_name, "source": url, "source_sha256": source_sha256,
        "input_shape": [3, p.crop_size, p.crop_size], "mean": list(p.mean), "std": list(p.std),
        "preprocessing": p.to_dict(), "classes": list(entry.categories) if entry.categories else None,
        "metrics": {"ImageNet-1K": entry.metrics}, "dropped_keys": dropped,
    }
    write_checkpoint(dest, {k: mapped[k] for k in shapes if k in mapped}, model_name=entry.model,
                     model_config=config, extra=extra)


set_weights_loader(load_weights)  # models.resnet18(weights=...) loads through here (see models/weights.py)
