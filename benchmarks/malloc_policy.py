"""A/B of ``cnnkit.backend.malloc.tune_malloc``: training steps in a cnnkit-only process.

The policy is process-wide and glibc's dynamic thresholds depend on the process's
allocation history (PyTorch in the same process changes them), so each measurement is a
fresh child process running only cnnkit: plain, then tuned, alternating, ``--rounds``
times. Each child trains ``--steps`` steps of the model on random data after two warm-up
steps and reports CPU time, wall time, system time and minor page faults per step, and
its peak RSS. Ratios are plain / tuned of the medians (above 1: the tuned policy faster).

Usage:
    python benchmarks/malloc_policy.py [--models lenet5:256,resnet20:128] [--steps N]
                                       [--rounds 3] [--threads 1]
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
from cnnkit.backend.malloc import tune_malloc
name, batch, steps, tuned = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
status = tune_malloc() if tuned else "plain"
model = cnnkit.models.get_model(name, num_classes=10)
shape = cnnkit.models.default_input_shape(name)
g = np.random.default_rng(0)
x = cnnkit.tensor(g.standard_normal((batch, *shape), dtype=np.float32))
y = cnnkit.tensor(g.integers(0, 10, batch))
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
def step():
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
for _ in range(2):
    step()
r0, c0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
for _ in range(steps):
    step()
r1, c1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
print(json.dumps({"status": status, "cpu_ms": (c1 - c0) / steps * 1e3, "wall_ms": (w1 - w0) / steps * 1e3,
                  "sys_ms": (r1.ru_stime - r0.ru_stime) / steps * 1e3,
                  "faults": (r1.ru_minflt - r0.ru_minflt) / steps, "rss_mb": r1.ru_maxrss / 1024}))
"""

DEFAULT_STEPS = {"lenet5": 200, "resnet20": 5, "vgg11_cifar": 4, "resnet18": 3}


def run_child(name: str, batch: int, steps: int, tuned: bool, threads: int) -> dict:
    env = dict(os.environ, CNNKIT_NUM_THREADS=str(threads))
    env.pop("CNNKIT_TUNE_MALLOC", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(batch), str(steps), "1" if tuned else "0"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet5:256,resnet20:128,vgg11_cifar:128,resnet18:16")
    parser.add_argument("--steps", type=int, default=None, help="steps per child (default: per model)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"threads {args.threads}, rounds {args.rounds}; medians per step, plain vs tuned")
    print(f"{'model':>18} {'cpu ms':>15} {'wall ms':>15} {'sys ms':>11} {'faults':>15} {'RSS MB':>11} cpu ratio")
    for item in args.models.split(","):
        name, batch = item.split(":")
        steps = args.steps or DEFAULT_STEPS.get(name, 5)
        runs = {False: [], True: []}
        for _ in range(args.rounds):
            for tuned in (False, True):
                runs[tuned].append(run_child(name, int(batch), steps, tuned, args.threads))

        def med(tuned, key, runs=runs):
            return statistics.median(r[key] for r in runs[tuned])

        cols = [f"{med(False, k):7.1f}/{med(True, k):<7.1f}" for k in ("cpu_ms", "wall_ms")]
        cols.append(f"{med(False, 'sys_ms'):5.0f}/{med(True, 'sys_ms'):<5.0f}")
        cols.append(f"{med(False, 'faults'):7.0f}/{med(True, 'faults'):<7.0f}")
        cols.append(f"{med(False, 'rss_mb'):5.0f}/{med(True, 'rss_mb'):<5.0f}")
        ratio = med(False, "cpu_ms") / med(True, "cpu_ms")
        print(f"{name + ' b' + batch:>18} {' '.join(cols)} {ratio:.2f}x   ({runs[True][0]['status']})")


if __name__ == "__main__":
    main()
