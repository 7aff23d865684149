"""Hostile .pth files: each is refused with PthError, naming what was refused, and runs nothing.

Payloads that would create a marker file prove they did not run: the file must not exist.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnnkit.io.pth import PthError, load_pth, read_pth  # noqa: E402

from .pth_files import Pickle, state_dict_pickle, torch_save, write_archive  # noqa: E402


class _System:
    """Unpickling this runs os.system(command)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


class _Popen:
    def __init__(self, argv):
        self.argv = argv

    def __reduce__(self):
        return subprocess.Popen, (self.argv,)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran"


def _refused(path, pattern):
    with pytest.raises(PthError, match=pattern) as info:
        read_pth(path)
    assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize("protocol", [2, 4])
def test_torch_save_of_an_os_system_payload_is_refused(tmp_path, marker, protocol):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": _System(f"touch {marker}")}, path, pickle_protocol=protocol)
    op = "GLOBAL" if protocol == 2 else "STACK_GLOBAL"
    _refused(path, rf"refused global (posix|os)\.system \({op}\) at byte \d+ of data\.pkl")


def test_builtins_eval_payload_is_refused(tmp_path, marker):
    path = tmp_path / "eval.pth"
    torch.save({"x": _Eval(f"open({str(marker)!r}, 'w')")}, path)
    _refused(path, r"refused global (__builtin__|builtins)\.eval \(GLOBAL\)")


def test_subprocess_popen_payload_is_refused(tmp_path, marker):
    path = tmp_path / "popen.pth"
    torch.save({"x": _Popen(["touch", str(marker)])}, path)
    _refused(path, r"refused global (subprocess|commands)\.Popen \(GLOBAL\)")


def test_a_reduce_payload_in_a_plain_pickle_inside_the_archive_is_refused(tmp_path, marker):
    payload = pickle.dumps({"state_dict": _System(f"touch {marker}")}, protocol=2)
    path = write_archive(tmp_path / "inner.pth", payload)
    _refused(path, r"refused global (posix|os)\.system")


@pytest.mark.parametrize("name, code, pattern", [
    ("BUILD on a list", b"]}b", r"refused BUILD of a list"),
    ("INST", b"(ios\nsystem\n", r"refused opcode INST"),
    ("OBJ", b"(cbuiltins\nlist\no", r"refused global (__builtin__|builtins)\.list"),
    ("NEWOBJ", b"cbuiltins\nobject\n)\x81", r"refused global (__builtin__|builtins)\.object"),
    ("EXT1", b"\x82\x01", r"refused opcode EXT1"),
    ("text persistent id", b"P0\n", r"refused opcode PERSID"),
    ("EMPTY_SET", b"\x8f", r"refused opcode EMPTY_SET"),
    ("REDUCE of a string", b"X\x01\x00\x00\x00a)R", r"refused REDUCE of a str"),
    ("a storage class called", b"ctorch\nFloatStorage\n)R", r"refused a call of torch\.FloatStorage"),
    ("OrderedDict with arguments", b"ccollections\nOrderedDict\n(K\x01tR", r"OrderedDict called with arguments"),
])
def test_opcodes_outside_the_whitelist_are_refused(tmp_path, name, code, pattern):
    path = write_archive(tmp_path / "op.pth", b"\x80\x02" + code + b".")
    _refused(path, pattern)


def test_setitem_on_a_list_and_append_on_a_dict_are_refused(tmp_path):
    setitem = Pickle().op(b"]").str("k").str("v").op(b"s").bytes()
    _refused(write_archive(tmp_path / "a.pth", setitem), r"refused SETITEM on a list \(dicts only\)")
    setitems = Pickle().op(b"]").op(b"(").str("k").str("v").op(b"u").bytes()
    _refused(write_archive(tmp_path / "b.pth", setitems), r"refused SETITEMS on a list")
    append = Pickle().op(b"}").str("v").op(b"a").bytes()
    _refused(write_archive(tmp_path / "c.pth", append), r"refused APPEND on a dict \(lists only\)")
    unhashable = Pickle().op(b"}").op(b"]").str("v").op(b"s").bytes()
    _refused(write_archive(tmp_path / "d.pth", unhashable), r"SETITEM with a key of type list")


