"""Cache stamps that include the kernel modules a kernel's module imports.

numba's on-disk cache (``cache=True``) keys each compiled kernel on its own module's
source. A kernel that calls compiled code from a sibling module (``simd``'s intrinsics,
``conv_direct``'s helpers) has that code inlined into its machine code, so editing only
the sibling left the cached kernel stale: it kept the old intrinsic until its own file
changed. That happens to a developer switching commits, and to a user upgrading the
package in place (pip removes the files it installed but leaves numba's ``.nbi``/``.nbc``
files in ``__pycache__``; a module whose text did not change keeps its old entries).

``install()`` puts a locator in front of numba's own for functions defined in this
package's files: the same cache directory as numba would choose, and as the stamp the
pair (numba's stamp of the file, a digest of every sibling module the file imports,
directly or through other siblings, and of the package's ``__init__``). A change to any
of those makes numba treat the index as stale and compile again. What a kernel reads
from outside the package at compile time (NumPy, ``dispatch``) is not part of the stamp:
kernel code reads no module-level values from outside the package.

The locator hooks into numba's ``CacheImpl._locator_classes`` (``_CacheImpl`` before
numba 0.62); on a numba without that list ``install`` leaves the cache as it was.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re

try:
    from numba.core import caching
except ImportError:  # pragma: no cover - without numba there is no cache to stamp
    caching = None

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# "from .simd import (", "from .conv_direct import _load_padded", "from . import njit, simd"
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w*)\s+import\s+(\([^)]*\)|[^#\n]*)", re.MULTILINE)


def _sibling_imports(path: str) -> set[str]:
    """File names (``simd.py``) of the package modules the module at ``path`` imports."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    found = set()
    for module, names in _RELATIVE_IMPORT.findall(source):
        if module:
            found.add(f"{module}.py")
            continue
        found.add("__init__.py")                   # "from . import x": the package, and x if a module
        for name in re.split(r"\s*,\s*", names.strip("()").strip()):
            name = name.split()[0] if name.split() else ""      # "x as y" -> x
            if name and os.path.isfile(os.path.join(PACKAGE_DIR, f"{name}.py")):
                found.add(f"{name}.py")
    return {name for name in found if os.path.isfile(os.path.join(PACKAGE_DIR, name))}


def dependencies(filename: str) -> list[str]:
    """Sorted file names of ``filename``'s package modules: it, what it imports, transitively."""
    seen, todo = set(), [filename, "__init__.py"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_sibling_imports(os.path.join(PACKAGE_DIR, name)) - seen)
    return sorted(seen)


@functools.cache
def _digest(filename: str) -> str:
    h = hashlib.sha256()
    for name in dependencies(filename):
        h.update(name.encode() + b"\0")
        with open(os.path.join(PACKAGE_DIR, name), "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def dependency_digest(py_file: str) -> str:
    """sha256 (hex) over the sources of the package modules ``py_file`` depends on.

    Read once per process: the modules this process runs are the ones it imported, so a
    file edited while it runs must not change the stamp of kernels it compiles from them.
    """
    return _digest(os.path.basename(py_file))


def owns(py_file: str) -> bool:
    """True for a module file of this package (not a zip member, not another package)."""
    return os.path.isfile(py_file) and os.path.dirname(os.path.abspath(py_file)) == PACKAGE_DIR


def _stamped(base: type) -> type:
    """A subclass of numba locator ``base`` for this package's files, stamped with their imports."""

    class Locator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            if not owns(py_file):
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return (super().get_source_stamp(), dependency_digest(self._py_file))

    Locator.__name__ = Locator.__qualname__ = f"KernelPackage{base.__name__}"
    return Locator


def install() -> bool:
    """Put the stamped locators first in numba's list (once). False if numba has no such list."""
    if caching is None:
        return False
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list):
        return False
    if any(getattr(c, "_cnnkit_stamped", False) for c in classes):
        return True
    stamped = []
    for base in classes:
        if callable(getattr(base, "get_source_stamp", None)) and hasattr(base, "from_function"):
            locator = _stamped(base)
            locator._cnnkit_stamped = True
            stamped.append(locator)
    classes[:0] = stamped
    return True
