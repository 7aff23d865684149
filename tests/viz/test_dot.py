"""viz.dot: op and layer graphs as Graphviz DOT, and rendering with dot."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import models, nn
from cnnkit.explain.graph import model_graph
from cnnkit.viz.dot import dot_available, graph_to_dot, layer_graph_to_dot, render_dot


class Residual(nn.Module):
    """relu(conv(x) + x), with the ReLU module called twice (as in torchvision's BasicBlock)."""

    def __init__(self, rng):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, generator=rng)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.relu(self.drop(self.relu(self.conv(x))) + x)


def test_op_level_dot_shows_shapes_and_parameters_as_inputs(lenet_graph):
    _, graph = lenet_graph
    dot = graph_to_dot(graph, title="LeNet-5")
    assert dot.startswith("digraph G {") and dot.rstrip().endswith("}")
    assert r'label="features.0: Conv2d\n(1, 6, 28, 28)"' in dot
    assert r'label="features.0.weight\n(6, 1, 5, 5)"' in dot
    assert r'label="input\n(1, 1, 28, 28)"' in dot
    assert 'label="output (1, 10)"' in dot
    assert 'label="LeNet-5"' in dot
    # 3 + 1 + 1 + 3 + 1 + 1 + 1 + 3 + 1 + 3 + 1 + 3 op inputs, and one edge to the output node
    assert dot.count("->") == 22 + 1
    again = model_graph(models.lenet5(generator=np.random.default_rng(0)), (1, 28, 28))
    assert dot == graph_to_dot(again, title="LeNet-5")  # node ids do not depend on memory addresses


def test_layer_level_dot_has_one_node_per_layer_with_parameter_counts(lenet_graph):
    model, graph = lenet_graph
    dot = layer_graph_to_dot(graph, model)
    assert dot.count("shape=box") == 12
    assert r'label="features.0\nConv2d  (1, 6, 28, 28)\n156 params"' in dot
    assert r'label="classifier.0\nLinear  (1, 120)\n48,120 params"' in dot
    assert dot.count("->") == 13  # a chain: input -> 12 layers -> output


def test_layer_level_dot_shows_skip_connections_and_repeated_calls(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, generator=rng), Residual(rng))
    graph = model_graph(model, (1, 6, 6))
    # Dropout runs no op in eval mode
    assert [op.label for op in graph.ops] == ["Conv2d", "Conv2d", "ReLU", "Add", "ReLU"]
    assert graph.ops[3].module == "1"  # the addition runs in the block's forward
    dot = layer_graph_to_dot(graph, model)
    assert 'label="1: Add  (1, 2, 6, 6)"' in dot
    assert r'label="1.relu (call 2)\nReLU  (1, 2, 6, 6)"' in dot
    lines = dot.splitlines()
    add = next(line.split()[0] for line in lines if "Add" in line and "label" in line)
    into_add = [line for line in lines if line.strip().endswith(f"-> {add};")]
    assert len(into_add) == 2  # from the block's ReLU and, skipping the block, from the stem conv


@pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")
def test_render_dot_writes_svg_and_png(lenet_graph, tmp_path):
    model, graph = lenet_graph
    svg = render_dot(graph_to_dot(graph), tmp_path / "g.svg")
    assert svg is not None and "<svg" in svg.read_text()
    png = render_dot(layer_graph_to_dot(graph, model), tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OSError, match=r"dot -Tsvg failed: .*syntax error"):
        render_dot("digraph { -> }", tmp_path / "bad.svg")


def test_render_dot_without_graphviz_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    assert not dot_available()
    assert render_dot("digraph { a -> b }", tmp_path / "g.svg") is None
    assert not (tmp_path / "g.svg").exists()
