"""prepack_for_inference: frozen weights, lazy prepacks, eval mode only, input gradients, replaced arrays."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cnnkit import Tensor, nn, no_grad, optim
from cnnkit.backend import kernels
from cnnkit.errors import InferenceOnlyError, StateDictError
from cnnkit.nn.utils import prepack_for_inference, prepacked_bytes

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")


def net(rng, dtype=np.float32) -> nn.Module:
    """64 -> 64 3x3 convolutions (Winograd on large enough inputs), a 1x1 (gemm) and a small bank (direct)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, generator=rng, dtype=dtype), nn.ReLU(),       # direct
        nn.Conv2d(8, 64, 1, generator=rng, dtype=dtype), nn.ReLU(),                 # gemm
        nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, generator=rng, dtype=dtype), nn.ReLU()),
        nn.Conv2d(64, 64, 3, padding=1, bias=False, generator=rng, dtype=dtype),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10, generator=rng, dtype=dtype),
    )


def run(model, x):
    with no_grad():
        return model(Tensor(x)).data


def algorithms(model) -> dict[str, list[str]]:
    return {m.prepacked.layer: m.prepacked.forms() for m in model.modules() if getattr(m, "prepacked", None)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N, H", [(1, 8), (1, 20), (3, 13), (8, 16)])
def test_prepacked_model_gives_the_outputs_of_the_plain_one(rng, dtype, N, H):
    model = net(rng, dtype).eval()
    x = rng.standard_normal((N, 3, H, H)).astype(dtype)
    expected = run(model, x)
    packed = prepack_for_inference(copy.deepcopy(model))
    actual = run(packed, x)
    # the prepacked dispatch may pick F(4x4) where the plain one took F(2x2) or gemm: float32 rounding only
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    np.testing.assert_array_equal(run(packed, x), actual)               # the second call reuses the forms


def test_forms_are_computed_lazily_per_tile_size(rng):
    packed = prepack_for_inference(net(rng))
    assert prepacked_bytes(packed) == 0 and set(map(tuple, algorithms(packed).values())) == {()}
    run(packed, rng.standard_normal((2, 3, 16, 16)).astype(np.float32))  # 32 4x4 tiles: F(4x4)
    assert algorithms(packed)["4.0"] == ["winograd4"]
    run(packed, rng.standard_normal((1, 3, 14, 14)).astype(np.float32))  # 14x14: F(2x2)
    assert algorithms(packed)["4.0"] == ["winograd4", "winograd2"]
    assert algorithms(packed)["0"] == [] and algorithms(packed)["2"] == []  # direct and gemm: nothing to prepare
    assert prepacked_bytes(packed) == 2 * (36 + 16) * 64 * 64 * 4


def test_weights_are_frozen_copies(rng):
    model = net(rng)
    before = model[4][0].weight.data
    packed = prepack_for_inference(model)
    assert packed is model and not model.training and model.prepacked_for_inference
    assert before.flags.writeable                                        # the old array is not touched
    for name, p in packed.named_parameters():
        assert not p.data.flags.writeable and not p.requires_grad, name
    w = packed[4][0].weight
    for write in (lambda: w.data.__setitem__(0, 0.0), lambda: w.data.__iadd__(1.0),
                  lambda: setattr(w.data.flags, "writeable", True)):
        with pytest.raises(ValueError):
            write()


def test_an_optimizer_step_raises_instead_of_going_stale(rng):
    packed = prepack_for_inference(net(rng))
    w = packed[5].weight
    w.requires_grad = True
    w.grad = np.ones_like(w.data)
    with pytest.raises(ValueError, match="read-only"):
        optim.SGD([w], lr=0.1).step()


def test_training_mode_raises_naming_the_layer(rng):
    packed = prepack_for_inference(net(rng)).train()
    with pytest.raises(InferenceOnlyError, match=r"^0 \(Conv2d\) has weights frozen for inference .* got training mode"):
        packed(Tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32)))
    packed.eval()
    packed(Tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32)))  # eval mode again: runs
    alone = prepack_for_inference(nn.Conv2d(3, 4, 3, generator=rng)).train()
    with pytest.raises(InferenceOnlyError, match=r"^Conv2d has weights frozen for inference"):
        alone(Tensor(np.zeros((1, 3, 8, 8), np.float32)))


