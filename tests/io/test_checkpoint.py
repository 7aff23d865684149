"""Checkpoints: round trips, exact resumption, atomic writes under a real kill, bad files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cnnkit import nn, optim
from cnnkit.io.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save,
)
from cnnkit.train import ModelCheckpoint, fit
from tests.conftest import subprocess_env


class ArrayLoader:
    """A tiny shuffling loader driven by an explicit generator."""

    def __init__(self, x, y, batch_size, rng):
        self.x, self.y, self.batch_size, self.rng = x, y, batch_size, rng

    def __len__(self):
        return len(self.x) // self.batch_size

    def __iter__(self):
        order = self.rng.permutation(len(self.x))
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def small_net(seed: int) -> nn.Module:
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, generator=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3, generator=np.random.default_rng(seed + 1)), nn.Linear(4 * 4 * 4, 3, generator=rng),
    )


def data(n=96):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 4:].sum(axis=(1, 2)) > 0)
    return x, y


def weights(model):
    return {k: np.array(getattr(v, "data", v)) for k, v in model.state_dict().items()}


def make_run(seed=0):
    model = small_net(seed)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    x, y = data()
    loader_rng = np.random.default_rng(seed + 100)
    loader = ArrayLoader(x, y, 16, loader_rng)
    dropout_rng = model[5].generator
    return model, opt, sched, loader, {"loader": loader_rng, "dropout": dropout_rng}


def test_an_interrupted_then_resumed_run_ends_with_the_same_weights(tmp_path):
    model, opt, sched, loader, _ = make_run()
    fit(model, loader, epochs=4, optimizer=opt, scheduler=sched, verbose=0)
    uninterrupted = weights(model)

    model, opt, sched, loader, gens = make_run()
    ckpt = ModelCheckpoint(tmp_path / "epoch{epoch}.safetensors", rng_states=lambda: capture_rng(gens))
    fit(model, loader, epochs=2, optimizer=opt, scheduler=sched, callbacks=[ckpt], verbose=0)
    # a new process would start here: fresh objects, state only from the file
    model, opt, sched, loader, gens = make_run(seed=123)
    state = load_checkpoint(tmp_path / "epoch2.safetensors")
    model.load_state_dict(state.model_state)
    opt.load_state_dict(state.optimizer_state())
    sched.load_state_dict(state.meta["scheduler"]["state"])
    restore_rng(state.meta["rng_states"], gens)
    fit(model, loader, epochs=4, initial_epoch=state.meta["epoch"] + 1, optimizer=opt, scheduler=sched, verbose=0)
    resumed = weights(model)
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)


def test_checkpoint_round_trip_keeps_every_array_and_the_metadata(tmp_path):
    model, opt, sched, loader, _ = make_run()
    fit(model, loader, epochs=1, optimizer=opt, scheduler=sched, verbose=0)
    path = save(model, tmp_path / "c.safetensors", model_name="custom", optimizer=opt,
                           scheduler=sched, epoch=0, metrics={"accuracy": 0.5})
    ckpt = load_checkpoint(path)
    for key, value in weights(model).items():
        np.testing.assert_array_equal(ckpt.model_state[key], value)
        assert ckpt.model_state[key].dtype == value.dtype
    assert ckpt.meta["metrics"] == {"accuracy": 0.5} and ckpt.model_name == "custom"
    restored = ckpt.optimizer_state()
    original = opt.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for index, slots in original["state"].items():
        for slot, value in slots.items():
            np.testing.assert_array_equal(restored["state"][index][slot], value)


def test_bad_files_are_refused_with_the_file_name_and_the_reason(tmp_path):
    model = small_net(0)
    good = save(model, tmp_path / "good.safetensors")
    raw = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CheckpointError, match=r"truncated.safetensors: truncated or corrupt checkpoint \(expected \d+ bytes, found \d+\)"):
        load_checkpoint(truncated)

    cut_header = tmp_path / "cut.safetensors"
    cut_header.write_bytes(raw[:40])
    with pytest.raises(CheckpointError, match=r"cut.safetensors: not a cnnkit checkpoint or truncated"):
        load_checkpoint(cut_header)

    pickle_file = tmp_path / "model.pt"
    pickle_file.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"model.pt: not a cnnkit checkpoint \(looks like a zip or pickle"):
        load_checkpoint(pickle_file)

    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign))
    with pytest.raises(CheckpointError, match=r"foreign.safetensors: a safetensors file, but not a cnnkit checkpoint"):
        load_checkpoint(foreign)

    with pytest.raises(CheckpointError, match=r"missing.safetensors: no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.safetensors")


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from cnnkit.io.checkpoint import save

    class Big:
        def __init__(self, value):
            self.arrays = {"w": np.full(8_000_000, value, np.float32)}
        def state_dict(self):
            return self.arrays

    path = sys.argv[1]
    i = 1
    while True:
        save(Big(float(i)), path, model_name="big", epoch=i)
        print(i, flush=True)
        i += 1
    """
)


def test_killing_a_process_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                                env=subprocess_env())
        first = proc.stdout.readline()  # one complete save exists
        assert first.strip(), "writer process produced no checkpoint"
        time.sleep(0.05 + 0.07 * attempt)  # then kill it in the middle of a later save
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)  # complete and valid: the old one or the new one, never half
        epoch = ckpt.meta["epoch"]
        assert epoch >= 1
        np.testing.assert_array_equal(ckpt.model_state["w"][:5], np.full(5, float(epoch), np.float32))
