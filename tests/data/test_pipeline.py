"""Photos as inputs: splits, resizing, photo transforms, worker threads, EXIF, normalization stats."""

from __future__ import annotations

import colorsys
import re

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import DataLoader
from cnnkit.data import transforms as T
from cnnkit.data.folder import open_image, scan_folder
from cnnkit.data.pipeline import CachedImages, ImageFiles, ImageSpec, channel_stats, decode_all
from cnnkit.data.split import holdout_last, stratified_split


def test_stratified_split_is_per_class_deterministic_and_stable_when_files_are_added():
    targets = np.array([0] * 50 + [1] * 30 + [2] * 3)
    keys = [f"c{t}/{i}.png" for i, t in enumerate(targets)]
    train, val = stratified_split(targets, 0.1, keys)
    assert np.bincount(targets[val]).tolist() == [5, 3, 1]
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(targets)
    again = stratified_split(targets, 0.1, keys)
    np.testing.assert_array_equal(val, again[1])
    # one more file in class 0: every file held out before is still held out, or one moved
    more_t = np.append(targets, 0)
    _, val2 = stratified_split(more_t, 0.1, keys + ["c0/new.png"])
    before = {keys[i] for i in val}
    after = {(keys + ["c0/new.png"])[i] for i in val2}
    assert len(before ^ after) <= 2
    assert holdout_last(10, 3)[1].tolist() == [7, 8, 9]


def test_resize_weights_are_pytorchs_antialiased_bilinear():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 3, 37, 53)).astype(np.float32)
    for size in [(16, 20), (64, 90), (10, 70)]:
        ours = T.resized_crop(x, 0, 0, 37, 53, size)
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", antialias=True)
        np.testing.assert_allclose(ours, ref.numpy(), atol=3e-6)


def test_random_resized_crop_draws_torchvision_boxes_and_keeps_the_size():
    crop = T.RandomResizedCrop(16, scale=(0.25, 0.5), generator=np.random.default_rng(0))
    for _ in range(50):
        top, left, h, w = crop.params(40, 60)
        assert 0 <= top <= 40 - h and 0 <= left <= 60 - w
        assert 0.2 <= h * w / 2400 <= 0.55 and 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
    x = np.random.default_rng(1).random((4, 3, 40, 60)).astype(np.float32)
    assert crop.batch(x).shape == (4, 3, 16, 16) and crop(x[0]).shape == (3, 16, 16)
    assert crop(Image.fromarray((x[0].transpose(1, 2, 0) * 255).astype(np.uint8))).size == (16, 16)


def test_color_jitter_hue_matches_colorsys_and_brightness_contrast_saturation_formulas():
    rng = np.random.default_rng(2)
    x = rng.random((1, 3, 4, 5)).astype(np.float32)
    hue = T.ColorJitter(hue=0.2, generator=np.random.default_rng(3))
    shift = np.random.default_rng(3).uniform(-0.2, 0.2, size=1)[0]
    out = hue.batch(x)
    for i in range(4):
        for j in range(5):
            h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j])
            np.testing.assert_allclose(out[0, :, i, j], colorsys.hsv_to_rgb((h + shift) % 1.0, s, v), atol=1e-5)
    bright = T.ColorJitter(brightness=0.5, generator=np.random.default_rng(4))
    f = np.random.default_rng(4).uniform(0.5, 1.5, size=1)[0]
    np.testing.assert_allclose(bright.batch(x), np.clip(x * f, 0, 1), rtol=1e-6)
    gray = np.tensordot(x, np.array([0.2989, 0.587, 0.114], np.float32), axes=([1], [0]))
    contrast = T.ColorJitter(contrast=0.5, generator=np.random.default_rng(5))
    f = np.random.default_rng(5).uniform(0.5, 1.5, size=1)[0]
    np.testing.assert_allclose(contrast.batch(x), np.clip(f * x + (1 - f) * gray.mean(), 0, 1), rtol=1e-5)
    saturation = T.ColorJitter(saturation=0.5, generator=np.random.default_rng(6))
    f = np.random.default_rng(6).uniform(0.5, 1.5, size=1)[0]
    np.testing.assert_allclose(saturation.batch(x), np.clip(f * x + (1 - f) * gray[:, None], 0, 1), rtol=1e-5)


