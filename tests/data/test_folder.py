"""ImageFolder: class per subfolder, sorted names, PNG/JPEG, grayscale or RGB, resize."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.data import DataLoader, ImageFolder, load_image
from cnnkit.data import transforms as T

Image = pytest.importorskip("PIL.Image")


@pytest.fixture
def folder(tmp_path, rng):
    """zebra/ (2 PNG), ant/ (1 JPEG, 1 PNG of another size), plus files that are not images."""
    root = tmp_path / "images"
    for cls, names in {"zebra": ["b.png", "a.png"], "ant": ["x.JPG", "y.png"]}.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            size = (12, 10) if name == "y.png" else (8, 6)  # (width, height)
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(root / cls / name)
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "README").write_text("not a class")
    return root


def test_classes_are_sorted_subfolders_and_samples_sorted_files(folder):
    ds = ImageFolder(folder)
    assert ds.classes == ["ant", "zebra"] and ds.class_to_idx == {"ant": 0, "zebra": 1}
    assert [(p.name, k) for p, k in ds.samples] == [("x.JPG", 0), ("y.png", 0), ("a.png", 1), ("b.png", 1)]
    assert ds.targets.tolist() == [0, 0, 1, 1] and len(ds) == 4


def test_modes_and_resize(folder):
    gray, label = ImageFolder(folder, mode="L")[1]
    assert gray.shape == (10, 12) and gray.dtype == np.uint8 and label == 0
    rgb, _ = ImageFolder(folder, mode="RGB", size=(5, 7))[0]
    assert rgb.shape == (5, 7, 3)
    x, t = next(
        iter(DataLoader(ImageFolder(folder, transform=T.ToTensor(), mode="RGB", size=16), batch_size=4))
    )
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert t.tolist() == [0, 0, 1, 1]


def test_png_round_trips_exactly(tmp_path, rng):
    pixels = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png", "L"), pixels)


def test_bad_folders_and_files_are_named(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match=r"ImageFolder root .*nowhere is not a folder"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(
        FileNotFoundError,
        match=r"found no .png/.jpg/.jpeg/.* images in class subfolders of .*empty \(subfolders: \['cls'\]\)",
    ):
        ImageFolder(tmp_path / "empty")
    (folder / "ant" / "x.JPG").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"x\.JPG: cannot read as an image"):
        ImageFolder(folder)[0]
    with pytest.raises(ValueError, match=r"mode must be 'auto', 'L' or 'RGB', got 'CMYK'"):
        ImageFolder(folder, mode="CMYK")
