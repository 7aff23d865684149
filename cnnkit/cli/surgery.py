"""What ``cnnkit fcn`` and ``cnnkit prune`` do: model surgery on a trained checkpoint.

    cnnkit fcn CHECKPOINT [IMAGE] [--mnist-digits N] [--seed S] [-o heatmap.png]
    cnnkit prune CHECKPOINT --amount 0.5 [--criterion l1] [--layers conv] [--finetune-epochs E]
                            -o pruned.safetensors
    cnnkit prune CHECKPOINT --sweep 0.1,0.3,0.5,0.7,0.9 [--finetune-epochs E] [--plot sweep.png]

Each ``*_command(args)`` takes the parsed arguments of one sub-command and returns an
exit status; the helpers below it are plain library functions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import config
from .checkpoint import load_checkpoint, save_checkpoint
from .prune import conv_parameters, load_pruned, prune_channels
from .tensor import Tensor
from .transforms import read_sequence, to_fully_convolutional

__all__ = [
    "add_commands", "fcn_command", "prune_command", "compose_mnist_strip", "load_strip",
    "plot_score_map", "measure", "images_per_second", "finetune", "format_comparison",
]


def add_commands(sub) -> None:
    """Add ``fcn`` and ``prune`` to the ``cnnkit`` command."""
    from .cli import non_negative_int, positive_int

    f = sub.add_parser("fcn", help="run a classifier fully convolutionally over a wide image: a heat map")
    f.add_argument("checkpoint")
    f.add_argument("image", nargs="?", default=None, help="a PNG/JPEG (e.g. a row of handwritten digits)")
    f.add_argument("--mnist-digits", type=positive_int, default=None, metavar="N",
                   help="instead of IMAGE, put N random MNIST test digits side by side (28 x 28N)")
    f.add_argument("--indices", default=None, help="with --mnist-digits: comma-separated test indices")
    f.add_argument("--seed", type=int, default=0, help="picks the MNIST digits (default 0)")
    f.add_argument("--no-invert", action="store_true", help="never invert dark-on-light images")
    f.add_argument("--height", type=positive_int, default=None,
                   help="scale IMAGE to this height (default: the model's input height for one-channel "
                        "models, the image's own height, at least the model's, for colour models)")
    f.add_argument("-o", "--output", default="heatmap.png", help="heat map PNG (default heatmap.png)")
    f.set_defaults(handler=fcn_command)

    p = sub.add_parser("prune", help="remove conv channels, fine-tune, compare before and after")
    p.add_argument("checkpoint")
    p.add_argument("--amount", type=_fraction, default=None, help="share of each layer's channels to remove")
    p.add_argument("--criterion", choices=["l1", "l2", "random"], default="l1")
    p.add_argument("--layers", choices=["conv", "linear", "all"], default="conv",
                   help="whose channels to prune: conv layers (default), hidden Linear layers, or both")
    p.add_argument("--finetune-epochs", type=non_negative_int, default=1, metavar="E")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning peak learning rate (one-cycle)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=positive_int, default=None, help="fine-tune on the first N training images")
    p.add_argument("--eval-limit", type=positive_int, default=None, help="test on the first N test images")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-o", "--output", default=None, help="the pruned checkpoint (.safetensors)")
    p.add_argument("--sweep", default=None, metavar="A,B,...",
                   help="prune at each amount and plot accuracy against parameters kept")
    p.add_argument("--plot", default="prune_sweep.png", help="the sweep's plot (default prune_sweep.png)")
    p.set_defaults(handler=prune_command)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _checkpoint_info(path) -> tuple[Any, dict[str, Any], Any]:
    """(model, extra, checkpoint) of a zoo checkpoint, pruned or not."""
    ckpt = load_checkpoint(path)
    return load_pruned(path), ckpt.meta.get("extra", {}), ckpt


def _normalization(extra: dict[str, Any]) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, list[str]]:
    shape = tuple(int(v) for v in extra.get("input_shape", (1, 28, 28)))
    mean = np.asarray(extra.get("mean", (0.1307,)), np.float32).reshape(-1, 1, 1)
    std = np.asarray(extra.get("std", (0.3081,)), np.float32).reshape(-1, 1, 1)
    classes = list(extra.get("classes") or [str(i) for i in range(10)])
    return shape, mean, std, classes


# ------------------------------------------------------------------------------ fcn
def fcn_command(args) -> int:
    from .functional import softmax
    from .runner import UsageError

    if (args.image is None) == (args.mnist_digits is None):
        raise UsageError("give either IMAGE or --mnist-digits N")
    model, extra, ckpt = _checkpoint_info(args.checkpoint)
    shape, mean, std, classes = _normalization(extra)
    truth = None
    if args.mnist_digits is not None:
        if shape != (1, 28, 28):
            raise UsageError(f"--mnist-digits needs a model of 1x28x28 inputs, {args.checkpoint} takes {shape}")
        indices = None
        if args.indices:
            try:
                indices = [int(v) for v in args.indices.split(",")]
            except ValueError:
                raise UsageError(f"--indices expects comma-separated integers, got {args.indices!r}") from None
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
    probs = softmax(scores, dim=1).data[0]                                        # (K, OH, OW)
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
    plot_score_map(args.output, image, probs, fcn, classes, read, truth, title=f"{source}: fully convolutional "
                   f"{ckpt.model_name or type(model).__name__}")
    print(f"heat map: {args.output}")
    return 0


def compose_mnist_strip(
    n: int, rng: np.random.Generator, indices: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Put MNIST test digits side by side: image (1, 28, 28*n) in [0, 1] and their labels (n,)."""
    from .data import load_mnist

    images, labels = load_mnist("test")
    if indices is None:
        indices = rng.choice(len(images), size=n, replace=False)
    indices = np.asarray(indices)
    if indices.min() < 0 or indices.max() >= len(images):
        raise ValueError(f"MNIST test indices must lie in [0, {len(images)}), got {indices.tolist()}")
    strip = np.concatenate(list(images[indices]), axis=1).astype(np.float32) / 255   # (28, 28*n)
    return strip[None], labels[indices]


