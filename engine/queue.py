"""The job queue: persisted in SQLite, one job at a time on a worker thread, events to the owner.

It schedules and runs jobs, nothing more: the ops check requests (budgets, layers, models) before `submit`,
nodes reach the engine through their JobContext (engine/job_context.py), and what happens to results after a
job (the gallery) is wired by the composition root (engine/app.py) through `on_result` and `on_complete`.

A completed job is answered first and archived after: its result blobs are durable when the job ends, so
job.result goes out as soon as the row says `completed`; the `on_complete` hooks (the gallery's PNG, thumbnail
and rows: seconds for a 4K image) then run on a thread of their own, in completion order, while the next job
runs. The row keeps `archived = 0` until they have run, so a crash or stop in between loses nothing: the next
start runs them for every such job before any new job (`settled()` lets a reader wait for them).

Order: highest priority first; within a priority, round-robin between users (the user served longest ago
goes next); within a user, FIFO, except that a runner with warm models (a pool, engine/pool/) may take, within
that user's turn, the user's oldest of the next 32 jobs whose model is already loaded on a free worker.
job.cancel stops a running job at its next denoising step. On start, jobs left 'running' by a crash or kill are
marked failed with code 'interrupted'; queued jobs run. Stopping the engine (SIGTERM) stops the running job at
its next step the same way: failed, code 'interrupted'.

Who runs a job is the runner's business, one seam: the queue asks the runner how many jobs it can take now
(`free`), claims that many, one at a time, in the order above, and hands each to `runner.run(row, ctx)`. The
default runner (InProcessRunner) runs one job at a time on the job thread of this process; the pool
(engine/pool/) runs one job per free worker on Ray Serve and may hand a job back (`requeue`) when its worker
died mid-job.

Live jobs (generate with live, SPEC §7 "Live"): a user's live job runs ahead of that user's ordinary jobs and
takes that user's turn in the round-robin, so other users are never starved. Each connection has at most one
queued live job: a newer one supersedes it (job.canceled, reason "superseded"), and with preempt also stops
that connection's running live job at its next step; the same inputs as its newest live job start nothing.
A live job's results are not put in the gallery (no on_result/on_complete hooks) until `keep` asks for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor

from . import events
from .errors import BadRequest, Busy, NotFound
from .graph import graph as graphs
from .job_context import JobContext, run_job

log = logging.getLogger("paintbridge.queue")

ACTIVE = ("queued", "running")
INTERRUPTED = {"code": "interrupted", "message": "the engine stopped while this job was running; submit it again",
               "details": None}


def _row_public(row: dict, progress: dict | None = None) -> dict:
    result = json.loads(row["result"]) if row["result"] else None
    return {"job": row["id"], "status": row["status"], "kind": row["kind"], "priority": row["priority"],
            "owner": row["user_id"], "app": row["app"] or "",
            "created": row["created"], "started": row["started"], "finished": row["finished"],
            "layers": (result or {}).get("layers", []), "error": json.loads(row["error"]) if row["error"] else None,
            "request": json.loads(row["request"]) if row["request"] else None, "progress": progress,
            "worker": row.get("worker")}


def job_model(row: dict) -> str:
    """The main model a queued job loads first ("" for none: an upscale without diffusion): what a pool routes
    on, so that a worker that has it loaded gets the job."""
    try:
        graph = json.loads(row["graph"]) if isinstance(row["graph"], str) else row["graph"]
        for node in graph["nodes"].values():
            if isinstance(node, dict) and node.get("type") == "load_model" and isinstance(node.get("model"), str):
                return node["model"]
    except (TypeError, ValueError, KeyError, AttributeError):
        pass
    return ""


class InProcessRunner:
    """Runs jobs in this process, one at a time, on the queue's job thread (the engine without a pool)."""

    def __init__(self, queue: "JobQueue"):
        self.queue = queue

    def free(self) -> int:
        return 0 if self.queue.running else 1

    def warm(self) -> frozenset[str]:   # one slot: nothing to choose between
        return frozenset()

    def waiting(self) -> str | None:
        return None

    async def run(self, row: dict, ctx: JobContext):
        return await self.queue.loop.run_in_executor(self.queue.executor, self.queue._run, row, ctx)


