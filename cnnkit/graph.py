"""The one graph walk: nodes reachable from some roots, each after the nodes it depends on.

Every op a forward pass runs is recorded as the ``creator`` of its output tensor and
holds its input tensors, so the computation is a graph that can be walked back from
the output. ``backward`` walks it (in reverse: each op before the ops that produced its
inputs), ``cnnkit.explain.graph`` walks it to draw it, and ``cnnkit.surgery.prune``
walks it with whole layers folded into single steps. They all use ``post_order``:
an iterative depth-first post-order, so graphs deeper than Python's recursion limit work.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .function import Function
    from .tensor import Tensor

__all__ = ["post_order", "op_order", "producers", "value_at", "input_values"]

Node = TypeVar("Node")


def post_order(
    roots: Sequence[Node],
    parents: Callable[[Node], Iterable[Node]],
    key: Callable[[Node], Hashable] = id,
) -> list[Node]:
    """Every node reachable from ``roots`` through ``parents``, each after all of its parents.

    Depth-first, iterative (no recursion); a node reached twice is listed once. Among
    independent nodes the order follows ``roots`` and each node's ``parents`` (earlier
    first), so the result is deterministic.

    Args:
        roots: where the walk starts (e.g. the op that made the loss).
        parents: the nodes a node depends on (e.g. the creators of an op's inputs).
        key: identity of a node (default ``id``: nodes need not be hashable).

    Returns:
        Nodes in dependency order: reversing it puts every node before its parents (the
        order ``backward`` needs).
    """
    order: list[Node] = []
    seen: set[Hashable] = set()
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(roots)]
    pop, push, add, emit = stack.pop, stack.append, seen.add, order.append   # (once per backward pass)
    while stack:
        node, expanded = pop()
        if expanded:
            emit(node)  # every parent of node is already in `order`
            continue
        k = key(node)
        if k in seen:  # pushed twice, by two children; finished the first time
            continue
        add(k)
        push((node, True))
        ps = parents(node)
        if type(ps) is not list and type(ps) is not tuple:   # (a list needs no copy to be reversed)
            ps = list(ps)
        for parent in reversed(ps):
            if key(parent) not in seen:
                push((parent, False))
    return order


def producers(fn: Function) -> list[Function]:
    """The ops that made ``fn``'s inputs when it ran (leaves such as parameters have none)."""
    if fn.inputs is None:
        return []
    return [c for c in fn.input_creators if c is not None]


def value_at(t: Tensor, creator: Function | None) -> Tensor:
    """The tensor holding the value ``t`` had when ``creator`` was its creator.

    Usually ``t`` itself. A tensor assigned in place since (``x[mask] = v``,
    ``functional/setitem.py``) holds its new value and a new creator; the value before is then
    the output of the op that made it (its ``output_ref``, which the assignment points at the
    old value), or, for a tensor that was a leaf, the leaf the first assignment read.
    """
    if t.creator is creator:
        return t
    if creator is not None:
        held = creator.output_ref() if creator.output_ref is not None else None
        return held if held is not None else t
    while t.creator is not None and t.creator.inputs:  # back through the assignments to the leaf
        t = t.creator.inputs[0]
    return t


def input_values(fn: Function) -> list[Tensor]:
    """The tensors holding the values ``fn`` read when it ran, one per input (``value_at``):
    what graph walks that follow tensors (drawing, pruning, export) should read."""
    return [value_at(t, c) for t, c in zip(fn.inputs, fn.input_creators, strict=True)]


def op_order(roots: Sequence[Function]) -> list[Function]:
    """The ops reachable from ``roots`` in execution order: each after the ops that made its inputs."""
    return post_order(roots, producers)
