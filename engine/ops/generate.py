"""generate: a canvas operation (txt2img, img2img, inpaint, outpaint, upscale) compiled to a graph and queued.

Everything a job needs is checked here, before it is queued: sizes, budgets, the model, the layers (their
format, size and that the caller may read them). A refused request changes nothing. `recall` (a gallery image
id) starts from that image's stored arguments, overridden by every argument given.
"""

from __future__ import annotations

import json
import random
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from .. import presets, samplers
from ..budgets import check_generate_budget
from ..canvas import compile_generate
from ..errors import BadRequest
from ..gallery.db import get_row
from ..graph import graph as graphs
from ..layers import Layer, check_layers
from ..models.registry import native_size
from ..opspec import Args, bad_args, op


class LoraRef(Args):
    model: str = Field(min_length=1, max_length=256)
    weight: float = Field(default=1.0, ge=-4.0, le=4.0)


class SourceInfo(Args):
    app: str = Field(default="", max_length=64)
    document: str = Field(default="", max_length=1024)


class GenerateArgs(Args):
    mode: Literal["txt2img", "img2img", "inpaint", "outpaint", "upscale"] = "txt2img"
    model: str | None = Field(default=None, max_length=256)
    prompt: str = Field(default="", max_length=10000)
    negative_prompt: str = Field(default="", max_length=10000)
    width: int | None = Field(default=None, ge=8)
    height: int | None = Field(default=None, ge=8)
    steps: int = Field(default=20, ge=1)
    guidance: float = Field(default=7.0, ge=0.0, le=50.0)
    seed: int | None = Field(default=None, ge=0, le=2 ** 53)
    strength: float = Field(default=0.75, ge=0.0, le=1.0)
    # A sampler id, A1111 label ("DPM++ 2M Karras") or ComfyUI name; stored as the id (engine/samplers.py).
    scheduler: str = Field(default="euler", max_length=64)
    schedule: str = Field(default="default", max_length=32)   # default | karras | trailing (= sgm_uniform)
    clip_skip: int = Field(default=1, ge=1, le=12)
    vae: str | None = Field(default=None, min_length=1, max_length=256)   # a registered VAE instead of the model's
    image: Layer | None = None
    mask: Layer | None = None
    batch: int = Field(default=1, ge=1)
    x: int = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
    y: int = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
    feather: float = Field(default=4.0, ge=0.0, le=128.0)
    scale: float = Field(default=2.0, gt=0.0, le=8.0)
    upscaler: str | None = Field(default=None, max_length=256)
    loras: list[LoraRef] = Field(default_factory=list, max_length=16)
    priority: int = Field(default=0, ge=-100, le=100)
    source: SourceInfo | None = None
    recall: str | None = Field(default=None, pattern=r"^[0-9a-f]{8,32}$")   # a gallery image id
    # a few-step sampling set-up by name (engine/presets.py): fills scheduler/schedule/steps/guidance not given
    # here and adds the LoRA it needs
    preset: str | None = Field(default=None, min_length=1, max_length=64)
    # live painting (SPEC §7 "Live"): at most one queued live job per connection, a newer one supersedes it;
    # with preempt a running live job of this connection stops at its next step too. Not in the gallery unless
    # kept (images.keep).
    live: bool = False
    preempt: bool = False

    @field_validator("scheduler")
    @classmethod
    def _sampler_name(cls, v):
        return samplers.normalize(v)

    @field_validator("schedule")
    @classmethod
    def _schedule_name(cls, v):
        return samplers.normalize_schedule(v)

    @model_validator(mode="after")
    def consistent(self):
        samplers.resolve(self.scheduler, self.schedule)
        if self.recall is not None:   # checked once merged with the recalled image's params (resolve_recall)
            return self
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and v % 8:
                raise ValueError(f"{name} {v} is not a multiple of 8")
        if self.mode == "txt2img" and self.width is None:
            self.width = self.height = 512
        if self.mode != "upscale" and not self.model:
            raise ValueError(f"mode {self.mode} needs a model")
        if self.mode != "txt2img" and self.image is None:
            raise ValueError(f"mode {self.mode} needs an image layer")
        if self.image is not None and self.image.format != "rgba8":
            raise ValueError("image must be an rgba8 layer")
        if self.mode == "inpaint":
            if self.mask is None:
                raise ValueError("inpaint needs a mask layer (gray8, 255 = generate)")
            if self.mask.format != "gray8":
                raise ValueError("mask must be a gray8 layer")
            if (self.mask.w, self.mask.h) != (self.image.w, self.image.h):
                raise ValueError(f"the mask is {self.mask.w}x{self.mask.h} but the image is "
                                 f"{self.image.w}x{self.image.h}: they must match")
        return self


