"""Peak resident memory of training steps, cnnkit vs PyTorch, each in its own process.

Each framework runs in a fresh Python process that imports only itself (cnnkit's process
never imports torch), builds the model, and runs ``--steps`` SGD training steps on one
random batch; the process reports its peak RSS (``ru_maxrss``) and the RSS right after
the imports (so the libraries' own share is visible). Same architecture, same batch.

Usage:
    python benchmarks/peak_rss.py [--model resnet18] [--batch 16] [--size 224] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(framework: str, model: str, batch: int, size: int, steps: int) -> dict:
    import numpy as np

    classes = 10 if size == 32 else 1000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    t = rng.integers(0, classes, batch)
    if framework == "cnnkit":
        sys.path.insert(0, str(ROOT))
        import cnnkit
        import cnnkit.functional as F

        after_import = _rss_mb()
        net = cnnkit.models.get_model(model, generator=np.random.default_rng(0))
        net.train()
        opt = cnnkit.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        for _ in range(steps):
            loss = F.cross_entropy(net(cnnkit.Tensor(x)), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        import torch

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from torch_models import TORCH

        after_import = _rss_mb()
        net = TORCH[model]()
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(net(tx), tt)
            opt.zero_grad()
            loss.backward()
            opt.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"framework": framework, "peak_mb": peak, "after_import_mb": after_import}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.batch, args.size, args.steps)))
        return
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, {args.steps} SGD steps; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| framework | peak RSS MB | RSS after imports MB | peak - imports MB |")
    print("|---|---|---|---|")
    for framework in ("cnnkit", "torch"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", framework, "--model", args.model, "--batch", str(args.batch),
             "--size", str(args.size), "--steps", str(args.steps)],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"| {framework} | {r['peak_mb']:.0f} | {r['after_import_mb']:.0f} | {r['peak_mb'] - r['after_import_mb']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