def test_input_gradients_flow_with_grad_enabled(rng):
    model = net(rng, np.float64).eval()
    packed = prepack_for_inference(copy.deepcopy(model))
    x = rng.standard_normal((2, 3, 16, 16))
    grads = []
    for m in (model, packed):
        xs = Tensor(x.copy(), requires_grad=True)
        m(xs).sum().backward()
        grads.append(xs.grad)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in packed.parameters())             # frozen: no parameter gradients
    assert algorithms(packed)["4.0"] == ["winograd4"]


def test_a_replaced_weight_array_runs_the_normal_path_with_its_new_values(rng):
    model = net(rng).eval()
    packed = prepack_for_inference(copy.deepcopy(model))
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    run(packed, x)
    assert algorithms(packed)["5"] == ["winograd4"]
    new = rng.standard_normal((64, 64, 3, 3)).astype(np.float32) / 24
    packed[5].weight.data = new                                          # writeable, another array
    model[5].weight.data = new.copy()
    np.testing.assert_allclose(run(packed, x), run(model, x), rtol=1e-5, atol=1e-6)
    new[...] = 0                                                         # the layer reads it as it is now
    model[5].weight.data[...] = 0
    np.testing.assert_allclose(run(packed, x), run(model, x), rtol=1e-5, atol=1e-6)
    prepack_for_inference(packed)                                        # frozen and prepacked again
    assert not packed[5].weight.data.flags.writeable and algorithms(packed)["5"] == []


def test_load_state_dict_is_refused_and_changes_nothing(rng):
    packed = prepack_for_inference(net(rng))
    state = net(rng).state_dict()
    before = {k: v.copy() for k, v in packed.state_dict().items()}
    with pytest.raises(StateDictError, match=r"0\.weight.*read-only: the model's weights are frozen for inference"):
        packed.load_state_dict(state)
    for key, value in packed.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_a_deep_copy_computes_the_same_outputs(rng):
    packed = prepack_for_inference(net(rng))
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    expected = run(packed, x)
    twin = copy.deepcopy(packed)                                         # writeable copies: the normal path
    np.testing.assert_allclose(run(twin, x), expected, rtol=1e-5, atol=1e-6)
    assert algorithms(twin)["5"] == ["winograd4"]                      # the copied pack, not used for new arrays
    assert twin[5].prepacked.winograd_filters(twin[5].weight.data, 4) is None


def test_layers_sharing_a_parameter_share_one_pack_and_match_torch(rng):
    torch = pytest.importorskip("torch")
    first, second = nn.Conv2d(64, 64, 3, padding=1, generator=rng), nn.Conv2d(64, 64, 3, padding=1, generator=rng)
    second.weight = first.weight                                    # tied weights, separate biases
    model = nn.Sequential(first, nn.ReLU(), second)
    packed = prepack_for_inference(model)
    assert first.prepacked is second.prepacked and first.prepacked.layer == "0, 2"
    assert first.weight.data is second.weight.data and first.prepacked.holds(second.weight.data)
    x = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)      # 32 4x4 tiles each: F(4x4)
    actual = run(packed, x)
    assert first.prepacked.forms() == ["winograd4"]
    assert prepacked_bytes(packed) == 36 * 64 * 64 * 4                # held once, counted once

    theirs = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Conv2d(64, 64, 3, padding=1))
    with torch.no_grad():
        theirs[0].weight.copy_(torch.from_numpy(np.array(first.weight.data)))
        theirs[2].weight = theirs[0].weight
        theirs[0].bias.copy_(torch.from_numpy(np.array(first.bias.data)))
        theirs[2].bias.copy_(torch.from_numpy(np.array(second.bias.data)))
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
