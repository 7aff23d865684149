"""Read PyTorch checkpoint files (``torch.save``'s zip format) without unpickling them.

A ``.pth`` file written by ``torch.save`` (PyTorch >= 1.6) is a zip archive::

    <archive>/data.pkl       a pickle of the saved object; each tensor in it is a call
                             torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
                             whose storage is a "persistent id" naming a member below
    <archive>/data/<key>     one raw storage per key (the tensor bytes), stored uncompressed
    <archive>/byteorder      "little" or "big" (absent in old files: little)

Unpickling ``data.pkl`` would run whatever callable the file names (``os.system`` is as
easy to name as ``OrderedDict``), so this module never calls ``pickle.load`` or builds a
``pickle.Unpickler``. It walks the opcodes with ``pickletools.genops`` (which only
decodes) and interprets a small whitelist itself:

- data: protocol/frame/stop, marks, the memo, None/bools/ints/floats/strings/bytes,
  tuples, lists (``APPEND(S)`` on lists only) and dicts (``SETITEM(S)`` on dicts only);
- ``GLOBAL``/``STACK_GLOBAL`` become inert tokens, and only for the names a state_dict
  uses: ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``,
  ``torch._utils._rebuild_parameter``, the ``torch.<Type>Storage`` classes, and
  ``_codecs.encode`` (protocol 2's spelling of ``bytes``: only ``(text, "latin1")``);
- ``REDUCE`` is interpreted for those tokens only (nothing is ever called), ``BUILD``
  only to attach the ``_metadata`` of an OrderedDict (ignored), ``BINPERSID`` only for
  ``('storage', <storage token>, key, location, numel)``.

Any other opcode or global ends the walk with ``PthError`` naming the file, the opcode
or global and its position. Each tensor becomes a NumPy view of its storage after its
dtype, offset, shape and strides have been checked against the storage's size (negative
strides or offsets, and views past the end, are refused). Uncompressed storages are
memory-mapped copy-on-write (the file is never written; pages are read on first use);
compressed members are inflated with a size limit.

``read_pth(path)`` returns the saved object (dicts, lists, tuples, scalars, arrays);
``load_pth(path)`` returns the state_dict in it, unwrapping ``{"state_dict": ...}``,
``{"model": ...}`` and the ``module.`` prefix of ``nn.DataParallel``.
"""

from __future__ import annotations

import mmap
import os
import pickletools
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PthError

__all__ = ["PthError", "read_pth", "load_pth", "unwrap_state_dict", "is_torch_zip"]


# Limits. A state_dict's pickle is small (ResNet-50: 30 KB; 10,000 tensors: ~2 MB).
MAX_PICKLE_BYTES = 64 << 20
MAX_MEMBERS = 1_000_000
MAX_NDIM = 32
MAX_INFLATE_RATIO = 100  # a deflated member claiming more than this is treated as a zip bomb

# torch's storage classes -> the NumPy dtype of their elements (bfloat16 is widened to
# float32 when read: NumPy has no bfloat16).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # protocol 2, LONG1 0x1950a86a20f9469cfc6c
_RESAVE = (
    "re-save it with a current PyTorch: "
    "torch.save(torch.load(old, weights_only=True), new) writes the zip format cnnkit reads"
)
_MEMBER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


