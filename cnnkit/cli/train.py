"""What the ``cnnkit`` commands do: training recipes, evaluation reports, image prediction.

Each ``*_command(args)`` takes the parsed arguments of one sub-command and returns an
exit status; everything else here is a plain library function usable from Python.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import config, optim
from .callbacks import CSVLogger, ModelCheckpoint, NaNGuard, TensorBoard
from .checkpoint import capture_rng, load, load_checkpoint, restore_rng
from .errors import ShapeError
from .tensor import Tensor
from .train import History, TrainingRun, evaluate, fit

__all__ = ["add_commands", "default_input_shape", "DATASETS", "Recipe", "recipe_for", "train_command", "evaluate_command", "predict_command",
           "summary_command", "models_command", "prepare_image", "UsageError"]


def add_commands(sub) -> None:
    """Add train, evaluate, predict, summary and models to the ``cnnkit`` command."""
    from .cli import positive_float, positive_int

    t = sub.add_parser("train", help="train a zoo model on a dataset")
    t.add_argument("model", help="zoo model name (see `cnnkit models`)")
    t.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist, kmnist or cifar10 (default mnist)")
    t.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the recipe's)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: the recipe's)")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None)
    t.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run folder (default runs/MODEL-DATASET)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--augment", action="store_true", help="random shifts/rotations (crops/flips for cifar10)")
    t.add_argument("--data-dir", default=None, help="folder with the dataset files (offline use; else CNNKIT_DATA)")
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to RUN/tensorboard")
    t.add_argument("--limit", type=positive_int, default=None, help="train on the first N training images only")
    t.set_defaults(handler=train_command)

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

    s = sub.add_parser("summary", help="layer table: output shapes, parameters, MACs")
    s.add_argument("target", help="zoo model name or checkpoint file")
    s.add_argument("--input-shape", default=None, help="C,H,W (default: the model's)")
    s.add_argument("--arithmetic", action="store_true", help="show (W - F + 2P)/S + 1 and receptive fields")
    s.set_defaults(handler=summary_command)

    m = sub.add_parser("models", help="list the model zoo with parameter counts")
    m.set_defaults(handler=models_command)


class UsageError(ValueError):
    """The command's arguments do not make sense together."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to load and normalize one dataset (class names come from the dataset class)."""

    cls: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        from . import data

        return tuple(getattr(data, self.cls).classes)


