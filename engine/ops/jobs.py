"""Generation and jobs: generate, graph.submit, job.get, job.list, job.cancel, nodes.list.

Everything a job needs is checked here, before it is queued: sizes, budgets, the model, the layers (their
format, size and that the caller may read them). A refused request changes nothing.
"""

from __future__ import annotations

import random
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..errors import BadRequest
from ..graph import graph as graphs
from ..graph.node import node_schema
from . import Args, op
from .blobs import owned

NATIVE = {"sd1": 512, "sd2": 768, "sdxl": 1024, "flux": 1024}


class Layer(Args):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    w: int = Field(ge=1, le=65536)
    h: int = Field(ge=1, le=65536)
    format: Literal["rgba8", "gray8"] = "rgba8"
    x: int = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
    y: int = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
    name: str | None = Field(default=None, max_length=256)


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
    scheduler: Literal["euler", "euler_a", "dpmpp_2m_karras", "ddim"] = "euler"
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

    @model_validator(mode="after")
    def consistent(self):
        if self.recall is not None:   # checked once merged with the recalled image's params (engine.gallery)
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


def check_budget(server, args: GenerateArgs):
    lim = server.config.limits
    if args.steps > lim.max_steps:
        raise BadRequest(f"steps {args.steps} is more than the limit of {lim.max_steps}", details={"field": "steps"})
    if args.batch > lim.max_batch:
        raise BadRequest(f"batch {args.batch} is more than the limit of {lim.max_batch}", details={"field": "batch"})
    sizes = []
    if args.width:
        sizes.append((args.width, args.height))
    if args.image:
        sizes.append((args.image.w, args.image.h))
        if args.mode == "upscale":
            sizes.append((int(args.image.w * args.scale), int(args.image.h * args.scale)))
    for w, h in sizes:
        if w * h > lim.max_pixels:
            raise BadRequest(f"{w}x{h} is {w * h / 1e6:.1f} MP, over the {lim.max_pixels / 1e6:.1f} MP budget",
                             details={"field": "width"})


async def check_layers(ctx, layers: list[dict]):
    """Every referenced layer must be a blob the caller may read, with exactly the bytes its size implies."""
    if not layers:
        return
    server = ctx.server
    hashes = [lay["sha256"] for lay in layers]
    ok = await server.db.run(owned, ctx.conn.uid, hashes, ctx.conn.is_admin)
    for lay in layers:
        if lay["sha256"] not in ok:
            raise BadRequest(f"layer {lay['sha256'][:12]}… is not a blob you uploaded: blob.put it first",
                             details={"sha256": lay["sha256"]})
        try:
            size = await server.run_blocking(server.blobs.size, lay["sha256"])
        except FileNotFoundError:
            raise BadRequest(f"layer {lay['sha256'][:12]}… is missing on the engine", details={"sha256": lay["sha256"]})
        want = lay["w"] * lay["h"] * (4 if lay.get("format", "rgba8") == "rgba8" else 1)
        if size != want:
            raise BadRequest(f"layer {lay['sha256'][:12]}… has {size} bytes but a {lay.get('format', 'rgba8')} "
                             f"{lay['w']}x{lay['h']} layer needs {want}", details={"sha256": lay["sha256"]})


def _queue(ctx):
    queue = ctx.server.services.get("queue")
    if queue is None:
        raise BadRequest("this engine runs without generation")
    return queue


def native_size(entry) -> int:
    from ..models.registry import native_size_hint
    return native_size_hint(entry.path) or NATIVE.get(entry.family or "sd1", 512)


