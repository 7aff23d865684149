"""The only global state in cnnkit: grad mode, the default dtype, the default generator,
the compiled kernels' switch and the number of threads.

Each changes through a context manager that restores the previous value on exit
(``no_grad``, ``enable_grad``, ``record_logic``, ``skip_backward_hooks``, ``default_dtype``,
``kernels``, ``num_threads``), or, for the generator, through ``manual_seed``, which the CLI and tests call, never library code.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "record_logic",
    "is_logic_recorded",
    "skip_backward_hooks",
    "are_backward_hooks_enabled",
    "default_dtype",
    "get_default_dtype",
    "manual_seed",
    "default_generator",
    "generator_scope",
    "accepts_rng",
    "rename_rng",
    "kernels",
    "kernels_enabled",
    "num_threads",
    "get_num_threads",
    "set_num_threads",
]


class _GradMode(threading.local):
    """Grad mode is per thread, as in PyTorch: a worker thread starts with grad enabled."""

    def __init__(self) -> None:
        self.enabled = True
        self.logic = False  # record_logic: comparisons and logic ops recorded as graph ops too
        self.backward_hooks = True  # skip_backward_hooks: modules run without their full backward hooks


_grad_mode = _GradMode()
_default_dtype = np.dtype(np.float32)
_generator = np.random.default_rng()


class _GeneratorScope(threading.local):
    """A generator that stands in for the default one in this thread (``generator_scope``)."""

    def __init__(self) -> None:
        self.generator: np.random.Generator | None = None


_generator_scope = _GeneratorScope()


def is_grad_enabled() -> bool:
    """Return True when ops record the graph for backward."""
    return _grad_mode.enabled


@contextmanager
def no_grad() -> Iterator[None]:
    """Run ops without recording the graph (evaluation, optimizer steps)."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def is_logic_recorded() -> bool:
    """Return True inside ``record_logic``: comparisons and logical ops join the recorded graph."""
    return _grad_mode.logic


@contextmanager
def record_logic() -> Iterator[None]:
    """Record comparisons and logical ops (``x > 0``, ``~m``, ``a & b``) as the creators of their
    bool results while grad mode records the graph, and record any op reading such a result.

    Their results still carry no gradient; the record only says how a mask was computed, for
    ONNX export's trace (``F.where(x > 0, x, 0)`` becomes Greater and Where). Outside the
    block a comparison's result is a leaf, as in PyTorch.
    """
    previous = _grad_mode.logic
    _grad_mode.logic = True
    try:
        yield
    finally:
        _grad_mode.logic = previous


def are_backward_hooks_enabled() -> bool:
    """Return False inside ``skip_backward_hooks``: modules' full backward hooks are not attached."""
    return _grad_mode.backward_hooks


@contextmanager
def skip_backward_hooks() -> Iterator[None]:
    """Run modules without attaching their full backward (pre-)hooks to the graph.

    The hooks act only in backward; a trace that reads the graph's structure (ONNX export,
    ``explain.model_graph``, batch-norm folding) should see the model's own ops, not the
    identity ops that route a call's gradients to its hooks (``nn/backward_hooks.py``), as
    ``torch.onnx.export`` ignores backward hooks.
    """
    previous = _grad_mode.backward_hooks
    _grad_mode.backward_hooks = False
    try:
        yield
    finally:
        _grad_mode.backward_hooks = previous


@contextmanager
def enable_grad() -> Iterator[None]:
    """Record the graph again inside a ``no_grad`` block."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = True
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def get_default_dtype() -> np.dtype:
    """Return the dtype given to tensors made from Python floats (float32 unless changed)."""
    return _default_dtype


@contextmanager
def default_dtype(dtype) -> Iterator[None]:
    """Make ``dtype`` (float32 or float64) the default for new floating tensors and parameters."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"default_dtype expects float32 or float64, got {dtype}")
    previous = _default_dtype
    _default_dtype = dtype
    try:
        yield
    finally:
        _default_dtype = previous


