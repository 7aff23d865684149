"""Bad checkpoint files: each is refused with the file's name and the reason, fast, and nothing half-loads."""

from __future__ import annotations

import json
import os
import signal
import struct
from contextlib import contextmanager

import numpy as np
import pytest

from cnnkit import models, nn, optim
from cnnkit.cli.main import main
from cnnkit.errors import CheckpointError, StateDictError
from cnnkit.io.checkpoint import load, load_checkpoint, save
from cnnkit.io.safetensors import write_safetensors


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small checkpoint with optimizer state, and its bytes split into (header dict, data)."""
    folder = tmp_path_factory.mktemp("good")
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=np.random.default_rng(0)), nn.Flatten(),
                          nn.Linear(8, 3, rng=np.random.default_rng(1)))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(2).standard_normal((4, 1, 4, 4)).astype(np.float32)
    from cnnkit.functional import cross_entropy
    from cnnkit.tensor import Tensor

    loss = cross_entropy(model(Tensor(x)), np.array([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    path = save(model, folder / "good.safetensors", model_name="custom", optimizer=opt, epoch=1,
                           history={"epoch": [0, 1], "history": {"loss": [1.5, 1.25]}})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _assemble(header, data: bytes, pad: bool = True) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _first(header, prefix="model/"):
    return next(k for k in sorted(header) if k.startswith(prefix))


def _edit(header, fn):
    h = json.loads(json.dumps(header))
    fn(h)
    return h


def _flip(raw: bytes, index: int, bit: int = 4) -> bytes:
    b = bytearray(raw)
    b[index] ^= 1 << bit
    return bytes(b)


def _set(h, key, field, value):
    h[key][field] = value


def _swap_metadata_digit(header):
    """Change one character of the history inside the cnnkit metadata (valid JSON still)."""
    def fn(h):
        h["__metadata__"]["cnnkit"] = h["__metadata__"]["cnnkit"].replace("1.25", "1.75")
    return fn


CORRUPT = "corrupt checkpoint: its contents do not match the SHA-256 stored in it"

# (case id, builder(raw, header, data) -> bytes, expected message regex)
CASES = [
    ("flipped-bit-in-weights", lambda raw, h, d: _flip(raw, len(raw) - 7), CORRUPT),
    ("flipped-bit-in-first-weight-byte", lambda raw, h, d: _flip(raw, len(raw) - len(d), 0), CORRUPT),
    ("edited-history", lambda raw, h, d: _assemble(_edit(h, _swap_metadata_digit(h)), d), CORRUPT),
    ("float32-relabelled-int32",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "dtype", "I32")), d), CORRUPT),
    ("shape-permuted",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, "model/0.weight", "shape", [1, 2, 3, 3])), d),
     CORRUPT),
    ("digest-removed-from-v2",
     lambda raw, h, d: _assemble(_edit(h, lambda e: e["__metadata__"].pop("sha256")), d),
     r"corrupt checkpoint \(no 'sha256' metadata\)"),
    ("data-truncated", lambda raw, h, d: raw[:-100],
     r"truncated or corrupt checkpoint \(expected \d+ bytes, found \d+\)"),
    ("trailing-garbage", lambda raw, h, d: raw + b"\0" * 16,
     r"truncated or corrupt checkpoint \(expected \d+ bytes, found \d+\)"),
    ("header-truncated", lambda raw, h, d: raw[:40], r"not a cnnkit checkpoint or truncated \(header claims"),
    ("empty-file", lambda raw, h, d: b"", r"not a checkpoint file \(only 0 bytes\)"),
    ("seven-bytes", lambda raw, h, d: b"\x01" * 7, r"not a checkpoint file \(only 7 bytes\)"),
    ("header-length-2**63", lambda raw, h, d: struct.pack("<Q", 2**63) + raw[8:], r"header claims 9223372036854775808"),
    ("header-not-json", lambda raw, h, d: _assemble(b"{not json", b""), r"its header is not valid JSON"),
    ("header-not-utf8", lambda raw, h, d: _assemble(b'{"\xff\xfe": 1}', b""), r"its header is not valid JSON"),
    ("header-nested-100000-deep", lambda raw, h, d: _assemble(b"[" * 100_000 + b"]" * 100_000, b""),
     r"its header is nested too deeply \(more than 64 levels\)"),
    ("header-nested-100-deep",
     lambda raw, h, d: _assemble(b'{"__metadata__": {}, "a": ' + b"[" * 100 + b"]" * 100 + b"}", b""),
     r"nested too deeply"),
    ("header-a-list", lambda raw, h, d: _assemble(b"[1, 2]", b""), r"its header is a JSON list, not an object"),
    ("header-a-number", lambda raw, h, d: _assemble(b"42", b""), r"its header is a JSON int, not an object"),
    ("entry-a-string",
     lambda raw, h, d: _assemble(_edit(h, lambda e: e.__setitem__(_first(e), "x")), d),
     r"header entry 'model/\S+' must be an object with exactly dtype, shape and data_offsets, got str"),
    ("entry-extra-field",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "extra", 1)), d),
     r"must be an object with exactly dtype, shape and data_offsets"),
    ("unknown-dtype", lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "dtype", "F128")), d),
     r"has unknown dtype 'F128'"),
    ("dtype-a-number", lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "dtype", 7)), d),
     r"has unknown dtype 7"),
    ("bfloat16", lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "dtype", "BF16")), d),
     r"is bfloat16, which NumPy cannot hold"),
    ("negative-dimension",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "shape", [-1, 3])), d),
     r"has shape \[-1, 3\]; expected a list of at most 32 non-negative integers"),
    ("float-dimension",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "shape", [1.5])), d),
     r"has shape \[1.5\]"),
    ("bool-dimension",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "shape", [True])), d),
     r"has shape \[True\]"),
    ("shape-a-string", lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "shape", "3")), d),
     r"has shape '3'"),
    ("offsets-a-string",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "data_offsets", "x")), d),
     r"has data_offsets 'x'; expected \[begin, end\]"),
    ("offsets-reversed",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "data_offsets", [8, 0])), d),
     r"has data_offsets \[8, 0\]"),
    ("offsets-negative",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "data_offsets", [-4, 0])), d),
     r"has data_offsets \[-4, 0\]"),
    ("offsets-past-the-end",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "data_offsets", [0, 10**12])), d),
     r"truncated or corrupt checkpoint \(expected 10000000\d+ bytes"),
    ("span-not-the-shape",
     lambda raw, h, d: _assemble(_edit(h, lambda e: _set(e, _first(e), "shape", [2, 2, 2, 2, 2])), d),
     r"needs 128 bytes, but its data_offsets \[\d+, \d+\] span"),
    ("tensors-overlap", lambda raw, h, d: _assemble(_overlap(h), d), r"overlaps the one before"),
    ("metadata-not-strings",
     lambda raw, h, d: _assemble(_edit(h, lambda e: e.__setitem__("__metadata__", {"format": 1})), d),
     r"__metadata__ must map strings to strings"),
    ("metadata-a-list", lambda raw, h, d: _assemble(_edit(h, lambda e: e.__setitem__("__metadata__", [])), d),
     r"__metadata__ must map strings to strings"),
    ("pickle", lambda raw, h, d: b"\x80\x04\x95" + b"\0" * 200, r"looks like a zip or pickle file"),
    ("zip", lambda raw, h, d: b"PK\x03\x04" + b"\0" * 200, r"looks like a zip or pickle file"),
    ("text", lambda raw, h, d: b"hello, this is not a checkpoint at all\n" * 3, r"not a cnnkit checkpoint or truncated"),
    ("newer-version",
     lambda raw, h, d: _assemble(_edit(h, lambda e: e["__metadata__"].__setitem__("version", "99")), d),
     r"format version 99 is newer than this cnnkit reads \(2\); upgrade cnnkit"),
    ("version-not-a-number",
     lambda raw, h, d: _assemble(_edit(h, lambda e: e["__metadata__"].__setitem__("version", "2x")), d),
     r"corrupt checkpoint \(format version '2x'\)"),
    ("no-cnnkit-metadata",
     lambda raw, h, d: _assemble(_edit(h, lambda e: e["__metadata__"].pop("cnnkit")), d),
     r"corrupt checkpoint \(no 'cnnkit' metadata\)"),
    ("foreign-safetensors", lambda raw, h, d: _assemble({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                                                        b"\0" * 4),
     r"a safetensors file, but not a cnnkit checkpoint"),
]


def _overlap(header):
    h = json.loads(json.dumps(header))
    entries = sorted((v["data_offsets"], k) for k, v in h.items() if k != "__metadata__")
    (b0, e0), _ = entries[0]
    (b1, e1), k1 = entries[1]
    h[k1]["data_offsets"] = [b1 - 4, e1 - 4]  # starts inside the first tensor
    return h


@pytest.mark.parametrize("case, build, message", CASES, ids=[c[0] for c in CASES])
def test_a_bad_checkpoint_is_refused_with_its_name_and_the_reason(good, tmp_path, case, build, message):
    raw, header, data = good
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(build(raw, header, data))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(str(path)), info.value


def test_the_good_checkpoint_itself_loads_and_is_read_by_the_safetensors_library(good, tmp_path):
    from safetensors.numpy import load_file

    raw, header, data = good
    path = tmp_path / "good.safetensors"
    path.write_bytes(raw)
    ckpt = load_checkpoint(path)
    theirs = load_file(str(path))
    assert set(theirs) == {f"model/{k}" for k in ckpt.model_state} | {f"optimizer/{k}" for k in ckpt.optimizer_arrays}
    for key, value in ckpt.model_state.items():
        np.testing.assert_array_equal(theirs[f"model/{key}"], value)


def test_a_version_1_checkpoint_without_a_digest_still_loads(good, tmp_path):
    raw, header, data = good
    h = _edit(header, lambda e: (e["__metadata__"].pop("sha256"), e["__metadata__"].__setitem__("version", "1")))
    path = tmp_path / "v1.safetensors"
    path.write_bytes(_assemble(h, data))
    assert load_checkpoint(path).meta["epoch"] == 1


def test_a_header_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge-header.safetensors"
    with open(path, "wb") as f:  # sparse: 200 MB that take no room
        f.write(struct.pack("<Q", 200 * 2**20))
        f.truncate(8 + 200 * 2**20)
    with pytest.raises(CheckpointError, match=r"header of 200.0 MiB is larger than the 100.0 MiB"):
        load_checkpoint(path)


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) if the body blocks: SIGALRM interrupts a blocking open()."""
    def expire(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "missing", "symlink-to-fifo"])
