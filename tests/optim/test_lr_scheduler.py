"""Learning-rate schedules against torch.optim.lr_scheduler, driven step for step the same way."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cnnkit import Tensor, optim
from cnnkit.optim import lr_scheduler

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def torch_on_one_thread():
    """Tiny tensors: PyTorch's thread pool only adds contention on the shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


torch_lr_scheduler = torch.optim.lr_scheduler

STEPS = 30


def make_optimizer(lib, name="SGD"):
    """Two parameter groups with their own lr; ``lib`` is cnnkit.optim or torch.optim."""
    if lib is optim:
        w, b = (Tensor(np.zeros(2, np.float32), requires_grad=True) for _ in range(2))
    else:
        w, b = (torch.zeros(2, requires_grad=True) for _ in range(2))
    kwargs = {"SGD": dict(momentum=0.9), "Adam": dict(), "RMSprop": dict(momentum=0.5)}[name]
    return getattr(lib, name)([{"params": [w]}, {"params": [b], "lr": 0.02}], lr=0.1, **kwargs)


def momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def drive(scheduler_module, opt, build, steps=STEPS, metrics=None):
    """Return per step: (get_last_lr(), the groups' lrs, their momentum or beta1)."""
    scheduler = build(scheduler_module, opt)
    trace = [(scheduler.get_last_lr(), [g["lr"] for g in opt.param_groups], momenta(opt))]
    for i in range(steps):
        opt.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[i])
        trace.append((scheduler.get_last_lr(), [g["lr"] for g in opt.param_groups], momenta(opt)))
    return trace


def assert_same_trace(ours, theirs):
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        np.testing.assert_allclose(
            np.array(a, dtype=float), np.array(b, dtype=float), rtol=1e-12, err_msg=f"step {step}"
        )


SCHEDULES = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
    "StepLR-1": lambda m, o: m.StepLR(o, step_size=1, gamma=0.9),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[3, 8, 8, 20], gamma=0.3),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=STEPS),
    "CosineAnnealingLR-past-T_max": lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.001),
    "CosineAnnealingWarmRestarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5),
    "CosineAnnealingWarmRestarts-T_mult": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2,
                                                                                     eta_min=0.001),
    "SequentialLR-warmup-cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=10)], milestones=[5]
    ),
    "SequentialLR-three": lambda m, o: m.SequentialLR(
        o, [m.ExponentialLR(o, gamma=0.9), m.StepLR(o, 3, gamma=0.5), m.MultiStepLR(o, [0, 2, 4], gamma=0.3)],
        milestones=[4, 12],
    ),
    "SequentialLR-restarts": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.5, end_factor=0.8, total_iters=3),
            m.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2)], milestones=[6]
    ),
    "SequentialLR-lambda": lambda m, o: m.SequentialLR(
        o, [m.ExponentialLR(o, gamma=0.8), m.LambdaLR(o, lambda e: 0.9**e), m.LinearLR(o, start_factor=0.3)],
        milestones=[3, 7],
    ),
    "LinearLR-warmup": lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=8),
    "LinearLR-decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=20),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lambda epoch: 0.95**epoch),
    "LambdaLR-per-group": lambda m, o: m.LambdaLR(o, [lambda e: 1 / (e + 1), lambda e: e % 4 + 1]),
    "OneCycleLR": lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=STEPS + 1),
    "OneCycleLR-linear": lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, epochs=4, steps_per_epoch=8, pct_start=0.25, anneal_strategy="linear"
    ),
    "OneCycleLR-three-phase": lambda m, o: m.OneCycleLR(
        o, max_lr=0.8, total_steps=STEPS, three_phase=True, div_factor=10.0, final_div_factor=100.0
    ),
    "OneCycleLR-no-momentum": lambda m, o: m.OneCycleLR(
        o, max_lr=0.4, total_steps=STEPS, cycle_momentum=False, pct_start=0.5
    ),
    "OneCycleLR-momentum-per-group": lambda m, o: m.OneCycleLR(
        o, max_lr=0.4, total_steps=STEPS, base_momentum=[0.8, 0.7], max_momentum=[0.9, 0.99]
    ),
}


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_schedule_matches_torch(schedule, optimizer):
    build = SCHEDULES[schedule]
    ours = drive(lr_scheduler, make_optimizer(optim, optimizer), build)
    theirs = drive(torch_lr_scheduler, make_optimizer(torch.optim, optimizer), build)
    assert_same_trace(ours, theirs)


