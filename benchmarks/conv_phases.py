"""cnnkit's 3x3 convolutions phase by phase against PyTorch: forward, gx, gW.

Which phase of a 3x3 stride-1 layer loses? For each shape this times, in interleaved pairs
with a pause and a spin of the framework's threads before each call (``timing.interleaved``),
cnnkit's blocked kernel called directly (``conv_blocked.conv2d_blocked`` and
``conv2d_blocked_grads`` with one gradient asked for, or both: the backward as the op runs it)
against PyTorch's ``aten.convolution_backward`` with the same output mask, and prints ms,
GFLOP/s (2*N*F*C*KH*KW*OH*OW per phase) and the median per-pair ratio (above 1: cnnkit
faster). No bias (ResNet's layers have none). ``--layout cnhw`` gives cnnkit its input and
output gradient as (N, C, H, W) views of (C, N, H, W) memory, as the model's layers get them
(the direct convolution and the batch norm write channel-major maps); PyTorch always gets C
order. ``NAME=VALUE`` sets a ``backend.dispatch`` switch for cnnkit's calls. ``--against
NAME=VALUE ...`` times cnnkit against itself instead of PyTorch: the "torch" columns are then
cnnkit with those switches set during its calls (ratio above 1: the switches as they are win).

Usage:
    python benchmarks/conv_phases.py [NAME=VALUE ...] [--shapes N,C,F,H ...] [--layout nchw|cnhw]
        [--strided] [--phases fwd,gx,gw,bwd] [--against NAME=VALUE ...] [--repeats 7] [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_timing_options, interleaved, load_average, set_threads, spin_cnnkit, spin_torch  # noqa: E402

from cnnkit.backend import dispatch  # noqa: E402
from cnnkit.backend.kernels import conv_blocked, im2col, polyphase, strided  # noqa: E402

SHAPES = [(128, 16, 16, 32), (128, 32, 32, 16), (128, 64, 64, 8)]  # ResNet-20's 3x3 stride-1 layers
STRIDED = [(128, 16, 32, 32, 2), (128, 32, 64, 16, 2)]                # its two 3x3 stride-2 layers
PHASES = {"fwd": (False, False), "gx": (True, False), "gw": (False, True), "bwd": (True, True)}


def cnhw(a):
    """The same values as a, in channel-major memory."""
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def arrays(N: int, C: int, F: int, H: int, layout: str, S: int = 1):
    rng = np.random.default_rng(2)
    OH = (H - 1) // S + 1
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((F, C, 3, 3)) / np.sqrt(C * 9)).astype(np.float32)
    gy = rng.standard_normal((N, F, OH, OH)).astype(np.float32)
    if layout == "cnhw":
        return cnhw(x), w, cnhw(gy), x, gy
    return x, w, gy, x, gy


def strided_kernels(x, w, gy, S: int):
    """(forward, grads) of the algorithm the dispatch picks for the stride-S layer (padding 1), picked
    at each call (so ``--against`` switches apply): forward() -> y, grads(need_x, need_w) -> (gx, gw)."""
    pads, stride, out_hw = (1, 1, 1, 1), (S, S), gy.shape[2:]

    def kernels():
        name = algorithm(x, w, S)
        if name == "strided":
            return (lambda: strided.conv2d_strided(x, w, None),
                    lambda nx, nw: strided.conv2d_strided_grads(x, w, gy, nx, nw))
        if name == "polyphase":
            return (lambda: polyphase.conv2d_polyphase(x, w, None, stride, pads, out_hw),
                    lambda nx, nw: polyphase.conv2d_polyphase_grads(x, w, gy, stride, pads, nx, nw))
        if name == "gemm":
            return (lambda: im2col.conv2d_gemm(x, w, None, stride, pads, (1, 1), 1, out_hw),
                    lambda nx, nw: im2col.conv2d_gemm_grads(x, w, gy, stride, pads, (1, 1), 1, nx, nw))
        raise SystemExit(f"conv_phases: no kernel entry for the {name!r} algorithm")

    return (lambda: kernels()[0]()), (lambda nx, nw: kernels()[1](nx, nw))


def algorithm(x, w, S: int) -> str:
    """The dispatch's algorithm for the stride-S 3x3 layer with padding 1."""
    return dispatch.conv2d_algorithm(np, x.dtype, x.shape, w.shape, (S, S), (1, 1, 1, 1), (1, 1), 1)


