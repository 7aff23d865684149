"""``cnnkit train``: train a zoo model on a named dataset or a folder of images.

    cnnkit train lenet5                                   # MNIST: 55,000 train / 5,000 val / 10,000 test
    cnnkit train resnet18 --data photos/ --image-size 64  # photos/train, [val], [test] or photos/<class>/
    cnnkit train lenet5 --data signs/ --task binary --in-channels 3
    cnnkit train resnet18 --data photos/ --weights run/best.safetensors --freeze backbone
    cnnkit train resnet18 --data photos/ --weights IMAGENET1K_V1       # torchvision's, fetched once

The banner says which images train, which pick the best epoch (validation) and which test
(evaluated once, at the end, for the best and the last model; never used for a decision).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from .. import config, models, nn, optim
from ..config import no_grad
from ..data import DATASETS, Subset
from ..errors import DataError, RunFolderError, ShapeError, UsageError
from ..files import format_bytes
from ..io.checkpoint import capture_rng, restore_rng
from ..io.weights import SourceWeights, read_weights
from ..models.weights import IMAGENET_MEAN, IMAGENET_STD, find_weights
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
    fit,
    make_optimizer,
    recipe_for,
)
from ..train.datasets import Augmentation, TrainingData, folder_data, named_data
from ..train.memory import available_memory, estimate_step_memory
from ..train.recipes import replan_schedule
from ..train.run_folder import (
    RECIPE_FILE,
    RUN_FILES,
    RunLock,
    checkpoint_bytes,
    holds_a_run,
    preflight,
    write_recipe,
)
from ..train.transfer import FrozenBatchNorm, freeze, init_backbone, param_groups, pretrained_normalization
from ..viz.tensorboard import TensorBoard
from . import parallel
from .main import (
    Terminated,
    fraction,
    in_range,
    non_negative_int,
    number,
    positive_float,
    positive_int,
    thread_count,
)
from .preflight import check_step_memory
from .resume import (
    PATH_KEYS,
    RECIPE_KEYS,
    absolute,
    apply_recipe,
    check_same_data,
    resume_command,
    stored_run,
)

__all__ = ["add_commands", "train_command", "progress_printer", "OPTION_DEFAULTS"]


def _freeze_value(text: str) -> str | int:
    return text if text in ("backbone", "none") else int(text)


_freeze_arg = number(_freeze_value, lambda v: isinstance(v, str) or v >= 0,
                     "backbone, none or a number of layers")


def add_commands(sub) -> None:
    """Add ``train`` to the ``cnnkit`` command."""
    t = sub.add_parser("train", help="train a zoo model on a named dataset or a folder of images")
    t.add_argument("model", nargs="?", default=None,
                   help="zoo model name (see `cnnkit models`); with --resume, the run's own")
    t.add_argument("--dataset", default=None, help="mnist, fashion-mnist, kmnist or cifar10 (default mnist)")
    t.add_argument("--data", default=None, metavar="DIR",
                   help="a folder of images: DIR/train (+ val, test) or DIR/<class>/ (one subfolder per class)")
    t.add_argument("--val-split", type=fraction, default=None, metavar="F",
                   help="share held out for validation (folders: stratified, default 0.1; named datasets: "
                        "the last share, default the last 5,000 images); 0: none")
    t.add_argument("--task", choices=["auto", "multiclass", "binary"], default=None,
                   help="binary: one logit, BCEWithLogitsLoss (auto: binary for two classes)")
    t.add_argument("--threshold", type=in_range(float, 0, 1, closed="()"), default=None,
                   help="binary: probability above which an image is positive (default 0.5)")
    t.add_argument("--positive-class", default=None, metavar="NAME",
                   help="binary: the class whose probability the model gives (default: the second folder, sorted)")
    t.add_argument("--image-size", type=positive_int, default=None, metavar="S",
                   help="square input size (default: the model's natural size; small nets: the images' own)")
    t.add_argument("--in-channels", type=number(int, lambda v: v in (1, 3), "1 or 3"), default=None,
                   help="image channels the model takes (default: 1 if every image is grayscale, else 3)")
    t.add_argument("--resize", choices=["crop", "squash"], default=None,
                   help="images of another shape: crop = shorter side scaled, centre kept (default); squash")
    t.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the recipe's)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: the recipe's)")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None)
    t.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    t.add_argument("--seed", type=non_negative_int, default=None, help="random seed (default 0)")
    t.add_argument("--out", default=None, help="run folder (default runs/MODEL-DATASET)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly, with its stored recipe (RUN/recipe.json); "
                        "--epochs N (more than done) extends it, re-planning the one-cycle schedule")
    t.add_argument("--overwrite", action="store_true",
                   help="start a new run in --out even if it holds one (its checkpoints and log are replaced)")
    t.add_argument("--augment", action="store_true", default=None,
                   help="named datasets: shifts/rotations (crops/flips for cifar10); folders: "
                        "RandomResizedCrop + RandomHorizontalFlip")
    t.add_argument("--crop-scale", type=in_range(float, 0, 1, closed="(]"), default=None,
                   help="with --augment on folders: smallest area share of RandomResizedCrop (default 0.08)")
    # beyond 100 every factor 1 + V saturates a picture (and 1e308 overflows float32 into NaN)
    t.add_argument("--color-jitter", type=in_range(float, 0, 100), default=None, metavar="V",
                   help="folders: ColorJitter(brightness=V, contrast=V, saturation=V) while training (0 to 100)")
    t.add_argument("--workers", type=thread_count, default=None,
                   help="threads decoding images (default: the number of cores, at most 4)")
    t.add_argument("--cache", choices=["auto", "on", "off"], default=None,
                   help="decode every image once into memory (auto: when it takes <= 1/4 of the RAM)")
    t.add_argument("--weights", default=None, metavar="FILE|NAME",
                   help="initialise all but the classifier head from a cnnkit checkpoint, a torch.save .pth, a "
                        "safetensors state_dict (timm, Hugging Face) or a weights name (DEFAULT, IMAGENET1K_V1, "
                        "resnet18.IMAGENET1K_V1: downloaded once); named weights bring their own normalization")
    t.add_argument("--freeze", type=_freeze_arg, default=None, metavar="backbone|none|N",
                   help="train only the head (backbone), everything (none), or all but the first N layers")
    t.add_argument("--backbone-lr-scale", type=positive_float, default=None, metavar="F",
                   help="the backbone's learning rate is F times the head's (e.g. 0.1 when fine-tuning)")
    t.add_argument("--normalize", choices=["auto", "imagenet", "images"], default=None,
                   help="the inputs' mean/std: auto (default) = the weights' own when they carry one (named "
                        "weights, cnnkit checkpoints), else the training images'; imagenet = ImageNet's (for a "
                        "plain .pth/safetensors of ImageNet weights); images = the training images' own")
    t.add_argument("--data-dir", default=None, help="folder with a named dataset's files (offline use; else CNNKIT_DATA)")
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to RUN/tensorboard")
    t.add_argument("--limit", type=positive_int, default=None, help="train on the first N training images only")
    parallel.add_options(t)
    t.set_defaults(handler=parallel.command(train_command, _run_folder))


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


def _load_data(args, workers: int, normalization: tuple | None = None) -> TrainingData:
    """The run's images; ``normalization``: (mean, std, where from), default the images' own."""
    if args.data is not None:
        if args.dataset is not None:
            raise UsageError("give --data DIR (your images) or --dataset NAME, not both")
        if args.data_dir is not None:
            raise UsageError("--data-dir is where a named dataset's files are; with --data DIR drop it")
        augment = Augmentation(args.crop_scale if args.augment else None, args.augment, args.color_jitter)
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
                      image_size=args.image_size, channels=args.in_channels, normalization=normalization)


def _run_normalization(ckpt) -> tuple | None:
    """A resumed fine-tuning run's normalization, as stored when it started (None: the images' own)."""
    if ckpt is None or not (ckpt.extra.get("weights") or {}).get("normalization"):
        return None
    return tuple(ckpt.extra["mean"]), tuple(ckpt.extra["std"]), "the weights' own, as the run started"


def _normalization(how: str, pretrained: SourceWeights | None, ckpt) -> tuple | None:
    """(mean, std, where from) the images are normalized with, per --normalize; None: the images' own."""
    if how == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD, "ImageNet's: --normalize imagenet"
    if how == "images":
        return None
    return pretrained_normalization(pretrained) if pretrained is not None else _run_normalization(ckpt)


