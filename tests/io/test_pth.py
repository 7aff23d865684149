"""The safe .pth reader on files torch.save writes: every dtype, layout and wrapper loads exactly."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnnkit.io.pth import PthError, load_pth, read_pth, unwrap_state_dict  # noqa: E402

from .pth_files import Pickle, state_dict_pickle, torch_save, write_archive  # noqa: E402


def _np(t):
    return t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_torch_state_dict_loads_exactly_with_every_pickle_protocol(tmp_path, protocol):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 5))
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path, pickle_protocol=protocol)
    state = load_pth(path)
    assert list(state) == list(net.state_dict())
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(state[key], _np(value))
        assert state[key].dtype == _np(value).dtype
    assert state["1.num_batches_tracked"].shape == () and state["1.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                   torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool])
def test_every_storage_type_reads_as_its_numpy_dtype(tmp_path, dtype):
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(3, 5, generator=g) * 50).to(dtype)
    torch.save({"t": t}, tmp_path / "t.pth")
    got = read_pth(tmp_path / "t.pth")["t"]
    want = _np(t)
    assert got.dtype == want.dtype  # bfloat16 comes back as float32, exactly widened
    np.testing.assert_array_equal(got, want)


def test_views_shared_storages_offsets_and_zero_sized_tensors(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    obj = {
        "transposed": base.transpose(0, 2),        # strides (1, 5, 20)
        "slice": base[1:, ::2, 1],                 # offset and a step
        "expanded": torch.ones(3).expand(4, 3),    # stride 0
        "shared": base[2],                         # same storage as the others
        "scalar": torch.tensor(7.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.full((2, 2), 3.0)),
        "meta": {"epoch": 3, "lr": 0.1, "name": "x", "flags": [True, None], "pair": (1, 2.5), "raw": b"\x00\x01"},
    }
    torch.save(obj, tmp_path / "views.pth")
    got = read_pth(tmp_path / "views.pth")
    for key in ("transposed", "slice", "expanded", "shared", "scalar", "empty", "param"):
        np.testing.assert_array_equal(got[key], _np(obj[key]), err_msg=key)
        assert got[key].shape == tuple(obj[key].shape)
    assert got["meta"] == {"epoch": 3, "lr": 0.1, "name": "x", "flags": [True, None], "pair": (1, 2.5),
                           "raw": b"\x00\x01"}


def test_storages_are_memory_mapped_copy_on_write_and_the_file_never_changes(tmp_path):
    path = torch_save({"w": np.arange(1000, dtype=np.float32)}, tmp_path / "w.pth")
    before = path.read_bytes()
    w = read_pth(path)["w"]
    base = w
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and type(base.obj).__name__ == "mmap"
    w[:] = -1  # writable, private
    assert path.read_bytes() == before
    np.testing.assert_array_equal(read_pth(path, mmap=False)["w"], np.arange(1000, dtype=np.float32))


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict", "module"])
def test_common_wrappers_and_the_dataparallel_prefix_unwrap(tmp_path, wrapper):
    sd = {"conv.weight": np.ones((2, 1, 3, 3), np.float32), "conv.bias": np.zeros(2, np.float32)}
    torch_save({wrapper: {f"module.{k}": v for k, v in sd.items()}, "epoch": 9, "best_acc": 0.9},
               tmp_path / "ckpt.pth")
    state = load_pth(tmp_path / "ckpt.pth")
    assert list(state) == ["conv.weight", "conv.bias"]
    np.testing.assert_array_equal(state["conv.weight"], sd["conv.weight"])


def test_a_file_without_a_state_dict_says_what_it_holds(tmp_path):
    torch_save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "x.pth")
    with pytest.raises(PthError, match=r"no state_dict found \(top-level keys: 'epoch', 'optimizer'\)"):
        load_pth(tmp_path / "x.pth")
    torch_save([np.zeros(2, np.float32)], tmp_path / "l.pth")
    with pytest.raises(PthError, match="holds a list, not a state_dict"):
        load_pth(tmp_path / "l.pth")
    with pytest.raises(PthError, match="holds a str"):
        unwrap_state_dict("x")


def test_a_whole_pickled_module_is_refused_naming_its_class(tmp_path):
    torch.save(torch.nn.Linear(2, 3), tmp_path / "module.pth")
    with pytest.raises(PthError, match=r"refused global torch\.nn\.modules\.linear\.Linear \(GLOBAL\) at byte \d+ "
                                       r"of data\.pkl.*torch\.save\(model\.state_dict\(\), path\)"):
        read_pth(tmp_path / "module.pth")


def test_big_endian_archives_are_byteswapped(tmp_path):
    values = np.arange(6, dtype=np.float32) * 1.5
    data = state_dict_pickle({"w": ("0", 6, 0, (2, 3), (3, 1))})
    write_archive(tmp_path / "be.pth", data, {"0": values.astype(">f4").tobytes()}, byteorder=b"big")
    np.testing.assert_array_equal(read_pth(tmp_path / "be.pth")["w"], values.reshape(2, 3))
    write_archive(tmp_path / "none.pth", data, {"0": values.tobytes()}, byteorder=None)  # old files: little
    np.testing.assert_array_equal(read_pth(tmp_path / "none.pth")["w"], values.reshape(2, 3))


def test_deflated_archives_are_read_too(tmp_path):
    path = torch_save({"w": np.arange(12, dtype=np.float64).reshape(3, 4)}, tmp_path / "a.pth")
    zipped = tmp_path / "deflated.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    np.testing.assert_array_equal(read_pth(zipped)["w"], np.arange(12, dtype=np.float64).reshape(3, 4))


def test_the_reader_never_unpickles(tmp_path, monkeypatch):
    path = torch_save({"w": np.ones(3, np.float32)}, tmp_path / "w.pth")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler", "_Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    np.testing.assert_array_equal(load_pth(path)["w"], np.ones(3, np.float32))


def test_legacy_formats_are_refused_with_how_to_resave(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(PthError, match=r"old\.pth: a legacy PyTorch file .*torch\.save\(torch\.load\(old, "
                                       r"weights_only=True\), new\)"):
        load_pth(tmp_path / "old.pth")
    # The pre-0.4 tar format: a tar archive holding sys_info, pickle, tensors, storages.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("sys_info", "pickle", "tensors", "storages"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"\x80"))
    (tmp_path / "tar.pth").write_bytes(buffer.getvalue())
    with pytest.raises(PthError, match=r"tar\.pth: a legacy tar-format PyTorch file.*re-save it"):
        load_pth(tmp_path / "tar.pth")


def test_other_files_are_refused_by_what_they_are(tmp_path):
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(PthError, match="a raw pickle, not a torch.save archive; cnnkit never unpickles"):
        load_pth(tmp_path / "raw.pkl")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(PthError, match="empty file"):
        load_pth(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(PthError, match="not a PyTorch checkpoint"):
        load_pth(tmp_path / "text.pth")
    with pytest.raises(PthError, match="no such file"):
        load_pth(tmp_path / "missing.pth")
    with pytest.raises(PthError, match="is a folder"):
        load_pth(tmp_path)
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, tmp_path / "script.pt")
    with pytest.raises(PthError, match=r"a TorchScript archive \(torch\.jit\.save\)"):
        load_pth(tmp_path / "script.pt")


def test_hand_made_archives_with_any_folder_name_load(tmp_path):
    data = state_dict_pickle({"a": ("k0", 4, 0, (2, 2), (2, 1)), "b": ("k0", 4, 1, (3,), (1,))})
    write_archive(tmp_path / "x.pth", data, {"k0": np.arange(4, dtype=np.float32).tobytes()}, prefix="whatever")
    got = read_pth(tmp_path / "x.pth")
    np.testing.assert_array_equal(got["a"], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(got["b"], [1, 2, 3])
    assert Pickle  # the builder is shared with the security tests
