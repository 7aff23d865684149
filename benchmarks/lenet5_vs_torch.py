"""LeNet-5 on MNIST: cnnkit vs PyTorch, interleaved in one process run.

Trains one epoch of LeNet-5 (conv 1->6 5x5 pad 2, ReLU, max-pool 2, conv 6->16 5x5,
ReLU, max-pool 2, linear 400->120->84->10 with ReLU between) with SGD (lr 0.01,
momentum 0.9) in both frameworks from the same initial weights, alternating segments
of the epoch between them (the machine is shared and noisy: only ratios of
interleaved runs mean anything), then times inference at batch 1000 the same way.

Usage:
    python benchmarks/lenet5_vs_torch.py [--batch-sizes 64 256] [--segments 10] [--epochs 1]
                                         [--threads N] [--clock wall|cpu]

On a loaded machine use ``--threads 1 --clock cpu``: one thread per framework, timed by the
process's CPU time, which other processes' load does not inflate (a per-core comparison).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit

from timing import CLOCKS, add_timing_options, set_threads  # noqa: E402

import cnnkit  # noqa: E402
import cnnkit.functional as F  # noqa: E402
from cnnkit.backend import kernels
from cnnkit.data import load_mnist  # noqa: E402

MEAN, STD = 0.1307, 0.3081
NOW = time.perf_counter  # --clock cpu: time.process_time


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """PyTorch-style uniform init, shared by both frameworks."""
    shapes = {
        "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,),
        "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
        "fc1.weight": (120, 400), "fc1.bias": (120,),
        "fc2.weight": (84, 120), "fc2.bias": (84,),
        "fc3.weight": (10, 84), "fc3.bias": (10,),
    }
    params = {}
    for name, shape in shapes.items():
        layer = name.split(".")[0]
        w_shape = shapes[f"{layer}.weight"]
        fan_in = int(np.prod(w_shape[1:]))
        bound = 1 / np.sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return params


def cnnkit_forward(p, x):
    y = F.max_pool2d(F.relu(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=2)), 2)
    y = F.max_pool2d(F.relu(F.conv2d(y, p["conv2.weight"], p["conv2.bias"])), 2)
    y = F.flatten(y, 1)
    y = F.relu(F.linear(y, p["fc1.weight"], p["fc1.bias"]))
    y = F.relu(F.linear(y, p["fc2.weight"], p["fc2.bias"]))
    return F.linear(y, p["fc3.weight"], p["fc3.bias"])


class CnnkitTrainer:
    """cnnkit's side: the functional model and cnnkit.optim.SGD (what a user writes; PyTorch's
    side runs torch.optim.SGD with the same lr and momentum). Until Dec 5 this was a NumPy loop
    (v = 0.9 v + g; p -= lr v: the same formula, rounded twice where PyTorch's fuses)."""

    def __init__(self, params, lr=0.01, momentum=0.9):
        self.p = {k: cnnkit.Tensor(v.copy(), requires_grad=True) for k, v in params.items()}
        self.opt = cnnkit.optim.SGD(list(self.p.values()), lr=lr, momentum=momentum)

    def step(self, x, t):
        loss = F.cross_entropy(cnnkit_forward(self.p, cnnkit.Tensor(x)), t)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss

    def predict(self, x):
        with cnnkit.no_grad():
            return cnnkit_forward(self.p, cnnkit.Tensor(x)).data.argmax(1)


class TorchLeNet(torch.nn.Module):
    def __init__(self, params):
        super().__init__()
        nn = torch.nn
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
        self.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})

    def forward(self, x):
        f = torch.nn.functional
        y = f.max_pool2d(f.relu(self.conv1(x)), 2)
        y = f.max_pool2d(f.relu(self.conv2(y)), 2)
        y = torch.flatten(y, 1)
        y = f.relu(self.fc1(y))
        y = f.relu(self.fc2(y))
        return self.fc3(y)


class TorchTrainer:
    def __init__(self, params, lr=0.01, momentum=0.9):
        self.model = TorchLeNet(params)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)

    def step(self, x, t):
        loss = torch.nn.functional.cross_entropy(self.model(torch.from_numpy(x)), torch.from_numpy(t))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss

    def predict(self, x):
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).argmax(1).numpy()


def run_segment(trainer, x, t, order, batch):
    start = NOW()
    for i in range(0, len(order) - batch + 1, batch):
        idx = order[i : i + batch]
        trainer.step(x[idx], t[idx])
    return NOW() - start


