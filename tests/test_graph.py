"""cnnkit/graph.py: the one graph walk (post-order, iterative), on plain nodes and on op graphs."""

from __future__ import annotations

import numpy as np

from cnnkit import Tensor
from cnnkit.graph import op_order, post_order, producers


def test_every_node_comes_after_its_parents_and_once():
    # a diamond with a shared leaf: d <- (b, c), b <- a, c <- a
    parents = {"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []}
    order = post_order(["d"], parents.__getitem__, key=str)
    assert order == ["a", "b", "c", "d"]
    many = post_order(["b", "c"], parents.__getitem__, key=str)        # several roots
    assert many == ["a", "b", "c"]


def test_the_walk_is_iterative_deeper_than_the_recursion_limit():
    n = 20_000
    order = post_order([n], lambda k: [k - 1] if k > 0 else [], key=int)
    assert order == list(range(n + 1))


def test_op_order_is_execution_order_and_reaches_every_op():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    a = x * 2.0
    b = a + x
    c = (a * b).sum()
    ops = op_order([c.creator])
    names = [type(fn).__name__ for fn in ops]
    assert names[-1] == "SumOp" and len(ops) == 4
    position = {id(fn): i for i, fn in enumerate(ops)}
    for fn in ops:   # each op after the ops that made its inputs
        assert all(position[id(p)] < position[id(fn)] for p in producers(fn))
