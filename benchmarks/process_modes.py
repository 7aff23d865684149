"""Why one tree runs at different speeds in different processes: one process's record.

Runs a ``cnn_vs_torch.py`` model workload (both frameworks, alternating, with the pause and
warm-up spin of ``timing.interleaved``; ``--quiet N`` keeps only pairs in which no thread
waited for a CPU), then the same passes with every op's forward timed per call (the ops in
call order, with the address mod 4 KiB of each op's first input and output), and prints one
JSON line: pass times of both frameworks, per-op medians, the CPUs the threads ended on,
how many parallel regions the pin guard left unpinned (other processes busy), page faults
and context switches over the timed pairs, a memory probe, the buffer pool's chunk
addresses and how much of them the kernel backs with huge pages. Run it in many fresh
processes and compare the fast ones with the slow ones:

    for i in $(seq 12); do python benchmarks/process_modes.py resnet18-infer-b1 --threads 2; done > modes.jsonl
    python benchmarks/process_modes.py --compare modes.jsonl

What it showed for ResNet-18 at batch 1 (docs/performance.md, "ResNet-18 at batch 1, eval"):
one thread, per-process times within 4%; two threads, slow and fast stretches that change
within a process every few seconds, with nothing recorded here differing between them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import PAUSE_S, interleaved, set_threads, spin_cnnkit, subclasses  # noqa: E402

from cnnkit.function import Function  # noqa: E402

NOW = time.perf_counter  # --clock cpu: the calling thread's CPU time (meaningful with --threads 1)
CALLS: list = []   # (op name, seconds, input and output address mod 4 KiB) of the pass timed, in call order


def instrument() -> None:
    """Time every op's forward, per call."""
    for cls in subclasses(Function):
        if "forward" not in cls.__dict__:
            continue
        original = cls.__dict__["forward"]

        def timed(self, *args, _original=original, **kwargs):
            start = NOW()
            out = _original(self, *args, **kwargs)
            t = NOW() - start
            CALLS.append((type(self).__name__, t, _where(args[0] if args else None), _where(out)))
            return out

        cls.forward = timed


def _where(a):
    """An array's address mod 4 KiB (None for anything else)."""
    a = a[0] if isinstance(a, tuple) and a else a
    return a.ctypes.data % 4096 if hasattr(a, "ctypes") else None


def pool_memory() -> dict:
    """The buffer pool's chunks: address mod 2 MiB, and AnonHugePages kB from /proc/self/smaps."""
    from cnnkit.backend import buffers

    chunks = [(c.memory.ctypes.data, c.size) for c in buffers._pool.chunks]
    huge = {}
    start = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                start = next((a for a, s in chunks if lo <= a < hi or a <= lo < a + s), None)
            elif head == "AnonHugePages:" and start is not None:
                huge[start] = huge.get(start, 0) + int(line.split()[1])
    return {"chunks": [{"address_mod_2m": a % (1 << 21), "mib": s >> 20, "huge_kb": huge.get(a, 0)}
                       for a, s in chunks]}


def memory_probe() -> dict:
    """Milliseconds (medians of 5) of a few memory-bound passes: the machine's memory as this process sees it."""
    import numpy as np

    a = np.ones(2**24, np.float32)              # 64 MiB: from memory
    b = np.ones(2**18, np.float32)              # 1 MiB: in L2
    pages = np.ones(2**26, np.float32)          # 256 MiB, one float per 4 KiB page read: the TLB
    out = {}
    for name, fn in (("sum64m", lambda: a.sum()), ("sum1m", lambda: b.sum()), ("pages", lambda: pages[::1024].sum())):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = round(statistics.median(times) * 1e3, 3)
    return out


def cpu_of(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def record(args) -> dict:
    import torch
    from cnn_vs_torch import WORKLOADS

    set_threads(args.threads, torch)
    ours, theirs = WORKLOADS[args.workload]()[:2]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    r = interleaved(ours, theirs, args.repeats, clock="cpu" if args.clock == "cpu" else "wall", quiet=args.quiet)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out = {"workload": args.workload, "clock": args.clock, "threads": args.threads, "pid": os.getpid(), "load": r["load"],
           "ours_ms": [round(t * 1e3, 2) for t in r["ours"]],
           "theirs_ms": [round(t * 1e3, 2) for t in r["theirs"]], "ratio": round(r["ratio"], 3), "pairs_run": r["pairs"],
           "rusage": {k: getattr(after, k) - getattr(usage, k) for k in ("ru_minflt", "ru_majflt", "ru_nvcsw", "ru_nivcsw")},
           "probe_ms": memory_probe()}
    instrument()
    from cnnkit.backend import cores

    guard = cores._others_busy
    busy = {True: 0, False: 0}

    def counted():
        b = guard()
        busy[bool(b)] += 1
        return b

    cores._others_busy = counted
    per_call: list[list[float]] = []
    names: list[str] = []
    for _ in range(args.repeats):
        time.sleep(PAUSE_S)
        spin_cnnkit()
        CALLS.clear()
        start = NOW()
        ours()
        total = NOW() - start
        names = [n for n, *_ in CALLS]
        per_call.append([c[1] for c in CALLS] + [total - sum(c[1] for c in CALLS)])
        out["addresses"] = [c[2:] for c in CALLS]
    names.append("(outside ops)")
    out["ops"] = [[n, round(statistics.median(col) * 1e3, 3)] for n, col in zip(names, zip(*per_call))]
    cores._others_busy = guard
    out["regions_unpinned"] = f"{busy[True]} of {busy[True] + busy[False]}"
    out["main_cpu"] = cpu_of(os.getpid())

    out["helper_cpus"] = [cpu_of(t) for t in getattr(cores._helpers, "tids", [])] if hasattr(cores, "_helpers") else []
    out |= pool_memory()
    return out


def compare(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    rows.sort(key=lambda r: statistics.median(r["ours_ms"]))
    print("| pid | cnnkit ms | PyTorch ms | ratio | main cpu | unpinned regions | rusage | probe ms | pool chunks (addr mod 2M, huge kB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        chunks = ", ".join(f"{c['address_mod_2m']:#x}/{c['huge_kb']}" for c in r["chunks"])
        print(f"| {r['pid']} | {statistics.median(r['ours_ms']):.1f} | {statistics.median(r['theirs_ms']):.1f} "
              f"| {r['ratio']:.2f} | {r['main_cpu']} | {r.get('regions_unpinned')} | {r.get('rusage')} | {r.get('probe_ms')} | {chunks} |")
    fast, slow = rows[: len(rows) // 2], rows[len(rows) // 2:]
    print("\nper op, median over the faster half / slower half of the processes (ms):")
    for i, (name, _) in enumerate(rows[0]["ops"]):
        f = statistics.median(r["ops"][i][1] for r in fast)
        s = statistics.median(r["ops"][i][1] for r in slow)
        if abs(s - f) > 0.1:
            print(f"  {i:3d} {name:28s} {f:7.3f} {s:7.3f}  {s - f:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", nargs="?", default="resnet18-infer-b1")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quiet", type=int, default=0,
                        help="count only pairs in which no thread waited for a CPU, until this many (timing.interleaved)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--compare", metavar="JSONL", help="summarize records instead of running")
    args = parser.parse_args()
    global NOW
    NOW = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.compare:
        compare(args.compare)
        return
    print(json.dumps(record(args)), flush=True)


if __name__ == "__main__":
    main()