def _check_weights_model(pretrained: SourceWeights | None, source: str, model: str) -> None:
    """Refuse, before any image is decoded, a cnnkit checkpoint of another zoo model as --weights."""
    if pretrained is None or pretrained.kind != "cnnkit checkpoint":
        return
    name = (pretrained.meta.get("model") or {}).get("name")
    if name in models.list_models() and name != model:
        raise UsageError(f"--weights {source} is a checkpoint of {name}, not of {model}: fine-tune {name} "
                         f"(cnnkit train {name} --weights ...), or give weights of {model}")


def _weights_settings(model: str, pretrained: SourceWeights | None, ckpt) -> dict:
    """Constructor settings the weights were trained with (GoogLeNet's transform_input=True), if any."""
    if ckpt is not None:  # resumed: the run's own
        return {k: v for k, v in ckpt.model_config.items() if k not in ("num_classes", "in_channels")}
    named = find_weights(model, pretrained.weights_name) if pretrained is not None and pretrained.weights_name else None
    return dict(named.model_config) if named is not None else {}


def _weights_value(value: str, model: str | None) -> str:
    """--weights as the run's recipe stores it: a file's absolute path, or the full weights name."""
    if not Path(value).expanduser().exists():
        entry = find_weights(model, value)
        if entry is not None:
            return entry.full_name                   # "DEFAULT" -> "resnet18.IMAGENET1K_V1"
        if model is None and os.sep not in value:    # --resume without MODEL: a name, as given
            return value
    return absolute(value)


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
    "lr_scaling": "none", "sync_bn": False, "normalize": "auto",
}


