"""cnnkit as an ONNX backend: ``onnx.backend.base.Backend`` over the importer.

    from cnnkit.onnx.backend import CnnkitBackend
    outputs = CnnkitBackend.run_model(model_proto, [x])      # list of NumPy arrays
    rep = CnnkitBackend.prepare(model_proto); rep.run([x])

This is the interface ONNX's own conformance suite (``onnx.backend.test.BackendTest``)
drives; ``tests/onnx/test_backend.py`` runs it for every operator cnnkit imports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from .. import config
from ..tensor import Tensor
from .importer import OnnxModel, from_model_proto

__all__ = ["CnnkitBackend", "CnnkitRep", "prepare", "run_model", "run_node", "supports_device"]


class CnnkitRep(BackendRep):
    """A prepared model: ``run(inputs)`` returns its outputs as NumPy arrays, in graph order."""

    def __init__(self, model: OnnxModel):
        self.model = model

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            inputs = [inputs[name] for name in self.model.input_names]
        elif not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        with config.no_grad():
            out = self.model(*(Tensor(np.asarray(x)) for x in inputs))
        outs = out if isinstance(out, tuple) else (out,)
        arrays = [np.asarray(t.data) for t in outs]
        return namedtupledict("Outputs", self.model.output_names)(*arrays)


class CnnkitBackend(Backend):
    """Runs ONNX models on the CPU with cnnkit's ops."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> CnnkitRep:
        if not cls.supports_device(device):
            raise ValueError(f"cnnkit runs on the CPU only, got device {device!r}")
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # the importer checks and reorders in place
        return CnnkitRep(from_model_proto(copy, source=model.graph.name or "<model>"))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", outputs_info=None,
                 **kwargs: Any):
        """Run one node on ``inputs`` (arrays, in the node's input order)."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        arrays = [np.asarray(x) for x in inputs]
        graph_inputs = [
            onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for name, a in zip(node.input, arrays) if name
        ]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
        graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return cls.prepare(model, device).run([a for name, a in zip(node.input, arrays) if name])

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = CnnkitBackend.prepare
run_model = CnnkitBackend.run_model
run_node = CnnkitBackend.run_node
supports_device = CnnkitBackend.supports_device
