"""Read an ONNX file safely: check everything it declares before believing any of it.

An ONNX file is a protobuf message: parsing it runs no code from the file, and nothing
in it is ever evaluated or unpickled here. What can still go wrong is a file that lies
or breaks, and each case gets one clear error (``OnnxFileError``) naming the file:

- not ONNX at all (an image, a PyTorch ``.pth`` zip, a cnnkit ``.safetensors`` checkpoint);
- truncated: a protobuf field that declares more bytes than the file has left;
- a tensor whose bytes do not match its shape and type;
- external data (weights in side files) that is missing, too short, or whose location
  points outside the model's folder (``../``, an absolute path);
- a model larger than the memory available (the file itself, or what its tensors
  declare, checked before anything is read), or than protobuf's 2 GiB message limit;
- a graph whose nodes read values nothing produces, or that form a cycle (checked by
  ``graph.topological_nodes``), and anything else ``onnx.checker`` rejects.
"""

from __future__ import annotations

import heapq
import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from ..errors import OnnxFileError

__all__ = [
    "read_model", "check_model", "skeleton", "tensor_array", "topological_nodes", "available_memory",
    "tensor_nbytes", "PROTOBUF_LIMIT",
]

PROTOBUF_LIMIT = 2**31 - 1  # protobuf refuses messages of 2 GiB or more


def available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _check_memory(source: str, needed: int, what: str) -> None:
    free = available_memory()
    if free is not None and needed > free:
        raise OnnxFileError(
            f"{source}: {what} {_gib(needed)}, more than the {_gib(free)} of memory available; "
            "cnnkit holds a model's weights in memory"
        )


# --------------------------------------------------------------------------- parsing
_HINTS = (
    (b"PK\x03\x04", "it is a zip archive (a PyTorch .pth checkpoint? see `cnnkit import`)"),
    (b"\x89PNG", "it is a PNG image"),
    (b"\xff\xd8\xff", "it is a JPEG image"),
)


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            return None
    return None


def _truncation(data: bytes) -> str | None:
    """Walk the top-level protobuf fields; say where one runs past the end of the file."""
    pos = 0
    while pos < len(data):
        tag = _varint(data, pos)
        if tag is None:
            return None
        key, pos = tag
        field, wire = key >> 3, key & 7
        if field == 0 or wire not in (0, 1, 2, 5):
            return None  # not protobuf framing at all
        if wire == 0:
            step = _varint(data, pos)
            if step is None:
                return f"a field ends in the middle of a number at byte {pos}"
            pos = step[1]
            continue
        if wire == 2:
            size = _varint(data, pos)
            if size is None:
                return f"a field's length is cut off at byte {pos}"
            length, pos = size
        else:
            length = 8 if wire == 1 else 4
        if pos + length > len(data):
            return (f"field {field} declares {length} bytes at byte {pos} but only "
                    f"{len(data) - pos} remain")
        pos += length
    return None


def _parse(data: bytes, source: str) -> onnx.ModelProto:
    for magic, hint in _HINTS:
        if data.startswith(magic):
            raise OnnxFileError(f"{source} is not an ONNX model: {hint}")
    if len(data) > 8 and data[8:10] == b'{"':
        raise OnnxFileError(f"{source} is not an ONNX model: it is a safetensors file (a cnnkit "
                            "checkpoint? load it with cnnkit.load)")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:  # protobuf's DecodeError (its class differs between backends)
        cut = _truncation(data)
        if cut is not None:
            raise OnnxFileError(f"{source} is a truncated ONNX file: {cut}") from None
        raise OnnxFileError(f"{source} is not an ONNX model (protobuf cannot parse it: {error})") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        cut = _truncation(data)
        if cut is not None:
            raise OnnxFileError(f"{source} is a truncated ONNX file: {cut}")
        raise OnnxFileError(
            f"{source} is not an ONNX model: it has no {'graph' if not model.HasField('graph') else 'ir_version'}"
        )
    if not model.opset_import:
        raise OnnxFileError(f"{source} is not a complete ONNX model: it has no opset_import (truncated?)")
    return model


# --------------------------------------------------------------------------- tensors
_FIELD_COUNT = {  # typed fields: elements stored per tensor element
    "float_data": 1, "int32_data": 1, "int64_data": 1, "double_data": 1, "uint64_data": 1,
}


def tensor_nbytes(t: TensorProto, source: str) -> int:
    """Bytes the tensor's shape and type declare (the in-memory size of its values)."""
    if any(d < 0 for d in t.dims):
        raise OnnxFileError(f"{source}: tensor {t.name!r} has a negative dimension {list(t.dims)}")
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        raise OnnxFileError(f"{source}: tensor {t.name!r} has an unknown element type {t.data_type}") from None
    return math.prod(t.dims) * itemsize