def manual_seed(seed: int) -> np.random.Generator:
    """Seed the default generator used where no explicit ``rng`` is given; return it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    """Return the default ``numpy.random.Generator`` (seed it with ``manual_seed``).

    Inside ``generator_scope(g)`` it is ``g``, in that thread only.
    """
    scoped = _generator_scope.generator
    return scoped if scoped is not None else _generator


@contextmanager
def generator_scope(generator: np.random.Generator) -> Iterator[np.random.Generator]:
    """Make ``generator`` this thread's default generator inside the block.

    The DataLoader runs each batch's random transforms under a generator seeded for that
    batch, so augmentation is the same whichever worker thread prepares the batch.
    """
    previous = _generator_scope.generator
    _generator_scope.generator = generator
    try:
        yield generator
    finally:
        _generator_scope.generator = previous



# ------------------------------------------------------------------ the randomness argument
# Every function and layer that draws random numbers takes ``generator=`` (a
# numpy.random.Generator; None: ``default_generator()``), as PyTorch names it. cnnkit <= 0.1
# called it ``rng=``; that keyword keeps working, with a DeprecationWarning.


def rename_rng(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Move a deprecated ``rng=`` keyword to ``generator=`` in ``kwargs`` (warning once per call)."""
    if "rng" in kwargs:
        if kwargs.get("generator") is not None:
            raise TypeError(f"{where} got both generator= and its deprecated name rng=")
        warnings.warn(f"{where}: rng= is deprecated, use generator= (as PyTorch)", DeprecationWarning, stacklevel=3)
        kwargs["generator"] = kwargs.pop("rng")
    return kwargs


def accepts_rng(fn: Callable) -> Callable:
    """Decorate a function (or ``__init__``) taking ``generator=`` to accept the old ``rng=`` too."""
    where = fn.__qualname__.removesuffix(".__init__")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **rename_rng(kwargs, where))

    return wrapper


# ------------------------------------------------------------- compiled kernels and threads
# Process-wide (not per thread): they govern the process's cores, which every thread shares.
# The environment gives the initial values: CNNKIT_KERNELS=0 starts with the kernels off,
# CNNKIT_NUM_THREADS=n starts with n threads.


def _threads_from_environment() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    raw = os.environ.get("CNNKIT_NUM_THREADS", "").strip()
    if raw in ("", "0"):
        return count
    if not raw.isdigit():  # as OpenMP does with a bad OMP_NUM_THREADS: warn, keep the default
        warnings.warn(
            f"CNNKIT_NUM_THREADS expects a positive integer, got {raw!r}; using {count} threads",
            RuntimeWarning,
            stacklevel=2,
        )
        return count
    return int(raw)


_kernels_enabled = os.environ.get("CNNKIT_KERNELS", "1").strip() != "0"
_num_threads = _threads_from_environment()


def kernels_enabled() -> bool:
    """Return True when ops may run cnnkit's compiled kernels (the default, when numba is installed).

    With the kernels off every op runs its NumPy reference path: the same results up to
    float rounding order, slower. ``cnnkit.backend.dispatch`` reads this switch.
    """
    return _kernels_enabled


@contextmanager
def kernels(enabled: bool) -> Iterator[None]:
    """Switch the compiled kernels on or off inside the block (tests, timing, debugging)."""
    global _kernels_enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"kernels expects True or False, got {enabled!r}")
    previous = _kernels_enabled
    _kernels_enabled = enabled
    try:
        yield
    finally:
        _kernels_enabled = previous


def get_num_threads() -> int:
    """Return how many threads cnnkit's kernels and matrix products may use (default: the CPUs)."""
    return _num_threads


def _check_threads(count, where: str) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"{where} expects a positive int, got {count!r}")
    return int(count)


def set_num_threads(count: int) -> None:
    """Let cnnkit's kernels and matrix products use ``count`` threads from now on (as
    ``torch.set_num_threads``; ``num_threads(count)`` sets it for a block only)."""
    global _num_threads
    _num_threads = _check_threads(count, "set_num_threads")


@contextmanager
def num_threads(count: int) -> Iterator[None]:
    """Let cnnkit's kernels and matrix products use ``count`` threads inside the block.

    The kernels' results do not depend on it: they split work into fixed pieces and sum
    partial results in a fixed order.
    """
    global _num_threads
    count = _check_threads(count, "num_threads")
    previous = _num_threads
    _num_threads = count
    try:
        yield
    finally:
        _num_threads = previous
