"""The picture commands: ``cnnkit visualize ...``, ``cnnkit kernels`` and ``cnnkit explain ...``.

    cnnkit visualize filters      CHECKPOINT|MODEL [--layer NAME] [-o filters.png]
    cnnkit visualize feature-maps CHECKPOINT|MODEL [IMAGE] [--layers NAME ...] [-o feature_maps.png]
    cnnkit visualize curves       RUN_DIR|log.csv [-o curves.png]
    cnnkit visualize graph        CHECKPOINT|MODEL [--level ops|layers] [-o graph.svg]
    cnnkit visualize saliency     CHECKPOINT|MODEL [IMAGE] [--class K] [-o saliency.png]
    cnnkit kernels [IMAGE] [--kernel NAME|all] [--stride S] [--padding P] [-o kernels.png]
    cnnkit explain conv --input 32x32x1 --filters 6 --kernel 5 [--plot FILE]
    cnnkit explain graph [--x 0.5] [--y 2.0] [-o toy_graph.svg]

CHECKPOINT|MODEL is a checkpoint file written by ``cnnkit train`` or the name of a zoo
model (random weights, seeded). Without IMAGE the commands use a built-in sample (an
MNIST digit for one-channel models, a generated scene for RGB ones). Each handler
parses nothing itself: it calls the library and prints what it wrote.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_commands", "Target", "load_target", "model_input", "read_history"]

# torchvision's ImageNet statistics for RGB zoo models; MNIST's for one-channel ones.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MNIST = ((0.1307,), (0.3081,))


def add_commands(sub) -> None:
    """Add visualize, kernels and explain to the ``cnnkit`` command."""
    from ..cli import non_negative_int, positive_int
    from .kernels import KERNELS, SAMPLES

    v = sub.add_parser("visualize", help="pictures of a model: filters, feature maps, curves, graph, "
                                         "saliency")
    vs = v.add_subparsers(dest="picture", metavar="PICTURE")
    vs.required = True

    def target_args(p, image: bool = False) -> None:
        p.add_argument("target", metavar="CHECKPOINT|MODEL", help="checkpoint file or zoo model name")
        if image:
            p.add_argument("image", nargs="?", default=None,
                           help="PNG/JPEG input (default: a built-in sample)")
            p.add_argument("--no-invert", action="store_true", help="never invert dark-on-light digit images")
        p.add_argument("--input-shape", default=None, help="C,H,W for a zoo model (default: the model's)")

    f = vs.add_parser("filters", help="a conv layer's filters on one colour scale")
    target_args(f)
    f.add_argument("--layer", default=None, help="conv layer path, e.g. features.3 (default: the first conv)")
    f.add_argument("--max-filters", type=positive_int, default=64)
    f.add_argument("-o", "--output", default="filters.png")
    f.set_defaults(handler=filters_command)

    m = vs.add_parser("feature-maps", help="the input, then what chosen layers make of it")
    target_args(m, image=True)
    m.add_argument("--layers", nargs="+", action="extend", default=None,
                   help="layer paths (space or comma separated; default: up to 8 image-shaped layers)")
    m.add_argument("--max-channels", type=positive_int, default=16, help="channels drawn per layer")
    m.add_argument("-o", "--output", default="feature_maps.png")
    m.set_defaults(handler=feature_maps_command)

    c = vs.add_parser("curves", help="loss and accuracy per epoch, training vs validation")
    c.add_argument("run", metavar="RUN_DIR", help="a `cnnkit train` run folder, its log.csv or a checkpoint")
    c.add_argument("-o", "--output", default="curves.png")
    c.set_defaults(handler=curves_command)

    g = vs.add_parser("graph", help="the computational graph of one forward pass (Graphviz)")
    target_args(g)
    g.add_argument("--level", choices=["ops", "layers"], default="ops",
                   help="ops: every op with parameters as inputs; layers: one node per layer call")
    g.add_argument("-o", "--output", default="graph.svg", help=".svg/.png/.pdf (needs Graphviz) or .dot")
    g.set_defaults(handler=graph_command)

    s = vs.add_parser("saliency", help="gradient of the top class w.r.t. the input pixels")
    target_args(s, image=True)
    s.add_argument("--class", dest="target_class", type=int, default=None,
                   help="class index (default: the top class)")
    s.add_argument("-o", "--output", default="saliency.png")
    s.set_defaults(handler=saliency_command)

    k = sub.add_parser("kernels", help="classic image kernels (edges, blur, ...) applied with conv2d")
    k.add_argument("image", nargs="?", default=None, help="PNG/JPEG (default: the built-in --sample)")
    k.add_argument("--kernel", default="edge", choices=[*KERNELS, "all"])
    k.add_argument("--stride", type=positive_int, default=1)
    k.add_argument("--padding", type=non_negative_int, default=0)
    k.add_argument("--gray", action="store_true", help="convert the image to grayscale first")
    k.add_argument("--sample", choices=list(SAMPLES), default="scene",
                   help="built-in image when no IMAGE is given")
    k.add_argument("--max-side", type=positive_int, default=512, help="shrink larger images to this side")
    k.add_argument("-o", "--output", default="kernels.png")
    k.set_defaults(handler=kernels_command)

    e = sub.add_parser("explain", help="the articles' demonstrations: conv as a dense layer, a toy graph")
    es = e.add_subparsers(dest="topic", metavar="TOPIC")
    es.required = True
    ec = es.add_parser("conv", help="a convolution vs the fully connected layer it equals")
    ec.add_argument("--input", required=True, help="H x W x C, e.g. 32x32x1 (or HxW for one channel)")
    ec.add_argument("--filters", type=positive_int, required=True)
    ec.add_argument("--kernel", required=True, help="K or KHxKW")
    ec.add_argument("--stride", type=positive_int, default=1)
    ec.add_argument("--padding", type=non_negative_int, default=0)
    ec.add_argument("--dilation", type=positive_int, default=1)
    ec.add_argument("--groups", type=positive_int, default=1)
    ec.add_argument("--plot", default=None, help="also draw the dense matrix (small layers) to this file")
    ec.set_defaults(handler=explain_conv_command)
    eg = es.add_parser("graph", help="the graph of z = cos(x) * sin(x) + x / y with values and gradients")
    eg.add_argument("--x", type=float, default=0.5)
    eg.add_argument("--y", type=float, default=2.0)
    eg.add_argument("-o", "--output", default="toy_graph.svg")
    eg.set_defaults(handler=explain_graph_command)


# --------------------------------------------------------------------------- what the commands act on
@dataclass
class Target:
    """A model to look inside, with what is needed to feed it an image.

    Attributes:
        label: for titles: the checkpoint's file name and model, or "resnet18 (random weights)".
        input_shape: (C, H, W); mean, std: per-channel normalization; classes: class names.
    """

    model: Any
    label: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]


def _parse_shape(text: str) -> tuple[int, int, int]:
    from ..runner import UsageError

    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise UsageError(f"--input-shape expects C,H,W with positive integers, got {text!r}")
    return shape  # type: ignore[return-value]


def _zoo_input_shape(name: str | None) -> tuple[int, int, int]:
    """The (C, H, W) a zoo model was designed for (``cnnkit.runner.default_input_shape``)."""
    from ..runner import default_input_shape

    return tuple(default_input_shape(name or ""))  # type: ignore[return-value]


def load_target(spec: str, input_shape: str | None = None) -> Target:
    """A checkpoint file (trained weights) or a zoo model name (random weights, seed 0).

    Raises:
        CheckpointError: a missing, unreadable or foreign checkpoint file.
        UsageError: neither a file nor a zoo name (the message lists the zoo).
    """
    from .. import models
    from ..checkpoint import load, load_checkpoint
    from ..runner import UsageError

    path = Path(spec)
    zoo = models.list_models()
    if path.is_dir():
        raise UsageError(f"{spec} is a folder; pass a checkpoint file in it "
                         f"(e.g. {path / 'last.safetensors'})")
    if path.is_file() or (spec.lower() not in zoo and (path.suffix or "/" in spec)):
        ckpt = load_checkpoint(path)  # a missing file: "no such checkpoint file"
        extra = ckpt.meta.get("extra", {})
        model = load(path)
        shape = tuple(extra.get("input_shape") or _zoo_input_shape(ckpt.model_name))
        mean, std = tuple(extra.get("mean", ())), tuple(extra.get("std", ()))
        classes = [str(c) for c in extra.get("classes", ())]
        dataset = f", {extra['dataset']}" if "dataset" in extra else ""
        label = f"{path.name} ({ckpt.model_name}{dataset})"
    elif spec.lower() in zoo:
        name = spec.lower()
        model = models.get_model(name, rng=np.random.default_rng(0))
        model.eval()
        shape = _zoo_input_shape(name)
        mean, std, classes = (), (), []
        label = f"{name} (random weights)"
    else:
        raise UsageError(
            f"{spec!r} is neither a checkpoint file nor a zoo model; zoo models: {', '.join(zoo)}"
        )
    if input_shape:
        shape = _parse_shape(input_shape)
    C = shape[0]
    if len(mean) != C or len(std) != C:
        mean, std = _IMAGENET if C == 3 else (_MNIST if C == 1 else ((0.5,) * C, (0.5,) * C))
    return Target(model, label, shape, mean, std, classes)  # type: ignore[arg-type]


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) in [0, 1] -> (C, H, W), bilinear."""
    from PIL import Image

    if image.shape[1:] == tuple(hw):
        return image
    H, W = hw
    # a float32 array opens as a 32-bit float ("F") image: no rounding to 8 bits before resizing
    chans = [np.asarray(Image.fromarray(c.astype(np.float32)).resize((W, H), Image.BILINEAR)) for c in image]
    return np.clip(np.stack(chans), 0, 1).astype(np.float32)          # (C, H, W)


