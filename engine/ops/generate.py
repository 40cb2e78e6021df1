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

from .. import presets, samplers, tiles
from ..budgets import check_generate_budget
from ..canvas import compile_generate, uses_hires
from ..errors import BadRequest
from ..gallery.db import get_row
from ..graph import graph as graphs
from ..layers import Layer, ReferenceLayer, SteeringLayer, check_layers
from ..models.registry import native_size
from ..opspec import Args, bad_args, op
from ..preprocess import METHODS


UPSCALE_STRENGTH = 0.3   # upscale with a model: enough to add detail, little enough to keep the picture
HIRES_STRENGTH = 0.4     # hires txt2img: the first pass's upscale is softer, so it is refined a little more


class LoraRef(Args):
    model: str = Field(min_length=1, max_length=256)
    weight: float = Field(default=1.0, ge=-4.0, le=4.0)


class ControlRef(SteeringLayer):
    """A ControlNet or T2I-Adapter and its image (in document coordinates, like `image`)."""

    preprocess: Literal[METHODS] = "none"


class RegionArgs(Args):
    """One region: a prompt (followed by the base prompt) for the area its gray8 mask covers (document
    coordinates). control/reference/loras per region are refused before queueing (protocol/SPEC.md says why)."""

    prompt: str = Field(default="", max_length=10000)
    negative_prompt: str | None = Field(default=None, max_length=10000)
    mask: Layer
    control: list | None = None
    reference: list[ReferenceLayer] = Field(default_factory=list, max_length=8)   # acts only in this region
    loras: list | None = None
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
    # upscale with a model, and hires txt2img: refine in tiles (engine/nodes/refine.py); defaults from the model
    tile: int | None = Field(default=None, ge=tiles.MIN_TILE, le=tiles.MAX_TILE)
    overlap: int | None = Field(default=None, ge=0, le=tiles.MAX_TILE // 2)
    hires: bool = False
    hires_strength: float = Field(default=HIRES_STRENGTH, ge=0.0, le=1.0)
    loras: list[LoraRef] = Field(default_factory=list, max_length=16)
    regions: list[RegionArgs] = Field(default_factory=list, max_length=64)   # [limits] max_regions applies too
    control: list[ControlRef] = Field(default_factory=list, max_length=64)       # also limited by max_controls
    reference: list[ReferenceLayer] = Field(default_factory=list, max_length=64)
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
        if self.mode == "upscale" and (self.control or self.reference):
            raise ValueError("control and reference steer diffusion: mode upscale takes neither")
        if self.mode == "upscale" and "strength" not in self.model_fields_set:
            self.strength = UPSCALE_STRENGTH
        tiled = (self.mode == "upscale" and self.model) or (self.mode == "txt2img" and self.hires)
        if (self.tile is not None or self.overlap is not None) and not tiled:
            raise ValueError("tile and overlap apply to upscale with a model, or txt2img with hires")
        if self.tile is not None and self.tile % tiles.MULTIPLE:
            raise ValueError(f"tile {self.tile} is not a multiple of {tiles.MULTIPLE}")
        if self.tile is not None and self.overlap is not None and self.overlap > self.tile // 2:
            raise ValueError(f"overlap {self.overlap} is more than half the tile ({self.tile // 2})")
        if self.mode == "upscale" and self.model and 0 < self.strength * self.steps < 1:
            raise ValueError(f"strength {self.strength} with {self.steps} steps leaves no step to run")
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


def document_area(args: GenerateArgs) -> tuple[int, int, int, int]:
    """The document rectangle a generate works in: the image layer's, or txt2img's x, y, width, height."""
    if args.image is not None:
        return args.image.x, args.image.y, args.image.w, args.image.h
    return args.x, args.y, args.width, args.height


def check_regions(args: GenerateArgs, max_regions: int, family: str | None) -> None:
    """bad_request naming the region (details.field "regions.N..."), before anything is queued."""
    if not args.regions:
        return

    def bad(i, message, where=""):
        field = f"regions.{i}" + (f".{where}" if where else "") if i is not None else "regions"
        return BadRequest(message if i is None else f"region {i}: {message}", details={"field": field, "region": i})

    if len(args.regions) > max_regions:
        raise bad(None, f"{len(args.regions)} regions: at most {max_regions} (the engine's max_regions)")
    if args.mode == "upscale":
        raise bad(None, "upscale takes no regions")
    if family == "flux":
        raise bad(None, "regions are not supported for FLUX models (only SD1, SD2 and SDXL)")
    ax, ay, aw, ah = document_area(args)
    for i, r in enumerate(args.regions):
        m = r.mask
        if m.format != "gray8":
            raise bad(i, f"its mask must be a gray8 layer (255 = this region), not {m.format}", "mask")
        if m.x >= ax + aw or m.y >= ay + ah or m.x + m.w <= ax or m.y + m.h <= ay:
            raise bad(i, f"its mask ({m.w}x{m.h} at {m.x},{m.y}) lies outside the document "
                         f"({aw}x{ah} at {ax},{ay})", "mask")
        if not r.prompt.strip() and not args.prompt.strip():
            raise bad(i, "its prompt is empty and there is no base prompt: give one of them", "prompt")
        if r.loras:
            raise bad(i, "LoRAs per region are not supported: a LoRA changes the UNet's weights, which every "
                         "pixel shares in one pass; put the LoRA in the top-level loras", "loras")
        if r.control:
            raise bad(i, "control per region is not supported: a ControlNet's residuals are added to the UNet's "
                         "features everywhere; use the top-level control (its image in document coordinates "
                         "already places it)", "control")


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


def _field_error(field: str, exc: Exception) -> BadRequest:
    problem = getattr(exc, "message", None) or str(exc)
    return BadRequest(f"generate: {field}: {problem}", details={"fields": [{"field": field, "problem": problem}],
                                                                **(getattr(exc, "details", None) or {})})


def check_controls(registry, entry, args: GenerateArgs, max_controls: int) -> None:
    """Every control and reference fits the main model (type, base; an IP-Adapter's image encoder is installed)
    and there are no more than the engine allows. Blocking (reads model headers)."""
    from ..models.control import check_control, find_image_encoder
    from ..models.patch import check_base

    count = len(args.control) + len(args.reference) + sum(len(r.reference) for r in args.regions)
    if count > max_controls:
        field = "control" if args.control else "reference"
        raise _field_error(field, ValueError(f"{count} controls and references; this engine takes at most "
                                             f"{max_controls} in one request"))
    for i, c in enumerate(args.control):
        try:
            check_control(registry.get(c.model), entry.family, entry.name)
        except BadRequest as exc:
            raise _field_error(f"control.{i}.model", exc) from None
    refs = [(f"reference.{i}.model", r) for i, r in enumerate(args.reference)]
    refs += [(f"regions.{n}.reference.{i}.model", r) for n, reg in enumerate(args.regions)
             for i, r in enumerate(reg.reference)]
    for where, r in refs:
        try:
            ref = registry.get(r.model, "ip_adapter")
            check_base(ref, entry.family, entry.name)
            find_image_encoder(registry, ref)
        except BadRequest as exc:
            raise _field_error(where, exc) from None


@op("generate", GenerateArgs, mutating=True)
async def generate(ctx, args: GenerateArgs):
    """A canvas operation (txt2img, img2img, inpaint, outpaint, upscale), compiled to a graph and queued."""
    app = ctx.app
    if args.recall is not None:
        args = await resolve_recall(ctx, args)
    check_generate_budget(app.config.limits, args)
    native = 512
    if args.model:   # every mode but a plain upscale; upscale with a model refines with it
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
        texts = [args.prompt, args.negative_prompt]
        texts += [t for r in args.regions for t in (r.prompt, r.negative_prompt or "")]
        await ctx.run_blocking(check_addons, app.registry, entry, args.loras, texts)
        check_regions(args, app.config.limits.max_regions, entry.family)
        if args.vae:
            from ..models.patch import check_vae

            vae = await ctx.run_blocking(app.registry.get, args.vae, "vae")
            check_vae(vae, entry.family, entry.name)
        if args.control or args.reference or any(r.reference for r in args.regions):
            if entry.family not in ("sd1", "sd2", "sdxl"):
                raise _field_error("control" if args.control else "reference",
                                   ValueError(f"controls and references work with SD1/SD2/SDXL models; "
                                              f"{entry.name!r} is {entry.family}"))
            await ctx.run_blocking(check_controls, app.registry, entry, args, app.config.limits.max_controls)
    if args.upscaler and (args.mode == "upscale" or uses_hires(args, native)):
        await ctx.run_blocking(app.registry.get, args.upscaler, "upscaler")
    if args.mode == "upscale":
        check_regions(args, app.config.limits.max_regions, None)
    # a live request's inputs as sent (before the engine picks a seed): the same inputs again start nothing
    same = json.dumps(args.model_dump(exclude={"source", "preempt", "priority"}), sort_keys=True) if args.live else ""
    if args.seed is None:
        # below 2**31 (so seed+batch too): every host's integer field (GIMP arguments, Blender properties) holds it,
        # and a recalled seed can be shown and edited there
        args.seed = random.randrange(2 ** 31 - 64)
    layers = [lay.model_dump() for lay in (args.image, args.mask) if lay is not None]
    layers += [r.mask.model_dump() for r in args.regions]
    layers += [c.image.model_dump() for c in (*args.control, *args.reference)]
    layers += [ref.image.model_dump() for r in args.regions for ref in r.reference]
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
