"""The plug-ins' module structure (issue 14): no import circles inside a plug-in, and the shared shape (entry,
host, controller, settings, panels, workflow_form) where a plug-in has been moved to it. Reads the source only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAPE = ("host", "controller", "settings", "panels", "workflow_form")
ENTRIES = ("__init__", "paintbridge")   # Krita's and Blender's package entry; GIMP's plug-in executable
SHAPED = ("blender", "krita", "gimp")   # every plug-in is in the shared shape


def own_imports(pkg: Path) -> dict[str, set[str]]:
    """module -> the plug-in's own modules it imports (relative imports, and GIMP's plain sibling imports),
    at any depth of the file (a function-level import hides a circle, it does not remove it)."""
    mods = {f.stem for f in pkg.glob("*.py")}
    graph = {}
    for f in pkg.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {a.name for a in node.names} if node.module is None else {node.module.split(".")[0]}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                deps.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[0] for a in node.names}
        graph[f.stem] = deps & mods - {f.stem}
    for entry in ENTRIES:          # the entry imports everything; nothing imports it back
        graph.pop(entry, None)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path + [node, dep]
            if dep not in state:
                found = visit(dep, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


@pytest.mark.parametrize("host", ["krita", "blender", "gimp"])
def test_no_import_circles_inside_a_plugin(host):
    graph = own_imports(ROOT / "plugins" / host / "paintbridge")
    assert cycle(graph) is None, f"{host}: {' -> '.join(cycle(graph))}"


@pytest.mark.parametrize("host", SHAPED)
def test_the_shared_shape(host):
    pkg = ROOT / "plugins" / host / "paintbridge"
    graph = own_imports(pkg)
    assert set(SHAPE) <= set(graph), sorted(graph)
    # floors: host and settings import none of the others; panels are the only widgets and nothing imports them
    assert graph["host"] <= {"png"} and graph["settings"] == set()
    assert not any("panels" in deps for deps in graph.values())
    assert "controller" not in graph["workflow_form"] | graph["host"] | graph["settings"]


def test_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
