"""Module machinery: registration, traversal, modes, state dicts, hooks, containers, repr."""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest

import cnnkit
from cnnkit import Tensor, nn
from cnnkit.nn.module import HOOK_REGISTRIES, has_hooks

torch = pytest.importorskip("torch")
tnn = torch.nn


class SmallNet(nn.Module):
    """A CNN with a nested container, a BatchNorm (buffers) and a bias-free layer."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Linear(4 * 2 * 2, 3, bias=False)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        return self.head(self.dropout(cnnkit.functional.flatten(self.features(x), 1)))


class TorchSmallNet(tnn.Module):
    def __init__(self):
        super().__init__()
        self.features = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.MaxPool2d(2))
        self.head = tnn.Linear(4 * 2 * 2, 3, bias=False)
        self.dropout = tnn.Dropout(0.5)


# ------------------------------------------------------------------ registration and traversal
def test_parameters_buffers_and_modules_register_in_order():
    net = SmallNet()
    assert [n for n, _ in net.named_parameters()] == [
        "features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias", "head.weight",
    ]
    assert [n for n, _ in net.named_buffers()] == [
        "features.1.running_mean", "features.1.running_var", "features.1.num_batches_tracked",
    ]
    assert [n for n, _ in net.named_children()] == ["features", "head", "dropout"]
    assert [n for n, _ in net.named_modules()] == [
        "", "features", "features.0", "features.1", "features.2", "features.3", "head", "dropout",
    ]
    assert len(list(net.modules())) == 8 and list(net.children())[1] is net.head
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert net.head.bias is None and "bias" in net.head._parameters


def test_state_dict_keys_and_shapes_equal_torch():
    ours, theirs = SmallNet(), TorchSmallNet()
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert state[key].shape == tuple(value.shape), key
        assert isinstance(state[key], np.ndarray)
    assert state["features.1.num_batches_tracked"].dtype == np.int64


def test_shared_module_is_one_parameter_set_but_listed_under_each_name():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(model.parameters())) == 2
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # as torch


def test_reassigning_and_deleting_attributes_updates_the_registries():
    net = SmallNet()
    net.head = nn.Linear(16, 5)
    assert [n for n, _ in net.named_children()] == ["features", "head", "dropout"]  # position kept
    net.scale = nn.Parameter(np.ones(1, dtype=np.float32))
    assert "scale" in dict(net.named_parameters())
    del net.scale
    assert "scale" not in dict(net.named_parameters())
    net.register_buffer("step", np.zeros(()), persistent=False)
    assert "step" in dict(net.named_buffers()) and "step" not in net.state_dict()
    net.plain = 3  # not a Parameter, Module or buffer: an ordinary attribute
    assert net.plain == 3 and "plain" not in net.state_dict()


def test_wrong_assignments_raise():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign ndarray as parameter 'weight'"):
        lin.weight = np.zeros((2, 2))
    with pytest.raises(TypeError, match="buffer 'b' must not require grad"):
        lin.register_buffer("b", Tensor(np.zeros(2), requires_grad=True))

    class Forgetful(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\)"):
        Forgetful()
    with pytest.raises(AttributeError, match="'Linear' object has no attribute 'wieght'"):
        lin.wieght  # noqa: B018


# ------------------------------------------------------------------ modes and utilities
def test_train_and_eval_set_every_flag_and_return_self():
    net = SmallNet()
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.features.train()
    assert net.features[1].training and not net.training and not net.dropout.training
    assert all(m.training for m in net.train().modules())


def test_zero_grad_sets_grads_to_none(rng):
    net = SmallNet()
    net(Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_zero_grad_without_set_to_none_zeroes_the_grads_like_torch(rng):
    ours, theirs = nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((4, 3))
    for _ in range(2):  # the second backward accumulates into the zeroed arrays
        ours(Tensor(x)).sum().backward()
        theirs(torch.from_numpy(x)).sum().backward()
        ours.zero_grad(set_to_none=False)
        theirs.zero_grad(set_to_none=False)
        for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            assert p.grad is not None and p.grad.shape == p.shape, name
            np.testing.assert_array_equal(p.grad, q.grad.numpy())
    ours(Tensor(x)).sum().backward()
    theirs(torch.from_numpy(x)).sum().backward()
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)
    ours.zero_grad(False)
    assert all(not p.grad.any() for p in ours.parameters())


def test_apply_visits_children_before_parents_and_can_reinitialize():
    net = SmallNet()
    visited = []
    assert net.apply(lambda m: visited.append(type(m).__name__)) is net
    assert visited == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Sequential", "Linear", "Dropout", "SmallNet"]
    net.apply(lambda m: cnnkit.init.zeros_(m.weight) if isinstance(m, nn.Linear) else None)
    assert not net.head.weight.data.any()


def test_to_double_keeps_parameter_identity():
    net = SmallNet()
    weight = net.head.weight
    net.double()
    assert net.head.weight is weight and weight.dtype == np.float64
    assert net.features[1].running_mean.dtype == np.float64
    assert net.features[1].num_batches_tracked.dtype == np.int64


def test_deepcopy_copies_parameters(rng):
    net = SmallNet().eval()
    clone = copy.deepcopy(net)
    assert clone.head.weight is not net.head.weight
    x = Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    np.testing.assert_array_equal(clone(x).data, net(x).data)


# ------------------------------------------------------------------ state dict round trips
def test_state_dict_round_trip_reproduces_outputs(rng):
    cnnkit.manual_seed(0)
    source = SmallNet()
    source(Tensor(rng.standard_normal((4, 3, 4, 4)).astype(np.float32)))  # move the running stats
    cnnkit.manual_seed(1)
    target = SmallNet()
    weight = target.head.weight
    assert target.load_state_dict(source.state_dict()) == ([], [])
    assert target.head.weight is weight  # loaded in place: optimizers keep their references
    source.eval(), target.eval()
    x = Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    np.testing.assert_array_equal(target(x).data, source(x).data)
    assert int(target.features[1].num_batches_tracked) == 1


def test_state_dict_holds_copies_unless_keep_vars():
    net = nn.Linear(2, 2)
    state = net.state_dict()
    net.weight.data[...] = 7
    assert not (state["weight"] == 7).any()
    assert net.state_dict(keep_vars=True)["weight"] is net.weight


@pytest.mark.parametrize("prefix", ["", "model.", "model", "a.b."])
def test_state_dict_destination_and_prefix_give_torchs_keys(prefix):
    ours, theirs = SmallNet(), TorchSmallNet()
    assert list(ours.state_dict(prefix=prefix)) == list(theirs.state_dict(prefix=prefix))
    mine, torchs = OrderedDict(first=0), OrderedDict(first=0)
    assert ours.state_dict(destination=mine, prefix=prefix) is mine
    theirs.state_dict(destination=torchs, prefix=prefix)
    assert list(mine) == list(torchs) and mine["first"] == 0
    kept = ours.state_dict(destination={}, prefix=prefix, keep_vars=True)
    assert kept[prefix + "head.weight"] is ours.head.weight


def test_state_dict_positional_arguments_warn_as_torch():
    ours, theirs = SmallNet(), TorchSmallNet()
    with pytest.warns(FutureWarning, match="Positional args are being deprecated"):
        expected = theirs.state_dict(None, "x.", True)
    with pytest.warns(FutureWarning, match=r"positional arguments are deprecated, as in PyTorch; use "
                                           r"state_dict\(destination=\.\.\., prefix=\.\.\., keep_vars=\.\.\.\)"):
        state = ours.state_dict(None, "x.", True)
    assert list(state) == list(expected) and state["x.head.weight"] is ours.head.weight
    with pytest.raises(TypeError, match="state_dict expects prefix to be a str, got int"):
        ours.state_dict(prefix=3)


def test_load_state_dict_assign_puts_the_states_arrays_in_as_torch(rng):
    ours, theirs = SmallNet().eval(), TorchSmallNet().eval()
    source = TorchSmallNet().double().eval()
    with torch.no_grad():
        source.features[1].running_mean.uniform_(-1, 1)
    ours.features[0].bias.requires_grad = False
    theirs.features[0].bias.requires_grad_(False)
    old = ours.head.weight
    for model in (ours, theirs):
        assert repr(model.load_state_dict(source.state_dict(), assign=True)) == "<All keys matched successfully>"
    # the state's dtype, the module's requires_grad, new Parameter objects, as PyTorch
    for (name, mine), (_, torchs) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert mine.dtype == np.float64 and torchs.dtype == torch.float64, name
        assert mine.requires_grad == torchs.requires_grad, name
    assert ours.head.weight is not old and not ours.features[0].bias.requires_grad
    # no copy: the arrays are the state's (a later change to the source shows in both models)
    with torch.no_grad():
        source.head.weight.fill_(0.25)
        source.features[1].running_mean.fill_(0.5)
    x = rng.standard_normal((2, 3, 4, 4))
    expected = theirs.head(theirs.features(torch.from_numpy(x)).flatten(1)).detach().numpy()
    np.testing.assert_allclose(ours(Tensor(x)).data, expected, rtol=1e-12)
    np.testing.assert_array_equal(ours.head.weight.data, 0.25)
    np.testing.assert_array_equal(ours.features[1].running_mean, 0.5)
    # a Parameter in the state is used itself, with the module's requires_grad
    given = nn.Parameter(np.ones((3, 16)), requires_grad=False)
    ours.load_state_dict({"head.weight": given}, strict=False, assign=True)
    assert ours.head.weight is given and given.requires_grad


def test_load_state_dict_assign_checks_shapes_first_and_frozen_models_take_it():
    from cnnkit.nn.utils import prepack_for_inference

    model = nn.Linear(2, 3)
    with pytest.raises(cnnkit.errors.StateDictError, match=r"weight.*\(2, 2\).*\(3, 2\)"):
        model.load_state_dict({"weight": np.zeros((2, 2), np.float32), "bias": np.zeros(3, np.float32)}, assign=True)
    frozen = prepack_for_inference(nn.Linear(2, 3))
    frozen.load_state_dict(model.state_dict(), assign=True)          # nothing is written: allowed, as PyTorch
    np.testing.assert_array_equal(frozen.weight.data, model.weight.data)


def test_torch_model_outputs_after_loading_its_state_dict(rng):
    theirs = TorchSmallNet().eval()
    with torch.no_grad():
        theirs.features[1].running_mean.uniform_(-1, 1)
        theirs.features[1].running_var.uniform_(0.5, 2)
    ours = SmallNet().eval()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    expected = theirs.head(torch.flatten(theirs.features(torch.tensor(x)), 1)).detach().numpy()
    np.testing.assert_allclose(ours(Tensor(x)).data, expected, rtol=1e-5, atol=1e-6)


def test_strict_load_lists_missing_and_unexpected_keys_and_changes_nothing():
    net = SmallNet()
    before = net.state_dict()
    state = SmallNet().state_dict()
    del state["head.weight"]
    state["head.bias"] = np.zeros(3)
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    assert "Error(s) in loading state_dict for SmallNet" in message
    assert "missing key(s): head.weight" in message and "unexpected key(s): head.bias" in message
    assert info.value.missing_keys == ["head.weight"] and info.value.unexpected_keys == ["head.bias"]
    assert isinstance(info.value, RuntimeError)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_non_strict_load_returns_the_same_keys_as_torch():
    ours, theirs = SmallNet(), TorchSmallNet()
    state = {k: v for k, v in theirs.state_dict().items() if not k.startswith("features.0")}
    state["extra.weight"] = torch.zeros(1)
    expected = theirs.load_state_dict(state, strict=False)
    result = ours.load_state_dict({k: v.numpy() for k, v in state.items()}, strict=False)
    assert result.missing_keys == expected.missing_keys == ["features.0.weight", "features.0.bias"]
    assert result.unexpected_keys == expected.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(ours.head.weight.data, theirs.head.weight.detach().numpy())


@pytest.mark.parametrize("strict", [True, False])
def test_shape_mismatch_names_the_key_and_both_shapes(strict):
    state = SmallNet(channels=1).state_dict()
    with pytest.raises(
        nn.StateDictError,
        match=r"size mismatch for features\.0\.weight: the state dict has shape \(4, 1, 3, 3\), "
        r"the model expects \(4, 3, 3, 3\)",
    ):
        SmallNet(channels=3).load_state_dict(state, strict=strict)


def test_old_checkpoint_without_num_batches_tracked_loads():
    state = SmallNet().state_dict()
    del state["features.1.num_batches_tracked"]
    assert SmallNet().load_state_dict(state) == ([], [])


# ------------------------------------------------------------------ hooks
def test_forward_hook_captures_feature_maps_and_is_removable(rng):
    net = SmallNet()
    captured = []
    handle = net.features[0].register_forward_hook(lambda m, inputs, out: captured.append((m, inputs, out)))
    x = Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    net(x)
    module, inputs, out = captured[0]
    assert module is net.features[0] and inputs[0] is x and out.shape == (2, 4, 4, 4)
    handle.remove()
    net(x)
    assert len(captured) == 1
    with net.head.register_forward_hook(lambda m, i, o: captured.append(o)):
        net(x)
    net(x)
    assert len(captured) == 2


def test_hooks_can_replace_the_input_and_the_output():
    lin = nn.Linear(2, 2)
    order = []
    lin.register_forward_pre_hook(lambda m, inputs: order.append("pre") or inputs[0] * 0)
    lin.register_forward_hook(lambda m, inputs, out: order.append("post") or out + 1)
    y = lin(Tensor(np.ones((1, 2), dtype=np.float32)))
    np.testing.assert_allclose(y.data, lin.bias.data[None] + 1, rtol=1e-6)
    assert order == ["pre", "post"]



@pytest.mark.parametrize("registry", HOOK_REGISTRIES)
def test_call_takes_the_hooked_path_for_every_registry_has_hooks_reads(registry):
    """``Module.__call__`` tests the hook registries inline (for speed), ``has_hooks`` (the
    fusion gates of ``nn.norm``) through ``HOOK_REGISTRIES``: a hook in any of them makes both
    see it, so the two lists cannot drift apart."""
    module, x = nn.Identity(), Tensor(np.ones(2, dtype=np.float32))
    object.__setattr__(module, "_forward_hooked", lambda args, kwargs: "hooked path")
    assert set(HOOK_REGISTRIES) == {name for name in vars(module) if name.endswith("_hooks")}
    assert not has_hooks(module) and module(x) is x
    getattr(module, registry)[0] = lambda *args: None
    with cnnkit.config.skip_backward_hooks():
        assert has_hooks(module) and module(x) == "hooked path"

# ------------------------------------------------------------------ containers
def test_sequential_indexing_slicing_and_append(rng):
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and list(seq)[1] is seq[1]
    head = seq[1:]
    assert isinstance(head, nn.Sequential) and list(head._modules) == ["1", "2"]
    x = Tensor(rng.standard_normal((5, 3)).astype(np.float32))
    np.testing.assert_array_equal(seq(x).data, head(seq[0](x)).data)
    seq.append(nn.Softmax(dim=1))
    assert list(seq._modules) == ["0", "1", "2", "3"]
    seq[1] = nn.Tanh()
    assert isinstance(seq[1], nn.Tanh) and list(seq._modules) == ["0", "1", "2", "3"]
    with pytest.raises(IndexError, match="Sequential index 4 is out of range for length 4"):
        seq[4]  # noqa: B018
    named = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), act=nn.ReLU()))
    assert list(named.state_dict()) == ["conv.weight", "conv.bias"]


def test_module_list_and_dict_register_their_entries():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.append(nn.Linear(2, 1))
    assert len(layers) == 4 and len(list(layers.parameters())) == 8
    assert isinstance(layers[1:], nn.ModuleList) and len(layers[1:]) == 3
    del layers[0]
    assert list(layers._modules) == ["0", "1", "2"]
    heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 3)})
    heads["c"] = nn.ReLU()
    assert list(heads) == ["a", "b", "c"] and "b" in heads
    assert list(heads.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    with pytest.raises(NotImplementedError, match="ModuleList has no forward"):
        layers(Tensor(np.zeros(2)))


# ------------------------------------------------------------------ printing
def test_repr_equals_torch():
    def build(lib):
        return lib.Sequential(
            lib.Conv2d(3, 8, 3, padding="same"), lib.BatchNorm2d(8, momentum=None),
            lib.ReLU(inplace=True), lib.MaxPool2d(2), lib.Conv2d(8, 8, 3, 2, 1, groups=2, bias=False),
            lib.ConvTranspose2d(8, 4, 3, 2, 1, 1), lib.AdaptiveAvgPool2d((1, 1)), lib.AvgPool2d(2),
            lib.LPPool2d(2, 3), lib.Flatten(), lib.Linear(8, 2), lib.Dropout(0.2), lib.LeakyReLU(0.1),
            lib.ELU(), lib.Sigmoid(), lib.Tanh(), lib.Softmax(dim=1), lib.LogSoftmax(dim=1),
            lib.Identity(), lib.BatchNorm1d(3, affine=False), lib.CrossEntropyLoss(),
            lib.ModuleList([lib.ReLU()]), lib.ModuleDict({"act": lib.Tanh()}),
        )

    assert repr(build(nn)) == repr(build(tnn))
    assert repr(nn.Parameter(np.zeros(2, dtype=np.float32))).startswith("Parameter containing:\ntensor(")


def _twins():
    ours = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4), nn.Tanh())
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 4), torch.nn.Tanh())
    return ours, theirs


@pytest.mark.parametrize("edit", [
    lambda s, m: s.__delitem__(0), lambda s, m: s.__delitem__(slice(1, 3)), lambda s, m: s.__delitem__(-2),
    lambda s, m: s.pop(1), lambda s, m: s.insert(0, m), lambda s, m: s.insert(-1, m), lambda s, m: s.insert(4, m),
    lambda s, m: s.insert(-4, m),
], ids=["del-first", "del-slice", "del-negative", "pop", "insert-first", "insert-negative", "insert-end",
        "insert-minus-len"])
def test_sequential_deletion_and_insertion_renumber_like_torch(edit):
    """Deleting or inserting renumbers the modules "0", "1", ..., so state_dict keys follow the positions."""
    ours, theirs = _twins()
    edit(ours, nn.Linear(4, 4))
    edit(theirs, torch.nn.Linear(4, 4))
    assert [name for name, _ in ours.named_children()] == [name for name, _ in theirs.named_children()]
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_sequential_pop_and_insert_errors():
    ours, _ = _twins()
    assert isinstance(ours.pop(-1), nn.Tanh) and len(ours) == 3
    with pytest.raises(IndexError, match="Sequential.insert index 5 is out of range for length 3"):
        ours.insert(5, nn.ReLU())
    with pytest.raises(TypeError, match="Sequential.insert expects a Module, got int"):
        ours.insert(0, 3)


def test_get_parameter_get_buffer_and_shared_names_like_torch():
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert ours.get_parameter("0.weight") is ours[0].weight
    assert ours.get_buffer("1.running_var") is ours[1].running_var
    assert ours.get_parameter("0.weight").shape == tuple(theirs.get_parameter("0.weight").shape)
    with pytest.raises(AttributeError, match="Conv2d has no parameter 'weights' \\(path '0.weights'\\)"):
        ours.get_parameter("0.weights")
    shared, tshared = nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ours, theirs = nn.Sequential(shared, nn.ReLU(), shared), torch.nn.Sequential(tshared, torch.nn.ReLU(), tshared)
    for dup in (True, False):
        assert [n for n, _ in ours.named_parameters(remove_duplicate=dup)] == \
            [n for n, _ in theirs.named_parameters(remove_duplicate=dup)]


@pytest.mark.parametrize("call", [
    lambda m, dt: m.to(dt), lambda m, dt: m.to("cpu", dt), lambda m, dt: m.to(device="cpu", dtype=dt),
    lambda m, dt: m.to(dtype=dt), lambda m, dt: m.to("cpu"), lambda m, dt: m.to(device="cpu"),
], ids=["dtype", "device-dtype", "keywords", "dtype-keyword", "device", "device-keyword"])
def test_module_to_takes_torchs_forms(call):
    ours, theirs = nn.Linear(2, 3), torch.nn.Linear(2, 3)
    assert call(ours, np.float64) is ours and call(theirs, torch.float64) is theirs
    assert str(ours.weight.dtype) == str(theirs.weight.dtype).replace("torch.", "")
    with pytest.raises(ValueError, match="Linear.to supports device 'cpu' only, got 'cuda:0'"):
        ours.to("cuda:0", np.float64)


def test_module_to_refuses_what_cnnkit_cannot_compute_in_and_half_says_so():
    ours, theirs = nn.Linear(2, 3), torch.nn.Linear(2, 3)
    with pytest.raises(TypeError, match="nn.Module.to only accepts floating point"):
        theirs.to(torch.int64)
    with pytest.raises(TypeError, match="Linear.to accepts floating point dtypes only \\(as PyTorch\\), got int64"):
        ours.to(np.int64)
    assert theirs.half().weight.dtype == torch.float16          # PyTorch has float16 kernels; cnnkit does not
    message = (r"Linear.to\(float16\): cnnkit's layers compute in float32 and float64 only \(no float16 kernels "
               r"or mixed precision\); use float\(\) or double\(\)")
    for call in (lambda m: m.half(), lambda m: m.to(np.float16), lambda m: m.to(dtype="float16")):
        with pytest.raises(NotImplementedError, match=message):
            call(ours)
    assert ours.weight.dtype == np.float32                      # refused before anything changed


def _layout(model) -> list[tuple[str, str, int]]:
    """(path, layer type, number of the layer object) per entry: names, order and which layers are shared."""
    ids: dict[int, int] = {}
    return [(name, type(m).__name__, ids.setdefault(id(m), len(ids)))
            for name, m in model.named_modules(remove_duplicate=False) if name]


@pytest.mark.parametrize("edit", [
    lambda nn_, a, b: a + b,
    lambda nn_, a, b: a.__iadd__(b),
    lambda nn_, a, b: a * 3,
    lambda nn_, a, b: 2 * b,
    lambda nn_, a, b: b.__imul__(2),  # (PyTorch's *= fails on named entries: KeyError)
    lambda nn_, a, b: a.extend(b),
    lambda nn_, a, b: (a + b).insert(-1, b[0]),
    lambda nn_, a, b: nn_.ModuleList(a) + b,
], ids=["add", "iadd", "mul", "rmul", "imul", "extend", "insert", "modulelist-add"])
def test_sequential_concatenation_and_repetition_match_torch(edit):
    def pair(nn_):
        a = nn_.Sequential(OrderedDict(conv=nn_.Conv2d(1, 2, 3), relu=nn_.ReLU()))
        b = nn_.Sequential(nn_.Flatten(), nn_.Linear(2, 2))
        return a, b

    a, b = pair(nn)
    ours = edit(nn, a, b)
    theirs = edit(tnn, *pair(tnn))
    assert type(ours).__name__ == type(theirs).__name__ and repr(ours) == repr(theirs)
    assert _layout(ours) == _layout(theirs)                                  # the same modules, shared alike
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(m is a[0] for m in ours.modules() if isinstance(m, nn.Conv2d))  # reused, not copied


@pytest.mark.parametrize("call, cn_type, match", [
    (lambda nn_, s: s + nn_.ReLU(), ValueError, "Sequential \\+ expects a Sequential, got ReLU"),
    (lambda nn_, s: s.__iadd__([nn_.ReLU()]), ValueError, "Sequential \\+= expects a Sequential, got list"),
    (lambda nn_, s: s * 1.5, TypeError, "Sequential \\* expects an int number of repeats, got float"),
    (lambda nn_, s: s * 0, ValueError, "Sequential \\* expects a positive number of repeats, got 0"),
    (lambda nn_, s: s.__imul__(-1), ValueError, "Sequential \\*= expects a positive number of repeats, got -1"),
])
def test_sequential_operators_refuse_what_torch_refuses(call, cn_type, match):
    with pytest.raises(cn_type):
        call(tnn, tnn.Sequential(tnn.ReLU()))
    with pytest.raises(cn_type, match=match):
        call(nn, nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("dst_type, torch_type", [
    (np.float64, "torch.float64"), ("torch.DoubleTensor", "torch.DoubleTensor"), ("float32", "torch.FloatTensor"),
])
def test_module_type_casts_every_parameter_and_buffer_as_torchs(dst_type, torch_type):
    # was missing (AttributeError); PyTorch casts integer buffers too (num_batches_tracked)
    def build(lib):
        return lib.Sequential(lib.Conv2d(2, 3, 3), lib.BatchNorm2d(3), lib.Flatten(), lib.Linear(3, 2))

    ours, theirs = build(nn), build(torch.nn)
    theirs_type = getattr(torch, torch_type.split(".")[1])
    assert ours.type(dst_type) is ours and theirs.type(theirs_type) is theirs
    ours_dtypes = {k: np.dtype(v.dtype).name for k, v in ours.state_dict().items()}
    assert ours_dtypes == {k: str(v.dtype).removeprefix("torch.") for k, v in theirs.state_dict().items()}
    x = np.arange(36, dtype=ours_dtypes["0.weight"]).reshape(2, 2, 3, 3)
    assert ours(Tensor(x)).dtype == ours_dtypes["0.weight"]           # a training step with the float counter


def test_module_type_refuses_what_cnnkit_cannot_compute_in():
    ours = nn.Linear(2, 3)
    with pytest.raises(TypeError, match=r"Linear.type accepts floating point dtypes only \(as PyTorch\), got int64"):
        ours.type(np.int64)
    with pytest.raises(RuntimeError):                                 # PyTorch refuses too
        torch.nn.Linear(2, 3).type(torch.int64)
    with pytest.raises(NotImplementedError, match=r"Linear.type\(float16\): cnnkit's layers compute in float32"):
        ours.type("torch.HalfTensor")
    with pytest.raises(TypeError, match=r"Linear.type expects a dtype or a tensor type name such as "
                                        r"'torch.DoubleTensor', got 'torch.CudaTensor'"):
        ours.type("torch.CudaTensor")
    assert ours.weight.dtype == np.float32                            # refused before anything changed


def test_a_state_after_module_type_loads_back_into_a_fresh_model_as_torchs():
    # num_batches_tracked is a float after type(float64) (as in PyTorch); loading it into a fresh
    # model's int64 counter was refused ("dtype float64 where an integer (int64) is expected")
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    ours.train()(Tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)))
    theirs.train()(torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2))
    fresh, torch_fresh = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    fresh.load_state_dict(ours.type(np.float64).state_dict())
    torch_fresh.load_state_dict(theirs.type(torch.float64).state_dict())
    for (k, v), (tk, tv) in zip(fresh.state_dict().items(), torch_fresh.state_dict().items(), strict=True):
        assert k == tk and np.dtype(v.dtype).name == str(tv.dtype).removeprefix("torch.")
        np.testing.assert_allclose(np.asarray(v), tv.numpy(), rtol=1e-6)
