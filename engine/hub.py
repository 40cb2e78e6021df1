"""Pub/sub: the signed-in connections by user, and the events sent to them (names and payloads in events.py).

A job's events go to its owner's connections and to admins'; engine-wide facts (a model loading) to every
signed-in connection. Everything here runs on the event loop; `publish_threadsafe` is the door for job threads.
"""

from __future__ import annotations

import asyncio
import time

from protocol import codec

from .errors import Busy
from .events import Event


# Close code for a connection the engine signs out (revoked, expired, evicted before sign-in): clients show
# "signed out" rather than "connection lost" (4000-4999 are for applications).
CLOSE_SIGNED_OUT = 4401


class Hub:
    def __init__(self, max_connections_per_user: int, max_unauthenticated: int = 64):
        self.max_per_user = max_connections_per_user
        self.max_unauthenticated = max_unauthenticated
        self.connections: dict[int, set] = {}   # user id -> engine.server.Connection
        self.waiting: dict = {}                 # connections not signed in yet, oldest first
        self.loop: asyncio.AbstractEventLoop | None = None   # set when the engine starts

    def admit(self, conn):
        """Count a connection that is not signed in yet; at the cap, close the oldest such one (an attacker's
        idle sockets cannot lock real clients out; the memory each holds is bounded by preauth_bytes)."""
        self.waiting[conn] = None
        while len(self.waiting) > self.max_unauthenticated:
            oldest = next(iter(self.waiting))
            del self.waiting[oldest]
            oldest.close_soon(CLOSE_SIGNED_OUT, "too many connections waiting to sign in")

    def leave(self, conn):
        self.detach(conn)
        self.waiting.pop(conn, None)

    def check_room(self, conn, user: dict):
        """Busy if signing conn in as user would pass the per-user connection limit."""
        others = self.connections.get(user["id"], set()) - {conn}
        if len(others) >= self.max_per_user:
            raise Busy(f"user {user['name']} already has {self.max_per_user} connections open")

    def attach(self, conn):
        self.connections.setdefault(conn.uid, set()).add(conn)
        self.waiting.pop(conn, None)

    def detach(self, conn):
        if conn.user is not None:
            conns = self.connections.get(conn.uid)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.connections[conn.uid]

    def all(self) -> list:
        return [conn for conns in self.connections.values() for conn in conns]

    def publish(self, uid: int, event: Event, droppable: bool = False):
        """Send an event to every connection of user uid, and to admins' connections."""
        msg = codec.event(event.name, event.data)
        now = time.time()
        for owner_uid, conns in self.connections.items():
            for conn in conns:
                # An expired token receives nothing more (sessions.sweep closes it and finds revocations).
                if (owner_uid == uid or conn.is_admin) and conn.claims.exp > now:
                    conn.send(msg, droppable)

    def broadcast(self, event: Event):
        """An event for every signed-in connection (engine-wide facts like a model loading); droppable."""
        msg = codec.event(event.name, event.data)
        now = time.time()
        for conns in self.connections.values():
            for conn in conns:
                if conn.claims.exp > now:
                    conn.send(msg, droppable=True)

    def publish_threadsafe(self, uid: int, event: Event, droppable: bool = False):
        try:
            self.loop.call_soon_threadsafe(self.publish, uid, event, droppable)
        except RuntimeError:   # the loop closed: the engine stopped and nobody is connected any more
            pass

    def broadcast_threadsafe(self, event: Event):
        if self.loop is not None:   # nobody is connected before the engine starts
            try:
                self.loop.call_soon_threadsafe(self.broadcast, event)
            except RuntimeError:   # the loop closed: the engine stopped
                pass
