"""``cnnkit evaluate`` and ``cnnkit predict``: a checkpoint on a test split, or on image files."""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import numpy as np

from ..data import DATASETS, DataLoader, get_dataset, prepare_image
from ..data.folder import list_images, scan_folder
from ..data.pipeline import ImageFiles, ImageSpec
from ..errors import DataError, UsageError
from ..io.checkpoint import atomic_write_bytes
from ..io.weights import fetch_weights
from ..models.weights import Preprocessing, find_weights
from ..surgery import fold_for_inference
from ..train import evaluate, format_report, predict
from ..viz.plots import plot_confusion_matrix, save_figure
from .main import positive_int, thread_count
from .targets import checkpoint_inputs, checkpoint_task, dataset_name, file_preprocessing, load_inference

__all__ = ["add_commands", "evaluate_command", "predict_command"]


def add_commands(sub) -> None:
    """Add ``evaluate`` and ``predict`` to the ``cnnkit`` command."""
    e = sub.add_parser("evaluate", help="accuracy, per-class precision/recall/F1 and confusion matrix")
    e.add_argument("checkpoint", help="checkpoint or .onnx file")
    e.add_argument("--dataset", default=None, help="a named dataset's test split (default: the checkpoint's)")
    e.add_argument("--data", default=None, metavar="DIR",
                   help="a folder of images: DIR/test if it has one, else DIR/<class>/ (class names as trained)")
    e.add_argument("--data-dir", default=None, help="folder with a named dataset's files")
    e.add_argument("--batch-size", type=positive_int, default=500)
    e.add_argument("--workers", type=thread_count, default=None, help="threads decoding images")
    e.add_argument("--plot", default=None, metavar="FILE", help="also draw the confusion matrix to FILE (.png/.svg/.pdf)")
    e.set_defaults(handler=evaluate_command)

    p = sub.add_parser("predict", help="classes (or the binary probability) of image files or folders")
    p.add_argument("checkpoint", help="a checkpoint, an .onnx file, or a weights name such as resnet18.IMAGENET1K_V1")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--top-k", type=positive_int, default=3)
    p.add_argument("--csv", default=None, metavar="FILE", help="also write one row per image to FILE")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--no-invert", action="store_true", help="never invert dark-on-light images (MNIST-style models)")
    p.set_defaults(handler=predict_command)


def _checkpoint_or_weights(source: str) -> str:
    """A checkpoint path; a weights name (``resnet18.IMAGENET1K_V1``) becomes its cached checkpoint."""
    if Path(source).exists():
        return source
    entry = find_weights(None, source)
    return str(fetch_weights(entry)) if entry is not None else source


def _workers(args) -> int:
    return args.workers if args.workers is not None else min(4, os.cpu_count() or 1)


def evaluate_command(args) -> int:
    model, extra, model_name = load_inference(args.checkpoint)  # a checkpoint or an .onnx file
    shape, _, _, classes = checkpoint_inputs(extra, model_name)
    task = checkpoint_task(extra, 1 if extra.get("task", {}).get("type") == "binary" else len(classes) or 10)
    stored = extra.get("dataset", "mnist")
    if args.data is not None or (args.dataset is None and str(stored).startswith("folder:")):
        if args.data is None:
            raise UsageError(f"{args.checkpoint} was trained on a folder of images; pass --data DIR")
        spec = file_preprocessing(extra) or _spec_from(extra, shape)
        root = Path(args.data)
        if not root.exists():
            raise DataError(f"--data {root}: no such folder")
        folder = root / "test" if (root / "test").is_dir() else root
        scan = scan_folder(folder, what=str(folder))
        unknown = [c for c in scan.classes if c not in classes]
        if unknown:
            raise DataError(f"{folder}: class folders {unknown} are not classes of {args.checkpoint} ({classes})")
        relabel = np.asarray([classes.index(c) for c in scan.classes], np.int64)
        samples = [(p, int(relabel[t])) for p, t in scan.samples]
        dataset = ImageFiles(samples, spec)
        where = f"{folder} ({len(samples):,} images)"
        if scan.skipped_note():
            print(scan.skipped_note())
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=_workers(args))
    else:
        name = dataset_name(args.dataset or stored)
        if tuple(DATASETS[name].input_shape) != tuple(shape):
            raise UsageError(f"{args.checkpoint} takes {tuple(shape)} images; the {name} test split holds "
                             f"{DATASETS[name].input_shape}: pass --data DIR (a folder of images)")
        # the normalization the model was trained with (fine-tuned from named weights: theirs)
        stored_norm = {k: tuple(extra[k]) for k in ("mean", "std") if k in extra}
        test_set, named = get_dataset(name, False, args.data_dir, **stored_norm)
        where = f"the {name} test split ({len(test_set):,} images)"
        loader = DataLoader(test_set, batch_size=args.batch_size)
        classes = list(named.classes)
    # BatchNorm folded into the convolutions: a pass fewer per layer, kept only when a probe
    # batch gives the same outputs (surgery.fold_for_inference)
    model = fold_for_inference(model, shape)
    result = evaluate(model, loader, task=task, num_classes=max(len(classes), 2))
    print(f"{Path(args.checkpoint).name} on {where}:")
    print(format_report(result, classes))
    if args.plot:
        title = (f"{Path(args.checkpoint).name} on {where}: accuracy {100 * result['accuracy']:.2f}%")
        print(f"wrote {save_figure(plot_confusion_matrix(result['confusion_matrix'], classes, title=title), args.plot)}")
    return 0


