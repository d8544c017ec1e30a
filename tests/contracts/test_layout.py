"""The house rules that keep the architecture visible, checked on the source itself.

What a reviewer would otherwise have to notice by eye: an import circle (also one hidden under
TYPE_CHECKING or inside a function), a dependency pointing the wrong way between the three top
packages, a second module writing a table, and the worker processes pulling in the engine.
"""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("workflows", "triggers", "engine")  #: each may import only those before it


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            mods[name] = path
    return mods


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every first-party module ``name`` imports, wherever in the file the import stands."""
    path = MODULES[name]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def test_no_import_circles() -> None:
    try:
        tuple(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as exc:
        pytest.fail("import circle: " + " -> ".join(exc.args[1]))


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    later = PACKAGES[PACKAGES.index(package) + 1 :]
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] in later
    )
    assert not wrong, f"{package} may import only {PACKAGES[: PACKAGES.index(package)]}: {wrong}"


@pytest.mark.parametrize(
    "module",
    [
        "engine.executors.worker",
        "engine.executors.api_client",
        "engine.executors.forkserver",
        "engine.executors.slurm_batch",
    ],
)
def test_worker_processes_import_nothing_of_ours(module: str) -> None:
    """A worker imports only the standard library: every call's cold start pays for the rest (and
    the Slurm batch script runs on nodes that have no Sluice at all)."""
    assert not GRAPH[module], f"{module} imports {sorted(GRAPH[module])}"


_WRITE = re.compile(
    r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|(?<!DO )UPDATE|DELETE\s+FROM)\s+(\w+)", re.I
)


def test_each_table_is_written_by_one_module() -> None:
    writers: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for table in _WRITE.findall(node.value):
                    writers.setdefault(table.lower(), set()).add(name)
    assert writers, "no SQL write found: the pattern no longer matches the code"
    shared = {table: sorted(mods) for table, mods in writers.items() if len(mods) > 1}
    assert not shared, f"tables written from more than one module: {shared}"


MAX_LINES = 600  #: past this a module holds more than one concept; split it along one


def test_no_module_is_over_600_lines() -> None:
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these along one concept each: {long}"
