"""The docker's state, independent of its widgets: one Controller per Krita process.

It owns the shared Session (connecting at start-up with the stored token), drains it with a QTimer on Krita's
main thread, dispatches the typed updates and turns them into Qt signals the panels draw. Requests are built with
protocol.generate (one seed rule, the fields each mode uses); the jobs' states live in session.jobs, the gallery
in a protocol GalleryBrowser, a document's control layers, references and regions in steering.py. Documents are
touched only through host.py, on the main thread; pixels are copied there and converted on the Session's worker
thread.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from dataclasses import dataclass

from krita import Krita
from PyQt5.QtCore import QObject, QTimer, pyqtSignal

from ._vendor.protocol import forms, generate
from ._vendor.protocol.gallery import GalleryBrowser
from ._vendor.protocol.session import ResultLayer, Session
from ._vendor.protocol.updates import (DownloadProgress, ErrorUpdate, ImagesPage, JobAccepted, JobCanceled,
                                       JobFailed, JobProgress, JobQueued, JobResult, JobStarted, ModelsChanged,
                                       Recalled, Reply, SignedIn, StateChanged, WorkflowsChanged)

from . import host, live, settings, steering

MODES = [(m.name, m.label) for m in generate.MODES.values()]
log = logging.getLogger("paintbridge")
GALLERY_PAGE = 24        # images per gallery page
THUMB_SIZE = 96          # px, longest side of a gallery thumbnail
STEER_FIELDS = ("control", "reference", generate.REGIONS)   # errors shown beside the Control tab's lists
_QUIET_ERRORS = ("disconnected", "timeout")   # a failed connect: the status line already says it


@dataclass
class Result:
    job: str | None
    layer: ResultLayer
    doc: object
    mode: str
    mask: object = None    # inpaint: the selection (gray8 Pixels) the layer is kept to


class Controller(QObject):
    state_changed = pyqtSignal(str, str)        # state, the status line
    models_changed = pyqtSignal(list)
    progress = pyqtSignal(str, int, int, object)  # job, step, total, preview Pixels (BGRA) or None
    jobs_changed = pyqtSignal()                 # session.jobs changed: the job line / bar
    results_changed = pyqtSignal()
    busy_changed = pyqtSignal(bool)
    message = pyqtSignal(str)
    form_changed = pyqtSignal()                 # the Form was refilled (Use settings): show it again
    gallery_changed = pyqtSignal()
    workflows_changed = pyqtSignal(list)
    workflow_errors = pyqtSignal(dict)          # {field name: message}; "" for the workflow as a whole
    signed_in = pyqtSignal(str)                 # the user's name
    downloads_changed = pyqtSignal()            # session.downloads changed (admins' model downloads)
    steering_changed = pyqtSignal()             # the active document's controls / references / regions changed
    steer_errors = pyqtSignal(dict)             # {"control" | "reference" | "regions": message}; {} clears them

    def __init__(self):
        super().__init__()
        self.form = settings.Form()
        self.form.load()
        self.session = Session("krita", Krita.instance().version(), settings.config_dir(), self.form.url,
                               pixel_order="bgra")
        self.state = "disconnected"
        self.status = "disconnected"            # the status line: state, why, when it retries
        self.user = ""
        self.results: list[Result] = []
        self.gallery = GalleryBrowser(self.session, GALLERY_PAGE, THUMB_SIZE)
        self.workflows: list[dict] = []
        self.live = live.KritaLive(self)        # the Live tab's state (live.py)
        self.steering = steering.Steering(self.session)   # control layers, references, regions (steering.py)
        self._steer_seen = None                 # what the lists showed last (steer_check)
        self._ticks = 0
        self._retry_at: float | None = None
        self._state_message = ""
        self.timer = QTimer(self)
        self.timer.setInterval(50)
        self.timer.timeout.connect(self.drain)
        self.timer.start()
        self.countdown = QTimer(self)           # the status line counts down to the next reconnect
        self.countdown.setInterval(1000)
        self.countdown.timeout.connect(self._show_status)

    @property
    def models(self) -> list:
        return self.session.models

    @property
    def upscalers(self) -> list:
        return self.session.upscalers

    @property
    def loras(self) -> list:
        return self.session.loras

    @property
    def vaes(self) -> list:
        return self.session.vaes

    @property
    def samplers(self) -> list:
        return self.session.samplers

    @property
    def is_admin(self) -> bool:
        return self.session.is_admin

    def model_entry(self, name: str) -> dict:
        return generate.model_entry(self.session.models, name)

    # ---- model downloads (admins) ---------------------------------------------------------------------
    def download_model(self, source: str, name: str = "") -> str | None:
        """Have the engine download a model; session.downloads (downloads_changed) shows its progress."""
        if not source.strip():
            self.message.emit("Give a URL, a Hugging Face OWNER/REPO/FILE or starter:NAME to download.")
            return None
        rid = self.session.download_model(source, name or None)
        self.downloads_changed.emit()
        return rid

    def downloads(self) -> list:
        return list(self.session.downloads.rows.values())

    @property
    def active_jobs(self) -> dict:
        """job id (or request id before it is known) -> tag, of the jobs still running."""
        return {r.job or r.request: r.tag for r in self.session.jobs.active()}

    # ---- account (none blocks) ---------------------------------------------------------------------------
    def auto_connect(self) -> bool:
        """At start-up: connect with the token stored for the server, if there is one."""
        if self.state != "disconnected" or self.session.client is not None:
            return False
        if not self.session.tokens.get(self.form.url):
            return False
        self.connect_server()
        return True

    def connect_server(self, url: str | None = None, token: str | None = None):
        if url:
            self.form.url = url
        self.form.save()
        self.session.connect(self.form.url, token or None)

    def sign_in(self, url: str, username: str, password: str, remember: bool) -> bool:
        """Sign in with a password. While the engine cannot be reached, a stored sign-in for this server is
        kept (the Session keeps retrying with it) instead of being replaced by a sign-in that cannot happen:
        returns False with a message then."""
        self.form.url, self.form.username = url, username
        self.form.save()
        if (self.session.state in ("disconnected", "connecting") and self.session.client is not None
                and self.session.url == url and self.session.tokens.get(url)):
            self.message.emit("The engine cannot be reached: your saved sign-in is kept and used as soon as it "
                              "is back. Sign in with a password once it is running.")
            return False
        self.session.login(username, password, remember, url=url)
        return True

    def sign_out(self):
        """End the sign-in on the engine (every copy of the token is refused from then on) and forget the token
        saved on this computer; the Session's signed_out state says which of the two happened."""
        self.session.sign_out()
        self.message.emit("Signing out…")

    # ---- generate ---------------------------------------------------------------------------------------
    def generate(self) -> str | None:
        """Read the document and queue a job. Returns the request id, or None (with a message) if refused."""
        f = self.form
        f.save()
        self.steer_errors.emit({})
        try:
            doc = host.active_document()
            x, y, w, h = host.request_region(doc, f.mode)
            values = f.values()
            values.update(width=w, height=h, x=x, y=y)
            # checked whole (steering included, its images not read yet) before the canvas may grow
            params = self._generate_args(doc, values, self.steering.request(doc, f.mode, (x, y, w, h)))
            mode = generate.MODES[f.mode]
            image = mask = None
            if mode.image:
                keep = None
                margins = (f.extend_left, f.extend_top, f.extend_right, f.extend_bottom)
                if f.mode == "outpaint" and any(margins):
                    # grown once: another Generate fills again instead of growing again
                    keep = (f.extend_left, f.extend_top, doc.width(), doc.height())
                    host.extend_canvas(doc, *margins)
                    f.extend_left = f.extend_top = f.extend_right = f.extend_bottom = 0
                    f.save()
                    self.form_changed.emit()
                    x, y, w, h = host.request_region(doc, f.mode)
                image = host.snapshot(doc, x, y, w, h, f.source, keep)
            if mode.mask:
                mask = host.read_selection_mask(doc, x, y, w, h)
            sent: list = []   # (hash, layer id) of each control/reference image and region mask, for Use settings
            steer = self.steering.request(doc, f.mode, (x, y, w, h), sent)
            if steer["control"] or steer["reference"] or steer["regions"]:
                seed = {"seed": params["seed"]} if "seed" in params else {}   # the random one already picked
                params = {**self._generate_args(doc, values, steer), **seed}
        except (host.CanvasError, generate.FieldError) as exc:
            self._refused(exc)
            return None
        self.message.emit("")
        rid = self.session.generate(params, image, mask, tag={"doc": doc, "mode": f.mode, "mask": mask,
                                                              "sent": sent})
        self._jobs_changed()
        return rid

    def _generate_args(self, doc, values: dict, steer: dict) -> dict:
        return generate.generate_args(self.form.mode, {**values, "control": steer["control"],
                                                       "reference": steer["reference"]},
                                      limits=self.session.limits, loras=self.session.loras,
                                      upscalers=self.session.upscalers, samplers=self.session.samplers,
                                      vaes=self.session.vaes, models=self.session.models,
                                      regions=steer["regions"],
                                      source={"app": "krita", "document": host.document_key(doc)})

    def _refused(self, exc: Exception):
        """A request refused before sending: the message line, and beside the steering list it is about."""
        self.message.emit(str(exc))
        where = getattr(exc, "field", "")
        if where in STEER_FIELDS:
            self.steer_errors.emit({where: str(exc)})

    # ---- control layers, references, regions (steering.py) -----------------------------------------------
    def steer_document(self):
        """The document the Control tab shows (the active one, whatever its colour model), or None."""
        return Krita.instance().activeDocument()

    def steer_entries(self) -> list:
        return self.steering.entries(self.steer_document())

    def steer_models(self) -> list[tuple[str, str]]:
        """(name, type) of the engine's ControlNets / T2I-Adapters, then its IP-Adapters."""
        return [(m["name"], m.get("type") or "") for m in self.session.controls + self.session.references]

    def add_steering(self, model: str, values: dict, node=None) -> bool:
        """The active layer (or `node`) as a control or reference; the list shows it. False with a message."""
        self.steer_errors.emit({})
        try:
            kind = self.steering.add(host.active_document(), model, values, node)
        except (host.CanvasError, generate.FieldError) as exc:
            self._refused(exc if getattr(exc, "field", "") else generate.FieldError("control", str(exc)))
            return False
        self.message.emit(f"Added as a {'control' if kind == 'controls' else 'reference'}")
        self.steer_check(force=True)
        return True

    def set_region(self, prompt: str, negative: str = "", node=None) -> bool:
        self.steer_errors.emit({})
        try:
            name = self.steering.set_region(host.active_document(), prompt, negative, node)
        except (host.CanvasError, generate.FieldError) as exc:
            self._refused(exc if getattr(exc, "field", "") else generate.FieldError(generate.REGIONS, str(exc)))
            return False
        self.message.emit(f"“{name}” is a region")
        self.steer_check(force=True)
        return True

    def remove_steering(self, kind: str, index: int) -> bool:
        doc = self.steer_document()
        if doc is None or not self.steering.remove(doc, kind, index):
            return False
        self.steer_check(force=True)
        return True

    def steer_check(self, force: bool = False):
        """Redraw the lists when the document, or a listed layer's name, visibility or existence changed (a few
        Krita calls a second from the drain timer; no pixels)."""
        doc = self.steer_document()
        entries = self.steering.entries(doc) if doc is not None else []
        seen = (host.document_key(doc) if doc is not None else None,
                [(e.kind, e.index, e.layer, e.name, e.exists, e.shown, sorted(e.settings.items())) for e in entries])
        if force or seen != self._steer_seen:
            self._steer_seen = seen
            self.steering_changed.emit()

    def cancel(self):
        self.session.cancel_all()
        self._jobs_changed()

    # ---- results ------------------------------------------------------------------------------------------
    def apply(self, index: int, replace: bool = False):
        if not 0 <= index < len(self.results):
            return None
        res = self.results[index]
        if not self._place(res, replace):
            return None
        del self.results[index]
        self.results_changed.emit()
        return True

    def opens_document(self, index: int) -> bool:
        """Apply puts this result into a new document (an Upscale, or a run made without one)."""
        if not 0 <= index < len(self.results):
            return False
        res = self.results[index]
        return res.mode == "upscale" or res.doc is None

    def _place(self, res: Result, replace: bool = False) -> bool:
        """Put one result (or gallery image) into its document: the one code path for both. When that document
        was closed, into the active one (saying so), or nowhere with the reason."""
        try:
            if res.mode == "upscale" or res.doc is None:   # no document to go into (a workflow run without one)
                host.new_document(res.layer.name, res.layer.pixels)
                return True
            doc, note = res.doc, ""
            if not host.is_open(doc):
                try:
                    doc = host.active_document()
                except host.CanvasError:
                    self.message.emit("The document this result was made for is closed: open a document to "
                                      "apply it there.")
                    return False
                note = f"The document this result was made for is closed: added to “{host.document_name(doc)}”."
            if replace:
                host.replace_in_active_layer(doc, res.layer.name, res.layer.pixels)
            else:
                host.add_result_layer(doc, res.layer.name, res.layer.pixels, res.mask)
            if note:
                self.message.emit(note)
        except host.CanvasError as exc:
            self.message.emit(str(exc))
            return False
        except Exception as exc:   # never let it escape into a Qt slot: PyQt aborts Krita on that
            log.exception("placing a result failed")
            self.message.emit(f"could not place the result: {exc}")
            return False
        return True

    def discard(self, index: int):
        if 0 <= index < len(self.results):
            del self.results[index]
            self.results_changed.emit()

    # ---- gallery ----------------------------------------------------------------------------------------
    def refresh_gallery(self, this_document: bool = False, starred: bool = False, q: str = "") -> bool:
        """Reload the gallery from its first page with these filters. False (with a message) if refused."""
        document = None
        if this_document:
            try:
                document = host.document_key(host.active_document())
            except host.CanvasError as exc:
                self.message.emit(str(exc))
                return False
        self.gallery.reload(query=q, starred_only=starred, document=document)
        self.gallery_changed.emit()
        return True

    def load_more_images(self) -> bool:
        """The next page of the shown list (appended)."""
        asked = self.gallery.load_more()
        if asked:
            self.gallery_changed.emit()
        return asked

    def gallery_image(self, image_id: str) -> dict | None:
        return self.gallery.find(image_id)

    def use_settings(self, image_id: str):
        """Refill the generate form from an image's parameters (arrives as form_changed)."""
        self.session.recall(image_id, tag={"recall": image_id})

    def add_image(self, image_id: str) -> bool:
        """Download a gallery image and add it to the active document as a layer in the Paintbridge group,
        at the position it was made for."""
        try:
            doc = host.active_document()
        except host.CanvasError as exc:
            self.message.emit(str(exc))
            return False
        self.session.open_image(image_id, tag={"doc": doc, "mode": "gallery", "place": True})
        return True

    def star_image(self, image_id: str, starred: bool = True):
        self.gallery.star(image_id, starred)

    def _recalled(self, up: Recalled):
        values, notes = generate.recalled_fields(up.values, up.summary)
        f = self.form
        if "lora" not in values:
            values["lora"], values["lora_weight"] = "", f.lora_weight
        f.set_values(values)
        f.save()
        self.form_changed.emit()
        if f.model and self.models and f.model not in [m["name"] for m in self.models]:
            notes.append(f"model {f.model!r} is not on this engine")
        doc = self.steer_document()
        if up.values.get("mode") and doc is not None:   # a generate image: its controls, references and regions
            notes += self.steering.recall(doc, up.values)
            self.steer_check(force=True)
        self.message.emit(f"Settings of image {up.image} recalled" + (f" ({'; '.join(notes)})" if notes else ""))

    # ---- workflows --------------------------------------------------------------------------------------
    def refresh_workflows(self):
        self.session.refresh_workflows()

    def workflow(self, name: str) -> dict | None:
        return next((w for w in self.workflows if w["name"] == name), None)

    def workflow_fields(self, name: str) -> list:
        wf = self.workflow(name)
        return forms.fields(wf) if wf is not None else []

    def run_workflow(self, name: str, raw: dict) -> dict:
        """Check the form and queue the workflow. raw: widget values by field name; an image field gives
        "layer" or "composite", a mask field anything (the selection is read). Returns {field: message} for
        each mistake (also emitted as workflow_errors), and then sends nothing."""
        wf = self.workflow(name)
        if wf is None:
            errors = {"": "choose a workflow"}
            self.workflow_errors.emit(errors)
            return errors
        form = forms.fields(wf)
        raw = dict(raw)
        errors, doc = {}, None
        if any(f.is_layer for f in form):
            try:
                doc = host.active_document()
            except host.CanvasError as exc:
                errors[""] = str(exc)
            for f in form:
                if f.is_layer and doc is not None:
                    try:
                        raw[f.name] = host.read_workflow_input(doc, f.type, raw.get(f.name) or "layer")
                    except host.CanvasError as exc:
                        errors[f.name] = str(exc)
        values, bad = forms.collect(form, raw)
        errors = {**bad, **errors}
        if errors:
            self.workflow_errors.emit(errors)
            return errors
        if doc is None:
            try:
                doc = host.active_document()
            except host.CanvasError:
                doc = None   # nothing open: Apply puts its results in a new document
        self.workflow_errors.emit({})
        self.message.emit("")
        self.session.run_workflow(name, values, tag={"doc": doc, "mode": "workflow", "workflow": name})
        self._jobs_changed()
        return {}

    # ---- the main-thread drain -------------------------------------------------------------------------
    def drain(self):
        for up in self.session.poll():
            try:
                if not self.live.handle(up):   # live jobs' updates are the Live tab's
                    self._handle(up)
            except Exception as exc:   # a QTimer slot must not raise: PyQt would abort Krita
                log.exception("handling a %s update failed", up.kind)
                self.message.emit(f"Paintbridge: could not handle {up.kind}: {type(exc).__name__}: {exc}")
        try:
            self.live.tick()
        except Exception as exc:
            log.exception("live mode failed")
            self.message.emit(f"Paintbridge live mode: {type(exc).__name__}: {exc}")
        self._ticks += 1
        if self._ticks % 20 == 0:   # once a second: the Control tab follows layer edits and document switches
            try:
                self.steer_check()
            except Exception:
                log.exception("reading the document's controls failed")

    def _jobs_changed(self):
        self.session.jobs.forget_finished(keep=20)
        self.jobs_changed.emit()
        self.busy_changed.emit(bool(self.session.jobs.active()))

    def _show_status(self):
        text = self.state.replace("_", " ")
        if self._state_message and self._state_message != text:
            text += f": {self._state_message}"
        if self._retry_at is not None:
            left = max(0, round(self._retry_at - time.monotonic()))
            text += f" (retrying in {left} s)" if left else " (retrying now…)"
        else:
            self.countdown.stop()
        self.status = text
        self.state_changed.emit(self.state, text)

    def _handle(self, up):
        if isinstance(up, StateChanged):
            was = self.state
            self.state = up.state
            msg = up.message
            if up.state == "expired":
                msg = "Your session expired. Sign in again (your prompt and settings are kept)."
            elif up.state == "signed_out" and msg.startswith("signed out"):   # the answer to Sign out
                self.message.emit(msg[0].upper() + msg[1:] + ".")
            elif up.state == "disconnected" and up.lost:
                msg = "connection lost"
            elif up.state == "disconnected" and msg.startswith("cannot reach"):
                msg = f"the engine at {self.session.url} is not reachable (is it running?)"
            elif up.state == "connected":
                self.user = (up.user or {}).get("name", "") or self.user
                msg = f"signed in as {self.user}" if self.user else ""
            self._state_message = msg
            self._retry_at = (time.monotonic() + up.retry_in
                              if up.state == "disconnected" and up.retry_in else None)
            if self._retry_at is not None:
                self.countdown.start()
            if up.state == "connected" and was != "connected":
                self.message.emit("")   # an older line (a refused sign-in…) must not stand under the new state
            self._show_status()
            if up.state != was:
                self.downloads_changed.emit()   # the download tab is for admins: shown once connected as one
            if up.state == "connected" and was != "connected":
                self.refresh_workflows()
                self.signed_in.emit(self.user)
            self.jobs_changed.emit()
        elif isinstance(up, SignedIn):
            self.user = (up.user or {}).get("name", "?")
        elif isinstance(up, ModelsChanged):
            names = [m["name"] for m in up.models]
            if names and self.form.model not in names:
                self.form.model = names[0]
            if self.form.upscaler not in [m["name"] for m in up.upscalers]:
                self.form.upscaler = ""
            if self.form.lora not in [m["name"] for m in up.loras]:
                self.form.lora = ""
            if self.form.vae not in [v["name"] for v in generate.vaes_for(up.vaes, up.models, self.form.model)]:
                self.form.vae = ""
            if up.samplers and generate.sampler_entry(up.samplers, self.form.scheduler) is None:
                self.form.scheduler = generate.DEFAULT_SCHEDULER
            self.models_changed.emit(up.models)
        elif isinstance(up, DownloadProgress):
            self.session.downloads.forget_finished(keep=5)
            self.downloads_changed.emit()
        elif isinstance(up, JobAccepted):
            tag = _tag(up)
            if tag.get("sent"):   # filled by the worker before the request went out
                self.steering.note_sent(tag.get("doc"), tag["sent"])
            self._jobs_changed()
        elif isinstance(up, (JobQueued, JobStarted)):
            self.jobs_changed.emit()
        elif isinstance(up, JobProgress):
            self.progress.emit(up.job, up.step or 0, up.total or 0, up.preview)
            self.jobs_changed.emit()
        elif isinstance(up, JobResult) and _tag(up).get("place"):   # Add to document (a gallery image)
            tag = _tag(up)
            placed = [layer.name for layer in up.layers
                      if self._place(Result(up.job, layer, tag.get("doc"), tag.get("mode", "gallery")))]
            if placed:
                self.message.emit(f"Added {placed[0]!r} to the document")
        elif isinstance(up, JobResult):
            tag = _tag(up)
            mask = tag.get("mask") if tag.get("mode") == "inpaint" else None
            for layer in up.layers:
                self.results.append(Result(up.job, layer, tag.get("doc"), tag.get("mode", "txt2img"), mask))
            self.results_changed.emit()
            self._jobs_changed()
        elif isinstance(up, (JobFailed, JobCanceled)):
            self._jobs_changed()   # the job line says "failed: …" / "canceled"
        elif isinstance(up, ErrorUpdate):
            self.gallery.failed(up)
            tag = _tag(up)
            if up.request or tag or up.code not in _QUIET_ERRORS:
                self.message.emit(up.message or "error")
            if tag.get("workflow"):   # the engine refused the values: show it at the field it names
                self.workflow_errors.emit({up.field: up.message or "error"})
            elif up.field in STEER_FIELDS:   # a control, reference or region the engine refused
                self.steer_errors.emit({up.field: up.message or "error"})
            self._jobs_changed()
            self.gallery_changed.emit()
        elif isinstance(up, ImagesPage):
            if self.gallery.accept(up) is not None:
                self.gallery_changed.emit()
        elif isinstance(up, Recalled):
            self._recalled(up)
        elif isinstance(up, Reply):
            if self.gallery.replied(up):
                self.gallery_changed.emit()
        elif isinstance(up, WorkflowsChanged):
            self.workflows = list(up.workflows)
            self.workflows_changed.emit(self.workflows)


def guarded(fn):
    """fn as a Qt slot that never raises: PyQt aborts Krita on an exception that leaves a slot, so it is logged
    and shown in the docker's message line instead. Extra signal arguments fn does not take are dropped."""
    try:
        params = inspect.signature(fn).parameters.values()
        takes = None if any(p.kind == p.VAR_POSITIONAL for p in params) else len(
            [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):   # a builtin without a signature: give it everything
        takes = None

    @functools.wraps(fn)
    def slot(*args):
        try:
            return fn(*(args if takes is None else args[:takes]))
        except Exception as exc:
            log.exception("Paintbridge: %s failed", getattr(fn, "__name__", fn))
            controller().message.emit(f"Paintbridge: something went wrong: {type(exc).__name__}: {exc}")
    return slot


def _tag(up) -> dict:
    tag = getattr(up, "tag", None)
    return tag if isinstance(tag, dict) else {}


_CONTROLLER: Controller | None = None


def controller() -> Controller:
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = Controller()
    return _CONTROLLER
