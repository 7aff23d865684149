"""Seeing inside a network: its computational graph, filters, feature maps, curves and saliency.

- ``graph``: the define-by-run graph of one forward pass as Graphviz DOT (op level and
  layer level), a TensorBoard ``GraphDef``, and rendering with ``dot``.
- ``plots``: matplotlib pictures (filters, feature maps, training curves, saliency,
  confusion matrix, image kernels, a convolution's dense matrix), made without pyplot.
- ``kernels``: the classic 3x3 and 5x5 image kernels, applied with cnnkit's conv2d, and
  built-in sample images.
- ``capture``: layer outputs captured with forward hooks.
- ``cli``: the ``cnnkit visualize``, ``cnnkit kernels`` and ``cnnkit explain`` commands.

matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

from .capture import LayerNotFoundError, capture, conv_layers, default_layers, find_conv, leaf_layers
from .graph import (
    Graph,
    dot_available,
    graph_to_dot,
    layer_graph_to_dot,
    model_graph,
    render_dot,
    to_graph_def,
    trace,
)
from .kernels import KERNELS, apply_kernel, get_kernel, load_image, output_size_formula, sample_image
from .plots import (
    feature_map_grid,
    filter_grid,
    plot_confusion_matrix,
    plot_curves,
    plot_dense_conv,
    plot_feature_maps,
    plot_filters,
    plot_kernel,
    plot_kernel_gallery,
    plot_saliency,
    save_figure,
)

__all__ = [
    "Graph", "trace", "model_graph", "graph_to_dot", "layer_graph_to_dot", "render_dot", "dot_available",
    "to_graph_def",
    "plot_filters", "plot_feature_maps", "plot_curves", "plot_saliency", "plot_confusion_matrix",
    "plot_kernel", "plot_kernel_gallery", "plot_dense_conv", "save_figure", "filter_grid", "feature_map_grid",
    "KERNELS", "get_kernel", "apply_kernel", "output_size_formula", "sample_image", "load_image",
    "LayerNotFoundError", "capture", "conv_layers", "leaf_layers", "find_conv", "default_layers",
]
