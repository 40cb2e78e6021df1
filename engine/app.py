"""The composition root: `build(config)` makes every service the engine runs on, wires them together once, and
returns them as one typed `Services`; the server (engine/server.py) hands it to each op as `ctx.app`.

Wiring that lives here and nowhere else: job results go to the gallery (named on JobQueue.on_result before
job.result, archived on JobQueue.on_complete after it), model cache
events go to every connection (ModelCache.on_event → Hub.broadcast), the queue's runner (this process, or the
worker pool when the config asks for one: engine/pool/), and the start/stop order of the background work (upload
sweeper, worker pool, job worker, model hasher, blob GC).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from . import auth, events, sessions
from . import nodes  # noqa: F401  (registers the node types graphs are checked against)
from .config import Config
from .gallery.record import Recorder
from .hub import Hub
from .models.cache import ModelCache
from .models.download import Downloads
from .models.registry import ModelRegistry
from .pool import Pool
from .queue import JobQueue
from .store.blobs import BlobStore
from .store.db import Database
from .store.gc import Collector
from .uploads import Uploads

log = logging.getLogger("paintbridge.server")


@dataclass
class Services:
    config: Config
    db: Database
    tokens: auth.Tokens
    login_limiter: auth.LoginLimiter
    passwords: auth.PasswordChecker   # scrypt on its own bounded pool, never the database thread
    blobs: BlobStore
    uploads: Uploads           # chunked uploads in progress
    gc: Collector              # blob garbage collection: at start, then every [blobs] gc_interval_min
    hub: Hub                   # signed-in connections and the events sent to them
    registry: ModelRegistry    # the models the engine knows
    cache: ModelCache          # the models loaded now
    queue: JobQueue
    gallery: Recorder
    downloads: Downloads       # model downloads running now (models.download)
    pool: Pool | None = None   # the worker pool that runs the jobs, or None: they run in this process

    async def start(self):
        self.hub.loop = asyncio.get_running_loop()
        self.uploads.start()
        self._session_sweeper = asyncio.create_task(sessions.sweep_forever(self.db, self.hub))
        if self.pool is not None:
            await self.pool.start()   # connects in the background: until a worker is up, jobs wait
        await self.queue.start()
        self.registry.start_hasher()   # content hashes in the background, never in a request
        self.gc.start()   # after the queue has marked interrupted jobs; runs on its own thread

    async def stop(self):
        stopping = asyncio.create_task(self.queue.stop())   # the running job stops at its next step meanwhile
        self.downloads.stop()   # partial files stay: the same download resumes after a restart
        self.uploads.stop()
        self._session_sweeper.cancel()
        self.passwords.close()
        await self.gc.stop()
        self.registry.stop()
        await stopping
        if self.pool is not None:   # after the queue: its running jobs were canceled through the pool
            await self.pool.stop()


def build(config: Config) -> Services:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.db_path)
    if db.sync(auth.ensure_admin):
        log.warning("created admin user 'admin'; get a token with `paintbridge token` or set a password "
                    "with `paintbridge users passwd admin`")
    tokens = auth.Tokens(auth.load_secret(config.data_dir), config.token_ttl_s, config.remember_ttl_s)
    limiter = auth.LoginLimiter(config.limits.login_failures, config.limits.login_window_s,
                                config.limits.login_concurrent)
    passwords = auth.PasswordChecker(config.limits.login_workers, config.limits.login_queue)
    blobs = BlobStore(config.blob_dir)
    hub = Hub(config.limits.max_connections_per_user, config.limits.max_unauthenticated)
    registry = ModelRegistry(config.model_dirs, db_path=config.db_path, install_dir=config.data_dir / "models")
    cache = ModelCache(registry, on_event=lambda name, data: hub.broadcast_threadsafe(events.Event(name, data)),
                       ram_budget_mb=config.ram_budget_mb, vram_budget_mb=config.vram_budget_mb)
    queue = JobQueue(config, db, blobs, hub, registry, cache)
    gallery = Recorder(config, db, blobs, registry, hub)
    queue.on_result.append(gallery.name_images)          # each result layer's gallery id, in job.result
    queue.on_complete.append(gallery.on_job_complete)   # then every result image into the gallery (PNG + metadata)
    pool = None
    if config.pool_workers or config.pool_address:
        pool = queue.runner = Pool(config, queue, db, blobs, registry, hub)
    return Services(config=config, db=db, tokens=tokens, login_limiter=limiter, passwords=passwords, blobs=blobs,
                    uploads=Uploads(config.limits), gc=Collector(config, blobs), hub=hub, registry=registry,
                    cache=cache, queue=queue, gallery=gallery,
                    downloads=Downloads(registry, config.data_dir / "models"), pool=pool)
