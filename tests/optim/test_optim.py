"""Optimizers against torch.optim: 20 steps on the same gradients, state_dict round trips, errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cnnkit import Tensor, optim
from cnnkit.errors import ShapeError
from cnnkit.nn import Parameter

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def torch_on_one_thread():
    """Tiny tensors: PyTorch's thread pool only adds contention on the shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# (3, 4) and (5,) are small; 300*300 = 90,000 elements is above the optimizer's slice size,
# so the sliced path runs; the Fortran-ordered (250, 300) one takes the whole-array path.
SHAPES = [(3, 4), (5,), (300, 300), (250, 300)]
STEPS = 20


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    """Compare to float32 precision, with atol relative to the array's scale.

    PyTorch fuses `p + alpha * g` into one rounding (FMA) where NumPy rounds twice, so
    values differ in the last bit, and a little more after 20 steps where they cancel.
    """
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)),
    ("SGD", dict(lr=0.02, momentum=0.5, dampening=0.1, weight_decay=0.01, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.8), eps=1e-6)),  # beta1 < 0.5: lerp's other branch
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.005, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.05, initial_accumulator_value=0.5, eps=1e-6)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1, maximize=True)),
]


def case_id(case):
    name, kwargs = case
    return name + "(" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


def make_arrays(rng, dtype=np.float32):
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    arrays[-1] = np.asfortranarray(arrays[-1])
    return arrays


