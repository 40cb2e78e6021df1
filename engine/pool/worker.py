"""A pool worker: one Ray Serve replica per GPU that runs jobs the engine hands it, one at a time, with the engine's
own generation code (engine.job_context.run_job on a JobContext), and streams back what happens.

Imported by the engine only when it runs with a pool, and by Ray in each replica process (Ray imports this module
there: on another machine Paintbridge must be installed, `pip install paintbridge[ray]`).

`run(request)` is an async generator (the engine calls it through `handle.options(stream=True)`); it yields
  {"type": "hello", "worker", "pid", "node", "gpu", "models"}   first, at once
  {"type": "progress", "event": (name, data)}                   each step, with its preview (droppable: at most a
                                                                 few wait; a slow stream gets fewer previews)
  {"type": "alive"}                                              every HEARTBEAT_S while nothing else is said
  {"type": "cannot_load", "model", "error"}                      this worker cannot load the job's model: the
                                                                 engine gives the job to another worker
  {"type": "done", "status", "layers", "error", "models"}        last
Cancel: the engine cancels the call (Serve's cancel); the CancelledError that arrives here sets the job's cancel
flag, which the denoising loop checks at each step, and the replica waits for the job thread to stop before it
takes the next request, so a replica never runs two jobs at once.

Models: the request carries the engine's model registry (names and paths); a worker sees the model files at the
same paths (the same machine, or a shared or mirrored folder). The job's main model is its
`multiplexed_model_id`, so Serve's router sends it to a replica that has it loaded; the load runs before the job,
so a worker that cannot load a model says so (and remembers it for CANNOT_LOAD_TTL_S) instead of failing the job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray import serve

from .. import nodes  # noqa: F401  (registers the node types graphs are checked against)
from ..config import Config, Limits
from ..graph import graph as graphs
from ..job_context import JobContext, run_job
from ..models.cache import ModelCache
from ..models.registry import ModelRegistry
from .blobs import RemoteBlobs

log = logging.getLogger("paintbridge.pool")

HEARTBEAT_S = 5.0
CANNOT_LOAD_TTL_S = 600.0
MAX_WAITING_PREVIEWS = 4


class _EventSink:
    """The hub a worker's JobContext publishes to: events queue up for the stream back to the engine."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self.loop, self.queue = loop, queue

    def publish_threadsafe(self, uid: int, event, droppable: bool = False):
        if droppable and self.queue.qsize() >= MAX_WAITING_PREVIEWS:
            return
        self.loop.call_soon_threadsafe(self.queue.put_nowait, tuple(event))

    def broadcast_threadsafe(self, event):   # engine-wide news (a model loaded here): pool.status reports it
        pass


@serve.deployment(name="Worker", max_ongoing_requests=1, ray_actor_options={"num_gpus": 1, "num_cpus": 0},
                  graceful_shutdown_timeout_s=5)
class Worker:
    def __init__(self, threads: int = 0):
        import torch

        # Ray sets OMP_NUM_THREADS=1 in a replica that asks for no CPU: torch then computes on one thread, slowly,
        # and (sums added in another order) not byte-identical to the engine's own process. Same count as there.
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        self.id = serve.get_replica_context().replica_id.unique_id
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-job")
        self.registry = ModelRegistry([], scan=False)   # in memory; a mirror of the engine's, per request
        self.cache = ModelCache(self.registry)
        self.cannot: dict[str, tuple[float, str]] = {}   # model -> (when, why) this worker could not load it
        try:
            import ray
            self.node = ray.util.get_node_ip_address()
        except Exception:
            self.node = ""

    @serve.multiplexed(max_num_models_per_replica=4)
    async def warm(self, name: str) -> str:
        """Load a main model into this worker's cache (Serve then routes that model's jobs here)."""
        await asyncio.get_running_loop().run_in_executor(self.thread, self.cache.get, name)
        return name

    async def run(self, req: dict):
        loop = asyncio.get_running_loop()
        yield {"type": "hello", "worker": self.id, "pid": os.getpid(), "node": self.node,
               "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "models": self.cache.loaded()}
        self.registry.mirror(req["models"])
        if req.get("install_dir"):
            self.registry.install_dir = Path(req["install_dir"])
        model = serve.get_multiplexed_model_id()
        if model:
            when, why = self.cannot.get(model, (0.0, ""))
            if time.monotonic() - when > CANNOT_LOAD_TTL_S:
                try:
                    await self.warm(model)
                    why = ""
                except Exception as exc:
                    why = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                    self.cannot[model] = (time.monotonic(), why)
                    log.warning("worker %s cannot load %s: %s", self.id, model, why)
            if why:
                yield {"type": "cannot_load", "model": model, "error": why[:500]}
                return

        events: asyncio.Queue = asyncio.Queue()
        row = {"id": req["job"], "user_id": req["user"]}
        config = Config(data_dir=Path(tempfile.gettempdir()), limits=Limits(**req["limits"]))
        ctx = JobContext(row, config=config, db=None, blobs=RemoteBlobs(req["blob_url"], req["job"], req["token"]),
                         registry=self.registry, cache=self.cache, hub=_EventSink(loop, events))
        job = loop.run_in_executor(self.thread, run_job, ctx, lambda: graphs.validate(req["graph"]), self.cache,
                                   config.limits.max_job_bytes)
        try:
            while True:
                get = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({get, job}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield {"type": "progress", "event": get.result()}
                    continue
                get.cancel()
                if job in done:
                    break
                yield {"type": "alive"}
        except asyncio.CancelledError:
            ctx.canceled.set()   # the job stops at its next step; this replica takes nothing new before that
            await asyncio.shield(job)
            raise
        status, error, _ = job.result()
        yield {"type": "done", "status": status, "layers": ctx.results if status == "completed" else [],
               "error": error, "models": self.cache.loaded()}