def test_only_regular_files_are_opened_and_nothing_hangs(tmp_path, kind, capsys):
    """A FIFO without a writer used to block forever; /dev/zero was read without end."""
    target = {"fifo": tmp_path / "pipe.safetensors", "dev-zero": "/dev/zero", "folder": tmp_path,
              "missing": tmp_path / "none.safetensors", "symlink-to-fifo": tmp_path / "link.safetensors"}[kind]
    if kind in ("fifo", "symlink-to-fifo"):
        os.mkfifo(tmp_path / "pipe.safetensors")
    if kind == "symlink-to-fifo":
        os.symlink(tmp_path / "pipe.safetensors", target)
    with deadline(20):
        status = main(["evaluate", str(target)])
    err = capsys.readouterr().err
    expected = {"fifo": "is a FIFO (named pipe), not a checkpoint file",
                "symlink-to-fifo": "is a FIFO (named pipe), not a checkpoint file",
                "dev-zero": "/dev/zero: is a character device, not a checkpoint file",
                "folder": "is a folder, not a checkpoint file",
                "missing": "none.safetensors: no such checkpoint file"}[kind]
    assert status == 1 and expected in err, err
    assert len(err.strip().splitlines()) == 1


def _tiny(seed=0):
    return nn.Sequential(nn.Linear(3, 2, rng=np.random.default_rng(seed)), nn.BatchNorm1d(2))


