"""Observable session state shared by the Krita, Blender and GIMP plug-ins.

The split (after krita-ai-diffusion, but with all encoding, hashing and transfers off the UI thread):
  - Client (client.py): the socket, on its own threads.
  - Session (here): a worker thread that signs in, uploads layers, submits jobs and downloads results, and a
    queue of ready-to-use typed updates (updates.py).
  - The host's controller: calls session methods (all non-blocking) from its UI, and drains `poll()` on its main
    thread from a timer (Krita QTimer, Blender bpy.app.timers, GIMP GLib timeout), touching host data only there.

A Session acts only on the jobs it submitted: job events of other jobs (another app of the same user, or any
user's when signed in as an admin, who receives everyone's) are dropped, never downloaded. After a reconnect it
re-reads every job it still tracks (`job.get`), so a result or failure sent while it was away is delivered, and
a cancel always ends in JobCanceled, JobFailed (code "not_found" when the job is gone) or JobResult.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import default_url, forms
from .client import CONNECTED, EXPIRED, SIGNED_OUT, Client, Event
from .errors import DISCONNECTED, NOT_FOUND, TIMEOUT, TOKEN_EXPIRED, UNAUTHENTICATED, ProtocolError
from .downloads import DownloadTable
from .gallery import layer_name
from .generate import error_field
from .jobs import JobTable
from .limits import Limits
from .pixels import Pixels, swap_red_blue
from .tokens import TokenStore
from .updates import (CancelAcknowledged, DownloadProgress, EngineEvent, ErrorUpdate, ImagesPage, JobAccepted,
                      JobCanceled, JobFailed, JobProgress, JobQueued, JobResult, JobStarted, ModelsChanged, Recalled,
                      Reply, ResultLayer, SignedIn, StateChanged, Update, WorkflowsChanged)

__all__ = ["Session", "Update", "ResultLayer", "layer_name"]

_JOB_EVENTS = ("job.queued", "job.started", "job.progress", "job.result", "job.failed", "job.canceled")
_EARLY_MAX = 64        # events kept per unknown job while a submission waits for its job id


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
        # Main-thread state, updated by poll():
        self.state = "disconnected"
        self.message = ""
        self.models: list[dict] = []      # main models (usable as generate's "model")
        self.upscalers: list[dict] = []   # upscaler models (generate's "upscaler", mode upscale)
        self.loras: list[dict] = []       # LoRA models (generate's "loras"; "base" must match the model's)
        self.vaes: list[dict] = []        # VAE models (generate's "vae"; generate.vaes_for the model)
        self.samplers: list[dict] = []    # nodes.list samplers: {id, label, schedules} (generate's "scheduler")
        self.controls: list[dict] = []    # ControlNets / T2I-Adapters (generate's "control"), with a "preset"
        self.references: list[dict] = []  # IP-Adapters (generate's "reference"), with a "preset"
        self.limits = Limits()            # the engine's, from hello (defaults until connected)
        self.user: dict | None = None
        self.jobs = JobTable()            # the jobs this session submitted, as the host shows them
        self.downloads = DownloadTable()  # model downloads (admins): this session's and other admins'
        self.client: Client | None = None
        self._updates: "queue.Queue[Update]" = queue.Queue()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-session")
        self._requests = 0
        # Reader/worker-thread state, under _lock: the jobs whose events we act on (job id -> tag), results being
        # downloaded, how many submissions still wait for their job id (their early events are kept in _early),
        # request id -> job id, and the jobs whose cancel was asked for (re-sent after a reconnect).
        self._lock = threading.RLock()
        self._mine: dict[str, Any] = {}
        self._fetching: dict[str, Any] = {}
        self._inflight = 0
        self._early: dict[str, list[Event]] = {}
        self._request_jobs: dict[str, str] = {}
        self._cancel_wanted: set[str] = set()

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

    @property
    def is_admin(self) -> bool:
        """The signed-in user may download models (a host shows the control only then)."""
        return self.state == CONNECTED and bool((self.user or {}).get("admin"))

    def download_model(self, source: str, name: str | None = None, sha256: str | None = None,
                       tag: Any = None) -> str:
        """Ask the engine to download a model (admin; models.download: a URL, OWNER/REPO[/FILE] or starter:NAME).
        Returns a local request id, the key of its row in `downloads`; DownloadProgress updates follow, and the
        new model is in `models` once done. A refused request ends the row in "refused" with the engine's error."""
        source = (source or "").strip()
        rid = f"d{self._next_request()[1:]}"
        self.downloads.add(rid, source, tag)
        self._submit(self._download_model, rid, source, (name or "").strip() or None,
                     (sha256 or "").strip() or None, tag)
        return rid

    def cancel_download(self, download: str) -> None:
        """Stop a running download (by the engine's download id); its row ends in "canceled"."""
        self._submit(self._call, "models.download.cancel", {"download": download}, None)

    def generate(self, params: dict, image=None, mask=None, tag: Any = None) -> str:
        """Queue a generate request (params: e.g. generate.generate_args); returns a local request id, which is
        also the key of its row in `jobs`. The job id arrives as JobAccepted. Call on the host's main thread.
        image/mask: Pixels, or a zero-argument callable returning Pixels that is called on the worker thread (a
        host's pixel conversion, kept off its UI thread); a ValueError it raises refuses the request. The `image`
        of each params["control"] / params["reference"] entry and the `mask` of each params["regions"] entry
        (generate.region_args) may be the same (uploaded like image/mask)."""
        rid = self._next_request()
        self.jobs.add(rid, tag)
        self._submit(self._generate, rid, dict(params), image, mask, tag)
        return rid

    def _next_request(self) -> str:
        with self._lock:
            self._requests += 1
            return f"r{self._requests}"

    def run_workflow(self, name: str, values: dict, tag: Any = None, priority: int = 0) -> str:
        """Queue a saved workflow; values as from forms.collect (image/mask values are host Pixels or callables as
        in generate(), uploaded here). Returns a local request id; then the same updates as generate()."""
        rid = self._next_request()
        self.jobs.add(rid, tag)
        self._submit(self._run_workflow, rid, name, dict(values), tag, priority)
        return rid

    def refresh_workflows(self) -> None:
        self._submit(self._refresh_workflows)

    def list_images(self, thumb_size: int = 96, limit: int = 24, tag: Any = None, **filters) -> None:
        """One gallery page (filters: app, document, board, starred, q, offset, cursor), newest first.
        gallery.GalleryBrowser does the paging."""
        self._submit(self._list_images, thumb_size, limit, tag, filters, tag=tag)

    def recall(self, image: str, tag: Any = None) -> None:
        """Fetch an image's parameters so the host can refill its form (Recalled; generate.recalled_fields)."""
        self._submit(self._recall, image, tag, tag=tag)

    def open_image(self, image: str, tag: Any = None) -> None:
        """Download a gallery image's pixels; it arrives as a JobResult with `image` set, for the host to place."""
        self._submit(self._open_image, image, tag, tag=tag)

    def call(self, op: str, args: dict | None = None, tag: Any = None) -> None:
        """Any other op (images.star, images.delete, boards.*): the reply arrives as Reply."""
        self._submit(self._call, op, dict(args or {}), tag, tag=tag)

    def cancel(self, job: str) -> None:
        """Cancel a job of this session, by job id or by the request id generate() returned (also before the
        job id is known). Ends in JobCanceled, or JobResult/JobFailed when the job ended first."""
        row = self.jobs.rows.get(job) or self.jobs.by_job(job)
        if row is not None:
            row.cancel_requested = True
        if job in self.jobs.rows:
            self._submit(self._cancel_request, job)
        else:
            self._submit(self._cancel, job)

    def cancel_all(self) -> None:
        for row in self.jobs.active():
            self.cancel(row.request)

    def poll(self, max_items: int = 100) -> list[Update]:
        """Drain ready updates and apply them to state, models, limits and jobs. Call on the host's main thread;
        never blocks."""
        out = []
        while len(out) < max_items:
            try:
                up = self._updates.get_nowait()
            except queue.Empty:
                break
            if isinstance(up, StateChanged):
                self.state, self.message = up.state, up.message
                if up.state == CONNECTED:
                    self.user = up.user or self.user
                    self.limits = up.limits or self.limits
            elif isinstance(up, ModelsChanged):
                self.models, self.upscalers, self.loras = up.models, up.upscalers, up.loras
                self.vaes, self.samplers = up.vaes, up.samplers or self.samplers
                self.controls, self.references = up.controls, up.references
            elif isinstance(up, DownloadProgress):
                self.downloads.apply(up)
            self.jobs.apply(up)
            out.append(up)
        return out

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ---- worker-thread side ---------------------------------------------------------------------------
    def _submit(self, fn, *args, tag: Any = None):
        """Run fn on the worker; an error becomes an ErrorUpdate (carrying tag when given)."""
        extra = {} if tag is None else {"tag": tag}

        def run():
            try:
                fn(*args)
            except ProtocolError as exc:
                self._protocol_error(exc, **extra)
            except Exception as exc:  # keep the worker alive; tell the person
                self._put(ErrorUpdate(f"{type(exc).__name__}: {exc}", **extra))
        try:
            self._worker.submit(run)
        except RuntimeError:   # closed
            pass

    def _put(self, up: Update):
        self._updates.put(up)

    def _protocol_error(self, exc: ProtocolError, **extra):
        if exc.code == TOKEN_EXPIRED:
            self._put(StateChanged(EXPIRED, "your session expired: sign in again"))
        elif exc.code == UNAUTHENTICATED:
            self._put(StateChanged(SIGNED_OUT, exc.message))
        # details (e.g. {"param": name} from workflows.run) let a host put the message beside the right field
        self._put(ErrorUpdate(exc.message, code=exc.code, details=exc.details, field=error_field(exc.details),
                              **extra))

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
        if client is not None and client.url == url and client.token and \
                client.state not in (SIGNED_OUT, EXPIRED, CONNECTED):
            # The engine is not reachable right now. Keep the client that holds the stored sign-in: it reconnects
            # by itself, and a new client without that token would come back signed out (issue 15, K2).
            raise ProtocolError(DISCONNECTED, f"cannot reach {url} now; the stored sign-in is kept and will be "
                                "used as soon as the engine answers")
        if client is None or client.url != url or client.state not in (SIGNED_OUT, EXPIRED, CONNECTED):
            client = self._new_client(url, None)
            client.connect()
        result = client.login(username, password, remember_me)
        self.tokens.set(url, result["token"])
        self._put(SignedIn(result.get("user"), result.get("expires_at")))

    def _sign_out(self):
        """End the sign-in on the engine (auth.logout: every copy of the token is refused from now on) when
        connected, and forget the stored token on this computer in any case."""
        revoked = False
        client = self.client
        if client is not None and client.state == CONNECTED:
            try:
                client.call("auth.logout", {}, timeout=10)
                revoked = True
            except ProtocolError:
                revoked = False
        self.tokens.delete(self.url)
        if client is not None:
            client.close()
            self.client = None
        if revoked:
            message = "signed out: the engine no longer accepts this sign-in, and this computer forgot it"
        else:
            message = ("signed out on this computer (its saved sign-in was deleted); not connected to the engine, "
                       "so a copy of the sign-in stays valid there until it expires")
        self._put(StateChanged(SIGNED_OUT, message))

    def _refresh_models(self):
        if self.client is None:
            return
        # One list from the engine, split for the host's pickers: a LoRA or an upscaler is no main model, and a
        # registered model whose file is gone can't be used.
        usable = [m for m in self.client.call("models.list", {})["models"] if not m.get("missing")]
        samplers = self.client.call("nodes.list", {}).get("samplers") or []
        self._put(ModelsChanged([m for m in usable if m.get("type") == "main"],
                                [m for m in usable if m.get("type") == "upscaler"],
                                [m for m in usable if m.get("type") == "lora"],
                                [m for m in usable if m.get("type") == "vae"], samplers,
                                [m for m in usable if m.get("type") in ("controlnet", "t2i_adapter")],
                                [m for m in usable if m.get("type") == "ip_adapter"]))

    def _download_model(self, rid: str, source: str, name: str | None, sha256: str | None, tag: Any):
        client = self.client
        try:
            if client is None:
                raise ProtocolError(DISCONNECTED, "not connected")
            args = {"source": source, **({"name": name} if name else {}), **({"sha256": sha256} if sha256 else {})}
            got = client.call("models.download", args, timeout=300)
        except ProtocolError as exc:
            self._put(DownloadProgress(None, "refused", source, error={"code": exc.code, "message": exc.message,
                                                                         "details": exc.details},
                                       request=rid, tag=tag))
            return
        self._put(DownloadProgress(got.get("download"), "started", got.get("source") or source, got.get("name"),
                                   got.get("resumed_from") or 0, got.get("total"), request=rid, tag=tag))

    def _generate(self, rid: str, params: dict, image, mask, tag: Any):
        for key, px in (("image", image), ("mask", mask)):
            if px is not None:
                params[key] = px
        self._queue(rid, tag, "generate", params)

    def _run_workflow(self, rid: str, name: str, values: dict, tag: Any, priority: int):
        self._queue(rid, tag, "workflows.run", {"name": name, "values": values, "priority": priority},
                    layers=values)

    def _queue(self, rid: str, tag: Any, op: str, args: dict, layers: dict | None = None):
        """Upload the Pixels values of `layers` (default: args itself), replace them with layer references,
        and send the op that queues a job. Events of the new job that arrive before its id are kept meanwhile."""
        client = self.client
        if client is None:
            self._put(ErrorUpdate("not connected", request=rid, tag=tag))
            return
        layers = args if layers is None else layers
        with self._lock:
            self._inflight += 1
        reply = None
        try:
            # top-level Pixels values, the images of generate's control/reference entries, its regions' masks
            slots = [(layers, key) for key in list(layers)]
            for key, field in (("control", "image"), ("reference", "image"), ("regions", "mask")):
                items = args.get(key) if op == "generate" else None
                if isinstance(items, list):   # copies: the caller's entries keep their Pixels
                    args[key] = items = [dict(it) if isinstance(it, dict) else it for it in items]
                    slots += [(it, field) for it in items if isinstance(it, dict) and field in it]
            for holder, key in slots:
                px = holder[key]
                if callable(px):
                    try:
                        px = px()
                    except ValueError as exc:   # the host's pixels cannot be sent (e.g. an empty mask)
                        self._put(ErrorUpdate(str(exc), request=rid, tag=tag))
                        return
                if isinstance(px, Pixels):
                    px = self._to_wire(px)
                    sha = px.sha256()
                    client.upload(px.data, sha)   # blob.has first: an unchanged layer is not re-sent
                    holder[key] = px.layer(sha)
            reply = client.call(op, args)
        except ProtocolError as exc:
            self._protocol_error(exc, request=rid, tag=tag)
        finally:
            with self._lock:
                self._inflight -= 1
                if reply is not None:
                    job = reply["job"]
                    # a live request with the inputs of an earlier live job (SPEC §7 "Live"): that job is the
                    # answer; if it had ended already, its end is read again for this request
                    again = bool(reply.get("unchanged")) and job not in self._mine and job not in self._fetching
                    self._mine[job] = tag
                    self._request_jobs[rid] = job
                    # under the lock: no event of this job can be handed over before JobAccepted
                    self._put(JobAccepted(rid, job, tag, reply.get("seed", args.get("seed"))))
                    for ev in self._early.pop(job, []):
                        self._job_event(ev)
                    if again:
                        self._submit(self._resync_one, job)
                if self._inflight == 0:
                    self._early.clear()

    def _refresh_workflows(self):
        if self.client is not None:
            self._put(WorkflowsChanged(self.client.call("workflows.list", {})["workflows"]))

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
        self._put(ImagesPage(page["images"], page["total"], page.get("next_cursor"), tag))

    def _recall(self, image: str, tag: Any):
        if self.client is None:
            return
        got = self.client.call("images.get", {"image": image})
        got.pop("thumbnail", None)
        self._put(Recalled(image, got.get("params"), forms.recalled(got.get("params")),
                           forms.recalled_workflow(got), got, tag))

    def _open_image(self, image: str, tag: Any):
        if self.client is None:
            return
        got = self.client.call("images.get", {"image": image})
        layer = dict(got["layer"], name=got.get("name") or layer_name(got), seed=got.get("seed"))
        self._put(JobResult(got.get("job"), tag, self._download(self.client, [layer]), image))

    def _call(self, op: str, args: dict, tag: Any):
        if self.client is not None:
            self._put(Reply(op, self.client.call(op, args), tag))

    def _to_wire(self, px: Pixels) -> Pixels:
        """Host order -> wire order (and back: the swap is its own inverse)."""
        if self.pixel_order == "bgra" and px.format == "rgba8":
            return Pixels(swap_red_blue(px.data), px.w, px.h, px.format, px.x, px.y)
        return px

    def _download(self, client: Client, layers: list[dict]) -> list[ResultLayer]:
        out = []
        for layer in layers:
            data = client.download(layer["sha256"])
            px = self._to_wire(Pixels(data, layer["w"], layer["h"], layer.get("format", "rgba8"),
                                      layer.get("x", 0), layer.get("y", 0)))
            out.append(ResultLayer(layer.get("name", "Paintbridge"), px, layer.get("seed")))
        return out

    def _fetch_results(self, job: str, layers: list[dict], tag: Any):
        """Download a finished job's layers (claimed into _fetching) and hand them over. A connection lost on
        the way puts the job back among the tracked ones: the resync after the reconnect fetches it again."""
        client = self.client
        try:
            if client is None:
                raise ProtocolError(DISCONNECTED, "not connected")
            out = self._download(client, layers)
        except ProtocolError as exc:
            with self._lock:
                self._fetching.pop(job, None)
                if exc.code in (DISCONNECTED, TIMEOUT):
                    self._mine[job] = tag
                    again = self.client is not None and self.client.state == CONNECTED
                else:
                    self._put(JobFailed(job, tag, exc.code, f"could not download the result: {exc.message}"))
                    return
            if again:   # reconnected while downloading: the reconnect's resync may have run already
                self._submit(self._resync)
            return
        with self._lock:
            self._fetching.pop(job, None)
            self._put(JobResult(job, tag, out))

    def _resync(self):
        """Re-read every tracked job (after a reconnect): deliver what was missed, re-send wanted cancels."""
        with self._lock:
            jobs = list(self._mine)
        for job in jobs:
            if not self._resync_one(job):
                return   # the connection dropped again: the next reconnect resyncs

    def _resync_one(self, job: str) -> bool:
        """job.get one tracked job and act on its status. False if the engine could not be asked."""
        client = self.client
        if client is None:
            return False
        try:
            got = client.call("job.get", {"job": job})
        except ProtocolError as exc:
            if exc.code != NOT_FOUND:
                return exc.code not in (DISCONNECTED, TIMEOUT)
            got = {"status": "gone"}
        status = got.get("status")
        with self._lock:
            if job not in self._mine:
                return True     # its final event arrived meanwhile
            tag = self._mine[job]
            if status == "completed":
                self._fetching[job] = self._claim(job)
                self._submit(self._fetch_results, job, got.get("layers") or [], tag)
            elif status == "failed":
                self._claim(job)
                err = got.get("error") or {}
                self._put(JobFailed(job, tag, err.get("code"), err.get("message", "failed")))
            elif status == "canceled":
                self._claim(job)
                self._put(JobCanceled(job, tag))
            elif status == "gone":
                self._claim(job)
                self._put(JobFailed(job, tag, NOT_FOUND, "the engine no longer knows this job"))
            elif status == "queued":
                self._put(JobQueued(job, tag))
            elif status == "running":
                prog = got.get("progress") or {}
                if prog.get("total"):
                    self._put(JobProgress(job, tag, prog.get("step") or 0, prog["total"], None, prog.get("tile"),
                                          prog.get("tiles")))
                else:
                    self._put(JobStarted(job, tag))
            resend = status in ("queued", "running") and job in self._cancel_wanted
        if resend:
            self._cancel(job)
        return True

    def _claim(self, job: str) -> Any:
        """The job reached its final state: stop tracking it (lock held). A result goes to _fetching."""
        tag = self._mine.pop(job)
        self._cancel_wanted.discard(job)
        return tag

    def _cancel_request(self, rid: str):
        """Cancel by request id. Runs after that request's submission (one worker): its job id is known now,
        unless it was refused, and then there is nothing to cancel."""
        with self._lock:
            job = self._request_jobs.get(rid)
        if job is not None:
            self._cancel(job)

    def _cancel(self, job: str):
        with self._lock:
            if job not in self._mine:
                return       # already final (its update is delivered or on its way)
            tag = self._mine[job]
            self._cancel_wanted.add(job)
        client = self.client
        try:
            if client is None:
                raise ProtocolError(DISCONNECTED, "not connected")
            status = client.call("job.cancel", {"job": job}).get("status", "")
        except ProtocolError as exc:
            if exc.code == NOT_FOUND:
                with self._lock:
                    if job in self._mine:
                        self._claim(job)
                        self._put(JobFailed(job, tag, NOT_FOUND, "the engine no longer knows this job"))
                return
            if exc.code in (DISCONNECTED, TIMEOUT):
                return       # wanted: re-sent by the resync after the reconnect
            raise
        self._put(CancelAcknowledged(job, tag, status))
        if status in ("completed", "failed", "canceled"):
            self._resync_one(job)   # its final event may have been missed: deliver the final state now

    # ---- reader-thread side: translate server events into updates --------------------------------------
    def _on_event(self, ev: Event):
        d = ev.data
        if ev.name == "client.state":
            limits = Limits.from_wire(d.get("limits")) if d["state"] == CONNECTED else None
            self._put(StateChanged(d["state"], d.get("message", ""), bool(d.get("lost")), d.get("retry_in"),
                                   d.get("user"), limits))
            if d["state"] == CONNECTED:
                self.refresh_models()
                with self._lock:
                    tracked = bool(self._mine)
                if tracked:
                    self._submit(self._resync)
        elif ev.name == "models.download.progress":
            self._put(DownloadProgress(d.get("download"), d.get("state") or "", d.get("source") or "", d.get("name"),
                                       d.get("bytes") or 0, d.get("total"), d.get("error"), d.get("model")))
            if d.get("state") == "done" and d.get("model"):
                self.refresh_models()   # the new model goes into the pickers
        elif ev.name == "auth.refreshed":
            self._submit(self.tokens.set, self.url, d["token"])
        elif ev.name in _JOB_EVENTS:
            job = d.get("job")
            with self._lock:
                if job in self._mine:
                    self._job_event(ev)
                elif self._inflight and isinstance(job, str):   # maybe the job a submission is waiting for
                    kept = self._early.setdefault(job, [])
                    if len(kept) < _EARLY_MAX:
                        kept.append(ev)
                # else: another app's or user's job: not ours to show or download
        else:
            self._put(EngineEvent(ev.name, d))

    def _job_event(self, ev: Event):
        """An event of a tracked job (lock held)."""
        d = ev.data
        job = d["job"]
        tag = self._mine[job]
        if ev.name == "job.queued":
            self._put(JobQueued(job, tag, d.get("position")))
        elif ev.name == "job.started":
            self._put(JobStarted(job, tag))
        elif ev.name == "job.progress":
            prev = d.get("preview")
            preview = None
            if isinstance(prev, dict) and prev.get("data") is not None:
                try:
                    preview = self._to_wire(Pixels(prev["data"], prev["w"], prev["h"], prev.get("format", "rgba8")))
                except (KeyError, ValueError):
                    preview = None
            self._put(JobProgress(job, tag, d.get("step") or 0, d.get("total") or 0, preview, d.get("tile"),
                                  d.get("tiles")))
        elif ev.name == "job.result":
            self._fetching[job] = self._claim(job)
            self._submit(self._fetch_results, job, d.get("layers", []), tag)
        elif ev.name == "job.failed":
            self._claim(job)
            err = d.get("error") or {}
            self._put(JobFailed(job, tag, err.get("code"), err.get("message", "failed")))
        elif ev.name == "job.canceled":
            self._claim(job)
            self._put(JobCanceled(job, tag, d.get("reason")))