def test_one_cycle_cycles_rmsprop_momentum_like_torch():
    build = SCHEDULES["OneCycleLR-three-phase"]
    ours = drive(lr_scheduler, make_optimizer(optim, "RMSprop"), build)
    theirs = drive(torch_lr_scheduler, make_optimizer(torch.optim, "RMSprop"), build)
    assert_same_trace(ours, theirs)
    assert min(m for _, _, ms in ours for m in ms) == pytest.approx(0.85)


PLATEAU_METRICS = [1.0, 0.9, 0.95, 0.95, 0.9, 0.89, 0.9, 0.9, 0.9, 0.9, 0.7, 0.7, 0.69995, 0.7, 0.8]
PLATEAU_METRICS += [0.6, 0.6, 0.6, 0.6, 0.6, 0.5, 0.55, 0.55, 0.55, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]

PLATEAUS = {
    "min-rel": (dict(patience=2), PLATEAU_METRICS),
    "min-abs-cooldown": (
        dict(patience=1, factor=0.5, threshold=0.05, threshold_mode="abs", cooldown=2),
        PLATEAU_METRICS,
    ),
    "max-rel-min_lr-per-group": (
        dict(mode="max", patience=0, factor=0.3, min_lr=[0.01, 0.001]),
        [-m for m in PLATEAU_METRICS],
    ),
    "max-abs-eps": (
        dict(
            mode="max", threshold_mode="abs", threshold=0.01, patience=1, factor=0.5, min_lr=0.004, eps=0.005
        ),
        [-m for m in PLATEAU_METRICS],
    ),
    "min-rel-big-threshold": (dict(patience=3, threshold=0.1, cooldown=1, factor=0.2), PLATEAU_METRICS),
}


@pytest.mark.parametrize("case", sorted(PLATEAUS))
def test_reduce_lr_on_plateau_matches_torch(case):
    kwargs, metrics = PLATEAUS[case]
    assert len(metrics) == STEPS

    def build(m, o):
        return m.ReduceLROnPlateau(o, **kwargs)

    ours = drive(lr_scheduler, make_optimizer(optim), build, metrics=metrics)
    theirs = drive(torch_lr_scheduler, make_optimizer(torch.optim), build, metrics=metrics)
    assert_same_trace(ours, theirs)
    assert ours[-1][0] != ours[0][0]  # the scripted metrics do trigger reductions


def test_reduce_lr_on_plateau_takes_a_tensor_metric():
    opt = make_optimizer(optim)
    scheduler = lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    scheduler.step(Tensor(np.float32(1.0)))
    scheduler.step(Tensor(np.float32(2.0)))
    assert scheduler.get_last_lr() == pytest.approx([0.01, 0.002])


ROUND_TRIPS = sorted(set(SCHEDULES) - {"LambdaLR-per-group"}) + ["ReduceLROnPlateau"]


@pytest.mark.parametrize("schedule", ROUND_TRIPS)
def test_state_dict_round_trip_continues_the_schedule(schedule):
    metrics = PLATEAU_METRICS
    if schedule == "ReduceLROnPlateau":

        def build(m, o):
            return m.ReduceLROnPlateau(o, patience=1, cooldown=1)

        def advance(scheduler, i):
            scheduler.step(metrics[i])
    else:
        build = SCHEDULES[schedule]

        def advance(scheduler, i):
            scheduler.step()

    def record(opt, scheduler):
        return scheduler.get_last_lr(), [g["lr"] for g in opt.param_groups], momenta(opt)

    opt = make_optimizer(optim, "Adam")
    scheduler = build(lr_scheduler, opt)
    expected, resumed = [], []
    for i in range(STEPS):
        if i == 12:
            saved_opt, saved_scheduler = opt.state_dict(), scheduler.state_dict()
        opt.step()
        advance(scheduler, i)
        expected.append(record(opt, scheduler))

    opt2 = make_optimizer(optim, "Adam")
    scheduler2 = build(lr_scheduler, opt2)  # built first: it writes the lrs, which the load replaces
    opt2.load_state_dict(saved_opt)
    scheduler2.load_state_dict(saved_scheduler)
    for i in range(12, STEPS):
        opt2.step()
        advance(scheduler2, i)
        resumed.append(record(opt2, scheduler2))
    assert_same_trace(resumed, expected[12:])
    assert "optimizer" not in saved_scheduler


