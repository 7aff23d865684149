"""Time to accuracy: `cnnkit train resnet20` on a generated 32x32 folder vs the same recipe in PyTorch.

CIFAR-10 is not reachable offline here, so the data is ``pattern_images.py``'s folder:
ten classes of gratings and shapes, 10,000 training and 2,000 test images (written on the
first run, the same files for the same seed). cnnkit's side is the real command,

    cnnkit train resnet20 --data DIR --epochs 2 --val-split 0 --seed 0 --out RUN --overwrite

run in this process (``cnnkit.cli.main``) with its defaults for everything else: batch
128 reshuffled each epoch, SGD with Nesterov momentum 0.9 and weight decay 5e-4, a
one-cycle learning rate peaking at 0.1, the training images' own per-channel
normalization, no augmentation, the loader's worker threads. (``--val-split 0``: all
10,000 images train, none validate, so both sides train on the same images; the test
split is evaluated once, after training.) A spy around the ``fit`` call the command makes
records its initial weights, its loader's shuffling state, its optimizer and schedule,
and times the call alone (what the command reports as "trained 2 epochs in Ns").

PyTorch's side is ``torch_models.ResNet20`` (option-A shortcuts, the same state_dict keys)
loaded with those initial weights, trained on the same batches in the same order
(replayed from the command's loader: same images, same normalization, same last partial
batch) with torch.optim.SGD + OneCycleLR set from cnnkit's optimizer and schedule. Its
batches are prepared before its timer starts; cnnkit's time includes its loader.

Checks: the same eval-mode logits before training (to 1e-4); the same batches (a sum of
each batch, compared exactly); the same learning rate at every step; cnnkit's test
accuracy computed here equals the one the command prints. Whole 2-epoch runs alternate
(cnnkit, torch, then torch, cnnkit, ...), each after a pause and a warm-up spin.

Usage:
    python benchmarks/train_resnet20_vs_torch.py [--data DIR] [--rounds 2] [--epochs 2] [--seed 0]
                                                 [--threads 2] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit

from pattern_images import write_pattern_folder  # noqa: E402
from timing import CLOCKS, PAUSE_S, add_timing_options, load_average, set_threads, spin_cnnkit, spin_torch  # noqa: E402
from torch_models import ResNet20  # noqa: E402
from train_recipe_vs_torch import (  # noqa: E402
    accuracy,
    assert_same_start,
    load_into_torch,
    predict_cnnkit,
    predict_torch,
    torch_epoch,
    torch_sgd_like,
)

import cnnkit  # noqa: E402
import cnnkit.cli.train as cli_train  # noqa: E402
from cnnkit import models  # noqa: E402
from cnnkit.cli.main import main as cnnkit_main  # noqa: E402
from cnnkit.data import DataLoader  # noqa: E402
from cnnkit.train.datasets import folder_data  # noqa: E402

DEFAULT_DATA = Path(tempfile.gettempdir()) / "cnnkit-patterns32-seed0"


def fingerprint(x: np.ndarray) -> float:
    """A batch's sum in float64: equal batches give equal sums, bit for bit."""
    return float(x.sum(dtype=np.float64))


class StepProbe:
    """A ``fit`` callback: each step's batch fingerprint, loss and learning rate (group 0)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.fingerprints: list[float] = []
        self.losses: list[float] = []
        self.lrs: list[float] = []

    def on_after_backward(self, step, loss, x) -> None:
        self.fingerprints.append(fingerprint(x))
        self.losses.append(float(loss.data))
        self.lrs.append(self.optimizer.param_groups[0]["lr"])


@dataclass
class Captured:
    """What one `cnnkit train` run trained: its start, its loader and its result."""

    initial: dict
    loader_state: dict
    dataset: object
    batch_size: int
    model: object = None
    optimizer: object = None
    scheduler: object = None
    seconds: float = 0.0
    probe: StepProbe | None = None
    runs: list = field(default_factory=list)


class FitSpy:
    """Stands in for ``fit`` in ``cnnkit.cli.train``: records the run, then times the real ``fit`` alone."""

    def __init__(self, now):
        self.now = now
        self.captured: Captured | None = None

    def __call__(self, model, train_loader, *, optimizer, scheduler, callbacks=(), **kwargs):
        from cnnkit.train import fit

        c = Captured({k: np.array(v) for k, v in model.state_dict().items()}, train_loader.state_dict(),
                     train_loader.dataset, train_loader.batch_size, model, optimizer, scheduler)
        c.probe = StepProbe(optimizer)
        self.captured = c
        time.sleep(PAUSE_S)
        spin_cnnkit()
        start = self.now()
        history = fit(model, train_loader, optimizer=optimizer, scheduler=scheduler,
                      callbacks=[*callbacks, c.probe], **kwargs)
        c.seconds = self.now() - start
        return history



class _Tee(io.TextIOBase):
    """stdout that also keeps a copy of the text (the command's own report is parsed from it)."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def run_cnnkit(argv: list[str], spy: FitSpy) -> tuple[Captured, float, str]:
    """Run `cnnkit train` with ``spy`` as its ``fit``; return the capture, the command's wall time, its output."""
    tee = _Tee(sys.stdout)
    real_fit, cli_train.fit = cli_train.fit, spy
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(tee):
            status = cnnkit_main(argv)
    finally:
        cli_train.fit = real_fit
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"`cnnkit {' '.join(argv)}` failed (exit status {status})")
    return spy.captured, wall, tee.copy.getvalue()


