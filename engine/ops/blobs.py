"""Blob garbage collection on demand: blobs.gc (admin). The collector itself is engine/store/gc.py."""

from __future__ import annotations

from ..opspec import Args, op


class GcArgs(Args):
    dry_run: bool = False


@op("blobs.gc", GcArgs, admin=True, mutating=True)
async def blobs_gc(ctx, args: GcArgs):
    """Delete the blobs nothing references any more (admin): {deleted, bytes, kept}; dry_run only counts."""
    report = await ctx.app.gc.run(args.dry_run)
    return {"deleted": report["deleted"], "bytes": report["bytes"], "kept": report["kept"]}
