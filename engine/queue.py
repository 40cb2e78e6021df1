"""The job queue: persisted in SQLite, one job at a time on a worker thread, events to the owner.

Order: highest priority first; within a priority, round-robin between users (the user served longest ago
goes next); within a user, FIFO. job.cancel stops a running job at its next denoising step. On start, jobs
left 'running' by a crash or kill are marked failed with code 'interrupted'; queued jobs run.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import BadRequest, Busy, Canceled, EngineError, NotFound
from .graph import graph as graphs
from .graph.node import Image, Mask, ModelValue
from .ops.blobs import record as record_blob

log = logging.getLogger("paintbridge.queue")

ACTIVE = ("queued", "running")


def _row_public(row: dict, progress: dict | None = None) -> dict:
    result = json.loads(row["result"]) if row["result"] else None
    return {"job": row["id"], "status": row["status"], "kind": row["kind"], "priority": row["priority"],
            "created": row["created"], "started": row["started"], "finished": row["finished"],
            "layers": (result or {}).get("layers", []), "error": json.loads(row["error"]) if row["error"] else None,
            "request": json.loads(row["request"]) if row["request"] else None, "progress": progress}


class JobContext:
    """What nodes see while a job runs (the `ctx` of Node.invoke)."""

    def __init__(self, queue: "JobQueue", row: dict):
        self.queue = queue
        self.server = queue.server
        self.job = row["id"]
        self.uid = row["user_id"]
        self.canceled = threading.Event()
        self.results: list[dict] = []
        self.progress_state: dict | None = None
        self.node_id = ""
        self.node_index = 0
        self.node_count = 0
        self.config = queue.server.config

    # -- cancel / errors
    def is_canceled(self) -> bool:
        return self.canceled.is_set()

    def check_canceled(self):
        if self.canceled.is_set():
            raise Canceled("canceled")

    def error(self, message: str) -> EngineError:
        return BadRequest(f"node {self.node_id!r}: {message}", details={"node": self.node_id})

    # -- models
    def load_model(self, name: str) -> ModelValue:
        from .models.patch import ModelRef
        return ModelRef(self.queue.cache.get(name), name)

    def expand_prompt(self, text: str, model: ModelValue) -> str:
        """`<name>` of a registered textual-inversion embedding -> its tokens, loaded into the model for this job."""
        from .models.patch import expand_prompt
        return expand_prompt(self.queue.registry, self.queue.cache, text, model)

    # -- pixels in and out
    def _read_layer(self, layer: dict, fmt: str) -> np.ndarray:
        if layer.get("format", fmt) != fmt:
            raise self.error(f"expected a {fmt} layer, got {layer.get('format')}")
        data = self.server.blobs.read(layer["sha256"])
        w, h = int(layer["w"]), int(layer["h"])
        channels = 4 if fmt == "rgba8" else 1
        if len(data) != w * h * channels:
            raise self.error(f"blob {layer['sha256'][:12]}… has {len(data)} bytes, a {fmt} {w}x{h} layer needs "
                             f"{w * h * channels}")
        arr = np.frombuffer(data, np.uint8)
        return arr.reshape(h, w, 4) if channels == 4 else arr.reshape(h, w)

    def load_image(self, layer: dict) -> Image:
        return Image(self._read_layer(layer, "rgba8"), int(layer.get("x", 0)), int(layer.get("y", 0)))

    def load_mask(self, layer: dict) -> Mask:
        return Mask(self._read_layer(layer, "gray8"), int(layer.get("x", 0)), int(layer.get("y", 0)))

    def add_result(self, image: Image, name: str, seed: int | None):
        rgba = np.ascontiguousarray(image.rgba, dtype=np.uint8)
        sha, size = self.server.blobs.write(rgba.tobytes())
        self.server.db.sync(record_blob, sha, size, self.uid)
        layer = {"sha256": sha, "w": image.w, "h": image.h, "format": "rgba8", "x": image.x, "y": image.y,
                 "name": name}
        if seed is not None:
            layer["seed"] = seed
        self.results.append(layer)

    # -- progress
    def progress(self, step: int, total: int, loaded, latents):
        from . import diffusion

        self.progress_state = {"step": step, "total": total, "node": self.node_id}
        data = {"job": self.job, "step": step, "total": total, "node": self.node_id}
        try:
            rgb = diffusion.preview(loaded, latents)
            h, w = rgb.shape[:2]
            rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
            data["preview"] = {"w": w, "h": h, "format": "rgba8", "x": 0, "y": 0, "data": rgba.tobytes()}
        except Exception:   # a preview is a nicety; never fail a job for it
            log.debug("preview failed", exc_info=True)
        self.queue.publish_threadsafe(self.uid, "job.progress", data, droppable=True)


class JobQueue:
    def __init__(self, server, registry, cache):
        self.server = server
        self.registry = registry
        self.cache = cache
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wake = asyncio.Event()
        self.running: dict[str, JobContext] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-job")
        self.last_served: dict[int, float] = {}
        self._task: asyncio.Task | None = None
        # Called on the job thread as fn(row, ctx, layers) after a job's results are written and before it is
        # marked completed (the gallery records images here). An exception fails the job.
        self.on_complete: list = []

    # -- lifecycle
    async def start(self):
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        n = await self.server.db.run(_mark_interrupted)
        if n:
            log.warning("%d job(s) were running when the engine stopped; marked failed (interrupted)", n)
        self._task = asyncio.create_task(self._worker())
        self.wake.set()

    async def stop(self):
        for ctx in self.running.values():
            ctx.canceled.set()
        if self._task:
            self._task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def publish_threadsafe(self, uid: int, name: str, data: dict, droppable: bool = False):
        self.loop.call_soon_threadsafe(self.server.publish, uid, name, data, droppable)

    # -- requests
    async def submit(self, uid: int, kind: str, request: dict, graph_raw: dict, priority: int, app: str) -> str:
        if kind == "graph":   # generate checked its own arguments against the same budgets
            check_graph_budget(graph_raw, self.server.config.limits)
        limit = self.server.config.limits.max_queued_per_user
        try:   # msgpack bin/ext values (e.g. in a graph's meta) have no JSON form: refuse, do not crash
            request_json, graph_json = json.dumps(request), json.dumps(graph_raw)
        except (TypeError, ValueError, RecursionError) as exc:
            raise BadRequest(f"the request holds a value that is not plain data (str, number, bool, nil, "
                             f"list, map): {type(exc).__name__}") from None

        def insert(db):
            queued = db.execute("SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')",
                                [uid]).fetchone()[0]
            if queued >= limit:
                raise Busy(f"you have {queued} jobs waiting; the limit is {limit}")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            job = secrets.token_hex(8)
            db["jobs"].insert({"id": job, "seq": seq, "user_id": uid, "status": "queued", "priority": priority,
                               "kind": kind, "request": request_json, "graph": graph_json,
                               "result": None, "error": None, "app": app, "created": time.time(),
                               "started": None, "finished": None})
            position = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            return job, position

        job, position = await self.server.db.run(insert)
        self.server.publish(uid, "job.queued", {"job": job, "position": position})
        self.wake.set()
        return job

    async def get_row(self, job: str, uid: int, admin: bool) -> dict:
        rows = await self.server.db.run(lambda db: list(db.query("SELECT * FROM jobs WHERE id = ?", [job])))
        if not rows or (rows[0]["user_id"] != uid and not admin):
            raise NotFound(f"no job {job}")   # another user's job looks like a missing one
        return rows[0]

    async def get(self, job: str, uid: int, admin: bool) -> dict:
        row = await self.get_row(job, uid, admin)
        ctx = self.running.get(job)
        return _row_public(row, ctx.progress_state if ctx else None)

    async def list(self, uid: int, admin: bool, status: str | None, limit: int, everyone: bool) -> list[dict]:
        sql, params = "SELECT * FROM jobs WHERE 1=1", []
        if not (admin and everyone):
            sql += " AND user_id = ?"
            params.append(uid)
        if status:
            sql += " AND status = ?"
            params.append(status)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = await self.server.db.run(lambda db: list(db.query(sql, params)))
        return [_row_public(r) for r in rows]

    async def cancel(self, job: str, uid: int, admin: bool) -> dict:
        row = await self.get_row(job, uid, admin)
        if row["status"] == "queued":
            changed = await self.server.db.run(_finish, job, "canceled", None, None, "queued")
            if changed:
                self.server.publish(row["user_id"], "job.canceled", {"job": job})
                return {"status": "canceled"}
            row = await self.get_row(job, uid, admin)
        if row["status"] == "running" and job in self.running:
            self.running[job].canceled.set()
            return {"status": "canceling"}
        return {"status": row["status"]}

    # -- worker
    async def _worker(self):
        while True:
            row = await self.server.db.run(_claim_next, self.last_served)
            if row is None:
                self.wake.clear()
                await self.wake.wait()
                continue
            self.last_served[row["user_id"]] = time.monotonic()
            ctx = JobContext(self, row)
            self.running[row["id"]] = ctx
            self.server.publish(row["user_id"], "job.started", {"job": row["id"]})
            try:
                status, result, error = await self.loop.run_in_executor(self.executor, self._run, row, ctx)
            finally:
                self.running.pop(row["id"], None)
            await self.server.db.run(_finish, row["id"], status, result, error, "running")
            if status == "completed":
                self.server.publish(row["user_id"], "job.result", {"job": row["id"], "layers": result["layers"]})
            elif status == "canceled":
                self.server.publish(row["user_id"], "job.canceled", {"job": row["id"]})
            else:
                self.server.publish(row["user_id"], "job.failed", {"job": row["id"], "error": error})

    def _run(self, row: dict, ctx: JobContext):
        """On the job thread. Returns (status, result, error); never raises."""
        try:
            graph = graphs.validate(json.loads(row["graph"]))
            graphs.execute(graph, ctx)
            for fn in self.on_complete:
                fn(row, ctx, ctx.results)
            return "completed", {"layers": ctx.results}, None
        except Canceled:
            _release_memory()
            return "canceled", None, None
        except EngineError as exc:
            _release_memory()
            return "failed", None, {"code": exc.code, "message": exc.message, "details": exc.details}
        except Exception as exc:
            _release_memory()   # a failed job (OOM included) gives its memory back before the next one
            if _is_oom(exc):
                msg = "out of memory: try a smaller size, fewer images per batch, or a smaller model"
                return "failed", None, {"code": "internal", "message": msg, "details": None}
            log.exception("job %s failed", row["id"])
            return "failed", None, {"code": "internal", "message": f"{type(exc).__name__}: {exc}"[:500],
                                    "details": None}
        finally:
            try:   # LoRAs and embeddings come off the cached models: the next job sees the original weights
                self.cache.reset_patches()
            except Exception:
                log.exception("restoring models after job %s failed", row["id"])


def _release_memory():
    """A full collection costs ~0.2 s with torch loaded: only after failures, where an exception's traceback may
    hold big tensors in cycles. Completed jobs free theirs by reference counting."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_graph_budget(graph_raw: dict, limits) -> None:
    """The same budgets as `generate` (pixels, steps, batch) for any graph, whoever built it: a hand-written
    graph must not be a way around the limits (e.g. a 16384x16384 noise or a 65536x65536 resize)."""
    denoise = 0
    for nid, spec in (graph_raw.get("nodes") or {}).items():
        if not isinstance(spec, dict):
            continue
        w, h, steps = spec.get("width"), spec.get("height"), spec.get("steps")
        if isinstance(w, int) and isinstance(h, int) and w * h > limits.max_pixels:
            raise BadRequest(f"node {nid!r}: {w}x{h} is {w * h / 1e6:.1f} MP, over the "
                             f"{limits.max_pixels / 1e6:.1f} MP budget", details={"node": nid, "field": "width"})
        if isinstance(steps, int) and steps > limits.max_steps:
            raise BadRequest(f"node {nid!r}: steps {steps} is more than the limit of {limits.max_steps}",
                             details={"node": nid, "field": "steps"})
        denoise += spec.get("type") == "denoise"
    if denoise > limits.max_batch:
        raise BadRequest(f"the graph has {denoise} denoise nodes; at most {limits.max_batch} (max_batch) per job",
                         details={"field": "nodes"})