@pytest.mark.parametrize("where", ["model", "optimizer"])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tmp_path, where):
    model = _tiny()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    if where == "model":
        model[0].weight.data[1, 2] = np.nan
        name = "model/0.weight"
    else:
        opt.state[model[0].bias]["momentum_buffer"][0] = np.inf
        name = "optimizer/1/momentum_buffer"
    path = save(model, tmp_path / "diverged.safetensors", optimizer=opt)
    with pytest.raises(CheckpointError, match=rf"diverged.safetensors: tensor {name} holds non-finite values "
                                              r"\(1 (NaN|Inf) of \d+\); the weights were saved after training "
                                              r"diverged"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, allow_nonfinite=True)  # to look at a diverged run on purpose
    arrays = {**{f"model/{k}": v for k, v in ckpt.model_state.items()},
              **{f"optimizer/{k}": v for k, v in ckpt.optimizer_arrays.items()}}
    assert not np.isfinite(arrays[name]).all()


def test_metadata_of_the_wrong_types_is_refused_even_with_a_valid_digest(tmp_path):
    from cnnkit.io.checkpoint import _digest_text

    for text, message in [("[1]", "its cnnkit metadata is not an object"),
                          ('{"history": []}', "metadata field 'history' is a list, expected an object"),
                          ('{"model": {"name": 5}}', "model name 5"),
                          ('{"epoch": "one"}', "epoch 'one'"),
                          ("[" * 200 + "]" * 200, "nested too deeply"),
                          ("not json", "its cnnkit metadata is not valid JSON")]:
        path = write_safetensors(tmp_path / "m.safetensors", {"model/w": np.zeros(2, np.float32)},
                                 {"format": "cnnkit-checkpoint", "version": "2", "cnnkit": text},
                                 digest_key="sha256", digest_text=_digest_text(2, text))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


