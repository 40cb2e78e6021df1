"""TCP-level limits that aiohttp does not have: a cap on open connections, a deadline for a connection to
finish its first request (slowloris: half-sent headers hold a descriptor forever otherwise), a raised descriptor
limit, and a rate limit on the event loop's error log (a failed accept logs a traceback each time: a flood of
them fills the disk).

The guard wraps aiohttp's protocol factory, so every accepted socket passes through it before aiohttp sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("paintbridge.net")


class ConnectionGuard:
    def __init__(self, max_connections: int, header_timeout_s: float):
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self.refused = 0
        self._deadlines: dict[object, asyncio.TimerHandle] = {}

    def wrap(self, factory):
        return lambda: _Guarded(self, factory())

    def settled(self, transport) -> None:
        """A request reached a handler on this transport: its headers (and TLS) are done, the deadline is off."""
        handle = self._deadlines.pop(transport, None)
        if handle is not None:
            handle.cancel()

    def _made(self, transport) -> bool:
        self.open += 1
        if self.open > self.max_connections:
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log.warning("refusing connections: %d open (limit %d); %d refused so far", self.open - 1,
                            self.max_connections, self.refused)
            transport.abort()
            return False
        loop = asyncio.get_running_loop()
        self._deadlines[transport] = loop.call_later(self.header_timeout_s, self._expire, transport)
        return True

    def _lost(self, transport):
        self.open -= 1
        self.settled(transport)

    def _expire(self, transport):
        self._deadlines.pop(transport, None)
        transport.abort()


class _Guarded(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol; counts the connection and arms its deadline."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol):
        self.guard, self.inner, self.transport = guard, inner, None

    def connection_made(self, transport):
        self.transport = transport
        self.inner.connection_made(transport)
        self.guard._made(transport)

    def connection_lost(self, exc):
        self.guard._lost(self.transport)
        self.inner.connection_lost(exc)

    def data_received(self, data):
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()


def raise_descriptor_limit(want: int = 65536) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit (the common 1,024 is what a socket flood exhausts).
    Returns the soft limit in force."""
    try:
        import resource
    except ImportError:   # Windows
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def quiet_loop_errors(loop: asyncio.AbstractEventLoop, every_s: float = 10.0) -> None:
    """Log each kind of event-loop error at most once per every_s seconds, with a count of those left out."""
    last: dict[str, float] = {}
    skipped: dict[str, int] = {}

    def handler(loop, context):
        exc = context.get("exception")
        key = f"{context.get('message')}|{type(exc).__name__ if exc else ''}"
        now = time.monotonic()
        if now - last.get(key, -every_s) < every_s:
            skipped[key] = skipped.get(key, 0) + 1
            return
        last[key] = now
        n = skipped.pop(key, 0)
        if n:
            context = dict(context, message=f"{context.get('message')} ({n} more like this not logged)")
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
