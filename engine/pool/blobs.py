"""Blobs between the engine and its pool workers: an internal HTTP route on the engine (BlobRoute) and the client a
worker's JobContext uses as its blob store (RemoteBlobs).

Why a route and not Ray's object store or a shared folder: pixels by value through Ray cost ~0.4 s per 20 MB round
trip here and pile up in the object store's memory; a shared folder needs a network filesystem on every machine
and would put the engine's blob store (and its SQLite next to it) on that filesystem. The route needs only what
the pool needs anyway, a private network between the machines, and keeps the engine the one owner of the blob
store: it checks who may read what and records who owns each result, exactly as for a plug-in's blob.put.

Authentication: each dispatched job carries a token, HMAC-SHA256(engine secret, job id), that is valid only while
that job runs in the pool; the secret is new at every engine start and never leaves the engine. With it a worker
may read the blobs the job's graph names or its user owns, and write result blobs, owned by the job's user.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import urllib.error
import urllib.request

from ..store.blobs import is_sha256
from ..store.owners import owned, record

log = logging.getLogger("paintbridge.pool")

PREFIX = "/pool/v1/jobs"


class BlobRoute:
    """The engine's side: GET/PUT {PREFIX}/{job}/blobs[/{sha}] on its own listener (never the plug-ins' port)."""

    def __init__(self, config, db, blobs, running: dict):
        self.config, self.db, self.blobs = config, db, blobs
        self.running = running          # the queue's running jobs (job id -> JobContext): a token works while there
        self.secret = secrets.token_bytes(32)
        self.url = ""
        self._runner = None

    def token(self, job: str) -> str:
        return hmac.new(self.secret, job.encode(), hashlib.sha256).hexdigest()

    async def start(self, host: str, port: int):
        from aiohttp import web

        app = web.Application(client_max_size=self.config.limits.max_blob_size)
        app.router.add_get(PREFIX + "/{job}/blobs/{sha}", self._get)
        app.router.add_put(PREFIX + "/{job}/blobs", self._put)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()
        self.url = f"http://{host if ':' not in host else '[' + host + ']'}:{bound[1]}"
        log.info("pool: blob route on %s", self.url)

    async def stop(self):
        if self._runner is not None:
            await self._runner.cleanup()

    def _job(self, request):
        from aiohttp import web

        job = request.match_info["job"]
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        ctx = self.running.get(job)
        if ctx is None or not hmac.compare_digest(given.encode(), self.token(job).encode()):
            raise web.HTTPForbidden(text="no running pool job with this token")
        return job, ctx

    async def _get(self, request):
        from aiohttp import web

        job, ctx = self._job(request)
        sha = request.match_info["sha"]
        if not is_sha256(sha):
            raise web.HTTPBadRequest(text="not a sha256")

        def readable(db):
            if owned(db, ctx.uid, [sha], touch=False):
                return True
            row = db.execute("SELECT graph FROM jobs WHERE id = ?", [job]).fetchone()
            return bool(row and sha in row[0])   # a layer the op checked at submit (an admin's, too)

        if not await self.db.run(readable) or not self.blobs.exists(sha):
            raise web.HTTPNotFound(text=f"no blob {sha} for job {job}")
        data = await request.loop.run_in_executor(None, self.blobs.read, sha)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _put(self, request):
        from aiohttp import web

        job, ctx = self._job(request)
        data = await request.read()
        sha, size = await request.loop.run_in_executor(None, self.blobs.write, data)
        await self.db.run(record, sha, size, ctx.uid)
        return web.json_response({"sha256": sha, "size": size})


class RemoteBlobs:
    """A worker's blob store for one job: reads and writes go to the engine's BlobRoute (blocking: the job thread)."""

    def __init__(self, url: str, job: str, token: str, timeout: float = 120.0):
        self.base = f"{url}{PREFIX}/{job}/blobs"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout

    def read(self, sha: str) -> bytes:
        req = urllib.request.Request(f"{self.base}/{sha}", headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise OSError(f"the engine refused blob {sha[:12]}… ({exc.code}: {exc.read()[:200]!r})") from None

    def write(self, data: bytes | memoryview) -> tuple[str, int]:
        data = bytes(data)
        req = urllib.request.Request(self.base, data=data, method="PUT",
                                     headers={**self.headers, "Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            out = json.loads(resp.read())
        want = hashlib.sha256(data).hexdigest()
        if out.get("sha256") != want or out.get("size") != len(data):
            raise OSError(f"the engine stored {out.get('sha256')}, expected {want}")
        return want, len(data)
