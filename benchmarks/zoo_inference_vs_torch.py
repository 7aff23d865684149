"""ImageNet-size inference: cnnkit vs PyTorch at 224x224, batch 8, interleaved.

Both frameworks run the same architecture with the same weights (the PyTorch model is
the torch.nn reference of tests/test_models.py, whose outputs the tests compare with
cnnkit's); each repeat times one batch in each framework, alternating who goes first.

Usage:
    python benchmarks/zoo_inference_vs_torch.py [--models resnet18 vgg16] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cnnkit  # noqa: E402
from tests.models.test_models import TBasicBlock, reference_model, t_resnet, t_vgg, torch_state  # noqa: E402

BUILDERS = {
    "resnet18": lambda: t_resnet(TBasicBlock, (2, 2, 2, 2)),
    "vgg16": lambda: t_vgg(16, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(BUILDERS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, 224x224, eval mode")
    print("| model | cnnkit img/s | PyTorch img/s | ratio (median) | max abs diff |")
    print("|---|---|---|---|---|")
    for name in args.models:
        tmodel = reference_model(BUILDERS[name]).eval()
        kwargs = {"init_weights": False} if name.startswith("vgg") else {}
        ours = cnnkit.models.get_model(name, **kwargs)
        ours.load_state_dict(torch_state(tmodel))
        ours.eval()
        tx = torch.from_numpy(x)

        def run_ours(ours=ours):
            with cnnkit.no_grad():
                return ours(cnnkit.Tensor(x)).data

        def run_torch(tmodel=tmodel, tx=tx):
            with torch.no_grad():
                return tmodel(tx).numpy()

        diff = float(np.abs(run_ours() - run_torch()).max())  # also the warm-up
        times = {"cnnkit": [], "torch": []}
        for r in range(args.repeats):
            order = [("cnnkit", run_ours), ("torch", run_torch)]
            if r % 2:
                order.reverse()
            for label, fn in order:
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
        ratios = [t / c for c, t in zip(times["cnnkit"], times["torch"])]
        ours_ips = args.batch / statistics.median(times["cnnkit"])
        torch_ips = args.batch / statistics.median(times["torch"])
        print(f"| {name} | {ours_ips:.1f} | {torch_ips:.1f} | {statistics.median(ratios):.2f}x | {diff:.2e} |", flush=True)


if __name__ == "__main__":
    main()