class JobQueue:
    def __init__(self, config, db, blobs, hub, registry, cache):
        self.config, self.db, self.blobs, self.hub = config, db, blobs, hub
        self.registry = registry
        self.cache = cache
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wake = asyncio.Event()
        self.running: dict[str, JobContext] = {}
        self.jobs: set[asyncio.Task] = set()   # one task per running job
        self.runner = InProcessRunner(self)    # the pool replaces it (engine/app.py)
        # graphs validated at submit, by job id: a job is validated once (a job queued before a restart: at run)
        self.validated: dict[str, graphs.Graph] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-job")
        # the on_complete hooks of finished jobs, in completion order, off the job thread
        self.archiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-archive")
        self.archiving: dict[str, tuple[int, Future]] = {}   # job id -> (owner, its on_complete run)
        self.last_served: dict[int, float] = {}
        self.stopping = False
        self.stuck = False   # set by stop(): the job or archive thread was still busy after the grace period
        self.interrupted: set[str] = set()   # jobs canceled because the engine stops (not by their owner)
        self.cancel_reasons: dict[str, str] = {}   # job -> job.canceled's reason ("superseded")
        # live lane: connection key -> its newest live job {"id", "same", "seed"}; live job -> its connection
        # while queued or running
        self.live_newest: dict[str, dict] = {}
        self.live_conn: dict[str, str] = {}
        self._task: asyncio.Task | None = None
        # Called on the job thread as fn(row, layers) after a job's results are written and before job.result:
        # must be quick (the gallery names its images here). An exception fails the job.
        self.on_result: list = []
        # Called on the archive thread as fn(row, graph, layers) after job.result was sent (graph: the validated
        # Graph, or None when a job recovered at start no longer validates); row["finished"] is when it
        # completed. An exception leaves the job to be archived again at the next start; the job stays
        # completed whatever happens here.
        self.on_complete: list = []

    # -- lifecycle
    async def start(self):
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        n = await self.db.run(_mark_interrupted)
        if n:
            log.warning("%d job(s) were running when the engine stopped; marked failed (interrupted)", n)
        n = await self.db.run(_cancel_stale_live)
        if n:
            log.info("%d live job(s) queued when the engine stopped: canceled (their connections are gone)", n)
        left = await self.db.run(lambda db: list(db.query(
            "SELECT * FROM jobs WHERE archived = 0 AND status = 'completed' ORDER BY seq")))
        if left:   # answered, then the engine stopped before the gallery had them: archive them first
            log.warning("archiving %d finished job(s) the engine stopped before it had archived", len(left))
        for row in left:
            try:
                graph = graphs.validate(json.loads(row["graph"]))
            except Exception:
                graph = None
            self._archive(row, graph, json.loads(row["result"])["layers"])
        self._task = asyncio.create_task(self._worker())
        self.wake.set()

    async def stop(self, grace_s: float = 10.0) -> bool:
        """Stop the running job at its next step (it ends failed, code 'interrupted') and wait up to grace_s
        for it and then for the archive of finished jobs. False (and `stuck`) if a thread is still busy after
        that: a step that takes longer (its row stays 'running'; the next start marks it interrupted), or an
        archive (its job stays archived = 0; the next start archives it)."""
        self.stopping = True
        for job, ctx in self.running.items():
            self.interrupted.add(job)
            ctx.canceled.set()
        self.wake.set()
        end = time.monotonic() + grace_s
        idle = True
        tasks = ([self._task] if self._task else []) + list(self.jobs)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            if late:
                for task in late:
                    task.cancel()
                idle = False
                log.warning("job %s did not reach its next step within %.0f s; it will be marked interrupted "
                            "at the next start", ", ".join(self.running) or "?", grace_s)
        pending = [asyncio.wrap_future(f) for _, f in self.archiving.values()]
        if pending:
            done, _ = await asyncio.wait(pending, timeout=max(0.1, end - time.monotonic()))
            if len(done) < len(pending):
                idle = False
                log.warning("%d finished job(s) not archived yet; the next start archives them",
                            len(pending) - len(done))
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.archiver.shutdown(wait=False, cancel_futures=True)
        self.stuck = not idle
        return idle

    async def settled(self, uid: int | None = None):
        """Wait until the jobs completed so far (of user uid; None: everyone's) are in the gallery: an
        images.* request answers after the archive of every result its client may have seen."""
        pending = [asyncio.wrap_future(f) for owner, f in list(self.archiving.values()) if uid in (None, owner)]
        if pending:
            await asyncio.wait(pending)

    # -- requests
    async def submit(self, uid: int, kind: str, request: dict, graph: graphs.Graph, priority: int, app: str) -> str:
        """Queue a checked request (graph: validated by the op) → the job id."""
        graph_raw = graph.raw
        limit = self.config.limits.max_queued_per_user
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

        job, position = await self.db.run(insert)
        self.validated[job] = graph
        self.hub.publish(uid, events.job_queued(job, position))
        self.wake.set()
        return job

    async def submit_live(self, uid: int, conn: str, same: str, preempt: bool, kind: str, request: dict,
                          graph: graphs.Graph, priority: int, app: str) -> tuple[dict, bool]:
        """Queue a live job for connection `conn` → ({"id", "seed"}, unchanged). `same` identifies its inputs:
        when the connection's newest live job had the same and has not failed or been canceled, that job is
        returned and nothing is queued (unchanged = True). Otherwise the connection's queued live job is
        canceled as superseded (and its running one too, with preempt) before the new one is queued."""
        newest = self.live_newest.get(conn)
        if newest is not None and newest["same"] == same:
            status = await self.db.run(lambda db: db.execute("SELECT status FROM jobs WHERE id = ?",
                                                             [newest["id"]]).fetchone())
            if status is not None and status[0] in ("queued", "running", "completed"):
                return newest, True
        for job in [j for j, c in self.live_conn.items() if c == conn]:
            if job in self.running:
                if preempt:
                    self.cancel_reasons[job] = "superseded"
                    self.running[job].canceled.set()
            elif await self.db.run(_finish, job, "canceled", None, None, "queued"):
                self.live_conn.pop(job, None)
                self.validated.pop(job, None)
                self.hub.publish(uid, events.job_canceled(job, "superseded"))
        job = await self.submit(uid, kind, request, graph, priority, app)
        self.live_conn[job] = conn
        self.live_newest[conn] = newest = {"id": job, "same": same, "seed": request.get("seed")}
        return newest, False

    async def end_live(self, conn: str) -> None:
        """Connection `conn` closed: its lane is forgotten and its queued live job canceled ("disconnected": nobody
        is left to see it). A running one ends as usual; a client that reconnects reads its end again."""
        self.live_newest.pop(conn, None)
        if self.stopping:   # the engine stops: every queued job stays queued for the next start
            return
        for job in [j for j, c in self.live_conn.items() if c == conn]:
            if job in self.running:
                continue
            self.live_conn.pop(job, None)
            row = await self.db.run(lambda db: db.execute("SELECT user_id FROM jobs WHERE id = ?", [job]).fetchone())
            if row is not None and await self.db.run(_finish, job, "canceled", None, None, "queued"):
                self.validated.pop(job, None)
                self.hub.publish(row[0], events.job_canceled(job, "disconnected"))

    async def keep(self, job: str, uid: int, admin: bool) -> None:
        """Put a finished live job's results in the gallery (images.keep); returns once they are there. A job
        that is in the gallery already (an ordinary one, or kept before) is left as it is."""
        row = await self.get_row(job, uid, admin)
        if job in self.archiving:
            await asyncio.wrap_future(self.archiving[job][1])
            return
        if row["status"] != "completed":
            raise BadRequest(f"job {job} is {row['status']}: only a completed job's images can be kept",
                             details={"field": "job"})
        if not is_live(row) or row["archived"] is not None:
            return   # archived (1), or being archived at the next start (0)
        layers = json.loads(row["result"])["layers"]
        for fn in self.on_result:   # the gallery names the images now, as it does for an ordinary job
            fn(row, layers)
        try:
            graph = graphs.validate(json.loads(row["graph"]))
        except Exception:
            graph = None
        fut = self._archive(row, graph, layers)   # registered at once: a second keep waits for this one
        # job.get answers the image ids; archived stays NULL until the archive is done (then 1): a keep cut
        # short by a stop is simply asked again (images already in the gallery are skipped)
        result = json.dumps({"layers": layers})
        await self.db.run(lambda db: db.execute("UPDATE jobs SET result = ? WHERE id = ?", [result, job]))
        await asyncio.wrap_future(fut)

    async def get_row(self, job: str, uid: int, admin: bool) -> dict:
        rows = await self.db.run(lambda db: list(db.query("SELECT * FROM jobs WHERE id = ?", [job])))
        if not rows or (rows[0]["user_id"] != uid and not admin):
            raise NotFound(f"no job {job}")   # another user's job looks like a missing one
        return rows[0]

    async def get(self, job: str, uid: int, admin: bool) -> dict:
        row = await self.get_row(job, uid, admin)
        ctx = self.running.get(job)
        out = _row_public(row, ctx.progress_state if ctx else None)
        if row["status"] == "queued":   # why it waits, when the runner knows (a pool with no worker up)
            out["waiting"] = self.runner.waiting()
        return out

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
        rows = await self.db.run(lambda db: list(db.query(sql, params)))
        return [_row_public(r) for r in rows]

    async def cancel(self, job: str, uid: int, admin: bool) -> dict:
        row = await self.get_row(job, uid, admin)
        if row["status"] == "queued":
            changed = await self.db.run(_finish, job, "canceled", None, None, "queued")
            if changed:
                self.validated.pop(job, None)
                self.live_conn.pop(job, None)
                self.hub.publish(row["user_id"], events.job_canceled(job))
                return {"status": "canceled"}
            row = await self.get_row(job, uid, admin)
        if row["status"] == "running" and job in self.running:
            self.running[job].canceled.set()
            return {"status": "canceling"}
        return {"status": row["status"]}

    # -- worker: the queue decides what runs next; its runner (this process, or the pool) runs it
    async def _worker(self):
        while not self.stopping:
            self.wake.clear()   # before looking: a submit or a freed slot from now on wakes us again
            if self.runner.free() <= 0:
                await self.wake.wait()
                continue
            row = await self.db.run(_claim_next, self.last_served, self.runner.warm())
            if row is not None and self.stopping:   # claimed while the engine began to stop: leave it queued
                await self.db.run(_requeue, row["id"])
                break
            if row is None:
                if not self.stopping:
                    await self.wake.wait()
                continue
            self.last_served[row["user_id"]] = time.monotonic()
            ctx = JobContext(row, config=self.config, db=self.db, blobs=self.blobs, registry=self.registry,
                             cache=self.cache, hub=self.hub)
            self.running[row["id"]] = ctx
            self.hub.publish(row["user_id"], events.job_started(row["id"]))
            task = asyncio.create_task(self._job(row, ctx))
            self.jobs.add(task)
            task.add_done_callback(self.jobs.discard)

    async def _job(self, row: dict, ctx: JobContext):
        try:
            status, result, error, graph = await self.runner.run(row, ctx)
        except Exception as exc:   # a runner's own bug must not leave the job 'running' forever
            log.exception("job %s: the runner failed", row["id"])
            status, result, error, graph = "failed", None, {"code": "internal", "message": str(exc)[:500],
                                                            "details": None}, None
        finally:
            self.running.pop(row["id"], None)
            self.wake.set()   # a slot is free
        if status == "requeue":   # its pool worker was lost: back in the queue, in its old place (engine/pool)
            await self.db.run(_requeue, row["id"])
            if not self.stopping:
                self.hub.publish(row["user_id"], events.job_queued(row["id"], 1))
            return
        self.live_conn.pop(row["id"], None)
        if row["id"] in self.interrupted and status != "completed":
            status, result, error = "failed", None, INTERRUPTED
        row["finished"] = time.time()
        live = is_live(row)
        await self.db.run(_finish, row["id"], status, result, error, "running", row["finished"], not live)
        reason = self.cancel_reasons.pop(row["id"], None)
        if status == "completed":
            self.hub.publish(row["user_id"], events.job_result(row["id"], result["layers"]))
            if not live:   # a live job's results reach the gallery only when kept (keep)
                self._archive(row, graph, result["layers"])
        elif status == "canceled":
            self.hub.publish(row["user_id"], events.job_canceled(row["id"], reason))
        else:
            self.hub.publish(row["user_id"], events.job_failed(row["id"], error))

    def _run(self, row: dict, ctx: JobContext):
        """On the job thread (the in-process runner). Returns (status, result, error, graph); never raises."""
        def graph_of():
            return self.validated.pop(row["id"], None) or graphs.validate(json.loads(row["graph"]))

        def name_results():
            for fn in self.on_result if not is_live(row) else ():   # a live job's: when kept
                fn(row, ctx.results)

        status, error, graph = run_job(ctx, graph_of, self.cache, self.config.limits.max_job_bytes, name_results)
        return status, ({"layers": ctx.results} if status == "completed" else None), error, graph

    def _archive(self, row: dict, graph, layers: list[dict]):
        """Run the on_complete hooks of a completed job on the archive thread; then mark it archived."""
        def run():
            try:
                for fn in self.on_complete:
                    fn(row, graph, layers)
            except Exception:
                log.exception("archiving job %s failed; the next start tries again", row["id"])
                return
            self.db.sync(lambda db: db.execute("UPDATE jobs SET archived = 1 WHERE id = ?", [row["id"]]))

        fut = self.archiver.submit(run)
        self.archiving[row["id"]] = (row["user_id"], fut)
        fut.add_done_callback(lambda _: self.archiving.pop(row["id"], None))
        return fut