def make_params(arrays):
    ours = [Tensor(a.copy(order="K"), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    return ours, theirs


def set_grads(ours, theirs, noise, skip=()):
    """Give both sides g = 0.5 * p + noise (from their own p, so divergence would grow)."""
    for i, (p, tp, n) in enumerate(zip(ours, theirs, noise, strict=True)):
        if i in skip:
            p.grad, tp.grad = None, None
            continue
        p.grad = 0.5 * p.data + n
        tp.grad = torch.from_numpy(0.5 * tp.detach().numpy() + n)


def run_both(opt, topt, ours, theirs, rng, steps, skip_every=0):
    for step in range(steps):
        noise = [rng.standard_normal(p.shape).astype(p.dtype) for p in ours]
        skip = {1} if skip_every and step % skip_every == 0 else set()
        set_grads(ours, theirs, noise, skip)
        opt.step()
        topt.step()


def assert_params_close(ours, theirs, **tol):
    for p, tp in zip(ours, theirs, strict=True):
        assert_close(p.data, tp.detach().numpy(), **tol)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch_over_20_steps(case):
    name, kwargs = case
    rng = np.random.default_rng(0)
    ours, theirs = make_params(make_arrays(rng))
    data_objects = [p.data for p in ours]
    opt = getattr(optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)

    run_both(opt, topt, ours, theirs, rng, STEPS, skip_every=3)  # parameter 1 sometimes has no grad

    assert_params_close(ours, theirs)
    for p, data in zip(ours, data_objects, strict=True):
        assert p.data is data  # updated in place
        assert p.data.dtype == np.float32
    assert opt.state[ours[0]].keys() == topt.state[theirs[0]].keys()
    for key, value in opt.state[ours[2]].items():
        expected = topt.state[theirs[2]][key]
        if key == "step":
            assert value == int(expected) == STEPS
        else:
            assert value.dtype == np.float32
            assert_close(value, expected.numpy())


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_param_groups_with_their_own_hyper_parameters(name):
    rng = np.random.default_rng(1)
    ours, theirs = make_params(make_arrays(rng))
    extra = {"SGD": {"momentum": 0.9}, "RMSprop": {"momentum": 0.5}, "Adagrad": {"lr_decay": 0.1}}.get(name, {})
    defaults = dict(lr=0.01, weight_decay=0.01)

    def groups(params):
        return [
            {"params": params[:2], "lr": 0.1, **extra},
            {"params": params[2:3]},
            {"params": params[3:], "weight_decay": 0.0, "maximize": True},
        ]

    opt = getattr(optim, name)(groups(ours), **defaults)
    topt = getattr(torch.optim, name)(groups(theirs), foreach=False, **defaults)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01, 0.01]
    run_both(opt, topt, ours, theirs, rng, STEPS)
    assert_params_close(ours, theirs)


def test_add_param_group_mid_run_matches_torch():
    rng = np.random.default_rng(2)
    ours, theirs = make_params(make_arrays(rng))
    opt = optim.Adam(ours[:2], lr=0.01)
    topt = torch.optim.Adam(theirs[:2], lr=0.01, foreach=False)
    run_both(opt, topt, ours[:2], theirs[:2], rng, 5)
    opt.add_param_group({"params": ours[2:], "lr": 0.003, "amsgrad": True})
    topt.add_param_group({"params": theirs[2:], "lr": 0.003, "amsgrad": True})
    run_both(opt, topt, ours, theirs, rng, 10)
    assert_params_close(ours, theirs)


@pytest.mark.parametrize("case", [c for c in CASES if c[1]][::2], ids=case_id)
def test_state_dict_resumes_exactly(case):
    name, kwargs = case
    rng = np.random.default_rng(3)
    arrays = make_arrays(rng)
    noise = [[rng.standard_normal(a.shape).astype(np.float32) for a in arrays] for _ in range(20)]

    def steps(opt, params, noise_list):
        for n in noise_list:
            for p, ni in zip(params, n, strict=True):
                p.grad = 0.5 * p.data + ni
            opt.step()

    params = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = getattr(optim, name)(params, **kwargs)
    steps(opt, params, noise[:10])
    saved = opt.state_dict()
    saved_params = [p.data.copy() for p in params]
    saved_copy = {i: {k: np.copy(v) for k, v in s.items()} for i, s in saved["state"].items()}
    steps(opt, params, noise[10:])

    resumed = [Tensor(a.copy(), requires_grad=True) for a in saved_params]
    opt2 = getattr(optim, name)(resumed, lr=123.0)  # hyper-parameters come from the state_dict
    opt2.load_state_dict(saved)
    steps(opt2, resumed, noise[10:])

    for p, q in zip(params, resumed, strict=True):
        np.testing.assert_array_equal(p.data, q.data)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    # The saved dict is a copy: neither run wrote into it.
    for i, state in saved["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(value, saved_copy[i][key])


def test_state_dict_layout_is_torchs():
    rng = np.random.default_rng(4)
    ours, theirs = make_params(make_arrays(rng))
    kwargs = dict(lr=0.01, amsgrad=True)
    opt = optim.Adam([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.1}], **kwargs)
    topt = torch.optim.Adam([{"params": theirs[:1]}, {"params": theirs[1:], "lr": 0.1}], **kwargs)
    run_both(opt, topt, ours, theirs, rng, 3, skip_every=1)  # parameter 1 never gets a grad
    state, tstate = opt.state_dict(), topt.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [[0], [1, 2, 3]]
    assert [g["params"] for g in state["param_groups"]] == [g["params"] for g in tstate["param_groups"]]
    assert sorted(state["state"]) == sorted(tstate["state"]) == [0, 2, 3]
    assert state["state"][0].keys() == tstate["state"][0].keys()
    assert state["state"][0]["step"] == 3
    assert state["state"][0]["exp_avg"] is not opt.state[ours[0]]["exp_avg"]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", dict(lr=0.05, momentum=0.9)),
        ("Adam", dict(lr=0.01, amsgrad=True)),
        ("RMSprop", dict(centered=True)),
        ("Adagrad", dict(lr_decay=0.05, initial_accumulator_value=0.2)),
    ],
)
def test_loads_a_torch_state_dict_and_continues_like_torch(name, kwargs):
    rng = np.random.default_rng(5)
    ours, theirs = make_params(make_arrays(rng))
    topt = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    for _ in range(5):
        set_grads(ours, theirs, [rng.standard_normal(p.shape).astype(np.float32) for p in ours])
        topt.step()
    for p, tp in zip(ours, theirs, strict=True):
        p.data[...] = tp.detach().numpy()
    tsaved = topt.state_dict()
    converted = {
        "state": {
            i: {k: v.numpy() if torch.is_tensor(v) else v for k, v in s.items()}
            for i, s in tsaved["state"].items()
        },
        "param_groups": tsaved["param_groups"],
    }
    opt = getattr(optim, name)(ours)
    opt.load_state_dict(converted)
    run_both(opt, topt, ours, theirs, rng, 10)
    assert_params_close(ours, theirs)


