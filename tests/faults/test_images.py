"""Images as a careless or hostile user gives them: each is read correctly or refused with a reason.

Before: a 16-bit PNG was clipped to white, an RGBA drawing with its ink in the alpha
channel became blank, NaN pixels became 0, a 1x1 image was classified without a word,
a decompression bomb ended in a traceback and a FIFO hung the command.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli.main import main
from cnnkit.data import load_mnist, prepare_image
from cnnkit.data.image import MIN_IMAGE_SIDE, load_image, open_image
from cnnkit.errors import DataError
from tests.conftest import MNIST_EXTRA  # noqa: F401  (the predict fixture's metadata)


@pytest.fixture(scope="module")
def digit():
    """An MNIST test digit (white ink on black), uint8 (28, 28), and its label."""
    images, labels = load_mnist("test")
    return images[0], int(labels[0])


def _png_header_only(path, width: int, height: int):
    """A PNG whose header declares width x height, with no pixel data: decoding it would be a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------- converted correctly

def test_a_16_bit_png_is_scaled_not_clipped(tmp_path, digit):
    image, _ = digit
    path = tmp_path / "d16.png"
    Image.fromarray(image.astype(np.uint16) * 257).save(path)           # 0..65535
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(load_image(path, "L"), image)          # was: everything > 255 -> white
    np.testing.assert_array_equal(load_image(path, "RGB")[..., 1], image)


def test_a_32_bit_integer_image_is_read_as_16_bit_or_refused(tmp_path, digit):
    image, _ = digit
    path = tmp_path / "i32.tif"
    Image.fromarray(image.astype(np.int32) * 257, "I").save(path)
    np.testing.assert_array_equal(load_image(path, "L"), image)
    Image.fromarray(np.full((16, 16), 70000, np.int32), "I").save(path)
    with pytest.raises(DataError, match=r"i32.tif: a 32-bit integer image with values from 70000 to 70000"):
        load_image(path)


@pytest.mark.parametrize("ink", ["black", "white"])
def test_an_rgba_drawing_with_its_ink_in_the_alpha_channel_keeps_its_ink(tmp_path, digit, ink):
    """A transparent PNG from a drawing app: colour constant, the strokes in alpha."""
    image, _ = digit
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 0 if ink == "black" else 255
    rgba[..., 3] = image
    path = tmp_path / f"{ink}.png"
    Image.fromarray(rgba, "RGBA").save(path)
    gray = load_image(path, "L").astype(int)
    expected = 255 - image.astype(int) if ink == "black" else image.astype(int)  # on white / on black
    assert np.abs(gray - expected).max() <= 1                            # was: blank (all 0)
    prepared = prepare_image(path, (1, 28, 28))                           # the model's white-on-black
    reference = prepare_image(_save(tmp_path / "ref.png", image), (1, 28, 28))
    np.testing.assert_allclose(prepared, reference, atol=2 / 255)


