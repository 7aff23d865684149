"""A/B of where a training step's memory comes from, in cnnkit-only processes.

``--ab malloc`` (default): ``cnnkit.backend.malloc.tune_malloc``, plain vs tuned.
``--ab pool``: ``backend/buffers.py``'s pool of large arrays, off vs on
(``dispatch.BUFFER_POOL``), both plain, or both tuned with ``--tuned``.

Both are process-wide and glibc's dynamic thresholds depend on the process's allocation
history (PyTorch in the same process changes them), so each measurement is a fresh child
process running only cnnkit: A, then B, alternating, ``--rounds`` times. Each child trains
``--steps`` steps of the model on random data after two warm-up steps and reports CPU
time, wall time, system time and minor page faults per step, its peak RSS and its last
loss (the same in A and B: the policies change where memory comes from, not results).
Ratios are A / B of the medians (above 1: B faster).

Usage:
    python benchmarks/malloc_policy.py [--models lenet5:256,resnet20:128] [--steps N]
                                       [--rounds 3] [--threads 1] [--ab malloc|pool [--tuned]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
import cnnkit
from cnnkit import nn, optim
from cnnkit.backend import dispatch
from cnnkit.backend.malloc import tune_malloc
name, batch, steps, tuned = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
dispatch.BUFFER_POOL = int(sys.argv[5])
status = tune_malloc() if tuned else "plain"
status += f"; pool {'on' if dispatch.BUFFER_POOL else 'off'}"
model = cnnkit.models.get_model(name, num_classes=10, generator=np.random.default_rng(0))
shape = cnnkit.models.default_input_shape(name)
g = np.random.default_rng(0)
x = cnnkit.tensor(g.standard_normal((batch, *shape), dtype=np.float32))
y = cnnkit.tensor(g.integers(0, 10, batch))
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
def step():
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.data)
for _ in range(2):
    step()
r0, c0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
for _ in range(steps):
    loss = step()
r1, c1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
print(json.dumps({"status": status, "cpu_ms": (c1 - c0) / steps * 1e3, "wall_ms": (w1 - w0) / steps * 1e3,
                  "sys_ms": (r1.ru_stime - r0.ru_stime) / steps * 1e3,
                  "faults": (r1.ru_minflt - r0.ru_minflt) / steps, "rss_mb": r1.ru_maxrss / 1024,
                  "loss": loss.hex()}))
"""

DEFAULT_STEPS = {"lenet5": 200, "resnet20": 5, "vgg11_cifar": 4, "resnet18": 3}


def run_child(name: str, batch: int, steps: int, tuned: bool, threads: int, pool: bool = True) -> dict:
    env = dict(os.environ, CNNKIT_NUM_THREADS=str(threads))
    env.pop("CNNKIT_TUNE_MALLOC", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(batch), str(steps), "1" if tuned else "0", "1" if pool else "0"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet5:256,resnet20:128,vgg11_cifar:128,resnet18:16")
    parser.add_argument("--steps", type=int, default=None, help="steps per child (default: per model)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ab", choices=("malloc", "pool"), default="malloc",
                        help="malloc: plain vs tune_malloc; pool: the buffer pool off vs on")
    parser.add_argument("--tuned", action="store_true", help="with --ab pool: both children tune malloc")
    args = parser.parse_args()
    if args.ab == "malloc":
        variants, label = {False: (False, True), True: (True, True)}, "plain vs tuned"
    else:
        variants = {False: (args.tuned, False), True: (args.tuned, True)}
        label = f"pool off vs on ({'tuned' if args.tuned else 'plain'} malloc)"
    print(f"threads {args.threads}, rounds {args.rounds}; medians per step, {label}")
    print(f"{'model':>18} {'cpu ms':>15} {'wall ms':>15} {'sys ms':>11} {'faults':>15} {'RSS MB':>11} cpu ratio")
    for item in args.models.split(","):
        name, batch = item.split(":")
        steps = args.steps or DEFAULT_STEPS.get(name, 5)
        runs = {False: [], True: []}
        for _ in range(args.rounds):
            for b in (False, True):
                tuned, pool = variants[b]
                runs[b].append(run_child(name, int(batch), steps, tuned, args.threads, pool))

        def med(tuned, key, runs=runs):
            return statistics.median(r[key] for r in runs[tuned])

        cols = [f"{med(False, k):7.1f}/{med(True, k):<7.1f}" for k in ("cpu_ms", "wall_ms")]
        cols.append(f"{med(False, 'sys_ms'):5.0f}/{med(True, 'sys_ms'):<5.0f}")
        cols.append(f"{med(False, 'faults'):7.0f}/{med(True, 'faults'):<7.0f}")
        cols.append(f"{med(False, 'rss_mb'):5.0f}/{med(True, 'rss_mb'):<5.0f}")
        ratio = med(False, "cpu_ms") / med(True, "cpu_ms")
        same = len({r["loss"] for r in runs[False] + runs[True]}) == 1
        print(f"{name + ' b' + batch:>18} {' '.join(cols)} {ratio:.2f}x   ({runs[True][0]['status']}; "
              f"last losses {'identical' if same else 'DIFFER'})")


if __name__ == "__main__":
    main()
