"""The only global state in cnnkit: grad mode, the default dtype and the default generator.

Each changes through a context manager that restores the previous value on exit
(``no_grad``, ``enable_grad``, ``default_dtype``), or, for the generator, through
``manual_seed``, which the CLI and tests call, never library code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = [
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "default_dtype",
    "get_default_dtype",
    "manual_seed",
    "default_generator",
    "generator_scope",
]


class _GradMode(threading.local):
    """Grad mode is per thread, as in PyTorch: a worker thread starts with grad enabled."""

    def __init__(self) -> None:
        self.enabled = True


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
