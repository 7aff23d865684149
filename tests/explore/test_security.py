"""The explorer's server refuses what it must: traversal, big or foreign uploads, other hosts and origins.

Every refusal is a 4xx with a JSON message, never a 500 and never a traceback.
"""

from __future__ import annotations

import builtins
import io
import os
import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("starlette")

from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

BASE = "http://127.0.0.1:8765"  # the Host the page's own requests carry

from cnnkit.explore.images import LIMITS  # noqa: E402
from cnnkit.explore.server import LOOPBACK, bind, create_app  # noqa: E402


@pytest.fixture
def client(explorer):
    with TestClient(create_app(explorer), base_url=BASE, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def run_id(client):
    return client.post("/api/samples/0/run").json()["id"]


def image_bytes(fmt: str, size=(20, 20), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format=fmt)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny compressed row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def assert_refused(r, status: int, words: str | None = None) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    if words:
        assert words in body["error"], body["error"]


# --------------------------------------------------------------------------- paths
TRAVERSALS = [
    "/static/..%2fserver.py", "/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/static/..%5cserver.py",
    "/static/style.css%00.py", "/static/", "/static/.", "/static/..", "/static/server.py",
    "/static/%2fetc%2fpasswd", "/api/parameters/..%2f..%2fetc%2fpasswd.npy", "/api/parameters/%2fetc%2fpasswd.npy",
    "/api/samples/-1.png", "/api/samples/..%2f0.png", "//etc/passwd", "/etc/passwd", "/api/../../etc/passwd",
    "/static/index.html/../../explore/server.py", "/api/images/1/layers/..%2f..%2fx.npy",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_request_path_reaches_the_file_system(client, monkeypatch, path):
    opened = []
    real_open, real_os_open = builtins.open, os.open
    monkeypatch.setattr(builtins, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]) or real_os_open(*a, **k))
    r = client.get(path)
    # ("/static/.." reaches the server as "/": the client resolves dot segments, as browsers do)
    assert r.status_code in (400, 404) or r.text == client.get("/").text, (path, r.status_code)
    assert opened == []
    assert b"import " not in r.content and b"root:" not in r.content


def test_a_parameter_name_is_looked_up_never_opened(client):
    assert_refused(client.get("/api/parameters/features.0.weightx.npy"), 404, "no parameter named 'features.0.weightx'")


# --------------------------------------------------------------------------- uploads
def post(client, body, content_type="image/png", **headers):
    return client.post("/api/images", content=body, headers={"Content-Type": content_type, **headers})


def test_an_oversized_upload_is_refused_by_its_declared_length(client):
    body = b"\0" * (LIMITS["max_bytes"] + 1)
    assert_refused(post(client, body), 413, f"the limit is {LIMITS['max_bytes']:,}")


