"""Looking inside a network: what it computes, layer by layer, and why it answers as it does.

- ``summary.py``: ``summary``, a Keras-style table of layers, output shapes, parameters
  and MACs (with the output-size arithmetic and receptive fields on request).
- ``capture.py``: the outputs of chosen layers for one input (forward hooks).
- ``graph.py``: the define-by-run op graph of one forward pass, each op with its module;
  its layer level (``layer_units``); one pass kept whole with its tensors (``forward_pass``).
- ``neuron.py``: one output number of one layer rebuilt from its inputs (the window, the
  kernel, the products and the sum; the pooling window; the largest weighted inputs),
  and the input region it depends on (``input_boxes``).
- ``saliency.py``: the gradient of a class score with respect to the input pixels.
- ``gradcam.py``: Grad-CAM, where a convolutional layer saw evidence for a class.
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
from .gradcam import GradCAM, grad_cam, grad_cam_map
from .graph import (
    INPUT,
    ForwardPass,
    Graph,
    LayerUnit,
    OpNode,
    TensorNode,
    forward_pass,
    is_layer,
    layer_units,
    model_graph,
    trace,
)
from .neuron import explain_neuron, input_boxes
from .saliency import Saliency, saliency, saliency_map
from .summary import LayerRow, SummaryResult, adaptive_window, summary, window_geometry
from .toy_graph import ToyGraph, toy_graph

__all__ = [
    "ConvStats", "DenseConv", "ForwardPass", "GradCAM", "Graph", "INPUT", "LayerNotFoundError", "LayerRow",
    "LayerUnit", "OpNode", "Saliency", "SummaryResult", "TensorNode", "ToyGraph",
    "adaptive_window", "capture", "conv_as_dense", "conv_layers", "conv_stats", "default_layers",
    "explain_neuron", "find_conv", "forward_pass", "grad_cam", "grad_cam_map", "input_boxes", "is_layer", "layer_names",
    "layer_units", "leaf_layers", "model_graph", "saliency", "saliency_map", "summary", "toy_graph", "trace",
    "window_geometry",
]
