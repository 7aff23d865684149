"""Inference: onnxruntime vs cnnkit on the same exported LeNet-5 and ResNet-18, interleaved.

Each model is exported with ``cnnkit.onnx.export``; onnxruntime runs that file (CPU
provider, default graph optimizations, 2 intra-op threads: the machine's cores), and
cnnkit runs the same weights twice over: the model itself, and the file imported back
with ``cnnkit.onnx.load``. Each repeat times one batch in every runner, rotating who goes
first; before every timed call the runner pauses 0.2 s and spins 10 ms (BLAS and
onnxruntime threads wake up slowly after a pause: see shared/PERF_NOTES.md). A ratio is
the onnxruntime time over the cnnkit time of the same repeat (above 1: cnnkit faster);
the table gives the median of those per-repeat ratios.

Usage:
    python benchmarks/onnxruntime_vs_cnnkit.py [--models lenet5 resnet18] [--repeats 9]
                                               [--threads N] [--clock wall|cpu]

On a loaded machine use ``--threads 1 --clock cpu``: one thread per runner (onnxruntime's
intra-op threads, cnnkit's pool), timed by the process's CPU time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import CLOCKS, add_timing_options, set_threads  # noqa: E402

import cnnkit  # noqa: E402
import cnnkit.onnx  # noqa: E402

CASES = {  # model -> (input shape, batch sizes)
    "lenet5": ((1, 28, 28), (1, 64, 1000)),
    "resnet18": ((3, 224, 224), (1, 8)),
}


def _settle(seconds: float = 0.01) -> None:
    """Pause, then spin briefly, so every runner starts from the same warm state."""
    time.sleep(0.2)
    end = time.perf_counter() + seconds
    a = np.ones((64, 64), np.float32)
    while time.perf_counter() < end:
        a = a @ a * 1e-3


NOW = time.perf_counter  # --clock cpu: time.process_time


def _timed(fn) -> float:
    _settle()
    start = NOW()
    fn()
    return NOW() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=9)
    add_timing_options(parser, "threads of onnxruntime and cnnkit (default: the CPUs)")
    args = parser.parse_args()
    global NOW
    NOW = CLOCKS[args.clock]
    set_threads(args.threads)
    print(f"onnxruntime {ort.__version__}, cnnkit {cnnkit.__version__}; {args.threads or os.cpu_count()} threads, "
          f"{args.clock} clock; load average before: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| model | batch | ORT img/s | cnnkit img/s | imported img/s | ratio cnnkit | ratio imported | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name in args.models:
        shape, batches = CASES[name]
        model = cnnkit.models.get_model(name, generator=rng).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = cnnkit.onnx.export(model, Path(tmp) / f"{name}.onnx", shape)
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads or os.cpu_count() or 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            imported = cnnkit.onnx.load(path)
        for batch in batches:
            x = rng.standard_normal((batch,) + shape).astype(np.float32)
            xt = cnnkit.Tensor(x)

            def run_ort(x=x, session=session):
                return session.run(None, {"input": x})[0]

            def run_cnnkit(xt=xt, model=model):
                with cnnkit.no_grad():
                    return model(xt).data

            def run_imported(xt=xt, imported=imported):
                with cnnkit.no_grad():
                    return imported(xt).data

            reference = run_ort()  # also the warm-up of every runner
            diff = max(float(np.abs(run_cnnkit() - reference).max()), float(np.abs(run_imported() - reference).max()))
            runners = [("ort", run_ort), ("cnnkit", run_cnnkit), ("imported", run_imported)]
            times = {label: [] for label, _ in runners}
            for r in range(args.repeats):
                for label, fn in runners[r % 3:] + runners[: r % 3]:
                    times[label].append(_timed(fn))
            ratio = {k: statistics.median(o / c for o, c in zip(times["ort"], times[k])) for k in ("cnnkit", "imported")}
            ips = {k: batch / statistics.median(v) for k, v in times.items()}
            print(f"| {name} | {batch} | {ips['ort']:,.0f} | {ips['cnnkit']:,.0f} | {ips['imported']:,.0f} | "
                  f"{ratio['cnnkit']:.2f}x | {ratio['imported']:.2f}x | {diff:.1e} |", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