# ----------------------------------------------------------------------------- tokens
class _Global:
    """An allowed global, as an inert token: a name, never the object it names."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


class _StorageRef:
    """A persistent id ('storage', type, key, location, numel): a member to read later."""

    __slots__ = ("dtype", "type_name", "key", "numel")

    def __init__(self, type_name: str, key: str, numel: int):
        self.type_name, self.key, self.numel = type_name, key, numel
        self.dtype = _STORAGE_DTYPES[type_name]


def _allowed_global(module: str, name: str) -> _Global | None:
    if (module, name) in (
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("_codecs", "encode"),  # protocol 2 pickles bytes as _codecs.encode(text, "latin1")
    ):
        return _Global(module, name)
    if module == "torch" and name in _STORAGE_DTYPES:
        return _Global(module, name)
    return None


def _is_key(value: Any) -> bool:
    """Dict keys we accept: scalars, or flat tuples of scalars (hashable, shallow)."""
    scalar = (str, int, float, bool, bytes, type(None))
    if isinstance(value, scalar):
        return True
    return isinstance(value, tuple) and all(isinstance(v, scalar) for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------- the opcode walker
class _Walker:
    """Interpret a whitelist of pickle opcodes; build plain data, tokens and tensor views."""

    def __init__(self, path: Path, archive: _Archive):
        self.path, self.archive = path, archive
        self.ordered_dicts: set[int] = set()  # ids of dicts made by OrderedDict()

    def refuse(self, pos: int, what: str) -> PthError:
        return PthError(f"{self.path}: refused {what} at byte {pos} of data.pkl; {self._hint}")

    _hint = (
        "cnnkit reads only state_dicts (tensors in dicts, lists and tuples of plain values), "
        "and never runs code from a file. Save the weights alone with "
        "torch.save(model.state_dict(), path)"
    )

    def run(self, data: bytes) -> Any:
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}

        def pop(pos: int, op: str) -> Any:
            # As in pickle, what lies below the innermost MARK is out of reach.
            if len(stack) <= (marks[-1] if marks else 0):
                raise self.refuse(pos, f"{op} on an empty stack")
            return stack.pop()

        def pop_mark(pos: int, op: str) -> list[Any]:
            if not marks:
                raise self.refuse(pos, f"{op} without a MARK")
            start = marks.pop()
            items = stack[start:]
            del stack[start:]
            return items

        try:
            with warnings.catch_warnings():
                # pickletools decodes STRING escapes with codecs.escape_decode, which warns on
                # odd escapes; under -W error that warning would escape as an exception.
                warnings.simplefilter("ignore", DeprecationWarning)
                ops = list(pickletools.genops(data))
            for opcode, arg, pos in ops:
                pos = pos or 0
                name = opcode.name
                if name in ("PROTO", "FRAME"):
                    if name == "PROTO" and not (isinstance(arg, int) and 2 <= arg <= 5):
                        raise self.refuse(pos, f"pickle protocol {arg!r}")
                elif name == "STOP":
                    if marks or len(stack) != 1:
                        raise self.refuse(pos, f"STOP with {len(stack)} objects on the stack")
                    return stack[0]
                elif name == "MARK":
                    marks.append(len(stack))
                elif name == "POP":
                    pop(pos, name)
                elif name == "POP_MARK":
                    pop_mark(pos, name)
                elif name == "DUP":
                    top = pop(pos, name)
                    stack.extend((top, top))
                elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise self.refuse(pos, f"{name} on an empty stack")
                    index = len(memo) if name == "MEMOIZE" else arg
                    if not _is_int(index) or index < 0:
                        raise self.refuse(pos, f"{name} with memo index {index!r}")
                    memo[index] = stack[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    if arg not in memo:
                        raise self.refuse(pos, f"{name} of memo index {arg!r}, which was never stored")
                    stack.append(memo[arg])
                elif name == "NONE":
                    stack.append(None)
                elif name in ("NEWTRUE", "NEWFALSE"):
                    stack.append(name == "NEWTRUE")
                elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
                    stack.append(arg)  # INT decodes "01"/"00" to True/False itself
                elif name in ("BINFLOAT", "FLOAT"):
                    stack.append(float(arg))
                elif name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE"):
                    stack.append(str(arg))
                elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                    # Python 2 str: text when it is ASCII (what Python 3's pickle does by default).
                    raw = arg.encode("latin-1") if isinstance(arg, str) else bytes(arg)
                    try:
                        stack.append(raw.decode("ascii"))
                    except UnicodeDecodeError:
                        raise self.refuse(pos, f"{name} with non-ASCII bytes") from None
                elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
                    stack.append(bytes(arg))
                elif name == "EMPTY_TUPLE":
                    stack.append(())
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    n = int(name[-1])
                    items = [pop(pos, name) for _ in range(n)][::-1]
                    stack.append(tuple(items))
                elif name == "TUPLE":
                    stack.append(tuple(pop_mark(pos, name)))
                elif name == "EMPTY_LIST":
                    stack.append([])
                elif name == "LIST":
                    stack.append(list(pop_mark(pos, name)))
                elif name == "EMPTY_DICT":
                    stack.append({})
                elif name == "DICT":
                    items = pop_mark(pos, name)
                    stack.append(self._dict_from(pos, name, {}, items))
                elif name == "APPEND":
                    value = pop(pos, name)
                    target = pop(pos, name)
                    if type(target) is not list:
                        raise self.refuse(pos, f"APPEND on a {type(target).__name__} (lists only)")
                    target.append(value)
                    stack.append(target)
                elif name == "APPENDS":
                    items = pop_mark(pos, name)
                    target = pop(pos, name)
                    if type(target) is not list:
                        raise self.refuse(pos, f"APPENDS on a {type(target).__name__} (lists only)")
                    target.extend(items)
                    stack.append(target)
                elif name == "SETITEM":
                    value = pop(pos, name)
                    key = pop(pos, name)
                    target = pop(pos, name)
                    stack.append(self._dict_from(pos, name, target, [key, value]))
                elif name == "SETITEMS":
                    items = pop_mark(pos, name)
                    target = pop(pos, name)
                    stack.append(self._dict_from(pos, name, target, items))
                elif name in ("GLOBAL", "STACK_GLOBAL"):
                    if name == "GLOBAL":
                        module, _, attr = str(arg).partition(" ")
                    else:
                        attr = pop(pos, name)
                        module = pop(pos, name)
                        if not (isinstance(module, str) and isinstance(attr, str)):
                            raise self.refuse(pos, "STACK_GLOBAL whose names are not strings")
                    token = _allowed_global(module, attr)
                    if token is None:
                        raise self.refuse(pos, f"global {module}.{attr} ({name})")
                    stack.append(token)
                elif name == "REDUCE":
                    args = pop(pos, name)
                    func = pop(pos, name)
                    stack.append(self._reduce(pos, func, args))
                elif name == "BUILD":
                    state = pop(pos, name)
                    target = pop(pos, name)
                    if id(target) not in self.ordered_dicts or not isinstance(state, dict):
                        raise self.refuse(
                            pos, f"BUILD of a {type(target).__name__} (only an OrderedDict's _metadata)"
                        )
                    stack.append(target)  # the state (the state_dict's _metadata) is not needed
                elif name == "BINPERSID":
                    stack.append(self._storage(pos, pop(pos, name)))
                else:
                    raise self.refuse(pos, f"opcode {name}")
        except PthError:
            raise
        except (ValueError, OverflowError, MemoryError) as e:  # genops: truncated or malformed data
            raise PthError(f"{self.path}: data.pkl is not a valid pickle ({e})") from None
        raise PthError(f"{self.path}: data.pkl ends without a STOP opcode")

    def _dict_from(self, pos: int, op: str, target: Any, items: list[Any]) -> dict:
        if type(target) is not dict:
            raise self.refuse(pos, f"{op} on a {type(target).__name__} (dicts only)")
        if len(items) % 2:
            raise self.refuse(pos, f"{op} with an odd number of items")
        for key, value in zip(items[::2], items[1::2]):
            if not _is_key(key):
                raise self.refuse(pos, f"{op} with a key of type {type(key).__name__}")
            target[key] = value
        return target

    def _storage(self, pos: int, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise self.refuse(pos, "a persistent id that is not ('storage', type, key, location, numel)")
        _, kind, key, location, numel = pid
        if not (isinstance(kind, _Global) and kind.module == "torch" and kind.name in _STORAGE_DTYPES):
            raise self.refuse(pos, f"a persistent id with storage type {kind!r}")
        if not (isinstance(key, str) and _MEMBER_NAME.fullmatch(key) and ".." not in key):
            raise self.refuse(pos, f"a storage key {key!r}")
        if not isinstance(location, str) or not _is_int(numel) or numel < 0:
            raise self.refuse(pos, f"a storage with location {location!r} and size {numel!r}")
        return _StorageRef(kind.name, key, numel)

    def _reduce(self, pos: int, func: Any, args: Any) -> Any:
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise self.refuse(pos, f"REDUCE of a {type(func).__name__}")
        target = f"{func.module}.{func.name}"
        if target == "collections.OrderedDict":
            if args != ():
                raise self.refuse(pos, "OrderedDict called with arguments")
            result: dict = {}
            self.ordered_dicts.add(id(result))
            return result
        if target == "_codecs.encode":
            if len(args) != 2 or not isinstance(args[0], str) or args[1] != "latin1":
                raise self.refuse(pos, "_codecs.encode other than (text, 'latin1')")
            try:
                return args[0].encode("latin-1")
            except UnicodeEncodeError:
                raise self.refuse(pos, "_codecs.encode of non-latin-1 text") from None
        if target == "torch._utils._rebuild_tensor_v2":
            if len(args) not in (6, 7):
                raise self.refuse(pos, f"_rebuild_tensor_v2 with {len(args)} arguments")
            storage, offset, size, stride, requires_grad, hooks = args[:6]
            if not isinstance(requires_grad, bool) or not (isinstance(hooks, dict) and not hooks):
                raise self.refuse(pos, "a tensor with backward hooks")
            if len(args) == 7 and not isinstance(args[6], dict):
                raise self.refuse(pos, "a tensor whose metadata is not a dict")
            return self._tensor(pos, storage, offset, size, stride)
        if target == "torch._utils._rebuild_parameter":
            if len(args) != 3 or not isinstance(args[0], np.ndarray):
                raise self.refuse(pos, "_rebuild_parameter without a tensor")
            if not (isinstance(args[2], dict) and not args[2]):
                raise self.refuse(pos, "a parameter with backward hooks")
            return args[0]
        raise self.refuse(pos, f"a call of {target}")  # storage classes are never called

    def _tensor(self, pos: int, storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
        if not isinstance(storage, _StorageRef):
            raise self.refuse(pos, "a tensor without a storage")
        if not (_is_int(offset) and isinstance(size, tuple) and isinstance(stride, tuple)
                and all(_is_int(s) for s in size) and all(_is_int(s) for s in stride)):
            raise self.refuse(pos, "a tensor whose offset, size or stride is not made of integers")
        where = f"tensor (storage {storage.key}, size {size}, stride {stride}, offset {offset})"
        if len(size) != len(stride) or len(size) > MAX_NDIM:
            raise self.refuse(pos, f"{where}: size and stride differ in length")
        if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise self.refuse(pos, f"{where}: negative offset, size or stride")
        numel = 1
        for s in size:
            numel *= s
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= storage.numel:
                raise self.refuse(
                    pos, f"{where}: reaches element {last} of a storage of {storage.numel} elements"
                )
        elif offset > storage.numel:
            raise self.refuse(pos, f"{where}: offset past the storage's {storage.numel} elements")
        flat = self.archive.storage(storage)  # (numel,) in the storage's dtype
        itemsize = flat.dtype.itemsize
        if _is_c_contiguous(size, stride):
            view = flat[offset : offset + numel].reshape(size)
        else:
            view = np.lib.stride_tricks.as_strided(
                flat[offset:], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False
            )
        if storage.type_name == "BFloat16Storage":
            view = _bfloat16_to_float32(view)
        return view


def _is_c_contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(size), reversed(stride)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 (the top 16 bits of a float32) to float32 exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


# ------------------------------------------------------------------------ the archive
class _Archive:
    """A torch.save zip archive: checked member names, storages read or memory-mapped."""

    def __init__(self, path: Path, *, use_mmap: bool):
        self.path, self.use_mmap = path, use_mmap
        self.size = path.stat().st_size
        self.file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.map: mmap.mmap | None = None
        self.storages: dict[str, np.ndarray] = {}
        try:
            self.zip = zipfile.ZipFile(self.file)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError,
                UnicodeDecodeError, OverflowError, KeyError, IndexError) as e:
            self.file.close()
            raise PthError(f"{path}: not a readable zip archive ({e})") from None
        try:
            self._index(infos)
        except BaseException:
            self.file.close()
            raise

    def _index(self, infos: list[zipfile.ZipInfo]) -> None:
        if len(infos) > MAX_MEMBERS:
            raise PthError(f"{self.path}: {len(infos)} zip members (at most {MAX_MEMBERS})")
        self.members: dict[str, zipfile.ZipInfo] = {}
        prefixes = set()
        for info in infos:
            name = info.filename
            parts = name.split("/")
            if (name.startswith(("/", "\\")) or "\\" in name or "\x00" in name or ":" in parts[0]
                    or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", "..")):
                raise PthError(f"{self.path}: refused zip member name {name!r} (absolute or leaves the archive)")
            if len(parts) < 2:
                raise PthError(f"{self.path}: zip member {name!r} is outside the archive's folder")
            prefixes.add(parts[0])
            if name in self.members:
                raise PthError(f"{self.path}: zip member {name!r} appears twice")
            self.members[name] = info
        if len(prefixes) != 1:
            raise PthError(
                f"{self.path}: not a torch.save archive (its members are under {len(prefixes)} folders, "
                "expected one)"
            )
        self.prefix = prefixes.pop()
        if f"{self.prefix}/constants.pkl" in self.members or any(
            n.startswith(f"{self.prefix}/code/") for n in self.members
        ):
            raise PthError(
                f"{self.path}: a TorchScript archive (torch.jit.save), which holds a program, not "
                "weights; in PyTorch, save torch.jit.load(path).state_dict() with torch.save"
            )
        if f"{self.prefix}/data.pkl" not in self.members:
            raise PthError(f"{self.path}: not a torch.save archive (no {self.prefix}/data.pkl)")
        order = self._read_small("byteorder", 16) if f"{self.prefix}/byteorder" in self.members else b"little"
        if order not in (b"little", b"big"):
            raise PthError(f"{self.path}: byteorder record is {order[:16]!r}, expected 'little' or 'big'")
        self.big_endian = order == b"big"

    # -- members
    def _check_member(self, info: zipfile.ZipInfo) -> None:
        if info.flag_bits & 0x1:
            raise PthError(f"{self.path}: zip member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PthError(
                f"{self.path}: zip member {info.filename!r} uses compression method "
                f"{info.compress_type} (torch.save stores members uncompressed)"
            )
        if info.compress_size > self.size or info.header_offset + info.compress_size > self.size:
            raise PthError(
                f"{self.path}: zip member {info.filename!r} claims {info.compress_size} bytes at offset "
                f"{info.header_offset}, past the end of the {self.size}-byte file (truncated?)"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise PthError(f"{self.path}: zip member {info.filename!r} has inconsistent sizes")
        if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > MAX_INFLATE_RATIO * max(
            info.compress_size, 1 << 10
        ):
            raise PthError(
                f"{self.path}: zip member {info.filename!r} would inflate {info.compress_size} bytes to "
                f"{info.file_size} (more than {MAX_INFLATE_RATIO}x: refused as a zip bomb)"
            )

    def _read(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        self._check_member(info)
        if info.file_size > limit:
            raise PthError(f"{self.path}: zip member {info.filename!r} is {info.file_size} bytes (limit {limit})")
        try:
            with self.zip.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError,
                RuntimeError, zlib.error, UnicodeDecodeError, OverflowError) as e:
            raise PthError(f"{self.path}: cannot read zip member {info.filename!r} ({e})") from None
        if len(data) != info.file_size:
            raise PthError(
                f"{self.path}: zip member {info.filename!r} holds {len(data)} bytes, its header says "
                f"{info.file_size}"
            )
        return data

    def _read_small(self, record: str, limit: int) -> bytes:
        return self._read(self.members[f"{self.prefix}/{record}"], limit).strip()

    def pickle_bytes(self) -> bytes:
        return self._read(self.members[f"{self.prefix}/data.pkl"], MAX_PICKLE_BYTES)

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where a stored member's bytes start: after its local header, name and extra field."""
        self.file.seek(info.header_offset)
        header = self.file.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise PthError(f"{self.path}: zip member {info.filename!r} has no valid local header")
        method, name_len, extra_len = struct.unpack("<8xH16xHH", header)
        if method != info.compress_type:
            raise PthError(f"{self.path}: zip member {info.filename!r}: local and central headers disagree")
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.compress_size > self.size:
            raise PthError(
                f"{self.path}: zip member {info.filename!r} ends at byte {start + info.compress_size}, "
                f"past the end of the {self.size}-byte file (truncated?)"
            )
        return start

    def storage(self, ref: _StorageRef) -> np.ndarray:
        """The storage ``ref`` names, as a 1-D array of ``ref.numel`` elements (read once)."""
        cached = self.storages.get(ref.key)
        if cached is not None:
            if cached.dtype.itemsize != ref.dtype.itemsize or cached.dtype.kind != ref.dtype.kind \
                    or cached.size != ref.numel:
                raise PthError(f"{self.path}: storage {ref.key} is used with two different types or sizes")
            return cached
        name = f"{self.prefix}/data/{ref.key}"
        info = self.members.get(name)
        if info is None:
            raise PthError(f"{self.path}: the pickle names storage {ref.key}, but there is no member {name!r}")
        nbytes = ref.numel * ref.dtype.itemsize
        if info.file_size != nbytes:
            raise PthError(
                f"{self.path}: storage {ref.key} ({ref.type_name} of {ref.numel} elements) needs {nbytes} "
                f"bytes, its member holds {info.file_size}"
            )
        self._check_member(info)
        dtype = ref.dtype.newbyteorder(">") if self.big_endian else ref.dtype
        if info.compress_type == zipfile.ZIP_STORED and self.use_mmap and nbytes > 0:
            start = self._data_offset(info)
            if self.map is None:
                self.map = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_COPY)
            flat = np.frombuffer(self.map, dtype=dtype, count=ref.numel, offset=start)
        else:
            if info.compress_type == zipfile.ZIP_STORED:
                start = self._data_offset(info)
                self.file.seek(start)
                raw = bytearray(nbytes)  # read straight into it: no second copy
                if self.file.readinto(raw) != nbytes:
                    raise PthError(f"{self.path}: storage {ref.key} is truncated")
            else:
                raw = bytearray(self._read(info, nbytes))
            flat = np.frombuffer(raw, dtype=dtype, count=ref.numel)
        if self.big_endian and dtype.itemsize > 1:
            flat = flat.astype(ref.dtype)  # to little-endian (a copy)
        self.storages[ref.key] = flat
        return flat

    def close(self) -> None:
        # The mmap stays alive as long as arrays refer to it; closing the file is safe.
        self.zip.close()
        self.file.close()


