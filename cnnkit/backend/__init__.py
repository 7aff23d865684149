"""Everything between the ops' math and the machine.

- ``arrays``: the array module choice (NumPy, or CuPy when present); the only module
  that knows CuPy exists.
- ``cores``: the one owner of the CPU's cores: the kernels' thread pool
  (``parallel_for``) and the BLAS thread switch (``blas_threads``, ``matmul``).
- ``kernels``: the compiled numba kernels, one module per op family.
- ``dispatch``: which algorithm (which ``Function``) runs an op, and the measured
  thresholds behind each choice.

Nothing here computes gradients or knows about ``Tensor``: arrays in, arrays out. The
switches (kernels on/off, number of threads) live in ``cnnkit.config``.
"""

from .arrays import as_numpy, get_array_module

__all__ = ["get_array_module", "as_numpy"]