def phase_calls(x, w, gy, tx, tw, tgy, phase: str, S: int = 1):
    """(ours, theirs) for one phase."""
    pads = (1, 1, 1, 1)
    if S != 1:
        forward, grads = strided_kernels(x, w, gy, S)
    else:
        forward = lambda: conv_blocked.conv2d_blocked(x, w, None, pads)  # noqa: E731
        grads = lambda nx, nw: conv_blocked.conv2d_blocked_grads(x, w, gy, pads, nx, nw, False)  # noqa: E731
    if phase == "fwd":
        return forward, lambda: torch.nn.functional.conv2d(tx, tw, stride=S, padding=1)
    need_x, need_w = PHASES[phase]

    def ours():
        return grads(need_x, need_w)

    def theirs():
        return torch.ops.aten.convolution_backward(tgy, tx, tw, None, [S, S], [1, 1], [1, 1], False, [0, 0], 1,
                                                   [need_x, need_w, False])
    return ours, theirs


def parse_switches(items):
    """{NAME: value} for ``backend.dispatch`` switches given as NAME=VALUE."""
    switches = {}
    for item in items:
        name, value = item.split("=")
        if not hasattr(dispatch, name):
            raise SystemExit(f"conv_phases: backend.dispatch has no switch {name!r}")
        switches[name] = type(getattr(dispatch, name))(float(value))
    return switches


def with_switches(fn, switches):
    """fn run with ``backend.dispatch``'s switches set, then restored."""
    def run():
        before = {name: getattr(dispatch, name) for name in switches}
        for name, value in switches.items():
            setattr(dispatch, name, value)
        try:
            return fn()
        finally:
            for name, value in before.items():
                setattr(dispatch, name, value)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("switches", nargs="*", help="backend.dispatch NAME=VALUE for cnnkit's calls")
    parser.add_argument("--shapes", nargs="+", default=None, help="N,C,F,H[,S] ... (3x3, padding 1, stride S)")
    parser.add_argument("--strided", action="store_true", help="ResNet-20's two 3x3 stride-2 layers")
    parser.add_argument("--layout", choices=("nchw", "cnhw"), default="cnhw")
    parser.add_argument("--phases", default="fwd,gx,gw,bwd")
    parser.add_argument("--against", nargs="+", default=None, help="NAME=VALUE: cnnkit against itself")
    parser.add_argument("--repeats", type=int, default=7)
    add_timing_options(parser)
    args = parser.parse_args()
    for name, value in parse_switches(args.switches).items():
        setattr(dispatch, name, value)
    against = parse_switches(args.against) if args.against else None
    set_threads(args.threads, torch)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else (
        STRIDED if args.strided else SHAPES)
    print(f"threads {args.threads or 'all'}, clock {args.clock}, layout {args.layout}, load {load_average()}"
          + (f"; 'torch' columns: cnnkit with {args.against}" if against is not None else ""))
    print(f"{'shape':<18}{'phase':<6}{'cnnkit ms':>10}{'torch ms':>10}{'cnnkit GF/s':>12}{'torch GF/s':>11}{'ratio':>7}")
    for N, C, F, H, *rest in shapes:
        S = rest[0] if rest else 1
        OH = (H - 1) // S + 1
        x, w, gy, xc, gyc = arrays(N, C, F, H, args.layout, S)
        tx, tw, tgy = (torch.from_numpy(a) for a in (xc, w, gyc))
        if S != 1:
            other = f", against {with_switches(functools.partial(algorithm, x, w, S), against)()}" if against else ""
            print(f"{N}x{C}x{F}x{H} stride {S}: {algorithm(x, w, S)}{other}")
        for phase in args.phases.split(","):
            ours, theirs = phase_calls(x, w, gy, tx, tw, tgy, phase, S)
            if against is not None:
                theirs = with_switches(ours, against)
            r = interleaved(ours, theirs, args.repeats, clock=args.clock,
                            spin_theirs=spin_cnnkit if against is not None else spin_torch)
            flops = 2 * N * F * C * 9 * OH * OH * (2 if phase == "bwd" else 1)
            o, t = np.median(r["ours"]), np.median(r["theirs"])
            print(f"{N}x{C}x{F}x{H:<9}{phase:<6}{o * 1e3:>10.2f}{t * 1e3:>10.2f}{flops / o / 1e9:>12.0f}"
                  f"{flops / t / 1e9:>11.0f}{r['ratio']:>7.2f}", flush=True)
    print(f"load {load_average()}")


if __name__ == "__main__":
    main()
