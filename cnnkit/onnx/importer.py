"""Import: an ONNX file becomes a cnnkit ``Module`` that runs the graph with cnnkit's ops.

    model = cnnkit.onnx.load("resnet18.onnx")      # an OnnxModel, in eval mode
    logits = model(x)                               # x: (N, 3, 224, 224) float32
    cnnkit.summary(model, (3, 224, 224))            # layers, shapes, parameters, MACs
    model.train(); ... fit(model, ...)               # its weights are Parameters

How a graph becomes a module:

1. ``reader`` checks the file (see there) and orders the nodes.
2. Every node's operator must have a translator (``cnnkit.onnx.ops``) and come from the
   default ONNX domain; the first that does not is refused with its operator, node name
   and opset, before anything runs. Opsets 6 to the newest the ``onnx`` package knows
   are accepted (and older ones whose operators all kept their definition since).
3. ONNX's shape inference gives each value's rank and element type, which decides where
   a cnnkit layer fits a node (``layers``).
4. Each node becomes a sub-module registered at its node's name: a name that is a dotted
   path ("features.0", as cnnkit's exporter writes them) is placed at that path, so a
   cnnkit model exported and imported again has the same ``state_dict`` keys; any other
   name is made a Python identifier ("/features/features.0/Conv" -> "features_features_0_Conv").
5. ``forward`` runs the nodes in order, passing each the values it reads, and frees every
   intermediate value after its last reader.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .. import nn
from ..errors import OnnxFileError, OnnxUnsupportedError, ShapeError
from ..nn import Parameter
from ..tensor import Tensor
from .layers import BUFFER_INPUTS, PARAMETER_INPUTS, NodeSpec, build_module
from .ops import TRANSLATORS, Node, unsupported_op
from .ops.shape import constant_value
from .reader import check_model, read_model, skeleton, tensor_array

__all__ = ["load", "from_model_proto", "OnnxModel", "MIN_OPSET", "max_opset"]

MIN_OPSET = 6


def max_opset() -> int:
    """The newest opset of the default domain that the installed ``onnx`` package knows."""
    return onnx.defs.onnx_opset_version()


class OnnxModel(nn.Module):
    """A cnnkit Module that runs an imported ONNX graph (see ``cnnkit.onnx.load``).

    Attributes:
        input_names, output_names: the graph's computed inputs and its outputs.
        input_shapes: per input, its dimensions (None where the file names a symbol, like N).
        input_dtypes: per input, its NumPy dtype.
        opset: the default domain's opset of the file.
        metadata: the file's metadata_props (cnnkit writes "cnnkit.classes", "cnnkit.preprocessing").
        producer: "name version" of the program that wrote the file.
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.input_shapes: list[tuple[int | None, ...]] = []
        self.input_dtypes: list[np.dtype] = []
        self.opset = 0
        self.metadata: dict[str, str] = {}
        self.producer = ""
        self._steps: list[tuple[nn.Module, list[str], list[str], str]] = []
        self._constants: dict[str, np.ndarray] = {}
        self._last_use: dict[str, int] = {}

    # ------------------------------------------------------------------ information
    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) of one sample of the first input, when the file fixes them."""
        if not self.input_shapes:
            return None
        dims = self.input_shapes[0][1:]
        return tuple(dims) if dims and all(d is not None for d in dims) else None

    @property
    def class_names(self) -> list[str] | None:
        """The class names cnnkit's exporter stored, if any."""
        text = self.metadata.get("cnnkit.classes")
        return list(json.loads(text)) if text else None

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing cnnkit's exporter stored (mean, std, input_shape, ...), or {}."""
        text = self.metadata.get("cnnkit.preprocessing")
        return dict(json.loads(text)) if text else {}

    # ------------------------------------------------------------------ running
    def _check_input(self, i: int, x: Tensor) -> None:
        name, shape, dtype = self.input_names[i], self.input_shapes[i], self.input_dtypes[i]
        if x.ndim != len(shape) or any(d is not None and d != n for d, n in zip(shape, x.shape)):
            wanted = "(" + ", ".join("N" if d is None and j == 0 else "?" if d is None else str(d)
                                     for j, d in enumerate(shape)) + ")"
            raise ShapeError(f"ONNX model input {name!r} expects shape {wanted}, got {tuple(x.shape)}")
        if x.dtype != dtype:
            raise TypeError(f"ONNX model input {name!r} expects {dtype}, got {x.dtype}")

    def forward(self, *inputs: Any) -> Tensor | tuple[Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"this ONNX model takes {len(self.input_names)} input(s) "
                f"({', '.join(self.input_names)}), got {len(inputs)}"
            )
        values: dict[str, Tensor] = {}
        for i, (name, x) in enumerate(zip(self.input_names, inputs)):
            x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
            self._check_input(i, x)
            values[name] = x
        for step, (module, reads, writes, _) in enumerate(self._steps):
            out = module(*(values[name] for name in reads))
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(writes, outs):
                if name:
                    values[name] = value
            for name in reads:
                if self._last_use.get(name) == step:
                    values.pop(name, None)  # a node may read one value twice
        results = []
        for name in self.output_names:
            if name in values:
                results.append(values[name])
            else:
                results.append(Tensor(self._constants[name]))
        return results[0] if len(results) == 1 else tuple(results)

    def extra_repr(self) -> str:
        return f"opset={self.opset}, inputs={self.input_names}, outputs={self.output_names}"


