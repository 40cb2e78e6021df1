"""The gallery's images: images.list|get|delete|star|move|import, and images.keep (a live job's results).

Images are recorded by engine/gallery/record.py just after a job's job.result (images.added says when); every
op here first waits for the archives of the jobs completed so far (JobQueue.settled), so an image id from a
job.result is found. Another user's image is `not_found`;
admins reach everyone's (images.list needs everyone=true for that). An image is listed for its owner from any
app: the app it was made from is only a filter.
"""

from __future__ import annotations

import io
import json
import re
from typing import Literal

from PIL import Image
from pydantic import Field, model_validator

from ..errors import BadRequest, NotFound, TooLarge
from ..gallery import db as gallery
from ..gallery.png import read_png_meta
from ..opspec import Args, op
from .blob import read_readable

ID = Field(pattern=r"^[0-9a-f]{8,32}$")


class ListArgs(Args):
    app: str | None = Field(default=None, max_length=64)
    document: str | None = Field(default=None, max_length=1024)
    board: str | None = Field(default=None, pattern=r"^[0-9a-f]{8,32}$")
    unsorted: bool = False
    starred: bool | None = None
    q: str | None = Field(default=None, max_length=1000)
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")
    everyone: bool = False
    thumbnails: bool | Literal["webp", "rgba8"] = False
    thumb_size: int = Field(default=256, ge=16, le=256)

    @model_validator(mode="after")
    def one_board_filter(self):
        if self.board and self.unsorted:
            raise ValueError("give board or unsorted, not both")
        return self


def _rgba8_thumbs(blobs, items: list[dict], size: int) -> None:
    """Decode the WebP thumbnails to rgba8 at most `size` px per side: host plug-ins (Blender, GIMP, Krita
    without Qt's WebP plug-in) cannot decode WebP with the standard library."""
    for it in items:
        th = it.get("thumbnail")
        if not th:
            continue
        try:
            with Image.open(io.BytesIO(blobs.read(th["sha256"]))) as im:
                im = im.convert("RGBA")
                im.thumbnail((size, size))
                it["thumbnail"] = {"w": im.width, "h": im.height, "format": "rgba8", "data": im.tobytes()}
        except (FileNotFoundError, OSError):
            it["thumbnail"] = None


def _read_thumbs(blobs, items: list[dict]) -> None:
    for it in items:
        th = it.get("thumbnail")
        if th:
            try:
                th["data"] = blobs.read(th["sha256"])
            except FileNotFoundError:
                it["thumbnail"] = None


@op("images.list", ListArgs)
async def images_list(ctx, args: ListArgs):
    """Your gallery, newest first, filtered by app, document, board, starred and words of the prompt; page
    with limit + offset, or pass next_cursor back as cursor."""
    await ctx.app.queue.settled(None if ctx.conn.is_admin else ctx.conn.uid)
    rows, total = await ctx.app.db.run(
        lambda db: gallery.list_images(db, ctx.conn.uid, ctx.conn.is_admin, everyone=args.everyone, app=args.app,
                                       document=args.document, board=args.board, unsorted=args.unsorted,
                                       starred=args.starred, q=args.q, limit=args.limit + 1, offset=args.offset,
                                       cursor=int(args.cursor) if args.cursor else None))
    more = len(rows) > args.limit   # one row past the page tells whether there is a next one
    rows = rows[:args.limit]
    items = [gallery.summary(r) for r in rows]
    if args.thumbnails == "rgba8":
        if args.limit * args.thumb_size ** 2 * 4 > ctx.app.config.limits.frame_limit // 2:
            raise BadRequest("rgba8 thumbnails for that many images would not fit in a frame: lower limit or "
                             "thumb_size", details={"field": "limit"})
        await ctx.run_blocking(_rgba8_thumbs, ctx.app.blobs, items, args.thumb_size)
    elif args.thumbnails:
        await ctx.run_blocking(_read_thumbs, ctx.app.blobs, items)
    next_cursor = str(rows[-1]["seq"]) if more else None
    return {"images": items, "total": total, "next_cursor": next_cursor}


class ImageArgs(Args):
    image: str = ID


class GetArgs(ImageArgs):
    png: bool = False


