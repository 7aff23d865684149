"""Model surgery: rewrite a trained network into another one that computes what it should.

- ``fcn.py``: a classifier's fully connected head rewritten as convolutions, so one pass
  over a wide image scores every window (``to_fully_convolutional``), and the naive
  sliding window it replaces.
- ``sequence.py``: reading a strip of digits off such a score map.
- ``prune.py``: channel pruning (a smaller dense model, not a mask) and the thinner
  network trained from scratch.
- ``compare.py``: the before/after figures of pruning.
- ``fold.py``: a copy for inference with each eval-mode BatchNorm folded into the
  convolution before it (``fold_batchnorm``); the whole inference transform, fold then
  frozen and prepacked weights (``optimize_for_inference``).
"""

from __future__ import annotations

from .compare import channel_counts, format_comparison, images_per_second, measure, weights_file_size
from .fcn import ConversionError, FullyConvolutional, sliding_window, to_fully_convolutional
from .fold import fold_batchnorm, fold_for_inference, foldable_pairs, optimize_for_inference
from .prune import ChannelGroup, channel_groups, conv_parameters, prune_channels, uniform_width
from .sequence import read_sequence

__all__ = [
    "ChannelGroup", "ConversionError", "FullyConvolutional", "channel_counts", "channel_groups",
    "conv_parameters", "fold_batchnorm", "fold_for_inference", "foldable_pairs", "format_comparison",
    "images_per_second", "measure", "optimize_for_inference", "prune_channels", "read_sequence", "sliding_window",
    "to_fully_convolutional", "uniform_width", "weights_file_size",
]
