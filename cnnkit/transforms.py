"""Deprecated: the fully convolutional conversion moved to ``cnnkit.surgery.fcn``.

``cnnkit.data.transforms`` holds the image transforms (as torchvision's); this old name
of the conversion keeps working, with a DeprecationWarning, for code written before 0.2.
"""

from __future__ import annotations

import warnings

from .surgery.fcn import ConversionError, FullyConvolutional, sliding_window, to_fully_convolutional
from .surgery.sequence import read_sequence

warnings.warn(
    "cnnkit.transforms is deprecated: use cnnkit.surgery.fcn (to_fully_convolutional, sliding_window) "
    "and cnnkit.surgery.sequence (read_sequence); image transforms are cnnkit.data.transforms",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ConversionError", "FullyConvolutional", "to_fully_convolutional", "sliding_window", "read_sequence"]
