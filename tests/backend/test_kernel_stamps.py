"""numba's disk cache must notice an edit to a kernel module that another kernel imports.

numba keys a cached kernel on its own file's source; ``kernels.stamps`` adds the sibling
modules the file imports (``simd``'s intrinsics are inlined into the pooling and
convolution kernels). The end-to-end test compiles a pooling kernel in a copy of the
package, edits only ``simd.py`` there and checks the next process compiles again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnnkit
from cnnkit.backend import kernels
from cnnkit.backend.kernels import stamps

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba not installed")

PROBE = """
import json, numpy as np
from cnnkit.backend.kernels import pool, simd
f = pool.max_pool2d_forward_2x2_simd
x = np.arange(2 * 4 * 32, dtype=np.float32).reshape(2, 4, 32)
y = np.zeros((2, 2, 16), np.float32); arg = np.zeros((2, 2, 16), np.uint8)
f(0, 2, x, y, arg, simd.lanes(x.dtype))
print(json.dumps({"hits": sum(f.stats.cache_hits.values()), "misses": sum(f.stats.cache_misses.values()),
                  "path": f.stats.cache_path, "y": float(y.sum())}))
"""


def test_dependencies_follow_imports_transitively():
    assert stamps.dependencies("pool.py") == ["__init__.py", "pool.py", "simd.py", "stamps.py"]
    # strided imports conv_blocked, which imports conv_direct and simd
    assert {"conv_blocked.py", "conv_direct.py", "simd.py"} <= set(stamps.dependencies("strided.py"))
    assert "simd.py" not in stamps.dependencies("im2col.py")


def test_kernels_use_the_stamped_locator():
    locator = kernels.pool.max_pool2d_forward_2x2_simd._cache._impl._locator
    assert type(locator).__name__.startswith("KernelPackage")
    own, digest = locator.get_source_stamp()
    assert digest == stamps.dependency_digest(kernels.pool.__file__)


def test_files_outside_the_package_keep_numba_s_locators(tmp_path):
    outside = tmp_path / "mod.py"
    outside.write_text("x = 1\n")
    assert not stamps.owns(str(outside))
    assert stamps.owns(kernels.pool.__file__)


def test_an_edit_to_simd_py_recompiles_a_kernel_that_inlines_it(tmp_path):
    package = Path(cnnkit.__file__).parent
    copy = tmp_path / "cnnkit"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "*.gz", "*.npz"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = str(tmp_path)

    def run():
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run()
    assert first["path"].startswith(str(copy))                   # the copy's own cache
    assert first["misses"] == 1 and first["hits"] == 0
    assert run()["hits"] == 1                                    # unchanged: loaded from disk
    simd = copy / "backend" / "kernels" / "simd.py"
    simd.write_text(simd.read_text() + "\n# an edit that changes no code\n")
    third = run()
    assert third["misses"] == 1 and third["hits"] == 0           # pool.py unchanged, simd.py not
    assert third["y"] == first["y"]
    assert run()["hits"] == 1