def test_a_checkpoint_naming_an_unknown_model_or_wrong_shapes_is_refused(tmp_path):
    path = save(_tiny(), tmp_path / "x.safetensors", model_name="nosuchnet")
    with pytest.raises(CheckpointError, match=r"x.safetensors: cannot rebuild model 'nosuchnet'"):
        load(path)
    wrong = nn.Sequential(nn.Linear(3, 10, rng=np.random.default_rng(0)))
    path = save(wrong, tmp_path / "y.safetensors", model_name="lenet5", model_config={"num_classes": 10})
    with pytest.raises(CheckpointError, match=r"y.safetensors: the weights do not fit model 'lenet5'"):
        load(path)


# ---------------------------------------------------------------- load_state_dict: all or nothing

def _weights(model):
    return {k: np.array(v) for k, v in model.state_dict().items()}


BAD_VALUES = [
    ("int32-weights", lambda sd: sd.__setitem__("0.weight", sd["0.weight"].astype(np.int32)),
     r"bad value for 0.weight: dtype int32 where floating point \(float32\) is expected"),
    ("nan-weight", lambda sd: sd["0.weight"].__setitem__((0, 0), np.nan),
     r"bad value for 0.weight: holds non-finite values \(1 NaN of 6\)"),
    ("inf-running-var", lambda sd: sd["1.running_var"].__setitem__(1, np.inf),
     r"bad value for 1.running_var: holds non-finite values \(1 Inf of 2\)"),
    ("strings", lambda sd: sd.__setitem__("1.bias", np.array(["a", "b"])),
     r"bad value for 1.bias: dtype <U1 where floating point"),
    ("ragged", lambda sd: sd.__setitem__("1.weight", [[1.0], [1.0, 2.0]]), r"bad value for 1.weight: not an array"),
    ("complex", lambda sd: sd.__setitem__("0.bias", np.zeros(2, np.complex64)), r"dtype complex64 where floating"),
    ("float-into-int-buffer", lambda sd: sd.__setitem__("1.num_batches_tracked", np.array(2.5)),
     r"bad value for 1.num_batches_tracked: dtype float64 where an integer \(int64\) is expected"),
    ("last-shape-wrong", lambda sd: sd.__setitem__("1.running_mean", np.zeros(3, np.float32)),
     r"size mismatch for 1.running_mean"),
]


