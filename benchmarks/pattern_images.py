"""A generated 32x32 RGB image folder of ten pattern classes, for time-to-accuracy runs offline.

    python benchmarks/pattern_images.py DIR [--train 10000] [--test 2000] [--seed 0]

Writes ``DIR/train/<class>/NNNNN.png`` and ``DIR/test/<class>/NNNNN.png`` (the layout
``cnnkit train MODEL --data DIR`` reads), the same number of images per class, the same
files for the same seed. The classes:

- ``grating000``, ``grating045``, ``grating090``, ``grating135``: a sinusoidal grating
  (period 3.5-7 px, random phase) at that orientation +-12 degrees, in a Gaussian window;
- ``disc``, ``ring``, ``square`` (any rotation), ``cross`` (any rotation), ``triangle``
  (any rotation), ``dots`` (two small discs 7-11 px apart, any direction).

Every image: a random position (the centre within the middle 16x16), a random size, a
random background colour and a foreground colour at least 0.25 away on average, a
random linear shading across the image, then Gaussian noise of a random strength. The
noise, the low contrasts and the small sizes make a share of the images hard, so that
ResNet-20 learns much within two epochs without reaching 100%.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CLASSES", "SIZE", "pattern_image", "write_pattern_folder"]

CLASSES = ("grating000", "grating045", "grating090", "grating135", "disc", "ring", "square", "cross",
           "triangle", "dots")
SIZE = 32

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5  # pixel centres, (H, W)


def _soft(signed_distance: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by a shape from its signed distance to the edge (inside > 0), antialiased."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _rotated(dx: np.ndarray, dy: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _mask(k: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``k``'s pattern at a random place and size: coverage in [0, 1], (H, W)."""
    cx, cy = rng.uniform(8, SIZE - 8, 2)
    dx, dy = _XX - cx, _YY - cy
    d = np.hypot(dx, dy)
    r = rng.uniform(6.0, 10.0)
    angle = rng.uniform(0, 2 * np.pi)
    if k < 4:  # gratings: 0, 45, 90, 135 degrees
        theta = k * np.pi / 4 + rng.uniform(-0.21, 0.21)
        u, _ = _rotated(dx, dy, theta)
        wave = 0.5 + 0.5 * np.cos(2 * np.pi * u / rng.uniform(3.5, 7.0) + rng.uniform(0, 2 * np.pi))
        return wave * np.exp(-(d**2) / (2 * rng.uniform(5.0, 8.0) ** 2))
    name = CLASSES[k]
    if name == "disc":
        return _soft(r - d)
    if name == "ring":
        return _soft(rng.uniform(0.8, 1.4) - np.abs(d - r))
    u, v = _rotated(dx, dy, angle)
    if name == "square":
        return _soft(0.8 * r - np.maximum(np.abs(u), np.abs(v)))
    if name == "cross":
        w = rng.uniform(1.0, 1.8)
        bar = lambda a, b: np.minimum(w - np.abs(a), r - np.abs(b))  # noqa: E731
        return _soft(np.maximum(bar(u, v), bar(v, u)))
    if name == "triangle":  # equilateral, inradius 0.6 r: inside = below all three edges
        edges = [_rotated(u, v, i * 2 * np.pi / 3)[1] for i in range(3)]
        return _soft(0.6 * r - np.maximum.reduce(edges))
    # dots: two discs of radius 2-3 on either side of the centre
    half = rng.uniform(3.5, 5.5)
    dot_r = rng.uniform(2.0, 3.0)
    a = np.hypot(u - half, v)
    b = np.hypot(u + half, v)
    return _soft(dot_r - np.minimum(a, b))


def pattern_image(k: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``k``: uint8 (H, W, 3)."""
    mask = _mask(k, rng)[..., None]  # (H, W, 1)
    bg = rng.uniform(0.1, 0.9, 3)
    fg = rng.uniform(0.0, 1.0, 3)
    while np.abs(fg - bg).mean() < 0.25:
        fg = rng.uniform(0.0, 1.0, 3)
    image = bg * (1 - mask) + fg * mask  # (H, W, 3)
    shade_angle = rng.uniform(0, 2 * np.pi)
    shade = (np.cos(shade_angle) * (_XX - SIZE / 2) + np.sin(shade_angle) * (_YY - SIZE / 2)) / SIZE
    image += rng.uniform(0.0, 0.3) * shade[..., None]
    image += rng.normal(0.0, rng.uniform(0.02, 0.15), image.shape)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def write_pattern_folder(root: str | Path, train: int = 10_000, test: int = 2_000, seed: int = 0) -> Path:
    """Write the folder (module docstring) unless it already holds the same images; return it.

    ``train`` and ``test`` are totals, split equally over the ten classes. The two splits
    come from independent streams of ``seed``. ``root/patterns.json`` records the settings;
    a folder written with other settings is refused rather than mixed.
    """
    root = Path(root)
    settings = {"classes": list(CLASSES), "size": SIZE, "train": train, "test": test, "seed": seed,
                "generator": "pattern_images.py v2"}
    stamp = root / "patterns.json"
    if stamp.exists():
        if json.loads(stamp.read_text()) == settings:
            return root
        raise FileExistsError(f"{root} holds patterns written with other settings ({stamp}); choose another folder")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and holds no patterns.json; choose another folder")
    for split, total, stream in (("train", train, 0), ("test", test, 1)):
        if total % len(CLASSES):
            raise ValueError(f"--{split} {total}: expected a multiple of {len(CLASSES)} (equal classes)")
        rng = np.random.default_rng([seed, stream])
        per_class = total // len(CLASSES)
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(pattern_image(k, rng)).save(folder / f"{i:05d}.png")
    stamp.write_text(json.dumps(settings))  # last: an interrupted write is not taken for a finished one
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_pattern_folder(args.root, args.train, args.test, args.seed))


if __name__ == "__main__":
    main()
