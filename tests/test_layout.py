"""The house rules of the source tree, read from the files themselves (nothing is imported or run).

- The shipped packages (``embedrt``, ``embedrt_export``) have no import cycles at module level, the
  runtime reaches the exporter only by name in ``embedrt export`` (``importlib.import_module`` in
  ``cli.py``), and neither imports the never-shipped ones (``embedrt_dev``, ``benchmarks``).
- Tests, benchmarks and scripts import modules as packages: none loads a module by file path or
  edits ``sys.path``.
- No tracked Python file is longer than a reader can hold: 450 lines.
- Every package and subpackage of the shipped packages is in pyproject.toml's explicit ``packages`` list
  (one missing there is left out of the wheel).
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"embedrt": ROOT / "runtime" / "embedrt", "embedrt_export": ROOT / "exporter" / "embedrt_export"}
NEVER_SHIPPED = ("embedrt_dev", "benchmarks")
MAX_LINES = 450
# Module-level cycles that exist and are known, each to be removed from here when it is broken: none.
KNOWN_CYCLES: list[list[str]] = []
# Loading a module from a file, or making one importable by editing the search path.
PATH_LOADING = re.compile(r"spec_from_file_location|SourceFileLoader|run_path\s*\(|load_source\s*\(|"
                          r"exec\s*\(\s*open\s*\(|\bsys\.path\s*(?:\.\s*(?:insert|append|extend)\b|\[|\+=|=[^=])")


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    """Every module of the shipped packages: dotted name -> (path, syntax tree)."""
    out = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            out[_module_name(package, root, path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level(statements: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run when the module is imported: not function bodies, not ``if TYPE_CHECKING:``."""
    for node in statements:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _top_level(node.orelse)
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _top_level([n for n in getattr(node, field, []) if isinstance(n, (ast.stmt, ast.ExceptHandler))])


def _targets(module: str, is_package: bool, node: ast.stmt, known: set[str]) -> list[str]:
    """The dotted names an import statement imports (submodules where a name is one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def _within(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, tree) in modules.items():
        for node in _top_level(tree.body):
            for target in _targets(name, path.name == "__init__.py", node, known):
                found = _within(target, known)
                if found and found != name and found.split(".")[0] == name.split(".")[0]:
                    graph[name].add(found)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_resolves_relative_imports():
    graph = _import_graph()
    assert "embedrt.model" in graph and "embedrt_export.export" in graph
    # `from . import verify` names a submodule, `from .source import SourceSpec` a module's attribute
    assert {"embedrt_export.verify", "embedrt_export.source"} <= graph["embedrt_export.export"]
    # in a subpackage: `from .. import verify` and `from ..source import SourceSpec` reach the parent's modules,
    # `from . import clip` in a package's __init__ its own submodule
    assert {"embedrt_export.verify", "embedrt_export.source"} <= graph["embedrt_export.builders.clip"]
    assert "embedrt_export.builders.clip" in graph["embedrt_export.builders"]
    assert graph["embedrt"], "embedrt/__init__.py's own imports were not read"
    assert all(not target.startswith("embedrt_export") for target in graph["embedrt"])


def test_no_import_cycles_at_module_level():
    """No cycle but the known ones, and each known one still there (so a broken one leaves the list)."""
    assert _cycles(_import_graph()) == KNOWN_CYCLES


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_subpackage_ships():
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {_module_name(package, root, path) for package, root in PACKAGES.items()
             for path in root.rglob("__init__.py")}
    assert found - listed == set(), f"add to pyproject.toml's [tool.setuptools] packages: {sorted(found - listed)}"


def test_runtime_reaches_the_exporter_only_by_name_in_its_cli():
    by_name = []
    for name, (path, tree) in _modules().items():
        if not name.startswith("embedrt") or name.startswith("embedrt_export"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "embedrt_export" for a in node.names), f"{path}:{node.lineno}"
            elif isinstance(node, ast.ImportFrom):
                assert node.level or (node.module or "").split(".")[0] != "embedrt_export", f"{path}:{node.lineno}"
            elif isinstance(node, ast.Call) and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                                    and a.value.split(".")[0] == "embedrt_export" for a in node.args):
                callee = ast.unparse(node.func)
                assert callee in ("importlib.import_module", "import_module"), f"{path}:{node.lineno}: {callee}"
                by_name.append(path.name)
    assert set(by_name) <= {"cli.py"}, by_name


def test_shipped_packages_never_import_the_dev_tools_or_benchmarks():
    for _, (path, tree) in _modules().items():
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                assert name.split(".")[0] not in NEVER_SHIPPED, f"{path}:{node.lineno} imports {name}"


def _tracked_python_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / line for line in listed.stdout.splitlines()
            if not line.startswith("runtime/kernels/third_party/") and (ROOT / line).is_file()]


def test_no_module_is_loaded_by_file_path():
    offenders = []
    for folder in ("tests", "benchmarks", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if PATH_LOADING.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("line", ["spec = importlib.util.spec_from_file_location('x', p)", "sys.path.insert(0, d)",
                                  "sys.path[:0] = paths", "sys.path.append(d)", "sys.path += [d]", "runpy.run_path(p)"])
def test_the_path_loading_pattern_catches(line):
    assert PATH_LOADING.search(line)


@pytest.mark.parametrize("line", ["sys.meta_path.insert(0, Block())", "runpy.run_module(name)", "if sys.path == x:"])
def test_the_path_loading_pattern_lets_pass(line):
    assert not PATH_LOADING.search(line)


def test_no_tracked_python_file_is_too_long():
    files = _tracked_python_files()
    assert files
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long
