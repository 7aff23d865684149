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
    cnnkit explore CHECKPOINT|MODEL [IMAGE_OR_FOLDER] [--port P] [--host H] [--no-browser]
                   [--export FILE] [--model NAME]                       (cli/explore.py)

Each command module has ``add_commands(subparsers)``; each sub-parser sets ``handler``
(a function of the parsed arguments returning an exit status). Handlers call the
library and print what it did; they hold no library logic.

Errors are one line on stderr, never a traceback (``--debug``, anywhere on the command
line, or ``CNNKIT_DEBUG=1`` shows the traceback too). Exit statuses:

    0    success
    1    an error: a bad or missing file, bad data, a failed check, out of memory or disk
    2    a usage error: arguments that do not make sense (``UsageError``, argparse's complaints)
    130  interrupted (Ctrl-C, SIGINT); ``cnnkit train`` saves its state first
    143  terminated (SIGTERM); ``cnnkit train`` saves its state first, as for Ctrl-C
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

# errors.py only: this module is the console script's entry point, and the library (NumPy,
# numba: ~1 s) is imported inside ``main``, where Ctrl-C ends as one line (``cnnkit/__init__.py``
# loads its API on first use for the same reason).
from ..errors import CnnkitError, NonFiniteError, Terminated, UsageError, raise_from_signal

T = TypeVar("T")

__all__ = [
    "main", "build_parser", "number", "in_range", "comma_list", "positive_int", "non_negative_int",
    "positive_float", "finite_float", "fraction", "thread_count", "COMMAND_MODULES",
    "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_TERMINATED",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130   # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143    # 128 + SIGTERM


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + traceback
        raise UsageError(f"{self.prog}: {message}")


_DEBUG_HELP = "on an error, also print the Python traceback (or set CNNKIT_DEBUG=1)"


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
    "cnnkit.cli.explore",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnkit`` parser with every command module's sub-commands."""
    parser = _Parser(prog="cnnkit", description="Build, train, inspect and run CNNs on NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    _add_debug_flag(sub)
    return parser


def _add_debug_flag(sub: argparse._SubParsersAction) -> None:
    """Let ``--debug`` stand anywhere: after the command and its sub-commands too."""
    for parser in set(sub.choices.values()):
        if not any("--debug" in a.option_strings for a in parser._actions):
            parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_flag(action)


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
    parse.expected = expected  # what a stored value is checked against too (``cnnkit train --resume``)
    return parse


def in_range(convert: Callable[[str], T], low: T, high: T, *, closed: str = "[]") -> Callable[[str], T]:
    """An argparse ``type``: a number from ``low`` to ``high``; ``closed`` says which ends are included.

    ``closed`` is "[]", "[)", "(]" or "()". NaN and infinities are never in a range.
    """
    def accept(v) -> bool:
        above = v >= low if closed[0] == "[" else v > low
        below = v <= high if closed[1] == "]" else v < high
        return math.isfinite(v) and above and below

    noun = "an integer" if convert is int else "a number"
    return number(convert, accept, f"{noun} in {closed[0]}{low:g}, {high:g}{closed[1]}")


def comma_list(item: Callable[[str], T]) -> Callable[[str], list[T]]:
    """An argparse ``type``: comma-separated values, each of the type ``item`` (``--sweep 0.25,0.5``)."""
    def parse(text: str) -> list[T]:
        values = []
        for part in text.split(","):
            try:
                values.append(item(part.strip()))
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentTypeError(f"{e} in {text!r}") from None
        return values

    parse.__name__ = f"list of {item.__name__}"
    return parse


# Every numeric option of every command has one of these types (or one built with ``number``,
# ``in_range`` or ``comma_list``): NaN, infinities and out-of-range values stop at parse time, with
# one line naming the option, what it expects and what it got (exit status 2, nothing written).
positive_int = number(int, lambda v: v > 0, "a positive integer")
non_negative_int = number(int, lambda v: v >= 0, "a non-negative integer")
# finite: a learning rate of inf or nan trains nothing (and used to end in a traceback)
positive_float = number(float, lambda v: math.isfinite(v) and v > 0, "a finite positive number")
finite_float = number(float, math.isfinite, "a finite number")
fraction = in_range(float, 0, 1, closed="[)")
# threads decoding or loading images: more than this only queues more batches in memory
thread_count = in_range(int, 0, 256)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnkit`` console script; returns the exit status (see the module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CNNKIT_DEBUG", "") not in ("", "0")
    command, previous = "cnnkit", None
    try:
        with _interrupt_after_imports():
            parser = build_parser()  # imports the command modules, and with them the library
            # The command owns its process: keep freed memory for the next step (backend/malloc.py).
            # Imported here, not in the header: see the header.
            from ..backend.malloc import tune_malloc
        try:
            args = parser.parse_args(argv)
        except UsageError as e:  # argparse's complaint, already prefixed with the (sub-)command
            print(str(e), file=sys.stderr)
            return EXIT_USAGE
        command = f"cnnkit {args.command}"
        tune_malloc()
        args.argv = argv  # as typed: `train --nproc N` relaunches it
        previous = _on_signals()
        with warnings.catch_warnings():
            if not debug:
                # NumPy's "overflow encountered in matmul" lines: a non-finite result they warn of is
                # reported by the command itself (NaNGuard, the checks of predict) as one clear line
                warnings.simplefilter("ignore", RuntimeWarning)
            return int(args.handler(args) or 0)
    except Terminated:
        print(f"{command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (``cnnkit models | head -1``): stop quietly, and
        # keep Python from complaining again when it flushes stdout at exit.
        _silence_stdout()
        return EXIT_ERROR
    except Exception as e:
        if debug:
            traceback.print_exc()
        status, line = _one_line(e)
        print(f"{command}: {line}", file=sys.stderr)
        return status
    finally:
        _restore_signals(previous)


def _one_line(e: Exception) -> tuple[int, str]:
    """The exit status and the one line that tell the user about ``e``."""
    if isinstance(e, UsageError):
        return EXIT_USAGE, _flat(str(e))
    if isinstance(e, MemoryError):
        detail = f" ({e})" if str(e) else ""
        return EXIT_ERROR, (f"out of memory{detail}; try a smaller --batch-size or input size")
    if isinstance(e, OSError) and not isinstance(e, CnnkitError):
        return EXIT_ERROR, _flat(_os_error(e))
    if isinstance(e, NonFiniteError):
        return EXIT_ERROR, _flat(str(e)) + " (training diverged: lower the learning rate, or check the data)"
    if isinstance(e, (CnnkitError, ValueError)):
        return EXIT_ERROR, _flat(str(e))
    return EXIT_ERROR, (
        f"unexpected error: {type(e).__name__}: {_flat(str(e))} (run again with --debug for the "
        "traceback; if your input was valid, please report it as a bug)"
    )


def _os_error(e: OSError) -> str:
    """``OSError`` as '<file>: <reason>' instead of "[Errno 2] No such file or directory: 'x'"."""
    if e.filename is not None and e.strerror:
        where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
        return f"{where}: {e.strerror}"
    return str(e.strerror or e)


def _flat(text: str) -> str:
    return " ".join(text.split("\n")).strip()


@contextmanager
def _interrupt_after_imports() -> Iterator[None]:
    """Ctrl-C while the library imports: recorded, and raised as KeyboardInterrupt once they end.

    Raised inside an import, it can come out as something else (NumPy's C extensions turn it
    into an ImportError, "Importing the numpy C-extensions failed") or be printed and dropped
    ("Exception ignored in", inside a finalizer); the imports take ~1 s. A second Ctrl-C is
    raised at once. Left alone where SIGINT is ignored (a background job) or off the main thread.
    """
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt

    try:
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.SIG_IGN:
            previous = None
        else:
            signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        previous = None
    if previous is None:
        yield
        return
    try:
        yield
    except Exception:
        if received:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _on_signals() -> dict:
    """While a command runs (main thread only): SIGTERM raises ``Terminated``, SIGINT ``KeyboardInterrupt``.

    Both through ``errors.raise_from_signal``, so one that arrives inside a finalizer is
    raised just after it instead of being dropped. SIGINT is taken over only from Python's
    default handler (left alone where it is ignored, a background job, or handled by the
    caller). Returns the handlers replaced, for ``_restore_signals``.
    """
    def on_term(signum, frame):
        raise_from_signal(Terminated(), signum, frame)

    def on_int(signum, frame):
        raise_from_signal(KeyboardInterrupt(), signum, frame)

    previous = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave signals alone
        pass
    return previous


def _restore_signals(previous: dict | None) -> None:
    for signum, handler in (previous or {}).items():
        signal.signal(signum, handler)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
