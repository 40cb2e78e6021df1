"""Models: models.list, models.unload, and (admin) models.scan, models.install, models.remove, models.download
(+ .cancel; the work is in engine/models/download.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..control_presets import preset_for
from .. import presets
from ..errors import EngineError
from ..models.download import parse_source
from ..models.registry import native_size
from ..opspec import Args, op


class ListArgs(Args):
    type: Literal["main", "lora", "embedding", "vae", "controlnet", "t2i_adapter", "ip_adapter", "clip_vision",
                  "upscaler"] | None = None
    base: Literal["sd1", "sd2", "sdxl", "flux"] | None = None


@op("models.list", ListArgs)
async def models_list(ctx, args: ListArgs):
    """Models the engine can use (filter by type/base), whether each is loaded and on which pool workers, each main
    model's native_size (the square side it was trained at: what a client's size should default to), each
    control/reference model's preset (strength, range, preprocessor for its kind), and the cache's state."""
    registry, cache = ctx.app.registry, ctx.app.cache
    def listing():   # native sizes come from config files: off the loop
        return [(e, native_size(e) if e.type == "main" else None) for e in registry.list(args.type, args.base)]

    entries = await ctx.run_blocking(listing)
    loaded = set(cache.loaded())
    admin = ctx.conn.is_admin
    pool = ctx.app.pool
    out = []
    for e, native in entries:   # where: the pool workers that hold it (a pool's engine loads none itself)
        where = pool.where(e.name) if pool is not None else []
        out.append({**e.public(admin), "loaded": e.name in loaded or bool(where), "workers": where,
                    "native_size": native})
    for item in out:   # controls and references: what a client fills a new one with (configs/control_presets.json)
        preset = preset_for(item["type"], item["name"])
        if preset is not None:
            item["preset"] = preset
    stats = cache.stats()
    if not admin:
        stats.pop("loaded", None)
    return {"models": out, "cache": stats, "presets": presets.public()}


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


class DownloadArgs(Args):
    source: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    revision: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]*$")
    token: str | None = Field(default=None, min_length=1, max_length=4096, repr=False)   # never logged or echoed


@op("models.download", DownloadArgs, admin=True, mutating=True)
async def models_download(ctx, args: DownloadArgs):
    """Download a model (a URL, a Hugging Face OWNER/REPO[/FILE] or starter:NAME) into the data folder, check it
    and register it (admin). Replies once the server's first answer passed the checks → {download, source, name,
    total, resumed_from}; models.download.progress events follow until state done/failed/canceled."""
    source = await ctx.run_blocking(parse_source, args.source, args.sha256, args.revision)
    loop = asyncio.get_running_loop()
    started = loop.create_future()
    uid = ctx.conn.uid

    def publish(event):   # from the download's thread
        ctx.app.hub.publish_threadsafe(uid, event)

    def on_started():
        loop.call_soon_threadsafe(lambda: started.done() or started.set_result(None))

    did, d = ctx.app.downloads.start(source, args.name, args.token, publish, on_started)
    await started
    if not d.accepted:
        raise d.error or EngineError("the download ended before it started")
    return {"download": did, "source": source.text, "name": d.name, "total": d.total,
            "resumed_from": d.resumed_from}


class DownloadCancelArgs(Args):
    download: str = Field(min_length=1, max_length=64)


@op("models.download.cancel", DownloadCancelArgs, admin=True, mutating=True)
async def models_download_cancel(ctx, args: DownloadCancelArgs):
    """Stop a running download (admin); its partial file is deleted and a models.download.progress event with
    state canceled follows → {download}."""
    ctx.app.downloads.cancel(args.download)
    return {"download": args.download}


@op("models.download.list", admin=True)
async def models_download_list(ctx, args):
    """The downloads running now (admin), e.g. for a client that reconnected → {downloads: [{download, source,
    state, name, bytes, total}]}."""
    return {"downloads": ctx.app.downloads.list()}
