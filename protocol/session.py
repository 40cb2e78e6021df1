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

from . import default_url, forms
from .client import CONNECTED, EXPIRED, SIGNED_OUT, Client, Event
from .errors import TOKEN_EXPIRED, UNAUTHENTICATED, ProtocolError
from .pixels import Pixels, swap_red_blue
from .tokens import TokenStore


@dataclass
class Update:
    """One thing the host should show. kind is one of:
    state {state, message} · signed_in {user, expires_at} ·
    models {models, upscalers, loras} (main models for a picker, upscaler and LoRA models; none with a
    missing file) ·
    job {request, job, tag} ·
    queued/started {job, tag} ·
    progress {job, tag, step, total, preview: Pixels|None} · result {job, tag, layers: [ResultLayer]} ·
    failed {job, tag, code, message} · canceled {job, tag} · error {message, code?, details?, request?, tag?} · event {name, data} ·
    workflows {workflows} · images {images, total, next_cursor, tag} (each summary's "thumbnail" is Pixels|None in
    the host's pixel order) · recalled {image, params, values, workflow, summary, tag} (values: forms.recalled,
    workflow: forms.recalled_workflow) · reply {op, result, tag}
    An error from a call made with a tag carries that tag.
    A gallery image fetched with open_image() arrives as a result {job, tag, image, layers}.
    """

    kind: str
    data: dict = field(default_factory=dict)