def test_stack_and_memo_abuse_is_refused(tmp_path):
    cases = {
        "pop.pth": (b"\x80\x020.", r"POP on an empty stack"),
        "mark.pth": (b"\x80\x02K\x01(0.", r"POP on an empty stack"),
        "get.pth": (b"\x80\x02h\x07.", r"BINGET of memo index 7, which was never stored"),
        "stop.pth": (b"\x80\x02K\x01K\x02.", r"STOP with 2 objects on the stack"),
        "nostop.pth": (b"\x80\x02K\x01", r"not a valid pickle"),
        "tuple.pth": (b"\x80\x02t.", r"TUPLE without a MARK"),
        "proto.pth": (b"\x80\x09N.", r"pickle protocol 9"),
    }
    for name, (data, pattern) in cases.items():
        _refused(write_archive(tmp_path / name, data), pattern)


def test_a_storage_shorter_than_its_tensor_is_refused(tmp_path):
    data = state_dict_pickle({"w": ("0", 100, 0, (10, 10), (10, 1))})
    short = write_archive(tmp_path / "short.pth", data, {"0": np.zeros(10, np.float32).tobytes()})
    _refused(short, r"storage 0 \(FloatStorage of 100 elements\) needs 400 bytes, its member holds 40")
    over = state_dict_pickle({"w": ("0", 10, 0, (10, 10), (10, 1))})
    _refused(write_archive(tmp_path / "over.pth", over, {"0": bytes(40)}),
             r"reaches element 99 of a storage of 10 elements")
    offset = state_dict_pickle({"w": ("0", 10, 5, (6,), (1,))})
    _refused(write_archive(tmp_path / "off.pth", offset, {"0": bytes(40)}), r"reaches element 10 of a storage of 10")
    missing = state_dict_pickle({"w": ("7", 10, 0, (10,), (1,))})
    _refused(write_archive(tmp_path / "missing.pth", missing, {"0": bytes(40)}),
             r"names storage 7, but there is no member 'archive/data/7'")


@pytest.mark.parametrize("offset, size, stride, pattern", [
    (0, (2, 3), (-3, 1), r"negative offset, size or stride"),
    (-1, (3,), (1,), r"negative offset, size or stride"),
    (0, (-2, 3), (3, 1), r"negative offset, size or stride"),
    (0, (2, 3), (3,), r"size and stride differ in length"),
    (0, (2,) * 40, (1,) * 40, r"size and stride differ in length"),
])
def test_negative_strides_offsets_and_bad_shapes_are_refused(tmp_path, offset, size, stride, pattern):
    data = state_dict_pickle({"w": ("0", 6, offset, size, stride)})
    _refused(write_archive(tmp_path / "neg.pth", data, {"0": bytes(24)}), pattern)


def test_a_storage_used_with_two_types_is_refused(tmp_path):
    p = Pickle().op(b"}").op(b"(")
    p.str("a").tensor("0", 4, 0, (4,), (1,), "FloatStorage")
    p.str("b").tensor("0", 2, 0, (2,), (1,), "DoubleStorage")
    _refused(write_archive(tmp_path / "two.pth", p.op(b"u").bytes(), {"0": bytes(16)}),
             r"storage 0 is used with two different types or sizes")


def test_backward_hooks_and_odd_persistent_ids_are_refused(tmp_path):
    hooked = Pickle().glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
    hooked.op(b"(").str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(1).op(b"t").op(b"Q")
    hooked.int(0).tuple(1).tuple(1).op(b"\x89").op(b"}").str("h").int(1).op(b"s").op(b"t").op(b"R")
    _refused(write_archive(tmp_path / "hook.pth", hooked.bytes(), {"0": bytes(4)}), r"a tensor with backward hooks")
    pid = Pickle().tuple("module", "os").op(b"Q").bytes()
    _refused(write_archive(tmp_path / "pid.pth", pid), r"a persistent id that is not \('storage'")
    key = Pickle().op(b"(").str("storage").glob("torch", "FloatStorage").str("../../etc/passwd").str("cpu")
    key = key.int(1).op(b"t").op(b"Q").bytes()
    _refused(write_archive(tmp_path / "key.pth", key), r"a storage key '\.\./\.\./etc/passwd'")


