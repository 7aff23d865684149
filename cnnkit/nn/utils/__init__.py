"""Helpers over whole layers, as ``torch.nn.utils``: folding eval-mode BatchNorm into a convolution,
freezing weights for inference.

    fused = cnnkit.nn.utils.fuse_conv_bn_eval(conv, bn)   # one new Conv2d computing bn(conv(x))
    cnnkit.nn.utils.prepack_for_inference(model)          # read-only weights, convolutions prepacked

``fusion.py`` holds the arithmetic of the fold and ``fuse_conv_bn_pairs``, which folds
named pairs of a model in place. Finding the pairs of a whole model (which BatchNorm
reads which convolution's output) needs a traced forward pass:
``cnnkit.surgery.fold_batchnorm``. ``inference.py`` freezes a model's weights and prepares
each convolution's weight once for the algorithms that run it; the whole inference
transform (fold, then freeze and prepack, on a copy) is ``cnnkit.surgery.optimize_for_inference``
(it traces the model, which ``nn`` may not import).
"""

from __future__ import annotations

from .fusion import fuse_conv_bn_eval, fuse_conv_bn_pairs, fuse_conv_bn_weights
from .inference import prepack_for_inference, prepacked_bytes

__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_conv_bn_pairs", "prepack_for_inference",
           "prepacked_bytes"]
