"""The classic image kernels, applied with cnnkit's own conv2d, and built-in sample images.

A "kernel" here is a fixed (not learned) filter, the hand-made ancestor of a CNN's
first-layer filters: edge detectors, blurs, sharpening. Deep-learning convolution is
cross-correlation (no kernel flip), so ``apply_kernel`` equals
``scipy.signal.correlate2d(channel, kernel, mode="valid")`` on the zero-padded channel.

Kernel values: Sobel (1968), the 4- and 8-neighbour Laplacians, the binomial
(Gaussian) blurs [1 2 1]/4 and [1 4 6 4 1]/16 in each direction, box blurs, sharpen
(identity + 4-neighbour negative Laplacian) and emboss.
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from .. import functional as F
from ..data import load_image as read_uint8
from ..data.idx import read_idx
from ..data.prepare import crop_to_aspect, resize_picture
from ..tensor import Tensor

__all__ = [
    "KERNELS", "get_kernel", "apply_kernel",
    "sample_image", "sample_picture", "SAMPLES", "load_image", "to_grayscale",
]


def _binomial(n: int) -> np.ndarray:
    row = np.array([1.0])
    for _ in range(n - 1):
        row = np.convolve(row, [1.0, 1.0])
    return np.outer(row, row) / row.sum() ** 2


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)

# name -> (KH, KW) float64 kernel
KERNELS: dict[str, np.ndarray] = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float64),
    "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float64),
    "laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64),
    "sobel-x": _SOBEL_X,
    "sobel-y": _SOBEL_X.T.copy(),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
    "box-blur": np.ones((3, 3)) / 9,
    "gaussian-blur": _binomial(3),                    # [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16
    "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64),
    "box-blur-5x5": np.ones((5, 5)) / 25,
    "gaussian-blur-5x5": _binomial(5),                # outer([1, 4, 6, 4, 1]) / 256
}


def get_kernel(name: str) -> np.ndarray:
    """Return a copy of the named kernel, (KH, KW) float64.

    Raises:
        ValueError: unknown name; the message lists the names there are.
    """
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; choose from {', '.join(KERNELS)}")
    return KERNELS[name].copy()


def apply_kernel(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Slide ``kernel`` over every channel of ``image`` separately (a depthwise conv2d).

    Args:
        image: (C, H, W) or (H, W).
        kernel: (KH, KW).
        stride, padding: as conv2d (zero padding).

    Returns:
        (C, OH, OW) float32 with OH = floor((H - KH + 2*padding) / stride) + 1 (likewise OW).

    Raises:
        ShapeError: the kernel is larger than the padded image, or stride is not positive.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]                                                   # (1, H, W)
    C = x.shape[0]
    KH, KW = kernel.shape
    w = np.broadcast_to(np.asarray(kernel, np.float32), (C, 1, KH, KW)).copy()  # (C, 1, KH, KW)
    y = F.conv2d(Tensor(x[None]), Tensor(w), stride=stride, padding=padding, groups=C)
    return y.data[0]                                                  # (C, OH, OW)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB -> (1, H, W) luma (ITU-R BT.601 weights, as PIL's "L" mode)."""
    if image.shape[0] == 1:
        return image
    r, g, b = image[0], image[1], image[2]
    return (0.299 * r + 0.587 * g + 0.114 * b)[None].astype(np.float32)   # (1, H, W)


def _scene() -> np.ndarray:
    """A 96x128 RGB picture with flat regions, straight and round edges, a gradient and stripes."""
    H, W = 96, 128
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.empty((H, W, 3), np.float32)
    sky = (yy / 60.0)[..., None]                                      # (H, W, 1)
    img[:] = (1 - sky) * np.array([0.35, 0.6, 0.95]) + sky * np.array([0.85, 0.92, 1.0])
    img[yy >= 62] = (0.3, 0.65, 0.25)                                 # grass
    img[(yy >= 62) & ((xx // 4) % 2 == 0) & (yy < 70) & (xx > 70)] = (0.95, 0.95, 0.9)  # fence
    sun = (yy - 18) ** 2 + (xx - 104) ** 2 <= 11**2
    img[sun] = (1.0, 0.85, 0.2)
    img[(yy >= 40) & (yy < 80) & (xx >= 18) & (xx < 58)] = (0.8, 0.25, 0.2)   # house
    roof = (yy >= 20) & (yy < 40) & (np.abs(xx - 38) <= (yy - 20) * 1.1)
    img[roof] = (0.45, 0.25, 0.15)
    img[(yy >= 60) & (yy < 80) & (xx >= 32) & (xx < 44)] = (0.25, 0.15, 0.1)  # door
    img[(yy >= 46) & (yy < 56) & (xx >= 22) & (xx < 30)] = (0.9, 0.95, 1.0)   # window
    crown = (yy - 44) ** 2 + (xx - 90) ** 2 <= 12**2
    img[(yy >= 52) & (yy < 78) & (np.abs(xx - 90) <= 2)] = (0.4, 0.25, 0.1)   # trunk
    img[crown] = (0.15, 0.45, 0.15)
    return np.clip(img, 0, 1).transpose(2, 0, 1).copy()               # (3, H, W)


def _digit() -> np.ndarray:
    """The first MNIST test image (a 7), (1, 28, 28) in [0, 1], from the bundled files."""
    path = resources.files("cnnkit.data") / "mnist" / "t10k-images-idx3-ubyte.gz"
    with resources.as_file(path) as p:
        images = read_idx(p)
    return (images[0].astype(np.float32) / 255.0)[None]              # (1, 28, 28)


SAMPLES = {"scene": _scene, "digit": _digit}


def sample_image(kind: str = "scene") -> np.ndarray:
    """A built-in picture in [0, 1]: ``"scene"`` (3, 96, 128) RGB, or ``"digit"`` (1, 28, 28)."""
    if kind not in SAMPLES:
        raise ValueError(f"unknown sample image {kind!r}; choose from {', '.join(SAMPLES)}")
    return SAMPLES[kind]()


def sample_picture(input_shape: tuple[int, int, int]) -> np.ndarray:
    """The built-in picture shaped for a model's input: the digit for one channel, else the scene.

    The scene is centre-cropped to the model's aspect ratio and resized bilinearly (in
    float, no 8-bit rounding); other channel counts get the grey picture repeated.

    Returns:
        (C, H, W) float32 in [0, 1].
    """
    C, H, W = input_shape
    sample = sample_image("digit" if C == 1 else "scene")
    if C == 1 and sample.shape[0] == 3:
        sample = to_grayscale(sample)
    if C not in (1, sample.shape[0]):
        sample = np.repeat(sample.mean(axis=0, keepdims=True), C, axis=0)
    return np.clip(resize_picture(crop_to_aspect(sample, H / W), (H, W)), 0, 1).astype(np.float32)


def load_image(path: str | os.PathLike, gray: bool = False, max_side: int | None = None) -> np.ndarray:
    """Read a PNG/JPEG/... as (C, H, W) float32 in [0, 1]: C = 1 for grayscale files (or ``gray``), else 3.

    Args:
        max_side: shrink (keeping the aspect ratio) so neither side exceeds this.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an image PIL can read.
    """
    from PIL import Image  # Pillow loads only when an image is resized

    arr = read_uint8(path, "L" if gray else "auto")
    if max_side is not None and max(arr.shape[:2]) > max_side:
        scale = max_side / max(arr.shape[:2])
        size = (max(1, round(arr.shape[1] * scale)), max(1, round(arr.shape[0] * scale)))
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.BILINEAR))
    arr = arr.astype(np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()   # (C, H, W)