@pytest.mark.parametrize("member", ["../evil", "/etc/evil", "archive/../../evil", "archive\\..\\evil", "C:/evil"])
def test_zip_slip_member_names_are_refused(tmp_path, member):
    data = state_dict_pickle({"w": ("0", 1, 0, (1,), (1,))})
    path = write_archive(tmp_path / "slip.pth", data, {"0": bytes(4)}, extra={member: b"x"})
    _refused(path, r"refused zip member name|outside the archive's folder|under 2 folders")
    assert not (tmp_path.parent / "evil").exists()


def test_a_huge_declared_size_is_refused_before_anything_is_allocated(tmp_path):
    huge = state_dict_pickle({"w": ("0", 10**15, 0, (10**15,), (1,))})
    _refused(write_archive(tmp_path / "huge.pth", huge, {"0": bytes(4)}),
             r"FloatStorage of 1000000000000000 elements\) needs 4000000000000000 bytes, its member holds 4")
    # A central directory that lies about a member's size.
    path = write_archive(tmp_path / "lie.pth", state_dict_pickle({"w": ("0", 1, 0, (1,), (1,))}), {"0": bytes(4)})
    raw = bytearray(path.read_bytes())
    cd = raw.rfind(b"PK\x01\x02" + raw[raw.rfind(b"PK\x01\x02") + 4:raw.rfind(b"PK\x01\x02") + 6])
    entry = raw.find(b"archive/data/0", cd) - 46
    raw[entry + 20:entry + 28] = struct.pack("<II", 2**31, 2**31)  # compressed and uncompressed sizes
    path.write_bytes(bytes(raw))
    with pytest.raises(PthError, match=r"lie\.pth: (zip member 'archive/data/0' claims 2147483648 bytes|"
                                       r"storage 0 .* its member holds 2147483648|not a readable zip)"):
        read_pth(path)


def test_a_zip_bomb_is_refused_without_inflating_it(tmp_path):
    data = state_dict_pickle({"w": ("0", 50 << 20, 0, (50 << 20,), (1,))})
    bomb = bytes(200 << 20)  # 200 MB of zeros deflate to ~200 KB
    path = write_archive(tmp_path / "bomb.pth", data, {"0": bomb}, compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    _refused(path, r"zip member 'archive/data/0' would inflate \d+ bytes to 209715200 \(more than 100x: "
                   r"refused as a zip bomb\)")


def test_a_pickle_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    import cnnkit.io.pth as pth

    monkeypatch.setattr(pth, "MAX_PICKLE_BYTES", 16)
    path = torch_save({"w": np.ones(2, np.float32)}, tmp_path / "w.pth")
    _refused(path, r"zip member '\w+/data\.pkl' is \d+ bytes \(limit 16\)")


def test_a_corrupted_pickle_crc_is_caught(tmp_path):
    path = torch_save({"weight": np.ones(2, np.float32)}, tmp_path / "w.pth")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"weight")
    raw[at] ^= 0x20
    path.write_bytes(bytes(raw))
    _refused(path, r"cannot read zip member 'w/data\.pkl' \(Bad CRC-32")


def test_all_refusals_are_one_error_type(tmp_path):
    assert issubclass(PthError, ValueError)  # CheckpointError: a ValueError, as the rest of cnnkit's file errors
    path = write_archive(tmp_path / "x.pth", Pickle().glob("os", "system").bytes())
    with pytest.raises(PthError):
        load_pth(path)
    buffer = io.BytesIO()
    assert buffer.getvalue() == b""
