"""Chunked uploads in progress (blob.put with `upload`): by (user id, upload id), dropped with their temp
files when idle for longer than [limits] upload_idle_s, also when nobody starts a new one (a sweeper task)."""

from __future__ import annotations

import asyncio
import time

from .aio import run_blocking


class Uploads:
    def __init__(self, limits):
        self.limits = limits
        self.open: dict[tuple[int, str], object] = {}   # (uid, upload id) -> engine.store.blobs.Upload
        self.starting = asyncio.Lock()   # held while an upload is checked against the limit, created, registered
        self._sweeper: asyncio.Task | None = None

    def count(self, uid: int) -> int:
        return sum(1 for k in self.open if k[0] == uid)

    async def expire(self):
        """Drop chunked uploads idle for longer than the limit (dict changes on the loop, file I/O off it)."""
        idle = self.limits.upload_idle_s
        now = time.monotonic()
        expired = [self.open.pop(k) for k, up in list(self.open.items()) if now - up.touched > idle]
        for up in expired:
            await self.abort(up)

    async def abort(self, up):
        """Delete a dropped upload's temp file once its queued writes are over (never close a file under one)."""
        if up.tail is not None:
            await asyncio.gather(up.tail, return_exceptions=True)
        await run_blocking(up.abort)

    async def drop(self, key, up):
        """Forget an upload and delete its temp file, after any write still running."""
        if self.open.get(key) is up:
            self.open.pop(key)
        await self.abort(up)

    def start(self):
        self._sweeper = asyncio.create_task(self._sweep())

    def stop(self):
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _sweep(self):
        while True:
            await asyncio.sleep(min(60.0, self.limits.upload_idle_s / 4))
            await self.expire()
