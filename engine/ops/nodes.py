"""The node types a graph can use: nodes.list."""

from __future__ import annotations

from .. import samplers
from ..graph.node import node_schema
from ..opspec import op


@op("nodes.list")
async def nodes_list(ctx, args):
    """Every node type: version, inputs (type, required, default, choices), outputs; and the samplers with
    their A1111 labels and the schedules."""
    return {"nodes": node_schema(), **samplers.public()}