# ------------------------------------------------------------------------- public API
def is_torch_zip(path: str | os.PathLike) -> bool:
    """Return True when ``path`` starts like a zip archive (torch.save's format since 1.6)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _refuse_other_formats(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == b"PK\x03\x04":
        return
    if head.startswith(_LEGACY_MAGIC):
        raise PthError(f"{path}: a legacy PyTorch file (written before PyTorch 1.6, or with "
                       f"_use_new_zipfile_serialization=False); {_RESAVE}")
    if len(head) >= 262 and head[257:262] == b"ustar":  # the tar header's magic
        raise PthError(f"{path}: a legacy tar-format PyTorch file (PyTorch before 0.4); {_RESAVE}")
    if head[:1] == b"\x80":
        raise PthError(f"{path}: a raw pickle, not a torch.save archive; cnnkit never unpickles files. {_RESAVE}")
    if len(head) == 0:
        raise PthError(f"{path}: empty file")
    raise PthError(f"{path}: not a PyTorch checkpoint (no zip signature at the start)")


def read_pth(path: str | os.PathLike, *, mmap: bool = True) -> Any:
    """Read the object saved by ``torch.save`` in ``path``, without unpickling it.

    Args:
        path: a file written by ``torch.save`` (PyTorch >= 1.6's zip format).
        mmap: memory-map uncompressed storages (copy-on-write: arrays are writable and the
            file is never modified). False reads them into memory.

    Returns:
        The saved object rebuilt from dicts, lists, tuples, str/int/float/bool/bytes/None
        and NumPy arrays (one per tensor, a view of its storage; bfloat16 is widened to
        float32).

    Raises:
        PthError: the file is not a torch.save archive, is corrupt or truncated, or its
            pickle uses anything outside the whitelist (the message names it).
    """
    path = Path(path)
    try:
        _refuse_other_formats(path)
    except FileNotFoundError:
        raise PthError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PthError(f"{path}: is a folder, not a file") from None
    except PermissionError:
        raise PthError(f"{path}: permission denied") from None
    archive = _Archive(path, use_mmap=mmap)
    try:
        return _Walker(path, archive).run(archive.pickle_bytes())
    finally:
        archive.close()


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, source: str = "the file") -> dict[str, np.ndarray]:
    """Find the state_dict in a saved object: the dict itself, or one under a wrapper key.

    Wrapper keys tried, in order, up to two levels deep: ``state_dict``,
    ``model_state_dict``, ``model``, ``module``, ``net``, ``network``, ``weights``. A
    ``module.`` prefix on every key (``nn.DataParallel``) is removed.

    Raises:
        PthError: no dict of names to arrays was found (the message lists the top-level keys).
    """
    candidates = [obj]
    for _ in range(2):
        current = candidates[-1]
        if _is_state_dict(current) or not isinstance(current, dict):
            break
        inner = next((current[k] for k in _WRAPPER_KEYS if k in current and isinstance(current[k], dict)), None)
        if inner is None:
            break
        candidates.append(inner)
    found = candidates[-1]
    if not _is_state_dict(found):
        if isinstance(obj, dict):
            keys = ", ".join(repr(k) for k in list(obj)[:12])
            more = "" if len(obj) <= 12 else f" and {len(obj) - 12} more"
            raise PthError(
                f"{source}: no state_dict found (top-level keys: {keys}{more}); expected a dict of "
                f"tensors, or one under {', '.join(map(repr, _WRAPPER_KEYS))}"
            )
        raise PthError(f"{source}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    if all(k.startswith("module.") for k in found):
        found = {k[len("module."):]: v for k, v in found.items()}
    return dict(found)


def load_pth(path: str | os.PathLike, *, mmap: bool = True) -> dict[str, np.ndarray]:
    """Read the state_dict saved in a PyTorch file (see ``read_pth`` and ``unwrap_state_dict``).

    Returns:
        ``{name: array}`` with the names as saved (a DataParallel ``module.`` prefix removed).

    Raises:
        PthError: as ``read_pth``, or the file holds no state_dict.
    """
    return unwrap_state_dict(read_pth(path, mmap=mmap), str(path))
