"""Nodes that run the diffusion model: prompt encoding, noise, denoising, VAE encode/decode.

engine.diffusion (torch, diffusers) is imported inside invoke(): the server starts and validates graphs without
paying for those imports until a job runs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import regions as region_rules
from .. import samplers
from ..graph.node import ConditioningValue, ControlList, Image, Latents, Mask, ModelValue, Node, Noise, ReferenceList
from ..layers import Layer, ReferenceLayer

# Ids only in the schema (nodes.list lists them); A1111 labels and ComfyUI names are turned into ids on input.
Scheduler = Literal[tuple(samplers.SAMPLERS)]
Schedule = Literal[samplers.SCHEDULES]


class PromptEncode(Node):
    """Encode a prompt and a negative prompt with the model's text encoders. Long prompts go in 75-token chunks
    (BREAK starts one); A1111 weights like (word:1.2) apply; clip_skip 2 uses the penultimate layer."""

    type = "prompt"
    title = "Prompt"
    model: ModelValue
    text: str = Field(default="", max_length=10000)
    negative: str = Field(default="", max_length=10000)
    clip_skip: int = Field(default=1, ge=1, le=12)

    class Out(Node.Out):
        conditioning: ConditioningValue

    def invoke(self, ctx) -> Out:
        from .. import diffusion

        text = ctx.expand_prompt(self.text, self.model)
        negative = ctx.expand_prompt(self.negative, self.model)
        cond = diffusion.encode_prompt(self.model.loaded, text, negative, clip_skip=self.clip_skip)
        return self.Out(conditioning=ConditioningValue(cond, self.model.name))


class RegionLiteral(BaseModel):
    """One item of a regions node's `regions` (generate's `regions` item: prompt, negative_prompt, mask)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prompt: str = Field(default="", max_length=10000)
    negative_prompt: str = Field(default="", max_length=10000)
    mask: Layer
    reference: list[ReferenceLayer] = Field(default=[], max_length=8)

    @field_validator("mask")
    @classmethod
    def _gray(cls, v):
        if v.format != "gray8":
            raise ValueError("a region's mask must be a gray8 layer (255 = this region)")
        return v


MAX_REGIONS = 64   # per node; generate's configurable limit ([limits] max_regions, default 10) is lower


class Regions(Node):
    """Regional prompts: each region's prompt (followed by the base prompt) conditions only the area its mask
    covers; the base conditioning covers the rest. Masks are gray8 layers in document coordinates; x, y, width,
    height is the document area the denoise generates. A higher region (later in the list) takes its area from
    the ones below; one under 2 % of the area is dropped; one over 90 % becomes the base prompt. SD1/SD2/SDXL."""

    type = "regions"
    title = "Regions"
    model: ModelValue
    conditioning: ConditioningValue
    regions: list = Field(default=[], max_length=MAX_REGIONS)
    x: int = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
    y: int = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
    width: int = Field(default=512, ge=8, le=16384)
    height: int = Field(default=512, ge=8, le=16384)

    @field_validator("regions")
    @classmethod
    def _items(cls, v):
        return [RegionLiteral.model_validate(r).model_dump() for r in v]

    class Out(Node.Out):
        conditioning: ConditioningValue

    def invoke(self, ctx) -> Out:
        from .. import diffusion

        base = self.conditioning.cond
        loaded = self.model.loaded
        if loaded.family == "flux":
            raise ctx.error("regions are not supported for FLUX models (only SD1, SD2 and SDXL)")
        area = (self.x, self.y, self.width, self.height)
        items = []
        for i, r in enumerate(self.regions):
            if not r["prompt"].strip() and not base.prompt.strip():
                raise ctx.error(f"region {i}: give it a prompt, or give a base prompt")
            mask = ctx.load_mask(r["mask"])
            items.append((ctx.expand_prompt(r["prompt"], self.model),
                          ctx.expand_prompt(r["negative_prompt"], self.model),
                          region_rules.shrink(region_rules.crop_to_area(mask.gray, mask.x, mask.y, area))))
        if not items:
            return self.Out(conditioning=self.conditioning)
        plan = region_rules.plan(items, base.prompt, base.negative)
        if plan.became_base is not None:
            base = diffusion.encode_prompt(loaded, plan.prompt, plan.negative, clip_skip=base.clip_skip)
        references = []   # a region's references act where it does; the one that became the base: everywhere
        if plan.became_base is not None:
            references += [(ref, None) for ref in self._references(ctx, plan.became_base)]
        parts = []
        for r in plan.regions:
            ctx.check_canceled()
            enc = diffusion.encode_prompt(loaded, r.prompt, r.negative, clip_skip=base.clip_skip)
            parts.append(diffusion.RegionConditioning(r.index, r.prompt, r.negative, enc.tensors, r.coverage))
            references += [(ref, r.coverage) for ref in self._references(ctx, r.index)]
        if not parts and not references:
            return self.Out(conditioning=ConditioningValue(base, self.conditioning.model))
        cond = diffusion.Conditioning(family=base.family, prompt=base.prompt, negative=base.negative,
                                      tensors=base.tensors, clip_skip=base.clip_skip, regions=parts,
                                      background=plan.background if parts else None, references=references)
        return self.Out(conditioning=ConditioningValue(cond, self.conditioning.model))

    def _references(self, ctx, index: int) -> list:
        """Region `index`'s IP-Adapter references, their images encoded (engine.models.control.Reference)."""
        from ..models.control import Reference, image_embeds
        from ..preprocess import flatten

        out = []
        for ref in self.regions[index]["reference"]:
            weights, encoder = ctx.load_reference(ref["model"], self.model)
            pos, neg = image_embeds(encoder, flatten(ctx.load_image(ref["image"]).rgba, 255), weights.plus)
            out.append(Reference(ref["model"], weights, pos, neg, float(ref["strength"]), float(ref["start"]),
                                 float(ref["end"])))
        return out


