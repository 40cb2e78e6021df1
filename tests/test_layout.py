"""The code's layout, checked: the import graph of engine/, protocol/ and plugins/ (read with ast, nothing is
imported to build it) has no circle, and no engine module imports a module from a higher floor.

Every import counts, also one inside a function: a function-level import still depends on what it imports.
The floors are data (FLOORS, bottom first); a new engine module must be given one, or this test fails.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT

# Bottom first. A module belongs to the floor of the longest prefix that names it (a package name covers its
# modules). A module may import modules on its own floor or below, never above; nothing may form a circle.
FLOORS: list[tuple[str, list[str]]] = [
    ("wire",      ["protocol"]),
    ("base",      ["engine", "engine.errors", "engine.config", "engine.events", "engine.aio", "engine.names",
                   "engine.netguard"]),
    ("storage",   ["engine.store", "engine.auth", "engine.graph", "engine.opspec"]),
    ("rules",     ["engine.layers", "engine.budgets", "engine.canvas", "engine.workflows", "engine.prompts",
                   "engine.samplers", "engine.regions", "engine.preprocess", "engine.control_presets",
                   "engine.tiles", "engine.presets"]),
    ("models",    ["engine.models", "engine.diffusion", "engine.conditioning", "engine.attention", "engine.refine"]),
    ("nodes",     ["engine.nodes"]),
    ("services",  ["engine.job_context", "engine.queue", "engine.gallery", "engine.hub", "engine.sessions",
                   "engine.uploads", "engine.pool"]),
    ("ops",       ["engine.ops"]),
    ("root",      ["engine.app"]),
    ("transport", ["engine.server", "engine.web"]),
    ("commands",  ["engine.cli", "engine.process", "engine.plugin_build"]),
]

PLUGINS = ["plugins.krita.paintbridge", "plugins.blender.paintbridge", "plugins.gimp.paintbridge"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("engine", "protocol", "plugins"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "_vendor" in path.parts or "__pycache__" in path.parts:
                continue
            out[_module_name(path)] = path
    return out


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _unvendor(name: str) -> str:
    """A plug-in's bundled copy of protocol/ (paintbridge._vendor.protocol.X) stands for protocol.X."""
    if "._vendor.protocol" in name:
        return "protocol" + name.split("._vendor.protocol", 1)[1]
    return name


def _local(name: str, mod: str, modules: dict[str, Path]) -> str | None:
    """Our module that `name` (as imported by mod) stands for, or None for the standard library and packages."""
    name = _unvendor(name)
    if mod.startswith("plugins.") and name.split(".")[0] not in ("engine", "protocol", "plugins"):
        # GIMP's plug-in puts its own folder on sys.path: `import controller` is a sibling module
        sibling = ".".join(mod.split(".")[:3] + [name])
        if sibling in modules:
            return sibling
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _unvendor(_resolve(mod, is_pkg, node))
                # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                hit = _local(t, mod, modules)
                if hit is not None and hit != mod:
                    graph[mod].add(hit)
    return graph


def floor_of(mod: str) -> int | None:
    best, floor = -1, None
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best:
                best, floor = len(p), i
    return floor


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str):
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    graph = import_graph()
    assert {"protocol.codec", "engine.ops"} <= graph["engine.server"]   # absolute and relative imports
    assert "engine.diffusion" in graph["engine.nodes.diffusion"]        # an import inside a function
    for plugin in PLUGINS:   # each plug-in reaches protocol/ (bundled as _vendor.protocol, or on sys.path)
        assert any(dep.startswith("protocol.") for mod, deps in graph.items() if mod.startswith(plugin)
                   for dep in deps), plugin


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_engine_module_has_a_floor():
    lost = sorted(m for m in import_graph() if m.startswith(("engine", "protocol")) and floor_of(m) is None)
    assert not lost, f"give these modules a floor in tests/test_layout.py FLOORS: {lost}"


def test_nothing_imports_upwards():
    graph = import_graph()
    bad = []
    for mod, deps in sorted(graph.items()):
        if mod.startswith("plugins."):
            continue
        for dep in sorted(deps):
            if dep.startswith("plugins."):
                bad.append(f"{mod} imports the plug-in module {dep}")
            elif floor_of(dep) > floor_of(mod):
                bad.append(f"{mod} ({FLOORS[floor_of(mod)][0]}) imports {dep} ({FLOORS[floor_of(dep)][0]})")
    assert not bad, "imports that climb:\n" + "\n".join(bad)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugins_import_only_protocol_and_themselves(plugin):
    graph = import_graph()
    bad = [f"{mod} imports {dep}" for mod, deps in sorted(graph.items()) if mod.startswith(plugin)
           for dep in sorted(deps) if not (dep.startswith(plugin) or dep.split(".")[0] == "protocol")]
    assert not bad, "\n".join(bad)


def test_every_op_lives_in_the_module_named_after_its_prefix():
    """`X.y` (and a bare `X`) is handled in engine/ops/X.py: finding an op's code takes its name only."""
    import engine.ops
    from engine.ops import OPS

    for info in pkgutil.iter_modules(engine.ops.__path__):   # every handler module, whoever imports it
        importlib.import_module(f"engine.ops.{info.name}")
    assert {"hello", "generate", "images.list", "users.list"} <= set(OPS)
    wrong = sorted(f"{name} is handled in {spec.handler.__module__}" for name, spec in OPS.items()
                   if spec.handler.__module__ != f"engine.ops.{name.split('.')[0]}")
    assert not wrong, "\n".join(wrong)


EMITTERS = {"publish", "broadcast", "publish_threadsafe", "broadcast_threadsafe", "on_event", "event", "Event"}


def test_events_are_named_only_in_engine_events():
    """Every emitter takes its event's name from engine/events.py: no other engine module spells out a known
    event's name, or hands an emitter (publish, broadcast, on_event, codec.event, Event) a literal name."""
    from engine import events

    assert {"job.queued", "job.progress", "job.result", "auth.refreshed", "model.loaded"} <= set(events.NAMES)
    spelled = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        if path == ROOT / "engine" / "events.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in events.NAMES:
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and "." in node.args[0].value:
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if func in EMITTERS:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {func}({node.args[0].value!r}, ...)")
    assert not spelled, "name events in engine/events.py and build them there:\n" + "\n".join(spelled)


def test_an_engine_without_a_pool_never_imports_ray(tmp_path):
    """Ray is an optional extra: the engine built, started and stopped without --workers/--ray-address (and every
    op and subcommand module loaded) has not imported it."""
    code = """
import asyncio, sys
import engine.cli, engine.ops, engine.server
from engine.app import build
from engine.config import load_config

services = build(load_config(sys.argv[1]))
assert services.pool is None and type(services.queue.runner).__name__ == "InProcessRunner"

async def cycle():
    await services.start()
    await services.stop()

asyncio.run(cycle())
services.db.close()
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print(loaded)
sys.exit(1 if loaded else 0)
"""
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