def test_state_dict_is_a_copy():
    opt = make_optimizer(optim)
    scheduler = lr_scheduler.MultiStepLR(opt, milestones=[2, 4])
    saved = scheduler.state_dict()
    for _ in range(5):
        scheduler.step()
    assert saved["last_epoch"] == 0 and saved["_last_lr"] == [0.1, 0.02]
    assert saved["milestones"] == {2: 1, 4: 1} and saved["base_lrs"] == [0.1, 0.02]


def test_lambda_lr_saves_callable_objects_but_not_functions():
    class Warmup:
        def __init__(self, steps):
            self.steps = steps

        def __call__(self, epoch):
            return min(1.0, (epoch + 1) / self.steps)

    opt = make_optimizer(optim)
    scheduler = lr_scheduler.LambdaLR(opt, [Warmup(4), lambda e: 1.0])
    saved = scheduler.state_dict()
    assert saved["lr_lambdas"] == [{"steps": 4}, None]
    other = lr_scheduler.LambdaLR(make_optimizer(optim), [Warmup(10), lambda e: 1.0])
    other.load_state_dict(saved)
    assert other.lr_lambdas[0].steps == 4


RESUMES = [
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("StepLR", dict(step_size=5, gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("LinearLR", dict(start_factor=0.25, total_iters=12)),
    ("CosineAnnealingWarmRestarts", dict(T_0=4, T_mult=2, eta_min=0.01)),
]


@pytest.mark.parametrize("name, kwargs", RESUMES)
def test_resuming_with_last_epoch_matches_torch(name, kwargs):
    def resumed(lib, module):
        opt = make_optimizer(lib)
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
            group["lr"] *= 0.5  # as if the schedule had already lowered it
        scheduler = getattr(module, name)(opt, last_epoch=9, **kwargs)
        trace = [scheduler.get_last_lr()]
        for _ in range(10):
            opt.step()
            scheduler.step()
            trace.append(scheduler.get_last_lr())
        return trace

    ours, theirs = resumed(optim, lr_scheduler), resumed(torch.optim, torch_lr_scheduler)
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-12)


@pytest.mark.parametrize("T_mult", [1, 2, 3])
def test_cosine_warm_restarts_at_fractional_and_jumping_epochs_matches_torch(T_mult):
    """step(epoch + i / batches) after each batch, then jumps back and forward, as PyTorch's."""
    epochs = [e + i / 4 for e in range(12) for i in range(4)] + [2.5, 0, 40, 7.25, 3]

    def trace(lib, module):
        opt = make_optimizer(lib)
        scheduler = module.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=T_mult, eta_min=0.005)
        out = [scheduler.get_last_lr()]
        for epoch in epochs:
            opt.step()
            scheduler.step(epoch)
            out.append(scheduler.get_last_lr() + [scheduler.last_epoch, scheduler.T_i, scheduler.T_cur])
        return out

    assert_same_trace(trace(optim, lr_scheduler), trace(torch.optim, torch_lr_scheduler))


def test_one_cycle_refuses_to_step_past_total_steps():
    opt = make_optimizer(optim)
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)
    for _ in range(5):  # PyTorch allows reaching last_epoch == total_steps
        scheduler.step()
    with pytest.raises(ValueError, match=r"OneCycleLR was stepped 6 times, more than its total_steps=5"):
        scheduler.step()


