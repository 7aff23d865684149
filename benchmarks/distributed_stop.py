"""What stopping every rank together on Ctrl-C costs per training step (2 ranks, LeNet-5).

Each job is `mpiexec -n 2 python distributed_stop.py --worker MODE`: one `Job` (1 thread
per rank), LeNet-5, SGD with momentum, batch 32 per rank of random MNIST-sized data,
warm-up steps, then timed steps; rank 0 reports the median wall time and CPU time
(``time.process_time``: this process's own cycles, what a rank burns while it waits) per
step. The modes:

    before     the cnnkit tree given by --before (a copy of the code before the change):
               blocking Allreduce, signals act where they land
    vote       this tree: the stop ballot rides in the first gradient bucket (stop.py)
    poll-spin  this tree, the gradient allreduce made interruptible instead: Iallreduce,
               then Test() in a Python loop (Python can run signal handlers between calls)
    poll-sleep the same with a 100 us sleep between Test() calls (gives the core back)

The two poll modes are the alternative design the docstring of cnnkit/distributed/stop.py
argues against; they are measured here, not used by cnnkit. The jobs run interleaved, in
a rotating order, for --rounds rounds; each figure is the median over rounds of the
per-round ratio to `before`. `uptime` is printed before and after (the machine is shared).

--vote-cost times, in one process (CPU time), what the vote adds to each step of this tree:
the ballot written into the first bucket's two slots and the decision read back from them.

Usage:
    git -C /work/main archive main | tar -x -C /tmp/before      # the tree before the change
    python benchmarks/distributed_stop.py --before /tmp/before [--rounds 5] [--steps 300]
    python benchmarks/distributed_stop.py --vote-cost
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("before", "vote", "poll-spin", "poll-sleep")


def worker(mode: str, warmup: int, steps: int) -> dict | None:
    import numpy as np

    from cnnkit import functional as F
    from cnnkit import models, optim
    from cnnkit.distributed import DistributedOptimizer, Job, broadcast_parameters, world
    from cnnkit.tensor import Tensor

    comm = world()
    with Job("benchmark", comm, threads=1):
        if mode.startswith("poll"):
            MPI, pause = comm._MPI, (mode == "poll-sleep")

            def polled_allreduce(array, op="sum"):
                request = comm.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM)
                while not request.Test():
                    if pause:
                        time.sleep(100e-6)
                return array

            comm.allreduce = polled_allreduce
        model = models.get_model("lenet5", generator=np.random.default_rng(0))
        broadcast_parameters(model, comm)
        rng = np.random.default_rng(1 + comm.rank)
        x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
        t = rng.integers(0, 10, 32)
        opt = DistributedOptimizer(optim.SGD(model.parameters(), lr=0.01, momentum=0.9), comm)
        model.train()

        def step() -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            loss = F.cross_entropy(model(Tensor(x)), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return time.perf_counter() - wall, time.process_time() - cpu

        for _ in range(warmup):
            step()
        comm.barrier()
        timed = [step() for _ in range(steps)]
        comm.barrier()
        if comm.rank != 0:
            return None
        return {"mode": mode, "step_ms": 1000 * statistics.median(w for w, _ in timed),
                "cpu_ms": 1000 * statistics.median(c for _, c in timed)}


def vote_cost(calls: int = 200_000) -> float:
    """CPU microseconds per step of the vote's own work (ballot into the slots, decision read back)."""
    import numpy as np

    from cnnkit.distributed.stop import StopSignals

    stop, votes = StopSignals(2), np.zeros(2, np.float32)   # a first bucket's two slots
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(calls):
            votes[...] = stop.ballot()
            stop.decide(votes)
        best = min(best, (time.process_time() - start) / calls)
    return 1e6 * best


def run(mode: str, before: Path, warmup: int, steps: int) -> dict:
    from cnnkit.distributed.launch import find_mpiexec

    tree = before if mode == "before" else ROOT
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [find_mpiexec(), "-n", "2", sys.executable, __file__, "--worker", mode, "--warmup", str(warmup),
               "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{mode}: the job failed (status {done.returncode})\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=MODES)
    parser.add_argument("--before", type=Path, help="a copy of the cnnkit tree before the change")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--vote-cost", action="store_true", help="time the vote's own work per step (CPU time)")
    args = parser.parse_args()
    if args.vote_cost:
        sys.path.insert(0, str(ROOT))
        print(f"the vote's own work: {vote_cost():.2f} us of CPU time per step (best of 5 x 200,000, one thread)")
        return
    if args.worker:
        sys.path.insert(0, os.environ.get("PYTHONPATH", str(ROOT)))
        result = worker(args.worker, args.warmup, args.steps)
        if result is not None:
            print(json.dumps(result), flush=True)
        return
    if args.before is None or not (args.before / "cnnkit").is_dir():
        parser.error(f"--before must be a cnnkit tree (a folder holding cnnkit/), got {args.before}")
    sys.path.insert(0, str(ROOT))
    modes = args.modes.split(",")
    print(f"uptime: {os.getloadavg()}; 2 ranks x 1 thread, LeNet-5, batch 32 per rank, "
          f"{args.steps} timed steps per job, {args.rounds} rounds")
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        order = modes[r % len(modes):] + modes[: r % len(modes)]
        for mode in order:
            results[mode].append(run(mode, args.before, args.warmup, args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{m} {results[m][-1]['step_ms']:.2f} ms "
                                            f"(cpu {results[m][-1]['cpu_ms']:.2f})" for m in modes), flush=True)
    print(f"uptime: {os.getloadavg()}")
    print(f"{'mode':<11} {'step ms':>8} {'cpu ms':>8} {'step / before':>14} {'cpu / before':>13}")
    for mode in modes:
        step = statistics.median(x["step_ms"] for x in results[mode])
        cpu = statistics.median(x["cpu_ms"] for x in results[mode])
        ratios = [(x["step_ms"] / b["step_ms"], x["cpu_ms"] / b["cpu_ms"])
                  for x, b in zip(results[mode], results.get("before", results[mode]))]
        print(f"{mode:<11} {step:8.2f} {cpu:8.2f} {statistics.median(a for a, _ in ratios):14.3f} "
              f"{statistics.median(c for _, c in ratios):13.3f}")


if __name__ == "__main__":
    main()