def _save(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


@pytest.mark.parametrize("background, level", [("white", 255), ("black", 0), (0.5, 128)])
def test_the_background_for_transparent_pixels_can_be_chosen(tmp_path, background, level):
    la = np.zeros((16, 16, 2), np.uint8)                                  # fully transparent
    path = _save(tmp_path / "la.png", la, "LA")
    assert (load_image(path, "L", background=background) == level).all()


def test_palette_and_color_key_transparency_are_composited(tmp_path, digit):
    image, _ = digit
    p = Image.fromarray(image).convert("P")
    p.info["transparency"] = int(np.asarray(p)[0, 0])                    # the background index
    path = tmp_path / "p.png"
    p.save(path)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    gray = load_image(path, "L").astype(int)
    assert abs(gray[0, 0] - 0) <= 1 and np.abs(gray - image).max() <= 1   # light ink: black background
    plain = _save(tmp_path / "plain.png", np.asarray(Image.fromarray(image).convert("P")), "P")
    np.testing.assert_array_equal(load_image(plain, "L"), np.asarray(Image.open(plain).convert("L")))


def test_cmyk_jpeg_and_ycbcr_become_rgb(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (200, 30, 30)
    path = tmp_path / "c.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    assert np.abs(load_image(path, "RGB").astype(int) - rgb).max() < 40
    assert load_image(path, "RGB").shape == (16, 16, 3)


def test_a_float_image_in_0_1_is_read_and_out_of_range_values_are_refused(tmp_path, digit):
    image, _ = digit
    path = _save(tmp_path / "f.tif", image.astype(np.float32) / 255, "F")
    np.testing.assert_array_equal(load_image(path, "L"), image)          # was: 0..1 -> all black
    _save(path, image.astype(np.float32), "F")                            # 0..255 floats
    with pytest.raises(DataError, match=r"f.tif: a floating-point image with values from 0 to 255; cnnkit reads "
                                        r"floating-point images as \[0, 1\]"):
        load_image(path)


@pytest.mark.parametrize("bad, counts", [(np.nan, r"1 NaN, 0 Inf"), (np.inf, r"0 NaN, 1 Inf")])
def test_nan_and_inf_pixels_are_refused(tmp_path, digit, bad, counts):
    values = digit[0].astype(np.float32) / 255
    values[3, 3] = bad
    path = _save(tmp_path / "nan.tif", values, "F")
    with pytest.raises(DataError, match=rf"nan.tif: 1 of its 784 pixels are not finite \({counts}\)"):
        load_image(path)


def test_an_unconvertible_mode_is_refused_with_its_name(tmp_path):
    path = tmp_path / "lab.tif"
    Image.new("LAB", (16, 16)).save(path)
    with pytest.raises(DataError, match=r"lab.tif: cannot convert a LAB image to L; save it as RGB"):
        load_image(path)


def test_an_exif_rotated_photo_is_turned_upright(tmp_path):
    rgb = np.zeros((16, 32, 3), np.uint8)                                 # wide
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6                                                      # rotate 90 degrees
    path = tmp_path / "r.jpg"
    image.save(path, exif=exif)
    assert load_image(path, "RGB").shape == (32, 16, 3)                   # tall, as the camera meant


# ------------------------------------------------------------------------------------- refused

@pytest.mark.parametrize("size", [(1, 1), (3, 100), (100, 2)])
def test_images_below_the_minimum_size_are_refused(tmp_path, size):
    w, h = size
    path = _save(tmp_path / "small.png", np.zeros((h, w), np.uint8))
    with pytest.raises(DataError, match=rf"small.png: {w}x{h} pixels is smaller than the {MIN_IMAGE_SIDE}x"
                                        rf"{MIN_IMAGE_SIDE} minimum"):
        load_image(path)
    load_image(_save(tmp_path / "ok.png", np.zeros((4, 4), np.uint8)))


def test_a_prediction_input_needs_an_eighth_of_the_model_s_side_and_some_ink(tmp_path, digit):
    small = _save(tmp_path / "small.png", np.full((20, 20, 3), 128, np.uint8))
    with pytest.raises(DataError, match=r"small.png: 20x20 pixels is smaller than the 28x28 minimum"):
        prepare_image(small, (3, 224, 224))                               # upscaled 11x: nothing left to see
    assert prepare_image(small, (3, 32, 32)).shape == (3, 32, 32)
    blank = _save(tmp_path / "blank.png", np.full((28, 28), 255, np.uint8))
    with pytest.raises(DataError, match=r"blank.png: the image is blank \(one flat colour\): there is no digit"):
        prepare_image(blank, (1, 28, 28))                                 # was: classified as some digit


@pytest.mark.parametrize("width, height, million", [(30000, 30000, "900 million pixels"),
                                                     (12000, 9000, r"12000x9000 pixels \(108 million\)")])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, width, height, million):
    path = _png_header_only(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 200
    with pytest.raises(DataError, match=rf"bomb.png: {million} is more than the 100 million pixels cnnkit decodes "
                                        r"\(a decompression bomb\?\); shrink the image first"):
        open_image(path)


@pytest.mark.parametrize("content, message", [
    (b"this is text, not a picture", r"cannot read as an image"),
    (b"", r"cannot read as an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, r"cannot read as an image"),
])
def test_files_that_are_not_images_are_refused(tmp_path, content, message):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"x.png: {message}"):
        load_image(path)


def test_a_truncated_png_is_refused(tmp_path, digit):
    path = _save(tmp_path / "t.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"t.png: cannot read as an image"):
        load_image(path)


def test_special_files_are_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(DataError, match=r"pipe.png: is a FIFO \(named pipe\), not an image file"):
        load_image(tmp_path / "pipe.png")
    with pytest.raises(DataError, match=r"is a folder, not an image file"):
        load_image(tmp_path)
    with pytest.raises(DataError, match=r"/dev/zero: is a character device, not an image file"):
        load_image("/dev/zero")
    with pytest.raises(FileNotFoundError, match=r"none.png: no such image file"):
        load_image(tmp_path / "none.png")


# -------------------------------------------------------------------- through the command line

def test_predict_refuses_bad_images_in_one_line_each(lenet_checkpoint, tmp_path, capsys, digit):
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    _save(tmp_path / "one.png", np.full((1, 1), 200, np.uint8))
    _save(tmp_path / "blank.png", np.zeros((28, 28), np.uint8))
    values = digit[0].astype(np.float32) / 255
    values[0, 0] = np.nan
    _save(tmp_path / "nan.tif", values, "F")
    os.mkfifo(tmp_path / "pipe.png")
    for name, message in [("bomb.png", "is more than the 100 million pixels cnnkit decodes"),
                          ("one.png", "1x1 pixels is smaller than the 4x4 minimum"),
                          ("blank.png", "the image is blank (one flat colour): there is no digit to recognise"),
                          ("nan.tif", "1 of its 784 pixels are not finite"),
                          ("pipe.png", "is a FIFO (named pipe), not an image file")]:
        assert main(["predict", str(lenet_checkpoint), str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
