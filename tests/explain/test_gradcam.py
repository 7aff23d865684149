"""Grad-CAM against PyTorch (autograd on the same weights); the explorer's maps against the library's."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import models, nn
from cnnkit.explain.gradcam import grad_cam, grad_cam_map
from cnnkit.explain.graph import forward_pass
from cnnkit.explore import Explorer
from cnnkit.io.targets import Target

torch = pytest.importorskip("torch")


def _pair(rng):
    ours = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, generator=rng), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, generator=rng), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 7 * 7, 5, generator=rng),
    )
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 7 * 7, 5),
    )
    with torch.no_grad():
        for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            q.copy_(torch.from_numpy(np.asarray(p.data)))
    return ours, theirs


def _torch_grad_cam(model, x, target, layer_index):
    kept = {}
    handle = model[layer_index].register_forward_hook(lambda m, i, o: kept.update(a=o))
    logits = model(torch.from_numpy(x[None]))
    handle.remove()
    a = kept["a"]
    (g,) = torch.autograd.grad(logits[0, target], a)
    alpha = g.mean(dim=(2, 3))                                              # (1, F)
    cam = torch.relu((alpha[:, :, None, None] * a).sum(dim=1))              # (1, h, w)
    big = torch.nn.functional.interpolate(cam[None], size=x.shape[1:], mode="bilinear", align_corners=False)
    return cam[0].detach().numpy(), alpha[0].numpy(), big[0, 0].detach().numpy()


@pytest.mark.parametrize("target", [0, 3])
def test_grad_cam_matches_pytorch(rng, target):
    ours, theirs = _pair(rng)
    x = rng.standard_normal((3, 15, 15)).astype(np.float32)
    cam, alpha, big = _torch_grad_cam(theirs, x, target, layer_index=3)
    result = grad_cam(ours, x, target=target)                               # default: the last image layer
    assert result.layer == "3" and result.target == target
    np.testing.assert_allclose(result.weights, alpha, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.cam, cam, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.map, big, rtol=1e-4, atol=1e-5)
    assert result.map.shape == (15, 15)


def test_grad_cam_of_a_named_layer_and_the_top_class(rng):
    ours, theirs = _pair(rng)
    x = rng.standard_normal((3, 15, 15)).astype(np.float32)
    top = int(theirs(torch.from_numpy(x[None])).argmax())
    cam, _, _ = _torch_grad_cam(theirs, x, top, layer_index=0)
    result = grad_cam(ours, x, layer="0")
    assert result.target == top and result.cam.shape == (15, 15)
    np.testing.assert_allclose(result.cam, cam, rtol=1e-5, atol=1e-6)
    assert result.probabilities.sum() == pytest.approx(1.0)


def test_grad_cam_leaves_the_model_as_it_was(rng):
    ours, _ = _pair(rng)
    ours.train()
    ours[0].weight.requires_grad = False
    grad_cam(ours, rng.standard_normal((3, 15, 15)).astype(np.float32))
    assert ours.training and all(m.training for m in ours.modules())
    assert [p.requires_grad for p in ours.parameters()] == [False, True, True, True, True, True]
    assert all(p.grad is None for p in ours.parameters())


def test_grad_cam_errors(rng):
    ours, _ = _pair(rng)
    x = np.zeros((3, 15, 15), np.float32)
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        grad_cam(ours, x, layer="conv9")
    with pytest.raises(ValueError, match="layer '5' does not output an image"):
        grad_cam(ours, x, layer="5")
    with pytest.raises(ValueError, match="target class 5 is out of range for 5 classes"):
        grad_cam(ours, x, target=5)
    with pytest.raises(ValueError, match=r"of one shape \(F, h, w\), got \(2, 3, 3\) and \(2, 3\)"):
        grad_cam_map(np.zeros((2, 3, 3)), np.zeros((2, 3)))


def test_the_explorers_grad_cam_is_the_librarys(rng):
    model = models.resnet20(generator=rng)
    picture = rng.uniform(0, 1, (3, 32, 32)).astype(np.float32)
    ex = Explorer(Target(model, "r20", (3, 32, 32), (0.5,) * 3, (0.25,) * 3, []))
    run = ex.run(picture, "noise")
    x = (picture - 0.5) / 0.25
    for target in (1, 7):
        theirs = grad_cam(model, x, target=target)                          # the last image layer
        mine = run.grad_cam(target)
        assert run.trace.units[mine["unit"]].path == theirs.layer
        np.testing.assert_allclose(mine["cam"], theirs.cam, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(mine["map"], theirs.map, rtol=1e-5, atol=1e-7)


def test_the_trace_backward_gives_grad_cam_of_any_unit(rng):
    model = models.lenet5(generator=rng)
    model.eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    tr = forward_pass(model, x)
    u = tr.units[3]                                                          # features.3, a Conv2d
    u.output.retain_grad()
    seed = np.zeros(tr.output.shape, np.float32)
    seed[0, 2] = 1.0
    tr.output.backward(seed)
    cam, _, _ = grad_cam_map(u.output.data[0], u.output.grad[0])
    np.testing.assert_allclose(cam, grad_cam(model, x[0], target=2, layer="features.3").cam, rtol=1e-5, atol=1e-7)
