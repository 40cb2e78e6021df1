"""Blob garbage collection: delete the blobs nothing references any more (config [blobs], SPEC.md section 5).

A blob is **live** while
- a gallery image uses it (its pixel layer or its thumbnail);
- a queued or running job names it anywhere in its request or graph (input layers);
- a job finished (or, unfinished, created) less than `job_retention_h` ago names it in its request, graph or
  result, so `job.get` and a reconnecting client still fetch results and a recall still finds its inputs;
- a saved workflow names it (image_input/mask_input layers, parameter defaults);
- it was uploaded or used less than `upload_retention_h` ago (`blobs.touched`: blob.put, blob.has answering
  "have it", a generate/graph.submit/workflows.run that takes it; and the file's mtime, refreshed by every
  write of the same bytes), or after the oldest running job started (its results are written before the job
  row says so). Never younger than MIN_AGE_S, whatever the configuration.
"Names it" is any 64-hex-digit string in the stored JSON that the job's or workflow's owner may read (an admin's:
any): loose enough to only keep too much, but a user cannot pin someone else's blobs by naming them.
Chunked uploads in progress are temp files under blobs/tmp, which GC never touches.

Everything else is garbage. One run: read what is live (no lock), then delete in batches of BATCH; each batch
holds the store's exclusive lock (BlobStore.lock) and one SQLite write transaction, re-checks every candidate
(touched, mtime, gallery rows, active and new jobs, new workflows) inside it, deletes the rows (blobs +
blob_owners) and commits, then unlinks the files. So a reader never sees a row whose file is gone, a writer
racing the batch either refreshed the file first (kept) or finds it gone and writes it again, and a crash
between commit and unlink leaves only row-less files, which the next run removes (orphan sweep). It works from
the engine (a worker thread with its own connection, never the event loop or the DB thread) and from
`paintbridge blobs gc` while an engine runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .blobs import SHA_RE, BlobStore
from .db import connect

log = logging.getLogger("paintbridge.gc")

HEX_RE = re.compile(r"[0-9a-f]{64}")
MIN_AGE_S = 60.0     # a blob touched this recently is always kept (covers a request between its checks and its job)
BATCH = 256          # blobs deleted per lock + transaction: keeps writers' waits short


@dataclass
class Plan:
    now: float
    upload_cutoff: float         # unreferenced blobs touched (and written) before this go
    job_cutoff: float            # jobs finished before this no longer keep their blobs
    total: int = 0               # blob rows
    total_bytes: int = 0
    live: set[str] = field(default_factory=set)
    candidates: list[tuple[str, int]] = field(default_factory=list)   # (sha256, size): old and unreferenced
    referenced: int = 0          # rows referenced by something
    referenced_bytes: int = 0


def _hashes(texts) -> set[str]:
    out: set[str] = set()
    for text in texts:
        if text:
            out.update(HEX_RE.findall(text))
    return out


def live_hashes(conn, job_cutoff: float) -> set[str]:
    """Every blob some gallery image, job (active or within retention) or workflow references. A gallery image
    also keeps the inputs its params name (init image, mask, control images, region masks): recall ("Use
    settings") of an image older than the job retention must still find them."""
    live: set[str] = set()
    for sha, thumb in conn.execute("SELECT sha256, thumb_sha256 FROM images"):
        live.add(sha)
        if thumb:
            live.add(thumb)
    live |= _readable_refs(conn, conn.execute("SELECT user_id, params FROM images WHERE params IS NOT NULL"))
    rows = conn.execute("SELECT user_id, request, graph, result FROM jobs WHERE status IN ('queued', 'running') "
                        "OR COALESCE(finished, created) >= ?", [job_cutoff])
    live |= _readable_refs(conn, rows)
    live |= _readable_refs(conn, conn.execute("SELECT user_id, graph, params FROM workflows"))
    return live


def _readable_refs(conn, rows) -> set[str]:
    """The hashes named in each (user_id, text...) row that this user may read. Free-form text (a workflow's
    description or meta, a graph's meta) can name any hash: without this check a user could keep another user's
    blobs from ever being collected."""
    admins = {r[0] for r in conn.execute("SELECT id FROM users WHERE admin = 1")}
    out: set[str] = set()
    for uid, *texts in rows:
        named = _hashes(texts)
        if not named:
            continue
        if uid in admins:
            out |= named
            continue
        named = sorted(named)
        for i in range(0, len(named), 500):
            part = named[i:i + 500]
            marks = ",".join("?" * len(part))
            out.update(r[0] for r in conn.execute(
                f"SELECT sha256 FROM blob_owners WHERE user_id = ? AND sha256 IN ({marks})", [uid, *part]))
    return out


def _fresh_refs(conn, since: float) -> set[str]:
    """References that may have appeared after the scan: active jobs, jobs and workflows written since."""
    refs: set[str] = set()
    refs |= _readable_refs(conn, conn.execute(
        "SELECT user_id, request, graph, result FROM jobs WHERE status IN ('queued', 'running') "
        "OR created >= ? OR COALESCE(finished, 0) >= ?", [since, since]))
    refs |= _readable_refs(conn, conn.execute("SELECT user_id, graph, params FROM workflows WHERE updated >= ?",
                                              [since]))
    return refs


def _in_gallery(conn, sha: str) -> bool:
    return conn.execute("SELECT 1 FROM images WHERE sha256 = ? OR thumb_sha256 = ? LIMIT 1", [sha, sha]).fetchone() \
        is not None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def plan(conn, retention, now: float | None = None) -> Plan:
    now = time.time() if now is None else now
    upload_s = max(float(retention.upload_retention_h) * 3600.0, MIN_AGE_S)
    job_s = max(float(retention.job_retention_h) * 3600.0, 0.0)
    upload_cutoff = now - upload_s
    oldest_running = conn.execute("SELECT MIN(started) FROM jobs WHERE status = 'running'").fetchone()[0]
    if oldest_running is not None:
        upload_cutoff = min(upload_cutoff, oldest_running - MIN_AGE_S)
    p = Plan(now=now, upload_cutoff=upload_cutoff, job_cutoff=now - job_s)
    p.live = live_hashes(conn, p.job_cutoff)
    for sha, size, touched in conn.execute("SELECT sha256, size, touched FROM blobs"):
        p.total += 1
        p.total_bytes += size
        if sha in p.live:
            p.referenced += 1
            p.referenced_bytes += size
        elif (touched if touched is not None else 0.0) < upload_cutoff:
            p.candidates.append((sha, size))
    return p


def _orphan_files(store: BlobStore, conn, p: Plan):
    """Blob files without a row (a crash between writing a file and recording it, or between a GC commit and
    its unlink), old enough to go."""
    try:
        shards = [d for d in os.scandir(store.root) if d.is_dir() and len(d.name) == 2 and d.name != "tmp"]
    except FileNotFoundError:
        return
    for shard in shards:
        try:
            entries = list(os.scandir(shard.path))
        except OSError:
            continue
        for e in entries:
            if not SHA_RE.match(e.name) or e.name in p.live:
                continue
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            if st.st_mtime >= p.upload_cutoff:
                continue
            if conn.execute("SELECT 1 FROM blobs WHERE sha256 = ?", [e.name]).fetchone() is None:
                yield e.name, st.st_size


def collect(store: BlobStore, db_path: Path, retention, dry_run: bool = False,
            stop: threading.Event | None = None) -> dict:
    """One GC run (blocking: call it off the event loop). Returns {"deleted", "bytes", "kept"} (+ details);
    with dry_run, what a run would delete now, deleting nothing."""
    db = connect(db_path)
    conn = db.conn
    try:
        p = plan(conn, retention)
        deleted = freed = rows_deleted = 0
        if dry_run:
            for sha, _ in p.candidates:
                mtime = _mtime(store.path(sha))
                if mtime is None or mtime < p.upload_cutoff:
                    deleted += 1
                    rows_deleted += 1
                    freed += _size(store.path(sha))
            for _, size in _orphan_files(store, conn, p):
                deleted += 1
                freed += size
        else:
            for i in range(0, len(p.candidates), BATCH):
                if stop is not None and stop.is_set():
                    break
                n, b = _delete_batch(store, conn, p, [sha for sha, _ in p.candidates[i:i + BATCH]])
                rows_deleted += n
                deleted += n
                freed += b
            orphans = []
            for sha, _ in _orphan_files(store, conn, p):
                if stop is not None and stop.is_set():
                    break
                orphans.append(sha)
                if len(orphans) >= BATCH:
                    d, b = _delete_orphans(store, conn, p, orphans)
                    deleted, freed, orphans = deleted + d, freed + b, []
            if orphans:
                d, b = _delete_orphans(store, conn, p, orphans)
                deleted, freed = deleted + d, freed + b
            # ownership rows whose blob is gone (older versions, or a crash): nobody can read them anyway
            conn.execute("DELETE FROM blob_owners WHERE sha256 NOT IN (SELECT sha256 FROM blobs)")
        return {"deleted": deleted, "bytes": freed, "kept": p.total - rows_deleted}
    finally:
        conn.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _delete_batch(store: BlobStore, conn, p: Plan, batch: list[str]) -> tuple[int, int]:
    gone: list[str] = []
    with store.lock(exclusive=True):
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh = _fresh_refs(conn, p.now)
            for sha in batch:
                row = conn.execute("SELECT touched FROM blobs WHERE sha256 = ?", [sha]).fetchone()
                if row is None or (row[0] or 0.0) >= p.upload_cutoff:
                    continue   # already gone, or uploaded/used again since the scan
                if sha in fresh or _in_gallery(conn, sha):
                    continue
                mtime = _mtime(store.path(sha))
                if mtime is not None and mtime >= p.upload_cutoff:
                    continue   # written again since (a write of the same bytes refreshes the mtime)
                conn.execute("DELETE FROM blobs WHERE sha256 = ?", [sha])
                conn.execute("DELETE FROM blob_owners WHERE sha256 = ?", [sha])
                gone.append(sha)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        # Rows first, files second (still under the lock): nobody sees a row without its file; a crash here
        # leaves row-less files for the next run's orphan sweep.
        freed = 0
        for sha in gone:
            path = store.path(sha)
            freed += _size(path)
            path.unlink(missing_ok=True)
    return len(gone), freed


def _delete_orphans(store: BlobStore, conn, p: Plan, shas: list[str]) -> tuple[int, int]:
    n = freed = 0
    with store.lock(exclusive=True):
        fresh = _fresh_refs(conn, p.now)
        for sha in shas:
            path = store.path(sha)
            mtime = _mtime(path)
            if mtime is None or mtime >= p.upload_cutoff or sha in fresh:
                continue
            if conn.execute("SELECT 1 FROM blobs WHERE sha256 = ?", [sha]).fetchone() is not None:
                continue   # recorded since the scan
            freed += _size(path)
            path.unlink(missing_ok=True)
            n += 1
    return n, freed


def stats(store: BlobStore, db_path: Path, retention) -> dict:
    """What the blob store holds and what a GC run would do now."""
    db = connect(db_path)
    conn = db.conn
    try:
        p = plan(conn, retention)
        garbage = garbage_bytes = 0
        for sha, _ in p.candidates:
            mtime = _mtime(store.path(sha))
            if mtime is None or mtime < p.upload_cutoff:
                garbage += 1
                garbage_bytes += _size(store.path(sha))
        orphans = list(_orphan_files(store, conn, p))
        tmp = [e for e in os.scandir(store.tmp) if e.is_file()] if store.tmp.exists() else []
        return {"blobs": p.total, "bytes": p.total_bytes,
                "referenced": p.referenced, "referenced_bytes": p.referenced_bytes,
                "recent": p.total - p.referenced - garbage, "recent_bytes": p.total_bytes - p.referenced_bytes
                - garbage_bytes,
                "garbage": garbage + len(orphans), "garbage_bytes": garbage_bytes + sum(s for _, s in orphans),
                "uploads_in_progress": len(tmp), "uploads_in_progress_bytes": sum(_size(Path(e.path)) for e in tmp),
                "upload_retention_h": float(retention.upload_retention_h),
                "job_retention_h": float(retention.job_retention_h)}
    finally:
        conn.close()


class Collector:
    """The engine's GC: at start and every gc_interval_min, plus blobs.gc; one run at a time, on its own thread."""

    def __init__(self, config, blobs: BlobStore):
        self.config, self.blobs = config, blobs
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-gc")
        self.stopping = threading.Event()
        self.task: asyncio.Task | None = None

    async def run(self, dry_run: bool = False) -> dict:
        cfg = self.config
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(self.executor, lambda: collect(self.blobs, cfg.db_path, cfg.blobs,
                                                                           dry_run, self.stopping))
        if report["deleted"] and not dry_run:
            log.info("blob GC: deleted %d blob(s), %.1f MiB freed, %d kept", report["deleted"],
                     report["bytes"] / 1048576, report["kept"])
        return report

    def start(self):
        if float(self.config.blobs.gc_interval_min) > 0:
            self.task = asyncio.create_task(self._loop())

    async def _loop(self):
        interval = float(self.config.blobs.gc_interval_min) * 60.0
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:   # never take the engine down: try again next time
                log.exception("blob GC failed")
            await asyncio.sleep(interval)

    async def stop(self):
        self.stopping.set()   # a run in progress ends after its current batch
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
