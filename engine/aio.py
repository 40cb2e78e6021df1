"""Blocking work (hashing, file I/O, SQLite through a sync call) from the event loop, on the default thread pool."""

from __future__ import annotations

import asyncio
from functools import partial


async def run_blocking(fn, *args):
    """Run fn(*args) off the event loop and wait for it."""
    return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))
