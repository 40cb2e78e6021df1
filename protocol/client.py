"""The Python client for the Paintbridge daemon, shared by the plug-ins, the CLI and the tests.

Threads: a supervisor thread owns the connection (connect, hello, reconnect with backoff) and a reader thread
receives frames, resolves pending requests by id and puts events on a thread-safe queue. Host UIs never call
the blocking methods on their main thread; they drain `events` from a timer (see session.py).
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable

from . import CHUNK_SIZE, PROTOCOL_VERSION, dependency
from .codec import decode, encode, request
from .errors import (DISCONNECTED, TIMEOUT, TOKEN_EXPIRED, UNAUTHENTICATED, ProtocolError)

ConnectionClosed = dependency("websockets.exceptions").ConnectionClosed
ws_connect = dependency("websockets.sync.client").connect

# Connection states reported as Event("client.state", {"state", "message"}).
DISCONNECTED_STATE = "disconnected"
CONNECTING = "connecting"
CONNECTED = "connected"          # socket open and signed in
SIGNED_OUT = "signed_out"        # socket open, no token or token refused: call login()
EXPIRED = "expired"              # the stored token expired: the person must sign in again
CLOSED = "closed"


@dataclass
class Event:
    name: str
    data: dict


class Client:
    def __init__(self, url: str, token: str | None = None, *, app: str = "python", app_version: str = "",
                 request_timeout: float = 60.0, reconnect: bool = True,
                 on_event: Callable[[Event], None] | None = None, frame_limit: int = 64 * 1024 * 1024,
                 headers: dict | None = None, ssl_context=None):
        self.url = url
        self.token = token
        self.app = app
        self.app_version = app_version
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self.frame_limit = frame_limit
        self.headers = headers
        self.ssl_context = ssl_context   # for wss:// with a private CA or self-signed certificate
        self.events: "queue.Queue[Event]" = queue.Queue()
        # on_event runs on the reader thread; it must be quick and must not call blocking client methods.
        self.on_event = on_event
        self.state = DISCONNECTED_STATE
        self.user: dict | None = None
        self.limits: dict | None = None   # hello's / auth.login's "limits" (protocol.limits.Limits reads it)
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ws = None
        self._closed = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._ready = threading.Event()   # set once a connection attempt settled (any state but connecting)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> "Client":
        """Connect (and sign in with the token, if any) and keep the connection up in the background.

        Blocks until the first attempt settles; raises ProtocolError if the server cannot be reached. A refused
        token does not raise: state becomes signed_out/expired and login() can be called on this connection.
        """
        self._start()
        if not self._ready.wait(timeout):
            raise ProtocolError(TIMEOUT, f"could not connect to {self.url} within {timeout:.0f}s")
        if self.state == DISCONNECTED_STATE:
            raise ProtocolError(DISCONNECTED, self._last_error or f"could not connect to {self.url}")
        return self

    def start(self) -> "Client":
        """Connect in the background (non-blocking); state changes arrive as client.state events."""
        self._start()
        return self

    def _start(self):
        if self._supervisor is None:
            self._last_error = ""
            self._supervisor = threading.Thread(target=self._supervise, name="paintbridge-client", daemon=True)
            self._supervisor.start()

    def close(self):
        self._closed.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)
        self._set_state(CLOSED, "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _set_state(self, state: str, message: str, **extra):
        """extra: "lost" and "retry_in" (seconds) with disconnected; "user" and "limits" are added to connected."""
        changed = state != self.state
        self.state = state
        if state != CONNECTING:
            self._ready.set()
        if changed:
            data = {"state": state, "message": message, **extra}
            if state == CONNECTED:
                data.update(user=self.user, limits=self.limits)
            self._emit(Event("client.state", data))

    def _emit(self, ev: Event):
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                pass
        self.events.put(ev)

    def _supervise(self):
        delay = 0.5
        while not self._closed.is_set():
            self._set_state(CONNECTING, "")
            opened = False
            try:
                with ws_connect(self.url, compression=None, max_size=self.frame_limit, open_timeout=10,
                                close_timeout=2, ping_interval=20, ping_timeout=20,
                                additional_headers=self.headers,
                                **({"ssl": self.ssl_context} if self.ssl_context is not None else {})) as ws:
                    opened = True
                    self._ws = ws
                    reader = threading.Thread(target=self._read, args=(ws,), name="paintbridge-reader", daemon=True)
                    reader.start()
                    self._hello()
                    if self.state == CONNECTED:
                        delay = 0.5
                    reader.join()
            except Exception as exc:
                if not opened:
                    self._last_error = f"cannot reach {self.url}: {exc}"
            self._ws = None
            self._fail_pending(ProtocolError(DISCONNECTED, "connection lost"))
            if self._closed.is_set():
                return
            self._set_state(DISCONNECTED_STATE, "connection lost" if opened else self._last_error, lost=opened,
                            retry_in=delay if self.reconnect else None)
            if not self.reconnect or self._closed.wait(delay):
                return
            delay = min(delay * 2, 30.0)

    def _hello(self):
        if not self.token:
            self._set_state(SIGNED_OUT, "sign in to continue")
            return
        try:
            result = self.request("hello", {"protocol": PROTOCOL_VERSION, "token": self.token,
                                            "client": {"app": self.app, "version": self.app_version}}).result(30)
            self.user, self.limits = result.get("user"), result.get("limits")
            self._set_state(CONNECTED, "")
        except ProtocolError as exc:
            if exc.code == TOKEN_EXPIRED:
                self._set_state(EXPIRED, "your session expired: sign in again")
            elif exc.code == UNAUTHENTICATED:
                self._set_state(SIGNED_OUT, exc.message)
            else:
                self._set_state(SIGNED_OUT, f"{exc.code}: {exc.message}")
        except FutureTimeout:
            self._set_state(SIGNED_OUT, "the server did not answer hello")

    def _read(self, ws):
        try:
            for frame in ws:
                if isinstance(frame, str):
                    continue
                try:
                    msg = decode(frame)
                except ProtocolError:
                    continue
                if "re" in msg:
                    with self._lock:
                        fut = self._pending.pop(msg.get("re"), None)
                    if fut is None:
                        continue
                    if msg.get("ok"):
                        fut.set_result(msg.get("result"))
                    else:
                        fut.set_exception(ProtocolError.from_wire(msg.get("error")))
                elif "event" in msg:
                    name, data = msg.get("event"), msg.get("data") or {}
                    if name == "auth.refreshed" and data.get("token"):
                        self.token = data["token"]
                    self._emit(Event(str(name), data))
        except ConnectionClosed:
            pass
        except Exception:
            pass

    def _fail_pending(self, exc: ProtocolError):
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    # ---- requests --------------------------------------------------------------------------------------
    def request(self, op: str, args: dict | None = None) -> Future:
        """Send a request; the Future resolves with the result or raises ProtocolError."""
        fut: Future = Future()
        ws = self._ws
        if ws is None:
            fut.set_exception(ProtocolError(DISCONNECTED, f"not connected to {self.url}"))
            return fut
        rid = next(self._ids)
        with self._lock:
            self._pending[rid] = fut
        try:
            data = encode(request(rid, op, args))
            with self._send_lock:
                ws.send(data)
        except Exception as exc:
            with self._lock:
                self._pending.pop(rid, None)
            if not fut.done():
                fut.set_exception(ProtocolError(DISCONNECTED, f"send failed: {exc}"))
        return fut

    def call(self, op: str, args: dict | None = None, timeout: float | None = None) -> Any:
        """Blocking request. Never call this on a host's UI thread."""
        fut = self.request(op, args)
        try:
            return fut.result(timeout if timeout is not None else self.request_timeout)
        except FutureTimeout:
            raise ProtocolError(TIMEOUT, f"{op}: no reply within {timeout or self.request_timeout:.0f}s") from None

    def login(self, username: str, password: str, remember_me: bool = False) -> dict:
        result = self.call("auth.login", {"username": username, "password": password, "remember_me": remember_me})
        self.token = result["token"]
        # auth.login carries no client info: a hello with the new token on this connection tells the engine which
        # app this is, so the jobs and gallery images made from here name it
        self.call("hello", {"protocol": PROTOCOL_VERSION, "token": self.token,
                            "client": {"app": self.app, "version": self.app_version}})
        self.user, self.limits = result.get("user"), result.get("limits")
        self._set_state(CONNECTED, "")
        return result

    def wait_connected(self, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.state == CONNECTED:
                return True
            time.sleep(0.01)
        return self.state == CONNECTED

    # ---- blobs -----------------------------------------------------------------------------------------
    def upload(self, data: bytes, sha256: str | None = None, chunk_size: int = CHUNK_SIZE) -> str:
        """Make sure the server holds `data`; returns its sha256. Skips the transfer when it already has it."""
        sha = sha256 or hashlib.sha256(data).hexdigest()
        if not self.call("blob.has", {"hashes": [sha]})["missing"]:
            return sha
        if len(data) <= chunk_size:
            result = self.call("blob.put", {"data": data})
        else:
            upload_id = f"u{next(self._ids)}-{sha[:16]}"
            view = memoryview(data)
            offset, result = 0, None
            # Pipelined: send every chunk, then collect replies, so the link never idles waiting for an ack.
            futures = []
            while offset < len(data):
                end = min(offset + chunk_size, len(data))
                futures.append(self.request("blob.put", {"upload": upload_id, "offset": offset,
                                                         "data": view[offset:end], "final": end == len(data)}))
                offset = end
                if len(futures) >= 4:  # bound memory held in the socket buffers
                    futures.pop(0).result(self.request_timeout)
            for fut in futures:
                result = fut.result(self.request_timeout)
        if result["sha256"] != sha:
            raise ProtocolError("internal", f"server stored {result['sha256']}, expected {sha}")
        return sha

    def download(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> bytes:
        first = self.call("blob.get", {"sha256": sha256, "offset": 0, "length": chunk_size})
        size = first["size"]
        if len(first["data"]) == size:
            return first["data"]
        parts = [first["data"]]
        offsets = range(len(first["data"]), size, chunk_size)
        futures = [self.request("blob.get", {"sha256": sha256, "offset": o, "length": chunk_size}) for o in offsets]
        for fut in futures:
            parts.append(fut.result(self.request_timeout)["data"])
        out = b"".join(parts)
        if len(out) != size:
            raise ProtocolError("internal", f"blob {sha256}: got {len(out)} bytes, expected {size}")
        return out

    # ---- events ----------------------------------------------------------------------------------------
    def next_event(self, timeout: float | None = None, name: str | None = None,
                   match: Callable[[Event], bool] | None = None) -> Event:
        """Block until an event (optionally with this name / matching) arrives; others are dropped."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if end is None else max(0.0, end - time.monotonic())
            try:
                ev = self.events.get(timeout=remaining)
            except queue.Empty:
                raise ProtocolError(TIMEOUT, f"no {name or 'event'} within {timeout}s") from None
            if (name is None or ev.name == name) and (match is None or match(ev)):
                return ev

    def drain(self, max_items: int = 100) -> list[Event]:
        out = []
        while len(out) < max_items:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out
