"""Whether the two CPUs slow each other down, beside a workload's passes: the machine, not the code.

Alternates a few passes of a ``cnn_vs_torch.py`` workload (pause and warm-up spin before each,
as ``timing.interleaved``) with a compute probe: one thread alone on the first CPU, then one
thread on each of two CPUs at once (a numba loop over 8 KiB, without the GIL: no memory
traffic, no lock). On CPUs that do not share a core the two-at-once time equals the alone
time; where the host runs both virtual CPUs on one physical core (or gives their time to
others), each thread of the pair runs slower, and so does every two-thread region of a pass.
Prints one line per round and the probe's medians over the rounds with fast and with slow
passes.

Usage:
    python benchmarks/vcpu_contention.py [WORKLOAD] [--seconds 100] [--threads 2] [--fast-ms 37] [--slow-ms 41]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import PAUSE_S, set_threads, spin_cnnkit  # noqa: E402

from cnnkit.backend.kernels import njit  # noqa: E402

BURN_STEPS = 50_000   # ~5.5 ms alone on this machine


@njit(nogil=True, cache=True, fastmath=True)
def _burn(x, y, steps):
    for _ in range(steps):
        for i in range(x.size):
            y[i] = y[i] * x[i] + x[i]
    return y[0]


def _timed_burn(cpu: int, out: dict) -> None:
    os.sched_setaffinity(0, {cpu})
    x, y = np.full(2048, 0.999, np.float32), np.zeros(2048, np.float32)
    start = time.perf_counter()
    _burn(x, y, BURN_STEPS)
    out[cpu] = (time.perf_counter() - start) * 1e3


def probe(cpus: tuple[int, int]) -> tuple[float, float]:
    """(ms alone on cpus[0], ms of the slower of two at once on both), in threads of their own."""
    alone: dict = {}
    thread = threading.Thread(target=_timed_burn, args=(cpus[0], alone))
    thread.start()
    thread.join()
    pair: dict = {}
    threads = [threading.Thread(target=_timed_burn, args=(c, pair)) for c in cpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return alone[cpus[0]], max(pair.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", nargs="?", default="resnet18-infer-b1")
    parser.add_argument("--seconds", type=float, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fast-ms", type=float, default=37, help="passes below this count as fast")
    parser.add_argument("--slow-ms", type=float, default=41, help="passes above this count as slow")
    args = parser.parse_args()
    cpus = tuple(sorted(os.sched_getaffinity(0))[:2])
    if len(cpus) < 2:
        raise SystemExit(f"vcpu_contention.py needs two CPUs; this process may run on {cpus}")
    from cnn_vs_torch import WORKLOADS

    set_threads(args.threads)
    ours = WORKLOADS[args.workload]()[0]
    for _ in range(3):
        ours()
    probe(cpus)                                              # compiles or loads the probe
    rounds = []
    end = time.time() + args.seconds
    while time.time() < end:
        passes = []
        for _ in range(3):
            time.sleep(PAUSE_S)
            spin_cnnkit()
            start = time.perf_counter()
            ours()
            passes.append((time.perf_counter() - start) * 1e3)
        probes = [probe(cpus) for _ in range(3)]
        alone = statistics.median(p[0] for p in probes)
        pair = statistics.median(p[1] for p in probes)
        rounds.append((statistics.median(passes), alone, pair))
        print(f"{time.strftime('%T')} passes {[round(p, 1) for p in passes]} ms; probe alone {alone:.2f} ms, "
              f"two at once {pair:.2f} ms ({pair / alone:.2f}x)", flush=True)
    for name, keep in ((f"rounds with passes < {args.fast_ms} ms", lambda r: r[0] < args.fast_ms),
                       (f"rounds with passes > {args.slow_ms} ms", lambda r: r[0] > args.slow_ms)):
        kept = [r for r in rounds if keep(r)]
        if kept:
            print(f"{name}: {len(kept)}; probe alone {statistics.median(r[1] for r in kept):.2f} ms, "
                  f"two at once {statistics.median(r[2] for r in kept):.2f} ms")


if __name__ == "__main__":
    main()
