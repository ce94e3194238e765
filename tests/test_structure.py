"""The architecture, checked from the source: imports flow pipelines -> components, steps -> core, never back.

The import graph is read with ast from every module of components/ and
pipelines/, imports inside functions and TYPE_CHECKING blocks included (they
are dependencies all the same, only later).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("components", "pipelines")
MAX_LINES = 400

# Violations other work in progress removes (issue 10), kept out of the main checks so those guard everything
# else meanwhile; test_pending_violations_are_gone is an xfail until they land. Delete an entry once it XPASSes.
PENDING_EDGES = {
    ("training", "pipelines"): "the TrainJob launch moves out of components/training/launch.py (train)",
}
PENDING_LONG = {
    "components/training/phase.py": "split by the train-phase rework (train)",
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module under components/ and pipelines/."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module `name` imports (`from a import b` is a.b when that is a module, else a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    return {target for target in found if target.split(".")[0] in PACKAGES and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def step_of(module: str) -> str | None:
    """'components.training.phase' -> 'training'; None for core, pipelines and the components package itself."""
    parts = module.split(".")
    if parts[0] != "components" or len(parts) < 2 or parts[1] == "core":
        return None
    return parts[1]


def edges(graph: dict[str, set[str]]):
    return sorted((source, target) for source, targets in graph.items() for target in targets)


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """(source, target, why) for every import against pipelines -> components, steps -> core, no step into another."""
    found = []
    for source, target in edges(graph):
        if source.startswith("components") and target.startswith("pipelines"):
            found.append((source, target, "components import pipelines"))
        elif source.startswith("components.core") and step_of(target):
            found.append((source, target, "core imports a step"))
        elif step_of(source) and step_of(target) and step_of(source) != step_of(target):
            found.append((source, target, "a step imports another step"))
    return found


def is_pending(source: str, target: str) -> bool:
    return (step_of(source), step_of(target) or target.split(".")[0]) in PENDING_EDGES


def long_modules() -> dict[str, int]:
    return {str(path.relative_to(ROOT)): lines for path in module_files().values()
            if (lines := len(path.read_text().splitlines())) > MAX_LINES}


def test_the_graph_sees_imports_inside_functions_and_relative_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    source = tmp_path / "pkg" / "a.py"
    source.write_text("from . import b\n\ndef f():\n    from components.core import storage\n    import pipelines.cli\n")
    modules = {"pkg.b": Path("pkg/b.py"), "components.core.storage": Path("s"), "pipelines.cli": Path("c")}
    assert imported_modules("components.x.a", source, modules | {"components.x.b": Path("b")}) == {
        "components.x.b", "components.core.storage", "pipelines.cli"}


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycles():
    assert cycles(import_graph()) == []


def test_imports_flow_one_way():
    assert [f"{s} -> {t} ({why})" for s, t, why in upward_imports(import_graph()) if not is_pending(s, t)] == []


def test_no_module_is_over_400_lines():
    assert {path: lines for path, lines in long_modules().items() if path not in PENDING_LONG} == {}


@pytest.mark.xfail(reason="other work in progress removes these: see PENDING_EDGES and PENDING_LONG", strict=False)
def test_pending_violations_are_gone():
    pending = [f"{s} -> {t} ({PENDING_EDGES[(step_of(s), step_of(t) or t.split('.')[0])]})"
               for s, t, _ in upward_imports(import_graph()) if is_pending(s, t)]
    assert (pending, {path: lines for path, lines in long_modules().items() if path in PENDING_LONG}) == ([], {})