def _spec_from(extra: dict, shape) -> ImageSpec:
    """An ``ImageSpec`` from a checkpoint's stored shape and normalization (squashed resize)."""
    C, H, W = shape
    mean = tuple(extra.get("mean", (0.5,) * C))
    std = tuple(extra.get("std", (0.5,) * C))
    return ImageSpec(C, (H, W), mean, std, "squash")


def predict_command(args) -> int:
    model, extra, model_name = load_inference(_checkpoint_or_weights(args.checkpoint))  # also .onnx files
    shape, mean, std, classes = checkpoint_inputs(extra, model_name)
    spec = file_preprocessing(extra)
    pretrained = None
    weights_pre = extra.get("preprocessing")
    if isinstance(weights_pre, dict) and {"resize_size", "crop_size"} <= set(weights_pre):
        # pretrained weights (cnnkit import / named weights): their own resize, crop and normalization
        if not extra.get("classes"):
            raise UsageError(f"{args.checkpoint}: these weights are for feature extraction (no class names)")
        pretrained = Preprocessing.from_dict(extra["preprocessing"])
    paths = list_images(args.images)
    rows, failed = [], []
    task = None
    for start in range(0, len(paths), args.batch_size):
        chunk, inputs = [], []
        for path in paths[start : start + args.batch_size]:
            try:
                if pretrained is not None:
                    inputs.append(pretrained(path))
                elif spec is not None:
                    inputs.append(spec.to_inputs(spec.decode(path)[None])[0])
                else:
                    inputs.append((prepare_image(path, shape, "never" if args.no_invert else "auto") - mean) / std)
            except (ValueError, OSError) as e:
                failed.append(str(e))
                continue
            chunk.append(path)
        if not chunk:
            continue
        logits = predict(model, np.stack(inputs).astype(np.float32))
        task = task or checkpoint_task(extra, logits.shape[1])
        probs = task.probabilities(logits)
        bad = [str(path) for path, p in zip(chunk, probs) if not np.isfinite(p).all()]
        if bad:
            raise DataError(f"the model's outputs are not finite for {', '.join(bad[:3])}"
                            f"{' and more' if len(bad) > 3 else ''}: its weights overflow on these inputs")
        rows += list(zip(chunk, probs))
    if not rows:
        raise DataError(failed[0] + (f" (and {len(failed) - 1} more unreadable files)" if len(failed) > 1 else ""))
    width = max(2, len(rows[0][1]))
    names = classes if len(classes) >= width else [str(i) for i in range(width)]
    if classes and len(classes) < width:
        print(f"note: {args.checkpoint} names {len(classes)} classes but its model has {width} outputs; "
              "showing class numbers instead of names", file=sys.stderr)
    for path, p in rows:
        if task.name == "binary":
            label = names[1] if p[0] > task.threshold else names[0]
            print(f"{path}: {label} (P({names[1]}) = {p[0]:.4f})")
        else:
            order = np.argsort(-p, kind="stable")[: min(args.top_k, len(p))]
            print(f"{path}: " + ", ".join(f"{names[i]} ({100 * p[i]:.1f}%)" for i in order))
    if args.csv and rows:
        _write_csv(args.csv, rows, names, task)
        print(f"wrote {args.csv} ({len(rows)} rows)")
    if not rows:  # nothing to show: the first reason is the error
        raise DataError(failed[0] + (f" (and {len(failed) - 1} more unreadable files)" if len(failed) > 1 else ""))
    if failed:  # the others were predicted; say which were not
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        print(f"skipped {len(failed)} unreadable file(s): {'; '.join(failed[:3])}{more}", file=sys.stderr)
    return 0


def _write_csv(path: str, rows, names, task) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    if task.name == "binary":
        writer.writerow(["path", "predicted", f"probability_{names[1]}"])
        for p, prob in rows:
            writer.writerow([str(p), names[1] if prob[0] > task.threshold else names[0], f"{prob[0]:.6f}"])
    else:
        writer.writerow(["path", "predicted", *[f"probability_{n}" for n in names]])
        for p, prob in rows:
            writer.writerow([str(p), names[int(np.argmax(prob))], *[f"{v:.6f}" for v in prob]])
    atomic_write_bytes(path, out.getvalue().encode())
