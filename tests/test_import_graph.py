"""The packages import one another without a cycle, counting every import a module can run:
module-level ones and those inside functions (deferred for boot speed), read from the source
with `ast`. Imports under `if TYPE_CHECKING:` are left out: they never run, they only name types.

A cycle is how a house gets lost: a module that cannot be understood, imported or tested without
the one that imports it. The deferred imports are counted too, because deferring an import
hides a cycle from Python, not from the reader."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("start", "healthz", "coditect_init", "coditect_file_monitor")


def module_files() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Each import statement that can run, and whether it runs at module level."""

    def walk(node: ast.AST, top: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for rest in child.orelse:
                    yield from walk(rest, top)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, top
            inner = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, inner)

    yield from walk(tree, True)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: set[str]) -> Iterator[str]:
    """Our modules an import statement names (not the parents Python loads before them)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        # `from package import module` names the module; `from module import name` the module.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                 for a in node.names]
    for name in names:
        while name and name not in known:  # `import a.b.c` of a package we do not list
            name = name.rpartition(".")[0]
        if name and name != module:
            yield name


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Module → the modules it imports: (every import, module-level imports only)."""
    files = module_files()
    known = set(files)
    every: dict[str, set[str]] = {name: set() for name in files}
    top_level: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, top in _imports(tree):
            for target in _targets(node, name, path.name == "__init__.py", known):
                every[name].add(target)
                if top:
                    top_level[name].add(target)
    return every, top_level


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as the modules along it (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_walk_sees_the_imports_it_must() -> None:
    """The walker finds module-level, function-local and relative imports, and not the ones
    under TYPE_CHECKING; otherwise the cycle test below could pass by seeing nothing."""
    every, top_level = import_graph()
    assert "start.catalogue.build" in every["start.catalogue"]  # inside `load`
    assert "start.catalogue.build" not in top_level["start.catalogue"]
    assert "start.engine" in every["start.cli"]  # inside `run`
    assert "start.catalogue.spec" in top_level["start.catalogue.build"]
    assert "healthz.spec" in top_level["start.catalogue.build"]
    assert "healthz.server" not in top_level["start.engine"]  # TYPE_CHECKING and deferred
    assert len(every) > 60


def test_no_import_cycle_counting_deferred_imports() -> None:
    """No chain of imports, module-level or inside functions, leads a module back to itself."""
    every, _ = import_graph()
    assert find_cycle(every) is None, " → ".join(find_cycle(every) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    """A made-up graph with a cycle is caught, naming its modules in order."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_health_side_imports_without_the_engine() -> None:
    """Nothing in healthz imports start: podctl and the health service stand on their own, and
    the catalogue reads its [health:NAME] grammar from healthz, never the other way round."""
    every, _ = import_graph()
    reaching = {name: sorted(t for t in targets if t.split(".")[0] == "start")
                for name, targets in every.items() if name.split(".")[0] == "healthz"}
    assert not {name: found for name, found in reaching.items() if found}
