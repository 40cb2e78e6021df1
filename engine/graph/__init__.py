"""Typed node graphs: nodes (node.py), validation and execution (graph.py).

A node is one pydantic class: typed input fields, an Out class of typed outputs, one invoke(ctx). Inputs are
either literal values in the graph JSON or edges from another node's output. Big values (models, latents,
images, masks) only travel along edges, as in-process references, never through JSON.
"""

from .node import NODES, Node, node_schema  # noqa: F401
