"""The images of a training run: which are trained on, which pick the best epoch, which test it.

    data = named_data("mnist", val_split=None)                 # 55,000 / 5,000 / 10,000
    data = folder_data("photos/", model="resnet18", image_size=64, val_split=0.1)
    data.train, data.val, data.test, data.classes, data.spec, data.lines

The test split is never used for a decision: the best checkpoint is chosen on ``val``, and
``test`` is evaluated once at the end. ``lines`` says which images are used for what (the
``cnnkit train`` banner).

Folders: ``DIR`` holding ``train/`` (and optionally ``val/`` and ``test/``), each with one
subfolder per class, or ``DIR`` itself with one subfolder per class. Without ``val/``, a
stratified share of the training images (``val_split``) is held out by
``cnnkit.data.split.stratified_split`` (deterministic, the same files whatever the seed).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import models
from ..data import DATASETS, Subset, get_dataset
from ..data import transforms as T
from ..data.folder import FolderScan, scan_folder
from ..data.pipeline import (
    CachedImages,
    ImageFiles,
    ImageSpec,
    channel_stats,
    decode_all,
    normalization_for_channels,
)
from ..data.split import holdout_last, stratified_split
from ..errors import DataError, UsageError

__all__ = ["TrainingData", "named_data", "folder_data", "folder_layout", "choose_image_size",
           "Augmentation", "MNIST_VALIDATION"]

# MNIST-like named datasets (and CIFAR-10) hold out their last 5,000 training images.
MNIST_VALIDATION = 5000
_SPLIT_NAMES = {"train", "val", "valid", "validation", "test"}


@dataclass
class TrainingData:
    """The datasets of a run and what the banner and checkpoints say about them."""

    train: Any
    val: Any | None
    test: Any | None
    classes: list[str]
    spec: ImageSpec
    source: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation of photos (torchvision's names).

    Attributes:
        crop_scale: lower bound of ``RandomResizedCrop``'s area share (None: no random crop).
        flip: ``RandomHorizontalFlip``.
        color_jitter: ``ColorJitter(brightness=v, contrast=v, saturation=v)`` (0: none).
    """

    crop_scale: float | None = None
    flip: bool = False
    color_jitter: float = 0.0

    def describe(self) -> str:
        parts = []
        if self.crop_scale is not None:
            parts.append(f"RandomResizedCrop(scale=({self.crop_scale:g}, 1))")
        if self.flip:
            parts.append("RandomHorizontalFlip")
        if self.color_jitter:
            parts.append(f"ColorJitter({self.color_jitter:g}, {self.color_jitter:g}, {self.color_jitter:g})")
        return ", ".join(parts) or "none"

    def batch_transform(self) -> T.Transform | None:
        steps: list[Any] = []
        if self.flip:
            steps.append(T.RandomHorizontalFlip())
        if self.color_jitter:
            v = self.color_jitter
            steps.append(T.ColorJitter(v, v, v))
        return T.Compose(steps) if steps else None