def load_strip(
    path: str | os.PathLike, input_shape: tuple[int, int, int], invert: str = "auto", height: int | None = None,
) -> np.ndarray:
    """Load a PNG/JPEG as a model input in [0, 1], shape (C, H', W').

    One-channel (MNIST-style) models: dark-on-light images are inverted (``invert="auto"``),
    the ink's rows are scaled to 20/28 of ``height`` (default: the model's input height),
    as MNIST's digits, and centred, with a margin left and right. Three-channel models: the
    image is scaled to ``height`` (default: its own height, or the model's if larger).
    """
    from PIL import Image

    from .data import load_image

    C, H, W = input_shape
    img = load_image(path, "L" if C == 1 else "RGB")
    if C == 3:
        new_h = height or max(H, img.shape[0])
        width = max(W, round(img.shape[1] * new_h / img.shape[0]))
        resized = Image.fromarray(img).resize((width, new_h), Image.BILINEAR)
        return np.asarray(resized, np.float32).transpose(2, 0, 1) / 255
    if height is not None:
        H, W = height, round(W * height / H)
    arr = img.astype(np.float32) / 255
    if invert == "always" or (invert == "auto" and arr.mean() > 0.5):
        arr = 1.0 - arr
    rows = np.where((arr > 0.1 * max(arr.max(), 1e-6)).any(axis=1))[0]
    if len(rows) == 0:
        raise ValueError(f"{path}: the image has no ink")
    crop = arr[rows[0] : rows[-1] + 1]
    scale = (20 * H / 28) / crop.shape[0]
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS), np.float32) / 255
    margin = round(4 * W / 28)
    out = np.zeros((H, small.shape[1] + 2 * margin), np.float32)
    top = (H - small.shape[0]) // 2
    out[top : top + small.shape[0], margin : margin + small.shape[1]] = small
    if out.shape[1] < W:
        out = np.pad(out, ((0, 0), (0, W - out.shape[1])))
    return out[None]                                                              # (1, H, W')


