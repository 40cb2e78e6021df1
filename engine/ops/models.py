"""Models: models.list, models.unload, and (admin) models.scan, models.install, models.remove."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..opspec import Args, op


class ListArgs(Args):
    type: Literal["main", "lora", "embedding", "vae", "controlnet", "upscaler"] | None = None
    base: Literal["sd1", "sd2", "sdxl", "flux"] | None = None


@op("models.list", ListArgs)
async def models_list(ctx, args: ListArgs):
    """Models the engine can use (filter by type/base), whether each is loaded, and the cache's state."""
    registry, cache = ctx.app.registry, ctx.app.cache
    entries = await ctx.run_blocking(registry.list, args.type, args.base)
    loaded = set(cache.loaded())
    admin = ctx.conn.is_admin
    out = [{**e.public(admin), "loaded": e.name in loaded} for e in entries]
    stats = cache.stats()
    if not admin:
        stats.pop("loaded", None)
    return {"models": out, "cache": stats}


class UnloadArgs(Args):
    model: str | None = Field(default=None, max_length=256)


@op("models.unload", UnloadArgs, admin=True)
async def models_unload(ctx, args: UnloadArgs):
    """Free a loaded model (or all); the next job that needs it loads it again (admin)."""
    return {"unloaded": await ctx.run_blocking(ctx.app.cache.unload, args.model)}


class ScanArgs(Args):
    dir: str | None = Field(default=None, min_length=1, max_length=4096, pattern=r"^[^\x00]*$")


@op("models.scan", ScanArgs, admin=True, mutating=True)
async def models_scan(ctx, args: ScanArgs):
    """Register every model in a folder on the engine's machine (default: the engine's --models folders)
    (admin) → {added, updated, unchanged, removed, skipped: [{path, reason}]}."""
    registry = ctx.app.registry
    dirs = [Path(args.dir)] if args.dir else registry.dirs
    total = {"added": [], "updated": [], "unchanged": 0, "removed": [], "skipped": []}
    for d in dirs:
        rep = (await ctx.run_blocking(registry.scan, d)).public()
        for k in ("added", "updated", "removed", "skipped"):
            total[k] += rep[k]
        total["unchanged"] += rep["unchanged"]
    return total


class InstallArgs(Args):
    path: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")   # NUL: bad_request, not a crash
    copy_file: bool = Field(default=False, alias="copy")
    name: str | None = Field(default=None, min_length=1, max_length=200)


@op("models.install", InstallArgs, admin=True, mutating=True)
async def models_install(ctx, args: InstallArgs):
    """Register one model file/folder on the engine's machine; copy=true copies it into the data folder (admin)
    → {model}."""
    entry = await ctx.run_blocking(ctx.app.registry.install, args.path, args.copy_file, args.name)
    return {"model": entry.public(True)}


class RemoveArgs(Args):
    model: str = Field(min_length=1, max_length=256)


@op("models.remove", RemoveArgs, admin=True, mutating=True)
async def models_remove(ctx, args: RemoveArgs):
    """Unregister a model (admin): a copy in the data folder is deleted, a file in a --models folder is hidden
    from later scans, an installed path stays on disk. A loaded copy is unloaded. → {model}."""
    entry = await ctx.run_blocking(ctx.app.registry.remove, args.model)
    await ctx.run_blocking(ctx.app.cache.unload, entry.name)
    return {"model": entry.public(True)}