class _NoMomentum(optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {"lr": 0.1})

    def _update_group(self, group):
        pass


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda o: lr_scheduler.StepLR(o, step_size=0), ValueError, "StepLR expects step_size >= 1, got 0"),
        (
            lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=0),
            ValueError,
            "CosineAnnealingLR expects T_max >= 1, got 0",
        ),
        (
            lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=0),
            ValueError,
            "CosineAnnealingWarmRestarts expects a positive int T_0, got 0",
        ),
        (
            lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=1.5),
            ValueError,
            "CosineAnnealingWarmRestarts expects an int T_mult >= 1, got 1.5",
        ),
        (
            lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2).step(-1),
            ValueError,
            "CosineAnnealingWarmRestarts.step expects an epoch >= 0, got -1",
        ),
        (
            lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(o, 2)], milestones=[3]),
            ValueError,
            "SequentialLR expects len(schedulers) - 1 = 0 milestones, got 1",
        ),
        (
            lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.ReduceLROnPlateau(o)], milestones=[]),
            ValueError,
            "SequentialLR cannot run ReduceLROnPlateau (schedulers[0]): its step needs a metric",
        ),
        (
            lambda o: lr_scheduler.SequentialLR(o, [], milestones=[]),
            ValueError,
            "SequentialLR expects at least one scheduler, got none",
        ),
        (
            lambda o: lr_scheduler.LinearLR(o, start_factor=0),
            ValueError,
            "LinearLR expects 0 < start_factor <= 1, got 0",
        ),
        (
            lambda o: lr_scheduler.LambdaLR(o, [lambda e: 1.0]),
            ValueError,
            "LambdaLR expects 2 values of lr_lambda (one per parameter group), got 1",
        ),
        (
            lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0),
            ValueError,
            "OneCycleLR expects total_steps, or epochs and steps_per_epoch, got total_steps=None, epochs=None",
        ),
        (
            lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, epochs=2, steps_per_epoch=0),
            ValueError,
            "OneCycleLR expects a positive integer steps_per_epoch, got 0",
        ),
        (
            lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=10, anneal_strategy="exp"),
            ValueError,
            "OneCycleLR expects anneal_strategy 'cos' or 'linear', got 'exp'",
        ),
        (
            lambda o: lr_scheduler.OneCycleLR(o, max_lr=[1.0, 2.0, 3.0], total_steps=10),
            ValueError,
            "OneCycleLR expects 2 values of max_lr (one per parameter group), got 3",
        ),
        (
            lambda o: lr_scheduler.OneCycleLR(_NoMomentum([Tensor(np.zeros(2))]), max_lr=1.0, total_steps=10),
            ValueError,
            "OneCycleLR(cycle_momentum=True) needs an optimizer with momentum or betas, got _NoMomentum",
        ),
        (
            lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=1.0),
            ValueError,
            "ReduceLROnPlateau expects factor < 1, got 1.0",
        ),
        (
            lambda o: lr_scheduler.ReduceLROnPlateau(o, mode="best"),
            ValueError,
            "ReduceLROnPlateau expects mode 'min' or 'max', got 'best'",
        ),
        (
            lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9, last_epoch=3),
            KeyError,
            "ExponentialLR(last_epoch=3) resumes a schedule and needs 'initial_lr' in param_groups[0]",
        ),
        (
            lambda o: lr_scheduler.StepLR(None, step_size=2),
            TypeError,
            "StepLR expects a cnnkit.optim.Optimizer, got NoneType",
        ),
    ],
)
def test_errors(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build(make_optimizer(optim))


@pytest.mark.parametrize("schedule", ["MultiStepLR", "OneCycleLR-momentum-per-group"])
def test_state_dict_survives_a_json_round_trip(schedule):
    """Checkpoints store scheduler state as JSON, which turns int keys into strings."""
    build = SCHEDULES[schedule]
    opt, opt2 = make_optimizer(optim), make_optimizer(optim)
    scheduler, scheduler2 = build(lr_scheduler, opt), build(lr_scheduler, opt2)
    for _ in range(5):
        scheduler.step()
    scheduler2.load_state_dict(json.loads(json.dumps(scheduler.state_dict())))
    opt2.load_state_dict(json.loads(json.dumps(opt.state_dict())))
    for _ in range(20):
        scheduler.step()
        scheduler2.step()
        assert scheduler2.get_last_lr() == scheduler.get_last_lr()
        assert momenta(opt2) == momenta(opt)
