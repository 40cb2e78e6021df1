"""Refine an image in tiles at the model's native size (engine/refine.py): upscale with a model, hires txt2img.

engine.refine (torch, diffusers) is imported inside invoke(), as in engine/nodes/diffusion.py.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .. import samplers, tiles
from ..graph.node import ConditioningValue, Image, ModelValue, Node
from .diffusion import Schedule, Scheduler


class RefineTiles(Node):
    """Refine an image in tiles of `tile` px (the model's native size) that overlap by `overlap` px (default:
    from the tile size and strength, engine/tiles.py), each one img2img at `strength`, blended together.
    Progress names the tile (`tile` of `tiles`) and the step; the preview is the whole image as it grows."""

    type = "refine_tiles"
    title = "Refine in tiles"
    model: ModelValue
    conditioning: ConditioningValue
    image: Image
    seed: int = Field(default=0, ge=0, le=2 ** 62)
    steps: int = Field(default=20, ge=1, le=1000)
    guidance: float = Field(default=7.0, ge=0.0, le=50.0)
    strength: float = Field(default=0.3, gt=0.0, le=1.0)
    scheduler: Scheduler = "euler"
    schedule: Schedule = "default"
    tile: int = Field(default=512, ge=tiles.MIN_TILE, le=tiles.MAX_TILE, multiple_of=tiles.MULTIPLE)
    overlap: int | None = Field(default=None, ge=0, le=tiles.MAX_TILE // 2)

    @field_validator("scheduler", mode="before")
    @classmethod
    def _sampler_name(cls, v):
        return samplers.normalize(v)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_name(cls, v):
        return samplers.normalize_schedule(v)

    @model_validator(mode="after")
    def _consistent(self):
        samplers.resolve(self.scheduler, self.schedule)
        if self.overlap is not None and self.overlap > self.tile // 2:
            raise ValueError(f"overlap {self.overlap} is more than half the tile ({self.tile // 2})")
        if self.strength * self.steps < 1:
            raise ValueError(f"strength {self.strength} with {self.steps} steps leaves no step to run")
        return self

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        from .. import refine   # torch, diffusers: only once a job runs

        loaded = self.model.loaded
        overlap = self.overlap if self.overlap is not None else tiles.default_overlap(self.tile, self.strength)
        rgba = refine.refine(
            loaded, self.conditioning.cond, self.image.rgba, steps=self.steps, guidance=self.guidance,
            seed=self.seed, strength=self.strength, tile=self.tile, overlap=overlap, scheduler=self.scheduler,
            schedule=self.schedule, is_canceled=ctx.is_canceled,
            on_step=lambda step, total, tile, n, rgb: ctx.report(step, total, rgb, tile=tile, tiles=n))
        return self.Out(image=Image(rgba, self.image.x, self.image.y))
