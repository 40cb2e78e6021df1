"""The daemon: an aiohttp app serving GET /v1/health and the WebSocket endpoint /v1/ws.

A frame comes in on Connection.serve → decoded → Server.dispatch looks the op up in engine.ops.OPS (one module
per op prefix), checks sign-in and admin rights, validates args with the op's pydantic model, runs the handler
and replies. Events go out through Server.publish to the owner's connections (and admins').
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

import msgpack
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from protocol import PROTOCOL_VERSION, WS_PATH
from protocol import codec
from protocol.errors import ProtocolError

from . import __version__, auth, ops
from .config import Config
from .errors import Busy, EngineError, Forbidden, TokenExpired, Unauthenticated
from .store.blobs import BlobStore
from .store.db import Database
from .store.gc import Collector

log = logging.getLogger("paintbridge.server")

# Frames between the frame limit and this multiple of it are read and answered too_large (connection kept);
# anything bigger is cut off by aiohttp with close code 1009, so a peer cannot make us buffer unbounded data.
HARD_FRAME_FACTOR = 4
# Progress events are dropped (not queued) for a connection whose outbox is this deep: a slow client gets
# fewer previews, never an unbounded queue.
OUTBOX_SOFT_LIMIT = 64


class Connection:
    def __init__(self, server: "Server", ws: web.WebSocketResponse, remote: str):
        self.server = server
        self.ws = ws
        self.remote = remote
        self.user: dict | None = None
        self.claims: auth.Claims | None = None
        self.token: str | None = None
        self.client_info: dict = {}
        self.checked_at = 0.0
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.bad_frames = 0

    @property
    def uid(self) -> int:
        return self.user["id"]

    @property
    def is_admin(self) -> bool:
        return bool(self.user and self.user["admin"])

    def sign_in(self, user: dict, claims: auth.Claims, token: str, client_info: dict):
        limit = self.server.config.limits.max_connections_per_user
        others = self.server.connections.get(user["id"], set()) - {self}
        if len(others) >= limit:
            raise Busy(f"user {user['name']} already has {limit} connections open")
        if self.user is not None and self.user["id"] != user["id"]:
            self.server.detach(self)
        self.user, self.claims, self.token, self.client_info = user, claims, token, client_info
        self.checked_at = time.monotonic()
        self.server.attach(self)

    def send(self, message: dict, droppable: bool = False):
        if droppable and self.outbox.qsize() > OUTBOX_SOFT_LIMIT:
            return
        self.outbox.put_nowait(codec.encode(message))

    async def writer(self):
        while True:
            frame = await self.outbox.get()
            if frame is None:
                return
            try:
                await self.ws.send_bytes(frame)
            except Exception:
                return

    async def serve(self):
        writer = asyncio.create_task(self.writer())
        limits = self.server.config.limits
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    await self.handle_frame(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self.refuse(None, "bad_request", "text frames are not accepted: send binary msgpack frames")
                elif msg.type == WSMsgType.ERROR:
                    break
                if self.bad_frames >= limits.bad_frames_before_close:
                    self.outbox.put_nowait(None)
                    await writer   # the replies already queued go out before the close
                    await self.ws.close(code=1008, message=b"too many malformed frames")
                    break
        finally:
            self.outbox.put_nowait(None)
            await writer
            self.server.detach(self)

    def refuse(self, re: Any, code: str, message: str, details: Any = None):
        self.bad_frames += 1
        self.send(codec.reply_error(re, code, message, details))

    async def handle_frame(self, data: bytes):
        limit = self.server.config.limits.frame_limit
        if len(data) > limit:
            self.refuse(_peek_id(data), "too_large",
                        f"frame of {len(data)} bytes exceeds the {limit} byte limit: send large data in chunks",
                        {"limit": limit})
            return
        try:
            msg = codec.decode(data)
        except ProtocolError as exc:
            self.refuse(None, exc.code, exc.message)
            return
        rid = msg.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool) or not isinstance(msg.get("op"), str):
            self.refuse(rid if isinstance(rid, int) and not isinstance(rid, bool) else None, "bad_request",
                        "a request is {id: int, op: str, args: map}")
            return
        args = msg.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            self.refuse(rid, "bad_request", "args must be a map")
            return
        self.bad_frames = 0
        reply = await self.server.dispatch(self, rid, msg["op"], args)
        self.send(reply)


def _peek_id(data: bytes):
    """The id of an oversized request, so the too_large reply can be correlated (None if unreadable)."""
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
        rid = msg.get("id") if isinstance(msg, dict) else None
        return rid if isinstance(rid, int) and not isinstance(rid, bool) else None
    except Exception:
        return None


class Ctx:
    """What a handler sees: the server and the calling connection."""

    __slots__ = ("server", "conn", "rid")

    def __init__(self, server: "Server", conn: Connection, rid: int):
        self.server, self.conn, self.rid = server, conn, rid


class Server:
    def __init__(self, config: Config):
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(config.db_path)
        created = self.db.sync(auth.ensure_admin)
        if created:
            log.warning("created admin user 'admin'; get a token with `paintbridge token` or set a password "
                        "with `paintbridge users passwd admin`")
        self.tokens = auth.Tokens(auth.load_secret(config.data_dir), config.token_ttl_s, config.remember_ttl_s)
        self.login_limiter = auth.LoginLimiter(config.limits.login_failures, config.limits.login_window_s)
        self.blobs = BlobStore(config.blob_dir)
        self.uploads: dict[tuple[int, str], Any] = {}
        self.gc = Collector(self)   # blob garbage collection: at start, then every [blobs] gc_interval_min
        self.connections: dict[int, set[Connection]] = {}
        self.services: dict[str, Any] = {}   # optional subsystems (queue, models, ...) register here
        ops.load_all()
        self._startup_hooks: list = []
        self._shutdown_hooks: list = []

    # ---- plumbing ---------------------------------------------------------------------------------------
    async def run_blocking(self, fn, *args):
        """Run blocking work (hashing, file I/O) on the default thread pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))

    def attach(self, conn: Connection):
        self.connections.setdefault(conn.uid, set()).add(conn)

    def detach(self, conn: Connection):
        if conn.user is not None:
            conns = self.connections.get(conn.uid)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.connections[conn.uid]

    def publish(self, uid: int, name: str, data: dict, droppable: bool = False):
        """Send an event to every connection of user uid, and to admins' connections."""
        msg = codec.event(name, data)
        for owner_uid, conns in self.connections.items():
            for conn in conns:
                if owner_uid == uid or conn.is_admin:
                    conn.send(msg, droppable)

    def broadcast(self, name: str, data: dict):
        """An event for every signed-in connection (engine-wide facts like a model loading)."""
        msg = codec.event(name, data)
        for conns in self.connections.values():
            for conn in conns:
                conn.send(msg, droppable=True)

    def welcome(self, conn: Connection) -> dict:
        lim = self.config.limits
        return {"protocol": PROTOCOL_VERSION, "server": {"name": "paintbridge", "version": __version__},
                "user": auth.public_user(conn.user), "expires_at": conn.claims.exp,
                "limits": {"frame_limit": lim.frame_limit, "max_blob_size": lim.max_blob_size,
                           "max_pixels": lim.max_pixels, "max_steps": lim.max_steps, "max_batch": lim.max_batch}}

    def refresh_token(self, conn: Connection) -> dict:
        token, exp = self.tokens.issue(conn.uid, conn.user["epoch"], conn.claims.rm)
        conn.claims, conn.token = self.tokens.verify(token), token
        return {"token": token, "expires_at": exp}

    async def expire_uploads(self):
        """Drop chunked uploads idle for longer than the limit (dict changes on the loop, file I/O off it)."""
        idle = self.config.limits.upload_idle_s
        now = time.monotonic()
        expired = [self.uploads.pop(k) for k, up in list(self.uploads.items()) if now - up.touched > idle]
        for up in expired:
            await self.abort_upload(up)

    async def abort_upload(self, up):
        """Delete a dropped upload's temp file once its queued writes are over (never close a file under one)."""
        if up.tail is not None:
            await asyncio.gather(up.tail, return_exceptions=True)
        await self.run_blocking(up.abort)

    # ---- dispatch ---------------------------------------------------------------------------------------
    async def dispatch(self, conn: Connection, rid: int, name: str, args: dict) -> dict:
        spec = ops.OPS.get(name)
        if spec is None:
            return codec.reply_error(rid, "bad_request", f"unknown op {name!r}", {"op": name})
        try:
            if spec.auth:
                await self._check_auth(conn)
                if spec.admin and not conn.is_admin:
                    raise Forbidden(f"{name} needs an admin user")
            try:
                parsed = spec.args.model_validate(args)
            except ValidationError as exc:
                raise _bad_args(name, exc) from None
            result = await spec.handler(Ctx(self, conn, rid), parsed)
        except EngineError as exc:
            return codec.reply_error(rid, exc.code, exc.message, exc.details)
        except asyncio.CancelledError:
            raise
        except OSError as exc:   # a resource failure (disk full, data folder not writable): keep serving
            log.error("op %s failed: %s", name, exc)
            return codec.reply_error(rid, "internal", f"{name} failed on the engine's storage: "
                                     f"{exc.strerror or type(exc).__name__} (is the data folder full or "
                                     f"read-only?)", {"errno": exc.errno})
        except Exception as exc:  # a bug: keep serving, tell the client something honest
            log.exception("op %s failed", name)
            return codec.reply_error(rid, "internal", f"internal error in {name}: {type(exc).__name__}")
        if spec.mutating and conn.claims is not None and time.time() - conn.claims.iat >= self.config.refresh_after_s:
            conn.send(codec.event("auth.refreshed", self.refresh_token(conn)))
        return codec.reply_ok(rid, result if result is not None else {})

    async def _check_auth(self, conn: Connection):
        if conn.user is None:
            raise Unauthenticated("sign in first: send hello with a token, or auth.login")
        if conn.claims.exp <= time.time():
            raise TokenExpired("token expired: sign in again")
        # Revocation (password change, disable) is re-checked at most once a second per connection.
        if time.monotonic() - conn.checked_at > 1.0:
            user = await self.db.run(auth.check_user, conn.claims)
            conn.user, conn.checked_at = user, time.monotonic()

    # ---- HTTP -------------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "protocol": PROTOCOL_VERSION})

    async def websocket(self, request: web.Request):
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.config.allow_origins:
            # A web page the person happens to have open must not drive the engine (see SECURITY.md).
            return web.json_response({"error": {"code": "forbidden", "message": f"origin {origin} not allowed"}},
                                     status=403)
        limit = self.config.limits.frame_limit
        ws = web.WebSocketResponse(compress=False, max_msg_size=limit * HARD_FRAME_FACTOR, heartbeat=30)
        conn = Connection(self, ws, request.remote or "?")
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            try:
                claims = self.tokens.verify(bearer[7:].strip())
                user = await self.db.run(auth.check_user, claims)
                conn.sign_in(user, claims, bearer[7:].strip(), {})
            except EngineError as exc:
                status = 429 if exc.code == "busy" else 401
                return web.json_response({"error": {"code": exc.code, "message": exc.message}}, status=status)
            await ws.prepare(request)
        else:
            await ws.prepare(request)
        await conn.serve()
        return ws

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/v1/health", self.health)
        app.router.add_get(WS_PATH, self.websocket)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def on_startup(self, fn):
        self._startup_hooks.append(fn)

    def on_shutdown(self, fn):
        self._shutdown_hooks.append(fn)

    async def _on_startup(self, app):
        self._sweeper = asyncio.create_task(self._sweep())
        for fn in self._startup_hooks:
            await fn(self)
        self.gc.start()   # after the queue has marked interrupted jobs; runs on its own thread

    async def _sweep(self):
        """Drop idle chunked uploads (and their temp files) even when nobody starts a new one."""
        while True:
            await asyncio.sleep(min(60.0, self.config.limits.upload_idle_s / 4))
            await self.expire_uploads()

    async def _on_shutdown(self, app):
        self._sweeper.cancel()
        await self.gc.stop()
        for conns in list(self.connections.values()):
            for conn in list(conns):
                await conn.ws.close(code=1001, message=b"server shutting down")
        for fn in self._shutdown_hooks:
            await fn(self)


def _bad_args(op_name: str, exc: ValidationError) -> EngineError:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "args"
        problems.append({"field": where, "problem": err["msg"]})
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    from .errors import BadRequest
    return BadRequest(f"{op_name}: {first['field']}: {first['problem']}{more}", details={"fields": problems})