@pytest.mark.parametrize("name, kwargs, key", [
    ("Adam", dict(lr=0.01, weight_decay=0.01), "exp_avg"),
    ("Adagrad", dict(lr=0.05, lr_decay=0.02, weight_decay=0.01, initial_accumulator_value=0.1), "sum"),
])
def test_float64_parameters_stay_float64_and_match_torch_closely(name, kwargs, key):
    rng = np.random.default_rng(6)
    ours, theirs = make_params(make_arrays(rng, np.float64))
    opt = getattr(optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    run_both(opt, topt, ours, theirs, rng, STEPS)
    assert all(p.data.dtype == np.float64 for p in ours)
    assert all(s[key].dtype == np.float64 for s in opt.state.values())
    assert_params_close(ours, theirs, rtol=1e-12, atol=1e-13)


def test_updates_reach_views_of_the_parameter_buffer():
    flat = np.zeros(6, dtype=np.float32)
    w = Tensor(flat[:4].reshape(2, 2), requires_grad=True)
    b = Tensor(flat[4:], requires_grad=True)
    w.grad = np.ones((2, 2), np.float32)
    b.grad = np.full(2, 2.0, np.float32)
    optim.SGD([w, b], lr=0.5, momentum=0.9).step()
    np.testing.assert_array_equal(flat, [-0.5, -0.5, -0.5, -0.5, -1.0, -1.0])


def test_step_does_not_modify_the_gradient():
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    p.grad = np.array([1.0, -2.0, 3.0], np.float32)
    for opt in (
        optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True),
        optim.Adam([p], weight_decay=0.1, maximize=True),
        optim.RMSprop([p], weight_decay=0.1, centered=True, momentum=0.5),
    ):
        opt.step()
        opt.step()
        np.testing.assert_array_equal(p.grad, [1.0, -2.0, 3.0])


def test_parameters_without_grad_are_skipped():
    p, q = (
        Tensor(np.ones(3, np.float32), requires_grad=True),
        Tensor(np.ones(2, np.float32), requires_grad=True),
    )
    p.grad = np.ones(3, np.float32)
    opt = optim.Adam([p, q], lr=0.1)
    opt.step()
    np.testing.assert_array_equal(q.data, [1.0, 1.0])
    assert q not in opt.state and opt.state[p]["step"] == 1


def test_zero_grad():
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3, np.float32)
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad
    np.testing.assert_array_equal(grad, 0.0)
    opt.zero_grad()
    assert p.grad is None