def _check_inline(t: TensorProto, source: str, where: str) -> None:
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return
    n = math.prod(t.dims)
    nbytes = tensor_nbytes(t, source)
    if t.HasField("raw_data"):
        if len(t.raw_data) != nbytes and not _sub_byte(t):
            raise OnnxFileError(
                f"{source}: {where} {t.name!r} of shape {list(t.dims)} and type "
                f"{TensorProto.DataType.Name(t.data_type)} needs {nbytes} bytes but holds "
                f"{len(t.raw_data)}"
            )
        return
    field = helper.tensor_dtype_to_field(t.data_type) if t.data_type else None
    if field in _FIELD_COUNT and not _sub_byte(t):
        count = len(getattr(t, field))
        expected = n * (2 if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else 1)
        if count != expected:
            raise OnnxFileError(
                f"{source}: {where} {t.name!r} of shape {list(t.dims)} needs {expected} values but "
                f"holds {count}"
            )


def tensor_array(t: TensorProto, source: str, where: str = "initializer") -> np.ndarray:
    """The values of a stored tensor as a writable array, after checking their size.

    The bytes of ``raw_data`` are read once (protobuf hands out a copy at each access).

    Raises:
        OnnxFileError: the tensor's bytes do not match its shape and type.
    """
    if t.HasField("raw_data") and not _sub_byte(t):
        raw = t.raw_data
        nbytes = tensor_nbytes(t, source)
        if len(raw) != nbytes:
            raise OnnxFileError(
                f"{source}: {where} {t.name!r} of shape {list(t.dims)} and type "
                f"{TensorProto.DataType.Name(t.data_type)} needs {nbytes} bytes but holds {len(raw)}"
            )
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
        if dtype.isbuiltin == 1:  # ONNX stores little-endian; astype gives a native, writable copy
            return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(tuple(t.dims)).astype(dtype)
    else:
        _check_inline(t, source, where)
    try:
        return numpy_helper.to_array(t).copy()
    except Exception as error:
        raise OnnxFileError(f"{source}: {where} {t.name!r} cannot be read: {error}") from None