def bench_training(x, t, batch, segments, epochs, seed):
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    ours, theirs = CnnkitTrainer(params), TorchTrainer(params)
    # warm-up: buffers, caches, first-call costs (cnnkit's kernels compile or load from
    # numba's disk cache on their first call: the first step's time shows that cost)
    warm = rng.permutation(len(x))[: batch * 5]
    first = {}
    for name, trainer in (("cnnkit", ours), ("torch", theirs)):
        start = NOW()
        run_segment(trainer, x, t, warm[:batch], batch)
        first[name] = NOW() - start
        run_segment(trainer, x, t, warm[batch:], batch)
    times = {"cnnkit": 0.0, "torch": 0.0}
    ratios, images = [], 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        bounds = np.linspace(0, len(order) // batch, segments + 1).astype(int) * batch
        for s in range(segments):
            seg = order[bounds[s] : bounds[s + 1]]
            pair = [("cnnkit", ours), ("torch", theirs)]
            if s % 2:
                pair.reverse()  # alternate who goes first
            seg_times = {name: run_segment(tr, x, t, seg, batch) for name, tr in pair}
            for name in times:
                times[name] += seg_times[name]
            ratios.append(seg_times["torch"] / seg_times["cnnkit"])  # >1: cnnkit faster
            images += len(seg) // batch * batch
    return {
        "cnnkit_ips": images / times["cnnkit"],
        "torch_ips": images / times["torch"],
        "median_ratio": statistics.median(ratios),
        "ours": ours,
        "theirs": theirs,
        "first_step": first,
    }


def bench_inference(ours, theirs, x, batch=1000, repeats=5):
    ratios, tot = [], {"cnnkit": 0.0, "torch": 0.0}
    ours.predict(x[:batch]), theirs.predict(x[:batch])
    for r in range(repeats):
        pair = [("cnnkit", ours), ("torch", theirs)]
        if r % 2:
            pair.reverse()
        seg = {}
        for name, tr in pair:
            start = NOW()
            for i in range(0, len(x), batch):
                tr.predict(x[i : i + batch])
            seg[name] = NOW() - start
            tot[name] += seg[name]
        ratios.append(seg["torch"] / seg["cnnkit"])
    n = repeats * len(x)
    return n / tot["cnnkit"], n / tot["torch"], statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    add_timing_options(parser, "threads for both frameworks (default: each framework's default)")
    args = parser.parse_args()
    global NOW
    NOW = CLOCKS[args.clock]
    set_threads(args.threads, torch)

    images, labels = load_mnist("train")
    x = ((images.astype(np.float32) / 255 - MEAN) / STD)[:, None]     # (60000, 1, 28, 28)
    t = labels.astype(np.int64)
    test_images, test_labels = load_mnist("test")
    xt = ((test_images.astype(np.float32) / 255 - MEAN) / STD)[:, None]

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}; "
        f"cnnkit kernels {'on' if kernels.AVAILABLE and cnnkit.config.kernels_enabled() else 'off'}, "
        f"{cnnkit.config.get_num_threads()} threads; {args.clock} clock; load average {os.getloadavg()[0]:.2f}"
    )
    print("| batch | cnnkit train img/s | PyTorch train img/s | ratio (median of segments) | cnnkit test acc | PyTorch test acc |")
    print("|---|---|---|---|---|---|")
    last, firsts = None, []
    for batch in args.batch_sizes:
        r = bench_training(x, t, batch, args.segments, args.epochs, args.seed)
        acc_ours = float((r["ours"].predict(xt) == test_labels).mean())
        acc_theirs = float((r["theirs"].predict(xt) == test_labels).mean())
        print(
            f"| {batch} | {r['cnnkit_ips']:.0f} | {r['torch_ips']:.0f} | {r['median_ratio']:.2f}x "
            f"| {acc_ours:.4f} | {acc_theirs:.4f} |", flush=True
        )
        last = r
        firsts.append(r["first_step"])
    ci, ti, ratio = bench_inference(last["ours"], last["theirs"], xt)
    print(f"\ninference, batch 1000: cnnkit {ci:.0f} img/s, PyTorch {ti:.0f} img/s, ratio {ratio:.2f}x (median of 5)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print(
        "first training step (s), per batch size: cnnkit "
        + ", ".join(f"{f['cnnkit']:.2f}" for f in firsts)
        + "; PyTorch " + ", ".join(f"{f['torch']:.2f}" for f in firsts)
    )


if __name__ == "__main__":
    main()
