"""Deprecated: channel pruning moved to ``cnnkit.surgery.prune``.

This old name keeps working, with a DeprecationWarning, for code written before 0.2.
``load_pruned`` is ``cnnkit.load`` now (it rebuilds pruned and unpruned checkpoints alike).
"""

from __future__ import annotations

import warnings

from .io.checkpoint import load as load_pruned
from .io.checkpoint import resize_to_state
from .surgery.prune import ChannelGroup, channel_groups, conv_parameters, prune_channels, uniform_width

warnings.warn(
    "cnnkit.prune is deprecated: use cnnkit.surgery.prune (prune_channels, uniform_width, "
    "channel_groups) and cnnkit.load for pruned checkpoints",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "ChannelGroup", "channel_groups", "prune_channels", "uniform_width", "resize_to_state",
    "load_pruned", "conv_parameters",
]
