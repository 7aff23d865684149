"""The ``cnnkit`` command: argument parsing only; the work is done by the library.

    cnnkit train MODEL [--dataset mnist] [--epochs E] [--batch-size B] [--optimizer sgd|adam|adamw]
                       [--lr LR] [--seed S] [--out DIR] [--resume] [--augment] [--data-dir DIR]
    cnnkit evaluate CHECKPOINT [--dataset mnist]
    cnnkit predict CHECKPOINT IMAGE... [--top-k K]
    cnnkit summary MODEL|CHECKPOINT [--input-shape C,H,W] [--arithmetic]
    cnnkit models

Bad arguments and bad files end with one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + traceback
        raise CLIError(f"{self.prog}: {message}")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnkit", description="Build, train, inspect and run CNNs on NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a zoo model on a dataset")
    t.add_argument("model", help="zoo model name (see `cnnkit models`)")
    t.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist, kmnist or cifar10 (default mnist)")
    t.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default: the recipe's)")
    t.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: the recipe's)")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None)
    t.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run folder (default runs/MODEL-DATASET)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--augment", action="store_true", help="random shifts/rotations (and crops/flips for cifar10)")
    t.add_argument("--data-dir", default=None, help="folder with the dataset files (offline use; else CNNKIT_DATA)")
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to RUN/tensorboard")
    t.add_argument("--limit", type=_positive_int, default=None, help="train on the first N training images only")

    e = sub.add_parser("evaluate", help="accuracy, per-class precision/recall and confusion matrix")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", default=None, help="default: the dataset the checkpoint was trained on")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--batch-size", type=_positive_int, default=500)

    p = sub.add_parser("predict", help="top-k classes of PNG/JPEG images")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=_positive_int, default=3)
    p.add_argument("--no-invert", action="store_true", help="never invert dark-on-light images")

    s = sub.add_parser("summary", help="layer table: output shapes, parameters, MACs")
    s.add_argument("target", help="zoo model name or checkpoint file")
    s.add_argument("--input-shape", default=None, help="C,H,W (default: the model's)")
    s.add_argument("--arithmetic", action="store_true", help="show (W - F + 2P)/S + 1 and receptive fields")

    sub.add_parser("models", help="list the model zoo with parameter counts")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnkit`` console script; returns the exit status."""
    from . import runner
    from .checkpoint import CheckpointError

    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "train":
            return runner.train_command(args)
        if args.command == "evaluate":
            return runner.evaluate_command(args)
        if args.command == "predict":
            return runner.predict_command(args)
        if args.command == "summary":
            return runner.summary_command(args)
        if args.command == "models":
            return runner.models_command(args)
    except CLIError as e:
        print(str(e), file=sys.stderr)
        return 2
    except runner.UsageError as e:
        print(f"cnnkit {args.command}: {e}", file=sys.stderr)
        return 2
    except (CheckpointError, FileNotFoundError, OSError, ValueError) as e:
        name = getattr(args, "command", "")
        print(f"cnnkit {name}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
