"""TensorBoard: a ``fit`` callback that writes scalars, histograms, pictures and the model graph.

The event files are written through tensorboardX's writer; tensorboardX is imported only
when a ``TensorBoard`` callback starts writing, so ``import cnnkit`` does not load it.
The graph is cnnkit's own op graph (``cnnkit.explain.graph``) as a TensorBoard ``GraphDef``.
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import as_numpy
from ..explain.capture import capture, conv_layers
from ..explain.graph import Graph, model_graph
from ..train.callbacks import Callback
from .plots import feature_map_grid, filter_grid

__all__ = ["TensorBoard", "to_graph_def"]


class TensorBoard(Callback):
    """Write TensorBoard event files (through tensorboardX's writer).

    - Scalars: every numeric log value (loss, accuracy, val_*, lr, images/s) under
      ``epoch/<name>`` each epoch, and the batch loss every ``batch_every`` steps under
      ``batch/loss``.
    - Histograms (``histograms``), each epoch: every parameter under ``parameters/<name>``
      and its gradient under ``gradients/<name>`` (the gradient of the epoch's last batch).
    - Images (``images``), each epoch: the first conv layer's filters as a grid under
      ``filters/<layer>``, and the feature maps of the first ``feature_layers`` conv
      layers for one sample input under ``feature_maps/<layer>``.
    - The model graph (``graph``), once: the ops of one forward pass, grouped by module.

    The sample input is ``sample_input`` (one (C, H, W) image, normalized as the model
    expects) or else the first image of the first training batch, copied when the batch
    arrives: the callback never draws from the data loader itself, so the batch order
    and random state are the same with and without it. The extra forward passes for
    images and the graph run in eval mode and change no state.
    """

    def __init__(self, log_dir: str | os.PathLike = "runs", batch_every: int = 50, *,
                 histograms: bool = True, images: bool = True, graph: bool = True,
                 sample_input: np.ndarray | None = None, feature_layers: int = 4, max_filters: int = 64):
        self.log_dir, self.batch_every = str(log_dir), batch_every
        self.histograms, self.images, self.graph = histograms, images, graph
        self.sample = None if sample_input is None else np.asarray(sample_input, np.float32)[None]  # (1, C, H, W)
        self.feature_layers, self.max_filters = feature_layers, max_filters
        self.writer = None
        self.global_step = 0
        self.graph_written = False

    def on_train_begin(self, history) -> None:
        from tensorboardX import SummaryWriter  # optional heavy dependency: only when training with it

        self.writer = SummaryWriter(self.log_dir)

    def on_after_backward(self, step: int, loss, x) -> None:
        if self.sample is None and x is not None:
            data = getattr(x, "data", x)
            self.sample = np.array(data[:1], dtype=np.float32)       # (1, C, H, W), a copy

    def on_batch_end(self, step: int, logs: dict[str, float]) -> None:
        self.global_step += 1
        if self.batch_every and self.global_step % self.batch_every == 0:
            self.writer.add_scalar("batch/loss", logs["batch_loss"], self.global_step)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        step = epoch + 1
        for key, value in logs.items():
            self.writer.add_scalar(f"epoch/{key}", float(value), step)
        model = self.run.model if self.run is not None else None
        if model is not None and hasattr(model, "named_parameters"):
            if self.histograms:
                self._write_histograms(model, step)
            if self.images:
                self._write_images(model, step)
            if self.graph and not self.graph_written and self.sample is not None:
                self._write_graph(model)
        self.writer.flush()

    def _write_histograms(self, model, step: int) -> None:
        for name, p in model.named_parameters():
            self.writer.add_histogram(f"parameters/{name}", as_numpy(p.data).astype(np.float32), step)
            if p.grad is not None:
                self.writer.add_histogram(f"gradients/{name}", as_numpy(p.grad).astype(np.float32), step)

    def _write_images(self, model, step: int) -> None:
        convs = conv_layers(model)
        if not convs:
            return
        first = model.get_submodule(convs[0])
        grid = filter_grid(np.asarray(first.weight.data), self.max_filters)
        self.writer.add_image(f"filters/{convs[0]}", _enlarge(grid, 48 // max(first.kernel_size)), step)
        if self.sample is None or not self.feature_layers:
            return
        found, _ = capture(model, self.sample, convs[: self.feature_layers])
        for path, _, maps in found:
            if maps.ndim == 3:
                grid = feature_map_grid(maps)
                self.writer.add_image(f"feature_maps/{path}", _enlarge(grid, max(1, 64 // maps.shape[1])), step)

    def _write_graph(self, model) -> None:
        from tensorboardX.proto.event_pb2 import Event  # optional heavy dependency: only when writing

        graph_def = to_graph_def(model_graph(model, self.sample.shape[1:], x=self.sample))
        # tensorboardX's add_graph traces PyTorch models only; its file writer takes any GraphDef event.
        self.writer._get_file_writer().add_event(Event(graph_def=graph_def.SerializeToString()))
        self.graph_written = True

    def on_train_end(self, history) -> None:
        if self.writer is not None:
            self.writer.close()


def _enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Repeat pixels so small grids (5x5 filters, 5x5 maps) are visible in TensorBoard; (C, H, W)."""
    factor = max(1, int(factor))
    return image.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else image


def to_graph_def(graph: Graph):
    """Convert the op graph to a TensorBoard ``GraphDef`` (tensorboardX's protobuf classes).

    Node names use the module path as the scope ("features/0/Conv2d_0",
    "features/0/weight"), so TensorBoard folds each layer into one box that opens to show
    its ops; each node carries its output shape in ``_output_shapes``.
    """
    # tensorboardX (and its protobuf) is heavy and optional: imported when a graph is written
    from tensorboardX.proto.attr_value_pb2 import AttrValue
    from tensorboardX.proto.graph_pb2 import GraphDef
    from tensorboardX.proto.node_def_pb2 import NodeDef
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboardX.proto.versions_pb2 import VersionDef

    def shape_attr(shape: tuple[int, ...]) -> dict:
        dims = [TensorShapeProto.Dim(size=int(d)) for d in shape]
        return {"_output_shapes": AttrValue(list=AttrValue.ListValue(shape=[TensorShapeProto(dim=dims)]))}

    def scoped(name: str) -> str:
        return name.replace(".", "/")

    node_name: dict[int, str] = {}
    nodes = []
    for k, t in enumerate(graph.tensors.values()):
        if t.kind == "result":
            continue
        name = scoped(t.name) if t.name else f"{t.kind}_{k}"
        node_name[t.id] = name
        op = {"input": "Input", "parameter": "Parameter", "buffer": "Buffer"}.get(t.kind, "Constant")
        nodes.append(NodeDef(name=name, op=op, attr=shape_attr(t.shape)))
    for k, op in enumerate(graph.ops):
        name = f"{scoped(op.module)}/{op.label}_{k}" if op.module else f"{op.label}_{k}"
        node_name[op.output] = name
        nodes.append(NodeDef(name=name, op=op.label, input=[node_name[t] for t in op.inputs],
                             attr=shape_attr(graph.tensors[op.output].shape)))
    return GraphDef(node=nodes, versions=VersionDef(producer=22))
