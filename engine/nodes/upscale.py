"""Upscaler nodes: load an ESRGAN-family model (through spandrel) and upscale an image with it, in tiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ..graph.node import LINK_TYPES, Image, Node
from ..models.upscale import upscale_image


@dataclass(eq=False)
class UpscalerValue:
    upscaler: Any        # engine.models.upscale.Upscaler
    name: str


LINK_TYPES[UpscalerValue] = "upscaler"   # travels only along edges


class LoadUpscaler(Node):
    """Load an upscaler model (ESRGAN, Real-ESRGAN, SwinIR, ...) by name; stays cached between jobs."""

    type = "load_upscaler"
    title = "Load upscaler"
    model: str = Field(min_length=1, max_length=256)

    class Out(Node.Out):
        upscaler: UpscalerValue

    def invoke(self, ctx) -> Out:
        return self.Out(upscaler=UpscalerValue(ctx.load_upscaler(self.model), self.model))


class Upscale(Node):
    """Upscale with a model to exactly width x height: model passes (in tiles of `tile` px with `overlap` px of
    context, so any size fits in bounded memory) until the image is at least that big, then Lanczos to size."""

    type = "upscale"
    title = "Upscale"
    model: UpscalerValue
    image: Image
    width: int = Field(ge=1, le=65536)
    height: int = Field(ge=1, le=65536)
    tile: int = Field(default=512, ge=32, le=4096)
    overlap: int = Field(default=32, ge=0, le=256)

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        im = self.image
        # progress: tiles done of the pass's tiles (a second model pass, for a scale above the model's, counts
        # again from 1)
        rgba = upscale_image(self.model.upscaler, im.rgba, self.width, self.height, tile=self.tile,
                             pad=self.overlap, is_canceled=ctx.is_canceled,
                             on_tile=lambda done, n: ctx.report(done, n, tile=done, tiles=n))
        return self.Out(image=Image(rgba, im.x, im.y))