# ----------------------------------------------------------------------------- named datasets
def named_data(
    name: str, root: str | None = None, *, val_split: float | None = None, augment: bool = False,
    image_size: int | None = None, channels: int | None = None,
    normalization: tuple[tuple[float, ...], tuple[float, ...], str] | None = None,
) -> TrainingData:
    """A named dataset (``cnnkit.data.DATASETS``) with its validation images held out.

    Validation is the last 5,000 training images (``val_split``: the last share instead;
    0: none); the test split is the dataset's own. ``normalization``: (mean, std, where
    from), e.g. the pretrained weights'; default: the dataset's own.
    """
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    base = DATASETS[name]
    C0 = base.input_shape[0]
    C = channels or C0
    if C not in (1, 3):
        raise UsageError(f"--in-channels must be 1 or 3, got {C}")
    if C0 == 3 and C == 1:
        raise UsageError(f"--in-channels 1: {name} is an RGB dataset; its models take 3 channels")
    size = image_size or base.input_shape[1]
    mean, std = tuple(base.mean), tuple(base.std)
    lines: list[str] = []
    if normalization is not None:
        mean, std, why = normalization
        mean, std, converted = normalization_for_channels(mean, std, C)
        lines.append(f"normalization: mean {_fmt(mean)}, std {_fmt(std)} ({why}{'; ' + converted if converted else ''})")
    elif C != C0:  # grayscale digits on three channels: the same value in each
        mean, std = mean * C, std * C
    spec = ImageSpec(C, (size, size), tuple(mean), tuple(std), "squash")
    # Images are normalized before their channel is repeated, unless each channel has its own statistics.
    per_channel = C != C0 and len(set(zip(mean, std))) > 1
    load_mean, load_std = ((0.0,) * C0, (1.0,) * C0) if per_channel else (mean[:C0], std[:C0])
    train_full, _ = get_dataset(name, True, root, augment, mean=load_mean, std=load_std)
    plain, _ = get_dataset(name, True, root, False, mean=load_mean, std=load_std)
    test, _ = get_dataset(name, False, root, False, mean=load_mean, std=load_std)
    for ds in (train_full, plain, test):
        _adapt(ds, base.input_shape, spec, normalize=per_channel)
    n = len(train_full)
    count = MNIST_VALIDATION if val_split is None else int(round(val_split * n))
    train_idx, val_idx = holdout_last(n, count)
    train = Subset(train_full, train_idx)
    val = Subset(plain, val_idx) if count else None
    what = "the last 5,000 training images" if val_split is None else f"the last {count:,} training images"
    lines += [
        f"train: {len(train_idx):,} images ({name} training images 1-{len(train_idx):,})",
        f"validation: {count:,} images ({what}; they pick the best epoch)" if count
        else "validation: none (--val-split 0): best.safetensors is not written",
        f"test: {len(test):,} images ({name} test split; evaluated once, at the end)",
    ]
    source = {"kind": "named", "name": name, "val": "last", "val_count": count}
    return TrainingData(train, val, test, list(base.classes), spec, source, lines)


def _adapt(dataset, natural: tuple[int, int, int], spec: ImageSpec, normalize: bool = False) -> None:
    """Resize and re-channel a named dataset's batches to ``spec`` (in place); ``normalize``:
    the batches are in [0, 1] and ``spec``'s per-channel normalization follows the repeat."""
    steps: list[Any] = [dataset.transform]
    if spec.size != natural[1:]:
        steps.append(T.Resize(spec.size))
    if spec.channels != natural[0]:  # one channel repeated three times
        steps.append(T.Lambda(lambda x: np.repeat(x, 3, axis=0), lambda xs: np.repeat(xs, 3, axis=1)))
    if normalize:
        steps.append(spec.normalize())
    if len(steps) > 1:
        dataset.transform = T.Compose(steps)


# ----------------------------------------------------------------------------- folders
@dataclass
class FolderLayout:
    """The scans of a data folder: ``train`` always, ``val`` and ``test`` when present."""

    root: Path
    train: FolderScan
    val: FolderScan | None
    test: FolderScan | None
    split_layout: bool


