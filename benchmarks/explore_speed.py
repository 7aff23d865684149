"""`cnnkit explore` on ResNet-18 at 224x224: time to a ready page, and to a neuron's answer.

The targets (issue 14): with the model loaded, one image's page is ready (every layer's
output computed and the first view drawn) within 3 s; clicking a neuron answers within
200 ms. Measured end to end in a real browser (headless Chromium driven by Playwright)
against a real uvicorn server in this process, and, to separate the server's share, by
timing the same API calls directly.

- ready: from the click on a sample to the image-flow view of that image drawn (the
  page sets ``body[data-flow-ready]`` once the rows in view are painted), medians over
  ``--repeats`` runs; the server's part is the POST that runs the image.
- neuron: from the click on a heat-map pixel to the explanation shown
  (``body[data-neuron-ready]``), for pixels of several layers; the server's part is the
  GET of the explanation.

Usage:
    python benchmarks/explore_speed.py [--checkpoint FILE | --model resnet18] [--repeats 5]
        [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from cnnkit.cli.targets import load_target  # noqa: E402
from cnnkit.explore import Explorer, build_samples  # noqa: E402
from cnnkit.explore.server import bind, create_app, url_of  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
NEURON_LAYERS = ["conv1", "layer1.0.conv1", "layer2.0: Add", "layer4.1.conv2", "maxpool", "fc"]


@contextlib.contextmanager
def serving(explorer: Explorer):
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(explorer), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)


def timed_request(url: str, method: str = "GET") -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=120) as r:
        r.read()
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint (default: --model with random weights)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chromium", default=os.environ.get("CNNKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()

    start = time.perf_counter()
    target = load_target(args.checkpoint or args.model)
    explorer = Explorer(target, build_samples(target))
    explorer.overview()                              # the network view's numbers: part of loading
    load_time = time.perf_counter() - start
    print(f"model: {target.label}, input {target.input_shape}; loaded with its overview in {load_time:.2f} s "
          f"(load average {os.getloadavg()[0]:.1f})")

    with serving(explorer) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "#flow")
        page.wait_for_selector("body[data-flow-ready]", timeout=120_000)   # the first run warms up
        # the server's share first: each POST makes a run, and only the last few are kept
        server = [timed_request(url + "api/samples/0/run", "POST") for _ in range(args.repeats)]
        ready = []
        for _ in range(args.repeats):
            previous = page.evaluate("() => document.body.dataset.run")
            t0 = time.perf_counter()
            page.click("#samples .sample")
            page.wait_for_function("prev => document.body.dataset.run !== prev && "
                                   "document.body.dataset.flowReady === document.body.dataset.run",
                                   arg=previous, timeout=120_000)
            ready.append(time.perf_counter() - t0)
            page.wait_for_timeout(300)
        run = page.evaluate("() => document.body.dataset.run")
        print(f"image ready (run + every layer's output + the first view drawn), {args.repeats} runs: "
              f"median {ms(statistics.median(ready))}, max {ms(max(ready))}; the server's run alone: "
              f"median {ms(statistics.median(server))}")

        units = explorer.overview()["units"]
        index = {u["name"]: u["index"] for u in units}
        rows = []
        for name in NEURON_LAYERS:
            if name not in index:
                continue
            u = index[name]
            shape = units[u]["shape"]
            position = [shape[0] // 3, shape[1] // 2, shape[2] // 3] if len(shape) == 3 else [shape[0] // 2]
            api = [timed_request(f"{url}api/images/{run}/neuron/{u}?index={','.join(map(str, position))}")
                   for _ in range(args.repeats)]
            page.evaluate("u => document.getElementById('row-' + u).scrollIntoView({block: 'center'})", u)
            maps = f"#row-{u} canvas.map, #row-{u} canvas.strip"
            page.wait_for_selector(maps, timeout=60_000)
            clicks = []
            for k in range(args.repeats):
                canvas = page.locator(maps).first
                box = canvas.bounding_box()
                t0 = time.perf_counter()
                # a different pixel each time (k-th of `repeats` columns), so each click is a new answer
                canvas.click(position={"x": box["width"] * (k + 0.5) / args.repeats, "y": box["height"] * 0.45})
                page.wait_for_function("n => (document.body.dataset.neuronReady || '').startsWith(n + ':') && "
                                       "document.body.dataset.neuronReady !== window.__last",
                                       arg=str(u), timeout=60_000)
                clicks.append(time.perf_counter() - t0)
                page.evaluate("() => { window.__last = document.body.dataset.neuronReady; }")
            rows.append((name, units[u]["type"], shape, statistics.median(api), statistics.median(clicks), max(clicks)))
        print("neuron click -> explanation shown (median of "
              f"{args.repeats}; server: the GET alone):")
        for name, kind, shape, api, med, worst in rows:
            print(f"  {name:<16} {kind:<12} {str(tuple(shape)):<16} server {ms(api):>7}   page {ms(med):>7} (max {ms(worst)})")
        browser.close()
        if errors:
            print("console errors:", *errors, sep="\n  ")


if __name__ == "__main__":
    main()