def replay_batches(c: Captured, epochs: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The command's batches, epoch by epoch: its dataset and batch size, its shuffling generator's state."""
    loader = DataLoader(c.dataset, batch_size=c.batch_size, shuffle=True, generator=np.random.default_rng())
    loader.load_state_dict(c.loader_state)
    return [list(loader) for _ in range(epochs)]


def epoch_means(losses: list[float], epochs: int) -> str:
    return " / ".join(f"{np.mean(part):.3f}" for part in np.array_split(np.asarray(losses), epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"the generated folder (written when missing; default {DEFAULT_DATA})")
    parser.add_argument("--train", type=int, default=10_000, help="training images of a folder written now")
    parser.add_argument("--test", type=int, default=2_000, help="test images of a folder written now")
    parser.add_argument("--rounds", type=int, default=2, help="2-epoch runs per framework (alternating)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="cnnkit train --seed (initial weights, shuffling)")
    add_timing_options(parser, threads_help="threads for cnnkit and PyTorch (default 2)")
    args = parser.parse_args()
    threads = args.threads or 2
    set_threads(threads, torch)
    now = CLOCKS[args.clock]
    root = write_pattern_folder(args.data, args.train, args.test)
    data = folder_data(root, model="resnet20", val_split=0, cache="on")
    xt, yt = data.test.get_batch(np.arange(len(data.test)))
    steps = -(-len(data.train) // 128)

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), cnnkit {threads} threads, numpy "
          f"{np.__version__}; clock: {args.clock}; data {root}: {len(data.train):,} train / {len(xt):,} test "
          f"images, {len(data.classes)} classes; load {load_average()}", flush=True)
    warm_up()
    spy = FitSpy(now)
    first: Captured | None = None
    batches = None
    rows = []
    with tempfile.TemporaryDirectory(prefix="tta-") as tmp:
        for r in range(args.rounds):
            for side in (("cnnkit", "torch") if r % 2 == 0 else ("torch", "cnnkit")):
                load_before = load_average()
                if side == "cnnkit":
                    argv = ["train", "resnet20", "--data", str(root), "--epochs", str(args.epochs), "--val-split", "0",
                            "--seed", str(args.seed), "--out", f"{tmp}/run{r}", "--overwrite"]
                    c, wall, text = run_cnnkit(argv, spy)
                    if first is None:
                        first = c
                        batches = replay_batches(c, args.epochs)
                        if [fingerprint(x) for epoch in batches for x, _ in epoch] != c.probe.fingerprints:
                            raise AssertionError("the replayed batches are not the command's")
                        if c.dataset.spec != data.train.spec:
                            raise AssertionError(f"test images normalized otherwise: {data.train.spec} vs {c.dataset.spec}")
                        steps = len(batches[0])
                    elif any(not np.array_equal(v, first.initial[k]) for k, v in c.initial.items()) or \
                            c.probe.fingerprints != first.probe.fingerprints:
                        raise AssertionError("two runs of the same command started differently")
                    acc = accuracy(predict_cnnkit(c.model), xt, yt, batch=500)
                    printed = float(re.search(r"last: test accuracy ([\d.]+)%", text).group(1))
                    if abs(100 * acc - printed) > 0.006:
                        raise AssertionError(f"test accuracy here {100 * acc:.2f}%, the command printed {printed}%")
                    rows.append((r, side, c.seconds, acc, epoch_means(c.probe.losses, args.epochs), load_before,
                                 f"whole command {wall:.1f} s wall"))
                else:
                    seconds, acc, losses, note = run_torch(first, batches, xt, yt, now)
                    rows.append((r, side, seconds, acc, epoch_means(losses, args.epochs), load_before, note))
                rows[-1] += (load_average(),)
                print(f"round {r + 1} {side}: {rows[-1][2]:.1f} s, test accuracy {rows[-1][3]:.4f}", flush=True)

    c = first
    groups = c.optimizer.param_groups
    print(f"\n`cnnkit train resnet20 --data {root} --epochs {args.epochs} --val-split 0 --seed {args.seed}`: "
          f"batch {c.batch_size} ({steps} steps an epoch, the last of {len(data.train) - (steps - 1) * c.batch_size}), "
          f"SGD nesterov={groups[0]['nesterov']} weight decay {groups[0]['weight_decay']:g}, one-cycle peak lr "
          f"{groups[0]['max_lr']:g}, momentum {groups[0].get('max_momentum', 0):g}-{groups[0].get('base_momentum', 0):g}"
          f" over {c.scheduler.total_steps} steps; {len(groups)} parameter groups")
    print(f"\n| round | framework | {args.epochs}-epoch training s ({args.clock}) | test accuracy | train loss by epoch "
          "| load before-after | note |")
    print("|---|---|---|---|---|---|---|")
    for r, side, seconds, acc, loss, before, note, after in rows:
        print(f"| {r + 1} | {side} | {seconds:.1f} | {100 * acc:.2f}% | {loss} | {before}-{after} | {note} |")
    ours = {r: s for r, side, s, *_ in rows if side == "cnnkit"}
    theirs = {r: s for r, side, s, *_ in rows if side == "torch"}
    ratios = [ours[r] / theirs[r] for r in ours]
    print(f"\ncnnkit takes {statistics.median(ratios):.2f}x PyTorch's time (median of per-round ratios "
          f"{', '.join(f'{x:.2f}' for x in ratios)}); median seconds cnnkit {statistics.median(ours.values()):.1f}, "
          f"PyTorch {statistics.median(theirs.values()):.1f}")


def run_torch(c: Captured, batches, xt: np.ndarray, yt: np.ndarray, now) -> tuple[float, float, list[float], str]:
    """Train PyTorch's ResNet-20 from the command's start on its batches; (seconds, test accuracy, losses, note)."""
    start_model = models.get_model(c.model.zoo_name, **c.model.zoo_config)
    start_model.load_state_dict(c.initial)
    theirs = ResNet20()
    load_into_torch(start_model, theirs)
    difference = assert_same_start(start_model, theirs, xt[:256])
    opt, sched = torch_sgd_like(c.model, c.optimizer, c.scheduler, theirs)
    losses, lrs = [], []
    time.sleep(PAUSE_S)
    spin_torch()
    start = now()
    for epoch in batches:
        step_losses, step_lrs = torch_epoch(theirs, opt, sched, epoch)
        losses += step_losses
        lrs += step_lrs
    seconds = now() - start
    np.testing.assert_allclose(lrs, c.probe.lrs, rtol=1e-9, err_msg="the learning rates differ")
    acc = accuracy(predict_torch(theirs), xt, yt, batch=500)
    gap = np.abs(np.asarray(losses) - np.asarray(c.probe.losses))
    apart = int(np.argmax(gap > 1e-3)) + 1 if (gap > 1e-3).any() else None
    note = (f"same start: logits differ by {difference:.1e}; step 1 loss {losses[0]:.5f} vs cnnkit's "
            f"{c.probe.losses[0]:.5f}; losses first differ by > 1e-3 at step {apart}")
    return seconds, acc, losses, note


def warm_up() -> None:
    """One training step of each framework's ResNet-20 (first-call costs: kernel caches, oneDNN primitives)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    ours = models.resnet20(generator=rng)
    cnnkit.functional.cross_entropy(ours(cnnkit.Tensor(x)), y).backward()
    theirs = ResNet20()
    torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()


if __name__ == "__main__":
    main()
