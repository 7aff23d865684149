"""The explorer's page in a real browser: headless Chromium driven by Playwright, a real uvicorn server.

Every test fails on any console error or uncaught page error. Screenshots of every view
go to ``test-artefacts/explore/`` (ignored by git) to be looked at.

Chromium: $CNNKIT_CHROMIUM, else ``chromium`` on the PATH (Debian's package; Playwright's
own browser download is not used). Without it these tests skip, unless
CNNKIT_REQUIRE_BROWSER=1 (set by ``.ci/run`` when chromium is installed) makes them fail.
Every wait is bounded (60 s by default, 180 s for the live training run).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from PIL import Image  # noqa: E402

from cnnkit import models  # noqa: E402
from cnnkit.cli.main import main  # noqa: E402
from cnnkit.cli.targets import load_target  # noqa: E402
from cnnkit.data import load_mnist  # noqa: E402
from cnnkit.explore import Explorer, build_samples, write_report  # noqa: E402
from cnnkit.io.targets import Target  # noqa: E402
from tests.conftest import subprocess_env  # noqa: E402

from .conftest import running  # noqa: E402

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "explore"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
READY = {"network": "svg.network", "flow": "body[data-flow-ready]", "decision": "body[data-decision-ready]",
         "learned": "body[data-learned-ready]", "training": "body[data-training-epochs]"}


def chromium() -> str | None:
    for candidate in (os.environ.get("CNNKIT_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """A Chromium with a fresh profile, offline except for 127.0.0.1."""
    executable = chromium()
    if executable is None:
        message = "no Chromium found (set CNNKIT_CHROMIUM or install Debian's chromium)"
        if os.environ.get("CNNKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": 1500, "height": 1000}, accept_downloads=True,
        )
        ctx.set_default_timeout(60_000)                    # every wait and action is bounded
        ctx.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]|file:|data:|blob:).*"), lambda route: route.abort())
        yield ctx
        ctx.close()


@pytest.fixture
def page(context):
    """A new tab; the test fails on any console error or uncaught exception in it."""
    problems: list[str] = []
    tab = context.new_page()
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    tab.problems = problems
    yield tab
    tab.close()
    assert problems == []


@pytest.fixture
def served(explorer):
    """The explorer on a live server (ask for it before ``page``, so the tab closes first)."""
    with running(explorer) as url:
        yield url


def open_view(page, name: str) -> None:
    page.click(f"#tab-{name}")
    page.wait_for_selector(READY[name], timeout=60_000)


def digit_file(tmp_path, index: int) -> Path:
    """MNIST test digit ``index`` as a person would draw it: dark ink on white, 4x larger."""
    images, _ = load_mnist("test")
    path = tmp_path / f"digit{index}.png"
    Image.fromarray(255 - images[index]).resize((112, 112), Image.BILINEAR).save(path)
    return path


def predict_top(checkpoint, path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", str(checkpoint), str(path), "--top-k", "1"]) == 0
    return re.search(r": (\S+) \(", out.getvalue()).group(1)


def wait_for_run(page, previous: str | None) -> str:
    page.wait_for_function("prev => document.body.dataset.run && document.body.dataset.run !== prev", arg=previous,
                           timeout=60_000)
    return page.evaluate("document.body.dataset.run")


def test_an_upload_is_predicted_as_cnnkit_predict_and_a_neuron_adds_up(served, page, explorer, checkpoint, tmp_path):
    page.goto(served + "#flow")
    page.wait_for_selector("body[data-ready='1']")
    first = wait_for_run(page, None)                       # the page runs the first sample by itself
    for index in (0, 3, 8):                                # MNIST test digits 7, 0 and 5
        image = digit_file(tmp_path, index)
        page.set_input_files("#file", str(image))
        run = wait_for_run(page, first)
        first = run
        page.wait_for_selector(f"body[data-flow-ready='{run}']")
        assert page.inner_text("#sidebar-class") == predict_top(checkpoint, image)
    # a pixel of a convolution's heat map: the displayed sum is the forward pass's number
    canvas = page.locator("#row-3 canvas.map").nth(1)
    canvas.click(position={"x": 40, "y": 30})
    page.wait_for_selector("body[data-neuron-ready]")
    unit, index = page.evaluate("document.body.dataset.neuronReady").split(":")
    c, y, x = (int(v) for v in index.split(","))
    assert unit == "3"
    forward = float(np.asarray(explorer.get_run(int(run)).trace.units[3].output.data[0])[c, y, x])
    assert page.get_attribute(".check", "data-check") == "ok"
    assert float(page.inner_text(".check .computed")) == pytest.approx(forward, rel=1e-6, abs=1e-7)
    assert float(page.inner_text(".check .forward")) == pytest.approx(forward, rel=1e-6, abs=1e-7)
    total = page.locator("#neuron table.sum tr.total td.num").inner_text()
    assert float(total) == pytest.approx(forward, rel=1e-6, abs=1e-7)
    assert page.locator("#picture-rf").is_visible()        # its receptive field, on the input
    assert page.locator("#row-2 .rf-overlay").count() >= 1  # and on the layer it reads
    open_view(page, "decision")
    assert page.inner_text("#predicted-class") == page.inner_text("#sidebar-class")


def test_every_view_opens_and_is_saved(served, page):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(served)
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("body[data-run]")
    for view in READY:
        open_view(page, view)
        if view == "flow":
            page.locator("#row-0 canvas.map").first.click(position={"x": 30, "y": 30})
            page.wait_for_selector("body[data-neuron-ready]")
        page.wait_for_timeout(200)
        page.screenshot(path=str(ARTEFACTS / f"lenet5-{view}.png"))
        with page.expect_download() as download:
            page.click("#save-png")
        data = Path(download.value.path()).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, view
    # the top-k control redraws the rows with more channels
    open_view(page, "flow")
    page.fill("#top-k", "3")
    page.dispatch_event("#top-k", "change")
    page.wait_for_function("() => document.querySelectorAll('#row-3 canvas.map').length === 3")


def test_the_flow_saved_as_png_has_every_row_not_only_those_in_view(served, page):
    page.set_viewport_size({"width": 1500, "height": 450})
    page.goto(served + "#flow")
    page.wait_for_selector("body[data-flow-ready]")
    undrawn = """() => Array.from(document.querySelectorAll('#flow-rows .flow-row'))
        .filter(r => r.dataset.unit !== '-1' && !r.hidden && !r.dataset.drawn).length"""
    assert page.evaluate(undrawn) > 0                      # rows below the fold wait to be scrolled to
    with page.expect_download() as download:
        page.click("#save-png")
    assert page.evaluate(undrawn) == 0
    image = Image.open(download.value.path())
    assert image.height > 2 * 1200                          # the whole view (2x scale), not one screen


def test_drag_and_drop_and_drawing_run_an_image(served, page, checkpoint, tmp_path):
    page.goto(served + "#decision")
    page.wait_for_selector("body[data-ready='1']")
    run = wait_for_run(page, None)
    data = list(digit_file(tmp_path, 1).read_bytes())      # a 2
    page.evaluate("""bytes => {
        const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
        const dt = new DataTransfer();
        dt.items.add(file);
        document.querySelector("#drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""", data)
    run = wait_for_run(page, run)
    page.wait_for_selector(f"body[data-decision-ready^='{run}:']")
    assert page.inner_text("#predicted-class") == "2"
    # draw a "1": one slanted stroke on the pad
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * (0.55 - 0.01 * k), box["y"] + box["height"] * (0.15 + 0.07 * k))
    page.mouse.up()
    run = wait_for_run(page, run)
    page.wait_for_selector(f"body[data-decision-ready^='{run}:']")
    # the drawing went through the same preparation as `cnnkit predict` on the pad's PNG
    drawn = tmp_path / "drawn.png"
    drawn.write_bytes(base64.b64decode(page.evaluate("() => document.querySelector('#draw').toDataURL('image/png')")
                                       .split(",", 1)[1]))
    assert page.inner_text("#predicted-class") == predict_top(checkpoint, drawn)
    page.screenshot(path=str(ARTEFACTS / "lenet5-drawn.png"))


