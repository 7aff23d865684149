"""nn.trace_layers and nn.eval_mode: the one forward-hook tracer, and its six users."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, models, nn
from cnnkit.errors import LayerNotFoundError, ShapeError
from cnnkit.explain import capture, model_graph, summary
from cnnkit.nn.tracer import trace_layers
from cnnkit.surgery import channel_groups, to_fully_convolutional
from cnnkit.train import first_nonfinite_output


class Twice(nn.Module):
    """Calls one layer twice, with a functional op in between."""

    def __init__(self, rng):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, generator=rng)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3, generator=rng))

    def forward(self, x):
        y = self.conv(x)
        y = self.conv(F.relu(y))
        return self.head(self.bn(y))


def hooks_left(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def mixed_modes(model):
    model.train()
    model.bn.eval()                     # a frozen BatchNorm inside a training model
    return [m.training for m in model.modules()]


def test_calls_are_recorded_in_execution_order_with_paths_and_call_numbers(rng):
    model = Twice(rng)
    x = Tensor(rng.standard_normal((1, 2, 4, 4)).astype(np.float32))
    with nn.trace_layers(model) as trace:            # default: every leaf module
        y = model(x)
    got = [(c.path, c.number, type(c.module).__name__) for c in trace.calls]
    assert got == [("conv", 1, "Conv2d"), ("conv", 2, "Conv2d"), ("bn", 1, "BatchNorm2d"),
                   ("head.0", 1, "Flatten"), ("head.1", 1, "Linear")]
    assert trace.calls[0].inputs[0] is x and trace.calls[-1].output is y
    assert trace.calls[1].inputs[0] is not trace.calls[0].output          # relu in between


def test_layers_by_path_module_or_predicate_and_on_call(rng):
    model = Twice(rng)
    x = Tensor(rng.standard_normal((1, 2, 4, 4)).astype(np.float32))
    seen = []
    with nn.trace_layers(model, ["head", model.bn], on_call=lambda c: seen.append(c.path), keep=False) as trace:
        model(x)
    assert seen == ["bn", "head"] and trace.calls == []
    with nn.trace_layers(model, lambda path, m: path == "" or isinstance(m, nn.Linear)) as trace:
        model(x)
    assert [c.path for c in trace.calls] == ["head.1", ""]               # hooks fire innermost first


def test_modes_and_hooks_are_restored_even_when_the_model_fails(rng):
    model = Twice(rng)
    before = mixed_modes(model)
    with pytest.raises(ShapeError):
        with nn.trace_layers(model) as trace:
            assert not any(m.training for m in model.modules())              # eval for the pass
            model(Tensor(np.zeros((1, 3, 4, 4), np.float32)))                  # 3 channels for 2
    assert [m.training for m in model.modules()] == before and hooks_left(model) == 0
    assert trace.calls == []


def test_grad_mode_for_the_pass(rng):
    model = Twice(rng)
    x = Tensor(rng.standard_normal((1, 2, 4, 4)).astype(np.float32))
    with nn.trace_layers(model, ["conv"]) as off:
        model(x)
    with nn.trace_layers(model, ["conv"], grad=True) as on:
        model(x)
    assert off.calls[0].output.creator is None and on.calls[0].output.creator is not None


def test_unknown_layer_names_are_refused_with_the_valid_ones(rng):
    model = Twice(rng)
    for name in ("nope", ""):
        with pytest.raises(LayerNotFoundError, match=r"no layer named .*; valid layers: conv, bn, head, head.0, head.1$"):
            with nn.trace_layers(model, [name]):
                pass
    assert hooks_left(model) == 0


def test_eval_mode_restores_each_modules_own_mode(rng):
    model = Twice(rng)
    before = mixed_modes(model)
    with nn.eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before


@pytest.mark.parametrize("user", ["summary", "channel_groups", "to_fully_convolutional", "capture", "model_graph",
                                  "first_nonfinite_output"])
def test_every_user_of_the_tracer_leaves_modes_and_hooks_as_they_were(user, rng):
    model = models.lenet5(generator=rng)
    model.train()
    model.classifier[2].eval()                       # a Dropout-free LeNet: mark one layer in eval mode
    before = [m.training for m in model.modules()]
    x = np.zeros((1, 1, 28, 28), np.float32)
    {
        "summary": lambda: summary(model, (1, 28, 28), print_fn=None),
        "channel_groups": lambda: channel_groups(model, (1, 28, 28)),
        "to_fully_convolutional": lambda: to_fully_convolutional(model, (1, 28, 28)),
        "capture": lambda: capture(model, x, ["features.0"]),
        "model_graph": lambda: model_graph(model, (1, 28, 28)),
        "first_nonfinite_output": lambda: first_nonfinite_output(model, x),
    }[user]()
    assert [m.training for m in model.modules()] == before
    assert hooks_left(model) == 0


def test_rewrite_replaces_a_layers_output_for_the_rest_of_the_pass():
    model = nn.Sequential(nn.ReLU(), nn.Identity(), nn.ReLU())
    x = Tensor(np.array([[-1.0, 2.0]], np.float32))
    with trace_layers(model, [model[1]], rewrite=lambda call: call.output * 10) as trace:
        y = model(x)
    np.testing.assert_array_equal(y.data, [[0.0, 20.0]])          # the next layer read the new output
    np.testing.assert_array_equal(trace.calls[0].output.data, [[0.0, 20.0]])   # and the trace holds it
    np.testing.assert_array_equal(model(x).data, [[0.0, 2.0]])    # the hook is gone after the block
