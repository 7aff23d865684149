"""explain.toy_graph: z = cos(x) * sin(x) + x / y with every value and gradient."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.explain import toy_graph
from cnnkit.viz.dot import toy_graph_to_dot


def test_toy_graph_values_and_gradients_match_the_closed_forms():
    x, y = 0.5, 2.0
    g = toy_graph(x, y)
    t = g.tensors
    assert float(g.z.data) == pytest.approx(np.cos(x) * np.sin(x) + x / y, rel=1e-12)
    assert float(t["x"].grad) == pytest.approx(np.cos(2 * x) + 1 / y, rel=1e-12)   # x is used three times
    assert float(t["y"].grad) == pytest.approx(-x / y**2, rel=1e-12)
    assert float(t["a = cos(x)"].grad) == pytest.approx(np.sin(x), rel=1e-12)        # dz/da = b
    assert float(t["b = sin(x)"].grad) == pytest.approx(np.cos(x), rel=1e-12)        # dz/db = a
    assert float(t["c = a * b"].grad) == 1.0 and float(t["d = x / y"].grad) == 1.0


def test_toy_graph_dot_shows_ops_values_and_gradients():
    dot = toy_graph_to_dot(toy_graph(0.5, 2.0))
    assert dot.startswith("digraph G {") and dot.rstrip().endswith("}")
    assert dot.count("shape=box") == 5                       # Cos, Sin, Mul, Div, Add
    for op in ("Cos", "Sin", "Mul", "Div", "Add"):
        assert f'label="{op}"' in dot
    assert r'label="x\nvalue 0.5\ngrad 1.04"' in dot
    assert r'label="y\nvalue 2\ngrad -0.125"' in dot
    assert r'label="z = c + d\nvalue 0.6707\ngrad 1"' in dot
    assert dot.count("->") == 8 + 5                           # 8 op inputs (1+1+2+2+2), 5 op outputs
