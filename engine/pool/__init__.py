"""The worker pool: the engine's jobs run on Ray Serve replicas, one job per worker (GPU) at a time.

The engine stays the front door and the one source of truth: sign-in, the SQLite queue (priorities, round-robin
between users), blobs, gallery and events. The queue (engine/queue.py) decides what runs next; the Pool is its
runner: it says how many workers are free (`free`), which models they hold (`warm`, so that within one user's
turn a job whose model is loaded goes first), and runs each claimed job on one worker (`run`): a streaming call
to the Serve deployment (engine/pool/worker.py) whose messages become the same job events a job run in process
sends. Ray's router never sees the queue, so it cannot undo the fairness between users.

Ray is imported only here and in worker.py, and only when the engine runs with a pool (`paintbridge serve
--workers N` or `--ray-address ADDR`); without those flags the engine runs jobs in its own process and never
imports Ray. The engine is a full Ray driver (ray.init), not a Ray Client (`ray://` refuses streaming handles).

Faults: a worker that dies mid-job (ActorDiedError; Serve does not retry streaming calls) or stops answering
for STALL_S gives the job back to the queue once; the second loss fails it with code `worker_lost`. A call that
no worker picks up within UNASSIGNED_S goes back to the queue the same way, so no job stays `running` forever. A
worker that cannot load a job's model is skipped for it (the job goes back to the queue and, Serve's router
permitting, to another worker); when every worker is up and each has refused it, the job fails. With no worker
up (the cluster gone, replicas restarting) the engine keeps serving: jobs wait, and `pool.status` and job.get's
`waiting` say why; a job running when the cluster stops answering goes back to the queue. Ray would end a driver
whose cluster has been unreachable for 60 s, the engine: it is told not to (RAY_gcs_rpc_server_reconnect_timeout_s).
A pool whose cluster is gone stays down until the engine is restarted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from .. import events
from ..graph import graph as graphs
from ..queue import is_live, job_model
from .blobs import BlobRoute

log = logging.getLogger("paintbridge.pool")

APP = "paintbridge"        # the Serve application's name
NAMESPACE = "paintbridge"
POLL_S = 2.0               # how often Serve's status of the workers is read
POLL_TIMEOUT_S = 10.0      # ... and how long it may take before the pool counts as down
STALL_S = 60.0             # a worker silent this long (it says "alive" every 5 s) is taken for lost
UNASSIGNED_S = 300.0       # a call no worker has taken after this goes back to the queue
REFUSED_RETRY_S = 1.0      # a job a worker refused waits this long before it is offered again
MAX_REFUSALS = 20



def ray_token_auth(env=os.environ) -> None:
    """Ray >= 2.59 starts clusters (`ray start --head`) with token auth on and writes the token to
    ~/.ray/auth_token (mode 0644), but a process that *joins* one sends it only in token mode: without
    RAY_AUTH_MODE=token, ray.init(address=...) and `ray start --address` fail with a bare "Failed to connect".
    So: token mode whenever a token is at hand (RAY_AUTH_MODE set by the person wins), and the token file made
    readable by its owner only (it is the whole cluster's key)."""
    path = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if path.is_file():
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except OSError:   # not ours to change: Ray still reads it
            pass
    if "RAY_AUTH_MODE" not in env and (env.get("RAY_AUTH_TOKEN") or path.is_file()):
        env["RAY_AUTH_MODE"] = "token"

class Pool:
    def __init__(self, config, queue, db, blobs, registry, hub):
        self.config, self.queue, self.db, self.blobs, self.registry, self.hub = config, queue, db, blobs, registry, hub
        self.address = config.pool_address          # None: start a local cluster with config.pool_workers workers
        self.wanted = config.pool_workers
        self.mode = "cluster" if self.address else "local"
        self.state = "starting"                      # starting | up | down | stopped
        self.message = "starting the worker pool"
        self.handle = None
        self.up = 0                                  # workers Serve reports running
        self.workers: dict[str, dict] = {}           # worker id -> what it last told us
        self.inflight: dict[str, str | None] = {}    # job id -> worker id (None until the worker said hello)
        self.lost: dict[str, int] = {}               # job id -> times its worker was lost
        self.refused: dict[str, set[str]] = {}       # job id -> workers that could not load its model
        self.refusals: dict[str, int] = {}           # job id -> times a worker could not load its model
        self.route = BlobRoute(config, db, blobs, queue.running)
        self._task: asyncio.Task | None = None
        self._starting: asyncio.Future | None = None   # ray.init / serve.run on a thread: stop waits for it
        self._ray = False

    # -- lifecycle
    async def start(self):
        self._task = asyncio.create_task(self._run_pool())

    async def stop(self):
        """Stop the workers (a local cluster: all of it). A start still on its way is waited for first, or it
        would leave Ray's processes behind."""
        self.state, self.message = "stopped", "the engine is stopping"
        if self._task is not None:
            self._task.cancel()
        if self._starting is not None:
            await asyncio.wait([self._starting], timeout=120)
        await self.route.stop()
        if self._ray:
            stopping = asyncio.get_running_loop().run_in_executor(None, self._disconnect)
            done, _ = await asyncio.wait([stopping], timeout=60)
            if not done:
                log.warning("pool: Ray did not stop within 60 s; `ray stop` ends what is left of a local cluster")

    async def _run_pool(self):
        loop = asyncio.get_running_loop()
        try:
            self._starting = loop.run_in_executor(None, self._connect_ray)
            host = await asyncio.shield(self._starting)
            await self.route.start(host, self.config.pool_port)
            self.message = "starting the workers (each loads Paintbridge; a model loads with its first job)"
            self._starting = loop.run_in_executor(None, self._deploy)
            self.handle = await asyncio.shield(self._starting)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state = "down"
            self.message = f"the worker pool could not start: {type(exc).__name__}: {exc}"[:500]
            log.error("%s; jobs wait until the engine is restarted with a working pool", self.message)
            return
        log.info("pool: %d worker(s) deployed", self.wanted)
        poll = None
        while self.state != "stopped":
            if poll is None or poll.done():   # one poll at a time: a cluster that is gone can hang one for long
                poll = loop.run_in_executor(None, self._poll)
            done, _ = await asyncio.wait([poll], timeout=POLL_TIMEOUT_S)
            if not done:
                self.up = 0
                self.state, self.message = "down", f"the Ray cluster has not answered for {POLL_TIMEOUT_S:.0f} s"
            self.queue.wake.set()   # workers may have come or gone
            await asyncio.sleep(POLL_S)

    def _connect_ray(self) -> str:
        """On a thread: join the cluster (or start a local one) → the address the blob route listens on."""
        # Ray's crash handler takes SIGTERM from the engine and aborts the process: the engine's own handler (stop
        # the running jobs, then the pool) must keep it.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        # Ray ends a driver whose cluster (GCS) has been unreachable for 60 s: the engine must outlive its pool
        os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(10 * 365 * 86400))
        if self.address:
            # token auth (Ray >= 2.59): ray.init sends RAY_AUTH_TOKEN or ~/.ray/auth_token in token mode only, and
            # Ray reads the mode when it is imported
            ray_token_auth()
        import ray

        if self.address:
            self._ray = True
            ray.init(address=self.address, namespace=NAMESPACE, configure_logging=False, log_to_driver=False)
            if not self.wanted:
                self.wanted = int(ray.cluster_resources().get("GPU", 0))
            if self.wanted < 1:
                raise RuntimeError(f"the Ray cluster at {self.address} has no GPUs: join workers with "
                                   f"`paintbridge worker --address {self.address}`")
            return ray.util.get_node_ip_address()
        # A local cluster is this process's child; its workers import Paintbridge from where this engine runs.
        root = str(Path(__file__).resolve().parents[2])
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        # One GPU per worker: real ones where the machine has them, logical ones (torch then runs on the CPU) where
        # it has fewer; Ray gives each replica its own CUDA_VISIBLE_DEVICES either way.
        self._ray = True
        ray.init(num_gpus=self.wanted, namespace=NAMESPACE, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        ray_token_auth(dict(os.environ))   # the token the local cluster wrote: owner-only (mode only, env untouched)
        return "127.0.0.1"

    def _deploy(self):
        from ray import serve

        from .worker import Worker

        serve.start(proxy_location="Disabled")   # handles only: no HTTP proxy, no port
        # torch's threads per worker: the engine's OMP_NUM_THREADS when set, else each worker uses its machine's CPUs
        app = Worker.options(num_replicas=self.wanted).bind(int(os.environ.get("OMP_NUM_THREADS") or 0))
        handle = serve.run(app, name=APP, route_prefix=None)
        # .options() sets up the handle's router, which asks the cluster for Serve's controller: here, on this
        # thread, not on the engine's event loop at the first job (a cluster that is gone would block it there)
        handle = handle.options(stream=True)
        self._poll()
        return handle

    def _poll(self):
        from ray import serve

        try:
            app = serve.status().applications.get(APP)
            dep = app.deployments.get("Worker") if app else None
            self.up = dep.replica_states.get("RUNNING", 0) if dep else 0
        except Exception as exc:
            self.up = 0
            self.state, self.message = "down", f"the Ray cluster does not answer: {type(exc).__name__}: {exc}"[:500]
            return
        if self.up:
            self.state, self.message = "up", f"{self.up} of {self.wanted} workers up"
        else:
            self.state, self.message = "down", f"no worker is up (of {self.wanted}): jobs wait for one"

    def _disconnect(self):
        import ray
        from ray import serve

        try:
            if self.mode == "local":
                serve.shutdown()
            else:
                serve.delete(APP)   # the cluster stays; our workers go
        except Exception:
            log.exception("pool: stopping the workers failed")
        ray.shutdown()   # a local cluster stops with it

    # -- the runner's side of the queue (engine/queue.py)
    def free(self) -> int:
        if self.handle is None or self.state != "up":
            return 0
        return max(0, self.up - len(self.inflight))

    def warm(self) -> frozenset[str]:
        busy = set(self.inflight.values())
        return frozenset(m for w, info in self.workers.items() if w not in busy for m in info["models"])

    def waiting(self) -> str | None:
        return None if self.state == "up" and self.up else self.message

    async def run(self, row: dict, ctx):
        job = row["id"]
        self.inflight[job] = None
        graph = self.queue.validated.pop(job, None)   # checked at submit: kept for the gallery, not re-checked
        try:
            out = await self._run(row, ctx, graph)
        finally:
            self.inflight.pop(job, None)
        if out[0] == "requeue" and graph is not None:
            self.queue.validated[job] = graph
        return out

    async def _run(self, row: dict, ctx, graph):
        from ray.exceptions import RayActorError, TaskCancelledError

        job, uid = row["id"], row["user_id"]
        model = job_model(row)
        request = {"job": job, "user": uid, "graph": json.loads(row["graph"]), "models": self.registry.rows(),
                   "install_dir": str(self.registry.install_dir or ""), "limits": vars(self.config.limits),
                   "blob_url": self.route.url, "token": self.route.token(job)}
        call = self.handle.options(multiplexed_model_id=model).run.remote(request)
        seen = {"at": time.monotonic(), "why": None}
        worker = None

        async def watch():   # cancel, a silent worker, or no worker at all: end the call
            while True:
                await asyncio.sleep(0.1)
                quiet = time.monotonic() - seen["at"]
                if ctx.canceled.is_set():
                    seen["why"] = "canceled"
                elif quiet > (STALL_S if worker else UNASSIGNED_S):
                    seen["why"] = "stalled" if worker else "unassigned"
                elif self.state == "down" and quiet > POLL_TIMEOUT_S:   # the cluster is gone: back to the queue
                    seen["why"] = "the pool is down"
                else:
                    continue
                await asyncio.get_running_loop().run_in_executor(None, call.cancel)   # may wait on the cluster
                return

        watcher = asyncio.create_task(watch())
        try:
            async for msg in call:
                seen["at"] = time.monotonic()
                kind = msg["type"]
                if kind == "hello":
                    worker = msg["worker"]
                    self.inflight[job] = worker
                    self._note(worker, msg, job)
                    await self.db.run(lambda db: db.execute("UPDATE jobs SET worker = ? WHERE id = ?", [worker, job]))
                elif kind == "progress":
                    name, data = msg["event"]
                    if name == events.JOB_PROGRESS:
                        ctx.progress_state = {"step": data["step"], "total": data["total"], "node": data["node"]}
                    self.hub.publish(uid, events.Event(name, {**data, "job": job}), droppable=True)
                elif kind == "cannot_load":
                    return await self._refused(job, worker, msg)
                elif kind == "done":
                    self._note(worker, msg, None)
                    return await self._done(row, ctx, worker, msg, graph)
            return self._lost(job, worker, "the worker ended the call without a result")
        except (TaskCancelledError, asyncio.CancelledError):
            if seen["why"] is None:   # not ours: the engine's own task is being canceled
                raise
            if seen["why"] == "canceled":
                self._note(worker, {}, None)
                return "canceled", None, None, None
            return self._lost(job, worker, f"the worker went silent ({seen['why']})")
        except RayActorError as exc:
            return self._lost(job, worker, f"the worker died: {type(exc).__name__}")
        except Exception as exc:   # the cluster went away under the call, or Serve refused it
            log.exception("pool: job %s on worker %s", job, worker)
            return self._lost(job, worker, f"{type(exc).__name__}: {exc}"[:300])
        finally:
            watcher.cancel()

    def _note(self, worker: str | None, msg: dict, job: str | None):
        if worker is None:
            return
        info = self.workers.setdefault(worker, {"worker": worker, "models": [], "jobs": 0, "pid": None,
                                                "node": "", "gpu": ""})
        for key in ("pid", "node", "gpu", "models"):
            if key in msg:
                info[key] = msg[key]
        if job is None and info.get("job"):
            info["jobs"] += 1
        info["job"] = job
        info["seen"] = time.time()

    def _lost(self, job: str, worker: str | None, why: str):
        if worker is not None:
            self.workers.pop(worker, None)   # a replacement comes with a new id
        n = self.lost[job] = self.lost.get(job, 0) + 1
        if n < 2:
            log.warning("pool: job %s lost its worker %s (%s); it goes back to the queue", job, worker, why)
            return "requeue", None, None, None
        self.lost.pop(job, None)
        log.warning("pool: job %s lost its worker %s (%s) a second time; it fails", job, worker, why)
        return "failed", None, {"code": "worker_lost", "message": f"the pool worker running this job was lost twice "
                                f"({why}); submit it again", "details": {"worker": worker}}, None

    async def _refused(self, job: str, worker: str, msg: dict):
        self._note(worker, {}, None)
        tried = self.refused.setdefault(job, set())
        tried.add(worker)
        self.refusals[job] = self.refusals.get(job, 0) + 1
        if len(tried) >= max(self.up, 1) or self.refusals[job] >= MAX_REFUSALS:
            self.refused.pop(job, None)
            self.refusals.pop(job, None)
            return "failed", None, {"code": "bad_request", "message": f"no pool worker can load model "
                                    f"{msg['model']!r}: {msg['error']}", "details": {"model": msg["model"]}}, None
        await asyncio.sleep(REFUSED_RETRY_S)   # then the queue offers it again, with luck to another worker
        return "requeue", None, None, None

    async def _done(self, row: dict, ctx, worker: str, msg: dict, graph):
        job = row["id"]
        self.lost.pop(job, None)
        self.refused.pop(job, None)
        self.refusals.pop(job, None)
        if msg["status"] != "completed":
            return msg["status"], None, msg["error"], None
        layers = msg["layers"]
        loop = asyncio.get_running_loop()
        missing = [lay["sha256"] for lay in layers if not self.blobs.exists(lay["sha256"])]
        if missing:
            return "failed", None, {"code": "internal", "message": f"worker {worker} reported results the engine "
                                    f"does not have: {missing[:3]}", "details": None}, None
        ctx.results = layers
        try:
            graph = graph or await loop.run_in_executor(None, graphs.validate, json.loads(row["graph"]))
            # the gallery names the results, as after a job run in process (a live job's: when it is kept)
            for fn in self.queue.on_result if not is_live(row) else ():
                await loop.run_in_executor(None, fn, row, layers)
        except Exception as exc:
            log.exception("job %s: naming its results failed", job)
            return "failed", None, {"code": "internal", "message": f"{type(exc).__name__}: {exc}"[:500],
                                    "details": None}, None
        return "completed", {"layers": layers}, None, graph

    # -- what admins and models.list see
    def where(self, model: str) -> list[str]:
        return sorted(w for w, info in self.workers.items() if model in info["models"])

    def status(self) -> dict:
        busy = {w: j for j, w in self.inflight.items() if w}
        return {"mode": self.mode, "state": self.state, "message": self.message, "address": self.address,
                "route": self.route.url,
                "wanted": self.wanted, "up": self.up, "running": len(self.inflight),
                "workers": [{"worker": w, "pid": i["pid"], "node": i["node"], "gpu": i["gpu"], "models": i["models"],
                             "busy": w in busy, "job": busy.get(w), "jobs": i["jobs"]}
                            for w, i in sorted(self.workers.items())]}
