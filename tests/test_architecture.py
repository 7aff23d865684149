"""The tree is the architecture: imports flow one way, bottom up (docs/architecture.md).

Every ``import`` in every module of the package (module level and inside functions) is
read with ``ast`` and checked against the layer order; the layers' import graph must
have no cycle (except the documented one inside the autograd core); ``import cnnkit``
must not load the heavy optional dependencies.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cnnkit
from tests.conftest import subprocess_env

PACKAGE = Path(cnnkit.__file__).resolve().parent

# Bottom to top; a module may import its own layer and the layers below it. The units
# are the names right under ``cnnkit`` (a package or a root module).
LAYERS: list[tuple[str, ...]] = [
    ("config", "errors", "backend", "files"),
    ("tensor", "function", "gradcheck", "graph", "arrays", "backward"),  # the autograd core
    ("functional",),
    ("nn",),
    ("models", "optim", "data"),
    ("train", "io"),
    ("explain", "surgery", "viz", "onnx", "explore", "distributed",
     "transforms", "prune"),                                 # (the last two: deprecated aliases)
    ("cli",),
    ("__init__", "__main__"),
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}

# The one cycle the layout keeps (issue 9): Tensor's operators call the ops in
# functional/math.py, reduction.py, shape.py, activation.py, logic.py and remainder.py,
# which build on Tensor and Function.
ALLOWED_UPWARD = {("tensor", "functional")}

# Imports of cnnkit's own modules inside a function hide the dependency graph; each one
# left is listed here with its reason (third-party lazy imports are not listed: they keep
# ``import cnnkit`` light, which ``test_import_cnnkit_loads_no_heavy_optional_dependency`` checks).
ALLOWED_LOCAL: set[tuple[str, str]] = {
    # the console script's entry point imports nothing of the library in its header: Ctrl-C
    # while NumPy and numba load must end inside ``main``, as one line (status 130)
    ("cnnkit.cli.main", "cnnkit.backend.malloc"),
}

HEAVY = ("matplotlib", "tensorboardX", "graphviz", "onnx", "onnxruntime", "mpi4py", "fastapi", "uvicorn", "torch")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported cnnkit module, line, inside a function) for every import in ``module``."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only
            local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "cnnkit" or alias.name.startswith("cnnkit."):
                        out.append((alias.name, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (child.level - 1)]
                    base = ".".join(base_parts + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                if base != "cnnkit" and not base.startswith("cnnkit."):
                    continue
                for alias in child.names:
                    target = f"{base}.{alias.name}"
                    out.append((target if target in MODULES else base, child.lineno, in_function))
            visit(child, local)

    visit(tree, False)
    return out


EDGES = [(m, target, line, local) for m, path in MODULES.items() for target, line, local in _imports(m, path)]


def test_every_unit_has_a_layer():
    missing = sorted({_unit(m) for m in MODULES} - set(RANK))
    assert not missing, (
        f"cnnkit/{missing[0]} has no layer: add it to LAYERS here and to docs/architecture.md"
    )


def test_imports_flow_one_way_bottom_up():
    wrong = []
    for source, target, line, _ in EDGES:
        a, b = _unit(source), _unit(target)
        if a in RANK and b in RANK and RANK[b] > RANK[a] and (a, b) not in ALLOWED_UPWARD:
            wrong.append(f"{source} (line {line}, layer {RANK[a]}: {a}) imports {target} (layer {RANK[b]}: {b})")
    assert not wrong, "imports that go up the layers:\n" + "\n".join(wrong)


def test_the_library_never_imports_the_cli():
    wrong = [f"{s} line {line}" for s, t, line, _ in EDGES
             if _unit(t) == "cli" and _unit(s) not in ("cli", "__main__")]
    assert not wrong, "library modules importing cnnkit.cli: " + ", ".join(wrong)


def test_the_layers_import_graph_has_no_cycle_but_the_documented_one():
    graph: dict[str, set[str]] = {}
    for source, target, _, _ in EDGES:
        a, b = _unit(source), _unit(target)
        if a != b and (a, b) not in ALLOWED_UPWARD:
            graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def dfs(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and dfs(nxt, path + [node]):
                return True
        state[node] = 2
        return False

    for unit in sorted(graph):
        if state.get(unit) is None and dfs(unit, []):
            break
    assert not cycle, "import cycle between packages: " + " -> ".join(dict.fromkeys(cycle))


def test_no_import_of_cnnkit_modules_hides_inside_a_function():
    hidden = [f"{s} line {line}: {t}" for s, t, line, local in EDGES
              if local and (s, t) not in ALLOWED_LOCAL and _unit(s) != "__init__"]
    assert not hidden, (
        "function-local imports of cnnkit's own modules (move them to the header, or fix the "
        "layer that needs them):\n" + "\n".join(hidden)
    )


def test_the_import_checker_sees_relative_and_function_local_imports(tmp_path):
    # The checker itself: a known upward edge would be reported if it existed.
    edges = {(s, t) for s, t, _, _ in EDGES}
    assert ("cnnkit.cli.main", "cnnkit.errors") in edges               # from ..errors import ...
    assert ("cnnkit.tensor", "cnnkit.functional.math") in edges        # the documented cycle
    # a function-local import is seen as one (checked on a module written for the purpose)
    probe = tmp_path / "probe.py"
    probe.write_text("from . import config\n\ndef f():\n    from .errors import ShapeError\n")
    assert _imports("cnnkit.probe", probe) == [("cnnkit.config", 1, False), ("cnnkit.errors", 4, True)]


@pytest.mark.parametrize("statement, forbidden", [
    ("import cnnkit", HEAVY),
    ("import cnnkit.train, cnnkit.io, cnnkit.explain, cnnkit.surgery, cnnkit.viz, cnnkit.data, cnnkit.cli.main",
     ("matplotlib", "tensorboardX", "graphviz", "torch")),
])
def test_import_cnnkit_loads_no_heavy_optional_dependency(statement, forbidden):
    code = f"{statement}; import sys; print(' '.join(m for m in {forbidden!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"`{statement}` imported {result.stdout.strip()}"


def test_every_exception_type_is_defined_in_errors_py():
    import cnnkit.errors as errors

    elsewhere = []
    for module, path in MODULES.items():
        if module == "cnnkit.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                if any(b.endswith(("Error", "Exception", "Warning")) for b in bases):
                    elsewhere.append(f"{module}.{node.name}")
    assert not elsewhere, "exception types outside errors.py: " + ", ".join(elsewhere)
    for name in errors.__all__:
        cls = getattr(errors, name)
        if name == "Terminated":  # SIGTERM as an interrupt, not an error: `except Exception` must not catch it
            assert issubclass(cls, KeyboardInterrupt) and not issubclass(cls, Exception)
            continue
        assert issubclass(cls, errors.CnnkitError), name
    assert issubclass(errors.ShapeError, ValueError) and issubclass(errors.UsageError, ValueError)


@pytest.mark.parametrize("code", [
    # the command's entry point: nothing of the library, not even NumPy (Ctrl-C lands in main)
    "import cnnkit.cli.main, sys; assert 'numpy' not in sys.modules and 'cnnkit.tensor' not in sys.modules",
    # any module of the library first: the whole API loads first, once (one Tensor class)
    "from cnnkit.tensor import Tensor; import cnnkit, sys; assert cnnkit.Tensor is Tensor is "
    "sys.modules['cnnkit.tensor'].Tensor and callable(cnnkit.tensor)",
    "import cnnkit.functional as F; import cnnkit; assert F.relu(cnnkit.tensor([-1.0, 2.0])).data.tolist() == [0, 2]",
    # io's weights loader is installed before a model is built from its module alone
    "from cnnkit.models import resnet18; from cnnkit.models import weights; assert weights._loader is not None",
    "import cnnkit.init, cnnkit.nn.init, sys; assert cnnkit.init is cnnkit.nn.init is sys.modules['cnnkit.init']",
    "import cnnkit; assert 'Tensor' in dir(cnnkit) and cnnkit.no_grad and cnnkit.summary",
    # the library's packages read as attributes, as the README writes them (torch.onnx's way)
    "import cnnkit\nwith cnnkit.config.num_threads(1): pass\nassert cnnkit.surgery.optimize_for_inference and "
    "cnnkit.data.DistributedSampler and cnnkit.io.checkpoint and cnnkit.onnx and callable(cnnkit.tensor)",
    "import cnnkit\ntry: cnnkit.no_such_thing\nexcept AttributeError as e: assert 'no_such_thing' in str(e)\n"
    "else: raise AssertionError",
], ids=["cli", "tensor-first", "functional-first", "models-first", "init-alias", "attribute", "packages",
        "unknown-name"])
def test_the_public_api_loads_on_first_use(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=subprocess_env())
    assert result.returncode == 0, result.stderr