def plot_score_map(
    path, image: np.ndarray, probs: np.ndarray, fcn, classes: list[str], read=None, truth=None,
    title: str = "",
) -> None:
    """Save the image above its per-position class probabilities, as a labelled heat map.

    Args:
        image: (C, H, W) in [0, 1].
        probs: (K, OH, OW) softmax of the score map.
        fcn: the FullyConvolutional model (window centres).
        read: ``read_sequence``'s result, drawn on both panels; truth: the true labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K, OH, OW = probs.shape
    C, H, W = image.shape
    ys, xs = fcn.window_centres((OH, OW))
    step = fcn.stride[1]
    fig_w = min(24.0, max(8.0, W / 18))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(fig_w, 2.0 + 0.32 * K + 0.06 * H), sharex=True,
                                      gridspec_kw={"height_ratios": [H / 10 + 1, K * 0.6 if OH == 1 else H / 10 + 1]})
    shown = image[0] if C == 1 else image.transpose(1, 2, 0)
    top.imshow(shown, cmap="gray", extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
    top.set_yticks([])
    top.set_title(title, fontsize=10)
    if OH == 1:
        extent = (xs[0] - step / 2, xs[-1] + step / 2, K - 0.5, -0.5)
        shown_map = bottom.imshow(probs[:, 0, :], aspect="auto", cmap="viridis", vmin=0, vmax=1,
                                  extent=extent, interpolation="nearest")
        bottom.set_yticks(range(K))
        bottom.set_yticklabels(classes[:K], fontsize=8)
        bottom.set_ylabel("class")
        best = probs[:, 0, :].argmax(axis=0)
        bottom.scatter(xs, best, s=6, c="white", marker="s", linewidths=0, label="most likely class")
        if read:
            for i, (k, _, j) in enumerate(read):
                if truth is None:
                    colour = "black"
                else:
                    colour = "forestgreen" if i < len(truth) and classes[k] == truth[i] else "red"
                top.text(xs[j], -1.5, classes[k], ha="center", va="bottom", fontsize=12, color=colour,
                         fontweight="bold")
                bottom.axvline(xs[j], color=colour, linewidth=0.8, linestyle=":")
            label = "read: " + " ".join(classes[k] for k, _, _ in read)
            if truth is not None:
                label += "    true: " + " ".join(truth)
            top.set_xlabel(label, fontsize=10)
            top.xaxis.set_label_position("top")
            top.set_ylim(H - 0.5, -6)
        bottom.legend(loc="upper right", fontsize=7, framealpha=0.6)
        fig.colorbar(shown_map, ax=bottom, label="softmax probability", fraction=0.02, pad=0.01)
    else:
        best = probs.argmax(axis=0)
        conf = probs.max(axis=0)
        extent = (xs[0] - step / 2, xs[-1] + step / 2, ys[-1] + step / 2, ys[0] - step / 2)
        shown_map = bottom.imshow(best, cmap="tab10" if K <= 10 else "tab20", vmin=-0.5, vmax=K - 0.5,
                                  alpha=np.clip(conf, 0.2, 1.0), extent=extent, interpolation="nearest")
        if OH * OW <= 400:
            for r in range(OH):
                for c in range(OW):
                    bottom.text(xs[c], ys[r], classes[best[r, c]][:4], ha="center", va="center", fontsize=7)
        bar = fig.colorbar(shown_map, ax=bottom, ticks=range(K), fraction=0.02, pad=0.01)
        bar.ax.set_yticklabels(classes[:K], fontsize=7)
        bottom.set_ylabel("window centre y (px)")
    bottom.set_xlabel(f"window centre x (px): {OW} positions at stride {step}, window {fcn.window[1]} px")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- prune
def prune_command(args) -> int:
    from .runner import UsageError

    if args.sweep is None and args.amount is None:
        raise UsageError("give --amount A (with -o PATH) or --sweep A,B,...")
    if args.sweep is None and args.output is None:
        raise UsageError("give -o PATH for the pruned checkpoint")
    model, extra, ckpt = _checkpoint_info(args.checkpoint)
    shape = tuple(int(v) for v in extra.get("input_shape", (1, 28, 28)))
    train_set, test_set = _datasets(extra, args.data_dir, args.limit, args.eval_limit)
    before = measure(model, shape, test_set)
    if args.sweep is not None:
        try:
            amounts = [_fraction(v) for v in args.sweep.split(",")]
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"--sweep: {e}") from None
        return _sweep(args, model, shape, before, amounts, train_set, test_set)

    start = time.perf_counter()
    pruned = prune_channels(model, args.amount, args.criterion, args.layers, input_shape=shape,
                            rng=np.random.default_rng(args.seed))
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
        "channels": _channel_counts(pruned),
    }
    save_checkpoint(args.output, pruned, model_name=ckpt.model_name, model_config=ckpt.model_config,
                    metrics={"test_accuracy": after["accuracy"]}, extra=pruned_extra)
    before["file"] = _weights_file_size(model, ckpt)
    after["file"] = os.path.getsize(args.output)
    print(format_comparison(before, after))
    print(f"pruned checkpoint: {args.output}")
    return 0


def _datasets(extra: dict[str, Any], data_dir, limit, eval_limit):
    from . import data
    from .data import Subset
    from .data import transforms as T
    from .runner import DATASETS

    name = extra.get("dataset", "mnist")
    spec = DATASETS[name]
    _, mean, std, _ = _normalization(extra)
    steps = T.Compose([T.ToTensor(), T.Normalize(tuple(mean.ravel()), tuple(std.ravel()))])
    cls = getattr(data, spec.cls)
    train_set = cls(root=data_dir, train=True, transform=steps)
    test_set = cls(root=data_dir, train=False, transform=steps)
    if limit:
        train_set = Subset(train_set, np.arange(min(limit, len(train_set))))
    if eval_limit:
        test_set = Subset(test_set, np.arange(min(eval_limit, len(test_set))))
    return train_set, test_set


def finetune(model, train_set, epochs: int, lr: float, batch_size: int = 64, seed: int = 0) -> None:
    """Train ``model`` for ``epochs`` epochs: SGD (Nesterov momentum 0.9, weight decay 5e-4), one-cycle lr."""
    from . import optim
    from .data import DataLoader
    from .train import fit

    if epochs <= 0:
        return
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=np.random.default_rng(seed + 1))
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=len(loader))
    fit(model, loader, epochs=epochs, optimizer=opt, scheduler=scheduler)
    model.eval()


def measure(model, input_shape, test_set) -> dict[str, Any]:
    """Parameters, conv parameters, MACs per image and test accuracy of ``model``."""
    from .data import DataLoader
    from .summary import summary
    from .train import evaluate

    macs = summary(model, input_shape, print_fn=None).total_macs
    accuracy = evaluate(model, DataLoader(test_set, batch_size=500), confusion=False)["accuracy"]
    return {
        "params": sum(p.size for p in model.parameters()),
        "conv_params": conv_parameters(model),
        "macs": int(macs),
        "accuracy": float(accuracy),
    }


def images_per_second(models: list, test_set, batch: int = 1000, repeats: int = 9) -> list[float]:
    """Inference throughput of each model on one batch of test images, interleaved, median of repeats."""
    x, _ = _first_batch(test_set, batch)
    times: list[list[float]] = [[] for _ in models]
    for m in models:
        m.eval()
    with config.no_grad():
        for m in models:                     # warm-up
            m(Tensor(x))
        for _ in range(repeats):
            for i, m in enumerate(models):
                start = time.perf_counter()
                m(Tensor(x))
                times[i].append(time.perf_counter() - start)
    return [len(x) / statistics.median(t) for t in times]


def _first_batch(test_set, batch: int) -> tuple[np.ndarray, np.ndarray]:
    from .data import DataLoader

    return next(iter(DataLoader(test_set, batch_size=min(batch, len(test_set)))))


def _channel_counts(model) -> dict[str, int]:
    from . import nn

    counts = {}
    for path, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            counts[path] = m.out_channels
        elif isinstance(m, nn.Linear):
            counts[path] = m.out_features
    return counts


def _weights_file_size(model, ckpt) -> int:
    """The size of ``model`` saved alone (training checkpoints also hold optimizer state)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        save_checkpoint(path, model, model_name=ckpt.model_name, model_config=ckpt.model_config,
                        extra=ckpt.meta.get("extra", {}))
        return path.stat().st_size


