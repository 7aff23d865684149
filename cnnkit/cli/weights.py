"""``cnnkit import`` (any weights file -> a cnnkit checkpoint) and ``cnnkit weights`` (named weights)."""

from __future__ import annotations

import math
from pathlib import Path

from .. import models
from ..errors import UsageError
from ..io.weights import build_for_loading, load_weights, weights_dir, write_checkpoint
from ..models import weights as named
from .main import positive_int

__all__ = ["add_commands", "import_command", "import_model", "weights_command"]


def add_commands(sub) -> None:
    """Add ``import`` and ``weights`` to the ``cnnkit`` command."""
    p = sub.add_parser(
        "import", help="convert a .pth / safetensors / timm / Hugging Face weights file to a cnnkit checkpoint",
        description="Read weights safely (a .pth is never unpickled), map their keys to the zoo model's, check "
                    "every key and shape, and write a cnnkit checkpoint. FILE may also be a weights name "
                    "(resnet18.IMAGENET1K_V1).")
    p.add_argument("file", help="torch.save file, safetensors file, cnnkit checkpoint or weights name")
    p.add_argument("--model", required=True, help="the zoo model the weights are for (cnnkit models lists them)")
    p.add_argument("-o", "--output", required=True, help="the checkpoint to write (.safetensors)")
    p.add_argument("--num-classes", type=positive_int, default=None, help="classes of the model's head (default 1000)")
    p.add_argument("--skip", action="append", default=[], metavar="MODULE",
                   help="leave this module's weights out (repeatable), e.g. --skip fc for a new head")
    p.add_argument("--classes", default="auto", metavar="auto|imagenet|none|FILE",
                   help="class names stored with the weights: auto (ImageNet for 1000-class ImageNet models), "
                        "or a text file with one name per line")
    p.set_defaults(handler=import_command)

    w = sub.add_parser("weights", help="list the named pretrained weights (torchvision's ImageNet weights)")
    w.add_argument("model", nargs="?", default=None)
    w.set_defaults(handler=weights_command)


def _class_names(option: str, model_name: str, num_classes: int) -> tuple[list[str] | None, dict | None]:
    entry = named.find_weights(model_name, "DEFAULT")
    imagenet = entry.preprocessing.to_dict() if entry is not None else None
    if option == "none":
        return None, None
    if option in ("auto", "imagenet"):
        if num_classes == 1000 and (entry is not None or option == "imagenet"):
            return named.imagenet_classes(), imagenet
        if option == "imagenet":
            raise UsageError(f"--classes imagenet needs a 1000-class head, the model has {num_classes}")
        return None, None
    path = Path(option)
    if not path.is_file():
        raise UsageError(f"--classes: {option!r} is not auto, imagenet, none or a file")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != num_classes:
        raise UsageError(f"--classes: {option} has {len(names)} names, the model has {num_classes} classes")
    return names, None


def import_model(source: str, model_name: str, *, num_classes: int | None = None, skip: tuple[str, ...] = (),
                 classes: str = "auto"):
    """A zoo model with the weights of ``source`` (any weights file or name), as ``cnnkit import`` makes it.

    Returns:
        (model, its constructor config, the checkpoint ``extra`` to store: class names and the
        weights' preprocessing where known, ``imported_from``; the ``WeightsReport``).

    Raises:
        UsageError: an unknown model or --classes option. WeightsError, PthError: weights that
            do not fit the model (the message lists the keys) or a file that cannot be read.
    """
    if model_name not in models.list_models():
        raise UsageError(f"unknown model {model_name!r}; `cnnkit models` lists the zoo")
    num_classes = num_classes or 1000
    config = {"num_classes": num_classes}
    # Every weight is overwritten unless some are skipped: then the skipped ones keep their init.
    model = models.get_model(model_name, **config) if skip else build_for_loading(model_name, **config)
    report = load_weights(model, source, model_name=model_name, skip=tuple(skip))
    extra = {k: v for k, v in report.meta.items() if k != "model"}
    if report.kind != "cnnkit checkpoint" and report.kind != "named weights":
        names, preprocessing = _class_names(classes, model_name, num_classes)
        if names is not None:
            extra["classes"] = names
        if preprocessing is not None:
            extra.update(preprocessing=preprocessing, input_shape=[3, preprocessing["crop_size"], preprocessing["crop_size"]],
                         mean=preprocessing["mean"], std=preprocessing["std"])
    if model_name == "googlenet" and report.kind == "named weights":
        config["transform_input"] = True
    extra["imported_from"] = str(source)
    return model, config, extra, report


def import_command(args) -> int:
    model, config, extra, report = import_model(args.file, args.model, num_classes=args.num_classes,
                                                skip=tuple(args.skip), classes=args.classes)
    state = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    out = write_checkpoint(args.output, state, model_name=args.model, model_config=config, extra=extra)
    count = sum(math.prod(v.shape) for v in state.values())
    attached = " and ".join(x for x in ("classes" if extra.get("classes") else "",
                                        "preprocessing" if extra.get("preprocessing") else "") if x)
    skipped = f"; left out {', '.join(report.skipped)} (kept the model's initial values)" if report.skipped else ""
    dropped = f"; dropped {len(report.dropped)} keys on purpose ({', '.join(report.dropped[:4])}...)" if report.dropped else ""
    print(f"wrote {out}: {args.model}, {len(state)} tensors ({count:,} values) from {args.file} "
          f"[{report.kind}, {report.convention} keys]{'; ' + attached + ' attached' if attached else ''}{skipped}{dropped}")
    return 0


def weights_command(args) -> int:
    names = named.list_weights(args.model)
    if args.model is not None and not names:
        raise UsageError(f"no named weights for {args.model!r}; models with weights: "
                         f"{', '.join(sorted({n.split('.')[0] for n in named.list_weights()}))}")
    folder = weights_dir()
    print(f"{'weights':<30} {'top-1':>7} {'top-5':>7} {'MB':>7}  preprocessing            cached")
    for full in names:
        w = named.get_weights(*full.split("."))
        p = w.preprocessing
        top1 = "-" if math.isnan(w.metrics["acc@1"]) else f"{w.metrics['acc@1']:.2f}"
        top5 = "-" if math.isnan(w.metrics["acc@5"]) else f"{w.metrics['acc@5']:.2f}"
        cached = "yes" if (folder / f"{w.model}-{w.name}.safetensors").is_file() else "no"
        print(f"{full:<30} {top1:>7} {top5:>7} {w.file_size_mb:>7.1f}  resize {p.resize_size}, crop {p.crop_size:<6} {cached}")
    print(f"cache: {folder} (set CNNKIT_DATA to move it; CNNKIT_WEIGHTS_URL to download from a mirror)")
    return 0
