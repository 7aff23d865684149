"""The ``cnnkit`` command: argument parsing only; the work is done by the library.

    cnnkit train MODEL [--dataset mnist] [--epochs E] [--batch-size B] [--optimizer sgd|adam|adamw]
                       [--lr LR] [--seed S] [--out DIR] [--resume] [--augment] [--data-dir DIR]
    cnnkit evaluate CHECKPOINT [--dataset mnist]
    cnnkit predict CHECKPOINT IMAGE... [--top-k K]
    cnnkit summary MODEL|CHECKPOINT [--input-shape C,H,W] [--arithmetic]
    cnnkit models
    cnnkit visualize filters|feature-maps|curves|graph|saliency ...   (cnnkit/viz/cli.py)
    cnnkit kernels [IMAGE] --kernel NAME; cnnkit explain conv|graph   (cnnkit/viz/cli.py)
    cnnkit fcn CHECKPOINT [IMAGE | --mnist-digits N] -o heatmap.png   (cnnkit/surgery_cli.py)
    cnnkit prune CHECKPOINT --amount A [--finetune-epochs E] [--sweep A,B,...] -o OUT

Bad arguments and bad files end with one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "positive_int", "non_negative_int", "positive_float", "COMMAND_MODULES"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + traceback
        raise CLIError(f"{self.prog}: {message}")


# Each module adds its sub-commands with ``add_commands(subparsers)``; every sub-parser
# sets ``handler`` (a function of the parsed args returning an exit status).
COMMAND_MODULES = ("cnnkit.runner", "cnnkit.viz.cli", "cnnkit.surgery_cli")


def _build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="cnnkit", description="Build, train, inspect and run CNNs on NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnkit`` console script; returns the exit status."""
    from .checkpoint import CheckpointError
    from .runner import UsageError

    parser = _build_parser()
    command = ""
    try:
        args = parser.parse_args(argv)
        command = args.command
        return int(args.handler(args) or 0)
    except CLIError as e:
        print(str(e), file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"cnnkit {command}: {e}", file=sys.stderr)
        return 2
    except (CheckpointError, OSError, ValueError) as e:
        print(f"cnnkit {command}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
