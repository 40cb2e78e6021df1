"""Saved workflows: workflows.save|list|get|delete|run (logic and the parameter schema in engine/workflows.py).

Workflows belong to one user and are named uniquely per user. `run` substitutes the parameter values into
the stored graph and queues it with the same checks as graph.submit (models exist, layers readable by the
caller, budgets), as a job of kind "workflow".
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .. import workflows as wfs
from ..errors import BadRequest
from ..graph import graph as graphs
from . import Args, op
from .jobs import Layer, _queue, check_layers

Name = Field(min_length=1, max_length=128)


class SaveArgs(Args, wfs.WorkflowIn):
    replace: bool = True


@op("workflows.save", SaveArgs, mutating=True)
async def workflows_save(ctx, args: SaveArgs):
    """Save (or, with the same name, replace) a graph with exposed parameters: {workflow, replaced}."""
    name, graph, params = await ctx.server.run_blocking(wfs.prepare, args)
    saved = await ctx.server.db.run(wfs.save, ctx.conn.uid, name, args.description, graph, params, args.replace)
    replaced = saved.pop("replaced")
    return {"workflow": saved, "replaced": replaced}


@op("workflows.list")
async def workflows_list(ctx, args):
    """Your workflows with their parameter schemas (no graphs): {workflows}."""
    return {"workflows": await ctx.server.db.run(wfs.list_, ctx.conn.uid)}


class NameArgs(Args):
    name: str = Name


@op("workflows.get", NameArgs)
async def workflows_get(ctx, args: NameArgs):
    """One workflow with its graph: {workflow}; the same content as an exported file under `file`."""
    row = await ctx.server.db.run(wfs.get, ctx.conn.uid, args.name)
    return {"workflow": wfs.public(row, full=True), "file": wfs.to_file(row)}


@op("workflows.delete", NameArgs, mutating=True)
async def workflows_delete(ctx, args: NameArgs):
    """Delete a workflow."""
    await ctx.server.db.run(wfs.delete, ctx.conn.uid, args.name)
    return {}


class RunArgs(Args):
    name: str = Name
    values: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-100, le=100)


@op("workflows.run", RunArgs, mutating=True)
async def workflows_run(ctx, args: RunArgs):
    """Run a workflow with parameter values (others take their defaults): {job}."""
    from ..queue import check_graph_budget

    queue = _queue(ctx)
    server = ctx.server
    row = await server.db.run(wfs.get, ctx.conn.uid, args.name)
    graph_raw = await server.run_blocking(wfs.build_run_graph, row, args.values)
    graph = graphs.validate(graph_raw)
    check_graph_budget(graph_raw, server.config.limits)
    layers = []
    for nid, cls in graph.nodes.items():
        lits = graph.literals[nid]
        if cls.type in ("image_input", "mask_input"):
            try:
                layers.append(Layer.model_validate(lits["layer"]).model_dump())
            except Exception as exc:
                raise BadRequest(f"node {nid!r}: layer: not a valid layer ({exc.__class__.__name__})",
                                 details={"node": nid, "field": "layer"}) from None
        if cls.type == "load_model":
            await server.run_blocking(queue.registry.get, lits["model"])
    await check_layers(ctx, layers)
    job = await queue.submit(ctx.conn.uid, "workflow", {"workflow": row["name"], "values": args.values}, graph_raw,
                             args.priority, ctx.conn.client_info.get("app", ""))
    return {"job": job}