def test_training_curves_update_while_cnnkit_train_writes(page, checkpoint, tmp_path):
    folder = tmp_path / "run"                      # a run folder without a log yet
    folder.mkdir()
    shutil.copy(checkpoint, folder / "seed.safetensors")
    target = load_target(str(folder / "seed.safetensors"))
    explorer = Explorer(target, build_samples(target))
    with running(explorer) as url:
        page.goto(url + "#training")
        page.wait_for_selector("body[data-training-epochs='0']")
        train = subprocess.Popen(
            [sys.executable, "-m", "cnnkit", "train", "lenet5", "--epochs", "2", "--limit", "1000", "--out", str(folder)],
            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            page.wait_for_selector("body[data-training-epochs='2']", timeout=180_000)
        finally:
            out, _ = train.communicate(timeout=180)
        assert train.returncode == 0, out
        assert "live: updated" in page.inner_text("#training-status")
        assert page.locator("svg.chart").count() >= 2
        assert not page.locator("#checkpoint-changed").count()     # the training wrote other files
        shutil.copy(folder / "best.safetensors", folder / "seed.safetensors")   # now the page's own file
        page.wait_for_selector("#checkpoint-changed", timeout=30_000)
        page.goto("about:blank")  # close the event stream before the server stops


def test_a_residual_network_is_drawn_with_its_additions(page, rng):
    target = Target(models.resnet20(generator=rng), "resnet20 (random weights)", (3, 32, 32), (0.5,) * 3, (0.25,) * 3, [])
    explorer = Explorer(target, build_samples(target))
    with running(explorer) as url:
        page.goto(url)
        page.wait_for_selector("svg.network")
        assert page.locator("svg.network .node.add").count() == 9
        assert page.locator("svg.network .edge.skip").count() == 9
        page.locator("svg.network .node.add circle").first.click()
        assert "Add" in page.inner_text("#network-detail")
        page.screenshot(path=str(ARTEFACTS / "resnet20-network.png"))
        page.goto("about:blank")


def test_the_static_report_works_offline(page, explorer, tmp_path):
    report = write_report(explorer, explorer.samples[0].load(), "mnist test #0", tmp_path / "report.html")
    page.goto(report.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#sidebar-class") == "7"
    for view in ("flow", "decision", "learned", "training"):
        open_view(page, view)
        page.screenshot(path=str(ARTEFACTS / f"report-{view}.png"))
    assert page.inner_text("#predicted-class") == "7"
    open_view(page, "flow")
    assert page.locator("#row-0 canvas.map").count() == 6
    page.locator("#row-0 canvas.map").first.click(position={"x": 10, "y": 10})
    assert "static report" in page.inner_text("#neuron")
