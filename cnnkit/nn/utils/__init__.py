"""Helpers over whole layers, as ``torch.nn.utils``: folding eval-mode BatchNorm into a convolution.

    fused = cnnkit.nn.utils.fuse_conv_bn_eval(conv, bn)   # one new Conv2d computing bn(conv(x))

``fusion.py`` holds the arithmetic of the fold and ``fuse_conv_bn_pairs``, which folds
named pairs of a model in place. Finding the pairs of a whole model (which BatchNorm
reads which convolution's output) needs a traced forward pass:
``cnnkit.surgery.fold_batchnorm``.
"""

from __future__ import annotations

from .fusion import fuse_conv_bn_eval, fuse_conv_bn_pairs, fuse_conv_bn_weights

__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_conv_bn_pairs"]
