"""Content-addressed blobs: blob.has, blob.put (whole or chunked), blob.get (whole or ranges), blobs.gc.

A blob is readable by the users who uploaded it or own a job that produced it (table blob_owners); admins read
all. Another user's blob looks exactly like a missing one, so existence is not leaked.

Unreferenced blobs are garbage-collected (engine/store/gc.py) some time after they were last uploaded or used:
`record` (every put and every job result) and `owned` (blob.has, and the layer checks of generate/graph.submit/
workflows.run) refresh `blobs.touched`, so a blob a client was just told "have it" stays for a while.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import Field, model_validator

from ..errors import BadRequest, Busy, NotFound, TooLarge
from ..store.blobs import is_sha256
from . import Args, op

SHA = Field(pattern=r"^[0-9a-f]{64}$")


def owned(db, uid: int, hashes: list[str], admin: bool = False, touch: bool = True) -> set[str]:
    """Subset of hashes that exist and that this user may read. With touch (the default: blob.has and the layer
    checks of the generation ops) they count as used now, which keeps them from GC for upload_retention_h.
    The touch comes first, in its own statement: a GC batch either ran before it (the row is gone: not owned)
    or runs after it (it sees a fresh touch and keeps the blob)."""
    if not hashes:
        return set()
    marks = ",".join("?" * len(hashes))
    if touch:
        if admin:
            db.execute(f"UPDATE blobs SET touched = ? WHERE sha256 IN ({marks})", [time.time(), *hashes])
        else:
            db.execute(f"UPDATE blobs SET touched = ? WHERE sha256 IN (SELECT sha256 FROM blob_owners WHERE "
                       f"user_id = ? AND sha256 IN ({marks}))", [time.time(), uid, *hashes])
    if admin:
        rows = db.execute(f"SELECT sha256 FROM blobs WHERE sha256 IN ({marks})", hashes)
    else:
        rows = db.execute(f"SELECT sha256 FROM blob_owners WHERE user_id = ? AND sha256 IN ({marks})",
                          [uid, *hashes])
    return {r[0] for r in rows}


def record(db, sha: str, size: int, uid: int) -> None:
    """After the file is written (BlobStore.write / Upload.finish): the row, touched now, and its owner."""
    now = time.time()
    db.execute("INSERT INTO blobs (sha256, size, created, touched) VALUES (?, ?, ?, ?) "
               "ON CONFLICT(sha256) DO UPDATE SET touched = excluded.touched", [sha, size, now, now])
    db.execute("INSERT OR IGNORE INTO blob_owners (sha256, user_id) VALUES (?, ?)", [sha, uid])


class HasArgs(Args):
    hashes: list[str] = Field(max_length=4096)


@op("blob.has", HasArgs)
async def blob_has(ctx, args: HasArgs):
    """Which of these blobs must still be uploaded: {missing}."""
    bad = [h for h in args.hashes if not is_sha256(h)]
    if bad:
        raise BadRequest("hashes must be lowercase hex SHA-256", details={"invalid": bad[:10]})
    have = await ctx.server.db.run(owned, ctx.conn.uid, args.hashes, False)
    have = await ctx.server.run_blocking(lambda: {h for h in have if ctx.server.blobs.exists(h)})
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
    server, uid = ctx.server, ctx.conn.uid
    limits = server.config.limits
    if args.upload is None:
        sha, size = await server.run_blocking(server.blobs.write, args.data)
        await server.db.run(record, sha, size, uid)
        return {"sha256": sha, "size": size}

    key = (uid, args.upload)
    up = server.uploads.get(key)
    if up is None:
        if args.offset != 0:
            raise BadRequest(f"unknown upload {args.upload!r}: start it at offset 0", details={"expected": 0})
        await server.expire_uploads()
        if sum(1 for k in server.uploads if k[0] == uid) >= limits.max_pending_uploads:
            raise Busy(f"at most {limits.max_pending_uploads} chunked uploads at once; finish or abandon one")
        up = await server.run_blocking(server.blobs.begin)
        up.lock = asyncio.Lock()   # two connections of one user may feed the same upload id
        server.uploads[key] = up
    async with up.lock:
        if server.uploads.get(key) is not up:
            raise BadRequest(f"upload {args.upload!r} was finished or dropped meanwhile", details={"expected": 0})
        if args.offset != up.accepted:
            raise BadRequest(f"chunk offset {args.offset} does not continue upload {args.upload!r} at "
                             f"{up.accepted}", details={"expected": up.accepted})
        if up.accepted + len(args.data) > limits.max_blob_size:
            await _drop(server, key, up)
            raise TooLarge(f"blob larger than the {limits.max_blob_size} byte limit; upload dropped")
        up.accepted += len(args.data)
        up.touched = time.monotonic()
        up.tail = asyncio.ensure_future(_write_after(server, up, up.tail, args.data))
        up.writes.append(up.tail)
        try:
            while len(up.writes) > (0 if args.final else WRITES_AHEAD) or (up.writes and up.writes[0].done()):
                await up.writes.pop(0)   # raises the first failed write
            if not args.final:
                return {"upload": args.upload, "received": up.accepted}
            server.uploads.pop(key, None)
            sha, size = await server.run_blocking(up.finish)
        except OSError:   # disk full or unwritable: a half-written upload cannot be resumed; drop it
            await _drop(server, key, up)
            raise
    await server.db.run(record, sha, size, uid)
    return {"sha256": sha, "size": size}


async def _write_after(server, up, before, data: bytes):
    """Append data once the write queued before it is done (in order; nothing after a failed write)."""
    if before is not None:
        await before
    await server.run_blocking(up.append, data)


async def _drop(server, key, up):
    """Forget an upload and delete its temp file, after any write still running."""
    if server.uploads.get(key) is up:
        server.uploads.pop(key)
    await server.abort_upload(up)


class GetArgs(Args):
    sha256: str = SHA
    offset: int = Field(default=0, ge=0)
    length: int | None = Field(default=None, ge=0)


async def readable_size(ctx, sha: str) -> int:
    """The size of a blob the caller may read; NotFound (never 'forbidden') otherwise."""
    server = ctx.server
    ok = await server.db.run(owned, ctx.conn.uid, [sha], ctx.conn.is_admin, False)
    try:
        if not ok:
            raise FileNotFoundError
        return await server.run_blocking(server.blobs.size, sha)
    except FileNotFoundError:
        raise NotFound(f"no blob {sha}") from None


async def read_readable(ctx, sha: str) -> bytes:
    """A whole blob the caller may read (for ops that take a blob by hash)."""
    await readable_size(ctx, sha)
    try:
        return await ctx.server.run_blocking(ctx.server.blobs.read, sha)
    except FileNotFoundError:   # collected meanwhile
        raise NotFound(f"no blob {sha}") from None


@op("blob.get", GetArgs)
async def blob_get(ctx, args: GetArgs):
    """Read a blob or a range of it: {data, size}. A reply never exceeds the frame limit: read on from
    offset + len(data) until size."""
    server = ctx.server
    size = await readable_size(ctx, args.sha256)
    if args.offset > size:
        raise BadRequest(f"offset {args.offset} is past the end of the blob ({size} bytes)", details={"size": size})
    max_len = server.config.limits.frame_limit - 4096
    length = min(size - args.offset, max_len if args.length is None else min(args.length, max_len))
    try:
        data = await server.run_blocking(server.blobs.read, args.sha256, args.offset, length)
    except FileNotFoundError:   # collected between the size and the read
        raise NotFound(f"no blob {args.sha256}") from None
    return {"data": data, "size": size}


class GcArgs(Args):
    dry_run: bool = False


@op("blobs.gc", GcArgs, admin=True, mutating=True)
async def blobs_gc(ctx, args: GcArgs):
    """Delete the blobs nothing references any more (admin): {deleted, bytes, kept}; dry_run only counts."""
    report = await ctx.server.gc.run(args.dry_run)
    return {"deleted": report["deleted"], "bytes": report["bytes"], "kept": report["kept"]}
