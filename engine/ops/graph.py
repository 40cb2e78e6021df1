"""graph.submit: validate a node graph and queue it, with the same checks as generate (budgets, models, layers)."""

from __future__ import annotations

from pydantic import Field

from ..budgets import check_graph_budget
from ..graph import graph as graphs
from ..layers import check_layers, graph_layers
from ..opspec import Args, op


class SubmitArgs(Args):
    graph: dict
    priority: int = Field(default=0, ge=-100, le=100)


@op("graph.submit", SubmitArgs, mutating=True)
async def graph_submit(ctx, args: SubmitArgs):
    """Validate a node graph and queue it."""
    from ..models.patch import check_graph   # imports torch: not at engine start, on the first graph

    app = ctx.app
    graph = graphs.validate(args.graph)
    layers = graph_layers(graph)
    for nid, cls in graph.nodes.items():
        lits = graph.literals[nid]
        if cls.type == "load_model":
            await ctx.run_blocking(app.registry.get, lits["model"], "main")
    await ctx.run_blocking(check_graph, app.registry, graph)   # upscalers, LoRA/embedding bases
    await check_layers(ctx, layers)
    check_graph_budget(args.graph, app.config.limits)   # generate checks its own arguments against the same
    job = await app.queue.submit(ctx.conn.uid, "graph", {"graph": args.graph}, graph, args.priority,
                                 ctx.conn.client_info.get("app", ""))
    return {"job": job}