def folder_layout(root: str | os.PathLike, option: str = "--data") -> FolderLayout:
    """Scan ``root``: ``train/`` (+ ``val/``, ``test/``) or one subfolder per class.

    Raises:
        DataError: the folder does not exist, is empty, has one class, a class folder
            without images, or ``val/``/``test/`` classes that differ from ``train/``'s.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{option} {root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{option} {root}: not a folder")
    subdirs = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    if "train" in subdirs and subdirs <= _SPLIT_NAMES:
        train = scan_folder(root / "train", min_classes=2, what=f"{root / 'train'}")
        val_name = next((n for n in ("val", "valid", "validation") if n in subdirs), None)
        val = scan_folder(root / val_name, classes=train.classes, what=str(root / val_name)) if val_name else None
        test = scan_folder(root / "test", classes=train.classes, what=str(root / "test")) if "test" in subdirs else None
        return FolderLayout(root, train, val, test, True)
    if not subdirs:
        scan_folder(root, min_classes=2, what=f"{option} {root}")  # raises with the right message
    return FolderLayout(root, scan_folder(root, min_classes=2, what=f"{option} {root}"), None, None, False)


def choose_image_size(entry: models.ZooEntry, sizes: list[tuple[int, int]], requested: int | None) -> tuple[int, str]:
    """The square input size for a zoo model and the images' (h, w) sizes, with the reason.

    ``requested`` (``--image-size``) wins. Otherwise: a model designed for small images
    (``entry.small``) keeps the images' most common size when it accepts it; other models
    (and small ones that cannot take that size) use their natural size.

    Raises:
        UsageError: the size is one the model does not accept (naming the sizes it does).
    """
    common, _ = Counter(min(h, w) for h, w in sizes).most_common(1)[0]
    if requested is not None:
        size, why = requested, "--image-size"
    elif entry.small and entry.accepts(common):
        size, why = common, "the images' own size"
    else:
        size, why = entry.input_shape[1], f"{entry.name}'s natural size"
    if not entry.accepts(size):
        raise UsageError(
            f"{entry.name} takes images of {entry.size_range()} pixels; {size}x{size} ({why}) is too "
            f"{'small' if size < entry.min_size else 'large'}: pass --image-size {entry.min_size if size < entry.min_size else entry.max_size}"
        )
    return size, why


def _sizes_note(sizes: list[tuple[int, int]], size: int, resize: str) -> str:
    distinct = Counter(sizes)
    if len(distinct) == 1:
        (h, w), = distinct
        if (h, w) == (size, size):
            return f"all images are {h}x{w}: used as they are"
        return f"all images are {h}x{w}: resized to {size}x{size} ({_policy(resize)})"
    hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
    return (f"images of {len(distinct)} sizes ({min(hs)}-{max(hs)} x {min(ws)}-{max(ws)}): each resized to "
            f"{size}x{size} ({_policy(resize)})")


def _policy(resize: str) -> str:
    return "shorter side scaled, centre kept" if resize == "crop" else "squashed to the square"


def folder_data(
    root: str | os.PathLike, *, model: str, image_size: int | None = None, channels: int | None = None,
    val_split: float | None = None, resize: str = "crop", augment: Augmentation = Augmentation(),
    normalization: tuple[tuple[float, ...], tuple[float, ...], str] | None = None,
    cache: str = "auto", workers: int = 0, progress: Callable[[str, int, int], None] | None = None,
    option: str = "--data",
) -> TrainingData:
    """The training, validation and test images of a folder, ready for ``fit``.

    Args:
        root: the data folder (module docstring).
        model: the zoo model (its accepted sizes, natural size, channels).
        image_size: the square input size (default: ``choose_image_size``).
        channels: 1 or 3 (default: 1 when every training image is grayscale, else 3).
        val_split: the share held out when there is no ``val/`` folder (default 0.1).
        resize: the resize policy, ``"crop"`` or ``"squash"`` (``ImageSpec``).
        augment: the training augmentation.
        normalization: (mean, std, where from), e.g. the pretrained weights' (converted to
            the images' channel count: ``normalization_for_channels``); default: the
            training images' own per-channel statistics.
        cache: ``"on"``: decode every image once into memory; ``"off"``: decode files
            each epoch; ``"auto"``: on when the decoded images take at most a quarter of
            this machine's memory (and 4 GiB).
        workers: decoding threads (for the cache and for each epoch's batches).
        progress: ``progress(what, done, total)`` while decoding.
    """
    layout = folder_layout(root, option)
    entry = models.zoo_entry(model)
    scan = layout.train
    notes = [n for n in (s.skipped_note() for s in (layout.train, layout.val, layout.test) if s) if n]
    size, size_why = choose_image_size(entry, scan.sizes, image_size)
    gray = scan.grayscale and (layout.val is None or layout.val.grayscale)
    C = channels or (1 if gray else 3)
    natural = 1 if gray else 3
    colour = (f"{'grayscale' if C == 1 else 'RGB'} ({C} channel{'s' if C > 1 else ''}: "
              + ("every image is grayscale" if natural == 1 else "the images have colour")
              + (f"; converted by --in-channels {C})" if C != natural else ")"))
    if normalization is not None:
        n_mean, n_std, n_why = normalization
        n_mean, n_std, converted = normalization_for_channels(n_mean, n_std, C)
        normalization = (n_mean, n_std, n_why + (f"; {converted}" if converted else ""))
    if val_split is not None and layout.val is not None:
        raise UsageError(f"--val-split {val_split:g}: {layout.root} has its own val/ folder; drop --val-split")
    fraction = 0.1 if val_split is None else val_split
    train_samples, val_samples = scan.samples, layout.val.samples if layout.val else []
    split_note = f"{layout.root / 'val'}" if layout.val else ""
    if layout.val is None:
        keys = [str(p.relative_to(scan.root)) for p, _ in scan.samples]
        train_idx, val_idx = stratified_split(scan.targets, fraction, keys)
        train_samples = [scan.samples[i] for i in train_idx]
        val_samples = [scan.samples[i] for i in val_idx]
        split_note = (f"{fraction:g} of each class held out of {scan.root}, chosen by a hash of the file "
                      "path: the same files whatever the seed")
    test_samples = layout.test.samples if layout.test else []
    provisional = ImageSpec(C, (size, size), (0.0,) * C, (1.0,) * C, resize)
    total = len(train_samples) + len(val_samples) + len(test_samples)
    nbytes = total * size * size * C
    use_cache = cache == "on" or (cache == "auto" and nbytes <= _cache_budget())
    crop = T.RandomResizedCrop(size, scale=(augment.crop_scale, 1.0)) if augment.crop_scale else None
    batch_tf = augment.batch_transform()

    def decode(samples, what):
        if not samples:
            return None, []
        paths = [p for p, _ in samples]
        data, failed = decode_all(paths, provisional, workers,
                                  (lambda done: progress(what, done, len(paths))) if progress else None)
        bad = {p for p, _ in failed}
        return (data, np.asarray([t for p, t in samples if p not in bad], np.int64)), failed

    if use_cache:
        (train_arr, val_arr, test_arr), failures = zip(*(decode(s, w) for s, w in (
            (train_samples, "train"), (val_samples, "validation"), (test_samples, "test"))))
        failed = [f for fs in failures for f in fs]
        if failed:
            names = ", ".join(f"{p.name} ({why})" for p, why in failed[:3])
            notes.append(f"skipped {len(failed)} image(s) that failed to decode: {names}"
                         + (f" and {len(failed) - 3} more" if len(failed) > 3 else ""))
        if train_arr is None or len(train_arr[0]) == 0:
            raise DataError(f"{root}: no training image could be decoded")
        mean, std, norm_why = normalization or (*channel_stats(train_arr[0]), f"of the {len(train_arr[0]):,} training images")
        spec = ImageSpec(C, (size, size), tuple(mean), tuple(std), resize)
        train = CachedImages(*train_arr, spec, crop, batch_tf)
        val = CachedImages(*val_arr, spec) if val_arr else None
        test = CachedImages(*test_arr, spec) if test_arr else None
        counts = (len(train), len(val) if val else 0, len(test) if test else 0)
        how = (f"decoded once into memory ({nbytes / 2**20:,.0f} MiB"
               + ("" if cache == "on" else "; --cache off decodes each epoch") + ")")
    else:
        if normalization is None:
            sample = train_samples[:: max(1, len(train_samples) // 2000)]
            data, _ = decode_all([p for p, _ in sample], provisional, workers,
                                 (lambda done: progress("statistics", done, len(sample))) if progress else None)
            mean, std = channel_stats(data)
            norm_why = f"of {len(data):,} of the training images (every {max(1, len(train_samples) // 2000)})"
        else:
            mean, std, norm_why = normalization
        spec = ImageSpec(C, (size, size), tuple(mean), tuple(std), resize)
        train = ImageFiles(train_samples, spec, crop, batch_tf)
        val = ImageFiles(val_samples, spec) if val_samples else None
        test = ImageFiles(test_samples, spec) if test_samples else None
        counts = (len(train), len(val) if val else 0, len(test) if test else 0)
        why_off = "--cache off" if cache == "off" else f"{nbytes / 2**30:.1f} GiB decoded is more than the cache budget"
        how = f"decoded from the files each epoch ({why_off}), {workers or 'no'} worker thread(s)"
    per_class = np.bincount(train.targets, minlength=len(scan.classes))
    lines = [
        f"classes ({len(scan.classes)}): " + ", ".join(f"{c} ({n})" for c, n in zip(scan.classes, per_class)),
        f"images: {colour}; {size}x{size} ({size_why}); {_sizes_note(scan.sizes, size, resize)}; {how}",
        f"normalization: mean {_fmt(spec.mean)}, std {_fmt(spec.std)} ({norm_why})",
        f"train: {counts[0]:,} images; augmentation: {augment.describe()}",
        (f"validation: {counts[1]:,} images ({split_note}; they pick the best epoch)" if counts[1]
         else "validation: none (--val-split 0): best.safetensors is not written"),
        (f"test: {counts[2]:,} images ({layout.root / 'test'}; evaluated once, at the end)" if counts[2]
         else f"test: none (no test/ folder in {layout.root}): no test figure is reported"),
    ]
    source = {"kind": "folder", "path": str(layout.root), "split_layout": layout.split_layout,
              "val": "folder" if layout.val else "stratified", "val_split": None if layout.val else fraction}
    return TrainingData(train, val, test, list(scan.classes), spec, source, lines, notes)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def _cache_budget() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return min(total // 4, 4 << 30)