@op("generate", GenerateArgs, mutating=True)
async def generate(ctx, args: GenerateArgs):
    """A canvas operation (txt2img, img2img, inpaint, outpaint, upscale), compiled to a graph and queued."""
    from ..canvas import compile_generate

    queue = _queue(ctx)
    server = ctx.server
    if args.recall is not None:
        from ..gallery import resolve_recall
        args = await resolve_recall(ctx, args)
    check_budget(server, args)
    native = 512
    if args.mode != "upscale":
        from ..models.patch import check_addons
        entry = await server.run_blocking(queue.registry.get, args.model, "main")
        native = await server.run_blocking(native_size, entry)   # reads config files: off the loop
        # LoRAs and `<embedding>`s for another base are refused here, before anything is queued
        await server.run_blocking(check_addons, queue.registry, entry, args.loras,
                                  [args.prompt, args.negative_prompt])
    elif args.upscaler:
        await server.run_blocking(queue.registry.get, args.upscaler, "upscaler")
    if args.seed is None:
        # below 2**31 (so seed+batch too): every host's integer field (GIMP arguments, Blender properties) holds it,
        # and a recalled seed can be shown and edited there
        args.seed = random.randrange(2 ** 31 - 64)
    layers = [lay.model_dump() for lay in (args.image, args.mask) if lay is not None]
    await check_layers(ctx, layers)
    image = mask = None
    if args.mode in ("inpaint", "outpaint"):
        def read():
            img = np.frombuffer(server.blobs.read(args.image.sha256), np.uint8).reshape(args.image.h, args.image.w, 4)
            msk = None
            if args.mask is not None:
                msk = np.frombuffer(server.blobs.read(args.mask.sha256), np.uint8).reshape(args.mask.h, args.mask.w)
            return img, msk
        image, mask = await server.run_blocking(read)
    graph_raw = compile_generate(args, native, server.config.limits.max_pixels, image, mask)
    graphs.validate(graph_raw)
    request = args.model_dump()
    job = await queue.submit(ctx.conn.uid, args.mode, request, graph_raw, args.priority,
                             (args.source.app if args.source else "") or ctx.conn.client_info.get("app", ""))
    return {"job": job, "seed": args.seed}


class SubmitArgs(Args):
    graph: dict
    priority: int = Field(default=0, ge=-100, le=100)


@op("graph.submit", SubmitArgs, mutating=True)
async def graph_submit(ctx, args: SubmitArgs):
    """Validate a node graph and queue it."""
    queue = _queue(ctx)
    graph = graphs.validate(args.graph)
    layers = []
    for nid, cls in graph.nodes.items():
        lits = graph.literals[nid]
        if cls.type in ("image_input", "mask_input"):
            try:
                lay = Layer.model_validate(lits["layer"]).model_dump()
            except Exception as exc:
                raise BadRequest(f"node {nid!r}: layer: not a valid layer ({exc.__class__.__name__})",
                                 details={"node": nid, "field": "layer"}) from None
            layers.append(lay)
        if cls.type == "load_model":
            await ctx.server.run_blocking(queue.registry.get, lits["model"], "main")
    from ..models.patch import check_graph
    await ctx.server.run_blocking(check_graph, queue.registry, graph)   # upscalers, LoRA/embedding bases
    await check_layers(ctx, layers)
    job = await queue.submit(ctx.conn.uid, "graph", {"graph": args.graph}, args.graph, args.priority,
                             ctx.conn.client_info.get("app", ""))
    return {"job": job}


class JobArgs(Args):
    job: str = Field(min_length=1, max_length=64)


@op("job.get", JobArgs)
async def job_get(ctx, args: JobArgs):
    """A job's status, result layers or error (works after a reconnect or an engine restart)."""
    return await _queue(ctx).get(args.job, ctx.conn.uid, ctx.conn.is_admin)


@op("job.cancel", JobArgs, mutating=True)
async def job_cancel(ctx, args: JobArgs):
    """Cancel a queued job now, or a running one at its next step ({status})."""
    return await _queue(ctx).cancel(args.job, ctx.conn.uid, ctx.conn.is_admin)


class ListArgs(Args):
    status: Literal["queued", "running", "completed", "failed", "canceled"] | None = None
    limit: int = Field(default=50, ge=1, le=500)
    everyone: bool = False


@op("job.list", ListArgs)
async def job_list(ctx, args: ListArgs):
    """Your jobs, newest first (admins: everyone's with everyone=true)."""
    return {"jobs": await _queue(ctx).list(ctx.conn.uid, ctx.conn.is_admin, args.status, args.limit,
                                           args.everyone)}


@op("nodes.list")
async def nodes_list(ctx, args):
    """Every node type: version, inputs (type, required, default), outputs."""
    return {"nodes": node_schema()}
