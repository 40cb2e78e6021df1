"""Graph validation (before anything is queued) and execution (inside a job).

Wire shape:
    {"nodes": {ID: {"type": TYPE, FIELD: literal, ...}, ...},
     "edges": [{"from": [ID, OUTPUT], "to": [ID, FIELD]}, ...]}
Every error names the node and the field, so a person can find it in their graph.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import ValidationError

from ..errors import BadRequest, TooLarge
from .node import NODES, Node, compatible

ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_NODES = 512


def _err(message: str, node: str | None = None, field_name: str | None = None) -> BadRequest:
    return BadRequest(message, details={"node": node, "field": field_name})


@dataclass
class Graph:
    nodes: dict[str, type[Node]]                   # id -> node class
    literals: dict[str, dict[str, Any]]            # id -> {field: value}
    edges: dict[str, dict[str, tuple[str, str]]]   # to id -> {field: (from id, output)}
    order: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    def output_nodes(self) -> list[str]:
        return [n for n in self.order if getattr(self.nodes[n], "is_output", False)]


def validate(raw: Any) -> Graph:
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), dict):
        raise _err("a graph is a map {nodes: {id: node}, edges: [...]}")
    unknown_keys = set(raw) - {"nodes", "edges", "meta"}
    if unknown_keys:
        raise _err(f"unknown graph keys: {sorted(unknown_keys)}")
    if len(raw["nodes"]) > MAX_NODES:
        raise _err(f"a graph has at most {MAX_NODES} nodes")
    if not raw["nodes"]:
        raise _err("the graph has no nodes")
    nodes: dict[str, type[Node]] = {}
    literals: dict[str, dict] = {}
    for nid, spec in raw["nodes"].items():
        if not isinstance(nid, str) or not ID_RE.match(nid):
            raise _err(f"node id {nid!r} must be 1-64 characters of letters, digits and _.:-", node=str(nid))
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise _err(f"node {nid!r}: needs a 'type'", node=nid, field_name="type")
        cls = NODES.get(spec["type"])
        if cls is None:
            raise _err(f"node {nid!r}: unknown node type {spec['type']!r}", node=nid, field_name="type")
        want = spec.get("version")
        if want is not None and not isinstance(want, str):
            raise _err(f"node {nid!r}: version must be a string like {cls.version!r}", node=nid,
                       field_name="version")
        if want is not None and want.split(".")[0] != cls.version.split(".")[0]:
            raise _err(f"node {nid!r}: {spec['type']} version {want} is not supported (this engine has "
                       f"{cls.version}); update the graph", node=nid, field_name="version")
        lits = {k: v for k, v in spec.items() if k not in ("type", "version")}
        for fname in lits:
            if fname not in cls.model_fields:
                raise _err(f"node {nid!r} ({cls.type}): unknown input {fname!r}", node=nid, field_name=fname)
            if cls.link_only(fname):
                raise _err(f"node {nid!r} ({cls.type}): input {fname!r} must come from an edge", node=nid,
                           field_name=fname)
        nodes[nid], literals[nid] = cls, lits

    edges: dict[str, dict[str, tuple[str, str]]] = {nid: {} for nid in nodes}
    raw_edges = raw.get("edges", [])
    if not isinstance(raw_edges, list):
        raise _err("edges must be a list")
    for e in raw_edges:
        try:
            (src, out), (dst, inp) = e["from"], e["to"]
            assert all(isinstance(s, str) for s in (src, out, dst, inp))
        except Exception:
            raise _err(f"an edge is {{from: [node, output], to: [node, input]}}, got {e!r}"[:300]) from None
        if src not in nodes:
            raise _err(f"edge into {dst!r}.{inp}: no node {src!r}", node=dst, field_name=inp)
        if dst not in nodes:
            raise _err(f"edge from {src!r}.{out}: no node {dst!r}", node=src, field_name=out)
        outs = nodes[src].outputs()
        if out not in outs:
            raise _err(f"node {src!r} ({nodes[src].type}) has no output {out!r}", node=src, field_name=out)
        ins = nodes[dst].inputs()
        if inp not in ins:
            raise _err(f"node {dst!r} ({nodes[dst].type}) has no input {inp!r}", node=dst, field_name=inp)
        if not compatible(outs[out], ins[inp][0]):
            raise _err(f"node {dst!r}: input {inp!r} takes {ins[inp][0]}, but {src!r}.{out} gives {outs[out]}",
                       node=dst, field_name=inp)
        if inp in edges[dst] or inp in literals[dst]:
            raise _err(f"node {dst!r}: input {inp!r} is given twice", node=dst, field_name=inp)
        edges[dst][inp] = (src, out)

    for nid, cls in nodes.items():
        for fname, (tname, required) in cls.inputs().items():
            if required and fname not in literals[nid] and fname not in edges[nid]:
                raise _err(f"node {nid!r} ({cls.type}): missing input {fname!r} ({tname})", node=nid,
                           field_name=fname)
        # literal values are checked now, with edge-fed fields filled by placeholders that skip validation
        try:
            cls.model_validate({**literals[nid], **{f: None for f in edges[nid]}})
        except ValidationError as exc:
            errs = [e for e in exc.errors(include_url=False) if e["loc"] and e["loc"][0] not in edges[nid]]
            if errs:
                f = str(errs[0]["loc"][0])
                raise _err(f"node {nid!r} ({cls.type}): {f}: {errs[0]['msg']}", node=nid, field_name=f) from None

    order = _toposort(nodes, edges)
    graph = Graph(nodes, literals, edges, order, raw)
    if not graph.output_nodes():
        raise _err("the graph has no output node: add an 'output' node for each image to return")
    return graph


def _toposort(nodes, edges) -> list[str]:
    state: dict[str, int] = {}
    order: list[str] = []
    for start in nodes:
        if state.get(start):
            continue
        stack = [(start, iter(sorted(set(s for s, _ in edges[start].values()))))]
        state[start] = 1
        while stack:
            nid, deps = stack[-1]
            for dep in deps:
                if state.get(dep) == 1:
                    raise _err(f"the graph has a cycle through node {dep!r}", node=dep)
                if not state.get(dep):
                    state[dep] = 1
                    stack.append((dep, iter(sorted(set(s for s, _ in edges[dep].values())))))
                    break
            else:
                stack.pop()
                state[nid] = 2
                order.append(nid)
    return order


def _cache_key(graph: Graph, nid: str, keys: dict[str, str]) -> str:
    """Identity of a node's outputs: its type, version, literals and the keys of what feeds it."""
    cls = graph.nodes[nid]
    ident = {"t": cls.type, "v": cls.version, "l": graph.literals[nid],
             "e": {f: [keys[s], o] for f, (s, o) in sorted(graph.edges[nid].items())}}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def execute(graph: Graph, ctx, on_node: Callable[[str, Node], None] | None = None,
            max_live_bytes: int | None = None) -> dict[str, Node.Out]:
    """Run the nodes in dependency order. Nodes with identical inputs run once (cache by input hash).

    Each node's outputs are dropped after their last consumer has run (or at once when nothing consumes them),
    and the pixels/tensors alive at any moment must stay within max_live_bytes: a graph of many nodes each within
    the pixel budget must not add up to tens of GiB. Returns the outputs still alive (those nothing consumed
    are gone)."""
    last_use: dict[str, int] = {}
    for index, nid in enumerate(graph.order):
        for src, _ in graph.edges[nid].values():
            last_use[src] = index
    keys: dict[str, str] = {}
    results: dict[str, Node.Out] = {}
    cache: dict[str, Node.Out] = {}
    live: dict[str, int] = {}   # bytes held per cache key
    ctx.node_count = len(graph.order)
    for index, nid in enumerate(graph.order):
        ctx.check_canceled()
        key = keys[nid] = _cache_key(graph, nid, keys)
        if key in cache and not getattr(graph.nodes[nid], "is_output", False):
            results[nid] = cache[key]
        else:
            values = dict(graph.literals[nid])
            for fname, (src, out) in graph.edges[nid].items():
                values[fname] = getattr(results[src], out)
            node = graph.nodes[nid].model_validate(values)
            ctx.node_id, ctx.node_index = nid, index
            if on_node:
                on_node(nid, node)
            results[nid] = cache[key] = node.invoke(ctx)
            live[key] = _nbytes(results[nid])
            if max_live_bytes is not None and sum(live.values()) > max_live_bytes:
                raise TooLarge(f"node {nid!r}: the job holds {sum(live.values()) / 2 ** 20:.0f} MiB of images and "
                               f"tensors, over the per-job budget of {max_live_bytes / 2 ** 20:.0f} MiB "
                               "(max_job_bytes)", details={"node": nid})
        # Free what no later node reads. A cache entry goes with the last node that holds it.
        for done in [s for s, _ in graph.edges[nid].values()] + [nid]:
            if last_use.get(done, -1) <= index and done in results:
                gone = results.pop(done)
                if not any(r is gone for r in results.values()):
                    cache.pop(keys[done], None)
                    live.pop(keys[done], None)
    return results


def _nbytes(out: Node.Out) -> int:
    """Bytes of the arrays and tensors in a node's outputs (one level into Image/Mask/Latents-like values)."""
    total = 0
    for name in type(out).model_fields:
        value = getattr(out, name, None)
        for part in (value, *getattr(value, "__dict__", {}).values()):
            size = getattr(part, "nbytes", None)
            if isinstance(size, int):
                total += size
    return total