DATASETS = {
    "mnist": DatasetSpec("MNIST", (1, 28, 28), (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetSpec("FashionMNIST", (1, 28, 28), (0.2860,), (0.3530,)),
    "kmnist": DatasetSpec("KMNIST", (1, 28, 28), (0.1918,), (0.3483,)),
    "cifar10": DatasetSpec("CIFAR10", (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclass
class Recipe:
    """A training recipe: the defaults of ``cnnkit train``."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9


def recipe_for(model_name: str, dataset: str) -> Recipe:
    """The default recipe; LeNet-5 on MNIST reaches >= 99.0% test accuracy with it."""
    if model_name.startswith("lenet"):
        return Recipe(epochs=10, batch_size=64, optimizer="sgd", lr=0.05, weight_decay=5e-4)
    return Recipe(epochs=30, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4)


def _dataset(name: str, train: bool, data_dir: str | None, augment: bool = False):
    from . import data
    from .data import transforms as T

    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[name]
    steps: list[Any] = [T.ToTensor()]
    if augment and train:
        if spec.input_shape[0] == 3:
            steps += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        else:
            steps += [T.RandomAffine(degrees=10, translate=(0.1, 0.1))]
    steps.append(T.Normalize(spec.mean, spec.std))
    cls = getattr(data, spec.cls)
    return cls(root=data_dir, train=train, transform=T.Compose(steps)), spec


def _optimizer(name: str, params, recipe: Recipe, lr: float):
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr)
    return optim.AdamW(params, lr=lr, weight_decay=0.01)


def _default_lr(name: str, recipe: Recipe) -> float:
    return recipe.lr if name == "sgd" else 1e-3


def default_input_shape(model_name: str) -> tuple[int, int, int]:
    """The (C, H, W) a zoo model was designed for."""
    if model_name.startswith("lenet"):
        return (1, 28, 28)
    if model_name in ("resnet20", "vgg11_cifar"):
        return (3, 32, 32)
    return (3, 224, 224)


def train_command(args) -> int:
    from . import models
    from .data import DataLoader

    if args.model not in models.list_models():
        raise UsageError(f"unknown model {args.model!r}; `cnnkit models` lists the zoo")
    recipe = recipe_for(args.model, args.dataset)
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    opt_name = args.optimizer or recipe.optimizer
    lr = args.lr or _default_lr(opt_name, recipe)
    out = Path(args.out or f"runs/{args.model}-{args.dataset}")
    last = out / "last.safetensors"
    if args.resume and not last.exists():
        raise UsageError(f"--resume: no checkpoint to resume at {last}")

    config.manual_seed(args.seed)
    train_set, spec = _dataset(args.dataset, True, args.data_dir, args.augment)
    test_set, _ = _dataset(args.dataset, False, args.data_dir)
    if args.limit:
        from .data.dataset import Subset

        train_set = Subset(train_set, np.arange(min(args.limit, len(train_set))))
    model_config = {"num_classes": len(spec.classes)}
    model = models.get_model(args.model, **model_config)
    _check_input(model, args.model, spec)
    loader_rng = np.random.default_rng(args.seed + 1)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=loader_rng)
    test_loader = DataLoader(test_set, batch_size=1000)
    opt = _optimizer(opt_name, model.parameters(), recipe, lr)
    scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=len(train_loader))
    generators = {"loader": loader_rng, "default": config.default_generator()}
    run = TrainingRun(model, opt, scheduler)
    initial_epoch = 0
    if args.resume:
        ckpt = load_checkpoint(last)
        if ckpt.model_name != args.model:
            raise UsageError(f"--resume: {last} holds model {ckpt.model_name!r}, not {args.model!r}")
        model.load_state_dict(ckpt.model_state)
        opt.load_state_dict(ckpt.optimizer_state())
        scheduler.load_state_dict(ckpt.meta["scheduler"]["state"])
        restore_rng(ckpt.meta.get("rng_states", {}), generators)
        run.history = History.from_dict(ckpt.meta.get("history", {}))
        initial_epoch = int(ckpt.meta["epoch"]) + 1
        print(f"resuming {last} after epoch {initial_epoch}")
    extra = {
        "dataset": args.dataset, "input_shape": list(spec.input_shape), "mean": list(spec.mean),
        "std": list(spec.std), "classes": list(spec.classes),
        "recipe": {"epochs": epochs, "batch_size": batch_size, "optimizer": opt_name, "lr": lr, "seed": args.seed},
    }
    common = dict(model_name=args.model, model_config=model_config, extra=extra,
                  rng_states=lambda: capture_rng(generators))
    callbacks = [
        ModelCheckpoint(last, **common),
        ModelCheckpoint(out / "best.safetensors", monitor="val_accuracy", save_best_only=True,
                        save_on_interrupt=False, **common),
        CSVLogger(out / "log.csv", append=args.resume),
        NaNGuard(),
    ]
    if args.tensorboard:
        callbacks.append(TensorBoard(out / "tensorboard"))
    print(f"training {args.model} on {args.dataset}: {epochs} epochs, batch {batch_size}, {opt_name} "
          f"lr {lr:g} (one-cycle), seed {args.seed}; validation = the {len(test_set)}-image test split; "
          f"run folder {out}", flush=True)
    start = time.perf_counter()
    try:
        fit(model, train_loader, epochs=epochs, optimizer=opt, scheduler=scheduler, val_loader=test_loader,
            callbacks=callbacks, initial_epoch=initial_epoch, run=run, monitor="val_loss")
    except KeyboardInterrupt:
        print(f"\ninterrupted: weights saved to {out / 'interrupted.safetensors'}; "
              f"`cnnkit train {args.model} --out {out} --resume` continues from {last}", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - start
    final = evaluate(model, test_loader, confusion=False)
    print(f"test accuracy: {100 * final['accuracy']:.2f}% (loss {final['loss']:.4f}) after "
          f"{epochs} epochs in {elapsed:.0f}s")
    print(f"checkpoint: {last} (best: {out / 'best.safetensors'})")
    return 0


def _check_input(model, name: str, spec: DatasetSpec) -> None:
    """Fail early, in one line, when the model cannot take the dataset's images."""
    from .config import no_grad

    try:
        with no_grad():
            model.eval()
            model(Tensor(np.zeros((1,) + spec.input_shape, np.float32)))
            model.train()
    except ShapeError as e:
        raise UsageError(f"model {name!r} cannot take {spec.input_shape} images: {e}") from None


def _checkpoint_extra(path) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    return ckpt.meta.get("extra", {})


def evaluate_command(args) -> int:
    from .data import DataLoader

    extra = _checkpoint_extra(args.checkpoint)
    model = load(args.checkpoint)
    name = args.dataset or extra.get("dataset", "mnist")
    test_set, spec = _dataset(name, False, args.data_dir)
    result = evaluate(model, DataLoader(test_set, batch_size=args.batch_size))
    print(format_report(result, spec.classes))
    if args.plot:
        from .viz.plots import plot_confusion_matrix, save_figure

        title = (f"{Path(args.checkpoint).name} on the {name} test split: accuracy "
                 f"{100 * result['accuracy']:.2f}% ({int(result['confusion_matrix'].sum()):,} images)")
        print(f"wrote {save_figure(plot_confusion_matrix(result['confusion_matrix'], spec.classes, title=title), args.plot)}")
    return 0


def format_report(result: dict[str, Any], classes: tuple[str, ...]) -> str:
    """Accuracy, per-class precision and recall, and the confusion matrix as text."""
    cm = result["confusion_matrix"]
    lines = [f"accuracy: {100 * result['accuracy']:.2f}%  loss: {result['loss']:.4f}"]
    if "top5_accuracy" in result:
        lines[0] += f"  top-5: {100 * result['top5_accuracy']:.2f}%"
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    width = max(len(c) for c in classes)
    lines.append(f"{'class':>{width}}  precision  recall  support")
    for i, name in enumerate(classes[: len(cm)]):
        precision = tp[i] / predicted[i] if predicted[i] else 0.0
        recall = tp[i] / actual[i] if actual[i] else 0.0
        lines.append(f"{name:>{width}}  {precision:9.4f}  {recall:6.4f}  {actual[i]:7d}")
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    cell = max(len(str(cm.max())), 3)
    lines.append(" " * (width + 2) + " ".join(f"{c[:cell]:>{cell}}" for c in classes[: len(cm)]))
    for i, row in enumerate(cm):
        lines.append(f"{classes[i]:>{width}}  " + " ".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)


def prepare_image(path: str | os.PathLike, input_shape: tuple[int, int, int], invert: str = "auto") -> np.ndarray:
    """Load a PNG/JPEG and turn it into a model input in [0, 1], shape (C, H, W).

    For one-channel (MNIST-style) models the digit must be white on black, centred in a
    28x28 box: with ``invert="auto"`` a dark-on-light image (mean brightness above the
    middle) is inverted first; then, as in MNIST's own preparation, the ink's bounding box
    is scaled to fit 20x20 and pasted so its centre of mass is at the image centre.
    """
    from PIL import Image

    from .data import load_image

    C, H, W = input_shape
    if C == 3:
        return load_image(path, "RGB", (H, W)).astype(np.float32).transpose(2, 0, 1) / 255.0  # (3, H, W)
    arr = load_image(path, "L").astype(np.float32) / 255.0
    if invert == "always" or (invert == "auto" and arr.mean() > 0.5):
        arr = 1.0 - arr
    ink = arr > 0.1 * arr.max() if arr.max() > 0 else np.zeros_like(arr, bool)
    if not ink.any():
        return np.zeros((1, H, W), np.float32)
    rows, cols = np.where(ink.any(axis=1))[0], np.where(ink.any(axis=0))[0]
    crop = arr[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = round(20 * H / 28)
    scale = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS), np.float32) / 255
    total = small.sum()
    cy = (small.sum(axis=1) * np.arange(small.shape[0])).sum() / total
    cx = (small.sum(axis=0) * np.arange(small.shape[1])).sum() / total
    top = int(round(H / 2 - cy - 0.5))
    left = int(round(W / 2 - cx - 0.5))
    top = min(max(top, 0), H - small.shape[0])
    left = min(max(left, 0), W - small.shape[1])
    out = np.zeros((H, W), np.float32)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out[None]                                                  # (1, H, W)


def predict_command(args) -> int:
    from . import functional as F
    from .config import no_grad

    extra = _checkpoint_extra(args.checkpoint)
    model = load(args.checkpoint)
    shape = tuple(extra.get("input_shape", (1, 28, 28)))
    mean = np.asarray(extra.get("mean", (0.1307,)), np.float32).reshape(-1, 1, 1)
    std = np.asarray(extra.get("std", (0.3081,)), np.float32).reshape(-1, 1, 1)
    classes = extra.get("classes") or [str(i) for i in range(10)]
    batch = np.stack([(prepare_image(p, shape, "never" if args.no_invert else "auto") - mean) / std
                      for p in args.images])
    with no_grad():
        probs = F.softmax(model(Tensor(batch.astype(np.float32))), dim=1).data
    k = min(args.top_k, probs.shape[1])
    for path, p in zip(args.images, probs):
        order = np.argsort(-p, kind="stable")[:k]
        ranked = ", ".join(f"{classes[i]} ({100 * p[i]:.1f}%)" for i in order)
        print(f"{path}: {ranked}")
    return 0


def summary_command(args) -> int:
    from . import models
    from .summary import summary

    target = args.target
    if Path(target).is_file() or target.endswith(".safetensors"):
        extra = _checkpoint_extra(target)
        model = load(target)
        shape = tuple(extra.get("input_shape", (1, 28, 28)))
    else:
        if target not in models.list_models():
            raise UsageError(f"unknown model {target!r}; `cnnkit models` lists the zoo")
        model = models.get_model(target)
        shape = default_input_shape(target)
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise UsageError(f"--input-shape expects C,H,W, got {args.input_shape!r}") from None
    summary(model, shape, show_arithmetic=args.arithmetic)
    return 0


def models_command(args) -> int:
    import inspect

    from . import models

    print(f"{'model':<16} {'parameters':>14}  input")
    for name in models.list_models():
        builder = getattr(models, name)
        # skip the random initialization where the constructor allows it: only sizes matter
        kwargs = {"init_weights": False} if "init_weights" in inspect.signature(builder).parameters else {}
        model = builder(**kwargs)
        count = sum(p.size for p in model.parameters())
        shape = "x".join(str(v) for v in default_input_shape(name))
        print(f"{name:<16} {count:>14,}  {shape}")
    return 0