@op("images.get", GetArgs)
async def images_get(ctx, args: GetArgs):
    """One image: its summary, `params` (generate's arguments; null for graph jobs), the full `graph`, the
    metadata, the pixel layer and the thumbnail (with its WebP bytes); png=true adds the PNG file's bytes."""
    await ctx.app.queue.settled(None if ctx.conn.is_admin else ctx.conn.uid)
    app = ctx.app
    row = await app.db.run(gallery.get_row, args.image, ctx.conn.uid, ctx.conn.is_admin)
    out = gallery.summary(row)
    meta = json.loads(row["meta"])
    out.update(params=json.loads(row["params"]) if row["params"] else None, graph=meta.get("graph"), meta=meta)

    def read():
        _read_thumbs(app.blobs, [out])
        if args.png:
            path = app.config.data_dir / row["path"]
            if path.stat().st_size > app.config.limits.frame_limit - 65536:
                raise TooLarge("the PNG is larger than a frame: fetch the pixel layer with blob.get instead",
                               details={"limit": app.config.limits.frame_limit})
            out["png"] = path.read_bytes()

    try:
        await ctx.run_blocking(read)
    except FileNotFoundError:
        raise NotFound(f"the PNG file of image {args.image} is missing on the engine") from None
    return out


@op("images.delete", ImageArgs, mutating=True)
async def images_delete(ctx, args: ImageArgs):
    """Remove an image from the gallery and delete its PNG file; its blobs stay readable until blob GC finds
    them unreferenced (the job's result retention)."""
    await ctx.app.queue.settled(None if ctx.conn.is_admin else ctx.conn.uid)
    app = ctx.app
    row = await app.db.run(gallery.delete_image, args.image, ctx.conn.uid, ctx.conn.is_admin)
    await ctx.run_blocking(lambda: (app.config.data_dir / row["path"]).unlink(missing_ok=True))
    return {}


class KeepArgs(Args):
    job: str = Field(min_length=1, max_length=64)


@op("images.keep", KeepArgs, mutating=True)
async def images_keep(ctx, args: KeepArgs):
    """A finished live job's results into the gallery (live jobs are not put there by themselves) → {images}:
    their summaries, as images.added also says. For a job already in the gallery, its images."""
    await ctx.app.queue.keep(args.job, ctx.conn.uid, ctx.conn.is_admin)
    rows = await ctx.app.db.run(lambda db: list(db.query("SELECT * FROM images WHERE job_id = ? ORDER BY seq",
                                                          [args.job])))
    return {"images": [gallery.summary(r) for r in rows]}


class StarArgs(ImageArgs):
    starred: bool = True


@op("images.star", StarArgs, mutating=True)
async def images_star(ctx, args: StarArgs):
    """Star (or unstar with starred=false) an image."""
    await ctx.app.queue.settled(None if ctx.conn.is_admin else ctx.conn.uid)
    await ctx.app.db.run(gallery.star, args.image, ctx.conn.uid, ctx.conn.is_admin, args.starred)
    return {"starred": args.starred}


class MoveArgs(Args):
    images: list[str] = Field(min_length=1, max_length=500)
    board: str | None = Field(pattern=r"^[0-9a-f]{8,32}$")

    @model_validator(mode="after")
    def ids(self):
        for i in self.images:
            if not re.fullmatch(r"[0-9a-f]{8,32}", i):
                raise ValueError(f"{i!r} is not an image id")
        return self


@op("images.move", MoveArgs, mutating=True)
async def images_move(ctx, args: MoveArgs):
    """Put images on a board (board=null: on no board)."""
    await ctx.app.queue.settled(None if ctx.conn.is_admin else ctx.conn.uid)
    n = await ctx.app.db.run(gallery.move_images, list(dict.fromkeys(args.images)), args.board, ctx.conn.uid,
                             ctx.conn.is_admin)
    return {"moved": n}


class ImportArgs(Args):
    data: bytes | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def one_source(self):
        if (self.data is None) == (self.sha256 is None):
            raise ValueError("give the PNG as data (bytes) or as sha256 (an uploaded blob), one of them")
        return self


@op("images.import", ImportArgs)
async def images_import(ctx, args: ImportArgs):
    """Read a PNG written by Paintbridge (dropped back in): {params (for generate), graph, meta, image (its
    gallery id when it is one of yours, else null)}."""
    await ctx.app.queue.settled(None if ctx.conn.is_admin else ctx.conn.uid)
    data = args.data
    if data is None:
        data = await read_readable(ctx, args.sha256)
    meta = await ctx.run_blocking(read_png_meta, data)
    image = meta.get("id")
    if isinstance(image, str):
        try:
            await ctx.app.db.run(gallery.get_row, image, ctx.conn.uid, ctx.conn.is_admin)
        except NotFound:
            image = None
    else:
        image = None
    params = meta.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("the PNG's Paintbridge metadata is damaged (params)")
    return {"params": params, "graph": meta.get("graph"), "meta": meta, "image": image}
