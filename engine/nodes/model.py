"""Model loading nodes."""

from __future__ import annotations

from pydantic import Field

from ..graph.node import ModelValue, Node


class LoadModel(Node):
    """Load a main model by name (from the configured model folders); stays cached between jobs. `vae`: a
    registered VAE to encode and decode with instead of the model's own (for this graph only)."""

    type = "load_model"
    title = "Load model"
    model: str = Field(min_length=1, max_length=256)
    vae: str | None = Field(default=None, min_length=1, max_length=256)

    class Out(Node.Out):
        model: ModelValue

    def invoke(self, ctx) -> Out:
        return self.Out(model=ctx.load_model(self.model, self.vae))
