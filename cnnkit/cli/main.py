"""The ``cnnkit`` command: the parser, the argument types, and the one place errors become lines.

    cnnkit train MODEL [--dataset mnist] [--epochs E] [--batch-size B] [--optimizer sgd|adam|adamw]
                       [--lr LR] [--seed S] [--out DIR] [--resume] [--augment] [--data-dir DIR]
    cnnkit evaluate CHECKPOINT [--dataset mnist]                       (cli/evaluate.py)
    cnnkit predict CHECKPOINT IMAGE... [--top-k K]                      (cli/evaluate.py)
    cnnkit summary MODEL|CHECKPOINT [--input-shape C,H,W] [--arithmetic] (cli/models.py)
    cnnkit models                                                       (cli/models.py)
    cnnkit visualize filters|feature-maps|curves|graph|saliency ...     (cli/visualize.py)
    cnnkit kernels [IMAGE] --kernel NAME                                (cli/visualize.py)
    cnnkit explain conv|graph                                           (cli/explain.py)
    cnnkit fcn CHECKPOINT [IMAGE | --mnist-digits N] -o heatmap.png     (cli/surgery.py)
    cnnkit prune CHECKPOINT --amount A [--finetune-epochs E] [--sweep A,B,...] -o OUT
    cnnkit import FILE --model MODEL -o OUT [--num-classes K] [--skip MODULE]  (cli/weights.py)
    cnnkit weights [MODEL]                                              (cli/weights.py)
    cnnkit export CHECKPOINT -o model.onnx [--opset N] [--fixed-batch] [--dynamic-size]  (cli/onnx.py)

Each command module has ``add_commands(subparsers)``; each sub-parser sets ``handler``
(a function of the parsed arguments returning an exit status). Handlers call the
library and print what it did; they hold no library logic. Bad arguments and bad files
end with one line on stderr and a non-zero exit status: 2 for a usage error (``UsageError``,
argparse's complaints), 1 for a file or data problem, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import CnnkitError, UsageError

T = TypeVar("T")

__all__ = ["main", "build_parser", "number", "positive_int", "non_negative_int", "positive_float", "fraction",
           "COMMAND_MODULES"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + traceback
        raise UsageError(f"{self.prog}: {message}")


# The modules that add sub-commands, in the order ``cnnkit --help`` lists them. They are
# imported when the parser is built, so ``import cnnkit.cli`` stays cheap.
COMMAND_MODULES = (
    "cnnkit.cli.train",
    "cnnkit.cli.evaluate",
    "cnnkit.cli.models",
    "cnnkit.cli.visualize",
    "cnnkit.cli.explain",
    "cnnkit.cli.surgery",
    "cnnkit.cli.weights",
    "cnnkit.cli.onnx",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnkit`` parser with every command module's sub-commands."""
    parser = _Parser(prog="cnnkit", description="Build, train, inspect and run CNNs on NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def number(convert: Callable[[str], T], accept: Callable[[T], bool], expected: str) -> Callable[[str], T]:
    """An argparse ``type``: ``convert`` the text, keep it if ``accept``-ed, else say what was expected."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected.replace(" ", "_")
    return parse


positive_int = number(int, lambda v: v > 0, "a positive integer")
non_negative_int = number(int, lambda v: v >= 0, "a non-negative integer")
positive_float = number(float, lambda v: v > 0, "a positive number")
fraction = number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnkit`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:  # argparse's complaint, already prefixed with the (sub-)command
        print(str(e), file=sys.stderr)
        return 2
    command = args.command
    try:
        return int(args.handler(args) or 0)
    except UsageError as e:
        print(f"cnnkit {command}: {e}", file=sys.stderr)
        return 2
    except (CnnkitError, OSError, ValueError) as e:
        print(f"cnnkit {command}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
