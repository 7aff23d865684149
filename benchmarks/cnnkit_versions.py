"""This tree's cnnkit against an earlier revision of it, interleaved in one process.

On a shared machine, two runs of a benchmark minutes apart differ by more than most code
changes do (PyTorch's threads in particular collapse under load). To show that a change
did not slow cnnkit down, this script exports the package of an earlier revision
(``git archive``) into a temporary folder under another name (``cnnkit_<rev>``), imports
both, and times the same workloads on both in alternating pairs with a pause and a
warm-up spin before each call; the figure is the median over pairs of old time / new
time (above 1: this tree is faster).

Workloads: LeNet-5 training steps at batch 1 (the per-op fixed cost), 64 and 256 (the functional model of
``lenet5_vs_torch.py``, SGD with momentum as NumPy passes; ``lenet5-sgd-b*``: with ``optim.SGD``
and ``zero_grad``, as ``lenet5_vs_torch.py`` steps), LeNet-5 inference at batch 1000, ResNet-18
inference at 224x224, batch 8 and 1, and a ResNet-18 training step at batch 16.
``resnet18-infer-b*-optimized``: each tree's best inference transform, ``surgery.optimize_for_inference``
where the tree has it, else ``surgery.fold_batchnorm`` (so against a revision before it, the
figure is what the prepack adds to the fold).

``--threads 1 --clock cpu`` runs both trees on one thread and times the process's CPU
time (robust to a loaded machine, see timing.py).

Usage:
    python benchmarks/cnnkit_versions.py REV [--repeats 9] [--workloads ...] [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import CLOCKS, PAUSE_S, add_timing_options, load_average, set_threads  # noqa: E402

import cnnkit  # noqa: E402


def import_revision(rev: str):
    """Import cnnkit as of git revision ``rev`` under the name ``cnnkit_<rev>``."""
    name = "cnnkit_" + re.sub(r"\W", "_", rev)
    folder = Path(tempfile.mkdtemp(prefix="cnnkit_versions_"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "cnnkit"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "cnnkit").rename(folder / name)
    for path in (folder / name).rglob("*.py"):  # absolute self-imports, if any
        text = path.read_text()
        path.write_text(re.sub(r"\b(from|import) cnnkit\b", rf"\1 {name}", text))
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def lenet_params(rng):
    shapes = {
        "c1w": (6, 1, 5, 5), "c1b": (6,), "c2w": (16, 6, 5, 5), "c2b": (16,), "f1w": (120, 400), "f1b": (120,),
        "f2w": (84, 120), "f2b": (84,), "f3w": (10, 84), "f3b": (10,),
    }
    return {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in shapes.items()}


def lenet_forward(ck, p, x):
    F = ck.functional
    y = F.max_pool2d(F.relu(F.conv2d(x, p["c1w"], p["c1b"], padding=2)), 2)
    y = F.max_pool2d(F.relu(F.conv2d(y, p["c2w"], p["c2b"])), 2)
    y = y.reshape((y.shape[0], -1))
    y = F.relu(F.linear(y, p["f1w"], p["f1b"]))
    y = F.relu(F.linear(y, p["f2w"], p["f2b"]))
    return F.linear(y, p["f3w"], p["f3b"])


def lenet_train(ck, batch: int, steps: int = 20):
    rng = np.random.default_rng(0)
    p = {k: ck.Tensor(v, requires_grad=True) for k, v in lenet_params(rng).items()}
    vel = {k: np.zeros_like(v.data) for k, v in p.items()}
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, batch)

    def run():
        for _ in range(steps):
            loss = ck.functional.cross_entropy(lenet_forward(ck, p, ck.Tensor(x)), t)
            for v in p.values():
                v.grad = None
            loss.backward()
            for k, v in p.items():
                vel[k] *= 0.9
                vel[k] += v.grad
                v.data -= 0.01 * vel[k]

    return run


def lenet_train_sgd(ck, batch: int, steps: int = 20):
    """``lenet_train`` with ``optim.SGD`` (lr 0.01, momentum 0.9) and ``zero_grad``: the step of
    ``lenet5_vs_torch.py``'s cnnkit side, the optimizer's per-parameter cost included."""
    rng = np.random.default_rng(0)
    p = {k: ck.Tensor(v, requires_grad=True) for k, v in lenet_params(rng).items()}
    opt = ck.optim.SGD(list(p.values()), lr=0.01, momentum=0.9)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, batch)

    def run():
        for _ in range(steps):
            loss = ck.functional.cross_entropy(lenet_forward(ck, p, ck.Tensor(x)), t)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def lenet_infer(ck, batch: int = 1000, repeats: int = 5):
    rng = np.random.default_rng(0)
    p = {k: ck.Tensor(v) for k, v in lenet_params(rng).items()}
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)

    def run():
        with ck.no_grad():
            for _ in range(repeats):
                lenet_forward(ck, p, ck.Tensor(x))

    return run


def resnet18_infer(ck, batch: int = 8):
    rng = np.random.default_rng(0)
    model = ck.models.get_model("resnet18", generator=np.random.default_rng(0))
    model.eval()
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)

    def run():
        with ck.no_grad():
            model(ck.Tensor(x))

    return run


def resnet18_optimized(ck, batch: int = 8):
    rng = np.random.default_rng(0)
    model = ck.models.get_model("resnet18", generator=np.random.default_rng(0))
    model.eval()
    surgery = importlib.import_module(ck.__name__ + ".surgery")
    transform = getattr(surgery, "optimize_for_inference", None) or surgery.fold_batchnorm
    model = transform(model)
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)

    def run():
        with ck.no_grad():
            model(ck.Tensor(x))

    return run


def resnet18_train(ck, batch: int = 16):
    rng = np.random.default_rng(0)
    model = ck.models.get_model("resnet18", generator=np.random.default_rng(0))
    model.train()
    opt = ck.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
    t = rng.integers(0, 1000, batch)

    def run():
        loss = ck.functional.cross_entropy(model(ck.Tensor(x)), t)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return run


WORKLOADS = {
    "lenet5-train-b1": lambda ck: lenet_train(ck, 1, steps=100),   # the per-op fixed cost alone
    "lenet5-train-b64": lambda ck: lenet_train(ck, 64),
    "lenet5-train-b256": lambda ck: lenet_train(ck, 256, steps=8),
    "lenet5-sgd-b1": lambda ck: lenet_train_sgd(ck, 1, steps=100),
    "lenet5-sgd-b64": lambda ck: lenet_train_sgd(ck, 64),
    "lenet5-infer-b1000": lenet_infer,
    "resnet18-infer-b8": resnet18_infer,
    "resnet18-infer-b1": lambda ck: resnet18_infer(ck, 1),
    "resnet18-infer-b8-optimized": resnet18_optimized,
    "resnet18-infer-b1-optimized": lambda ck: resnet18_optimized(ck, 1),
    "resnet18-train-b16": resnet18_train,
}


def spin(ck) -> None:
    x = ck.Tensor(np.ones(2**21, np.float32) - 2)
    end = time.perf_counter() + 0.02
    with ck.no_grad():
        while time.perf_counter() < end:
            ck.functional.relu(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the earlier git revision (e.g. main, HEAD~3, a commit)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    add_timing_options(parser, "threads for both trees (default: all CPUs)")
    args = parser.parse_args()
    old = import_revision(args.rev)
    set_threads(args.threads)
    if args.threads is not None:
        # For the rest of the process, as set_threads. Held in a name: an entered generator nobody
        # refers to is collected at once, and its ``finally`` put the old tree back on every CPU
        # (before Dec 5 the old tree's --threads 1 figures were its all-CPU times, CPU-clocked).
        old_threads = old.config.num_threads(args.threads)
        old_threads.__enter__()
    now = CLOCKS[args.clock]
    print(f"this tree ({cnnkit.__file__}) vs {args.rev} ({old.__file__}); {args.repeats} pairs; "
          f"{cnnkit.config.get_num_threads()} threads, {args.clock} clock")
    print("| workload | this tree ms | old ms | old/new (median of pairs) | load before/after |")
    print("|---|---|---|---|---|")
    for name in args.workloads:
        load0 = load_average()
        runs = {"new": WORKLOADS[name](cnnkit), "old": WORKLOADS[name](old)}
        mods = {"new": cnnkit, "old": old}
        for fn in runs.values():  # warm-up (and the old copy's kernels compile)
            fn()
            fn()
        times = {"new": [], "old": []}
        for r in range(args.repeats):
            for label in ("new", "old") if r % 2 == 0 else ("old", "new"):
                time.sleep(PAUSE_S)
                spin(mods[label])
                start = now()
                runs[label]()
                times[label].append(now() - start)
        ratio = statistics.median(o / n for n, o in zip(times["new"], times["old"]))
        print(f"| {name} | {statistics.median(times['new']) * 1e3:.1f} | {statistics.median(times['old']) * 1e3:.1f} "
              f"| **{ratio:.2f}x** | {load0} / {load_average()} |", flush=True)


if __name__ == "__main__":
    main()