def _run_folder(args) -> Path:
    """The run folder ``cnnkit train`` would use (also named by --nproc when the job dies)."""
    if args.out is not None or args.model is None:
        return Path(args.out or ".")
    dataset_label = Path(args.data).name if args.data else (args.dataset or "mnist")
    return Path(f"runs/{args.model.lower()}-{dataset_label}")


def train_command(args) -> int:
    ranks = getattr(args, "ranks", None) or parallel.Ranks(None)  # one process, or this rank's part
    args.ranks = ranks
    explicit = {k: getattr(args, k) for k in RECIPE_KEYS if getattr(args, k) is not None}
    for key in PATH_KEYS:
        if key in explicit:
            explicit[key] = absolute(explicit[key])
    if "model" in explicit:
        explicit["model"] = explicit["model"].lower()
    if "weights" in explicit:
        explicit["weights"] = _weights_value(explicit["weights"], explicit.get("model"))
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it: choose one")
    if args.out is None and args.resume:
        raise UsageError("--resume needs --out RUN, the run folder to continue")
    if args.model is None and not args.resume:
        raise UsageError("give a MODEL (see `cnnkit models`), or --resume --out RUN to continue a run")
    if args.model is not None and args.model.lower() not in models.list_models():
        raise UsageError(f"unknown model {args.model!r}; `cnnkit models` lists the zoo")
    dataset_label = Path(args.data).name if args.data else (args.dataset or "mnist")
    out = Path(args.out or f"runs/{args.model.lower()}-{dataset_label}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose another --out")
    if args.resume and not out.is_dir():
        raise UsageError(f"--resume: there is no run folder {out}")
    created = not out.exists()
    try:
        # several ranks: rank 0 alone holds the lock (and writes every file of the run)
        lock = ranks.root_only(RunLock(out, command=" ".join(["cnnkit", "train", *map(shlex.quote, sys.argv[2:])])))
        with lock as held:
            if held is not None and held.note:
                print(f"note: {held.note}", file=sys.stderr, flush=True)
            return _train(args, out, explicit)
    finally:
        if ranks.root and created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before anything was written: leave no empty folder behind


def _train_options() -> dict[str, argparse.Action]:
    """The options of ``cnnkit train`` by dest, as ``add_commands`` defines them."""
    sub = argparse.ArgumentParser().add_subparsers()
    add_commands(sub)
    return {action.dest: action for action in sub.choices["train"]._actions}


