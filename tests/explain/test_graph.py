"""explain.graph: the define-by-run op graph of one forward pass, each op with its module."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import Tensor, models, nn
from cnnkit import functional as F
from cnnkit.explain import saliency
from cnnkit.explain.capture import capture, leaf_layers
from cnnkit.explain.graph import INPUT, forward_pass, layer_units, model_graph, trace
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


# --------------------------------------------------------------------------- the layer level
def _pass(model, shape, rng):
    model.eval()
    return forward_pass(model, rng.standard_normal((1,) + shape).astype(np.float32))


def test_lenet5_is_a_chain_of_its_twelve_layers(rng):
    tr = _pass(models.lenet5(generator=rng), (1, 28, 28), rng)
    assert [u.name for u in tr.units] == [
        "features.0", "features.1", "features.2", "features.3", "features.4", "features.5", "flatten",
        "classifier.0", "classifier.1", "classifier.2", "classifier.3", "classifier.4"]
    assert [u.type for u in tr.units[:3]] == ["Conv2d", "ReLU", "MaxPool2d"]
    assert [u.inputs for u in tr.units] == [[INPUT]] + [[i] for i in range(11)]
    assert [u.shape for u in tr.units][:3] == [(6, 28, 28), (6, 28, 28), (6, 14, 14)]
    assert tr.units[-1].output is tr.output


def test_residual_additions_are_units_fed_by_both_branches(rng):
    tr = _pass(models.resnet18(generator=rng), (3, 64, 64), rng)
    adds = [u for u in tr.units if u.type == "Add"]
    assert len(adds) == 8 and all(u.kind == "op" and len(u.inputs) == 2 for u in adds)
    first = adds[0]
    assert first.name == "layer1.0: Add" and first.path == "layer1.0"
    names = {tr.units[i].name for i in first.inputs}
    assert names == {"layer1.0.bn2", "maxpool"}                      # the identity shortcut
    down = next(u for u in adds if u.path == "layer2.0")
    assert {tr.units[i].name for i in down.inputs} == {"layer2.0.bn2", "layer2.0.downsample.1"}
    # the block's ReLU module runs twice: two units, numbered
    assert [u.name for u in tr.units if u.path == "layer1.0.relu"] == ["layer1.0.relu", "layer1.0.relu (call 2)"]


def test_concatenations_and_identity_layers(rng):
    tr = _pass(models.googlenet(generator=rng, init_weights=False), (3, 64, 64), rng)
    cats = [u for u in tr.units if u.type == "Concat"]
    assert len(cats) == 9 and all(len(u.inputs) == 4 for u in cats)
    # Dropout in eval mode runs no op: an "identity" unit after the functional flatten, which
    # it must not claim (it is the op before it, outside any layer)
    drop = next(u for u in tr.units if u.path == "dropout")
    assert drop.kind == "identity" and drop.output is drop.input_tensors[0]
    before = tr.units[drop.inputs[0]]
    assert before.kind == "op" and before.type == "Reshape"
    fc = next(u for u in tr.units if u.path == "fc")
    assert fc.inputs == [drop.index]


def test_layer_outputs_equal_the_forward_hook_capture(rng):
    model = models.resnet20(generator=rng)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    model.eval()
    tr = forward_pass(model, x)
    found, out = capture(model, x, leaf_layers(model))
    calls: dict[str, int] = {}
    captured = {}
    for path, _, a in found:
        calls[path] = calls.get(path, 0) + 1
        captured[(path, calls[path])] = a
    layers = [u for u in tr.units if u.kind == "layer"]
    assert len(layers) == len(captured)
    for u in layers:
        np.testing.assert_array_equal(np.asarray(u.output.data[0]), captured[(u.path, u.call)])
    np.testing.assert_array_equal(np.asarray(tr.output.data), out)


def test_the_model_state_is_restored(rng):
    model = models.lenet5(generator=rng)
    model.train()
    model.classifier[0].weight.requires_grad = False
    forward_pass(model, rng.standard_normal((1, 1, 28, 28)).astype(np.float32))
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, True, False, True, True, True, True, True]


def test_backward_through_the_kept_pass_gives_the_saliency_gradient(rng):
    model = models.lenet5(generator=rng)
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    model.eval()
    tr = forward_pass(model, x)
    seed = np.zeros(tr.output.shape, np.float32)
    seed[0, 3] = 1.0
    tr.output.backward(seed, retain_graph=True)
    reference = saliency(model, x[0], target=3)
    np.testing.assert_allclose(np.asarray(tr.input.grad[0]), reference.gradient, rtol=1e-5, atol=1e-7)


def test_a_model_that_returns_no_tensor_is_refused(rng):
    class Pair(nn.Module):
        def forward(self, x):
            return (x, x)

    with pytest.raises(ValueError, match="model_graph expects the model to return a Tensor, got tuple"):
        forward_pass(Pair(), np.zeros((1, 1, 2, 2), np.float32))


def test_a_layer_that_runs_no_op_claims_none_of_the_ops_before_it(rng):
    # GoogLeNet: fc(dropout(flatten(avgpool(x)))) with a functional flatten; Dropout in eval
    # mode returns its input, and used to claim that flatten as its own op.
    graph = model_graph(models.googlenet(generator=rng, init_weights=False), (3, 64, 64))
    reshape = next(op for op in graph.ops if op.label == "Reshape")
    assert reshape.module is None
    assert [(p, c) for p, c, _ in graph.identities] == [("dropout", 1)]
    units = layer_units(graph, identities=False)
    assert all(u.kind != "identity" for u in units) and any(u.kind == "op" and u.type == "Reshape" for u in units)


def test_layer_units_of_a_graph_are_those_of_the_pass(rng):
    model = models.resnet20(generator=rng)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    units = layer_units(model_graph(model, x=x))
    traced = forward_pass(model, x).units
    assert [(u.name, u.kind, u.type, u.inputs) for u in units] == [(u.name, u.kind, u.type, u.inputs) for u in traced]


class _AssignsInPlace(nn.Module):
    """A forward that reads a conv's output, then assigns into it (x[mask] = v): the op that
    read it before must still read the conv's output, the ops after the assigned value."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        z = y * 2.0                  # reads y before the assignment
        y[y < 0] = 0.5
        return self.conv2(z + y)


