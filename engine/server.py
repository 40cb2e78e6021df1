"""The transport: an aiohttp app serving GET /v1/health, the WebSocket endpoint /v1/ws and the web page (engine/web/,
`/` and below).

A frame comes in on Connection.serve → decoded → Server.dispatch looks the op up in engine.opspec.OPS (op `X.y`
lives in engine/ops/X.py), checks sign-in and admin rights, validates args with the op's pydantic model, runs
the handler with an OpContext (the engine's services, built by engine/app.py, and this connection) and replies.
Events go out through the hub (engine/hub.py) to the owner's connections (and admins').
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import msgpack
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from protocol import PROTOCOL_VERSION, WS_PATH
from protocol import codec
from protocol.errors import ProtocolError

from . import auth, ops, sessions
from .app import Services
from .errors import EngineError, Forbidden
from .netguard import ConnectionGuard
from .opspec import OpContext, bad_args
from .web import WebPages
from .web.guard import security_headers

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
        self.outbox_bytes = 0                 # bytes queued in outbox, not yet written
        self.drained = asyncio.Event()        # set while outbox_bytes is within the limit
        self.drained.set()
        self.in_request = False
        self.writer_task: asyncio.Task | None = None
        self.pending_close: tuple[int, str] | None = None
        self.bad_frames = 0
        self.web_session: str | None = None   # signed in by the web page's session cookie (engine/web/)
        self.key = secrets.token_hex(8)       # names this connection to the queue (a live job's lane)

    @property
    def uid(self) -> int:
        return self.user["id"]

    @property
    def is_admin(self) -> bool:
        return bool(self.user and self.user["admin"])

    def sign_in(self, user: dict, claims: auth.Claims, token: str, client_info: dict):
        hub = self.server.services.hub
        hub.check_room(self, user)
        if self.user is not None and self.user["id"] != user["id"]:
            hub.detach(self)
        self.user, self.claims, self.token, self.client_info = user, claims, token, client_info
        self.checked_at = time.monotonic()
        hub.attach(self)

    def send(self, message: dict, droppable: bool = False):
        if droppable and self.outbox.qsize() > OUTBOX_SOFT_LIMIT:
            return
        frame = codec.encode(message)
        self.outbox_bytes += len(frame)
        if self.outbox_bytes > self.server.config.limits.outbox_bytes:
            self.drained.clear()
        self.outbox.put_nowait(frame)

    async def writer(self):
        limit = self.server.config.limits.outbox_bytes
        while True:
            frame = await self.outbox.get()
            if frame is None:
                return
            if isinstance(frame, tuple):   # close_soon's turn: everything queued before it has gone out
                await self.ws.close(code=frame[0], message=frame[1].encode())
                return
            try:
                await self.ws.send_bytes(frame)
            except Exception:
                return
            finally:
                self.outbox_bytes -= len(frame)
                if self.outbox_bytes <= limit:
                    self.drained.set()

    def close_soon(self, code: int, reason: str):
        """Close from outside the connection's own task (revoked, expired, evicted before sign-in), after the
        reply to a request in progress: a user who changes their own password still gets the answer."""
        if self.pending_close is None:
            self.pending_close = (code, reason)
            if not self.in_request:
                self.outbox.put_nowait(self.pending_close)

    async def serve(self):
        writer = self.writer_task = asyncio.create_task(self.writer())
        limits = self.server.services.config.limits
        try:
            async for msg in self.ws:
                # A peer that does not read its replies stops being read: its outbox stays bounded and TCP
                # pushes back on it, instead of our memory growing with every reply it asks for.
                await self.drained.wait()
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
            self.server.services.hub.leave(self)
            await self.server.services.queue.end_live(self.key)

    def refuse(self, re: Any, code: str, message: str, details: Any = None):
        self.bad_frames += 1
        self.send(codec.reply_error(re, code, message, details))

    async def handle_frame(self, data: bytes):
        limit = self.server.services.config.limits.frame_limit
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
        self.in_request = True
        try:
            reply = await self.server.dispatch(self, rid, msg["op"], args)
            self.send(reply)
        finally:
            self.in_request = False
            if self.pending_close is not None:
                self.outbox.put_nowait(self.pending_close)


class _PreauthGate:
    """Sits in front of aiohttp's WebSocket frame parser and counts the bytes a connection sends before it signs
    in: past the budget the connection is cut. aiohttp's own limit (the frame limit x HARD_FRAME_FACTOR) is fixed
    when the socket is prepared, so without this a stranger could make us buffer 64 MiB per socket."""

    def __init__(self, parser, transport, conn: Connection, budget: int):
        self.parser, self.transport, self.conn, self.budget, self.used = parser, transport, conn, budget, 0

    def feed_data(self, data):
        if self.conn.user is None:
            self.used += len(data)
            if self.used > self.budget:
                if not self.transport.is_closing():
                    log.info("closing %s: %d bytes before signing in", self.conn.remote, self.used)
                    self.transport.abort()
                return False, b""
        return self.parser.feed_data(data)

    def feed_eof(self):
        return self.parser.feed_eof()


def _limit_preauth_bytes(request: web.Request, conn: Connection, budget: int):
    protocol = request.protocol
    parser = getattr(protocol, "_payload_parser", None)
    if parser is None:   # aiohttp changed its internals: the waiting-room cap and header deadline still hold
        log.warning("cannot limit pre-sign-in bytes with this aiohttp version")
        return
    protocol._payload_parser = _PreauthGate(parser, request.transport, conn, budget)


async def _plain_server_header(request: web.Request, response: web.StreamResponse):
    # aiohttp names its and Python's exact versions: do not help anyone pick an exploit.
    response.headers["Server"] = "paintbridge"


def _peek_id(data: bytes):
    """The id of an oversized request, so the too_large reply can be correlated (None if unreadable)."""
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
        rid = msg.get("id") if isinstance(msg, dict) else None
        return rid if isinstance(rid, int) and not isinstance(rid, bool) else None
    except Exception:
        return None


class Server:
    def __init__(self, services: Services):
        self.services = services
        self.config = services.config
        self.guard = ConnectionGuard(self.config.limits.max_connections, self.config.limits.header_timeout_s)
        self.web = WebPages(self)

    # ---- dispatch ---------------------------------------------------------------------------------------
    async def dispatch(self, conn: Connection, rid: int, name: str, args: dict) -> dict:
        spec = ops.OPS.get(name)
        if spec is None:
            return codec.reply_error(rid, "bad_request", f"unknown op {name!r}", {"op": name})
        try:
            if spec.auth:
                await sessions.check_signed_in(self.services.db, conn)
                if spec.admin and not conn.is_admin:
                    raise Forbidden(f"{name} needs an admin user")
            try:
                parsed = spec.args.model_validate(args)
            except ValidationError as exc:
                raise bad_args(name, exc) from None
            result = await spec.handler(OpContext(self.services, conn, rid), parsed)
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
        if spec.mutating:
            refreshed = sessions.sliding_refresh(self.config, self.services.tokens, conn)
            if refreshed is not None:
                conn.send(codec.event(refreshed.name, refreshed.data))
        return codec.reply_ok(rid, result if result is not None else {})

    # ---- HTTP -------------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "protocol": PROTOCOL_VERSION})

    async def websocket(self, request: web.Request):
        origin = request.headers.get("Origin")
        page = None
        if origin is not None and origin not in self.config.allow_origins:
            # A web page the person happens to have open must not drive the engine (see SECURITY.md); the engine's
            # own page may, signed in by its session cookie (browsers send cookies on upgrades, hence the check).
            page, why = await self.web.page_upgrade(request)
            if page is None:
                status, code = (403, "forbidden") if why == "cross-site" else (401, "unauthenticated")
                return web.json_response({"error": {"code": code, "message": f"origin {origin}: {why}"}},
                                         status=status)
        limit = self.config.limits.frame_limit
        ws = web.WebSocketResponse(compress=False, max_msg_size=limit * HARD_FRAME_FACTOR, heartbeat=30)
        conn = Connection(self, ws, request.remote or "?")
        bearer = request.headers.get("Authorization", "")
        if page is not None or bearer.startswith("Bearer "):
            try:
                if page is not None:
                    conn.web_session = page.id
                    conn.sign_in(page.user, page.claims(), None, {"app": "web", "version": ""})
                else:
                    claims = self.services.tokens.verify(bearer[7:].strip())
                    user = await self.services.db.run(auth.check_user, claims)
                    conn.sign_in(user, claims, bearer[7:].strip(), {})
            except EngineError as exc:
                status = 429 if exc.code == "busy" else 401
                return web.json_response({"error": {"code": exc.code, "message": exc.message}}, status=status)
            await ws.prepare(request)
        else:
            await ws.prepare(request)
            self.services.hub.admit(conn)
            _limit_preauth_bytes(request, conn, self.config.limits.preauth_bytes)
        await conn.serve()
        return ws

    @web.middleware
    async def _settle(self, request: web.Request, handler):
        self.guard.settled(request.transport)   # the request's headers arrived in time
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024, middlewares=[self._settle])
        app.router.add_get("/v1/health", self.health)
        app.router.add_get(WS_PATH, self.websocket)
        self.web.routes(app)   # the web page: / and below (engine/web/)
        app.on_response_prepare.append(_plain_server_header)
        app.on_response_prepare.append(security_headers)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app):
        await self.services.start()

    async def _on_shutdown(self, app):
        # Services first: the running job stops and its job.failed (interrupted) reaches its owner; then each
        # connection closes after what is queued for it has gone out.
        await self.services.stop()
        conns = self.services.hub.all() + list(self.services.hub.waiting)
        for conn in conns:
            conn.close_soon(1001, "server shutting down")
        writers = [c.writer_task for c in conns if c.writer_task is not None]
        if writers:
            await asyncio.wait(writers, timeout=2.0)
