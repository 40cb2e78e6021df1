"""Saved workflows: workflows.save|list|get|delete|run (logic and the parameter schema in engine/workflows.py).

Workflows belong to one user and are named uniquely per user. `run` substitutes the parameter values into
the stored graph and queues it with the same checks as graph.submit (models exist, layers readable by the
caller, budgets), as a job of kind "workflow".
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .. import workflows as wfs
from ..budgets import check_graph_budget
from ..graph import graph as graphs
from ..layers import check_layers, graph_layers
from ..opspec import Args, op

Name = Field(min_length=1, max_length=128)


class SaveArgs(Args, wfs.WorkflowIn):
    replace: bool = True


@op("workflows.save", SaveArgs, mutating=True)
async def workflows_save(ctx, args: SaveArgs):
    """Save (or, with the same name, replace) a graph with exposed parameters: {workflow, replaced}."""
    name, graph, params = await ctx.run_blocking(wfs.prepare, args)
    saved = await ctx.app.db.run(wfs.save, ctx.conn.uid, name, args.description, graph, params, args.replace)
    replaced = saved.pop("replaced")
    return {"workflow": saved, "replaced": replaced}


@op("workflows.list")
async def workflows_list(ctx, args):
    """Your workflows with their parameter schemas (no graphs): {workflows}."""
    return {"workflows": await ctx.app.db.run(wfs.list_, ctx.conn.uid)}


class NameArgs(Args):
    name: str = Name


@op("workflows.get", NameArgs)
async def workflows_get(ctx, args: NameArgs):
    """One workflow with its graph: {workflow}; the same content as an exported file under `file`."""
    row = await ctx.app.db.run(wfs.get, ctx.conn.uid, args.name)
    return {"workflow": wfs.public(row, full=True), "file": wfs.to_file(row)}


@op("workflows.delete", NameArgs, mutating=True)
async def workflows_delete(ctx, args: NameArgs):
    """Delete a workflow."""
    await ctx.app.db.run(wfs.delete, ctx.conn.uid, args.name)
    return {}


class RunArgs(Args):
    name: str = Name
    values: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-100, le=100)


@op("workflows.run", RunArgs, mutating=True)
async def workflows_run(ctx, args: RunArgs):
    """Run a workflow with parameter values (others take their defaults): {job}."""
    app = ctx.app
    row = await app.db.run(wfs.get, ctx.conn.uid, args.name)
    graph_raw = await ctx.run_blocking(wfs.build_run_graph, row, args.values)
    graph = graphs.validate(graph_raw)
    check_graph_budget(graph_raw, app.config.limits)
    layers = graph_layers(graph)
    for nid, cls in graph.nodes.items():
        lits = graph.literals[nid]
        if cls.type == "load_model":
            await ctx.run_blocking(app.registry.get, lits["model"])
    await check_layers(ctx, layers)
    job = await app.queue.submit(ctx.conn.uid, "workflow", {"workflow": row["name"], "values": args.values}, graph,
                                 args.priority, ctx.conn.client_info.get("app", ""))
    return {"job": job}