def test_a_forward_assigning_in_place_has_torchs_graph(rng):
    # model_graph read each input's creator now, not when its op ran: the op before the
    # assignment and the assignment itself shared one output node, and the assignment's input
    # was missing from the graph
    torch = pytest.importorskip("torch")

    class Torch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.conv2 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 2, 3)

        def forward(self, x):
            y = self.conv(x)
            z = y * 2.0
            y[y < 0] = 0.5
            return self.conv2(z + y)

    names = {"ConvolutionBackward0": "Conv2dOp", "MulBackward0": "MulOp", "IndexPutBackward0": "SetItemOp",
             "AddBackward0": "AddOp"}
    out = Torch()(torch.zeros(1, 3, 6, 6, requires_grad=True))
    theirs, stack, seen = set(), [out.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen or type(fn).__name__ not in names:
            continue
        seen.add(id(fn))
        for parent, _ in fn.next_functions:
            if parent is not None and type(parent).__name__ in names:
                theirs.add((names[type(parent).__name__], names[type(fn).__name__]))
                stack.append(parent)

    graph = model_graph(_AssignsInPlace(), (3, 6, 6))
    made_by = {op.output: op for op in graph.ops}
    assert len(made_by) == len(graph.ops)                       # one node per value
    assert all(t in graph.tensors for op in graph.ops for t in op.inputs)
    ours = {(made_by[t].type, op.type) for op in graph.ops for t in op.inputs if t in made_by}
    assert ours == theirs == {("Conv2dOp", "MulOp"), ("Conv2dOp", "SetItemOp"), ("MulOp", "AddOp"),
                              ("SetItemOp", "AddOp"), ("AddOp", "Conv2dOp")}
    assert [op.module for op in graph.ops if op.type == "Conv2dOp"] == ["conv", "conv2"]


def test_a_leaf_assigned_after_it_was_read_is_drawn_as_the_value_read(rng):
    # c is a constant when x * c reads it; c[0] = v (v requires grad) then makes it a SetItem
    # output: the multiplication still reads the constant, the addition the assigned value
    x, v = Tensor(rng.standard_normal(3), requires_grad=True), Tensor(np.array(5.0), requires_grad=True)
    c = Tensor(np.array([1.0, 2.0, 3.0]))
    a = x * c
    c[0] = v
    graph = trace(a + c, inputs=[x])
    mul, setitem, add = graph.ops
    assert (mul.type, setitem.type, add.type) == ("MulOp", "SetItemOp", "AddOp")
    np.testing.assert_array_equal(graph.tensors[mul.inputs[1]].value, [1.0, 2.0, 3.0])
    assert graph.tensors[mul.inputs[1]].kind == "constant"
    assert setitem.inputs[0] == mul.inputs[1] and add.inputs == [mul.output, setitem.output]