class NoiseNode(Node):
    """The starting noise: a seed and a size (multiples of 8)."""

    type = "noise"
    title = "Noise"
    seed: int = Field(default=0, ge=0, le=2 ** 63 - 1)
    width: int = Field(default=512, ge=8, le=16384, multiple_of=8)
    height: int = Field(default=512, ge=8, le=16384, multiple_of=8)

    class Out(Node.Out):
        noise: Noise

    def invoke(self, ctx) -> Out:
        return self.Out(noise=Noise(self.seed, self.width, self.height))


class Denoise(Node):
    """Denoise from noise (txt2img), or from an image with strength < 1 (img2img), only where the mask is
    set (inpaint), steered by controls (ControlNet / T2I-Adapter) and image references (IP-Adapter) if given.
    Reports progress with a cheap preview after every step; stops at the next step on cancel."""

    type = "denoise"
    title = "Denoise"
    model: ModelValue
    conditioning: ConditioningValue
    noise: Noise
    image: Image | None = None
    mask: Mask | None = None
    control: ControlList | None = None
    reference: ReferenceList | None = None
    steps: int = Field(default=20, ge=1, le=1000)
    guidance: float = Field(default=7.0, ge=0.0, le=50.0)
    strength: float = Field(default=1.0, ge=0.0, le=1.0)
    scheduler: Scheduler = "euler"
    schedule: Schedule = "default"

    @field_validator("scheduler", mode="before")
    @classmethod
    def _sampler_name(cls, v):
        return samplers.normalize(v)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_name(cls, v):
        return samplers.normalize_schedule(v)

    @model_validator(mode="after")
    def _schedule_applies(self):
        samplers.resolve(self.scheduler, self.schedule)   # e.g. karras with DDIM: refused before queueing
        return self

    class Out(Node.Out):
        latents: Latents

    def invoke(self, ctx) -> Out:
        from .. import diffusion

        loaded = self.model.loaded
        w, h = self.noise.width, self.noise.height
        init = mask = None
        if self.image is not None:
            if (self.image.w, self.image.h) != (w, h):
                raise ctx.error(f"image is {self.image.w}x{self.image.h} but the noise is {w}x{h}")
            init = np.ascontiguousarray(self.image.rgba[..., :3])
        if self.mask is not None:
            if init is None:
                raise ctx.error("a mask needs an image to inpaint")
            mask = self.mask.gray
        latents = diffusion.denoise(
            loaded, self.conditioning.cond, width=w, height=h, steps=self.steps, guidance=self.guidance,
            seed=self.noise.seed, scheduler=self.scheduler, schedule=self.schedule,
            strength=self.strength if init is not None else 1.0,
            init_image=init, mask=mask,
            controls=list(self.control.items) if self.control is not None else [],
            references=list(self.reference.items) if self.reference is not None else [],
            on_step=lambda step, total, lat: ctx.progress(step, total, loaded, lat),
            is_canceled=ctx.is_canceled)
        return self.Out(latents=Latents(latents, loaded.family))


class VaeDecode(Node):
    """Latents to an opaque RGBA image."""

    type = "vae_decode"
    title = "VAE decode"
    model: ModelValue
    latents: Latents

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        from .. import diffusion

        rgb = diffusion.decode(self.model.loaded, self.latents.tensor)
        alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
        return self.Out(image=Image(np.concatenate([rgb, alpha], axis=2)))
