"""Where the second core's time goes: every parallel region of a workload, traced.

Runs a zoo workload (``dispatch_ab.py``'s calls) with ``cores.tracing`` on and splits each
call's wall time into: time with no parallel region open (serial ops, Python); per region,
the wake-up (region start -> the helper's first chunk; the whole region when the helper
took none), the tail (one thread busy at the region's end while the other has nothing left,
plus the caller's wait after both ended), and per chunk its wall time minus its thread's CPU
time (waits inside a chunk: the GIL, or no CPU). Settings of ``backend.dispatch`` given as
NAME=VALUE alternate call by call with the thresholds as they are, each call after a pause
and a spin of cnnkit's threads (as the other benchmarks time them). ``--regions``: also a
table per region (in call order, medians over the calls): its chunk function and count, the
chunks each thread ran, wake-up, tail, which thread ended last, the median chunk
(docs/performance.md "ResNet-18 at batch 1: the regions' tails (Dec 6)").

Usage:
    python benchmarks/pool_trace.py [NAME=VALUE ...] [--model resnet18] [--batch 1] [--optimized | --train]
        [--steps 1] [--repeats 9] [--threads 2] [--regions]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dispatch_ab import MODELS, model_call  # noqa: E402
from timing import PAUSE_S, load_average, runqueue_wait, set_threads, settled_wait, spin_cnnkit  # noqa: E402

from cnnkit.backend import cores, dispatch  # noqa: E402


def split(events, start: int, end: int) -> dict:
    """The parts of one call's wall time (ms), from its trace ``events``."""
    regions = sorted((e for e in events if e[0] == "region"), key=lambda e: e[3])
    chunks = collections.defaultdict(list)
    for e in events:
        if e[0] == "chunk":
            chunks[e[1]].append(e)
    parts = collections.Counter()
    wakes = []
    covered, last = 0, start
    for _, seq, caller, r0, r1, *_ in regions:
        covered += max(0, r1 - max(r0, last))
        last = max(last, r1)
        mine = [c for c in chunks[seq] if c[2] == caller]
        theirs = [c for c in chunks[seq] if c[2] != caller]
        parts["regions"] += 1
        for c in chunks[seq]:
            parts["chunk waits"] += (c[4] - c[3]) - (c[6] - c[5])
        if not theirs:
            parts["helper absent"] += r1 - r0
            parts["regions without helper"] += 1
            continue
        first = min(c[3] for c in theirs)
        wakes.append(first - r0)
        parts["wake-up"] += first - r0
        caller_end, helper_end = max(c[4] for c in mine) if mine else r0, max(c[4] for c in theirs)
        parts["tail"] += abs(caller_end - helper_end) + (r1 - max(caller_end, helper_end))
        parts["caller's end wait"] += r1 - max(caller_end, helper_end)
    parts["serial"] = (end - start) - covered
    parts["wall"] = end - start
    out = {k: v / 1e6 for k, v in parts.items() if k not in ("regions", "regions without helper")}
    out["regions"] = parts["regions"]
    out["regions without helper"] = parts["regions without helper"]
    spins = collections.Counter(e[1] for e in events if e[0] == "spin")
    out["helper spins: found / timed out / preempted"] = f"{spins[1]}/{spins[0]}/{spins[-1]}"
    out["median wake-up us"] = statistics.median(wakes) / 1e3 if wakes else float("nan")
    return out


def per_region(events) -> list[tuple]:
    """Per region of one call, in call order: (fn name, count, caller's chunks, helper's chunks,
    wake-up us, tail us, "caller" | "helper" ended last, median chunk us); wake-up and
    ended-last None when the helper took no chunk (the tail is then the whole region)."""
    regions = sorted((e for e in events if e[0] == "region"), key=lambda e: e[3])
    chunks = collections.defaultdict(list)
    for e in events:
        if e[0] == "chunk":
            chunks[e[1]].append(e)
    rows = []
    for _, seq, caller, r0, r1, name, count in regions:
        mine = [c for c in chunks[seq] if c[2] == caller]
        theirs = [c for c in chunks[seq] if c[2] != caller]
        chunk = statistics.median(c[4] - c[3] for c in chunks[seq]) / 1e3 if chunks[seq] else 0.0
        if not theirs:
            rows.append((name, count, len(mine), 0, None, (r1 - r0) / 1e3, None, chunk))
            continue
        caller_end = max(c[4] for c in mine) if mine else r0
        helper_end = max(c[4] for c in theirs)
        rows.append((name, count, len(mine), len(theirs), (min(c[3] for c in theirs) - r0) / 1e3,
                     abs(caller_end - helper_end) / 1e3, "caller" if caller_end > helper_end else "helper", chunk))
    return rows


