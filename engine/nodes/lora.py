"""LoRA node: put a LoRA on the model for everything downstream of it (prompt, denoise)."""

from __future__ import annotations

from pydantic import Field

from ..graph.node import ModelValue, Node


class Lora(Node):
    """Apply a LoRA (by name, with a weight) to a model. Chain several for several LoRAs. Only the nodes fed
    from this one see it; the cached model is restored after the job."""

    type = "lora"
    title = "LoRA"
    model: ModelValue
    lora: str = Field(min_length=1, max_length=256)
    weight: float = Field(default=1.0, ge=-4.0, le=4.0)

    class Out(Node.Out):
        model: ModelValue

    def invoke(self, ctx) -> Out:
        return self.Out(model=ctx.add_lora(self.model, self.lora, self.weight))