def test_an_oversized_upload_without_a_length_is_cut_off_while_reading(client):
    def chunks():
        for _ in range(LIMITS["max_bytes"] // 2**16 + 2):
            yield b"\0" * 2**16
    assert_refused(post(client, chunks()), 413, "exceeds the limit")


def test_an_image_with_too_many_pixels_is_refused_before_decoding(client):
    assert_refused(post(client, png_header(8000, 6000)), 413, "8000x6000 = 48,000,000 pixels")
    assert_refused(post(client, png_header(20000, 20000)), 413, "too many pixels")


@pytest.mark.parametrize("body, content_type, status, words", [
    (b"hello, I am text", "image/png", 415, "not a readable image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415, "only images are accepted"),
    (b"%PDF-1.4\n", "application/pdf", 415, "'application/pdf'"),
    (b"\x89PNG\r\n\x1a\n", None, 415, "no type"),
    (image_bytes("TIFF"), "image/tiff", 415, "only images are accepted"),
    (image_bytes("TIFF"), "image/png", 415, "TIFF images are not accepted"),
    (image_bytes("ICO", (16, 16), "RGB"), "image/png", 415, "ICO images are not accepted"),
    (b"", "image/png", 400, "the upload is empty"),
    (png_header(28, 28), "image/png", 422, "cannot be prepared"),     # a header, then broken data
])
def test_only_readable_images_of_accepted_types_are_taken(client, body, content_type, status, words):
    headers = {} if content_type is None else {"Content-Type": content_type}
    assert_refused(client.post("/api/images", content=body, headers=headers), status, words)


def test_an_image_that_cannot_be_used_is_refused_naming_the_upload(client):
    blank = image_bytes("PNG", (40, 40), "L")
    response = client.post("/api/images?name=blank.png", content=blank, headers={"Content-Type": "image/png"})
    assert_refused(response, 422, "blank.png: the image is blank")
    assert "BytesIO" not in response.json()["error"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_the_accepted_formats_run(client, fmt):
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "BMP": "image/bmp", "WEBP": "image/webp"}[fmt]
    img = np.zeros((40, 40), np.uint8)
    img[10:30, 18:22] = 255                                              # a "1"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    r = post(client, buf.getvalue(), mime)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- malformed requests
@pytest.mark.parametrize("url, status, words", [
    ("/api/images/{rid}/maps/0?k=abc", 400, "k must be an integer, got 'abc'"),
    ("/api/images/{rid}/maps/0?k=0", 400, "k must be between 1 and 64"),
    ("/api/images/{rid}/maps/0?k=65", 400, "k must be between 1 and 64"),
    ("/api/images/{rid}/maps/0?order=median", 400, "order must be 'mean' or 'max'"),
    ("/api/images/{rid}/maps/0?channels=1,x", 400, "channels must be comma-separated integers"),
    ("/api/images/{rid}/maps/0?channels=6", 400, "channels must be at most 64 indices in 0..5"),
    ("/api/images/{rid}/maps/12", 404, "no layer 12: this model has layers 0 to 11"),
    ("/api/images/{rid}/neuron/0", 400, "index is required"),
    ("/api/images/{rid}/neuron/0?index=6,0,0", 400, "outside its output of shape (6, 28, 28)"),
    ("/api/images/{rid}/neuron/0?index=1,2", 400, "outside its output"),
    ("/api/images/{rid}/neuron/0?index=0,0,99999999999999999999", 400, "outside its output"),
    ("/api/images/{rid}/decision?target=10", 400, "class 10 is out of range: the model has 10 classes"),
    ("/api/images/{rid}/decision?target=-1", 400, "out of range"),
    ("/api/images/{rid}/layers/0.npy?what=weights", 400, "what must be 'output' or 'gradient'"),
    ("/api/images/999/maps/0", 404, "image 999 is no longer held"),
    ("/api/filters/1", 404, "is not a convolution"),
    ("/api/filters/0?filters=0", 400, "max_filters must be in 1..256"),
    ("/api/samples/99.png", 404, "no sample 99: there are 24"),
    ("/api/nothing", 404, "no such page or API route: /api/nothing"),
])
def test_malformed_requests_get_a_4xx_with_a_message(client, run_id, url, status, words):
    assert_refused(client.get(url.format(rid=run_id)), status, words)


def test_wrong_methods_are_refused(client):
    assert_refused(client.get("/api/images"), 405)
    assert_refused(client.post("/api/model"), 405)
    assert_refused(client.delete("/api/samples/0/run"), 405)


def test_an_unexpected_failure_is_a_500_without_a_traceback(client, explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")
    monkeypatch.setattr(explorer, "overview", broken)
    r = client.get("/api/model")
    assert r.status_code == 500
    assert r.json() == {"error": "internal error (RuntimeError); the server's log has the details"}


# --------------------------------------------------------------------------- who may talk to it
def test_requests_must_name_a_loopback_host(client):
    assert client.get("/api/model", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert client.get("/api/model", headers={"Host": "localhost:8765"}).status_code == 200
    r = client.get("/api/model", headers={"Host": "evil.example"})          # DNS rebinding
    assert r.status_code == 400


def test_a_post_from_another_origin_is_refused(client):
    r = client.post("/api/samples/0/run", headers={"Origin": "http://evil.example"})
    assert_refused(r, 403, "cross-origin request refused")
    img = np.zeros((20, 20), np.uint8)
    img[4:16, 9:11] = 255                                                # a "1": a flat grey image is refused as blank
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    body = buf.getvalue()
    assert_refused(post(client, body, Origin="http://evil.example"), 403)
    assert post(client, body, Origin="http://127.0.0.1:8765").status_code == 200


def test_the_server_binds_to_loopback_by_default():
    sock = bind(LOOPBACK, 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
