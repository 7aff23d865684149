"""Freeze a model's weights for inference, each convolution's weight prepared once for its algorithms.

    prepack_for_inference(model)      # in place: eval mode, read-only weights, lazy prepacks

What it does to each module (``cnnkit.surgery.optimize_for_inference`` runs it on a copy
after folding the batch norms; that is the function to call):

- every parameter gets ``requires_grad = False`` and a read-only array
  (``backend.prepack.frozen``: a view of a private read-only copy), so an optimizer
  step, ``p.data[...] = ...`` or ``p.data += ...`` raises instead of silently running
  with stale prepared weights; this is what ``torch.jit.freeze`` does by turning the
  parameters into constants;
- every ``Conv2d`` gets ``prepacked``, a ``backend.prepack.ConvWeightPack`` of its frozen
  weight: the first call that runs a Winograd algorithm computes the transformed filters
  U = G w G^T for that tile size and later calls reuse them. Layers that share one
  Parameter share one pack (its forms are computed and held once). Replacing the weight's array
  (``p.data = new``, ``model.to(dtype)``) makes the layer run the normal path (the pack
  answers only for the array it was built from) until ``prepack_for_inference`` runs again;
- ``ConvTranspose2d`` has nothing to prepack: its forward reads the weight through a
  transposed view (W^T @ x per group), which BLAS takes as it is, with no per-call
  transform (measured: a contiguous copy of W^T made no difference to the product's time,
  ``benchmarks/conv_transpose_weight.py``). Its weight is frozen like every parameter;
- the model is put in eval mode. A prepacked Conv2d called in training mode raises
  ``InferenceOnlyError`` naming the layer (PyTorch's frozen modules ignore ``train()``
  silently). Gradients still flow to the input (saliency, adversarial examples): the
  prepared forward computes the same values and backward reads the weight itself.
"""

from __future__ import annotations

from ...backend.prepack import ConvWeightPack, frozen
from ..conv import Conv2d
from ..module import Module

__all__ = ["prepack_for_inference", "prepacked_bytes"]


def prepack_for_inference(model: Module) -> Module:
    """Freeze ``model``'s parameters and give each Conv2d a lazy prepack of its weight, in place.

    Args:
        model: any Module; its parameters are replaced by frozen copies (other references
            to the old arrays are not affected).

    Returns:
        ``model``, in eval mode, with ``prepacked_for_inference = True`` (``cnnkit.save``
        records it and ``cnnkit.load`` prepacks the rebuilt model again).
    """
    for param in model.parameters():
        param.data = frozen(param.data)
        param.requires_grad = False
        param.grad = None
    packs: dict[int, ConvWeightPack] = {}  # id of a frozen weight -> its one pack
    for path, module in model.named_modules():
        if isinstance(module, Conv2d):
            pack = packs.get(id(module.weight.data))
            if pack is None:
                pack = packs[id(module.weight.data)] = ConvWeightPack(module.weight.data, path)
            else:  # a Parameter shared by several layers: one pack, its forms computed once
                pack.layer = f"{pack.layer}, {path}"
            module.prepacked = pack
    model.eval()
    model.prepacked_for_inference = True
    return model


def prepacked_bytes(model: Module) -> int:
    """Bytes of prepared weight forms the model's convolutions hold now (they grow on first use); a shared pack counts once."""
    packs = {id(m.prepacked): m.prepacked for m in model.modules() if isinstance(m, Conv2d) and m.prepacked is not None}
    return sum(pack.nbytes for pack in packs.values())
