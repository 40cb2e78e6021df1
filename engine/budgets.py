"""The engine's budgets (config [limits]: pixels, steps, batch) for what a request asks to compute: the same
for `generate` and for any node graph, whoever built it, so a hand-written graph is no way around them."""

from __future__ import annotations

from .errors import BadRequest


def check_generate_budget(limits, args) -> None:
    """args: a GenerateArgs (engine/ops/generate.py), after recall is resolved."""
    if args.steps > limits.max_steps:
        raise BadRequest(f"steps {args.steps} is more than the limit of {limits.max_steps}",
                         details={"field": "steps"})
    if args.batch > limits.max_batch:
        raise BadRequest(f"batch {args.batch} is more than the limit of {limits.max_batch}",
                         details={"field": "batch"})
    sizes = []
    if args.width:
        sizes.append((args.width, args.height))
    if args.image:
        sizes.append((args.image.w, args.image.h))
        if args.mode == "upscale":
            sizes.append((int(args.image.w * args.scale), int(args.image.h * args.scale)))
    sizes += [(item.image.w, item.image.h) for item in (*args.control, *args.reference)]
    for w, h in sizes:
        if w * h > limits.max_pixels:
            raise BadRequest(f"{w}x{h} is {w * h / 1e6:.1f} MP, over the {limits.max_pixels / 1e6:.1f} MP budget",
                             details={"field": "width"})


def check_graph_budget(graph_raw: dict, limits) -> None:
    """The same budgets as `generate` (pixels, steps, batch) for any graph, whoever built it: a hand-written
    graph must not be a way around the limits (e.g. a 16384x16384 noise or a 65536x65536 resize)."""
    denoise = refine = outputs = 0
    for nid, spec in (graph_raw.get("nodes") or {}).items():
        if not isinstance(spec, dict):
            continue
        steps = spec.get("steps")
        for wf, hf in (("width", "height"), ("out_width", "out_height")):   # out_*: the region node's output
            w, h = spec.get(wf), spec.get(hf)
            if isinstance(w, int) and isinstance(h, int) and w * h > limits.max_pixels:
                raise BadRequest(f"node {nid!r}: {w}x{h} is {w * h / 1e6:.1f} MP, over the "
                                 f"{limits.max_pixels / 1e6:.1f} MP budget", details={"node": nid, "field": wf})
        if isinstance(steps, int) and steps > limits.max_steps:
            raise BadRequest(f"node {nid!r}: steps {steps} is more than the limit of {limits.max_steps}",
                             details={"node": nid, "field": "steps"})
        denoise += spec.get("type") == "denoise"
        refine += spec.get("type") == "refine_tiles"
        outputs += spec.get("type") == "output"
    if outputs > limits.max_outputs:
        raise BadRequest(f"the graph has {outputs} output nodes; at most {limits.max_outputs} (max_outputs) per job",
                         details={"field": "nodes"})
    for kind, n in (("denoise", denoise), ("refine_tiles", refine)):
        if n > limits.max_batch:
            raise BadRequest(f"the graph has {n} {kind} nodes; at most {limits.max_batch} (max_batch) per job",
                             details={"field": "nodes"})
