"""Images per second of the photo loader alone (no model), side by side with PyTorch's DataLoader.

    python benchmarks/image_loader.py                 # 5,000 generated 224x224 JPEGs in a temp folder
    python benchmarks/image_loader.py --images 500 --repeats 1

What is timed: one pass over the folder in batches of 64, from JPEG files to normalized
float32 batches (N, 3, S, S), for

- cnnkit: ``ImageFiles`` + ``DataLoader(num_workers=W)`` (threads), as ``cnnkit train --cache off``;
- PyTorch: ``torch.utils.data.DataLoader(num_workers=W)`` (processes; one torch thread, as its
  workers use) over a Dataset that does
  the same work with Pillow (open, convert RGB, resize with Pillow's bilinear, to a float
  tensor, normalize), since torchvision is not installable here;
- cnnkit's cache pass (``decode_all``, threads), as ``cnnkit train`` with ``--cache on``.

Runs are interleaved (cnnkit, PyTorch, cnnkit, ...) and each line reports the median
images/s over the repeats and the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.data import DataLoader
from cnnkit.data.folder import open_image
from cnnkit.data.pipeline import ImageFiles, ImageSpec, decode_all

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_jpegs(folder: Path, n: int, size: int = 224, seed: int = 0) -> list[Path]:
    """Smooth random colour fields with some detail: JPEGs of a photo-like size (~10-20 kB)."""
    rng = np.random.default_rng(seed)
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC), np.float32)
        noise = rng.normal(0, 12, (size, size, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def cnnkit_pass(paths, size: int, workers: int) -> float:
    spec = ImageSpec(3, (size, size), MEAN, STD, "squash")
    loader = DataLoader(ImageFiles([(p, 0) for p in paths], spec), batch_size=64, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(x) for x, _ in loader)
    return n / (time.perf_counter() - start)


class _TorchFiles:
    def __init__(self, paths, size):
        self.paths, self.size = paths, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        with Image.open(self.paths[i]) as im:
            im = im.convert("RGB")
            if im.size != (self.size, self.size):
                im = im.resize((self.size, self.size), Image.Resampling.BILINEAR)
            x = torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return (x - mean) / std, 0


def torch_pass(paths, size: int, workers: int) -> float:
    import torch

    torch.set_num_threads(1)  # per-image tensor ops, as in DataLoader workers (which set 1 thread each)
    loader = torch.utils.data.DataLoader(_TorchFiles(paths, size), batch_size=64, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(x) for x, _ in loader)
    return n / (time.perf_counter() - start)


def cache_pass(paths, size: int, workers: int) -> float:
    spec = ImageSpec(3, (size, size), MEAN, STD, "squash")
    start = time.perf_counter()
    data, _ = decode_all(paths, spec, workers)
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where the JPEGs are written (default: a temp folder)")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="cnnkit-jpegs-"))
    start = time.perf_counter()
    paths = make_jpegs(folder, args.images)
    size_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
    print(f"{len(paths):,} JPEGs 224x224 in {folder} (mean {size_kb:.1f} kB), made in {time.perf_counter() - start:.0f}s")
    open_image(paths[0])  # Pillow imported before timing
    for size in (224, 64):
        for workers in (0, 2):
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours.append(cnnkit_pass(paths, size, workers))
                theirs.append(torch_pass(paths, size, workers))
            ratio = statistics.median(a / b for a, b in zip(ours, theirs))
            print(f"output {size}x{size}, {workers} workers: cnnkit {statistics.median(ours):7.0f} img/s, "
                  f"PyTorch DataLoader {statistics.median(theirs):7.0f} img/s, ratio {ratio:.2f}x", flush=True)
        cached = [cache_pass(paths, size, 2) for _ in range(args.repeats)]
        print(f"output {size}x{size}, cache pass (decode_all, 2 threads): {statistics.median(cached):7.0f} img/s",
              flush=True)


if __name__ == "__main__":
    main()
