"""Canvas operations (the `generate` op) compiled into node graphs, once, for every plug-in.

txt2img, img2img (refine), inpaint (selection), outpaint (transparent areas) and upscale each become a graph
of the nodes in engine/nodes. Upscale with a model, and txt2img with hires above the model's native area, end
in a refine_tiles node (engine/nodes/refine.py): img2img tile by tile at the native size. Inpaint and outpaint crop the mask's bounds plus context, scale that region to
the model's native size, generate, scale back and paste with a feather that only reaches inwards, so every
pixel where the mask is 0 comes back exactly as sent. Result layers carry document x, y.

Controls and references: each control image (in document coordinates) is cut to the document region the
generation covers and scaled to the generation size (`region` node), preprocessed, and chained into `control`
nodes; reference images go whole into `reference` nodes. Every denoise of the request gets both chains, and the
regions node (regional prompts) its conditioning; hires' tiled second pass refines with the base prompt only.
"""

from __future__ import annotations

import math

import numpy as np

from protocol.pixels import context_region

from . import tiles
from .errors import BadRequest


class GraphBuilder:
    def __init__(self):
        self.nodes: dict[str, dict] = {}
        self.edges: list[dict] = []

    def add(self, nid: str, type_: str, inputs: dict | None = None, **literals) -> str:
        self.nodes[nid] = {"type": type_, **literals}
        for field, (src, out) in (inputs or {}).items():
            self.edges.append({"from": [src, out], "to": [nid, field]})
        return nid

    def graph(self) -> dict:
        return {"nodes": self.nodes, "edges": self.edges}


