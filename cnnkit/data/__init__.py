"""Datasets. MNIST ships inside the package (the four canonical IDX files, gzipped)."""

from __future__ import annotations

from .idx import IDXError, read_idx
from .mnist import load_mnist

__all__ = ["IDXError", "load_mnist", "read_idx"]
