"""The Transform contract: one sample through ``__call__``, a stack through ``batch``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ... import config
from ...config import accepts_rng

__all__ = ["Compose", "Lambda", "Transform", "apply_batch"]


class Transform:
    """Base class: ``__call__`` transforms one sample, ``batch`` a stack of them.

    The default ``batch`` loops over the samples; subclasses override it with a
    vectorized version.
    """

    def __call__(self, x: Any) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define __call__")

    def batch(self, xs: np.ndarray) -> np.ndarray:
        """Transform a stack of samples (leading axis N) at once."""
        return np.stack([self(x) for x in xs])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def apply_batch(transform: Callable | None, xs: np.ndarray) -> np.ndarray:
    """Apply ``transform`` to a stack: vectorized for a ``Transform``, else one sample at a time."""
    if transform is None:
        return xs
    if isinstance(transform, Transform):
        return transform.batch(xs)
    return np.stack([np.asarray(transform(x)) for x in xs])


class _RandomTransform(Transform):
    """A transform that draws from ``generator``, or from cnnkit's default generator at call time."""

    @accepts_rng
    def __init__(self, generator: np.random.Generator | None):
        self._rng = generator

    @property
    def generator(self) -> np.random.Generator:
        return self._rng if self._rng is not None else config.default_generator()


class Compose(Transform):
    """Apply transforms in order: ``Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])``."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def batch(self, xs: np.ndarray) -> np.ndarray:
        if not all(isinstance(t, Transform) for t in self.transforms):
            return super().batch(xs)
        for t in self.transforms:
            xs = t.batch(xs)
        return xs


class Lambda(Transform):
    """Wrap a function of one sample (and optionally ``batch_fn`` for a whole stack)."""

    def __init__(self, fn: Callable, batch_fn: Callable | None = None):
        self.fn, self.batch_fn = fn, batch_fn

    def __call__(self, x):
        return self.fn(x)

    def batch(self, xs: np.ndarray) -> np.ndarray:
        return self.batch_fn(xs) if self.batch_fn is not None else super().batch(xs)