@pytest.mark.parametrize("case, spoil, message", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_load_state_dict_checks_every_value_before_writing_any(case, spoil, message):
    model = _tiny(0)
    before = _weights(model)
    state = _weights(_tiny(1))  # different, valid values for every key
    spoil(state)
    with pytest.raises(StateDictError, match=message) as info:
        model.load_state_dict(state)
    assert "(nothing was loaded)" in str(info.value)
    for key, value in _weights(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{key} changed by a failed load")


def test_load_state_dict_still_casts_float64_into_float32_and_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    model = _tiny(0)
    state = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in _weights(_tiny(1)).items()}
    state["0.weight"] = torch.from_numpy(state["0.weight"])
    model.load_state_dict(state)
    np.testing.assert_allclose(model[0].weight.data, _weights(_tiny(1))["0.weight"])


def test_the_zoo_round_trips_through_the_checked_reader(tmp_path):
    model = models.lenet5(rng=np.random.default_rng(0))
    path = save(model, tmp_path / "l.safetensors", model_name="lenet5", model_config={"num_classes": 10})
    again = load(path)
    for key, value in _weights(model).items():
        np.testing.assert_array_equal(_weights(again)[key], value)


@pytest.mark.parametrize("config, message", [
    ({"num_classes": 10**9}, r"model config num_classes=1000000000 does not match its weights \(no tensor has a "
                             r"dimension that large; the largest is 400\)"),
    ({"num_classes": -3}, r"cannot rebuild model 'lenet5'"),
    ({"num_classes": "ten"}, r"cannot rebuild model 'lenet5'"),
])
def test_a_model_config_that_does_not_match_the_weights_is_refused_before_building(tmp_path, config, message):
    """A crafted config (num_classes=10**9) would allocate a huge head before the shapes are compared."""
    path = save(models.lenet5(rng=np.random.default_rng(0)), tmp_path / "l.safetensors", model_name="lenet5",
                model_config=config)
    with pytest.raises(CheckpointError, match=message):
        load(path)


# ---------------------------------------------------------------- every single bit flipped

def _fuzz_subject(folder):
    """The smallest checkpoint with every kind of content: weights, optimizer arrays, metadata."""
    model = nn.Sequential(nn.Linear(2, 2, generator=np.random.default_rng(0)))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    return save(model, folder / "subject.safetensors", model_name="custom", optimizer=opt, epoch=1)


def _load_each_mutant(path, raw: bytes, positions):
    """Flip each bit at ``positions`` in turn; yield the outcome of each load: the Checkpoint or the error."""
    path.write_bytes(raw)
    fd = os.open(path, os.O_WRONLY)  # one byte rewritten in place: truncating a file thousands of times is slow
    try:
        for index in positions:
            for bit in range(8):
                os.pwrite(fd, bytes([raw[index] ^ (1 << bit)]), index)
                try:
                    outcome = load_checkpoint(path)
                except CheckpointError as e:
                    outcome = e
                yield index, bit, outcome
            os.pwrite(fd, raw[index:index + 1], index)
    finally:
        os.close(fd)


def _same_contents(a, b) -> bool:
    def arrays(ckpt):
        return {**{f"model/{k}": v for k, v in ckpt.model_state.items()},
                **{f"optimizer/{k}": v for k, v in ckpt.optimizer_arrays.items()}}

    x, y = arrays(a), arrays(b)
    return (x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
                                         and x[k].tobytes() == y[k].tobytes() for k in x)
            and a.meta == b.meta)


