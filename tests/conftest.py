"""Fixtures shared by every test file: a seeded random generator and the array module."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

try:  # pragma: no cover - only on machines with a GPU
    import cupy
except ImportError:
    cupy = None


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A ``numpy.random.Generator`` seeded from the test's id.

    Every test (and every parametrized case) gets its own reproducible stream, so a
    failure reruns with the same numbers and cases do not share data by accident.
    """
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=["numpy"] + (["cupy"] if cupy is not None else []))
def xp(request):
    """The array module under test: numpy always, cupy too when a GPU is present."""
    return np if request.param == "numpy" else cupy
