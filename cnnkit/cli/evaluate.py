"""``cnnkit evaluate`` and ``cnnkit predict``: a checkpoint on a test split, or on image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import DataLoader, get_dataset, prepare_image
from ..io.checkpoint import load_checkpoint
from ..train import evaluate, format_report, predict_proba
from ..viz.plots import plot_confusion_matrix, save_figure
from .main import positive_int
from .targets import checkpoint_inputs, dataset_name

__all__ = ["add_commands", "evaluate_command", "predict_command"]


def add_commands(sub) -> None:
    """Add ``evaluate`` and ``predict`` to the ``cnnkit`` command."""
    e = sub.add_parser("evaluate", help="accuracy, per-class precision/recall and confusion matrix")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", default=None, help="default: the dataset the checkpoint was trained on")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--batch-size", type=positive_int, default=500)
    e.add_argument("--plot", default=None, metavar="FILE", help="also draw the confusion matrix to FILE (.png/.svg/.pdf)")
    e.set_defaults(handler=evaluate_command)

    p = sub.add_parser("predict", help="top-k classes of PNG/JPEG images")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=positive_int, default=3)
    p.add_argument("--no-invert", action="store_true", help="never invert dark-on-light images")
    p.set_defaults(handler=predict_command)


def evaluate_command(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model()
    name = dataset_name(args.dataset or ckpt.meta.get("extra", {}).get("dataset", "mnist"))
    test_set, spec = get_dataset(name, False, args.data_dir)
    result = evaluate(model, DataLoader(test_set, batch_size=args.batch_size))
    print(format_report(result, spec.classes))
    if args.plot:
        title = (f"{Path(args.checkpoint).name} on the {name} test split: accuracy "
                 f"{100 * result['accuracy']:.2f}% ({int(result['confusion_matrix'].sum()):,} images)")
        print(f"wrote {save_figure(plot_confusion_matrix(result['confusion_matrix'], spec.classes, title=title), args.plot)}")
    return 0


def predict_command(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model()
    shape, mean, std, classes = checkpoint_inputs(ckpt.meta.get("extra", {}))
    batch = np.stack([(prepare_image(p, shape, "never" if args.no_invert else "auto") - mean) / std
                      for p in args.images])
    probs = predict_proba(model, batch.astype(np.float32))
    k = min(args.top_k, probs.shape[1])
    for path, p in zip(args.images, probs):
        order = np.argsort(-p, kind="stable")[:k]
        ranked = ", ".join(f"{classes[i]} ({100 * p[i]:.1f}%)" for i in order)
        print(f"{path}: {ranked}")
    return 0
