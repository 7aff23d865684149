"""``cnnkit fcn`` and ``cnnkit prune``: model surgery on a trained checkpoint.

    cnnkit fcn CHECKPOINT [IMAGE] [--mnist-digits N] [--seed S] [-o heatmap.png]
    cnnkit prune CHECKPOINT --amount 0.5 [--criterion l1] [--layers conv] [--finetune-epochs E]
                            -o pruned.safetensors
    cnnkit prune CHECKPOINT --sweep 0.1,0.3,0.5,0.7,0.9 [--finetune-epochs E] [--plot sweep.png]

Each ``*_command(args)`` takes the parsed arguments of one sub-command and returns an
exit status; the work is done by ``cnnkit.surgery`` (conversion, pruning, comparison),
``cnnkit.data`` (strips of digits) and ``cnnkit.viz`` (heat maps, the sweep's plot).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import config
from ..data import Subset, compose_mnist_strip, get_dataset, load_strip
from ..errors import UsageError
from ..io.checkpoint import load_checkpoint, save
from ..surgery.compare import channel_counts, format_comparison, images_per_second, measure, weights_file_size
from ..surgery.fcn import to_fully_convolutional
from ..surgery.prune import prune_channels
from ..surgery.sequence import read_sequence
from ..tensor import Tensor
from ..train.datasets import folder_data
from ..train.recipes import finetune
from ..viz.plots import save_figure
from ..viz.surgery_plots import plot_prune_sweep, plot_score_map
from .main import comma_list, fraction, non_negative_int, positive_float, positive_int
from .targets import checkpoint_inputs, checkpoint_task, dataset_name, file_preprocessing

__all__ = ["add_commands", "fcn_command", "prune_command"]


def add_commands(sub) -> None:
    """Add ``fcn`` and ``prune`` to the ``cnnkit`` command."""
    f = sub.add_parser("fcn", help="run a classifier fully convolutionally over a wide image: a heat map")
    f.add_argument("checkpoint")
    f.add_argument("image", nargs="?", default=None, help="a PNG/JPEG (e.g. a row of handwritten digits)")
    f.add_argument("--mnist-digits", type=positive_int, default=None, metavar="N",
                   help="instead of IMAGE, put N random MNIST test digits side by side (28 x 28N)")
    f.add_argument("--indices", type=comma_list(non_negative_int), default=None,
                   help="with --mnist-digits: comma-separated test indices")
    f.add_argument("--seed", type=non_negative_int, default=0, help="picks the MNIST digits (default 0)")
    f.add_argument("--no-invert", action="store_true", help="never invert dark-on-light images")
    f.add_argument("--height", type=positive_int, default=None,
                   help="scale IMAGE to this height (default: the model's input height for one-channel "
                        "models, the image's own height, at least the model's, for colour models)")
    f.add_argument("-o", "--output", default="heatmap.png", help="heat map PNG (default heatmap.png)")
    f.set_defaults(handler=fcn_command)

    p = sub.add_parser("prune", help="remove conv channels, fine-tune, compare before and after")
    p.add_argument("checkpoint")
    p.add_argument("--amount", type=fraction, default=None, help="share of each layer's channels to remove")
    p.add_argument("--criterion", choices=["l1", "l2", "random"], default="l1")
    p.add_argument("--layers", choices=["conv", "linear", "all"], default="conv",
                   help="whose channels to prune: conv layers (default), hidden Linear layers, or both")
    p.add_argument("--finetune-epochs", type=non_negative_int, default=1, metavar="E")
    p.add_argument("--lr", type=positive_float, default=0.01, help="fine-tuning peak learning rate (one-cycle)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--limit", type=positive_int, default=None, help="fine-tune on the first N training images")
    p.add_argument("--eval-limit", type=positive_int, default=None, help="test on the first N test images")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-o", "--output", default=None, help="the pruned checkpoint (.safetensors)")
    p.add_argument("--sweep", type=comma_list(fraction), default=None, metavar="A,B,...",
                   help="prune at each amount and plot accuracy against parameters kept")
    p.add_argument("--plot", default="prune_sweep.png", help="the sweep's plot (default prune_sweep.png)")
    p.set_defaults(handler=prune_command)


def _checkpoint_info(path) -> tuple[Any, dict[str, Any], Any]:
    """(model, extra, checkpoint) of a zoo checkpoint, pruned or not."""
    ckpt = load_checkpoint(path)
    return ckpt.build_model(), ckpt.extra, ckpt


# ------------------------------------------------------------------------------ fcn
def fcn_command(args) -> int:
    if (args.image is None) == (args.mnist_digits is None):
        raise UsageError("give either IMAGE or --mnist-digits N")
    model, extra, ckpt = _checkpoint_info(args.checkpoint)
    shape, mean, std, classes = checkpoint_inputs(extra, ckpt.model_name)
    truth = None
    if args.mnist_digits is not None:
        if shape != (1, 28, 28):
            raise UsageError(f"--mnist-digits needs a model of 1x28x28 inputs, {args.checkpoint} takes {shape}")
        indices = args.indices
        if indices is not None:
            if len(indices) != args.mnist_digits:
                raise UsageError(f"--indices gives {len(indices)} indices for --mnist-digits {args.mnist_digits}")
        image, labels = compose_mnist_strip(args.mnist_digits, np.random.default_rng(args.seed), indices)
        truth = [classes[int(t)] for t in labels]
        source = f"{args.mnist_digits} MNIST test digits"
    else:
        image = load_strip(args.image, shape, invert="never" if args.no_invert else "auto", height=args.height)
        source = args.image
    fcn = to_fully_convolutional(model, shape)
    x = Tensor(((image - mean) / std)[None].astype(np.float32))                   # (1, C, H, W)
    start = time.perf_counter()
    with config.no_grad():
        scores = fcn(x)                                                           # (1, K, OH, OW)
    elapsed = time.perf_counter() - start
    task = checkpoint_task(extra, scores.shape[1])
    probs = task.probabilities(scores.data)[0]    # (K, OH, OW): softmax, or the sigmoid of one logit
    K, OH, OW = probs.shape
    print(f"{source}: input {image.shape[1]}x{image.shape[2]}, one pass -> {OH}x{OW} positions at stride "
          f"{fcn.stride[1]} ({1000 * elapsed:.1f} ms)")
    read = None
    if OH == 1 and image.shape[0] == 1:
        ys, xs = fcn.window_centres((OH, OW))
        ink = np.where(image[0] > 0.2, image[0], 0).sum(axis=0)                    # (W,)
        read = read_sequence(probs[:, 0, :], xs, ink, char_width=20 * shape[2] / 28)
        print("reads (left to right): " + " ".join(classes[k] for k, _, _ in read))
        if truth is not None:
            correct = sum(classes[k] == t for (k, _, _), t in zip(read, truth, strict=False))
            print("true:                  " + " ".join(truth))
            print(f"{correct} of {len(truth)} correct" + ("" if len(read) == len(truth) else
                                                          f" ({len(read)} symbols found)"))
    else:
        best = probs.argmax(axis=0)
        for row in best:
            print(" ".join(f"{classes[k]:>3}" for k in row))
    fig = plot_score_map(image, probs, fcn, classes, read, truth, title=f"{source}: fully convolutional "
                         f"{ckpt.model_name or type(model).__name__}")
    save_figure(fig, args.output)
    print(f"heat map: {args.output}")
    return 0


# ---------------------------------------------------------------------------- prune
def prune_command(args) -> int:
    if args.sweep is None and args.amount is None:
        raise UsageError("give --amount A (with -o PATH) or --sweep A,B,...")
    if args.sweep is None and args.output is None:
        raise UsageError("give -o PATH for the pruned checkpoint")
    model, extra, ckpt = _checkpoint_info(args.checkpoint)
    shape, _, _, _ = checkpoint_inputs(extra, ckpt.model_name)
    train_set, test_set = _datasets(extra, args.data_dir, args.limit, args.eval_limit, ckpt.model_name)
    before = measure(model, shape, test_set)
    if args.sweep is not None:
        return _sweep(args, model, shape, before, args.sweep, train_set, test_set)

    start = time.perf_counter()
    pruned = prune_channels(model, args.amount, args.criterion, args.layers, input_shape=shape,
                            generator=np.random.default_rng(args.seed))
    print(f"pruned {100 * args.amount:g}% of the channels of every {args.layers} layer (criterion "
          f"{args.criterion}) in {time.perf_counter() - start:.2f}s; fine-tuning {args.finetune_epochs} epoch(s)",
          flush=True)
    finetune(pruned, train_set, args.finetune_epochs, args.lr, args.batch_size, args.seed)
    after = measure(pruned, shape, test_set)
    before["ips"], after["ips"] = images_per_second([model, pruned], test_set)
    pruned_extra = dict(extra)
    pruned_extra["pruned"] = {
        "from": str(args.checkpoint), "amount": args.amount, "criterion": args.criterion,
        "layers": args.layers, "finetune_epochs": args.finetune_epochs, "lr": args.lr,
        "channels": channel_counts(pruned),
    }
    save(pruned, args.output, model_name=ckpt.model_name, model_config=ckpt.model_config,
                    metrics={"test_accuracy": after["accuracy"]}, extra=pruned_extra)
    before["file"] = weights_file_size(model, ckpt)
    after["file"] = os.path.getsize(args.output)
    print(format_comparison(before, after))
    print(f"pruned checkpoint: {args.output}")
    return 0


def _datasets(extra: dict[str, Any], data_dir, limit, eval_limit, model_name=None):
    """The training and test splits of the checkpoint's dataset, read as it was trained.

    A checkpoint trained on a folder of images gets that folder again, with its stored
    preprocessing and split: the training images, and its test/ images (or, without them,
    its validation images) to measure.
    """
    source = extra.get("source", {})
    if source.get("kind") == "folder":
        spec = file_preprocessing(extra)
        data = folder_data(data_dir or source["path"], model=model_name, image_size=spec.size[0],
                           channels=spec.channels, val_split=source.get("val_split"), resize=spec.resize,
                           normalization=(spec.mean, spec.std, "the checkpoint's"), option="the checkpoint's data folder")
        train_set, test_set = data.train, data.test if data.test is not None else data.val
        if test_set is None:
            raise UsageError(f"{source['path']} has no test/ images and no validation share to measure on")
        print(f"data: {data.source['path']}: training {len(train_set):,} images, measuring on "
              f"{'test/' if data.test is not None else 'the validation share'} ({len(test_set):,} images)")
    else:
        name = dataset_name(extra.get("dataset", "mnist"))
        _, mean, std, _ = checkpoint_inputs(extra, model_name)
        norm = {"mean": tuple(mean.ravel()), "std": tuple(std.ravel())}
        train_set, _ = get_dataset(name, True, data_dir, **norm)
        test_set, _ = get_dataset(name, False, data_dir, **norm)
    if limit:
        train_set = Subset(train_set, np.arange(min(limit, len(train_set))))
    if eval_limit:
        test_set = Subset(test_set, np.arange(min(eval_limit, len(test_set))))
    return train_set, test_set


def _sweep(args, model, shape, before, amounts, train_set, test_set) -> int:
    rows = []
    for amount in amounts:
        pruned = prune_channels(model, amount, args.criterion, args.layers, input_shape=shape,
                                generator=np.random.default_rng(args.seed))
        finetune(pruned, train_set, args.finetune_epochs, args.lr, args.batch_size, args.seed)
        after = measure(pruned, shape, test_set)
        rows.append((amount, after))
        print(f"amount {amount:.2f}: {after['params']:,} parameters ({100 * after['params'] / before['params']:.1f}% "
              f"kept), test accuracy {100 * after['accuracy']:.2f}%", flush=True)
    print(f"{'amount':>6}  {'parameters':>10}  {'kept':>6}  {'conv params':>11}  {'MACs':>10}  {'accuracy':>8}")
    print(f"{0:>6.2f}  {before['params']:>10,}  {100:>5.1f}%  {before['conv_params']:>11,}  "
          f"{before['macs']:>10,}  {100 * before['accuracy']:>7.2f}%")
    for amount, r in rows:
        print(f"{amount:>6.2f}  {r['params']:>10,}  {100 * r['params'] / before['params']:>5.1f}%  "
              f"{r['conv_params']:>11,}  {r['macs']:>10,}  {100 * r['accuracy']:>7.2f}%")
    fig = plot_prune_sweep(
        before, rows,
        label=f"pruned ({args.criterion}, {args.layers} layers), {args.finetune_epochs} fine-tuning epoch(s)",
        title=f"channel pruning of {Path(args.checkpoint).name} (labels: amount)",
    )
    save_figure(fig, args.plot)
    print(f"plot: {args.plot}")
    return 0
