"""What made an image, read from its job: the generation facts of a graph's output, the `generate` arguments
that remake one layer, and the input images a job started from (its gallery parent)."""

from __future__ import annotations

from typing import Any


def trace_graph(raw: dict, out_id: str) -> dict:
    """Best-effort generation facts for the output node out_id of a raw graph: walk upstream to the nearest
    denoise node and read its sampler literals, its noise (seed, size), prompt and model."""
    nodes = raw.get("nodes") or {}
    into: dict[str, dict[str, str]] = {}
    for e in raw.get("edges") or []:
        try:
            (src, _), (dst, field) = e["from"], e["to"]
            into.setdefault(dst, {})[field] = src
        except Exception:
            continue
    facts: dict[str, Any] = {}
    seen, todo = set(), [out_id]
    denoise = None
    while todo and denoise is None:
        nid = todo.pop(0)
        if nid in seen or nid not in nodes:
            continue
        seen.add(nid)
        if nodes[nid].get("type") == "denoise":
            denoise = nid
            break
        todo.extend(into.get(nid, {}).values())
    if denoise is None:
        return facts
    spec = nodes[denoise]
    for k in ("steps", "guidance", "scheduler", "strength"):
        if k in spec:
            facts[k] = spec[k]
    links = into.get(denoise, {})
    noise = nodes.get(links.get("noise", ""), {})
    for k in ("seed", "width", "height"):
        if k in noise:
            facts[k] = noise[k]
    prompt = nodes.get(links.get("conditioning", ""), {})
    if prompt.get("type") == "regions":
        facts["regions"] = regions_summary(prompt.get("regions"))
        prompt = nodes.get(into.get(links["conditioning"], {}).get("conditioning", ""), {})
    if prompt.get("type") == "prompt":
        facts["prompt"], facts["negative_prompt"] = prompt.get("text", ""), prompt.get("negative", "")
    model = nodes.get(links.get("model", ""), {})
    if model.get("type") == "load_model":
        facts["model"] = model.get("model")
    for key, field in (("control", "control"), ("reference", "adapter")):
        chain, nid = [], links.get(key)
        while nid in nodes and nodes[nid].get("type") == key and len(chain) < 64:
            spec = nodes[nid]
            item = {"model": spec.get(field), "strength": spec.get("strength", 1.0 if key == "control" else 0.6),
                    "start": spec.get("start", 0.0), "end": spec.get("end", 1.0),
                    "image": _source_layer(nodes, into, into.get(nid, {}).get("image"))}
            chain.append(item)
            nid = into.get(nid, {}).get("previous")
        if chain:
            facts[key] = chain[::-1]
    return facts


def regions_summary(items) -> list[dict]:
    """What the gallery keeps of regions (generate's or a regions node's): prompts and each mask's hash and
    place in the document."""
    out = []
    for r in items or []:
        if not isinstance(r, dict) or not isinstance(r.get("mask"), dict):
            continue
        m = r["mask"]
        item = {"prompt": r.get("prompt") or "", "negative_prompt": r.get("negative_prompt") or "",
                "mask": m.get("sha256"), "x": m.get("x", 0), "y": m.get("y", 0), "w": m.get("w"), "h": m.get("h")}
        refs = [{"model": ref.get("model"), "strength": ref.get("strength", 0.6),
                 "image": (ref.get("image") or {}).get("sha256")}
                for ref in r.get("reference") or [] if isinstance(ref, dict)]
        if refs:
            item["reference"] = refs
        out.append(item)
    return out
def _source_layer(nodes: dict, into: dict, nid: str | None) -> dict | None:
    """The image_input layer an image comes from through region/preprocess/resize/crop nodes, or None."""
    for _ in range(32):
        spec = nodes.get(nid or "")
        if spec is None:
            return None
        if spec.get("type") == "image_input":
            layer = spec.get("layer")
            return {k: layer.get(k) for k in ("sha256", "w", "h", "x", "y", "name")} if isinstance(layer, dict) \
                else None
        nid = into.get(nid, {}).get("image")
    return None


def params_for(request: dict, layer: dict) -> dict:
    """The generate arguments that make exactly this layer: the request with this layer's seed, batch 1."""
    params = {k: v for k, v in request.items() if k != "recall"}
    if layer.get("seed") is not None:
        params["seed"] = layer["seed"]
    params["batch"] = 1
    return params


def input_shas(kind: str, request: dict, graph: dict) -> list[str]:
    if kind != "graph" and kind != "workflow":
        return [request[k]["sha256"] for k in ("image",) if isinstance(request.get(k), dict)]
    return [spec["layer"]["sha256"] for spec in (graph.get("nodes") or {}).values()
            if isinstance(spec, dict) and spec.get("type") == "image_input" and isinstance(spec.get("layer"), dict)
            and isinstance(spec["layer"].get("sha256"), str)]
