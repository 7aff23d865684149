"""Data-parallel scaling on this machine: 2 ranks x 1 thread vs 1 rank x 1 thread vs 1 rank x 2 threads.

For LeNet-5 (MNIST-sized inputs) and the CIFAR ResNet-20, each configuration trains with
SGD (momentum) on random data in its own process(es): warm-up steps, then timed steps.
The 2-rank runs go through cnnkit.distributed exactly as `cnnkit train --nproc 2` does
(DistributedOptimizer: one allreduce per gradient bucket; DataLoader shards do not
matter here, the batches are made in memory).

Configurations, at the same global batch B (strong scaling) and at B per rank (weak):

    1x1     one process, 1 thread, batch B
    1x2     one process, 2 threads (cnnkit's kernels and BLAS), batch B
    2x1     mpiexec -n 2, 1 thread per rank, batch B/2 per rank (global B)
    2x1w    mpiexec -n 2, 1 thread per rank, batch B per rank (global 2B)

Figures: images per second (global), and per step of the 2-rank runs the time spent in
the allreduce call (which includes waiting for the other rank) and the pure allreduce
time of the gradient buffer (measured after a barrier, 20 times, median). Efficiency of
2x1 = its img/s / (2 x the img/s of 1x1).

The machine is shared: the configurations run interleaved, in a rotating order, for
``--rounds`` rounds; each figure is the median over rounds of the per-round ratio to 1x1.
``uptime`` is printed before and after.

Usage:
    python benchmarks/distributed_scaling.py [--rounds 5] [--models lenet5,resnet20] [--json FILE]
    mpiexec -n 2 python benchmarks/distributed_scaling.py --allreduce-sizes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnkit import functional as F  # noqa: E402
from cnnkit import models, optim  # noqa: E402
from cnnkit.distributed import DistributedOptimizer, Job, broadcast_parameters, world  # noqa: E402
from cnnkit.distributed.launch import find_mpiexec  # noqa: E402
from cnnkit.tensor import Tensor  # noqa: E402

SETUPS = {  # model: (input shape, global batch B, warm-up steps, timed steps)
    "lenet5": ((1, 28, 28), 64, 5, 40),
    "resnet20": ((3, 32, 32), 128, 2, 8),
}
CONFIGS = ("1x1", "1x2", "2x1", "2x1w")


def worker(model_name: str, batch: int, threads: int, warmup: int, steps: int) -> dict:
    """Train ``steps`` timed steps on this rank; return rank 0's figures (every rank takes part)."""
    comm = world()
    with Job("benchmark", comm, threads=threads):
        shape, _, _, _ = SETUPS[model_name]
        model = models.get_model(model_name, generator=np.random.default_rng(0))
        broadcast_parameters(model, comm)
        rng = np.random.default_rng(1 + comm.rank)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        t = rng.integers(0, 10, batch)
        opt = DistributedOptimizer(optim.SGD(model.parameters(), lr=0.01, momentum=0.9), comm)
        model.train()

        def step() -> tuple[float, float, float, float]:
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(Tensor(x)), t)
            t1 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            t2 = time.perf_counter()
            opt.synchronize()
            t3 = time.perf_counter()
            opt.optimizer.step()
            t4 = time.perf_counter()
            return t1 - t0, t2 - t1, t3 - t2, t4 - t3

        for _ in range(warmup):
            step()
        comm.barrier()
        phases = np.array([step() for _ in range(steps)])      # (steps, 4): forward, backward, allreduce, update
        totals = phases.sum(axis=1)
        pure = []
        if comm.size > 1:  # the gradient buffers' allreduce alone, both ranks ready
            buffers = [b.buffer for b in opt.gradients.buckets]
            for _ in range(20):
                comm.barrier()
                start = time.perf_counter()
                for buffer in buffers:
                    comm.allreduce(buffer)
                pure.append(time.perf_counter() - start)
        step_time = float(np.median(totals))
        compute = phases[:, [0, 1, 3]].sum(axis=1)
        return {
            "img_per_s": comm.size * batch / step_time,
            "best_img_per_s": comm.size * batch / float(totals.min()),
            "step_ms": 1000 * step_time,
            "best_compute_ms": 1000 * float(compute.min()),
            "backward_share": float(np.median(phases[:, 1] / compute)),
            "allreduce_in_step_ms": 1000 * float(np.median(phases[:, 2])),
            "allreduce_pure_ms": 1000 * statistics.median(pure) if pure else 0.0,
            "gradient_bytes": opt.gradients.nbytes,
            "batch": batch,
            "threads": threads,
            "ranks": comm.size,
        }