def _mark_interrupted(db) -> int:
    err = json.dumps(INTERRUPTED)
    cur = db.execute("UPDATE jobs SET status = 'failed', error = ?, finished = ? WHERE status = 'running'",
                     [err, time.time()])
    return cur.rowcount


def _cancel_stale_live(db) -> int:
    """Live jobs still queued from before a restart: nobody is left to see them (a live lane is a connection's)."""
    rows = [r for r in db.query("SELECT id, request FROM jobs WHERE status = 'queued'") if is_live(r)]
    now = time.time()
    for r in rows:
        db.execute("UPDATE jobs SET status = 'canceled', finished = ? WHERE id = ? AND status = 'queued'",
                   [now, r["id"]])
    return len(rows)


WARM_LOOKAHEAD = 32   # jobs of one user looked at for one whose model is warm (InvokeAI's multi-GPU queue: 32)


def is_live(row: dict) -> bool:
    try:
        return bool(json.loads(row.get("request") or "{}").get("live"))
    except ValueError:
        return False


def _claim_next(db, last_served: dict, warm: frozenset[str] = frozenset()) -> dict | None:
    # Each user's next job: their live job first, else their oldest at their highest priority. Users whose
    # highest priority is the top one take turns: the user served longest ago goes first.
    heads: dict[int, tuple] = {}
    for r in db.execute("SELECT id, user_id, priority, seq, COALESCE(json_extract(request, '$.live'), 0) "
                        "FROM jobs WHERE status = 'queued'"):
        job, uid, priority, seq, live = r
        rank = (bool(live), priority, -seq)
        top, best = heads.get(uid, (priority, None))
        heads[uid] = (max(top, priority), rank if best is None or rank > best else best)
    if not heads:
        return None
    top = max(t for t, _ in heads.values())
    uid, (_, (live, _, neg_seq)) = min(((u, h) for u, h in heads.items() if h[0] == top),
                                       key=lambda it: (last_served.get(it[0], 0.0), -it[1][1][2]))
    row = next(iter(db.query("SELECT * FROM jobs WHERE seq = ? AND status = 'queued'", [-neg_seq])), None)
    if row is None:
        return None
    if warm and not live and job_model(row) not in warm:   # within this user's turn: a job a free worker has warm
        ahead = db.query("SELECT * FROM jobs WHERE status = 'queued' AND priority = ? AND user_id = ? "
                         "ORDER BY seq LIMIT ?", [row["priority"], uid, WARM_LOOKAHEAD])
        row = next((r for r in ahead if job_model(r) in warm), row)
    cur = db.execute("UPDATE jobs SET status = 'running', started = ? WHERE id = ? AND status = 'queued'",
                     [time.time(), row["id"]])
    if cur.rowcount != 1:
        return None
    row["status"] = "running"
    return row


def _requeue(db, job: str) -> None:
    db.execute("UPDATE jobs SET status = 'queued', started = NULL, worker = NULL WHERE id = ? AND status = 'running'",
               [job])


def _finish(db, job: str, status: str, result, error, expect: str, now: float | None = None,
            archive: bool = True) -> bool:
    # a completed job is archived after it is answered (JobQueue._archive): archived = 0 until then; a live job
    # (archive False) keeps NULL until it is kept
    cur = db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, finished = ?, archived = ? "
                     "WHERE id = ? AND status = ?",
                     [status, json.dumps(result) if result is not None else None,
                      json.dumps(error) if error is not None else None, now or time.time(),
                      0 if status == "completed" and archive else None, job, expect])
    return cur.rowcount == 1
