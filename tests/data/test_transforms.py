"""Transforms: torchvision's documented semantics, batch == per-sample, reproducibility.

torchvision is not a dependency: its documented behaviour is written out here
(ToTensor's scaling and layout, Normalize's formula, RandomCrop's padding and window
placement, flips, counter-clockwise rotation); resampling is compared with torch's
``interpolate`` and ``grid_sample`` when torch is installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import ShapeError
from cnnkit.data import transforms as T


def test_to_tensor_scales_uint8_and_moves_channels_first(rng):
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    out = T.ToTensor()(gray)
    assert out.shape == (1, 5, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], gray / 255.0, rtol=1e-6)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = T.ToTensor()(rgb)
    assert out.shape == (3, 5, 7)
    np.testing.assert_allclose(out, rgb.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert T.ToTensor()(np.array([[0, 255]], np.uint8)).tolist() == [[[0.0, 1.0]]]
    floats = rng.random((4, 4))  # only uint8 is scaled, as in torchvision
    np.testing.assert_allclose(T.ToTensor()(floats)[0], floats, rtol=1e-6)


def test_to_tensor_reads_pil_images(rng):
    Image = pytest.importorskip("PIL.Image")
    rgb = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    out = T.ToTensor()(Image.fromarray(rgb, mode="RGB"))
    np.testing.assert_allclose(out, rgb.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert T.ToTensor()(Image.fromarray(rgb[..., 0], mode="L")).shape == (1, 6, 4)


@pytest.mark.parametrize("shape", [(3, 5, 7), (3, 5, 7, 2)])
def test_to_tensor_batch_equals_stacked_samples(rng, shape):
    xs = rng.integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(T.ToTensor().batch(xs), np.stack([T.ToTensor()(x) for x in xs]))


def test_to_tensor_rejects_non_images():
    with pytest.raises(
        ShapeError, match=r"ToTensor expects an image \(H, W\) or \(H, W, C\), got shape \(2, 3, 4, 5\)"
    ):
        T.ToTensor()(np.zeros((2, 3, 4, 5), np.uint8))


def test_normalize_is_per_channel_and_batches(rng):
    x = rng.random((3, 4, 5)).astype(np.float32)
    mean, std = (0.1, 0.2, 0.3), (0.5, 1.0, 2.0)
    out = T.Normalize(mean, std)(x)
    for c in range(3):
        np.testing.assert_allclose(out[c], (x[c] - mean[c]) / std[c], rtol=1e-6)
    assert out.dtype == np.float32
    xs = rng.random((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(
        T.Normalize(mean, std).batch(xs), np.stack([T.Normalize(mean, std)(v) for v in xs])
    )
    np.testing.assert_allclose(T.Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25, rtol=1e-6)


def test_normalize_errors_name_what_was_received():
    with pytest.raises(
        ShapeError, match=r"Normalize has 3 channel means but the input has C=1 \(shape \(1, 4, 4\)\)"
    ):
        T.Normalize((0.1, 0.2, 0.3), (1, 1, 1))(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(TypeError, match=r"apply ToTensor first\), got dtype uint8"):
        T.Normalize(0.5, 0.5)(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"zero std"):
        T.Normalize((0.5,), (0.0,))


def _windows_of(padded: np.ndarray, h: int, w: int) -> dict[tuple[int, int], np.ndarray]:
    Hp, Wp = padded.shape[-2:]
    return {(i, j): padded[..., i : i + h, j : j + w] for i in range(Hp - h + 1) for j in range(Wp - w + 1)}


def _position(out: np.ndarray, windows: dict) -> tuple[int, int]:
    matches = [pos for pos, win in windows.items() if np.array_equal(win, out)]
    assert matches, "the crop is not a window of the padded image"
    return matches[0]


def test_random_crop_with_padding_keeps_the_size_and_cuts_inside_the_padded_image(rng):
    x = rng.integers(1, 256, (1, 6, 6), dtype=np.uint8)  # no zeros, so padding is visible
    crop = T.RandomCrop(6, padding=2, generator=np.random.default_rng(0))
    windows = _windows_of(np.pad(x, ((0, 0), (2, 2), (2, 2))), 6, 6)
    seen = {_position(crop(x), windows) for _ in range(400)}
    assert seen == set(windows)  # every one of the 5 x 5 positions, nothing outside
    batch = crop.batch(np.stack([x, x + 0]))
    assert batch.shape == (2, 1, 6, 6)
    for out in batch:
        _position(out, windows)


def test_random_crop_padding_order_is_left_top_right_bottom():
    x = np.ones((2, 3), np.float32)
    full = T.RandomCrop((2 + 2 + 4, 3 + 1 + 3), padding=(1, 2, 3, 4))(x)  # crop == padded image
    np.testing.assert_array_equal(full, np.pad(x, ((2, 4), (1, 3))))
    pairs = T.RandomCrop((2 + 2 * 2, 3 + 2 * 1), padding=(1, 2))(x)  # (left/right, top/bottom)
    np.testing.assert_array_equal(pairs, np.pad(x, ((2, 2), (1, 1))))
    with pytest.raises(
        ShapeError,
        match=r"RandomCrop\(size=\(9, 9\)\) does not fit the padded image of size \(6, 7\) \(input shape \(2, 3\), padding \(2, 2, 2, 2\)\)",
    ):
        T.RandomCrop(9, padding=2)(x)


def test_flips_follow_their_probability(rng):
    x = rng.random((2, 3, 4))
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(x), x[..., ::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(0.0)(x), x)
    np.testing.assert_array_equal(T.RandomVerticalFlip(1.0)(x), x[..., ::-1, :])
    xs = rng.random((1000, 1, 2, 3))
    out = T.RandomHorizontalFlip(0.5, generator=np.random.default_rng(1)).batch(xs)
    flipped = np.all(out == xs[..., ::-1], axis=(1, 2, 3))
    assert np.all(flipped | np.all(out == xs, axis=(1, 2, 3)))
    assert 430 < flipped.sum() < 570
    assert np.array_equal(xs[0], xs[0].copy())  # the input is left untouched


@pytest.mark.parametrize("size", [5, 6])
def test_affine_quarter_turn_is_counter_clockwise(size):
    x = np.arange(size * size, dtype=np.float32).reshape(1, size, size)
    out = T.RandomAffine((90, 90))(x)
    np.testing.assert_array_equal(out[0], np.rot90(x[0]))  # np.rot90 turns counter-clockwise
    np.testing.assert_array_equal(T.RandomAffine((-90, -90)).batch(x[None])[0, 0], np.rot90(x[0], k=-1))


def test_affine_translation_shifts_whole_pixels_and_fills_with_zero(rng):
    x = rng.integers(1, 256, (1, 8, 10), dtype=np.uint8)
    affine = T.RandomAffine(0, translate=(0.2, 0.25), generator=np.random.default_rng(3))
    shifts = set()
    for _ in range(60):
        out = affine(x)
        match = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if np.array_equal(out, np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, 2 - dy : 10 - dy, 2 - dx : 12 - dx])
        ]
        assert match, "not an integer shift within 0.2 * W and 0.25 * H"
        shifts.add(match[0])
    assert len(shifts) > 10


def test_affine_bilinear_rotation_matches_torch_grid_sample(rng):
    torch = pytest.importorskip("torch")
    xs = rng.random((3, 2, 9, 9)).astype(np.float32)
    angles = np.array([10.0, -25.0, 33.0])
    ours = T.affine(xs, angles, np.zeros((3, 2)), interpolation="bilinear")
    # With align_corners=False a square image's normalized coordinates are pixel
    # coordinates about the centre, scaled; theta maps output to input: R(-angle).
    t = np.deg2rad(angles)
    theta = np.zeros((3, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = np.cos(t), -np.sin(t)
    theta[:, 1, 0], theta[:, 1, 1] = np.sin(t), np.cos(t)
    grid = torch.nn.functional.affine_grid(torch.from_numpy(theta), list(xs.shape), align_corners=False)
    expected = torch.nn.functional.grid_sample(
        torch.from_numpy(xs), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("size", [(14, 14), (40, 33), (9, 50)])
@pytest.mark.parametrize("mode, antialias", [("bilinear", True), ("bilinear", False), ("nearest", False)])
def test_resize_to_a_pair_matches_torch_interpolate(rng, size, mode, antialias):
    torch = pytest.importorskip("torch")
    xs = rng.random((2, 3, 28, 21)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(xs), size=size, mode=mode,
        **({"align_corners": False, "antialias": antialias} if mode == "bilinear" else {})
    )
    resize = T.Resize(size, interpolation=mode, antialias=antialias)
    np.testing.assert_allclose(resize.batch(xs), expected.numpy(), atol=3e-6)
    assert resize(xs[0]).shape == (3, *size)


@pytest.mark.parametrize("side", [16, 7, 40])
def test_resize_to_an_int_scales_the_shorter_side_and_keeps_the_aspect_ratio(rng, side):
    torch = pytest.importorskip("torch")
    for shape in [(28, 21), (21, 28), (24, 24)]:
        xs = rng.random((2, 3, *shape)).astype(np.float32)
        H, W = shape
        want = (side, int(side * W / H)) if H <= W else (int(side * H / W), side)  # torchvision's rule
        expected = torch.nn.functional.interpolate(torch.from_numpy(xs), size=want, mode="bilinear",
                                                   align_corners=False, antialias=True)
        np.testing.assert_allclose(T.Resize(side).batch(xs), expected.numpy(), atol=3e-6)
        assert T.Resize([side])(xs[0]).shape == (3, *want)  # a one-element list is the shorter side too


def test_resize_output_sizes_follow_torchvision():
    assert T.resize_output_size(300, 500, 256) == (256, 426)
    assert T.resize_output_size(500, 300, 256) == (426, 256)
    assert T.resize_output_size(300, 500, 256, max_size=300) == (180, 300)
    assert T.resize_output_size(300, 500, (100, 50)) == (100, 50)
    with pytest.raises(ValueError, match="Resize max_size must be larger than size, got max_size=200, size=256"):
        T.Resize(256, max_size=200)
    with pytest.raises(ValueError, match=r"max_size is only for an int size \(the shorter side\), got size=\(4, 5\)"):
        T.Resize((4, 5), max_size=10)


def test_resize_keeps_uint8_and_resizes_pil_images(rng):
    x = rng.integers(0, 256, (10, 20), dtype=np.uint8)
    assert T.Resize(5)(x).dtype == np.uint8 and T.Resize(5)(x).shape == (5, 10)
    Image = pytest.importorskip("PIL.Image")
    assert T.Resize((4, 6))(Image.fromarray(x)).size == (6, 4)
    assert T.Resize(5)(Image.fromarray(x)).size == (10, 5)  # PIL sizes are (w, h)


def _augment(rng=None):
    return T.Compose(
        [
            T.ToTensor(),
            T.RandomCrop(8, padding=1, generator=rng),
            T.RandomHorizontalFlip(generator=rng),
            T.RandomAffine(15, translate=(0.1, 0.1), generator=rng),
            T.Normalize((0.5,), (0.5,)),
        ]
    )


def test_random_transforms_are_reproducible_under_a_seed(rng):
    xs = rng.integers(0, 256, (16, 8, 8), dtype=np.uint8)
    a = _augment(np.random.default_rng(7)).batch(xs)
    b = _augment(np.random.default_rng(7)).batch(xs)
    c = _augment(np.random.default_rng(8)).batch(xs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    first, second = _augment(np.random.default_rng(7)), _augment(np.random.default_rng(7))
    np.testing.assert_array_equal([first(x) for x in xs], [second(x) for x in xs])


def test_default_generator_follows_manual_seed(rng):
    xs = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    augment = _augment()  # no rng: cnnkit's default generator, looked up at call time
    cnnkit.manual_seed(123)
    a = augment.batch(xs)
    cnnkit.manual_seed(123)
    np.testing.assert_array_equal(augment.batch(xs), a)


def test_compose_with_plain_functions_falls_back_to_a_loop(rng):
    xs = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    pipeline = T.Compose([T.ToTensor(), lambda x: x * 2])
    np.testing.assert_allclose(pipeline.batch(xs), np.stack([pipeline(x) for x in xs]))
    np.testing.assert_allclose(T.apply_batch(lambda x: x + 1, xs), xs + 1)
