"""explain.graph: the define-by-run op graph of one forward pass, each op with its module."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import Tensor, models
from cnnkit import functional as F
from cnnkit.explain.graph import trace
from cnnkit.viz.dot import graph_to_dot


def test_lenet5_op_graph_has_every_op_in_order_with_its_layer(lenet_graph):
    _, graph = lenet_graph
    assert [op.label for op in graph.ops] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Reshape",
        "Linear", "ReLU", "Linear", "ReLU", "Linear",
    ]
    assert [op.module for op in graph.ops] == [
        "features.0", "features.1", "features.2", "features.3", "features.4", "features.5", "flatten",
        "classifier.0", "classifier.1", "classifier.2", "classifier.3", "classifier.4",
    ]
    params = sorted(t.name for t in graph.tensors.values() if t.kind == "parameter")
    assert params == sorted(n for n, _ in models.lenet5().named_parameters())
    assert [graph.tensors[op.output].shape for op in graph.ops][:7] == [
        (1, 6, 28, 28), (1, 6, 28, 28), (1, 6, 14, 14), (1, 16, 10, 10), (1, 16, 10, 10), (1, 16, 5, 5),
        (1, 400),
    ]


def test_trace_explains_when_there_is_no_graph():
    with pytest.raises(ValueError, match=r"the output has no creator op"):
        trace(Tensor(np.ones(3)))
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x * 2.0).sum()
    y.backward()
    with pytest.raises(ValueError, match=r"graph was freed by backward\(\) at SumOp; trace before backward"):
        trace(y)


def test_trace_keeps_small_values_and_gradients():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = F.relu(x * 3.0)
    y.retain_grad()
    z = y.sum()
    z.backward(retain_graph=True)
    graph = trace(z, names={id(x): "x"})
    node = graph.tensors[id(x)]
    assert node.kind == "input" and node.name == "x"
    np.testing.assert_array_equal(node.grad, [3.0, 3.0])
    assert [t.kind for t in graph.tensors.values()].count("constant") == 1  # the 3.0
    dot = graph_to_dot(graph, show_tensors=True, show_values=True)
    assert r"x\nvalue [1., 2.]\ngrad [3., 3.]\n(2)" in dot
