"""``cnnkit visualize ...`` and ``cnnkit kernels``: pictures of a model and of image kernels.

    cnnkit visualize filters      CHECKPOINT|MODEL [--layer NAME] [-o filters.png]
    cnnkit visualize feature-maps CHECKPOINT|MODEL [IMAGE] [--layers NAME ...] [-o feature_maps.png]
    cnnkit visualize curves       RUN_DIR|log.csv [-o curves.png]
    cnnkit visualize graph        CHECKPOINT|MODEL [--level ops|layers] [-o graph.svg]
    cnnkit visualize saliency     CHECKPOINT|MODEL [IMAGE] [--class K] [-o saliency.png]
    cnnkit kernels [IMAGE] [--kernel NAME|all] [--stride S] [--padding P] [-o kernels.png]

CHECKPOINT|MODEL is a checkpoint file written by ``cnnkit train`` or the name of a zoo
model (random weights, seeded). Without IMAGE the commands use a built-in sample (an
MNIST digit for one-channel models, a generated scene for RGB ones). Each handler
parses nothing itself: it calls the library and prints what it wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..explain.capture import capture, default_layers, find_conv, leaf_layers
from ..explain.graph import model_graph
from ..explain.saliency import saliency
from ..functional.args import output_size_formula
from ..train.history import read_history
from ..viz.dot import graph_to_dot, layer_graph_to_dot, render_dot
from ..viz.image_filters import (
    KERNELS,
    SAMPLES,
    apply_kernel,
    load_image,
    sample_image,
    to_grayscale,
)
from ..viz.plots import (
    plot_curves,
    plot_feature_maps,
    plot_filters,
    plot_kernel,
    plot_kernel_gallery,
    plot_saliency,
    save_figure,
)
from .main import non_negative_int, positive_int
from .targets import Target, class_name, input_shape_option, load_target, model_input, wrote

__all__ = ["add_commands", "write_graph"]


def add_commands(sub) -> None:
    """Add ``visualize`` and ``kernels`` to the ``cnnkit`` command."""
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
        p.add_argument("--input-shape", type=input_shape_option, default=None, help="C,H,W for a zoo model (default: the model's)")

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
    s.add_argument("--class", dest="target_class", type=non_negative_int, default=None,
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


# --------------------------------------------------------------------------- visualize
def filters_command(args) -> int:
    t = load_target(args.target, args.input_shape)
    path, conv = find_conv(t.model, args.layer)
    fig = plot_filters(conv.weight.data, title=f"{t.label}\n{path} = {conv!r}", max_filters=args.max_filters)
    wrote(save_figure(fig, args.output))
    return 0


def feature_maps_command(args) -> int:

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
    wrote(save_figure(fig, args.output))
    return 0


def _prediction_note(t: Target, out: np.ndarray) -> str:
    if out.ndim != 2:
        return ""
    logits = out[0] - out[0].max()
    p = np.exp(logits) / np.exp(logits).sum()
    k = int(p.argmax())
    return f": predicts {class_name(t, k)} ({100 * p[k]:.1f}%)"


def curves_command(args) -> int:

    epochs, logs = read_history(args.run)
    plural = "s" if len(epochs) != 1 else ""
    fig = plot_curves(logs, epochs=epochs, title=f"{args.run}: {len(epochs)} epoch{plural}")
    shown = ("loss", "accuracy", "val_loss", "val_accuracy")
    summary = ", ".join(f"{k} {v[-1]:.4g}" for k, v in logs.items() if k in shown)
    print(f"last epoch ({epochs[-1]}): {summary}")
    wrote(save_figure(fig, args.output))
    return 0


def write_graph(dot_text: str, output: str) -> None:
    """Write DOT text to ``output`` (.dot/.gv), or the .dot beside it and the rendering (.svg/.png/.pdf)."""

    out = Path(output)
    if out.suffix.lower() in (".dot", ".gv"):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(dot_text)
        wrote(out)
        return
    dot_path = out.with_suffix(".dot")
    dot_path.parent.mkdir(parents=True, exist_ok=True)
    dot_path.write_text(dot_text)
    wrote(dot_path)
    if render_dot(dot_text, out) is None:
        print(f"Graphviz 'dot' is not installed, so {out} was not rendered; install it (Debian/Ubuntu: "
              f"apt-get install graphviz) or paste {dot_path} into any Graphviz viewer", file=sys.stderr)
        return
    wrote(out)


def graph_command(args) -> int:

    t = load_target(args.target, args.input_shape)
    graph = model_graph(t.model, t.input_shape)
    n_params = sum(1 for n in graph.tensors.values() if n.kind == "parameter")
    title = f"{t.label}: one forward pass of a {t.input_shape} input"
    if args.level == "ops":
        text = graph_to_dot(graph, title=title)
    else:
        text = layer_graph_to_dot(graph, t.model, title=title)
    print(f"{len(graph.ops)} ops, {n_params} parameter tensors")
    write_graph(text, args.output)
    return 0


def saliency_command(args) -> int:

    t = load_target(args.target, args.input_shape)
    raw, x = model_input(t, args.image, "never" if args.no_invert else "auto")
    result = saliency(t.model, x[0], target=args.target_class)
    name = class_name(t, result.target)
    p = result.probabilities[result.target]
    print(f"class {name}: probability {100 * p:.1f}%, score (logit) {result.score:.4g}")
    fig = plot_saliency(raw, result.map, title=f"{t.label}: saliency of class {name} ({100 * p:.1f}%)")
    wrote(save_figure(fig, args.output))
    return 0


# --------------------------------------------------------------------------- kernels
def kernels_command(args) -> int:

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
        print(f"  output height (H - F + 2P)/S + 1: {output_size_formula(H, KH, args.stride, args.padding)}")
        print(f"  output width  (W - F + 2P)/S + 1: {output_size_formula(W, KW, args.stride, args.padding)}")
        print(f"  feature map {out.shape[1]}x{out.shape[2]}x{out.shape[0]}, "
              f"values in [{out.min():.3g}, {out.max():.3g}]")
    if len(results) == 1:
        name, kernel, out = results[0]
        caption = (f"{source}: cnnkit conv2d (cross-correlation), stride {args.stride}, "
                   f"padding {args.padding}: "
                   f"{output_size_formula(H, kernel.shape[0], args.stride, args.padding)} rows, "
                   f"{output_size_formula(W, kernel.shape[1], args.stride, args.padding)} columns")
        fig = plot_kernel(image, kernel, out, name=name, caption=caption)
    else:
        fig = plot_kernel_gallery(image, results, caption=f"{source}: every kernel, stride {args.stride}, "
                                                         f"padding {args.padding}")
    wrote(save_figure(fig, args.output))
    return 0