def allreduce_sizes() -> list[tuple[int, float]]:
    """(bytes, median seconds) of one float32 allreduce per size, both ranks ready (after a barrier)."""
    comm = world()
    out = []
    for nbytes in (4 * 2**10, 64 * 2**10, 2**20, 4 * 2**20, 16 * 2**20, 64 * 2**20):
        buffer = np.ones(nbytes // 4, np.float32)
        times = []
        for _ in range(15):
            comm.barrier()
            start = time.perf_counter()
            comm.allreduce(buffer)
            times.append(time.perf_counter() - start)
        out.append((nbytes, statistics.median(times)))
    return out


def run_config(model_name: str, config: str) -> dict:
    shape, B, warmup, steps = SETUPS[model_name]
    ranks = 2 if config.startswith("2") else 1
    threads = 2 if config == "1x2" else 1
    batch = B // 2 if config == "2x1" else B
    args = [sys.executable, __file__, "--worker", model_name, "--batch", str(batch), "--threads", str(threads),
            "--warmup", str(warmup), "--steps", str(steps)]
    if ranks > 1:
        args = [find_mpiexec(), "-n", str(ranks)] + args
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--json", default=None, help="also write every run's figures to this file")
    parser.add_argument("--worker", default=None)
    parser.add_argument("--allreduce-sizes", action="store_true",
                        help="(under mpiexec -n 2) time one allreduce of 4 KB .. 64 MB instead")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()
    if args.allreduce_sizes:
        for nbytes, seconds in allreduce_sizes():
            if world().rank == 0:
                print(f"| {nbytes / 2**20:g} MB | {1000 * seconds:.3f} ms | {nbytes / seconds / 1e9:.2f} GB/s |")
        return
    if args.worker:
        result = worker(args.worker, args.batch, args.threads, args.warmup, args.steps)
        if world().rank == 0:
            print(json.dumps(result), flush=True)
        return
    print(f"before: {uptime()}", flush=True)
    everything = {}
    for model_name in args.models.split(","):
        rows: dict[str, list[dict]] = {c: [] for c in CONFIGS}
        for r in range(args.rounds):
            order = CONFIGS[r % len(CONFIGS):] + CONFIGS[: r % len(CONFIGS)]
            for config in order:
                rows[config].append(run_config(model_name, config))
            line = ", ".join(f"{c} {rows[c][-1]['img_per_s']:.0f}" for c in CONFIGS)
            print(f"{model_name} round {r + 1}: img/s {line}; load {uptime().split('load average:')[1].strip()}",
                  flush=True)
        _, B, _, _ = SETUPS[model_name]
        print(f"\n{model_name} (global batch B = {B}; medians over {args.rounds} rounds)")
        print("| configuration | img/s | vs 1 rank x 1 thread | efficiency | step ms | allreduce in step ms | "
              "pure allreduce ms |")
        print("|---|---|---|---|---|---|---|")
        for config in CONFIGS:
            ratios = [row["img_per_s"] / base["img_per_s"] for row, base in zip(rows[config], rows["1x1"])]
            workers = 2 if config != "1x1" else 1
            def med(key, runs=rows[config]):
                return statistics.median(row[key] for row in runs)

            label = {"1x1": "1 rank x 1 thread, batch B", "1x2": "1 rank x 2 threads, batch B",
                     "2x1": "2 ranks x 1 thread, B/2 each", "2x1w": "2 ranks x 1 thread, B each"}[config]
            print(f"| {label} | {med('img_per_s'):.0f} | {statistics.median(ratios):.2f}x | "
                  f"{statistics.median(ratios) / workers:.0%} | {med('step_ms'):.1f} | "
                  f"{med('allreduce_in_step_ms'):.2f} | {med('allreduce_pure_ms'):.3f} |")
        print(f"gradient buffer: {rows['2x1'][0]['gradient_bytes'] / 2**20:.3f} MB per step and rank; fastest "
              f"step seen (least disturbed by the load), img/s: " + ", ".join(
                  f"{c} {max(row['best_img_per_s'] for row in rows[c]):.0f}" for c in CONFIGS)
              + f"; backward share of compute {statistics.median(r['backward_share'] for r in rows['1x1']):.2f}")
        everything[model_name] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))
    print(f"\nafter: {uptime()}", flush=True)


if __name__ == "__main__":
    main()