def _is_oom(exc: Exception) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch
        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except Exception:
        pass
    return "out of memory" in str(exc).lower()


def _mark_interrupted(db) -> int:
    err = json.dumps({"code": "interrupted", "message": "the engine stopped while this job was running; "
                                                        "submit it again", "details": None})
    cur = db.execute("UPDATE jobs SET status = 'failed', error = ?, finished = ? WHERE status = 'running'",
                     [err, time.time()])
    return cur.rowcount


def _claim_next(db, last_served: dict) -> dict | None:
    top = db.execute("SELECT MAX(priority) FROM jobs WHERE status = 'queued'").fetchone()[0]
    if top is None:
        return None
    # the oldest queued job of each user at the top priority; the user served longest ago goes first
    rows = list(db.query(
        "SELECT * FROM jobs WHERE status = 'queued' AND priority = ? AND seq IN "
        "(SELECT MIN(seq) FROM jobs WHERE status = 'queued' AND priority = ? GROUP BY user_id)", [top, top]))
    rows.sort(key=lambda r: (last_served.get(r["user_id"], 0.0), r["seq"]))
    row = rows[0]
    cur = db.execute("UPDATE jobs SET status = 'running', started = ? WHERE id = ? AND status = 'queued'",
                     [time.time(), row["id"]])
    if cur.rowcount != 1:
        return None
    row["status"] = "running"
    return row


