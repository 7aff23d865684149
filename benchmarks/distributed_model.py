"""A model of data-parallel speed-up on 4-64 machines, from figures measured on this one.

Inputs (measured by distributed_scaling.py --json FILE, per model): one machine's training
throughput R (images/s; this 2-core machine, its least-disturbed step), the share of the
compute spent in backward (beta), and the gradient bytes G each rank sends per step.

Per step of a per-machine batch b on p machines (one rank per machine):

    compute        T_c(b) = b / R
    ring allreduce T_ar(p) = 2 (p - 1) / p * G / BW  +  2 (p - 1) * alpha
                   (reduce-scatter then all-gather: each rank sends and receives
                   2 (p - 1) / p of the buffer in 2 (p - 1) messages; alpha: latency of one)
    cnnkit today   T = T_c + T_ar                      (the allreduce after backward)
    overlapped     T = T_c + max(0, T_ar - beta T_c)   (buckets sent while backward runs,
                                                        as PyTorch DDP / Horovod do)
    speed-up       S(p) = p * T_c / T   (against one machine at batch b; global batch p * b)

Communication hides behind the backward pass (overlapped) from the per-machine batch
b* = T_ar * R / beta; without overlap it costs under 10% of a step from b10 = 9 T_ar R.

Usage:
    python benchmarks/distributed_model.py FIGURES.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

MACHINES = (4, 8, 16, 32, 64)
NETWORKS = {  # Gbit/s: (bytes per second, alpha: one message's latency in seconds; assumed, typical)
    1: (1e9 / 8, 50e-6),     # 1 GbE, TCP
    10: (10e9 / 8, 20e-6),   # 10 GbE, TCP
    100: (100e9 / 8, 3e-6),  # 100 Gbit/s InfiniBand / RoCE (RDMA)
}


def ring_allreduce(p: int, nbytes: float, bandwidth: float, alpha: float) -> float:
    return 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * alpha


def machine_figures(rows: dict) -> tuple[float, float, float, int]:
    """(R img/s of one machine, backward share, gradient bytes, batch B) from one model's runs."""
    best = max(max(r["best_img_per_s"] for r in rows[c]) for c in ("1x1", "1x2", "2x1"))
    beta = statistics.median(r["backward_share"] for r in rows["1x1"])
    return best, beta, rows["2x1"][0]["gradient_bytes"], rows["1x1"][0]["batch"]


def report(name: str, R: float, beta: float, G: float, B: int) -> None:
    print(f"\n{name}: one machine {R:.0f} img/s, backward {beta:.0%} of compute, gradients {G / 2**20:.2f} MB; "
          f"per-machine batch {B} (T_c = {1000 * B / R:.1f} ms)")
    print("| network | machines | T_ar ms | speed-up, cnnkit (allreduce after backward) | efficiency | "
          "speed-up, overlapped | b* (hides behind backward) | b10 (<10% without overlap) |")
    print("|---|---|---|---|---|---|---|---|")
    Tc = B / R
    for gbit, (bandwidth, alpha) in NETWORKS.items():
        for p in MACHINES:
            Tar = ring_allreduce(p, G, bandwidth, alpha)
            plain = p * Tc / (Tc + Tar)
            overlapped = p * Tc / (Tc + max(0.0, Tar - beta * Tc))
            b_star = Tar * R / beta
            b10 = 9 * Tar * R
            print(f"| {gbit} Gbit/s | {p} | {1000 * Tar:.2f} | {plain:.1f}x | {plain / p:.0%} | {overlapped:.1f}x | "
                  f"{b_star:.0f} | {b10:.0f} |")


def main() -> None:
    figures = json.loads(Path(sys.argv[1]).read_text())
    for name, rows in figures.items():
        report(name, *machine_figures(rows))


if __name__ == "__main__":
    main()