def _crop_to_aspect(image: np.ndarray, ratio: float) -> np.ndarray:
    """Centre-crop (C, h, w) to height/width = ratio, so resizing does not distort it."""
    _, h, w = image.shape
    if h / w > ratio:
        keep = max(1, round(w * ratio))
        top = (h - keep) // 2
        return image[:, top : top + keep]
    keep = max(1, round(h / ratio))
    left = (w - keep) // 2
    return image[:, :, left : left + keep]


def model_input(target: Target, image: str | None, invert: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Return (picture (C, H, W) in [0, 1], model input (1, C, H, W) normalized).

    Args:
        image: a PNG/JPEG path (prepared as ``cnnkit predict`` does), or None for the
            built-in sample: an MNIST digit for one channel, the generated scene otherwise.

    Raises:
        FileNotFoundError, ValueError: the image is missing or unreadable.
    """
    from ..runner import prepare_image
    from .kernels import sample_image, to_grayscale

    C, H, W = target.input_shape
    if image is not None:
        raw = prepare_image(image, (C, H, W), invert)
    else:
        sample = sample_image("digit" if C == 1 else "scene")
        if C == 1 and sample.shape[0] == 3:
            sample = to_grayscale(sample)
        if C not in (1, sample.shape[0]):
            sample = np.repeat(sample.mean(axis=0, keepdims=True), C, axis=0)
        raw = _resize(_crop_to_aspect(sample, H / W), (H, W))
    mean = np.asarray(target.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(target.std, np.float32).reshape(-1, 1, 1)
    return raw, ((raw - mean) / std)[None].astype(np.float32)        # (1, C, H, W)


def _class_name(target: Target, k: int) -> str:
    return target.classes[k] if k < len(target.classes) else str(k)


def _wrote(path: Path | str) -> None:
    print(f"wrote {path}")


# --------------------------------------------------------------------------- visualize
def filters_command(args) -> int:
    from .capture import find_conv
    from .plots import plot_filters, save_figure

    t = load_target(args.target, args.input_shape)
    path, conv = find_conv(t.model, args.layer)
    fig = plot_filters(conv.weight.data, title=f"{t.label}\n{path} = {conv!r}", max_filters=args.max_filters)
    _wrote(save_figure(fig, args.output))
    return 0


def feature_maps_command(args) -> int:
    from ..runner import UsageError
    from .capture import capture, default_layers, leaf_layers
    from .plots import plot_feature_maps, save_figure

    t = load_target(args.target, args.input_shape)
    raw, x = model_input(t, args.image, "never" if args.no_invert else "auto")
    if args.layers:
        wanted = [n for item in args.layers for n in item.split(",") if n]
        if not wanted:
            raise UsageError("--layers needs at least one layer name")
        found, out = capture(t.model, x, wanted)
    else:
        found, out = capture(t.model, x, leaf_layers(t.model))
        chosen = default_layers(found)
        found = [f for f in found if f[0] in chosen]
        print(f"layers: {', '.join(chosen)} (choose others with --layers)")
    calls: dict[str, int] = {}
    maps = []
    for path, kind, a in found:
        calls[path] = calls.get(path, 0) + 1
        call = f" (call {calls[path]})" if calls[path] > 1 else ""
        maps.append((f"{path}{call}  {kind}  {tuple(a.shape)}", a))
    title = t.label + _prediction_note(t, out)
    fig = plot_feature_maps(raw, maps, title=title, max_channels=args.max_channels)
    _wrote(save_figure(fig, args.output))
    return 0


def _prediction_note(t: Target, out: np.ndarray) -> str:
    if out.ndim != 2:
        return ""
    logits = out[0] - out[0].max()
    p = np.exp(logits) / np.exp(logits).sum()
    k = int(p.argmax())
    return f": predicts {_class_name(t, k)} ({100 * p[k]:.1f}%)"


def read_history(run: str | Path) -> tuple[list[int], dict[str, list[float]]]:
    """Read per-epoch logs from a run folder (its log.csv, else its last checkpoint), a CSV or a checkpoint.

    Raises:
        FileNotFoundError: nothing to read there. ValueError: the log has no rows.
    """
    from ..checkpoint import load_checkpoint

    run = Path(run)
    if run.is_dir():
        candidates = [run / "log.csv", run / "last.safetensors"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{run}: no log.csv or last.safetensors in this run folder")
        run = found
    elif not run.exists():
        raise FileNotFoundError(f"{run}: no such run folder or log file")
    if run.suffix == ".safetensors":
        history = load_checkpoint(run).meta.get("history", {})
        logs = {k: [float(v) for v in vs] for k, vs in history.get("history", {}).items()}
        epochs = [int(e) + 1 for e in history.get("epoch", [])]
    else:
        try:
            with open(run, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except UnicodeDecodeError:
            raise ValueError(f"{run}: not a CSV log (not text)") from None
        logs: dict[str, list[float]] = {}
        for row in rows:
            for key, value in row.items():
                if key is None or value in (None, ""):
                    continue
                try:
                    logs.setdefault(key, []).append(float(value))
                except ValueError:
                    raise ValueError(f"{run}: column {key!r} holds {value!r}, not a number") from None
        epochs = [int(e) for e in logs.pop("epoch", [])]
    if not logs or not any(logs.values()):
        raise ValueError(f"{run}: the log has no epochs yet")
    return epochs or list(range(1, max(len(v) for v in logs.values()) + 1)), logs


def curves_command(args) -> int:
    from .plots import plot_curves, save_figure

    epochs, logs = read_history(args.run)
    plural = "s" if len(epochs) != 1 else ""
    fig = plot_curves(logs, epochs=epochs, title=f"{args.run}: {len(epochs)} epoch{plural}")
    shown = ("loss", "accuracy", "val_loss", "val_accuracy")
    summary = ", ".join(f"{k} {v[-1]:.4g}" for k, v in logs.items() if k in shown)
    print(f"last epoch ({epochs[-1]}): {summary}")
    _wrote(save_figure(fig, args.output))
    return 0


def _write_graph(dot_text: str, output: str) -> None:
    from .graph import render_dot

    out = Path(output)
    if out.suffix.lower() in (".dot", ".gv"):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(dot_text)
        _wrote(out)
        return
    dot_path = out.with_suffix(".dot")
    dot_path.parent.mkdir(parents=True, exist_ok=True)
    dot_path.write_text(dot_text)
    _wrote(dot_path)
    if render_dot(dot_text, out) is None:
        print(f"Graphviz 'dot' is not installed, so {out} was not rendered; install it (Debian/Ubuntu: "
              f"apt-get install graphviz) or paste {dot_path} into any Graphviz viewer", file=sys.stderr)
        return
    _wrote(out)


def graph_command(args) -> int:
    from .graph import graph_to_dot, layer_graph_to_dot, model_graph

    t = load_target(args.target, args.input_shape)
    graph = model_graph(t.model, t.input_shape)
    n_params = sum(1 for n in graph.tensors.values() if n.kind == "parameter")
    title = f"{t.label}: one forward pass of a {t.input_shape} input"
    if args.level == "ops":
        text = graph_to_dot(graph, title=title)
    else:
        text = layer_graph_to_dot(graph, t.model, title=title)
    print(f"{len(graph.ops)} ops, {n_params} parameter tensors")
    _write_graph(text, args.output)
    return 0


def saliency_command(args) -> int:
    from ..explain import saliency
    from .plots import plot_saliency, save_figure

    t = load_target(args.target, args.input_shape)
    raw, x = model_input(t, args.image, "never" if args.no_invert else "auto")
    result = saliency(t.model, x[0], target=args.target_class)
    name = _class_name(t, result.target)
    p = result.probabilities[result.target]
    print(f"class {name}: probability {100 * p:.1f}%, score (logit) {result.score:.4g}")
    fig = plot_saliency(raw, result.map, title=f"{t.label}: saliency of class {name} ({100 * p:.1f}%)")
    _wrote(save_figure(fig, args.output))
    return 0


# --------------------------------------------------------------------------- kernels
def kernels_command(args) -> int:
    from .kernels import KERNELS, apply_kernel, load_image, output_size_formula, sample_image, to_grayscale
    from .plots import plot_kernel, plot_kernel_gallery, save_figure

    if args.image is not None:
        image = load_image(args.image, gray=args.gray, max_side=args.max_side)
        source = args.image
    else:
        image = sample_image(args.sample)
        image = to_grayscale(image) if args.gray else image
        source = f"built-in {args.sample}"
    C, H, W = image.shape
    names = list(KERNELS) if args.kernel == "all" else [args.kernel]
    results = []
    for name in names:
        kernel = KERNELS[name]
        out = apply_kernel(image, kernel, args.stride, args.padding)
        results.append((name, kernel, out))
        KH, KW = kernel.shape
        print(f"{name}: input {H}x{W}x{C}, kernel {KH}x{KW}, stride {args.stride}, padding {args.padding}")
        print(f"  output height (H - F + 2P)/S + 1: {output_size_formula(H, KH, args.padding, args.stride)}")
        print(f"  output width  (W - F + 2P)/S + 1: {output_size_formula(W, KW, args.padding, args.stride)}")
        print(f"  feature map {out.shape[1]}x{out.shape[2]}x{out.shape[0]}, "
              f"values in [{out.min():.3g}, {out.max():.3g}]")
    if len(results) == 1:
        name, kernel, out = results[0]
        caption = (f"{source}: cnnkit conv2d (cross-correlation), stride {args.stride}, "
                   f"padding {args.padding}: "
                   f"{output_size_formula(H, kernel.shape[0], args.padding, args.stride)} rows, "
                   f"{output_size_formula(W, kernel.shape[1], args.padding, args.stride)} columns")
        fig = plot_kernel(image, kernel, out, name=name, caption=caption)
    else:
        fig = plot_kernel_gallery(image, results, caption=f"{source}: every kernel, stride {args.stride}, "
                                                         f"padding {args.padding}")
    _wrote(save_figure(fig, args.output))
    return 0


# --------------------------------------------------------------------------- explain
def _parse_hwc(text: str) -> tuple[int, int, int]:
    from ..runner import UsageError

    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 2:
        parts.append(1)
    if len(parts) != 3 or min(parts) <= 0:
        raise UsageError(f"--input expects HxWxC (e.g. 32x32x1) with positive integers, got {text!r}")
    H, W, C = parts
    return C, H, W


def _parse_kernel(text: str) -> tuple[int, int]:
    from ..runner import UsageError

    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise UsageError(f"--kernel expects K or KHxKW with positive integers, got {text!r}")
    return parts[0], parts[1]


def explain_conv_command(args) -> int:
    from .. import nn
    from ..explain import conv_as_dense, conv_stats

    C, H, W = _parse_hwc(args.input)
    kernel = _parse_kernel(args.kernel)
    stats = conv_stats((C, H, W), args.filters, kernel, args.stride, args.padding, args.dilation, args.groups)
    print(stats.report())
    if args.plot:
        from .plots import plot_dense_conv, save_figure

        conv = nn.Conv2d(C, args.filters, kernel, args.stride, args.padding, args.dilation, args.groups,
                         rng=np.random.default_rng(0))
        dense = conv_as_dense(conv, (C, H, W))
        filters = f"{args.filters} filter{'s' if args.filters > 1 else ''}"
        title = f"input {H}x{W}x{C}, {filters} {kernel[0]}x{kernel[1]}: the convolution as a dense layer"
        _wrote(save_figure(plot_dense_conv(dense, title=title), args.plot))
    return 0


def explain_graph_command(args) -> int:
    from ..explain import toy_graph

    g = toy_graph(args.x, args.y)
    print(f"z = cos(x) * sin(x) + x / y at x = {args.x:g}, y = {args.y:g}")
    print(f"{'node':<12} {'value':>10} {'dz/dnode':>10}")
    for name, t in g.tensors.items():
        print(f"{name:<12} {float(t.data):>10.5f} {float(t.grad):>10.5f}")
    print(f"check: dz/dx = cos(2x) + 1/y = {np.cos(2 * args.x) + 1 / args.y:.5f}, "
          f"dz/dy = -x/y^2 = {-args.x / args.y ** 2:.5f}")
    _write_graph(g.to_dot(), args.output)
    return 0
