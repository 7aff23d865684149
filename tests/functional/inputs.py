"""Input makers and the gradient-check table type shared by the op tests (no PyTorch here).

A maker is ``make(rng) -> array``; tables of cases hold makers, so every parametrized
case draws its own data from the per-test ``rng`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import cnnkit
from cnnkit import Tensor


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape):
    """Values with |x| >= 0.1: kinks (relu, abs) stay out of reach of rounding and of the step."""
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)


def with_zeros(*shape):
    """Normal values with exact zeros mixed in: tests the gradient convention at a kink."""
    return lambda rng: rng.standard_normal(shape) * (rng.random(shape) > 0.25)


def with_nans(*shape):
    """Normal values, exact zeros and NaNs mixed in: NaN in, NaN out, gradients as PyTorch."""
    def make(rng):
        x = rng.standard_normal(shape) * (rng.random(shape) > 0.2)
        x[rng.random(shape) < 0.25] = np.nan
        return x
    return make


def integers(*shape, low=-2, high=3):
    """Small integers as floats: max-pool windows full of ties."""
    return lambda rng: rng.integers(low, high, shape).astype(np.float64)


def distinct(*shape):
    """Values 0.1 apart in random order: every max (and max-pool window) has one winner."""
    return lambda rng: rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


def classes(k, *shape):
    return lambda rng: rng.integers(0, k, shape)


def const(array):
    return lambda rng: np.asarray(array)


def probabilities(*shape):
    """Soft targets: non-negative, summing to 1 over axis 1."""
    return lambda rng: np.moveaxis(rng.dirichlet(np.ones(shape[1]), shape[:1] + shape[2:]), -1, 1)


def channel_major(x):
    """The same values in (C, N, H, W) memory: the (N, C, H, W) view conv/pool ops return."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


@dataclass(frozen=True)
class Check:
    """``fn`` applied to the arrays ``makers`` draw; floating ones are gradient-checked."""

    id: str
    fn: Callable[..., Tensor]
    makers: tuple

    def __init__(self, id: str, fn: Callable[..., Tensor], *makers):
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "makers", makers)

    def run(self, rng) -> None:
        """float64 central differences against backward for every element of every float input."""
        assert cnnkit.gradcheck(self.fn, [make(rng) for make in self.makers])


def checks(table: list[Check]):
    """Parametrize a test over a table of Checks (ids from the table)."""
    return pytest.mark.parametrize("check", table, ids=[c.id for c in table])