def test_step_returns_the_closure_loss():
    p = Tensor(np.array([2.0], np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.data) == pytest.approx(4.0)
    np.testing.assert_allclose(p.data, [1.0])  # 2 - 0.25 * 2 * 2


def test_repr_lists_the_groups():
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    text = repr(optim.SGD([p], lr=0.1, momentum=0.9))
    assert text.startswith("SGD (\nParameter Group 0\n") and "    momentum: 0.9" in text


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda p: optim.SGD([p], lr=-0.1), ValueError, "SGD expects lr >= 0, got -0.1"),
        (
            lambda p: optim.SGD([p], lr=0.1, nesterov=True),
            ValueError,
            "SGD expects momentum > 0 and dampening == 0 with nesterov=True, got 'momentum=0.0, dampening=0.0'",
        ),
        (lambda p: optim.Adam([p], betas=(0.9, 1.0)), ValueError, "Adam expects 0 <= betas[1] < 1, got 1.0"),
        (lambda p: optim.AdamW([p], eps=-1.0), ValueError, "AdamW expects eps >= 0, got -1.0"),
        (lambda p: optim.RMSprop([p], momentum=-0.5), ValueError, "RMSprop expects momentum >= 0, got -0.5"),
        (lambda p: optim.Adagrad([p], lr_decay=-0.1), ValueError, "Adagrad expects lr_decay >= 0, got -0.1"),
        (lambda p: optim.Adagrad([p], initial_accumulator_value=-1.0), ValueError,
         "Adagrad expects initial_accumulator_value >= 0, got -1.0"),
        (lambda p: optim.Adagrad([p], eps=-1e-3), ValueError, "Adagrad expects eps >= 0, got -0.001"),
        (lambda p: optim.Adagrad([p], differentiable=True), NotImplementedError,
         "Adagrad(differentiable=True) is not supported"),
        (lambda p: optim.SGD([{"params": [p], "lr": -1}]), ValueError, "SGD expects lr >= 0, got -1"),
        (lambda p: optim.SGD([]), ValueError, "SGD got an empty parameter list"),
        (lambda p: optim.SGD(p), TypeError, "got a single Tensor of shape (3,); wrap it in a list"),
        (lambda p: optim.SGD({p}), TypeError, "SGD needs parameters in a fixed order (a list), got a set"),
        (
            lambda p: optim.Adam([p, np.ones(3)]),
            TypeError,
            "Adam can optimize only Tensors, got ndarray at position 1",
        ),
        (lambda p: optim.SGD([p, p]), ValueError, "SGD: a parameter group holds the same parameter twice"),
        (
            lambda p: optim.SGD([{"params": [p]}, {"params": [p]}]),
            ValueError,
            "SGD: some parameters appear in more than one parameter group",
        ),
        (
            lambda p: optim.SGD([p * 2.0]),
            ValueError,
            "SGD can optimize only leaf Tensors; position 0 was made by an op",
        ),
        (
            lambda p: optim.AdamW([p], differentiable=True),
            NotImplementedError,
            "AdamW(differentiable=True) is not supported",
        ),
    ],
)
def test_errors(build, error, message):
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(error, match=re.escape(message)):
        build(p)


def test_load_state_dict_errors():
    p, q = (Tensor(np.ones(3, np.float32), requires_grad=True) for _ in range(2))
    p.grad = np.ones(3, np.float32)
    opt = optim.Adam([p])
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match=r"the saved state has 1 parameter groups, this optimizer has 2"):
        optim.Adam([{"params": [p]}, {"params": [q]}]).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"saved parameter group 0 has 1 parameters, this optimizer's has 2"):
        optim.Adam([p, q]).load_state_dict(saved)
    r = Tensor(np.ones(4, np.float32), requires_grad=True)
    with pytest.raises(
        ShapeError, match=r"state 'exp_avg' of parameter 0 has shape \(3,\), the parameter has shape \(4,\)"
    ):
        optim.Adam([r]).load_state_dict(saved)


def test_state_dict_survives_a_json_round_trip():
    """Checkpoints store the state as JSON plus arrays: string keys and lists must load back."""
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    p.grad = np.array([1.0, -2.0, 3.0], np.float32)
    opt = optim.Adam([p], lr=0.1, amsgrad=True)
    opt.step()
    saved = opt.state_dict()
    as_json = json.loads(
        json.dumps(saved, default=lambda a: a.tolist())  # arrays -> lists, tuples -> lists, keys -> str
    )
    q = Tensor(p.data.copy(), requires_grad=True)
    q.grad = p.grad.copy()
    restored = optim.Adam([q], lr=0.5)
    restored.load_state_dict(as_json)
    opt.step()
    restored.step()
    assert restored.state[q]["exp_avg"].dtype == np.float32
    np.testing.assert_array_equal(q.data, p.data)


