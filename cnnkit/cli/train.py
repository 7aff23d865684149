"""``cnnkit train``: train a zoo model on a named dataset or a folder of images.

    cnnkit train lenet5                                   # MNIST: 55,000 train / 5,000 val / 10,000 test
    cnnkit train resnet18 --data photos/ --image-size 64  # photos/train, [val], [test] or photos/<class>/
    cnnkit train lenet5 --data signs/ --task binary --in-channels 3
    cnnkit train resnet18 --data photos/ --weights run/best.safetensors --freeze backbone

The banner says which images train, which pick the best epoch (validation) and which test
(evaluated once, at the end, for the best and the last model; never used for a decision).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import config, models, nn, optim
from ..config import no_grad
from ..data import DATASETS, DataLoader, Subset
from ..errors import DataError, ShapeError, UsageError
from ..io.checkpoint import capture_rng, load_checkpoint, restore_rng
from ..tensor import Tensor
from ..train import (
    BinaryTask,
    CSVLogger,
    History,
    ModelCheckpoint,
    MulticlassTask,
    NaNGuard,
    TrainingRun,
    default_lr,
    evaluate,
    fit,
    make_optimizer,
    recipe_for,
)
from ..train.datasets import Augmentation, TrainingData, folder_data, named_data
from ..train.transfer import FrozenBatchNorm, freeze, init_backbone, param_groups, read_weights
from ..viz.tensorboard import TensorBoard
from .main import non_negative_int, positive_float, positive_int

__all__ = ["add_commands", "train_command", "progress_printer", "OPTION_DEFAULTS"]


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _freeze_arg(text: str) -> str | int:
    import argparse

    if text in ("backbone", "none"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected backbone, none or a number of layers, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected backbone, none or a number of layers, got {text!r}")
    return value


def add_commands(sub) -> None:
    """Add ``train`` to the ``cnnkit`` command."""
    t = sub.add_parser("train", help="train a zoo model on a named dataset or a folder of images")
    t.add_argument("model", help="zoo model name (see `cnnkit models`)")
    t.add_argument("--dataset", default=None, help="mnist, fashion-mnist, kmnist or cifar10 (default mnist)")
    t.add_argument("--data", default=None, metavar="DIR",
                   help="a folder of images: DIR/train (+ val, test) or DIR/<class>/ (one subfolder per class)")
    t.add_argument("--val-split", type=_fraction, default=None, metavar="F",
                   help="share held out for validation (folders: stratified, default 0.1; named datasets: "
                        "the last share, default the last 5,000 images); 0: none")
    t.add_argument("--task", choices=["auto", "multiclass", "binary"], default=None,
                   help="binary: one logit, BCEWithLogitsLoss (auto: binary for two classes)")
    t.add_argument("--threshold", type=float, default=None,
                   help="binary: probability above which an image is positive (default 0.5)")
    t.add_argument("--positive-class", default=None, metavar="NAME",
                   help="binary: the class whose probability the model gives (default: the second folder, sorted)")
    t.add_argument("--image-size", type=positive_int, default=None, metavar="S",
                   help="square input size (default: the model's natural size; small nets: the images' own)")
    t.add_argument("--in-channels", type=int, choices=[1, 3], default=None,
                   help="image channels the model takes (default: 1 if every image is grayscale, else 3)")
    t.add_argument("--resize", choices=["crop", "squash"], default=None,
                   help="images of another shape: crop = shorter side scaled, centre kept (default); squash")
    t.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the recipe's)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: the recipe's)")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None)
    t.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run folder (default runs/MODEL-DATASET)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--augment", action="store_true", default=None,
                   help="named datasets: shifts/rotations (crops/flips for cifar10); folders: "
                        "RandomResizedCrop + RandomHorizontalFlip")
    t.add_argument("--crop-scale", type=positive_float, default=None,
                   help="with --augment on folders: smallest area share of RandomResizedCrop (default 0.08)")
    t.add_argument("--color-jitter", type=float, default=None, metavar="V",
                   help="folders: ColorJitter(brightness=V, contrast=V, saturation=V) while training")
    t.add_argument("--workers", type=non_negative_int, default=None,
                   help="threads decoding images (default: the number of cores, at most 4)")
    t.add_argument("--cache", choices=["auto", "on", "off"], default=None,
                   help="decode every image once into memory (auto: when it takes <= 1/4 of the RAM)")
    t.add_argument("--weights", default=None, metavar="FILE",
                   help="initialise all but the classifier head from a cnnkit checkpoint or a safetensors state_dict")
    t.add_argument("--freeze", type=_freeze_arg, default=None, metavar="backbone|none|N",
                   help="train only the head (backbone), everything (none), or all but the first N layers")
    t.add_argument("--backbone-lr-scale", type=positive_float, default=None, metavar="F",
                   help="the backbone's learning rate is F times the head's (e.g. 0.1 when fine-tuning)")
    t.add_argument("--data-dir", default=None, help="folder with a named dataset's files (offline use; else CNNKIT_DATA)")
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to RUN/tensorboard")
    t.add_argument("--limit", type=positive_int, default=None, help="train on the first N training images only")
    t.set_defaults(handler=train_command)


def progress_printer(label: str):
    """A ``progress(what, done, total)`` callback: a tqdm bar on a terminal, else a line at the end."""
    state: dict[str, object] = {}

    def progress(what: str, done: int, total: int) -> None:
        if sys.stdout.isatty():
            from tqdm import tqdm

            bar = state.get(what)
            if bar is None:
                bar = state[what] = tqdm(total=total, desc=f"{label} {what}", unit="img", leave=False)
            bar.n = done
            bar.refresh()
            if done >= total:
                bar.close()
        elif done >= total:
            print(f"{label} {what}: {total:,} images decoded", flush=True)

    return progress


def _load_data(args, workers: int) -> TrainingData:
    if args.data is not None:
        if args.dataset is not None:
            raise UsageError("give --data DIR (your images) or --dataset NAME, not both")
        if args.data_dir is not None:
            raise UsageError("--data-dir is where a named dataset's files are; with --data DIR drop it")
        augment = Augmentation(args.crop_scale if args.augment else None, args.augment, args.color_jitter)
        normalization = None
        if args.weights:
            _, meta = read_weights(args.weights)
            if "mean" in meta and "std" in meta:
                normalization = (tuple(meta["mean"]), tuple(meta["std"]), f"the weights' own, from {args.weights}")
        return folder_data(args.data, model=args.model, image_size=args.image_size, channels=args.in_channels,
                           val_split=args.val_split, resize=args.resize, augment=augment,
                           normalization=normalization, cache=args.cache, workers=workers,
                           progress=progress_printer("decoding"))
    name = args.dataset or "mnist"
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise DataError(f"--data-dir {args.data_dir}: no such folder")
    if args.data_dir is not None and name == "mnist" and (Path(args.data_dir) / "train").is_dir():
        raise UsageError(f"--data-dir {args.data_dir} looks like a folder of images: pass it as --data")
    if name not in DATASETS:
        hint = " (a folder of images? pass it as --data)" if Path(name).exists() else ""
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}{hint}")
    return named_data(name, args.data_dir, val_split=args.val_split, augment=args.augment,
                      image_size=args.image_size, channels=args.in_channels)


def _binary_positive(data: TrainingData, positive: str | None) -> None:
    """Put the positive class at label 1 (swapping the labels of every split when asked)."""
    if positive is None or positive == data.classes[1]:
        return
    if positive != data.classes[0]:
        raise UsageError(f"--positive-class {positive!r} is not a class; the classes are {data.classes}")
    for ds in (data.train, data.val, data.test):
        if ds is None:
            continue
        ds.targets = 1 - ds.targets
        if hasattr(ds, "samples"):
            ds.samples = [(p, 1 - t) for p, t in ds.samples]
    data.classes = data.classes[::-1]


# What an option not given means (argparse defaults are None, so "not given" stays visible
# to the stored run recipe; these are filled in before use).
OPTION_DEFAULTS = {
    "task": "auto", "threshold": 0.5, "resize": "crop", "augment": False, "crop_scale": 0.08,
    "color_jitter": 0.0, "cache": "auto", "freeze": "none", "backbone_lr_scale": 1.0,
}


def train_command(args) -> int:
    for key, value in OPTION_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.model.lower() not in models.list_models():
        raise UsageError(f"unknown model {args.model!r}; `cnnkit models` lists the zoo")
    args.model = args.model.lower()
    entry = models.zoo_entry(args.model)
    if args.weights is None and (args.freeze != "none" or args.backbone_lr_scale != 1.0):
        raise UsageError("--freeze and --backbone-lr-scale need --weights (a trained backbone)")
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    dataset_label = Path(args.data).name if args.data else (args.dataset or "mnist")
    recipe = recipe_for(args.model, dataset_label)
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    opt_name = args.optimizer or recipe.optimizer
    lr = args.lr or default_lr(opt_name, recipe)
    out = Path(args.out or f"runs/{args.model}-{dataset_label}")
    last = out / "last.safetensors"
    if args.resume and not last.exists():
        raise UsageError(f"--resume: no checkpoint to resume at {last}")

    config.manual_seed(args.seed)
    data = _load_data(args, workers)
    K = len(data.classes)
    kind = ("binary" if K == 2 else "multiclass") if args.task == "auto" else args.task
    if kind == "binary" and K != 2:
        raise UsageError(f"--task binary needs 2 classes; the data has {K}: {', '.join(data.classes)}")
    task = BinaryTask(args.threshold) if kind == "binary" else MulticlassTask()
    if kind == "binary":
        _binary_positive(data, args.positive_class)
    elif args.positive_class:
        raise UsageError("--positive-class is for --task binary")
    if args.limit:
        data.train = _limited(data.train, args.limit)
        data.lines.append(f"--limit {args.limit}: training on the first {len(data.train):,} of the training images")
    C = data.spec.channels
    model_config = {"num_classes": task.outputs(K)}
    if C != entry.input_shape[0]:
        model_config["in_channels"] = C
    model = models.get_model(args.model, **model_config)
    _check_input(model, entry, data.spec.input_shape)
    transfer_line = None
    frozen_bn: list = []
    if args.weights:
        report = init_backbone(model, args.model, args.weights)
        frozen_bn, froze = freeze(model, args.model, args.freeze)
        transfer_line = f"weights: {report.describe()}; {froze}"
        if args.backbone_lr_scale != 1.0:
            transfer_line += f"; backbone lr x{args.backbone_lr_scale:g}"
    loader_rng = np.random.default_rng(args.seed + 1)
    train_loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=loader_rng,
                              num_workers=workers if args.data else 0)
    eval_workers = workers if args.data else 0
    val_loader = DataLoader(data.val, batch_size=500, num_workers=eval_workers) if data.val is not None else None
    test_loader = DataLoader(data.test, batch_size=500, num_workers=eval_workers) if data.test is not None else None
    groups = param_groups(model, args.model, lr, args.backbone_lr_scale)
    opt = make_optimizer(opt_name, groups, recipe, lr)
    scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], epochs=epochs,
                                              steps_per_epoch=len(train_loader))
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
        "dataset": args.dataset or "mnist" if not args.data else f"folder:{data.source['path']}",
        "source": data.source,
        "input_shape": list(data.spec.input_shape), "mean": list(data.spec.mean), "std": list(data.spec.std),
        "classes": list(data.classes), "task": task.to_dict(), "preprocessing": data.spec.to_dict(),
        "recipe": {"epochs": epochs, "batch_size": batch_size, "optimizer": opt_name, "lr": lr, "seed": args.seed},
    }
    if args.weights:
        extra["weights"] = {"source": str(args.weights), "freeze": args.freeze,
                            "backbone_lr_scale": args.backbone_lr_scale}
    common = dict(model_name=args.model, model_config=model_config, extra=extra,
                  rng_states=lambda: capture_rng(generators))
    best = out / "best.safetensors"
    callbacks = [ModelCheckpoint(last, **common)]
    if val_loader is not None:
        callbacks.append(ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True, tie_break="val_loss",
                                         save_on_interrupt=False, **common))
    callbacks += [CSVLogger(out / "log.csv", append=args.resume), NaNGuard()]
    if frozen_bn:
        callbacks.append(FrozenBatchNorm(frozen_bn))
    if args.tensorboard:
        callbacks.append(TensorBoard(out / "tensorboard"))
    positive = f", positive class {data.classes[1]!r} (label 1), threshold {task.threshold:g}" if kind == "binary" else ""
    print(f"training {args.model} on {data.source.get('path', data.source.get('name'))}: {epochs} epochs, "
          f"batch {batch_size}, {opt_name} lr {lr:g} (one-cycle), seed {args.seed}; task {kind}"
          f"{positive}; run folder {out}", flush=True)
    for line in data.lines + ([transfer_line] if transfer_line else []) + data.notes:
        print(f"  {line}", flush=True)
    start = time.perf_counter()
    try:
        fit(model, train_loader, epochs=epochs, optimizer=opt, scheduler=scheduler, val_loader=val_loader,
            callbacks=callbacks, initial_epoch=initial_epoch, run=run, monitor="val_loss", task=task)
    except KeyboardInterrupt:
        print(f"\ninterrupted: weights saved to {out / 'interrupted.safetensors'}; "
              f"`cnnkit train {args.model} --out {out} --resume` continues from {last}", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - start
    print(f"trained {epochs - initial_epoch} epochs in {elapsed:.0f}s")
    _final_report(model, task, val_loader, test_loader, best, last)
    return 0


def _limited(dataset, limit: int):
    return Subset(dataset, np.arange(min(limit, len(dataset))))


def _final_report(model, task, val_loader, test_loader, best: Path, last: Path) -> None:
    """Test the last and the best model once each; say which epoch was best and why."""
    def line(result):
        text = f"accuracy {100 * result['accuracy']:.2f}% (loss {result['loss']:.4f})"
        if "roc_auc" in result:
            text += (f", precision {result['precision']:.4f}, recall {result['recall']:.4f}, "
                     f"F1 {result['f1']:.4f}, ROC AUC {result['roc_auc']:.4f}")
        return text

    models_to_test = [("last", last, None)]
    if val_loader is not None and best.exists():
        ckpt = load_checkpoint(best)
        models_to_test.append((f"best (epoch {int(ckpt.meta['epoch']) + 1}, chosen on validation)", best, ckpt))
    for label, path, ckpt in models_to_test:
        if ckpt is not None:
            model.load_state_dict(ckpt.model_state)
        parts = []
        if val_loader is not None:
            parts.append(f"validation {line(evaluate(model, val_loader, task=task, confusion=False))}")
        if test_loader is not None:
            parts.append(f"test {line(evaluate(model, test_loader, task=task, confusion=False))}")
        print(f"{label}: " + "; ".join(parts or ["no validation or test images"]) + f"  [{path}]")


def _check_input(model, entry: models.ZooEntry, shape: tuple[int, int, int]) -> None:
    """Fail early, in one line, when the model cannot take the images."""
    C, H, W = shape
    if not (entry.accepts(H) and entry.accepts(W)):
        raise UsageError(f"{entry.name} takes images of {entry.size_range()} pixels, not {H}x{W}: "
                         f"pass --image-size {max(entry.min_size, min(H, W)) if entry.max_size is None else entry.min_size}")
    try:
        with no_grad(), nn.eval_mode(model):
            model(Tensor(np.zeros((1, C, H, W), np.float32)))
    except ShapeError as e:
        raise UsageError(f"model {entry.name!r} cannot take {shape} images: {e}") from None
