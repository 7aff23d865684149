"""Classic image kernels through cnnkit's conv2d, against scipy's cross-correlation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.errors import ShapeError
from cnnkit.functional.args import output_size, output_size_formula
from cnnkit.viz.image_filters import (
    KERNELS,
    apply_kernel,
    get_kernel,
    load_image,
    sample_image,
    to_grayscale,
)

signal = pytest.importorskip("scipy.signal")


def reference(image: np.ndarray, kernel: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """scipy's 'valid' cross-correlation of each zero-padded channel, then every stride-th value."""
    out = []
    for channel in image.astype(np.float64):
        padded = np.pad(channel, padding)
        full = signal.correlate2d(padded, kernel, mode="valid")
        out.append(full[::stride, ::stride])
    return np.stack(out)


def test_the_classic_kernels_have_the_published_values():
    np.testing.assert_array_equal(KERNELS["sobel-x"], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(KERNELS["sobel-y"], np.array(KERNELS["sobel-x"]).T)
    np.testing.assert_array_equal(KERNELS["laplacian"], [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    np.testing.assert_array_equal(KERNELS["edge"], [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(KERNELS["sharpen"], [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    np.testing.assert_array_equal(KERNELS["emboss"], [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    np.testing.assert_allclose(KERNELS["gaussian-blur"], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    np.testing.assert_allclose(KERNELS["box-blur"], np.ones((3, 3)) / 9)
    np.testing.assert_allclose(KERNELS["gaussian-blur-5x5"], np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256)
    for name in ("box-blur", "gaussian-blur", "sharpen", "identity", "emboss", "box-blur-5x5"):
        assert KERNELS[name].sum() == pytest.approx(1.0), name
    for name in ("edge", "laplacian", "sobel-x", "sobel-y"):
        assert KERNELS[name].sum() == 0, name


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 0), (2, 2), (3, 1)])
def test_apply_kernel_equals_scipy_correlate2d(rng, name, stride, padding):
    image = rng.random((3, 13, 17)).astype(np.float32)  # RGB, odd sizes, not square
    kernel = get_kernel(name)
    expected = reference(image, kernel, stride, padding)
    actual = apply_kernel(image, kernel, stride=stride, padding=padding)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_convolution_is_cross_correlation_not_flipped(rng):
    image = rng.random((1, 9, 9)).astype(np.float32)
    kernel = KERNELS["sobel-x"]
    actual = apply_kernel(image, kernel)[0]
    correlated = signal.correlate2d(image[0], kernel, mode="valid")
    np.testing.assert_allclose(actual, correlated, rtol=1e-5, atol=1e-6)
    # convolve2d flips the kernel: for Sobel that negates the response
    convolved = signal.convolve2d(image[0], kernel, mode="valid")
    np.testing.assert_allclose(actual, -convolved, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, f, p, s, expected, text", [
    (32, 5, 0, 1, 28, "(32 - 5 + 2*0)/1 + 1 = 28"),
    (28, 5, 2, 1, 28, "(28 - 5 + 2*2)/1 + 1 = 28"),
    (7, 3, 0, 2, 3, "(7 - 3 + 2*0)/2 + 1 = 3"),
    (8, 3, 0, 2, 3, "floor((8 - 3 + 2*0)/2 + 1) = floor(3.5) = 3"),
])
def test_output_size_follows_the_articles_formula(n, f, p, s, expected, text):
    assert output_size(n, f, stride=s, padding=p) == expected
    assert output_size_formula(n, f, stride=s, padding=p) == text


def test_apply_kernel_output_shape_matches_the_formula(rng):
    image = rng.random((1, 20, 15)).astype(np.float32)
    out = apply_kernel(image, KERNELS["gaussian-blur-5x5"], stride=2, padding=1)
    assert out.shape == (1, output_size(20, 5, stride=2, padding=1), output_size(15, 5, stride=2, padding=1))


def test_a_kernel_larger_than_the_padded_image_raises_shape_error():
    with pytest.raises(ShapeError, match=r"larger than the padded input"):
        apply_kernel(np.zeros((1, 2, 2), np.float32), KERNELS["edge"])


def test_unknown_kernel_lists_the_names():
    with pytest.raises(ValueError, match=r"unknown kernel 'blurry'; choose from identity, edge"):
        get_kernel("blurry")


def test_sample_images_are_in_range():
    scene = sample_image("scene")
    digit = sample_image("digit")
    assert scene.shape == (3, 96, 128) and digit.shape == (1, 28, 28)
    for image in (scene, digit):
        assert image.dtype == np.float32 and image.min() >= 0 and image.max() <= 1
    assert digit.max() == 1.0 and (digit > 0.5).mean() > 0.05  # a white digit on black
    gray = to_grayscale(scene)
    assert gray.shape == (1, 96, 128)
    # identity through conv2d reproduces the picture's interior exactly
    np.testing.assert_array_equal(apply_kernel(scene, KERNELS["identity"]), scene[:, 1:-1, 1:-1])


def test_load_image_reads_gray_and_rgb_and_refuses_other_files(tmp_path):
    Image.fromarray(np.full((5, 7), 255, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "c.jpg")
    (tmp_path / "bad.png").write_text("not a picture")
    assert load_image(tmp_path / "g.png").shape == (1, 5, 7)
    assert load_image(tmp_path / "c.jpg").shape == (3, 5, 7)
    assert load_image(tmp_path / "c.jpg", gray=True).shape == (1, 5, 7)
    assert load_image(tmp_path / "c.jpg", max_side=3).shape == (3, 2, 3)
    with pytest.raises(ValueError, match=r"bad.png: cannot read as an image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match=r"missing.png: no such image file"):
        load_image(tmp_path / "missing.png")
