"""Models: models.list, models.unload."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from . import Args, op


class ListArgs(Args):
    type: Literal["main", "lora", "embedding", "vae", "controlnet", "upscaler"] | None = None
    base: Literal["sd1", "sd2", "sdxl", "flux"] | None = None


@op("models.list", ListArgs)
async def models_list(ctx, args: ListArgs):
    """Models the engine can use (filter by type/base), with whether each is loaded."""
    registry = ctx.server.services.get("models")
    cache = ctx.server.services.get("cache")
    if registry is None:
        return {"models": []}
    entries = await ctx.server.run_blocking(registry.list)
    loaded = set(cache.loaded()) if cache else set()
    out = []
    for e in entries:
        if (args.type and e.type != args.type) or (args.base and e.family != args.base):
            continue
        out.append({**e.public(), "loaded": e.name in loaded})
    return {"models": out}


class UnloadArgs(Args):
    model: str | None = Field(default=None, max_length=256)


@op("models.unload", UnloadArgs, admin=True)
async def models_unload(ctx, args: UnloadArgs):
    """Free a loaded model (or all); the next job that needs it loads it again (admin)."""
    cache = ctx.server.services.get("cache")
    return {"unloaded": await ctx.server.run_blocking(cache.unload, args.model) if cache else []}
