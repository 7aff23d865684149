"""Convolution weights prepared once for inference: frozen arrays and the forms the algorithms need.

Some convolution algorithms transform the weight on every call before they touch the
input: Winograd's filter transform U = G w G^T (``kernels/winograd.py``) costs 19% of
ResNet-18's 512x7x7 layers at batch 8 and half of them at batch 1 (docs/performance.md).
In inference the weight does not change, so that work can be done once, as PyTorch's
prepacked inference convolutions do (``torch.jit.optimize_for_inference``). Doing it
safely needs two things NumPy arrays do not give by themselves:

- the weight must not change behind the cached form's back: ``frozen`` gives a read-only
  view of a private read-only copy, so an in-place write (an optimizer step,
  ``w[...] = ...``, ``w += ...``) raises, and so does ``w.flags.writeable = True``;
- the cached form belongs to that array only: ``ConvWeightPack`` keeps the array it was
  built from and answers only when it is given that very array (an identity check), so
  a weight replaced by another array (``p.data = new``, ``model.to(dtype)``, a deep copy)
  runs the normal path, recomputing its transforms per call as before.

Forms are computed lazily, on the first call that needs them, because which algorithm
runs depends on the input's size and batch (``dispatch.conv2d_algorithm``): a layer that
sees batch 1 and batch 8 may run F(2x2, 3x3) for one and F(4x4, 3x3) for the other.
Arrays in, arrays out: nothing here knows about Tensors or Modules.
"""

from __future__ import annotations

import numpy as np

from .kernels import winograd

__all__ = ["ConvWeightPack", "frozen"]


def frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view of a read-only copy of ``array``.

    The copy is private (no other reference, no other view of its memory exists), so
    nothing can write the values the view shows; the view cannot be made writeable
    again (NumPy refuses ``flags.writeable = True`` on a view of a read-only array).
    """
    base = np.array(array, copy=True, order="C")
    base.flags.writeable = False
    return base.view()


class ConvWeightPack:
    """One convolution weight's per-algorithm forms, computed once and kept while the weight stays the same array.

    Args:
        weight: the frozen weight (F, C/groups, KH, KW) (``frozen``): read-only.
        layer: the layer's name, for messages.

    Raises:
        ValueError: ``weight`` is writeable (a cached form could go stale).
    """

    def __init__(self, weight: np.ndarray, layer: str = ""):
        if weight.flags.writeable:
            raise ValueError(f"ConvWeightPack({layer or 'a convolution'}) needs a read-only weight "
                             "(cnnkit.backend.prepack.frozen); got a writeable array")
        self.weight = weight
        self.layer = layer
        self._forms: dict[tuple, np.ndarray] = {}

    def holds(self, w) -> bool:
        """True when ``w`` is the very array this pack was built for (and it is still read-only)."""
        return w is self.weight and not w.flags.writeable

    def winograd_filters(self, w, m: int) -> np.ndarray | None:
        """U (a*a, F, C) = G w G^T of F(m x m, 3 x 3), computed on the first call; None for any other array than ours."""
        if not self.holds(w):
            return None
        key = ("winograd", m)
        U = self._forms.get(key)
        if U is None:
            U = winograd.winograd_filters(w, m)                       # (a*a, F, C)
            U.flags.writeable = False
            self._forms[key] = U
        return U

    @property
    def nbytes(self) -> int:
        """Bytes held by the prepared forms (the weight itself not counted)."""
        return sum(form.nbytes for form in self._forms.values())

    def forms(self) -> list[str]:
        """The forms computed so far, e.g. ["winograd2", "winograd4"]."""
        return [f"{name}{m}" for name, m in self._forms]

    def __repr__(self) -> str:
        return f"ConvWeightPack({self.layer!r}, weight {tuple(self.weight.shape)}, forms {self.forms()})"
