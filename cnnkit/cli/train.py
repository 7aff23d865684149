"""``cnnkit train``: train a zoo model on a named dataset with its recipe, checkpoints and logs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .. import config, models, nn, optim
from ..config import no_grad
from ..data import DataLoader, DatasetSpec, Subset, get_dataset
from ..errors import ShapeError, UsageError
from ..io.checkpoint import capture_rng, load_checkpoint, restore_rng
from ..tensor import Tensor
from ..train import (
    CSVLogger,
    History,
    ModelCheckpoint,
    NaNGuard,
    TrainingRun,
    default_lr,
    evaluate,
    fit,
    make_optimizer,
    recipe_for,
)
from ..viz.tensorboard import TensorBoard
from .main import positive_float, positive_int
from .targets import dataset_name

__all__ = ["add_commands", "train_command"]


def add_commands(sub) -> None:
    """Add ``train`` to the ``cnnkit`` command."""
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


def train_command(args) -> int:
    if args.model not in models.list_models():
        raise UsageError(f"unknown model {args.model!r}; `cnnkit models` lists the zoo")
    recipe = recipe_for(args.model, args.dataset)
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    opt_name = args.optimizer or recipe.optimizer
    lr = args.lr or default_lr(opt_name, recipe)
    out = Path(args.out or f"runs/{args.model}-{args.dataset}")
    last = out / "last.safetensors"
    if args.resume and not last.exists():
        raise UsageError(f"--resume: no checkpoint to resume at {last}")

    config.manual_seed(args.seed)
    train_set, spec = get_dataset(dataset_name(args.dataset), True, args.data_dir, args.augment)
    test_set, _ = get_dataset(args.dataset, False, args.data_dir)
    if args.limit:
        train_set = Subset(train_set, np.arange(min(args.limit, len(train_set))))
    model_config = {"num_classes": len(spec.classes)}
    model = models.get_model(args.model, **model_config)
    _check_input(model, args.model, spec)
    loader_rng = np.random.default_rng(args.seed + 1)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=loader_rng)
    test_loader = DataLoader(test_set, batch_size=1000)
    opt = make_optimizer(opt_name, model.parameters(), recipe, lr)
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
    try:
        with no_grad(), nn.eval_mode(model):
            model(Tensor(np.zeros((1,) + spec.input_shape, np.float32)))
    except ShapeError as e:
        raise UsageError(f"model {name!r} cannot take {spec.input_shape} images: {e}") from None