def _finish(db, job: str, status: str, result, error, expect: str) -> bool:
    cur = db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, finished = ? WHERE id = ? AND status = ?",
                     [status, json.dumps(result) if result is not None else None,
                      json.dumps(error) if error is not None else None, time.time(), job, expect])
    return cur.rowcount == 1


def install(server, cfg) -> "JobQueue":
    from . import nodes  # noqa: F401  (registers node types)
    from .models.cache import ModelCache
    from .models.registry import ModelRegistry

    registry = ModelRegistry(cfg.model_dirs, db_path=cfg.db_path, install_dir=cfg.data_dir / "models")
    cache = ModelCache(registry, on_event=lambda name, data: None, ram_budget_mb=cfg.ram_budget_mb,
                       vram_budget_mb=cfg.vram_budget_mb)
    queue = JobQueue(server, registry, cache)
    server.services.update(queue=queue, models=registry, cache=cache)
    from .gallery import on_job_complete
    queue.on_complete.append(on_job_complete)   # every result image into the gallery (PNG + metadata)

    async def start(srv):
        cache.on_event = lambda name, data: queue.loop.call_soon_threadsafe(srv.broadcast, name, data)
        await queue.start()
        registry.start_hasher()   # content hashes in the background, never in a request

    async def stop(srv):
        registry.stop()
        await queue.stop()

    server.on_startup(start)
    server.on_shutdown(stop)
    return queue