async def resolve_recall(ctx, args: GenerateArgs) -> GenerateArgs:
    """generate with recall: the recalled image's params, overridden by every argument the caller gave."""
    await ctx.app.queue.settled(None if ctx.conn.is_admin else ctx.conn.uid)   # an image just made is archived
    row = await ctx.app.db.run(get_row, args.recall, ctx.conn.uid, ctx.conn.is_admin)
    if not row["params"]:
        raise BadRequest(f"image {args.recall} was made by a node graph, not by generate: resubmit its graph "
                         "(images.get returns it) with graph.submit", details={"field": "recall"})
    params = json.loads(row["params"])
    for key in ("live", "preempt"):   # a kept live image recalled is an ordinary request unless asked again
        params.pop(key, None)
    given = args.model_dump(include=set(args.model_fields_set) - {"recall"})
    try:
        merged = GenerateArgs.model_validate({**params, **given})
    except ValidationError as exc:
        raise bad_args("generate", exc) from None
    merged.recall = args.recall
    return merged


@op("generate", GenerateArgs, mutating=True)
async def generate(ctx, args: GenerateArgs):
    """A canvas operation (txt2img, img2img, inpaint, outpaint, upscale), compiled to a graph and queued."""
    app = ctx.app
    if args.recall is not None:
        args = await resolve_recall(ctx, args)
    check_generate_budget(app.config.limits, args)
    native = 512
    if args.mode != "upscale":
        from ..models.patch import check_addons   # imports torch: not at engine start, on the first generate

        entry = await ctx.run_blocking(app.registry.get, args.model, "main")
        native = await ctx.run_blocking(native_size, entry)   # reads config files: off the loop
        if args.preset:
            loras = await ctx.run_blocking(app.registry.list, "lora")
            need = presets.apply(args, args.preset, entry.family, args.model, loras, app.config.preset_loras,
                                 app.config.limits.max_steps)
            if need is not None:
                args.loras.append(LoraRef(model=need[0], weight=need[1]))
        # LoRAs and `<embedding>`s for another base are refused here, before anything is queued
        await ctx.run_blocking(check_addons, app.registry, entry, args.loras, [args.prompt, args.negative_prompt])
        if args.vae:
            from ..models.patch import check_vae

            vae = await ctx.run_blocking(app.registry.get, args.vae, "vae")
            check_vae(vae, entry.family, entry.name)
    elif args.upscaler:
        await ctx.run_blocking(app.registry.get, args.upscaler, "upscaler")
    # a live request's inputs as sent (before the engine picks a seed): the same inputs again start nothing
    same = json.dumps(args.model_dump(exclude={"source", "preempt", "priority"}), sort_keys=True) if args.live else ""
    if args.seed is None:
        # below 2**31 (so seed+batch too): every host's integer field (GIMP arguments, Blender properties) holds it,
        # and a recalled seed can be shown and edited there
        args.seed = random.randrange(2 ** 31 - 64)
    layers = [lay.model_dump() for lay in (args.image, args.mask) if lay is not None]
    await check_layers(ctx, layers)
    image = mask = None
    if args.mode in ("inpaint", "outpaint"):
        def read():
            img = np.frombuffer(app.blobs.read(args.image.sha256), np.uint8).reshape(args.image.h, args.image.w, 4)
            msk = None
            if args.mask is not None:
                msk = np.frombuffer(app.blobs.read(args.mask.sha256), np.uint8).reshape(args.mask.h, args.mask.w)
            return img, msk
        image, mask = await ctx.run_blocking(read)
    graph_raw = compile_generate(args, native, app.config.limits.max_pixels, image, mask)
    graph = graphs.validate(graph_raw)
    request = args.model_dump()
    app_name = (args.source.app if args.source else "") or ctx.conn.client_info.get("app", "")
    if args.live:
        job, unchanged = await app.queue.submit_live(ctx.conn.uid, ctx.conn.key, same, args.preempt, args.mode,
                                                     request, graph, args.priority, app_name)
        if unchanged:   # the newest live job of this connection had exactly these inputs: nothing new starts
            return {"job": job["id"], "seed": job["seed"], "unchanged": True}
        return {"job": job["id"], "seed": args.seed}
    job = await app.queue.submit(ctx.conn.uid, args.mode, request, graph, args.priority, app_name)
    return {"job": job, "seed": args.seed}
