"""Observable session state shared by the Krita, Blender and GIMP plug-ins.

The split (after krita-ai-diffusion, but with all encoding, hashing and transfers off the UI thread):
  - Client (client.py): the socket, on its own threads.
  - Session (here): a worker thread that signs in, uploads layers, submits jobs and downloads results, and a
    queue of ready-to-use Updates.
  - The host adapter: calls session methods (all non-blocking) from its UI, and drains `poll()` on its main
    thread from a timer (Krita QTimer, Blender bpy.app.timers, GIMP GLib timeout), touching host data only there.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import default_url
from .client import CONNECTED, EXPIRED, SIGNED_OUT, Client, Event
from .errors import TOKEN_EXPIRED, UNAUTHENTICATED, ProtocolError
from .pixels import Pixels, swap_red_blue
from .tokens import TokenStore


@dataclass
class Update:
    """One thing the host should show. kind is one of:
    state {state, message} · signed_in {user, expires_at} · models {models} · job {request, job, tag} ·
    queued/started {job, tag} ·
    progress {job, tag, step, total, preview: Pixels|None} · result {job, tag, layers: [ResultLayer]} ·
    failed {job, tag, code, message} · canceled {job, tag} · error {message, request?, tag?} · event {name, data}
    """

    kind: str
    data: dict = field(default_factory=dict)


@dataclass
class ResultLayer:
    name: str
    pixels: Pixels          # carries x, y in the sender's document coordinates
    seed: int | None = None


class Session:
    def __init__(self, app: str, app_version: str, config_dir: str, url: str | None = None,
                 use_keyring: bool = True, pixel_order: str = "rgba"):
        """pixel_order "bgra" (Krita): rgba8 images given to generate() are BGRA and results/previews come back
        BGRA; the swap happens on the worker thread, never on the host's UI thread."""
        if pixel_order not in ("rgba", "bgra"):
            raise ValueError("pixel_order is 'rgba' or 'bgra'")
        self.pixel_order = pixel_order
        self.app = app
        self.app_version = app_version
        self.url = url or default_url()
        self.tokens = TokenStore(config_dir, use_keyring=use_keyring)
        self.state = "disconnected"
        self.message = ""
        self.models: list[dict] = []
        self.user: dict | None = None
        self.client: Client | None = None
        self._updates: "queue.Queue[Update]" = queue.Queue()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-session")
        self._jobs: dict[str, Any] = {}     # job id -> tag given to generate()
        self._requests = 0
        self._lock = threading.Lock()

    # ---- commands (all non-blocking; results come back through poll()) -------------------------------
    def connect(self, url: str | None = None, token: str | None = None) -> None:
        """Connect with the given token, or the one stored for this server."""
        self._submit(self._connect, url or self.url, token)

    def login(self, username: str, password: str, remember_me: bool = False, url: str | None = None) -> None:
        self._submit(self._login, url or self.url, username, password, remember_me)

    def sign_out(self) -> None:
        self._submit(self._sign_out)

    def refresh_models(self) -> None:
        self._submit(self._refresh_models)

    def generate(self, params: dict, image: Pixels | None = None, mask: Pixels | None = None,
                 tag: Any = None) -> str:
        """Queue a generate request; returns a local request id. The job id arrives as Update('job')."""
        with self._lock:
            self._requests += 1
            rid = f"r{self._requests}"
        self._submit(self._generate, rid, dict(params), image, mask, tag)
        return rid

    def cancel(self, job: str) -> None:
        self._submit(self._call_quietly, "job.cancel", {"job": job})

    def poll(self, max_items: int = 100) -> list[Update]:
        """Drain ready updates. Call on the host's main thread; never blocks."""
        out = []
        while len(out) < max_items:
            try:
                up = self._updates.get_nowait()
            except queue.Empty:
                break
            if up.kind == "state":
                self.state, self.message = up.data["state"], up.data.get("message", "")
            elif up.kind == "models":
                self.models = up.data["models"]
            out.append(up)
        return out

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ---- worker-thread side ---------------------------------------------------------------------------
    def _submit(self, fn, *args):
        def run():
            try:
                fn(*args)
            except ProtocolError as exc:
                self._protocol_error(exc)
            except Exception as exc:  # keep the worker alive; tell the person
                self._put("error", message=f"{type(exc).__name__}: {exc}")
        self._worker.submit(run)

    def _put(self, kind: str, **data):
        self._updates.put(Update(kind, data))

    def _protocol_error(self, exc: ProtocolError, **extra):
        if exc.code == TOKEN_EXPIRED:
            self._put("state", state=EXPIRED, message="your session expired: sign in again")
        elif exc.code == UNAUTHENTICATED:
            self._put("state", state=SIGNED_OUT, message=exc.message)
        self._put("error", message=exc.message, code=exc.code, **extra)

    def _new_client(self, url: str, token: str | None) -> Client:
        if self.client is not None:
            self.client.close()
        self.url = url
        self.client = Client(url, token, app=self.app, app_version=self.app_version, on_event=self._on_event)
        return self.client

    def _connect(self, url: str, token: str | None):
        token = token or self.tokens.get(url)
        client = self._new_client(url, token)
        client.connect()
        if token and client.state == CONNECTED:
            self.tokens.set(url, client.token)

    def _login(self, url: str, username: str, password: str, remember_me: bool):
        client = self.client
        if client is None or client.url != url or client.state not in (SIGNED_OUT, EXPIRED, CONNECTED):
            client = self._new_client(url, None)
            client.connect()
        result = client.login(username, password, remember_me)
        self.tokens.set(url, result["token"])
        self._put("signed_in", user=result.get("user"), expires_at=result.get("expires_at"))

    def _sign_out(self):
        self.tokens.delete(self.url)
        if self.client is not None:
            self.client.close()
            self.client = None
        self._put("state", state=SIGNED_OUT, message="signed out")

    def _refresh_models(self):
        if self.client is None:
            return
        self._put("models", models=self.client.call("models.list", {})["models"])

    def _call_quietly(self, op: str, args: dict):
        if self.client is not None:
            self.client.call(op, args)

    def _generate(self, rid: str, params: dict, image: Pixels | None, mask: Pixels | None, tag: Any):
        client = self.client
        if client is None:
            self._put("error", message="not connected", request=rid, tag=tag)
            return
        try:
            for key, px in (("image", image), ("mask", mask)):
                if px is not None:
                    px = self._to_wire(px)
                    sha = px.sha256()
                    client.upload(px.data, sha)   # blob.has first: an unchanged layer is not re-sent
                    params[key] = px.layer(sha)
            job = client.call("generate", params)["job"]
        except ProtocolError as exc:
            self._protocol_error(exc, request=rid, tag=tag)
            return
        self._jobs[job] = tag
        self._put("job", request=rid, job=job, tag=tag)

    def _to_wire(self, px: Pixels) -> Pixels:
        """Host order -> wire order (and back: the swap is its own inverse)."""
        if self.pixel_order == "bgra" and px.format == "rgba8":
            return Pixels(swap_red_blue(px.data), px.w, px.h, px.format, px.x, px.y)
        return px

    def _fetch_results(self, job: str, layers: list[dict]):
        out = []
        for layer in layers:
            data = self.client.download(layer["sha256"])
            px = self._to_wire(Pixels(data, layer["w"], layer["h"], layer.get("format", "rgba8"),
                                      layer.get("x", 0), layer.get("y", 0)))
            out.append(ResultLayer(layer.get("name", "Paintbridge"), px, layer.get("seed")))
        self._put("result", job=job, tag=self._jobs.get(job), layers=out)

    # ---- reader-thread side: translate server events into updates --------------------------------------
    def _on_event(self, ev: Event):
        d = ev.data
        job = d.get("job")
        tag = self._jobs.get(job)
        if ev.name == "client.state":
            self._put("state", state=d["state"], message=d.get("message", ""))
            if d["state"] == CONNECTED:
                self.refresh_models()
        elif ev.name == "auth.refreshed":
            self._submit(self.tokens.set, self.url, d["token"])
        elif ev.name in ("job.queued", "job.started"):
            self._put(ev.name[4:], job=job, tag=tag)
        elif ev.name == "job.progress":
            prev = d.get("preview")
            preview = None
            if isinstance(prev, dict) and prev.get("data") is not None:
                try:
                    preview = self._to_wire(Pixels(prev["data"], prev["w"], prev["h"], prev.get("format", "rgba8")))
                except (KeyError, ValueError):
                    preview = None
            self._put("progress", job=job, tag=tag, step=d.get("step"), total=d.get("total"), preview=preview)
        elif ev.name == "job.result":
            self._submit(self._fetch_results, job, d.get("layers", []))
        elif ev.name == "job.failed":
            err = d.get("error") or {}
            self._put("failed", job=job, tag=tag, code=err.get("code"), message=err.get("message", "failed"))
        elif ev.name == "job.canceled":
            self._put("canceled", job=job, tag=tag)
        else:
            self._put("event", name=ev.name, data=d)
