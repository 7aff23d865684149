"""Images from open binary files (uploads) are prepared exactly as from paths; float resizing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import crop_to_aspect, load_image, prepare_image, resize_picture


@pytest.fixture
def png(tmp_path, rng):
    img = (rng.uniform(0, 1, (40, 30, 3)) * 255).astype(np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(img).save(path)
    return path


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_a_binary_file_prepares_as_its_path(png, shape):
    from_path = prepare_image(png, shape)
    from_bytes = prepare_image(io.BytesIO(png.read_bytes()), shape)
    np.testing.assert_array_equal(from_bytes, from_path)
    np.testing.assert_array_equal(load_image(io.BytesIO(png.read_bytes()), "RGB"), load_image(png, "RGB"))


def test_a_bad_binary_file_is_a_value_error_without_a_path():
    with pytest.raises(ValueError, match=r"^the image: cannot read as an image"):
        load_image(io.BytesIO(b"not an image"))


def test_resize_picture_keeps_floats_and_shapes():
    a = np.full((2, 4, 6), 0.0013, np.float32)
    out = resize_picture(a, (8, 12))
    assert out.shape == (2, 8, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.0013, rtol=1e-6)               # no rounding to 8 bits
    assert resize_picture(a[0], (2, 3)).shape == (2, 3)
    assert crop_to_aspect(np.zeros((1, 10, 20)), 1.0).shape == (1, 10, 10)
    assert crop_to_aspect(np.zeros((1, 30, 10)), 1.0).shape == (1, 10, 10)


def test_a_binary_file_gets_every_check_of_the_one_decoder():
    """Uploads go through data/image.py's checks too: size limits, 16-bit scaling."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(buf, format="PNG")
    with pytest.raises(ValueError, match=r"^the image: 2x2 pixels is smaller than the 4x4 minimum"):
        load_image(io.BytesIO(buf.getvalue()))
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(buf, format="PNG")       # 16-bit white
    assert (load_image(io.BytesIO(buf.getvalue()), "L") == 255).all()


@pytest.mark.parametrize("level", [255, 0, 128, 40])
def test_a_blank_binary_file_is_refused_naming_the_image_not_a_python_object(level):
    """White, black or any flat grey has no digit in it (grey used to pass as all ink)."""
    buf = io.BytesIO()
    Image.new("L", (30, 30), level).save(buf, format="PNG")
    with pytest.raises(ValueError, match=r"^the image: the image is blank") as e:
        prepare_image(io.BytesIO(buf.getvalue()), (1, 28, 28))
    assert "BytesIO" not in str(e.value)
