"""Peak memory (RSS) of loading VGG-16's weights (528 MiB) from a torch.save file, next to PyTorch.

    python benchmarks/pth_load_memory.py [--dir DIR]

Writes VGG-16's state_dict once with ``torch.save`` (and as a cnnkit checkpoint), then
measures each way of loading it in a fresh process (the peak RSS, ``ru_maxrss``, of that
process alone), so one measurement cannot inherit another's memory:

- baseline:            ``import cnnkit`` and numpy, nothing loaded;
- cnnkit read_pth:     ``cnnkit.io.load_pth`` (memory-mapped) and every byte of every tensor read;
- cnnkit read, no mmap: the same with ``mmap=False`` (storages read into memory);
- cnnkit into model:   ``models.vgg16(init_weights=False)`` then ``cnnkit.io.load_weights``
                       (the model's own 528 MiB plus what loading adds);
- cnnkit checkpoint:   the same from the converted cnnkit checkpoint (safetensors);
- torch.load:          ``torch.load(weights_only=True)``, and with ``mmap=True``, every tensor
                       summed (``v.sum()``: no float64 copy).

Ratios are peak RSS / weights size; "added" is peak minus the baseline of the same
interpreter (cnnkit's or torch's import), over the weights' size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PREPARE = r"""
import sys, numpy as np, torch
from cnnkit import models
from cnnkit.io.weights import write_checkpoint
model = models.vgg16(init_weights=False)
state = {k: np.asarray(v) for k, v in model.state_dict().items()}
torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, sys.argv[1])
write_checkpoint(sys.argv[2], state, model_name="vgg16")
print(sum(v.nbytes for v in state.values()))
"""

CASES = {
    "baseline (import cnnkit)": "import cnnkit, numpy",
    "cnnkit read_pth (mmap), all bytes read": (
        "from cnnkit.io import load_pth\n"
        "state = load_pth(PTH)\n"
        "total = sum(float(v.sum(dtype='float64')) for v in state.values())"
    ),
    "cnnkit read_pth (mmap=False), all bytes read": (
        "from cnnkit.io import load_pth\n"
        "state = load_pth(PTH, mmap=False)\n"
        "total = sum(float(v.sum(dtype='float64')) for v in state.values())"
    ),
    "cnnkit vgg16(init_weights=False) + load_weights(.pth)": (
        "from cnnkit import models\nfrom cnnkit.io import load_weights\n"
        "model = models.vgg16(init_weights=False)\nload_weights(model, PTH)"
    ),
    "cnnkit vgg16(init_weights=False) + load_weights(checkpoint)": (
        "from cnnkit import models\nfrom cnnkit.io import load_weights\n"
        "model = models.vgg16(init_weights=False)\nload_weights(model, CKPT)"
    ),
    "baseline (import torch)": "import torch",
    "torch.load(weights_only=True), all bytes read": (
        "import torch\nstate = torch.load(PTH, weights_only=True)\n"
        "total = sum(float(v.sum()) for v in state.values())"
    ),
    "torch.load(weights_only=True, mmap=True), all bytes read": (
        "import torch\nstate = torch.load(PTH, weights_only=True, mmap=True)\n"
        "total = sum(float(v.sum()) for v in state.values())"
    ),
}

MEASURE = r"""
import resource, sys
PTH, CKPT = sys.argv[1], sys.argv[2]
{code}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def peak_kib(code: str, pth: Path, ckpt: Path) -> int:
    out = subprocess.run([sys.executable, "-c", MEASURE.format(code=code), str(pth), str(ckpt)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to write the 528 MiB files (default: a temp folder)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the lowest peak is kept")
    args = parser.parse_args()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="cnnkit-pth-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    pth, ckpt = folder / "vgg16.pth", folder / "vgg16.safetensors"
    size = int(subprocess.run([sys.executable, "-c", PREPARE, str(pth), str(ckpt)], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1])
    mib = size / 2**20
    print(f"VGG-16 weights: {size:,} bytes ({mib:.1f} MiB); files in {folder}")
    results = {}
    for name, code in CASES.items():
        results[name] = min(peak_kib(code, pth, ckpt) for _ in range(args.repeat)) / 1024
    print(f"{'case':<62} {'peak MiB':>9} {'x weights':>10} {'added x':>8}")
    for name, peak in results.items():
        base = results["baseline (import torch)" if "torch" in name else "baseline (import cnnkit)"]
        added = "" if name.startswith("baseline") else f"{(peak - base) / mib:.2f}"
        print(f"{name:<62} {peak:>9.0f} {peak / mib:>10.2f} {added:>8}")
    print(json.dumps({k: round(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