@pytest.mark.parametrize("build, message", [
    (lambda: T.ColorJitter(brightness=float("nan")), r"ColorJitter brightness must be a finite number >= 0, got nan"),
    (lambda: T.ColorJitter(saturation=float("inf")), r"ColorJitter saturation must be a finite number >= 0, got inf"),
    (lambda: T.ColorJitter(contrast=-0.1), r"ColorJitter contrast must be a finite number >= 0, got -0.1"),
    (lambda: T.RandomResizedCrop(8, ratio=(1.0, float("inf"))), r"ratio must be 0 < lo <= hi < inf, got \(1.0, inf\)"),
])
def test_photo_transforms_refuse_nan_and_infinite_arguments(build, message):
    """ColorJitter(nan) passed `v < 0` and drew NaN factors; an infinite ratio overflowed in rng.uniform."""
    with pytest.raises(ValueError, match=message):
        build()


def _folder(tmp_path, n=20):
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("a", "b")):
        (tmp_path / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            size = (20 + i, 30) if k else (32, 32)
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    return tmp_path


def test_worker_threads_give_the_same_augmented_batches_as_the_main_thread(tmp_path):
    scan = scan_folder(_folder(tmp_path))
    spec = ImageSpec(3, (16, 16), (0.5,) * 3, (0.25,) * 3)
    augment = T.Compose([T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4)])

    def batches(workers):
        ds = ImageFiles(scan.samples, spec, T.RandomResizedCrop(16), augment)
        loader = DataLoader(ds, batch_size=8, shuffle=True, generator=np.random.default_rng(7), num_workers=workers)
        return [x for x, _ in loader]

    for a, b in zip(batches(0), batches(2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_image_spec_crop_keeps_the_centre_and_squash_keeps_everything(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :6] = 255  # a white band at the left edge
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    crop = ImageSpec(3, (10, 10), (0.0,) * 3, (1.0,) * 3, "crop").decode(tmp_path / "wide.png")
    squash = ImageSpec(3, (10, 10), (0.0,) * 3, (1.0,) * 3, "squash").decode(tmp_path / "wide.png")
    assert crop.shape == squash.shape == (10, 10, 3)
    assert crop.max() == 0  # the centre half holds none of the band
    assert squash[:, 0].min() == 255 and squash[:, -1].max() == 0


def test_exif_orientation_is_honoured(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :5] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = np.asarray(open_image(tmp_path / "rotated.jpg"))
    assert upright.shape == (20, 10, 3)
    assert upright[:5].mean() > 200 and upright[-5:].mean() < 50  # the band is now on top
    scan = scan_folder(_folder(tmp_path / "f", 2))
    assert scan.sizes[0] == (32, 32)


def test_cache_and_files_give_the_same_inputs_and_stats_are_per_channel(tmp_path):
    scan = scan_folder(_folder(tmp_path, 6))
    spec = ImageSpec(3, (24, 24), (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    data, failed = decode_all([p for p, _ in scan.samples], spec, workers=2)
    assert not failed and data.shape == (12, 24, 24, 3)
    cached = CachedImages(data, scan.targets, spec)
    files = ImageFiles(scan.samples, spec)
    idx = np.arange(12)
    np.testing.assert_allclose(cached.get_batch(idx)[0], files.get_batch(idx)[0], atol=1e-6)
    mean, std = channel_stats(data)
    np.testing.assert_allclose(mean, data.reshape(-1, 3).mean(axis=0) / 255, rtol=1e-6)
    np.testing.assert_allclose(std, data.reshape(-1, 3).std(axis=0) / 255, rtol=1e-5)


@pytest.mark.parametrize("make", [T.CenterCrop, T.RandomResizedCrop])
def test_crop_sizes_are_an_int_or_a_pair_of_positive_ints(make):
    assert make(5).size == (5, 5)
    assert make((3, 4)).size == (3, 4)
    assert make([7]).size == (7, 7)
    name = make.__name__
    for bad, says in [(0, "positive size, got 0"), ((2, 0), "positive size, got (2, 0)"),
                      (2.5, "size as an int or a pair of ints, got 2.5"),
                      ((1, 2, 3), "size as an int or a pair of ints, got (1, 2, 3)")]:
        with pytest.raises(ValueError, match=rf"^{name} expects a? ?{re.escape(says)}$"):
            make(bad)
