"""Module.register_full_backward_hook against PyTorch: grad_input and grad_output of a call (several
inputs, non-tensor arguments, several outputs, unused ones), replacements, chained and removed
hooks, a module whose inputs need no grad, and the refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import Tensor, nn

torch = pytest.importorskip("torch")


class Mix(nn.Module):
    """Two tensor inputs, a number, two outputs: (a * b * scale, a.sum(1))."""

    def forward(self, a, b, scale):
        return a * b * scale, a.sum(1)


class TorchMix(torch.nn.Module):
    def forward(self, a, b, scale):
        return a * b * scale, a.sum(1)


def _np(values):
    return tuple(None if v is None else np.asarray(v.detach().numpy() if hasattr(v, "detach") else v)
                 for v in values)


def _same(ours, theirs):
    assert len(ours) == len(theirs)
    for mine, torchs in zip(_np(ours), _np(theirs), strict=True):
        assert (mine is None) == (torchs is None)
        if mine is not None:
            np.testing.assert_allclose(mine, torchs, rtol=1e-12)


def _linear_pair():
    """A float64 nn.Linear(4, 3) and a torch.nn.Linear with its weights."""
    ours, theirs = nn.Linear(4, 3, dtype=np.float64), torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    return ours, theirs


@pytest.mark.parametrize("b_requires_grad", [True, False])
@pytest.mark.parametrize("use_second_output", [True, False])
def test_grad_input_and_grad_output_equal_torchs_and_a_replacement_flows_on(b_requires_grad, use_second_output, rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    seen = {}

    def hook(name, double):
        def record(module, grad_input, grad_output):
            seen[name] = (grad_input, grad_output)
            return tuple(None if g is None else g * 2 for g in grad_input) if double else None
        return record

    results = {}
    for lib, make, wrap in (("ours", Mix, lambda v, r: Tensor(v.copy(), requires_grad=r)),
                            ("torch", TorchMix, lambda v, r: torch.tensor(v, requires_grad=r))):
        module = make()
        module.register_full_backward_hook(hook(f"{lib}-1", double=True))
        module.register_full_backward_hook(hook(f"{lib}-2", double=False))  # sees the first one's result
        ta, tb = wrap(a, True), wrap(b, b_requires_grad)
        y1, y2 = module(ta, tb, 0.5)
        loss = (y1 * y1).sum() + ((y2 * 3).sum() if use_second_output else 0)
        loss.backward()
        results[lib] = (ta.grad, tb.grad)
    for k in ("1", "2"):
        _same(seen[f"ours-{k}"][0], seen[f"torch-{k}"][0])
        _same(seen[f"ours-{k}"][1], seen[f"torch-{k}"][1])
    _same(results["ours"], results["torch"])                    # the doubled gradients reached the leaves


def test_hooks_on_a_network_match_torch_and_are_removable(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    ours = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 36, 5))
    with torch.no_grad():
        for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            q.copy_(torch.from_numpy(np.asarray(p.data)))
    calls = {"ours": [], "torch": []}
    handles = [m.register_full_backward_hook(lambda m, gi, go, c=calls["ours"]: c.append((gi, go)))
               for m in (ours[0], ours[3])]
    for m in (theirs[0], theirs[3]):
        m.register_full_backward_hook(lambda m, gi, go, c=calls["torch"]: c.append((gi, go)))
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    F.cross_entropy(ours(xo), np.array([1, 3])).backward()
    torch.nn.functional.cross_entropy(theirs(xt), torch.tensor([1, 3])).backward()
    assert len(calls["ours"]) == len(calls["torch"]) == 2               # the Linear's first, then the conv's
    for (gi, go), (tgi, tgo) in zip(calls["ours"], calls["torch"], strict=True):
        for mine, torchs in zip(gi + go, tgi + tgo, strict=True):
            np.testing.assert_allclose(mine, torchs.numpy(), rtol=1e-4, atol=1e-6)
    for handle in handles:
        handle.remove()
    F.cross_entropy(ours(Tensor(x, requires_grad=True)), np.array([1, 3])).backward()
    assert len(calls["ours"]) == 2


def test_without_inputs_requiring_grad_the_hook_runs_on_the_outputs_gradients_as_torch(rng):
    x = rng.standard_normal((2, 4))
    ours, theirs = _linear_pair()
    seen = {}
    ours.register_full_backward_hook(lambda m, gi, go: seen.update(ours=(gi, go)))
    theirs.register_full_backward_hook(lambda m, gi, go: seen.update(torch=(gi, go)))
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        (theirs(torch.from_numpy(x)) ** 2).sum().backward()
    with pytest.warns(UserWarning, match=r"backward hook of Linear runs once the gradients of its outputs are known: "
                                         r"no input of this call requires grad"):
        (ours(Tensor(x)) ** 2).sum().backward()
    assert seen["ours"][0] == seen["torch"][0] == (None,)
    _same(seen["ours"][1], seen["torch"][1])
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("returned, inputs_need_grad, error, match", [
    ((np.ones((2, 4)), np.ones(1)), True, RuntimeError,
     r"backward hook of Linear returned 2 grad_input, expected 1 \(one per positional argument\)"),
    ((np.ones((4, 2)),), True, cnnkit.errors.ShapeError,
     r"backward hook of Linear returned grad_input\[0\] of shape \(4, 2\), expected \(2, 4\)"),
    ((np.ones((2, 4)),), False, RuntimeError,
     r"backward hook of Linear: no input of this call requires grad, so the hook must return None"),
], ids=["length", "shape", "no-input-grad"])
def test_bad_replacements_are_refused_as_torch_refuses_them(returned, inputs_need_grad, error, match):
    theirs = torch.nn.Linear(4, 3)
    theirs.register_full_backward_hook(lambda m, gi, go: tuple(torch.from_numpy(r).float() for r in returned))
    with warnings.catch_warnings(), pytest.raises(RuntimeError):
        warnings.simplefilter("ignore")
        theirs(torch.ones(2, 4, requires_grad=inputs_need_grad)).sum().backward()
    ours = nn.Linear(4, 3)
    ours.register_full_backward_hook(lambda m, gi, go: returned)
    with warnings.catch_warnings(), pytest.raises(error, match=match):
        warnings.simplefilter("ignore")
        ours(Tensor(np.ones((2, 4), np.float32), requires_grad=inputs_need_grad)).sum().backward()


def test_no_grad_calls_skip_the_hooks():
    model, calls = nn.Linear(2, 2), []
    model.register_full_backward_hook(lambda *a: calls.append(a))
    with cnnkit.no_grad():
        y = model(Tensor(np.ones((1, 2), np.float32), requires_grad=True))
    assert not y.requires_grad and calls == []


# ------------------------------------------------------------------ full backward pre-hooks
@pytest.mark.parametrize("b_requires_grad", [True, False])
def test_pre_hooks_see_grad_output_and_their_replacement_flows_into_the_module_as_torchs(b_requires_grad, rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    seen: dict[str, list] = {}
    results = {}
    for lib, make, wrap in (("ours", Mix, lambda v, r: Tensor(v.copy(), requires_grad=r)),
                            ("torch", TorchMix, lambda v, r: torch.tensor(v, requires_grad=r))):
        log = seen.setdefault(lib, [])
        module = make()
        # the first pre-hook scales the first output's gradient and drops the second's; the
        # second pre-hook and the full hook see that replacement
        module.register_full_backward_pre_hook(lambda m, go, log=log: log.append(("pre1", go)) or (go[0] * 3, None))
        module.register_full_backward_pre_hook(lambda m, go, log=log: log.append(("pre2", go)))
        module.register_full_backward_hook(lambda m, gi, go, log=log: log.append(("full", gi, go)))
        ta, tb = wrap(a, True), wrap(b, b_requires_grad)
        y1, y2 = module(ta, tb, 0.5)
        ((y1 * y1).sum() + (y2 * 3).sum()).backward()
        results[lib] = (ta.grad, tb.grad)
    assert [entry[0] for entry in seen["ours"]] == [entry[0] for entry in seen["torch"]] == ["pre1", "pre2", "full"]
    for mine, torchs in zip(seen["ours"], seen["torch"], strict=True):
        for ours_values, torch_values in zip(mine[1:], torchs[1:], strict=True):
            _same(ours_values, torch_values)
    _same(results["ours"], results["torch"])


def test_a_pre_hook_alone_changes_the_parameter_gradients_as_torchs(rng):
    x = rng.standard_normal((2, 4))
    ours, theirs = _linear_pair()
    ours.register_full_backward_pre_hook(lambda m, go: (go[0] * 10,))
    theirs.register_full_backward_pre_hook(lambda m, go: (go[0] * 10,))
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (ours(xo) ** 2).sum().backward()
    (theirs(xt) ** 2).sum().backward()
    for mine, torchs in ((xo.grad, xt.grad), (ours.weight.grad, theirs.weight.grad), (ours.bias.grad, theirs.bias.grad)):
        np.testing.assert_allclose(mine, torchs.numpy(), rtol=1e-12)
    # no input requiring grad: the pre-hook still runs, with PyTorch's warning
    ours.zero_grad()
    theirs.zero_grad()
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        (theirs(torch.from_numpy(x)) ** 2).sum().backward()
    with pytest.warns(UserWarning, match="no input of this call requires grad"):
        (ours(Tensor(x)) ** 2).sum().backward()
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)


def test_a_removed_pre_hook_is_not_called():
    model, calls = nn.Linear(2, 2), []
    handle = model.register_full_backward_pre_hook(lambda m, go: calls.append(go))
    model(Tensor(np.ones((1, 2), np.float32), requires_grad=True)).sum().backward()
    handle.remove()
    model(Tensor(np.ones((1, 2), np.float32), requires_grad=True)).sum().backward()
    assert len(calls) == 1


@pytest.mark.parametrize("returned, error, match", [
    ((np.ones((2, 3)), np.ones((2, 3))), RuntimeError,
     r"backward pre-hook of Linear returned 2 grad_output, expected 1 \(one per output\)"),
    ((np.ones(5),), cnnkit.errors.ShapeError,
     r"backward pre-hook of Linear returned grad_output\[0\] of shape \(5,\), expected \(2, 3\)"),
], ids=["length", "shape"])
def test_bad_pre_hook_replacements_are_refused_as_torch_refuses_them(returned, error, match):
    theirs = torch.nn.Linear(4, 3)
    theirs.register_full_backward_pre_hook(lambda m, go: tuple(torch.from_numpy(r).float() for r in returned))
    with pytest.raises(RuntimeError):
        theirs(torch.ones(2, 4, requires_grad=True)).sum().backward()
    ours = nn.Linear(4, 3)
    ours.register_full_backward_pre_hook(lambda m, go: returned)
    with pytest.raises(error, match=match):
        ours(Tensor(np.ones((2, 4), np.float32), requires_grad=True)).sum().backward()


# ------------------------------------------------------------------ hooks and graph traces
def _hooked_network(rng):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, generator=rng), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, generator=rng), nn.Flatten(), nn.Linear(4 * 6 * 6, 3, generator=rng))
    model[1].running_mean[...] = rng.normal(0, 0.5, 8)
    model[1].running_var[...] = rng.uniform(0.5, 2.0, 8)
    calls = []
    for k in (0, 3):
        model[k].register_full_backward_hook(lambda m, gi, go: calls.append("full"))
        model[k].register_full_backward_pre_hook(lambda m, go: calls.append("pre"))
    return model.eval(), calls


def test_graph_traces_do_not_see_the_hooks_and_the_hooks_still_run_after(rng):
    # the graph held PackOp/UnpackOp pairs around each hooked call (so export refused "Pack",
    # and fold_batchnorm silently left the BatchNorm behind its hooked convolution)
    from cnnkit.explain import model_graph
    from cnnkit.surgery.fold import fold_batchnorm

    model, calls = _hooked_network(rng)
    ops = [op.type for op in model_graph(model, (3, 8, 8)).ops]
    assert ops == ["Conv2dOp", "BatchNormOp", "ReLUOp", "Conv2dOp", "ReshapeOp", "LinearOp"]
    folded = fold_batchnorm(model, (3, 8, 8))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with cnnkit.no_grad():
        np.testing.assert_allclose(folded(Tensor(x)).numpy(), model(Tensor(x)).numpy(), rtol=1e-4, atol=1e-5)
    model(Tensor(x, requires_grad=True)).sum().backward()
    assert calls == ["pre", "full", "pre", "full"]


def test_a_model_with_backward_hooks_exports_as_torch_onnx_export_ignores_them(tmp_path, rng):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cnnkit.onnx import export

    model, calls = _hooked_network(rng)
    path = export(model, tmp_path / "m.onnx", (3, 8, 8))
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == [
        "Conv", "BatchNormalization", "Relu", "Conv", "Flatten", "Gemm"]
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with cnnkit.no_grad():
        expected = model(Tensor(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)
    assert calls == []
