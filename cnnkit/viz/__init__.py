"""Pictures: what ``cnnkit.explain`` computes, drawn.

- ``plots.py``, ``surgery_plots.py``: matplotlib pictures (filters, feature maps,
  training curves, saliency, confusion matrix, image kernels, a convolution's dense
  matrix, FCN score maps, the pruning sweep), made without pyplot's global state.
- ``dot.py``: op and layer graphs as Graphviz DOT; rendering with ``dot``.
- ``image_filters.py``: the classic 3x3 and 5x5 image kernels (edges, blurs), applied
  with cnnkit's conv2d, and built-in sample images.
- ``tensorboard.py``: the ``TensorBoard`` callback for ``fit`` and the graph as a ``GraphDef``.

matplotlib, tensorboardX and Graphviz are imported (or run) only when a picture is made.
"""

from __future__ import annotations

from .dot import dot_available, graph_to_dot, layer_graph_to_dot, render_dot, toy_graph_to_dot
from .image_filters import (
    KERNELS,
    SAMPLES,
    apply_kernel,
    get_kernel,
    load_image,
    sample_image,
    to_grayscale,
)
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
from .surgery_plots import plot_prune_sweep, plot_score_map
from .tensorboard import TensorBoard, to_graph_def

__all__ = [
    "graph_to_dot", "layer_graph_to_dot", "toy_graph_to_dot", "render_dot", "dot_available",
    "plot_filters", "plot_feature_maps", "plot_curves", "plot_saliency", "plot_confusion_matrix",
    "plot_kernel", "plot_kernel_gallery", "plot_dense_conv", "save_figure", "filter_grid", "feature_map_grid",
    "KERNELS", "SAMPLES", "get_kernel", "apply_kernel", "sample_image", "load_image",
    "to_grayscale", "TensorBoard", "to_graph_def", "plot_score_map", "plot_prune_sweep",
]
