"""Content-addressed blobs: blob.has, blob.put (whole or chunked), blob.get (whole or ranges).

A blob is readable by the users who uploaded it or own a job that produced it (engine/store/owners.py); admins
read all. Another user's blob looks exactly like a missing one, so existence is not leaked. Chunked uploads in
progress are kept by engine/uploads.py; unreferenced blobs are garbage-collected (engine/store/gc.py, blobs.gc).
"""

from __future__ import annotations

import asyncio
import time

from pydantic import Field, model_validator

from ..errors import BadRequest, Busy, NotFound, TooLarge
from ..opspec import Args, op
from ..store.blobs import is_sha256
from ..store.owners import owned, record

SHA = Field(pattern=r"^[0-9a-f]{64}$")


class HasArgs(Args):
    hashes: list[str] = Field(max_length=4096)


@op("blob.has", HasArgs)
async def blob_has(ctx, args: HasArgs):
    """Which of these blobs must still be uploaded: {missing}."""
    bad = [h for h in args.hashes if not is_sha256(h)]
    if bad:
        raise BadRequest("hashes must be lowercase hex SHA-256", details={"invalid": bad[:10]})
    have = await ctx.app.db.run(owned, ctx.conn.uid, args.hashes, False)
    have = await ctx.run_blocking(lambda: {h for h in have if ctx.app.blobs.exists(h)})
    return {"missing": [h for h in args.hashes if h not in have]}


class PutArgs(Args):
    data: bytes
    upload: str | None = Field(default=None, min_length=1, max_length=128)
    offset: int | None = Field(default=None, ge=0)
    final: bool = True

    @model_validator(mode="after")
    def chunked_needs_offset(self):
        if self.upload is not None and self.offset is None:
            raise ValueError("a chunk of a chunked upload needs 'offset'")
        if self.upload is None and self.offset not in (None, 0):
            raise ValueError("'offset' without 'upload': name the chunked upload this chunk belongs to")
        return self


# Chunks of one upload whose writes may still be running when their reply goes out (memory: this many chunks).
WRITES_AHEAD = 4


@op("blob.put", PutArgs, mutating=True)
async def blob_put(ctx, args: PutArgs):
    """Store bytes (or one chunk of a chunked upload); the last chunk's reply has {sha256, size}.

    A connection's frames are handled one after another, so a chunk's reply does not wait for its write: the
    write is queued behind the upload's earlier ones (Upload.tail) and the next chunk is read from the socket
    meanwhile. The final chunk waits for every write, so its {sha256, size} still means "on disk". A write that
    fails (disk full) drops the upload; the error comes back on a later chunk or the final one."""
    app, uid = ctx.app, ctx.conn.uid
    limits = app.config.limits
    uploads = app.uploads
    if args.upload is None:
        sha, size = await ctx.run_blocking(app.blobs.write, args.data)
        await app.db.run(record, sha, size, uid)
        return {"sha256": sha, "size": size}

    key = (uid, args.upload)
    up = uploads.open.get(key)
    if up is None:
        if args.offset != 0:
            raise BadRequest(f"unknown upload {args.upload!r}: start it at offset 0", details={"expected": 0})
        # Check, create and register under one lock: with awaits in between, parallel starts on other
        # connections all passed the limit, and two starts of one id each made a temp file (one orphaned).
        async with uploads.starting:
            await uploads.expire()
            up = uploads.open.get(key)
            if up is None:   # else another connection started this id meanwhile: the offset check below decides
                if uploads.count(uid) >= limits.max_pending_uploads:
                    raise Busy(f"at most {limits.max_pending_uploads} chunked uploads at once; finish or abandon "
                               "one")
                up = await ctx.run_blocking(app.blobs.begin)
                up.lock = asyncio.Lock()   # two connections of one user may feed the same upload id
                uploads.open[key] = up
    async with up.lock:
        if uploads.open.get(key) is not up:
            raise BadRequest(f"upload {args.upload!r} was finished or dropped meanwhile", details={"expected": 0})
        if args.offset != up.accepted:
            raise BadRequest(f"chunk offset {args.offset} does not continue upload {args.upload!r} at "
                             f"{up.accepted}", details={"expected": up.accepted})
        if up.accepted + len(args.data) > limits.max_blob_size:
            await uploads.drop(key, up)
            raise TooLarge(f"blob larger than the {limits.max_blob_size} byte limit; upload dropped")
        up.accepted += len(args.data)
        up.touched = time.monotonic()
        up.tail = asyncio.ensure_future(_write_after(ctx, up, up.tail, args.data))
        up.writes.append(up.tail)
        try:
            while len(up.writes) > (0 if args.final else WRITES_AHEAD) or (up.writes and up.writes[0].done()):
                await up.writes.pop(0)   # raises the first failed write
            if not args.final:
                return {"upload": args.upload, "received": up.accepted}
            uploads.open.pop(key, None)
            sha, size = await ctx.run_blocking(up.finish)
        except OSError:   # disk full or unwritable: a half-written upload cannot be resumed; drop it
            await uploads.drop(key, up)
            raise
    await app.db.run(record, sha, size, uid)
    return {"sha256": sha, "size": size}


async def _write_after(ctx, up, before, data: bytes):
    """Append data once the write queued before it is done (in order; nothing after a failed write)."""
    if before is not None:
        await before
    await ctx.run_blocking(up.append, data)


class GetArgs(Args):
    sha256: str = SHA
    offset: int = Field(default=0, ge=0)
    length: int | None = Field(default=None, ge=0)


async def readable_size(ctx, sha: str) -> int:
    """The size of a blob the caller may read; NotFound (never 'forbidden') otherwise."""
    ok = await ctx.app.db.run(owned, ctx.conn.uid, [sha], ctx.conn.is_admin, False)
    try:
        if not ok:
            raise FileNotFoundError
        return await ctx.run_blocking(ctx.app.blobs.size, sha)
    except FileNotFoundError:
        raise NotFound(f"no blob {sha}") from None


async def read_readable(ctx, sha: str) -> bytes:
    """A whole blob the caller may read (for ops that take a blob by hash)."""
    await readable_size(ctx, sha)
    try:
        return await ctx.run_blocking(ctx.app.blobs.read, sha)
    except FileNotFoundError:   # collected meanwhile
        raise NotFound(f"no blob {sha}") from None


@op("blob.get", GetArgs)
async def blob_get(ctx, args: GetArgs):
    """Read a blob or a range of it: {data, size}. A reply never exceeds the frame limit: read on from
    offset + len(data) until size."""
    size = await readable_size(ctx, args.sha256)
    if args.offset > size:
        raise BadRequest(f"offset {args.offset} is past the end of the blob ({size} bytes)", details={"size": size})
    max_len = ctx.app.config.limits.frame_limit - 4096
    length = min(size - args.offset, max_len if args.length is None else min(args.length, max_len))
    try:
        data = await ctx.run_blocking(ctx.app.blobs.read, args.sha256, args.offset, length)
    except FileNotFoundError:   # collected between the size and the read
        raise NotFound(f"no blob {args.sha256}") from None
    return {"data": data, "size": size}
