"""``cnnkit explore``: a local web page that explains your own network, neuron by neuron.

    cnnkit explore CHECKPOINT|MODEL [IMAGE_OR_FOLDER] [--port P] [--host H] [--no-browser]
                   [--export report.html] [--input-shape C,H,W] [--fully-convolutional]
                   [--model NAME [--num-classes K]]

CHECKPOINT may be a cnnkit checkpoint, an .onnx file, a weights name
(resnet18.IMAGENET1K_V1) or, with ``--model``, any weights file ``cnnkit import`` reads
(a PyTorch .pth, never unpickled; a safetensors state_dict).

The server listens on 127.0.0.1 (this machine only) unless ``--host`` says otherwise,
prints its address and opens it in the browser. ``--export`` writes one self-contained
HTML file instead (the network, the image's path through it and the decision), and
starts no server. The work is ``cnnkit.explore``'s; the web framework is the optional
extra ``pip install 'cnnkit[explore]'``.
"""

from __future__ import annotations

import importlib.util
import sys

from ..errors import UsageError
from ..explore import Explorer, build_samples, serve, write_report
from ..explore.server import DEFAULT_PORT, is_loopback
from ..surgery.fcn import to_fully_convolutional
from .main import in_range, positive_int
from .targets import input_shape_option, load_target, wrote

__all__ = ["add_commands", "explore_command"]


def add_commands(sub) -> None:
    """Add ``explore`` to the ``cnnkit`` command."""
    e = sub.add_parser("explore", help="a local web page that explains a network, layer by layer and neuron by neuron")
    e.add_argument("target", metavar="CHECKPOINT|MODEL",
                   help="a checkpoint, an .onnx file, a weights name (resnet18.IMAGENET1K_V1), a zoo model name "
                        "(random weights), or with --model a .pth / safetensors weights file")
    e.add_argument("image", nargs="?", default=None, metavar="IMAGE_OR_FOLDER",
                   help="an image, or a folder of images, to offer on the page (default: test images of the "
                        "checkpoint's dataset, or a built-in picture)")
    e.add_argument("--port", type=in_range(int, 0, 65535), default=None,
                   help="port to listen on (default 8765, or a free one if that is taken; 0: any free port)")
    e.add_argument("--host", default=None,
                   help="address to listen on (default 127.0.0.1: this machine only; anything else is reachable "
                        "by others, and the command warns)")
    e.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    e.add_argument("--export", default=None, metavar="FILE",
                   help="write a self-contained static HTML report to FILE instead of serving")
    e.add_argument("--input-shape", type=input_shape_option, default=None, help="C,H,W (default: the checkpoint's)")
    e.add_argument("--model", default=None, metavar="NAME",
                   help="the zoo model a weights file (.pth, safetensors state_dict) is for, as cnnkit import takes it")
    e.add_argument("--num-classes", type=positive_int, default=None,
                   help="with --model: classes of the model's head (default 1000)")
    e.add_argument("--fully-convolutional", action="store_true",
                   help="convert the classifier to a fully convolutional network: images keep their own width")
    e.set_defaults(handler=explore_command)


def explore_command(args) -> int:
    if args.num_classes is not None and args.model is None:
        raise UsageError("--num-classes goes with --model (a weights file's zoo model)")
    target = load_target(args.target, args.input_shape, model=args.model, num_classes=args.num_classes)
    if args.fully_convolutional:
        target.model = to_fully_convolutional(target.model, target.input_shape)
        target.label += ", fully convolutional"
    samples = build_samples(target, args.image, fully_convolutional=args.fully_convolutional)
    explorer = Explorer(target, samples, fully_convolutional=args.fully_convolutional)
    if args.export:
        sample = samples[0]
        path = write_report(explorer, sample.load(), sample.name, args.export)
        wrote(path)
        return 0
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"the page needs {' and '.join(missing)}: pip install 'cnnkit[explore]'")
    host = args.host or "127.0.0.1"
    if not is_loopback(host):
        print(f"warning: listening on {host}, not only on this machine: anyone who can reach this address "
              "sees the model and the images you upload", file=sys.stderr)

    def ready(url: str) -> None:
        taken = args.port is None and not url.rstrip("/").endswith(f":{DEFAULT_PORT}")
        note = f"; port {DEFAULT_PORT} is taken" if taken else ""
        print(f"cnnkit explore: {target.label} at {url}  (Ctrl+C stops{note})", flush=True)

    try:
        serve(explorer, host, args.port, open_browser=not args.no_browser, on_ready=ready)
    except KeyboardInterrupt:
        pass
    return 0