def _sub_byte(t: TensorProto) -> bool:
    """Types packed several to a byte (4-bit, 2-bit): their byte count is not itemsize * n."""
    return t.data_type in {
        getattr(TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
        if hasattr(TensorProto, name)
    }


def _external_file(t: TensorProto, base: Path, source: str) -> tuple[Path, int, int]:
    info = ExternalDataInfo(t)
    location = info.location
    if not location or os.path.isabs(location) or Path(location).drive:
        raise OnnxFileError(f"{source}: tensor {t.name!r} has external data at {location!r}; "
                            "a location must be a path relative to the model's folder")
    folder = base.resolve()
    path = (folder / location).resolve()
    if folder not in path.parents:
        raise OnnxFileError(f"{source}: tensor {t.name!r} has external data at {location!r}, "
                            "outside the model's folder")
    if not path.is_file():
        raise OnnxFileError(f"{source}: the external data file {location!r} of tensor {t.name!r} "
                            f"is missing (expected at {path})")
    nbytes = tensor_nbytes(t, source)
    offset = int(info.offset or 0)
    length = int(info.length) if info.length is not None and info.length != "" else nbytes
    if length != nbytes:
        raise OnnxFileError(
            f"{source}: tensor {t.name!r} of shape {list(t.dims)} needs {nbytes} bytes but its "
            f"external data declares {length}"
        )
    size = path.stat().st_size
    if offset + length > size:
        raise OnnxFileError(
            f"{source}: the external data file {location!r} has {size} bytes; tensor {t.name!r} "
            f"needs bytes {offset} to {offset + length}"
        )
    return path, offset, length


def _graph_tensors(graph: onnx.GraphProto):
    """Every tensor stored in a graph: initializers and Constant values, in subgraphs too."""
    for t in graph.initializer:
        yield t, "initializer"
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t, f"constant of node {node.name!r}"
            elif a.type == onnx.AttributeProto.TENSORS:
                for t in a.tensors:
                    yield t, f"tensor attribute of node {node.name!r}"
            elif a.type == onnx.AttributeProto.GRAPH:
                yield from _graph_tensors(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _graph_tensors(g)


_EAGER_CHECK = 2**16  # elements: tensors up to this size are checked before the graph is
_SHAPE_TYPES = (TensorProto.INT64, TensorProto.INT32)  # and every integer tensor (shapes, axes)


def _load_tensors(model: onnx.ModelProto, base: Path | None, source: str) -> None:
    """Check every tensor's size, then read external data into it (in place)."""
    external, total = [], 0
    for t, where in _graph_tensors(model.graph):
        if uses_external_data(t):
            if base is None:
                raise OnnxFileError(f"{source}: tensor {t.name!r} has external data; load the model "
                                    "from its file so the data can be found")
            external.append((t, _external_file(t, base, source)))
            total += tensor_nbytes(t, source)
        elif where != "initializer" or math.prod(t.dims) <= _EAGER_CHECK or t.data_type in _SHAPE_TYPES:
            _check_inline(t, source, where)  # large weights are checked as they are read (tensor_array)
    if total:
        _check_memory(source, total, "the external weights need")
    for t, (path, offset, length) in external:
        with open(path, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


def skeleton(model: onnx.ModelProto, keep_elements: int = 16) -> onnx.ModelProto:
    """A copy of ``model`` without its large weights, for the checker and shape inference.

    Each initializer over ``keep_elements`` elements that is not an integer tensor (shapes,
    axes) becomes a graph input of the same type and shape: inference and the checker
    need a weight's type and shape, not its values, and serializing gigabytes of weights
    for them would cost seconds.
    """
    light = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(light, field, getattr(model, field))
    light.opset_import.extend(model.opset_import)
    graph, source = light.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    listed = {i.name for i in source.input}
    for t in source.initializer:
        if t.data_type in (TensorProto.INT64, TensorProto.INT32) or math.prod(t.dims) <= keep_elements:
            graph.initializer.append(t)
        elif t.name not in listed:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


# --------------------------------------------------------------------------- the graph
def topological_nodes(graph: onnx.GraphProto, source: str) -> list[onnx.NodeProto]:
    """The nodes in an order where each runs after the nodes it reads from (file order kept
    where possible).

    Raises:
        OnnxFileError: a node reads a value nothing provides, two nodes write one value, or
            the nodes form a cycle (the message names them).
    """
    provided = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.output:
            if not name:
                continue
            if name in producer or name in provided:
                first = graph.node[producer[name]].name if name in producer else "a graph input"
                raise OnnxFileError(f"{source}: value {name!r} is written twice (by {first!r} and "
                                    f"node {node.name!r}); ONNX values are written once")
            producer[name] = i
    waiting = []  # per node: how many producing nodes it still waits for
    readers: dict[int, list[int]] = {}
    depends: list[set[int]] = []  # per node: the nodes it reads from
    for i, node in enumerate(graph.node):
        deps = set()
        for name in node.input:
            if name in provided:
                continue
            if name not in producer:
                raise OnnxFileError(
                    f"{source}: node {node.name!r} ({node.op_type}) reads {name!r}, which no node, "
                    "graph input or initializer provides"
                )
            deps.add(producer[name])
        waiting.append(len(deps))
        depends.append(deps)
        for d in deps:
            readers.setdefault(d, []).append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(graph.node[i])
        for r in readers.get(i, ()):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) < len(graph.node):
        raise OnnxFileError(f"{source}: the graph has a cycle: {_cycle(graph, waiting, depends)}")
    return order


def _cycle(graph: onnx.GraphProto, waiting: list[int], depends: list[set[int]]) -> str:
    """One cycle among the nodes still waiting, as "'a' -> 'b' -> 'a'" (node names)."""
    stuck = {i for i, n in enumerate(waiting) if n > 0}
    # Every stuck node waits for a stuck node, so walking back from any one must repeat.
    path, seen, i = [], {}, min(stuck)
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = min(d for d in depends[i] if d in stuck)
    loop = path[seen[i]:][::-1]  # in data-flow order
    k = loop.index(min(loop))
    loop = loop[k:] + loop[:k]  # starting from the node first in the file
    names = [repr(graph.node[j].name or f"{graph.node[j].op_type} #{j}") for j in loop]
    return f"node {' -> '.join(names + names[:1])} (each reads the one before)"


# --------------------------------------------------------------------------- entry points
def check_model(model: onnx.ModelProto, source: str, base: Path | None = None) -> onnx.ModelProto:
    """Check (and complete with external data from ``base``) a parsed model, in place."""
    if not model.HasField("graph"):
        raise OnnxFileError(f"{source} is not an ONNX model: it has no graph")
    _load_tensors(model, base, source)
    order = topological_nodes(model.graph, source)
    if [id(n) for n in order] != [id(n) for n in model.graph.node]:
        nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in order]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    try:
        onnx.checker.check_model(skeleton(model))
    except onnx.checker.ValidationError as error:
        first = str(error).strip().splitlines()[0]
        raise OnnxFileError(f"{source} is not a valid ONNX model: {first}") from None
    return model


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read, check and return the ONNX model at ``path``, with its external data loaded.

    Raises:
        OnnxFileError: the file is missing, not ONNX, truncated, inconsistent, or too large;
            the message says which.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise OnnxFileError(f"{source}: no such file")
    if not path.is_file():
        raise OnnxFileError(f"{source} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise OnnxFileError(f"{source} is empty: not an ONNX model")
    _check_memory(source, size, "the file is")
    if size > PROTOBUF_LIMIT:
        raise OnnxFileError(
            f"{source} is {_gib(size)}: larger than protobuf's 2 GiB limit for one message "
            "(models that big keep their weights in external data files)"
        )
    model = _parse(path.read_bytes(), source)
    return check_model(model, source, path.parent)
