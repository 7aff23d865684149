"""``cnnkit explain conv`` and ``cnnkit explain graph``: the explainer articles' demonstrations.

    cnnkit explain conv --input 32x32x1 --filters 6 --kernel 5 [--plot FILE]
    cnnkit explain graph [--x 0.5] [--y 2.0] [-o toy_graph.svg]
"""

from __future__ import annotations

import argparse

import numpy as np

from .. import nn
from ..errors import UsageError
from ..explain.conv_dense import conv_as_dense, conv_stats
from ..explain.toy_graph import toy_graph
from ..viz.dot import toy_graph_to_dot
from ..viz.plots import plot_dense_conv, save_figure
from .main import finite_float, non_negative_int, positive_int
from .targets import wrote
from .visualize import write_graph

__all__ = ["add_commands"]


def add_commands(sub) -> None:
    """Add ``explain`` to the ``cnnkit`` command."""
    e = sub.add_parser("explain", help="the articles' demonstrations: conv as a dense layer, a toy graph")
    es = e.add_subparsers(dest="topic", metavar="TOPIC")
    es.required = True
    ec = es.add_parser("conv", help="a convolution vs the fully connected layer it equals")
    ec.add_argument("--input", type=_parse_hwc, required=True, help="H x W x C, e.g. 32x32x1 (or HxW for one channel)")
    ec.add_argument("--filters", type=positive_int, required=True)
    ec.add_argument("--kernel", type=_parse_kernel, required=True, help="K or KHxKW")
    ec.add_argument("--stride", type=positive_int, default=1)
    ec.add_argument("--padding", type=non_negative_int, default=0)
    ec.add_argument("--dilation", type=positive_int, default=1)
    ec.add_argument("--groups", type=positive_int, default=1)
    ec.add_argument("--plot", default=None, help="also draw the dense matrix (small layers) to this file")
    ec.set_defaults(handler=explain_conv_command)
    eg = es.add_parser("graph", help="the graph of z = cos(x) * sin(x) + x / y with values and gradients")
    eg.add_argument("--x", type=_toy_value, default=0.5)
    eg.add_argument("--y", type=_toy_value, default=2.0)
    eg.add_argument("-o", "--output", default="toy_graph.svg")
    eg.set_defaults(handler=explain_graph_command)


def _toy_value(text: str) -> float:
    """A finite input of the toy graph, at most 1e6 in size (sin and cos of huge numbers mean nothing)."""
    value = finite_float(text)
    if abs(value) > 1e6:
        raise argparse.ArgumentTypeError(f"expected a number between -1e6 and 1e6, got {text!r}")
    return value


def _parse_hwc(text: str) -> tuple[int, int, int]:
    """--input: ``HxWxC`` (or ``HxW``, one channel) as (C, H, W)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 2:
        parts.append(1)
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected HxWxC (e.g. 32x32x1) with positive integers, got {text!r}")
    H, W, C = parts
    return C, H, W


def _parse_kernel(text: str) -> tuple[int, int]:
    """--kernel: ``K`` or ``KHxKW`` as (KH, KW)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected K or KHxKW with positive integers, got {text!r}")
    return parts[0], parts[1]


def explain_conv_command(args) -> int:

    C, H, W = args.input
    kernel = args.kernel
    stats = conv_stats((C, H, W), args.filters, kernel, args.stride, args.padding, args.dilation, args.groups)
    print(stats.report())
    if args.plot:

        conv = nn.Conv2d(C, args.filters, kernel, args.stride, args.padding, args.dilation, args.groups,
                         generator=np.random.default_rng(0))
        dense = conv_as_dense(conv, (C, H, W))
        filters = f"{args.filters} filter{'s' if args.filters > 1 else ''}"
        title = f"input {H}x{W}x{C}, {filters} {kernel[0]}x{kernel[1]}: the convolution as a dense layer"
        wrote(save_figure(plot_dense_conv(dense, title=title), args.plot))
    return 0


def explain_graph_command(args) -> int:
    if abs(args.y) < 1e-6:
        raise UsageError(f"--y {args.y:g}: z divides by y (x / y), so |y| must be at least 1e-6")
    g = toy_graph(args.x, args.y)
    print(f"z = cos(x) * sin(x) + x / y at x = {args.x:g}, y = {args.y:g}")
    print(f"{'node':<12} {'value':>10} {'dz/dnode':>10}")
    for name, t in g.tensors.items():
        print(f"{name:<12} {float(t.data):>10.5f} {float(t.grad):>10.5f}")
    print(f"check: dz/dx = cos(2x) + 1/y = {np.cos(2 * args.x) + 1 / args.y:.5f}, "
          f"dz/dy = -x/y^2 = {-args.x / args.y ** 2:.5f}")
    write_graph(toy_graph_to_dot(g), args.output)
    return 0