def _train(args, out: Path, explicit: dict) -> int:
    ranks = args.ranks
    last = out / "last.safetensors"
    ckpt, recipe, extended = None, None, None
    done = 0
    if args.resume:
        recipe, ckpt = stored_run(out, last, _train_options())
        ranks.check_resume(recipe, out)  # the same number of ranks: the global batch must not change
        done = int(ckpt.meta["epoch"]) + 1 if ckpt is not None else 0
        extended = apply_recipe(args, recipe, explicit, done, out)
    else:
        present = holds_a_run(out)
        if present and not args.overwrite:
            raise UsageError(
                f"{out} already holds a run ({', '.join(present)}): continue it with `{resume_command(out)}`, "
                "choose another --out, or add --overwrite to replace it"
            )
        for key in PATH_KEYS:
            if getattr(args, key) is not None:
                setattr(args, key, absolute(getattr(args, key)))
        if args.weights is not None:
            args.weights = _weights_value(args.weights, args.model.lower())
    if args.seed is None:
        args.seed = 0
    for key, value in OPTION_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.model = args.model.lower()
    entry = models.zoo_entry(args.model)
    if args.weights is None and (args.freeze != "none" or args.backbone_lr_scale != 1.0):
        raise UsageError("--freeze and --backbone-lr-scale need --weights (a trained backbone)")
    if args.freeze == "backbone" and args.backbone_lr_scale != 1.0:
        raise UsageError(f"--backbone-lr-scale {args.backbone_lr_scale:g} does nothing with --freeze backbone (the "
                         "backbone does not train): drop one of them")
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    dataset_label = Path(args.data).name if args.data else (args.dataset or "mnist")
    defaults = recipe_for(args.model, dataset_label)
    epochs = args.epochs or defaults.epochs
    batch_size = args.batch_size or defaults.batch_size
    opt_name = args.optimizer or defaults.optimizer
    lr = args.lr or default_lr(opt_name, defaults)
    peak_lr = ranks.lr(lr, args.lr_scaling)
    ranks.check_options(args)

    config.manual_seed(args.seed)
    # Read (named weights: fetch) the weights before decoding any image: a wrong name or an
    # offline download fails at once. Fine-tuning feeds the images normalized as the weights
    # were trained (named weights: ImageNet's); a resumed run, as it started.
    # Several ranks: rank 0 fetches named weights and datasets into the cache first, the others
    # then find the files there. The download lock alone is safe too, but the rank that won it
    # might be a silenced one (Job): rank 0 would show only that it waits, not the progress.
    pretrained = None
    if args.weights and ckpt is None:
        pretrained = ranks.root_first(lambda: read_weights(args.weights, args.model))
    _check_weights_model(pretrained, args.weights, args.model)
    normalization = _normalization(args.normalize, pretrained, ckpt)
    if args.data is None:  # a named dataset, downloaded when missing
        data = ranks.root_first(lambda: _load_data(args, workers, normalization))
    else:  # a folder of images: every rank decodes its own copy at once
        data = _load_data(args, workers, normalization)
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
    facts = {"classes": list(data.classes), "train_images": len(data.train),
             "val_images": len(data.val) if data.val is not None else 0}
    if recipe is not None:
        check_same_data(recipe, facts, out)
    C = data.spec.channels
    model_config = {"num_classes": task.outputs(K)}
    model_config.update(_weights_settings(args.model, pretrained, ckpt))
    if C != entry.input_shape[0]:
        model_config["in_channels"] = C
    model = models.get_model(args.model, **model_config)
    _check_input(model, entry, data.spec.input_shape)
    transfer_line = None
    frozen_bn: list = []
    if args.weights:
        if ckpt is None:  # resumed: the checkpoint holds the weights; only the freezing is redone
            report = init_backbone(model, args.model, pretrained)
        try:
            frozen_bn, froze = freeze(model, args.model, args.freeze)
        except ValueError as e:
            raise UsageError(str(e)) from None
        transfer_line = (f"weights: {report.describe()}; {froze}" if ckpt is None
                         else f"weights: from {last} (first from {args.weights}); {froze}")
        if normalization is None and args.normalize == "auto":
            transfer_line += ("; the weights carry no normalization: the images' own is used (--normalize "
                              "imagenet for ImageNet's)")
        if args.backbone_lr_scale != 1.0:
            transfer_line += f"; backbone lr x{args.backbone_lr_scale:g}"
    slots = 2 if opt_name in ("adam", "adamw") else 1
    # pre-flight: the run folder (writable, room for last + best + a save's temporary) and the memory
    if ranks.root:  # the folder rank 0 writes (on another machine it may not exist)
        preflight(out, checkpoint_bytes(model, slots))
    if batch_size > len(data.train):  # said, not silent: the loader's batches are the whole set
        data.notes.append(f"--batch-size {batch_size:,} is more than the {len(data.train):,} training images: "
                          f"each epoch is one step on all of them")
    check_step_memory(model, data.spec.input_shape, min(batch_size, len(data.train)), train=True,
                      name=f"training {args.model}", optimizer_slots=slots, sharers=ranks.local_size)
    eval_batch = _eval_batch(model, data.spec.input_shape)
    # several ranks: the same model and data everywhere, then rank 0's weights (and SyncBatchNorm)
    ranks.prepare(model, data.train, args.sync_bn)
    loader_rng = np.random.default_rng(args.seed + 1)
    train_loader = ranks.train_loader(data.train, batch_size, loader_rng, workers if args.data else 0, args.seed)
    loader_rng = train_loader.generator
    eval_workers = workers if args.data else 0
    val_loader = ranks.eval_loader(data.val, eval_batch, eval_workers)
    test_loader = ranks.eval_loader(data.test, eval_batch, eval_workers)
    groups = param_groups(model, args.model, peak_lr, args.backbone_lr_scale)
    opt = make_optimizer(opt_name, groups, defaults, peak_lr)
    scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], epochs=epochs,
                                              steps_per_epoch=len(train_loader),
                                              pct_start=ranks.pct_start(args.warmup_epochs, epochs))
    generators = {"loader": loader_rng, "default": config.default_generator()}
    run = TrainingRun(model, opt, scheduler)
    initial_epoch = 0
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
        opt.load_state_dict(ckpt.optimizer_state())
        saved = ckpt.meta["scheduler"]["state"]
        if extended is not None or saved.get("total_steps") != scheduler.total_steps:
            replan_schedule(scheduler, saved)
        else:
            scheduler.load_state_dict(saved)
        restore_rng(ckpt.meta.get("rng_states", {}), generators)
        run.history = History.from_dict(ckpt.meta.get("history", {}))
        initial_epoch = done
    stored = {key: getattr(args, key) for key in RECIPE_KEYS}
    stored.update({"epochs": epochs, "batch_size": batch_size, "optimizer": opt_name, "lr": lr,
                   "dataset": None if args.data else (args.dataset or "mnist"), "ranks": ranks.size, **facts})
    if recipe is not None:
        stored["extended"] = list(recipe.get("extended", []))
    if extended is not None:
        stored["extended"].append({"after_epoch": done, "epochs": [int(recipe.get("epochs") or 0), extended]})
    try:  # Ctrl-C from here until the training starts: say what the run folder holds
        if ranks.root:  # rank 0 alone writes the run's files
            if args.overwrite:
                for name in RUN_FILES:
                    (out / name).unlink(missing_ok=True)
            write_recipe(out, stored)
        extra = {
            "dataset": args.dataset or "mnist" if not args.data else f"folder:{data.source['path']}",
            "source": data.source,
            "input_shape": list(data.spec.input_shape), "mean": list(data.spec.mean), "std": list(data.spec.std),
            "classes": list(data.classes), "task": task.to_dict(), "preprocessing": data.spec.to_dict(),
            "recipe": stored,
        }
        if args.weights:
            first = ckpt.extra.get("weights", {}) if ckpt is not None else {}
            extra["weights"] = {"source": str(args.weights),
                                "kind": pretrained.kind if pretrained is not None else first.get("kind"),
                                "name": pretrained.weights_name if pretrained is not None else first.get("name"),
                                "normalization": normalization is not None,
                                "freeze": args.freeze, "backbone_lr_scale": args.backbone_lr_scale}
        common = dict(model_name=args.model, model_config=model_config, extra=extra,
                      rng_states=lambda: capture_rng(generators))
        best = out / "best.safetensors"
        writers = []
        if val_loader is not None:  # best before last: a kill between the two saves then loses nothing
            writers.append(ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True, tie_break="val_loss",
                                           save_on_interrupt=False, **common))
        writers += [ModelCheckpoint(last, **common), CSVLogger(out / "log.csv", append=ckpt is not None)]
        if args.tensorboard:
            writers.append(TensorBoard(out / "tensorboard"))
        callbacks = ranks.callbacks(args.seed) + ranks.writers(writers) + [NaNGuard()]  # files: rank 0's alone
        if frozen_bn:
            callbacks.append(FrozenBatchNorm(frozen_bn))
        if ckpt is not None:
            what = f"resuming {last} after epoch {done}"
            if extended is not None:
                what += (f"; extended from {int(recipe.get('epochs') or 0)} to {extended} epochs: the one-cycle "
                         f"schedule is re-planned over {extended} epochs from step {scheduler.last_epoch}")
            print(what, flush=True)
        elif args.resume:
            print(f"resuming the run in {out}: no epoch had finished, so it starts from the first", flush=True)
        positive = f", positive class {data.classes[1]!r} (label 1), threshold {task.threshold:g}" if kind == "binary" else ""
        print(f"training {args.model} on {data.source.get('path', data.source.get('name'))}: {epochs} epochs, "
              f"batch {batch_size}, {opt_name} lr {peak_lr:g} (one-cycle), seed {args.seed}; task {kind}"
              f"{positive}; run folder {out}", flush=True)
        shared = ranks.banner(batch_size, peak_lr, lr, args.lr_scaling, args.warmup_epochs, epochs)
        for line in ([shared] if shared else []) + data.lines + ([transfer_line] if transfer_line else []) + data.notes:
            print(f"  {line}", flush=True)
    except KeyboardInterrupt as e:
        print(f"\n{_interrupted_before_training(out, last, ckpt, ranks)}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    start, started_at = time.perf_counter(), time.time() - 1.0  # (file times may be coarse)
    try:
        fit(model, train_loader, epochs=epochs, optimizer=ranks.optimizer(opt), scheduler=scheduler, val_loader=val_loader,
            callbacks=callbacks, initial_epoch=initial_epoch, run=run, monitor="val_loss", task=task)
    except KeyboardInterrupt as e:
        interrupted = out / "interrupted.safetensors"
        saved = interrupted.exists() and interrupted.stat().st_mtime >= started_at
        weights = (f"weights saved to {interrupted}" if saved else
                   "the weights of the interrupted epoch were not saved (interrupted again during the save)")
        saved_at = (f"the last finished epoch is in {last}" if last.exists()
                    else "no epoch had finished, so the run starts again from its first")
        print(f"\ninterrupted: {weights}; {saved_at}; `{resume_command(out)}{ranks.relaunch()}` continues the run", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except (OSError, DataError) as e:
        # a file went missing or bad, or the disk filled up, mid-run: what is safe, and how to go on
        if isinstance(e, RunFolderError) or (isinstance(e, OSError) and e.filename is None):
            raise
        where = f"the last finished epoch is safe in {last}" if last.exists() else "no epoch had finished"
        # (the data pipeline's own advice, "then run again", would start over: here --resume continues)
        what = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) else str(e).removesuffix(", then run again")
        cls = RunFolderError if isinstance(e, OSError) else DataError
        raise cls(f"{what}; {where}: `{resume_command(out)}{ranks.relaunch()}` continues the run once that is fixed"
                  ) from None
    elapsed = time.perf_counter() - start
    print(f"trained {epochs - initial_epoch} epochs in {elapsed:.0f}s")
    try:
        _final_report(model, task, val_loader, test_loader, best, last, ranks)
    except KeyboardInterrupt as e:  # the training is over and saved: say so, and how to test it
        print(f"\ninterrupted during the final evaluation: {_saved_run(out, best, last)}, but the final evaluation "
              f"did not finish (its results are missing or incomplete){_test_hint(args, best, last, test_loader)}",
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    return 0


def _interrupted_before_training(out: Path, last: Path, ckpt, ranks) -> str:
    """The line of a Ctrl-C after the run's files were prepared and before its first step."""
    again = f"`{resume_command(out)}{ranks.relaunch()}`"
    if ckpt is not None:  # --resume of a run with finished epochs: nothing on disk changed
        return (f"interrupted before the training started again: nothing was lost, the last finished epoch "
                f"(epoch {int(ckpt.meta['epoch']) + 1}) is still in {last}; {again} continues the run")
    recipe = out / RECIPE_FILE
    if recipe.exists():
        return (f"interrupted before the training started: no epoch was trained; the run's recipe is saved in "
                f"{recipe}; {again} starts the run")
    return (f"interrupted before the training started: no epoch was trained and {out} holds no recipe of the "
            "run; run the command again to start it")


def _saved_run(out: Path, best: Path, last: Path) -> str:
    """What a finished run has on disk, for the line of an interrupted final evaluation."""
    files = [f"{what}: {path}" for what, path in (("last epoch", last), ("best epoch on validation", best),
                                                   ("log", out / "log.csv")) if path.exists()]
    return f"the training finished and is saved ({'; '.join(files)})" if files else "the training finished"


def _test_hint(args, best: Path, last: Path, test_loader) -> str:
    """How to test the saved model afterwards, when the run has test images `cnnkit evaluate` finds again."""
    model = best if best.exists() else last
    if test_loader is None or not model.exists():
        return ""
    if args.data is None:   # a named dataset: evaluate takes the checkpoint's own test split
        data = ""
    elif (Path(args.data) / "test").is_dir():
        data = f" --data {shlex.quote(str(args.data))}"
    else:                   # a test share split off a folder: evaluate cannot pick the same images
        return ""
    return f"; `cnnkit evaluate {shlex.quote(str(model))}{data}` tests the {model.stem} model"


def _eval_batch(model, input_shape, wanted: int = 500) -> int:
    """The validation/test batch: ``wanted`` images, or fewer when that many do not fit in memory.

    Evaluation runs in eval mode without the graph, image by image, so its batch size does
    not change any result, only the memory.
    """
    available = available_memory()
    if available is None:
        return wanted
    estimate = estimate_step_memory(model, input_shape, wanted, train=False)
    if estimate.total <= 0.5 * available:
        return wanted
    fits = estimate.largest_batch(int(0.5 * available))
    if fits < 1:
        raise UsageError(f"evaluating {input_shape} images needs {format_bytes(estimate.per_sample)} per image; "
                         f"{format_bytes(available)} is available")
    return min(wanted, fits)


def _limited(dataset, limit: int):
    return Subset(dataset, np.arange(min(limit, len(dataset))))


def _final_report(model, task, val_loader, test_loader, best: Path, last: Path, ranks: parallel.Ranks) -> None:
    """Test the last and the best model once each; say which epoch was best and why.

    Several ranks: rank 0 reads the best checkpoint and every rank gets its weights; each
    evaluates its share of the images, and the metrics are those of every image.
    """
    def line(result):
        text = f"accuracy {100 * result['accuracy']:.2f}% (loss {result['loss']:.4f})"
        if "roc_auc" in result:
            text += (f", precision {result['precision']:.4f}, recall {result['recall']:.4f}, "
                     f"F1 {result['f1']:.4f}, ROC AUC {result['roc_auc']:.4f}")
        return text

    models_to_test = [("last", last, False)]
    if val_loader is not None and ranks.root_says(best.exists()):
        models_to_test.append(("best", best, True))
    for label, path, load in models_to_test:
        if load:
            ckpt = ranks.load_weights(model, best)
            if ckpt is not None:
                label = f"best (epoch {int(ckpt.meta['epoch']) + 1}, chosen on validation)"
        parts = []
        if val_loader is not None:
            parts.append(f"validation {line(ranks.evaluate(model, val_loader, task=task, confusion=False))}")
        if test_loader is not None:
            parts.append(f"test {line(ranks.evaluate(model, test_loader, task=task, confusion=False))}")
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