def print_regions(label: str, calls: list[list[tuple]]) -> None:
    """The table of ``per_region`` rows over calls (calls whose regions differ in number are left out)."""
    counts = collections.Counter(len(c) for c in calls)
    size = counts.most_common(1)[0][0]
    calls = [c for c in calls if len(c) == size]
    print(f"\n{label}: per region, medians over {len(calls)} calls (us)")
    print("| # | function | count | chunks caller/helper | wake-up | tail | helper ended last | chunk |")
    print("|---|---|---|---|---|---|---|---|")
    for i in range(size):
        rows = [c[i] for c in calls]
        wakes = [r[4] for r in rows if r[4] is not None]
        helper_last = sum(r[6] == "helper" for r in rows)
        print(f"| {i} | {rows[0][0]} | {rows[0][1]} | {statistics.median(r[2] for r in rows):.0f}/"
              f"{statistics.median(r[3] for r in rows):.0f} | "
              f"{statistics.median(wakes) if wakes else float('nan'):.0f} | {statistics.median(r[5] for r in rows):.0f} | "
              f"{helper_last}/{len(rows)} | {statistics.median(r[7] for r in rows):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("changes", nargs="*", metavar="NAME=VALUE")
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--optimized", action="store_true")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--regions", action="store_true", help="also a table per region")
    args = parser.parse_args()
    changed = {}
    for item in args.changes:
        name, _, value = item.partition("=")
        changed[name] = type(getattr(dispatch, name))(float(value))
    as_is = {name: getattr(dispatch, name) for name in changed}
    set_threads(args.threads)
    run = model_call(args.model, args.batch, args.train, args.optimized, args.steps)
    settings = [("as is", as_is)] + ([("changed", changed)] if changed else [])
    results = collections.defaultdict(list)
    regions = collections.defaultdict(list)
    load = load_average()
    for r in range(args.repeats + 2):
        for label, values in (settings if r % 2 == 0 else settings[::-1]):
            for name, value in values.items():
                setattr(dispatch, name, value)
            time.sleep(PAUSE_S)
            spin_cnnkit()
            before = runqueue_wait()
            with cores.tracing() as events:
                start = time.perf_counter_ns()
                run()
                end = time.perf_counter_ns()
            waited = (settled_wait() or 0) - (before or 0)
            if r >= 2:
                part = split(list(events), start, end)
                if args.regions:
                    regions[label].append(per_region(list(events)))
                part["run-queue wait"] = waited * 1e3
                results[label].append(part)
    for name, value in as_is.items():
        setattr(dispatch, name, value)
    what = (f"{args.model} {'training' if args.train else 'inference'}{' (optimized)' if args.optimized else ''}"
            f" batch {args.batch} x {args.steps} steps, {args.threads} threads, wall clock, "
            f"{args.repeats} calls each, load {load} / {load_average()}")
    print(what)
    keys = ["wall", "serial", "wake-up", "helper absent", "tail", "caller's end wait", "chunk waits",
            "run-queue wait", "regions", "regions without helper", "median wake-up us"]
    text = ["helper spins: found / timed out / preempted"]
    print("| ms per call (median) | " + " | ".join(f"{label} {values or ''}" for label, values in settings) + " |")
    print("|---|" + "---|" * len(settings))
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{statistics.median(p.get(key, 0) for p in results[label]):.3f}"
                                         for label, _ in settings) + " |")
    for key in text:
        print(f"| {key} | " + " | ".join(results[label][len(results[label]) // 2][key] for label, _ in settings) + " |")
    for label, values in settings if args.regions else ():
        print_regions(f"{label} {values or ''}", regions[label])


if __name__ == "__main__":
    main()