def layer_name(summary: dict) -> str:
    """A layer name for a gallery image: its prompt (shortened) and seed."""
    prompt = (summary.get("prompt") or "Paintbridge").strip()
    name = prompt if len(prompt) <= 40 else prompt[:39] + "…"
    return f"{name} [{summary['seed']}]" if summary.get("seed") is not None else name


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
        self.models: list[dict] = []      # main models (usable as generate's "model")
        self.upscalers: list[dict] = []   # upscaler models (generate's "upscaler", mode upscale)
        self.loras: list[dict] = []       # LoRA models (generate's "loras"; "base" must match the model's)
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
        rid = self._next_request()
        self._submit(self._generate, rid, dict(params), image, mask, tag)
        return rid

    def _next_request(self) -> str:
        with self._lock:
            self._requests += 1
            return f"r{self._requests}"

    def run_workflow(self, name: str, values: dict, tag: Any = None, priority: int = 0) -> str:
        """Queue a saved workflow; values as from forms.collect (image/mask values are host Pixels, uploaded
        here). Returns a local request id; then the same updates as generate()."""
        rid = self._next_request()
        self._submit(self._run_workflow, rid, name, dict(values), tag, priority)
        return rid

    def refresh_workflows(self) -> None:
        self._submit(self._refresh_workflows)

    def list_images(self, thumb_size: int = 96, limit: int = 24, tag: Any = None, **filters) -> None:
        """One gallery page (filters: app, document, board, starred, q, offset, cursor), newest first."""
        self._submit(self._list_images, thumb_size, limit, tag, filters, tag=tag)

    def recall(self, image: str, tag: Any = None) -> None:
        """Fetch an image's parameters so the host can refill its form (Update 'recalled')."""
        self._submit(self._recall, image, tag, tag=tag)

    def open_image(self, image: str, tag: Any = None) -> None:
        """Download a gallery image's pixels; it arrives like a job result, for the host to place."""
        self._submit(self._open_image, image, tag, tag=tag)

    def call(self, op: str, args: dict | None = None, tag: Any = None) -> None:
        """Any other op (images.star, images.delete, boards.*): the reply arrives as Update 'reply'."""
        self._submit(self._call, op, dict(args or {}), tag, tag=tag)

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
                self.models, self.upscalers, self.loras = (up.data["models"], up.data["upscalers"],
                                                           up.data["loras"])
            out.append(up)
        return out

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ---- worker-thread side ---------------------------------------------------------------------------
    def _submit(self, fn, *args, tag: Any = None):
        """Run fn on the worker; an error becomes an 'error' update (carrying tag when given)."""
        extra = {} if tag is None else {"tag": tag}

        def run():
            try:
                fn(*args)
            except ProtocolError as exc:
                self._protocol_error(exc, **extra)
            except Exception as exc:  # keep the worker alive; tell the person
                self._put("error", message=f"{type(exc).__name__}: {exc}", **extra)
        self._worker.submit(run)

    def _put(self, kind: str, **data):
        self._updates.put(Update(kind, data))

    def _protocol_error(self, exc: ProtocolError, **extra):
        if exc.code == TOKEN_EXPIRED:
            self._put("state", state=EXPIRED, message="your session expired: sign in again")
        elif exc.code == UNAUTHENTICATED:
            self._put("state", state=SIGNED_OUT, message=exc.message)
        # details (e.g. {"param": name} from workflows.run) let a host put the message beside the right field
        self._put("error", message=exc.message, code=exc.code, details=exc.details, **extra)

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
        # One list from the engine, split for the host's pickers: a LoRA or an upscaler is no main model, and a
        # registered model whose file is gone can't be used.
        usable = [m for m in self.client.call("models.list", {})["models"] if not m.get("missing")]
        self._put("models", models=[m for m in usable if m.get("type") == "main"],
                  upscalers=[m for m in usable if m.get("type") == "upscaler"],
                  loras=[m for m in usable if m.get("type") == "lora"])

    def _call_quietly(self, op: str, args: dict):
        if self.client is not None:
            self.client.call(op, args)

    def _generate(self, rid: str, params: dict, image: Pixels | None, mask: Pixels | None, tag: Any):
        for key, px in (("image", image), ("mask", mask)):
            if px is not None:
                params[key] = px
        self._queue(rid, tag, "generate", params)

    def _run_workflow(self, rid: str, name: str, values: dict, tag: Any, priority: int):
        self._queue(rid, tag, "workflows.run", {"name": name, "values": values, "priority": priority},
                    layers=values)

    def _queue(self, rid: str, tag: Any, op: str, args: dict, layers: dict | None = None):
        """Upload the Pixels values of `layers` (default: args itself), replace them with layer references,
        and send the op that queues a job."""
        client = self.client
        if client is None:
            self._put("error", message="not connected", request=rid, tag=tag)
            return
        layers = args if layers is None else layers
        try:
            for key, px in list(layers.items()):
                if isinstance(px, Pixels):
                    px = self._to_wire(px)
                    sha = px.sha256()
                    client.upload(px.data, sha)   # blob.has first: an unchanged layer is not re-sent
                    layers[key] = px.layer(sha)
            job = client.call(op, args)["job"]
        except ProtocolError as exc:
            self._protocol_error(exc, request=rid, tag=tag)
            return
        self._jobs[job] = tag
        self._put("job", request=rid, job=job, tag=tag)

    def _refresh_workflows(self):
        if self.client is not None:
            self._put("workflows", workflows=self.client.call("workflows.list", {})["workflows"])

    def _list_images(self, thumb_size: int, limit: int, tag: Any, filters: dict):
        if self.client is None:
            return
        args = {k: v for k, v in filters.items() if v is not None}
        page = self.client.call("images.list", {**args, "limit": limit, "thumbnails": "rgba8",
                                                "thumb_size": thumb_size})
        for it in page["images"]:
            th = it.get("thumbnail")
            it["thumbnail"] = (self._to_wire(Pixels(th["data"], th["w"], th["h"], "rgba8"))
                               if th and th.get("data") is not None else None)
        self._put("images", images=page["images"], total=page["total"], next_cursor=page.get("next_cursor"),
                  tag=tag)

    def _recall(self, image: str, tag: Any):
        if self.client is None:
            return
        got = self.client.call("images.get", {"image": image})
        got.pop("thumbnail", None)
        self._put("recalled", image=image, params=got.get("params"), values=forms.recalled(got.get("params")),
                  workflow=forms.recalled_workflow(got), summary=got, tag=tag)

    def _open_image(self, image: str, tag: Any):
        if self.client is None:
            return
        got = self.client.call("images.get", {"image": image})
        layer = dict(got["layer"], name=got.get("name") or layer_name(got), seed=got.get("seed"))
        self._fetch_results(got.get("job"), [layer], tag=tag, image=image)

    def _call(self, op: str, args: dict, tag: Any):
        if self.client is not None:
            self._put("reply", op=op, result=self.client.call(op, args), tag=tag)

    def _to_wire(self, px: Pixels) -> Pixels:
        """Host order -> wire order (and back: the swap is its own inverse)."""
        if self.pixel_order == "bgra" and px.format == "rgba8":
            return Pixels(swap_red_blue(px.data), px.w, px.h, px.format, px.x, px.y)
        return px

    def _fetch_results(self, job: str, layers: list[dict], **extra):
        out = []
        for layer in layers:
            data = self.client.download(layer["sha256"])
            px = self._to_wire(Pixels(data, layer["w"], layer["h"], layer.get("format", "rgba8"),
                                      layer.get("x", 0), layer.get("y", 0)))
            out.append(ResultLayer(layer.get("name", "Paintbridge"), px, layer.get("seed")))
        extra.setdefault("tag", self._jobs.get(job))
        self._put("result", job=job, layers=out, **extra)

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