def test_no_single_flipped_bit_of_the_header_loads_different_contents(tmp_path):
    """Every bit of the length prefix and of the JSON header, one at a time: refused, or the same contents
    and still verified.

    A flipped bit in ``"version": "2"`` ("0") used to turn the digest check off, so a second
    flipped bit in a weight loaded silently (a weight off by 2.46e37).
    """
    path = _fuzz_subject(tmp_path)
    raw = path.read_bytes()
    original = load_checkpoint(path)
    (n,) = struct.unpack("<Q", raw[:8])
    loaded = []
    for index, bit, outcome in _load_each_mutant(tmp_path / "mutant.safetensors", raw, range(8 + n)):
        where = f"bit {bit} of byte {index} ({raw[index:index + 1]!r})"
        if isinstance(outcome, CheckpointError):
            assert str(outcome).startswith(str(tmp_path / "mutant.safetensors")), (where, outcome)
        else:
            assert _same_contents(outcome, original), f"{where}: loaded contents that differ from the saved ones"
            loaded.append((index, bit))
    assert len(loaded) < 0.05 * 8 * (8 + n), loaded
    # A mutant that loads must still be verified: one more flipped bit, in a weight, is refused.
    for index, bit in loaded:
        path.write_bytes(_flip(_flip(raw, index, bit), len(raw) - 1, 0))
        with pytest.raises(CheckpointError, match=CORRUPT):
            load_checkpoint(path)


def test_every_single_flipped_bit_of_the_weights_is_refused(tmp_path):
    path = _fuzz_subject(tmp_path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    for index, bit, outcome in _load_each_mutant(tmp_path / "mutant.safetensors", raw, range(8 + n, len(raw))):
        assert isinstance(outcome, CheckpointError) and CORRUPT in str(outcome), (index, bit, outcome)


@pytest.mark.parametrize("case, edit, message", [
    ("v2-marked-version-1", lambda m: m.__setitem__("version", "1"),
     r"corrupt checkpoint \(metadata 'sha256' that format version 1 files do not have\)"),
    ("v2-marked-version-0", lambda m: m.__setitem__("version", "0"), r"corrupt checkpoint \(format version '0'\)"),
    ("version-02", lambda m: m.__setitem__("version", "02"), r"corrupt checkpoint \(format version '02'\)"),
    ("arabic-indic-2", lambda m: m.__setitem__("version", "\u0662"), r"corrupt checkpoint \(format version '\S'\)"),
    ("version-missing", lambda m: m.pop("version"), r"corrupt checkpoint \(no 'version' metadata\)"),
    ("version-key-renamed", lambda m: m.__setitem__("versinn", m.pop("version")),
     r"corrupt checkpoint \(no 'version' metadata\)"),
    ("digest-key-renamed", lambda m: m.__setitem__("sha257", m.pop("sha256")),
     r"corrupt checkpoint \(no 'sha256' metadata\)"),
    ("digest-key-renamed-and-version-1",
     lambda m: (m.__setitem__("sha257", m.pop("sha256")), m.__setitem__("version", "1")),
     r"corrupt checkpoint \(metadata 'sha257' that format version 1 files do not have\)"),
    ("unknown-field", lambda m: m.__setitem__("note", "x"),
     r"corrupt checkpoint \(metadata 'note' that format version 2 files do not have\)"),
])
def test_a_header_that_is_not_exactly_its_versions_is_refused(good, tmp_path, case, edit, message):
    """Only a header of exactly version 1's fields loads without a digest; nothing else turns the check off."""
    raw, header, data = good
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(_assemble(_edit(header, lambda e: edit(e["__metadata__"])), data))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(str(path)), info.value


def test_a_key_repeated_in_the_header_is_refused(good, tmp_path):
    raw, header, data = good
    text = json.dumps(header).encode()
    first = _first(header).encode()
    text = text.replace(b'"__metadata__"', b'"' + first + b'": {}, "__metadata__"', 1)
    path = tmp_path / "twice.safetensors"
    path.write_bytes(_assemble(text, data))
    with pytest.raises(CheckpointError, match=rf"its header has the key '{first.decode()}' twice"):
        load_checkpoint(path)
