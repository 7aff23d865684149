"""The op tests that need no PyTorch really need none: with ``torch`` made unimportable, the
oracle and gradient-check modules still collect every test and the ``*_vs_torch`` modules
skip whole (PyTorch is a test-only reference, never a runtime dependency).

To run the torch-free op tests themselves that way:
    python -c "import sys; sys.modules['torch'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))" \\
        tests/functional tests/test_tensor.py tests/test_gradcheck.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import subprocess_env

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
FAMILIES = ("math", "shape", "activation", "linear", "conv", "pool", "loss", "norm", "dropout")

# An entry of None in sys.modules makes `import torch` raise ImportError.
RUN_WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"


def _collected(stdout: str) -> dict[str, int]:
    """Tests per file from `pytest --collect-only -qq` ("path: count") output."""
    counts = {}
    for line in stdout.splitlines():
        path, _, count = line.rpartition(": ")
        if path.endswith(".py") and count.isdigit():
            counts[path] = int(count)
    return counts


def test_oracle_and_gradcheck_modules_collect_without_torch():
    torch_free = [f"tests/functional/test_{f}.py" for f in FAMILIES] + ["tests/test_tensor.py", "tests/test_gradcheck.py"]
    compared = [f"tests/functional/test_{f}_vs_torch.py" for f in FAMILIES + ("graphs",)] + ["tests/test_tensor_vs_torch.py"]
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, "--collect-only", "-qq", "-p", "no:cacheprovider",
         *torch_free, *compared],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = _collected(done.stdout)
    for path in torch_free:
        assert counts.get(path, 0) > 0, f"{path} collected no test without torch:\n{done.stdout[-2000:]}"
    for path in compared:
        assert path not in counts, f"{path} collected tests without torch: it must importorskip('torch')"