def format_comparison(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The before/after table of ``cnnkit prune``."""
    def ratio(key: str) -> str:
        return f"{after[key] / before[key]:.2f}x" if before.get(key) else ""

    rows = [
        ("parameters", f"{before['params']:,}", f"{after['params']:,}", ratio("params")),
        ("  in conv layers", f"{before['conv_params']:,}", f"{after['conv_params']:,}", ratio("conv_params")),
        ("MACs per image", f"{before['macs']:,}", f"{after['macs']:,}", ratio("macs")),
        ("test accuracy", f"{100 * before['accuracy']:.2f}%", f"{100 * after['accuracy']:.2f}%",
         f"{100 * (after['accuracy'] - before['accuracy']):+.2f} pp"),
    ]
    if "ips" in before:
        rows.append(("inference images/s (batch 1000)", f"{before['ips']:,.0f}", f"{after['ips']:,.0f}",
                     ratio("ips")))
    if "file" in before:
        rows.append(("file size (weights)", f"{before['file'] / 1024:,.1f} KiB", f"{after['file'] / 1024:,.1f} KiB",
                     ratio("file")))
    width = [max(len(r[i]) for r in rows + [("", "before", "after", "after/before")]) for i in range(4)]
    lines = [f"{'':<{width[0]}}  {'before':>{width[1]}}  {'after':>{width[2]}}  {'after/before':>{width[3]}}"]
    for r in rows:
        lines.append(f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]:>{width[2]}}  {r[3]:>{width[3]}}")
    return "\n".join(lines)


def _sweep(args, model, shape, before, amounts, train_set, test_set) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for amount in amounts:
        pruned = prune_channels(model, amount, args.criterion, args.layers, input_shape=shape,
                                rng=np.random.default_rng(args.seed))
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
    kept = [100 * r["params"] / before["params"] for _, r in rows]
    acc = [100 * r["accuracy"] for _, r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(kept, acc, "o-", label=f"pruned ({args.criterion}, {args.layers} layers), "
            f"{args.finetune_epochs} fine-tuning epoch(s)")
    for (amount, _), xk, ya in zip(rows, kept, acc, strict=True):
        ax.annotate(f"{amount:g}", (xk, ya), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.axhline(100 * before["accuracy"], color="gray", linestyle="--", linewidth=0.8)
    ax.plot([100], [100 * before["accuracy"]], "*", color="gray", markersize=10, label="original")
    ax.set_xlabel("parameters kept (% of the original)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"channel pruning of {Path(args.checkpoint).name} (labels: amount)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)
    print(f"plot: {args.plot}")
    return 0
