"""The toy graph of the explainer articles: ``z = cos(x) * sin(x) + x / y``, forward and backward.

Every node keeps its value and its gradient dz/dnode, so the graph can be drawn with
both (``cnnkit.viz.dot.toy_graph_to_dot``, ``cnnkit explain graph``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..functional.trig import cos, sin
from ..tensor import Tensor
from .graph import Graph, trace

__all__ = ["ToyGraph", "toy_graph"]


@dataclass
class ToyGraph:
    """``z = cos(x) * sin(x) + x / y`` after its backward pass.

    Attributes:
        z: the output. tensors: name -> Tensor, every node of the graph in forward order
            ("x", "y", "a = cos(x)", ...), each with ``.data`` and ``.grad`` (dz/dnode).
    """

    z: Tensor
    tensors: dict[str, Tensor]

    def graph(self) -> Graph:
        """The op graph, tensors named as in ``tensors`` (draw it with ``cnnkit.viz.dot.toy_graph_to_dot``)."""
        names = {id(t): name for name, t in self.tensors.items()}
        return trace(self.z, names=names, inputs=[self.tensors["x"], self.tensors["y"]])


def toy_graph(x: float = 0.5, y: float = 2.0) -> ToyGraph:
    """Build ``z = cos(x) * sin(x) + x / y`` in float64, run backward, keep every gradient.

    Closed forms to check against: dz/dx = cos(x)**2 - sin(x)**2 + 1/y = cos(2x) + 1/y and
    dz/dy = -x / y**2.
    """
    xt = Tensor(np.array(x, dtype=np.float64), requires_grad=True)
    yt = Tensor(np.array(y, dtype=np.float64), requires_grad=True)
    a = cos(xt)
    b = sin(xt)
    c = a * b
    d = xt / yt
    z = c + d
    for t in (a, b, c, d, z):
        t.retain_grad()
    z.backward(retain_graph=True)  # keep the graph: it is drawn afterwards
    tensors = {"x": xt, "y": yt, "a = cos(x)": a, "b = sin(x)": b, "c = a * b": c, "d = x / y": d,
               "z = c + d": z}
    return ToyGraph(z, tensors)
