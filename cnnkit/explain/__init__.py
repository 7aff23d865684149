"""Looking inside a network: what it computes, layer by layer, and why it answers as it does.

- ``summary.py``: ``summary``, a Keras-style table of layers, output shapes, parameters
  and MACs (with the output-size arithmetic and receptive fields on request).
- ``capture.py``: the outputs of chosen layers for one input (forward hooks).
- ``graph.py``: the define-by-run op graph of one forward pass, each op with its module.
- ``saliency.py``: the gradient of a class score with respect to the input pixels.
- ``conv_dense.py``: a convolution as the dense (Toeplitz) layer it equals, and its counts.
- ``toy_graph.py``: the articles' ``z = cos(x) * sin(x) + x / y`` with every gradient.

Nothing here draws: pictures of these results are ``cnnkit.viz``'s.
"""

from __future__ import annotations

from .capture import (
    LayerNotFoundError,
    capture,
    conv_layers,
    default_layers,
    find_conv,
    layer_names,
    leaf_layers,
)
from .conv_dense import ConvStats, DenseConv, conv_as_dense, conv_stats
from .graph import Graph, OpNode, TensorNode, model_graph, trace
from .saliency import Saliency, saliency
from .summary import LayerRow, SummaryResult, summary
from .toy_graph import ToyGraph, toy_graph

__all__ = [
    "ConvStats", "DenseConv", "Graph", "LayerNotFoundError", "LayerRow", "OpNode", "Saliency",
    "SummaryResult", "TensorNode", "ToyGraph", "capture", "conv_as_dense", "conv_layers", "conv_stats",
    "default_layers", "find_conv", "layer_names", "leaf_layers", "model_graph", "saliency", "summary",
    "toy_graph", "trace",
]