@pytest.mark.parametrize(
    "name, flags",
    [
        ("SGD", dict(foreach=False, fused=None, differentiable=False)),
        ("Adam", dict(foreach=True, fused=False, capturable=False, differentiable=False)),
        ("AdamW", dict(foreach=None, fused=None, capturable=False)),
        ("RMSprop", dict(foreach=False, capturable=False, differentiable=False)),
        ("Adagrad", dict(foreach=True, fused=None, differentiable=False)),
    ],
)
def test_pytorchs_implementation_keywords_are_accepted_and_change_nothing(name, flags):
    """foreach / fused / capturable pick among PyTorch's implementations of one update."""
    rng = np.random.default_rng(5)
    ours, theirs = make_params(make_arrays(rng, np.float64)[:2])
    opt = getattr(optim, name)(ours, lr=0.01, **flags)
    topt = getattr(torch.optim, name)(theirs, lr=0.01, **{k: v for k, v in flags.items() if k != "fused"})
    run_both(opt, topt, ours, theirs, rng, 5)
    assert_params_close(ours, theirs, rtol=1e-12, atol=1e-12)



def test_adagrad_state_exists_from_construction_like_torchs():
    """Every parameter has step 0 and sum = initial_accumulator_value before the first step
    (the constructor's, also in a group that sets its own, as PyTorch)."""
    rng = np.random.default_rng(7)
    ours, theirs = make_params(make_arrays(rng))
    groups = [{"params": ours[:2]}, {"params": ours[2:], "initial_accumulator_value": 0.3}]
    opt = optim.Adagrad(groups, initial_accumulator_value=0.1)
    topt = torch.optim.Adagrad([{"params": theirs[:2]}, {"params": theirs[2:], "initial_accumulator_value": 0.3}],
                               initial_accumulator_value=0.1)
    state, tstate = opt.state_dict(), topt.state_dict()
    assert sorted(state["state"]) == sorted(tstate["state"]) == [0, 1, 2, 3]
    for i, s in state["state"].items():
        assert s["step"] == int(tstate["state"][i]["step"]) == 0
        np.testing.assert_array_equal(s["sum"], tstate["state"][i]["sum"].numpy())
    assert [sorted(g) for g in state["param_groups"]] == [
        sorted(k for k in g if k not in ("foreach", "differentiable", "fused")) for g in tstate["param_groups"]
    ]
    run_both(opt, topt, ours, theirs, rng, 5, skip_every=2)
    assert_params_close(ours, theirs)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_a_backward_through_a_graph_recorded_before_the_step_is_refused_as_torchs(name):
    # the step writes the weights in place; a retained graph that saved them used the new
    # weights silently (x.grad from the updated w); PyTorch refuses that backward
    results = {}
    for lib in ("torch", "cnnkit"):
        if lib == "torch":
            w, x = torch.nn.Parameter(torch.tensor([1.0, 2.0])), torch.tensor([3.0, 4.0], requires_grad=True)
            opt = getattr(torch.optim, name)([w], lr=0.1)
        else:
            w, x = Parameter(Tensor(np.array([1.0, 2.0], np.float32))), Tensor(np.array([3.0, 4.0], np.float32),
                                                                             requires_grad=True)
            opt = getattr(optim, name)([w], lr=0.1)
        y = (x * w).sum()
        y.backward(retain_graph=True)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()
        z = (x * w).sum()                                     # a graph recorded after the step is fine
        z.backward()
        results[lib] = np.asarray(x.grad)
    np.testing.assert_allclose(results["cnnkit"], results["torch"], rtol=1e-6)