# --------------------------------------------------------------------------- building
_DOTTED = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


def _identifier(name: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", name)).strip("_")


def _reserved() -> set[str]:
    """Names a sub-module may not take: attributes and methods of the modules it sits in."""
    return set(vars(nn.Module)) | set(vars(OnnxModel)) | set(vars(OnnxModel())) | set(vars(nn.ModuleDict))


class _Tree:
    """Places node modules at dotted paths under the root, without collisions."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.leaves: set[str] = set()
        self.containers: set[str] = {""}
        self.reserved = _reserved()

    def _free(self, path: str) -> bool:
        if path in self.leaves or path in self.containers:
            return False
        parts = path.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts))}
        return not prefixes & self.leaves and not any(p in self.reserved or p.startswith("_") for p in parts)

    def place(self, name: str, op_type: str, module: nn.Module) -> str:
        path = name if _DOTTED.match(name or "") else _identifier(name or "")
        if not path or not self._free(path):
            base = _identifier(path.replace(".", "_")) or op_type.lower()
            if not base[0].isalpha():
                base = f"{op_type.lower()}_{base}"
            path, k = base, 2
            while not self._free(path):
                path, k = f"{base}_{k}", k + 1
        parent = self.root
        parts = path.split(".")
        for i, part in enumerate(parts[:-1]):
            prefix = ".".join(parts[: i + 1])
            if prefix not in self.containers:
                parent.add_module(part, nn.ModuleDict())
                self.containers.add(prefix)
            parent = parent._modules[part]
        parent.add_module(parts[-1], module)
        self.leaves.add(path)
        return path


def _opset(model: onnx.ModelProto, source: str) -> int:
    versions = {o.domain: o.version for o in model.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None:
        raise OnnxFileError(f"{source}: the model imports no opset of the default ONNX domain")
    if opset > max_opset() or opset < 1:
        raise OnnxFileError(
            f"{source}: opset {opset} of the default domain; cnnkit imports opsets {MIN_OPSET} "
            f"to {max_opset()} (the newest the installed onnx package knows)"
        )
    if opset < MIN_OPSET:
        # An older file is read when each of its operators means there what it means in
        # MIN_OPSET (the same definition: Not, Xor, ...); refused when one changed since.
        changed = sorted({n.op_type for n in model.graph.node
                          if n.domain in ("", "ai.onnx") and _since(n.op_type, opset) != _since(n.op_type, MIN_OPSET)})
        if changed:
            raise OnnxFileError(
                f"{source}: opset {opset} of the default domain; cnnkit imports opsets {MIN_OPSET} "
                f"to {max_opset()}, and older files whose operators have not changed since "
                f"({', '.join(changed)} did)"
            )
    return opset


def _since(op_type: str, opset: int) -> int | None:
    """The version of ``op_type``'s definition in force at ``opset`` (None: no such operator)."""
    try:
        return onnx.defs.get_schema(op_type, opset).since_version
    except onnx.defs.SchemaError:
        return None


def _value_info(model: onnx.ModelProto) -> dict[str, tuple[int | None, bool | None]]:
    """name -> (rank, is float) from ONNX's shape inference (on the model's skeleton)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model)).graph
    except Exception:  # inference is a hint: a graph it cannot follow gets generic modules
        inferred = model.graph
    info = {}
    for v in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        t = v.type.tensor_type
        rank = len(t.shape.dim) if t.HasField("shape") else None
        is_float = t.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                   onnx.TensorProto.FLOAT16) if t.elem_type else None
        info[v.name] = (rank, is_float)
    return info


def _slot_names(op_type: str, opset: int, n: int) -> list[str]:
    try:
        schema = onnx.defs.get_schema(op_type, opset)
        formal = [i.name for i in schema.inputs]
    except onnx.defs.SchemaError:
        formal = []
    names = []
    for i in range(n):
        name = formal[min(i, len(formal) - 1)] if formal else f"input{i}"
        name = _identifier(name) or f"input{i}"
        if name in names or hasattr(nn.Module, name) or name in ("slots", "attrs", "opset", "op_type"):
            name = f"{name}_{i}"
        names.append(name)
    return names


def from_model_proto(model: onnx.ModelProto, source: str = "<model>", base: str | os.PathLike | None = None,
                     checked: bool = False) -> OnnxModel:
    """Build an OnnxModel from a parsed ModelProto (checked in place unless ``checked``).

    Args:
        source: how to name the model in error messages (its file name).
        base: the folder of the model's external data files.

    Raises:
        OnnxFileError: the model is malformed (see ``reader``).
        OnnxUnsupportedError: a node's operator or feature cnnkit cannot run.
    """
    if not checked:
        check_model(model, source, Path(base) if base is not None else None)
    opset = _opset(model, source)
    graph = model.graph
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for v in values:
            held = v.type.WhichOneof("value")
            if held not in ("tensor_type", None):
                raise OnnxUnsupportedError(
                    f"{source}: graph {kind} {v.name!r} is a {held.replace('_type', '')} (opset {opset}); "
                    "cnnkit runs graphs of tensors only"
                )
    for node in graph.node:  # refuse before building anything
        if node.domain not in ("", "ai.onnx") or node.op_type not in TRANSLATORS:
            raise unsupported_op(node.op_type, node.name, opset, node.domain)

    initializers = {t.name: tensor_array(t, source) for t in graph.initializer}
    constants: dict[str, np.ndarray] = dict(initializers)
    info = _value_info(model)
    root = OnnxModel()
    tree = _Tree(root)
    shared: dict[str, Any] = {}  # initializer name -> its Parameter or buffer array

    def weight(name: str, as_parameter: bool):
        if name not in shared:
            value = initializers[name]
            shared[name] = Parameter(value) if as_parameter else value
        return shared[name]

    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        n_outputs = sum(1 for name in node.output if name)
        if node.op_type == "Constant":
            value = constant_value(Node(node.op_type, node.name, [], attrs, opset))
            constants[node.output[0]] = value
            continue
        spec = NodeSpec(node.op_type, node.name, attrs, opset, n_outputs, len(node.input), [], {})
        for i, name in enumerate(node.input):
            if not name:
                spec.absent.add(i)
            elif name in constants:
                spec.constants[i] = constants[name]
                if name in initializers and initializers[name].dtype.kind == "f":
                    if i in PARAMETER_INPUTS.get(node.op_type, ()):
                        spec.weights[i] = weight(name, True)
                    elif i in BUFFER_INPUTS.get(node.op_type, ()):
                        spec.weights[i] = weight(name, False)
            else:
                spec.runtime.append(i)
        if node.input:
            spec.input_rank, spec.input_float = info.get(node.input[0], (None, None))
            if node.input[0] in constants:
                value = constants[node.input[0]]
                spec.input_rank, spec.input_float = value.ndim, value.dtype.kind == "f"
        module = build_module(spec, _slot_names(node.op_type, opset, len(node.input)))
        path = tree.place(node.name, node.op_type, module)
        reads = [node.input[i] for i in spec.runtime]
        root._steps.append((module, reads, list(node.output), path))

    initializer_names = set(initializers)
    for i in graph.input:
        if i.name in initializer_names:
            continue  # IR < 4 lists initializers among the inputs; they are not computed inputs
        t = i.type.tensor_type
        root.input_names.append(i.name)
        root.input_shapes.append(tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim))
        root.input_dtypes.append(np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)))
    root.output_names = [o.name for o in graph.output]
    produced = {name for _, _, writes, _ in root._steps for name in writes} | set(root.input_names)
    root._constants = {o: constants[o] for o in root.output_names if o not in produced}
    for step, (_, reads, _, _) in enumerate(root._steps):
        for name in reads:
            root._last_use[name] = step
    for name in root.output_names:
        root._last_use.pop(name, None)
    root.opset = opset
    root.metadata = {p.key: p.value for p in model.metadata_props}
    root.producer = f"{model.producer_name} {model.producer_version}".strip()
    return root.eval()


def load(path: str | os.PathLike) -> OnnxModel:
    """Read the ONNX model at ``path`` and return it as a cnnkit Module (in eval mode).

    The module runs the graph with cnnkit's ops; the file's weights are its Parameters
    (fine-tune it with ``model.train()`` and any optimizer), BatchNorm statistics its
    buffers. Nothing in the file is executed: only the operators cnnkit knows run.

    Raises:
        OnnxFileError: the file is missing, not ONNX, truncated, inconsistent or too large.
        OnnxUnsupportedError: an operator (or an operator's feature) cnnkit cannot run; the
            message names the operator, the node and the opset.
    """
    model = read_model(path)
    return from_model_proto(model, str(path), checked=True)