def mask_bounds(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(gray.any(axis=1))
    cols = np.flatnonzero(gray.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def generation_size(w: int, h: int, native: int, max_pixels: int) -> tuple[int, int]:
    """Scale (w, h) to about native*native pixels, keeping the aspect ratio, in multiples of 8."""
    scale = math.sqrt(min(native * native, max_pixels) / (w * h))
    gw = max(8, int(round(w * scale / 8)) * 8)
    gh = max(8, int(round(h * scale / 8)) * 8)
    return gw, gh


def layer_name(args, seed: int) -> str:
    text = " ".join(args.prompt.split())[:48] or args.mode
    return f"{text} · {seed}"


def uses_hires(args, native: int) -> bool:
    """txt2img with hires asked and more pixels than the model's native square: two passes, not one."""
    return args.mode == "txt2img" and args.hires and args.width * args.height > native * native


def refine_tile(args, native: int, strength: float) -> tuple[int, int]:
    """(tile, overlap) for refining in tiles: the asked ones, else the model's native size and the overlap
    engine/tiles.py derives from it and the strength."""
    tile = args.tile or min(max(native, tiles.MIN_TILE), tiles.MAX_TILE)
    overlap = args.overlap if args.overlap is not None else tiles.default_overlap(tile, strength)
    if overlap > tile // 2:
        raise BadRequest(f"overlap {overlap} is more than half the tile ({tile // 2} px)",
                         details={"field": "overlap"})
    return tile, overlap


def _upscale(g: GraphBuilder, nid: str, image: tuple[str, str], upscaler: str | None, width: int, height: int):
    """nid = image scaled to width x height: with the upscaler model when one is named, else Lanczos."""
    if not upscaler:
        g.add(nid, "resize", {"image": image}, width=width, height=height)
        return
    if "upscaler" not in g.nodes:
        g.add("upscaler", "load_upscaler", model=upscaler)
    g.add(nid, "upscale", {"model": ("upscaler", "upscaler"), "image": image}, width=width, height=height)


def _model_and_prompt(g: GraphBuilder, args) -> dict:
    """Nodes "model" (with the LoRAs and VAE asked) and "cond"; returns the sampler arguments."""
    load = {"model": args.model, **({"vae": args.vae} if args.vae else {})}
    if args.loras:   # load_model -> lora -> lora ... ; everything downstream uses the last one, named "model"
        g.add("base", "load_model", **load)
        src = "base"
        for i, ref in enumerate(args.loras):
            nid = "model" if i == len(args.loras) - 1 else f"lora{i}"
            g.add(nid, "lora", {"model": (src, "model")}, lora=ref.model, weight=float(ref.weight))
            src = nid
    else:
        g.add("model", "load_model", **load)
    clip = {"clip_skip": args.clip_skip} if args.clip_skip != 1 else {}
    g.add("cond", "prompt", {"model": ("model", "model")}, text=args.prompt, negative=args.negative_prompt, **clip)
    return {"steps": args.steps, "guidance": args.guidance, "scheduler": args.scheduler,
            **({"schedule": args.schedule} if args.schedule != "default" else {})}


def add_controls(g: GraphBuilder, args, region: tuple[int, int, int, int], size: tuple[int, int]) -> dict:
    """Nodes for args.control / args.reference; the denoise inputs that use them ({} when there are none).
    region: the document rectangle (x, y, w, h) the generation covers; size: the generation's (w, h)."""
    inputs: dict = {}
    x, y, w, h = region
    for i, c in enumerate(args.control):
        g.add(f"cimage{i}", "image_input", layer=c.image.model_dump())
        g.add(f"cregion{i}", "region", {"image": (f"cimage{i}", "image")}, x=x, y=y, width=w, height=h,
              out_width=size[0], out_height=size[1])
        g.add(f"cprep{i}", "preprocess", {"image": (f"cregion{i}", "image")}, method=c.preprocess)
        links = {"model": ("model", "model"), "image": (f"cprep{i}", "image")}
        if i:
            links["previous"] = (f"control{i - 1}", "control")
        g.add(f"control{i}", "control", links, control=c.model, strength=float(c.strength), start=float(c.start),
              end=float(c.end))
        inputs["control"] = (f"control{i}", "control")
    for i, r in enumerate(args.reference):
        g.add(f"rimage{i}", "image_input", layer=r.image.model_dump())
        links = {"model": ("model", "model"), "image": (f"rimage{i}", "image")}
        if i:
            links["previous"] = (f"reference{i - 1}", "reference")
        g.add(f"reference{i}", "reference", links, adapter=r.model, strength=float(r.strength),
              start=float(r.start), end=float(r.end))
        inputs["reference"] = (f"reference{i}", "reference")
    return inputs


def add_regions(g: GraphBuilder, args, x: int, y: int, w: int, h: int) -> str:
    """A regions node over the document area (x, y, w, h) the denoise generates when there are regions: the
    conditioning node to use ("cond" when there are none)."""
    if not args.regions:
        return "cond"
    items = [{"prompt": r.prompt, "negative_prompt": r.negative_prompt or "", "mask": r.mask.model_dump(),
              **({"reference": [ref.model_dump() for ref in r.reference]} if r.reference else {})}
             for r in args.regions]
    g.add("regions", "regions", {"model": ("model", "model"), "conditioning": ("cond", "conditioning")},
          regions=items, x=x, y=y, width=w, height=h)
    return "regions"


def compile_generate(args, native: int, max_pixels: int, image: np.ndarray | None = None,
                     mask: np.ndarray | None = None) -> dict:
    """args: validated GenerateArgs; image/mask: the layers' pixels (needed to place inpaint/outpaint)."""
    g = GraphBuilder()
    seeds = [args.seed + i for i in range(args.batch)]
    mode = args.mode

    if mode == "upscale":
        g.add("image", "image_input", layer=args.image.model_dump())
        w, h = int(round(args.image.w * args.scale)), int(round(args.image.h * args.scale))
        _upscale(g, "up", ("image", "image"), args.upscaler, w, h)
        if not (args.model and args.strength > 0):
            g.add("out", "output", {"image": ("up", "image")}, name=f"upscale ×{args.scale:g}")
            return g.graph()
        sampler = _model_and_prompt(g, args)
        tile, overlap = refine_tile(args, native, args.strength)
        g.add("refined", "refine_tiles", {"model": ("model", "model"), "conditioning": ("cond", "conditioning"),
                                          "image": ("up", "image")},
              seed=args.seed, strength=args.strength, tile=tile, overlap=overlap, **sampler)
        g.add("out", "output", {"image": ("refined", "image")}, name=f"upscale ×{args.scale:g} · {args.seed}",
              seed=args.seed)
        return g.graph()

    sampler = _model_and_prompt(g, args)

    if mode == "txt2img":
        hires = uses_hires(args, native)
        # hires: the first pass at about the native area (same aspect), then upscaled and refined in tiles
        gw, gh = generation_size(args.width, args.height, native, max_pixels) if hires else (args.width, args.height)
        if hires:
            tile, overlap = refine_tile(args, native, args.hires_strength)
            # hires is asked for by the plug-ins, not set by hand: few steps still get one refine step per tile
            hires_sampler = dict(sampler, steps=max(args.steps, math.ceil(1 / args.hires_strength - 1e-9))
                                 if args.hires_strength > 0 else args.steps)
        cond = add_regions(g, args, args.x, args.y, args.width, args.height)
        steer = add_controls(g, args, (args.x, args.y, args.width, args.height), (gw, gh))
        for i, seed in enumerate(seeds):
            g.add(f"noise{i}", "noise", seed=seed, width=gw, height=gh)
            g.add(f"denoise{i}", "denoise", {"model": ("model", "model"), "conditioning": (cond, "conditioning"),
                                             "noise": (f"noise{i}", "noise"), **steer}, **sampler)
            g.add(f"decode{i}", "vae_decode", {"model": ("model", "model"), "latents": (f"denoise{i}", "latents")})
            last = f"decode{i}"
            if hires:
                _upscale(g, f"up{i}", (last, "image"), args.upscaler, args.width, args.height)
                last = f"up{i}"
                if args.hires_strength > 0:
                    g.add(f"refined{i}", "refine_tiles", {"model": ("model", "model"),
                                                          "conditioning": ("cond", "conditioning"),
                                                          "image": (last, "image")},
                          seed=seed, strength=args.hires_strength, tile=tile, overlap=overlap, **hires_sampler)
                    last = f"refined{i}"
            g.add(f"place{i}", "place", {"image": (last, "image")}, x=args.x, y=args.y)
            g.add(f"out{i}", "output", {"image": (f"place{i}", "image")}, name=layer_name(args, seed), seed=seed)
        return g.graph()

    g.add("image", "image_input", layer=args.image.model_dump())
    iw, ih = args.image.w, args.image.h

    if mode == "img2img":
        if args.strength == 0:   # nothing to change: the input comes back bit for bit
            g.add("out0", "output", {"image": ("image", "image")}, name=layer_name(args, args.seed), seed=args.seed)
            return g.graph()
        gw, gh = (args.width, args.height) if args.width else generation_size(iw, ih, native, max_pixels)
        g.add("scaled", "resize", {"image": ("image", "image")}, width=gw, height=gh)
        cond = add_regions(g, args, args.image.x, args.image.y, iw, ih)
        steer = add_controls(g, args, (args.image.x, args.image.y, iw, ih), (gw, gh))
        for i, seed in enumerate(seeds):
            g.add(f"noise{i}", "noise", seed=seed, width=gw, height=gh)
            g.add(f"denoise{i}", "denoise", {"model": ("model", "model"), "conditioning": (cond, "conditioning"),
                                             "noise": (f"noise{i}", "noise"), "image": ("scaled", "image"),
                                             **steer},
                  strength=args.strength, **sampler)
            g.add(f"decode{i}", "vae_decode", {"model": ("model", "model"), "latents": (f"denoise{i}", "latents")})
            g.add(f"back{i}", "resize", {"image": (f"decode{i}", "image")}, width=iw, height=ih)
            g.add(f"place{i}", "place", {"image": (f"back{i}", "image")}, x=args.image.x, y=args.image.y)
            g.add(f"out{i}", "output", {"image": (f"place{i}", "image")}, name=layer_name(args, seed), seed=seed)
        return g.graph()

    # inpaint / outpaint
    if mode == "inpaint":
        g.add("mask", "mask_input", layer=args.mask.model_dump())
        gray = mask
    else:
        g.add("mask", "mask_from_alpha", {"image": ("image", "image")})
        gray = np.where(image[..., 3] == 0, 255, 0).astype(np.uint8)
    bounds = mask_bounds(gray)
    if bounds is None:
        raise BadRequest("the mask is empty: select the area to generate" if mode == "inpaint"
                         else "nothing to outpaint: the image has no transparent pixels")
    rx, ry, rw, rh = context_region(bounds, iw, ih)
    gw, gh = (args.width, args.height) if args.width else generation_size(rw, rh, native, max_pixels)
    g.add("crop", "crop", {"image": ("image", "image")}, x=rx, y=ry, width=rw, height=rh)
    cond = add_regions(g, args, args.image.x + rx, args.image.y + ry, rw, rh)
    g.add("cropm", "crop_mask", {"mask": ("mask", "mask")}, x=rx, y=ry, width=rw, height=rh)
    g.add("scaled", "resize", {"image": ("crop", "image")}, width=gw, height=gh)
    g.add("scaledm", "resize_mask", {"mask": ("cropm", "mask")}, width=gw, height=gh)
    # grow the mask the model sees a little, so the seam is generated too; the paste feather stays inside
    g.add("grown", "mask_grow", {"mask": ("scaledm", "mask")}, pixels=max(1, min(gw, gh) // 64))
    strength = args.strength if mode == "inpaint" else 1.0
    bx, by, bw, bh = bounds
    steer = add_controls(g, args, (args.image.x + rx, args.image.y + ry, rw, rh), (gw, gh))
    for i, seed in enumerate(seeds):
        g.add(f"noise{i}", "noise", seed=seed, width=gw, height=gh)
        g.add(f"denoise{i}", "denoise", {"model": ("model", "model"), "conditioning": (cond, "conditioning"),
                                         "noise": (f"noise{i}", "noise"), "image": ("scaled", "image"),
                                         "mask": ("grown", "mask"), **steer}, strength=strength, **sampler)
        g.add(f"decode{i}", "vae_decode", {"model": ("model", "model"), "latents": (f"denoise{i}", "latents")})
        g.add(f"back{i}", "resize", {"image": (f"decode{i}", "image")}, width=rw, height=rh)
        g.add(f"paste{i}", "paste", {"base": ("image", "image"), "image": (f"back{i}", "image"),
                                     "mask": ("cropm", "mask")}, x=rx, y=ry, feather=args.feather)
        g.add(f"result{i}", "crop", {"image": (f"paste{i}", "image")}, x=bx, y=by, width=bw, height=bh)
        g.add(f"out{i}", "output", {"image": (f"result{i}", "image")}, name=layer_name(args, seed), seed=seed)
    return g.graph()
