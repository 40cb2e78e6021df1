"""One procedure run's connection to the engine: owns the shared Session, drains Session.poll() on GIMP's main
thread from a GLib main loop, builds requests with protocol.generate and follows jobs through session.jobs.

A run is short-lived (GIMP starts the plug-in process for each procedure call), so the Controller connects with
the stored sign-in (or $PAINTBRIDGE_TOKEN for scripts), does one thing and closes. Progress goes to GIMP's bar and
to a progress view the entry hands in (panels.ProgressDialog, interactive runs only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, GLib  # noqa: E402

import settings  # noqa: E402
from protocol import default_url, generate  # noqa: E402
from protocol.session import Session  # noqa: E402
from protocol.updates import (DownloadProgress, ErrorUpdate, JobCanceled, JobFailed, JobResult,  # noqa: E402
                              ModelsChanged, SignedIn, StateChanged)

PLUGIN_VERSION = "0.1.0"


class Failure(Exception):
    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = Gimp.PDBStatusType.EXECUTION_ERROR if status is None else status


def config_dir() -> str:
    return os.path.join(Gimp.directory(), "paintbridge")


def readable(message: str, url: str) -> str:
    """An engine-down message a person can act on, instead of a raw socket error."""
    text = message or ""
    if "Errno 111" in text or "refused" in text.lower() or "cannot reach" in text.lower():
        return f"Paintbridge: cannot reach the engine at {url}: is it running? (connection refused)"
    return f"Paintbridge: {text}" if text else f"Paintbridge: cannot reach the engine at {url}"


# ---- sizes and values (no GIMP calls) -----------------------------------------------------------------------------

# the model's native size and the size Generate renders a region at (hires above the native area):
# protocol.generate's, once for every host
native_size = generate.native_size
generation_size = generate.generation_size

render_size = generate.render_size


# ---- the controller --------------------------------------------------------------------------------------------------

class Controller:
    def __init__(self, interactive: bool, url_arg: str = "", label: str = "Paintbridge", progress=None):
        self.config_dir = config_dir()
        self.prefs = settings.load(self.config_dir)
        self.url = settings.resolve_url(url_arg, self.prefs, default_url())
        self.interactive = interactive
        self.label = label
        self.progress = progress          # a view with show(text, fraction, preview), cancel_requested, close()
        self.session = Session("gimp", f"{Gimp.version()} plugin {PLUGIN_VERSION}", self.config_dir, url=self.url)
        self.job = None
        self.user = None
        self._cancel_sent = False
        self._guard = None

    def close(self):
        self._guard_done()
        if self.progress is not None:
            self.progress.close()
        self.session.close()

    # -- GIMP's own Cancel kills this process: a guard process cancels the engine job then (job_guard.py) --
    def _guard_start(self, match: dict):
        """Before the request is sent: a killed run can then cancel its job even before it knew the job's id (the
        guard finds it by `match`: request fields the engine records)."""
        client = self.session.client
        try:
            self._guard = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "job_guard.py")],
                                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
            self._guard_say({"url": self.url, "token": getattr(client, "token", None), "match": match})
        except OSError as exc:   # no guard: everything else still works; only GIMP's Cancel would not reach the job
            sys.stderr.write(f"paintbridge: no job guard ({exc})\n")
            self._guard = None

    def _guard_job(self, job):
        self._guard_say({"job": job})

    def _guard_say(self, line: dict):
        if self._guard is not None:
            try:
                self._guard.stdin.write((json.dumps(line) + "\n").encode())
                self._guard.stdin.flush()
            except OSError as exc:   # the guard is gone: only GIMP's Cancel would not reach the job
                sys.stderr.write(f"paintbridge: job guard lost ({exc})\n")
                self._guard = None

    def _guard_done(self):
        guard, self._guard = self._guard, None
        if guard is None:
            return
        try:
            guard.stdin.write(b'{"done": true}\n')
            guard.stdin.close()
            guard.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    # -- the loop --
    def pump(self, handle, timeout, what):
        """Spin GLib until handle(update) returns True; raises what it raises, or Failure on timeout."""
        loop = GLib.MainLoop()
        outcome = {}
        deadline = time.monotonic() + timeout

        def tick():
            try:
                if self.progress is not None and self.progress.cancel_requested and not self._cancel_sent:
                    self._cancel_sent = True
                    self.session.cancel_all()
                for up in self.session.poll():
                    if handle(up):
                        loop.quit()
                        return False
                if time.monotonic() > deadline:
                    raise Failure(f"Paintbridge: {what} timed out after {timeout:.0f}s")
            except BaseException as exc:  # noqa: BLE001 - carried out of the loop and re-raised below
                outcome["error"] = exc
                loop.quit()
                return False
            return True

        GLib.timeout_add(30, tick)
        loop.run()
        if "error" in outcome:
            raise outcome["error"]

    def connect(self, token: str | None = None):
        """Connect with the stored sign-in (or token) and wait for the engine's models."""
        self.session.connect(self.url, token)
        state = {}

        def handle(up):
            if isinstance(up, StateChanged):
                if up.state == "connected":
                    state["connected"] = True
                    self.user = (up.user or {}).get("name") if isinstance(up.user, dict) else up.user
                elif up.state in ("signed_out", "expired"):
                    raise Failure(f"Paintbridge: not signed in to {self.url}: {up.message or up.state}. "
                                  f"Use Filters > Paintbridge > Sign In first.")
                elif up.state == "disconnected" and up.message and not state.get("connected"):
                    raise Failure(readable(up.message, self.url))
            elif isinstance(up, ModelsChanged):
                return state.get("connected", False)
            elif isinstance(up, ErrorUpdate):
                raise Failure(readable(up.message, self.url))
            return False

        self.pump(handle, 30, f"connecting to {self.url}")

    def sign_in(self, username: str, password: str, remember: bool) -> str:
        self.session.login(username, password, remember, url=self.url)
        got = {}

        def handle(up):
            if isinstance(up, SignedIn):
                got["user"] = (up.user or {}).get("name") if isinstance(up.user, dict) else up.user
                return True
            if isinstance(up, ErrorUpdate):
                raise Failure(f"Paintbridge: sign-in failed: {up.message}")
            if isinstance(up, StateChanged) and up.state == "disconnected" and up.message:
                raise Failure(readable(up.message, self.url))
            return False

        self.pump(handle, 30, "signing in")
        self.user = got.get("user") or username
        return self.user

    def sign_out(self) -> str:
        """End the stored sign-in on the engine (auth.logout) and delete it here; when the engine cannot be
        reached, only delete it. Returns what happened, for the person."""
        try:
            self.connect()
        except Failure:
            pass   # not connected: Session.sign_out still deletes the stored token, and its message says so
        self.session.sign_out()
        got = self.wait_for(StateChanged, "signing out", 30, lambda up: up.state == "signed_out")
        return got.message

    def download(self, source: str):
        """Have the engine download a model (admins) and follow it to the end on GIMP's progress bar and the
        progress view. Returns (its final downloads row, the progress lines seen)."""
        rid = self.session.download_model(source)
        seen = []
        Gimp.progress_init(self.label)

        def handle(up):
            row = self.session.downloads.rows.get(rid)
            if row is None or not isinstance(up, DownloadProgress):
                return False
            text = f"{self.label}: {row.describe()}"
            if not seen or seen[-1] != text:
                seen.append(text)
                Gimp.progress_set_text(text)
            if row.fraction is not None:
                Gimp.progress_update(row.fraction)
            else:
                Gimp.progress_pulse()
            if self.progress is not None:
                self.progress.show(text, row.fraction, None)
            return not row.active

        try:
            self.pump(handle, settings.timeout_seconds(), "the download")
        finally:
            Gimp.progress_end()
        return self.session.downloads.rows[rid], seen

    def wait_for(self, cls, what, timeout=60, pred=lambda up: True):
        """Pump until an update of class cls (matching pred) arrives; an error update fails with its message."""
        got = {}

        def handle(up):
            if isinstance(up, cls) and pred(up):
                got["up"] = up
                return True
            if isinstance(up, ErrorUpdate):
                raise Failure(f"Paintbridge: {what}: {up.message}")
            if isinstance(up, (JobFailed, JobCanceled)) and cls is JobResult:
                raise Failure(f"Paintbridge: {what}: {getattr(up, 'message', '') or 'canceled'}")
            if isinstance(up, StateChanged) and up.state in ("signed_out", "expired"):
                raise Failure(f"Paintbridge: {up.message or 'signed out'}")
            return False

        self.pump(handle, timeout, what)
        return got["up"]

    # -- requests --
    def model_entry(self, name: str) -> dict | None:
        return next((m for m in self.session.models if isinstance(m, dict) and m.get("name") == name), None)

    def params(self, mode: str, values: dict, document: str = "", regions: list | None = None) -> dict:
        """generate arguments for the form values (canonical field names; control/reference lists as
        protocol.generate.steer_args takes them) and the image's regions (region_args); Failure for a value to fix."""
        values = dict(values)
        if generate.field_applies(mode, "model", bool(values.get("refine"))):
            values["model"] = settings.pick_model(values.get("model") or "", self.prefs, self.session.models)
            if not values["model"]:
                raise Failure("Paintbridge: the engine offers no model; add one on the engine first")
        try:
            return generate.generate_args(mode, values, limits=self.session.limits, loras=self.session.loras,
                                          upscalers=self.session.upscalers, samplers=self.session.samplers,
                                          vaes=self.session.vaes, models=self.session.models,
                                          source={"app": "gimp", "document": document}, regions=regions)
        except generate.FieldError as exc:
            where = f"{exc.field.replace('_', ' ')}: " if exc.field and not exc.message.startswith(exc.field) else ""
            raise Failure(f"Paintbridge: {where}{exc.message}", Gimp.PDBStatusType.CALLING_ERROR) from None

    def generate(self, params, image=None, mask=None):
        """Submit, follow the job, return its ResultLayers."""
        # the seed is picked here (protocol.generate), so with the prompt and the document it names this request
        self._guard_start({k: params[k] for k in ("mode", "seed", "prompt", "source") if k in params})
        rid = self.session.generate(params, image, mask, tag="gimp")
        return self._follow(rid)

    def run_workflow(self, name, values):
        plain = {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool))}
        self._guard_start({"workflow": name, "values": plain})
        rid = self.session.run_workflow(name, values, tag="gimp")
        return self._follow(rid)

    def _follow(self, rid):
        Gimp.progress_init(self.label)
        result = {}
        last = {}

        def handle(up):
            row = self.session.jobs.rows.get(rid)   # poll() has applied up to it: queued, starting, step n
            if row is not None:
                if row.job and self.job is None:
                    self._guard_job(row.job)   # from here the guard cancels by id
                self.job = row.job or self.job
                self._show(row, last)
            if isinstance(up, ErrorUpdate) and up.request in (None, rid):
                raise Failure(f"Paintbridge: {up.message}")
            if getattr(up, "job", None) is None or up.job != self.job:
                if not (isinstance(up, StateChanged) and up.state in ("signed_out", "expired")):
                    return False
                raise Failure(f"Paintbridge: {up.message or 'signed out'}")
            if isinstance(up, JobResult):
                result["layers"] = up.layers
                return True
            if isinstance(up, JobFailed):
                if up.code == "not_found":
                    raise Failure("Paintbridge: the engine no longer knows this job")
                raise Failure(f"Paintbridge: the job failed: {up.message} ({up.code})")
            if isinstance(up, JobCanceled):
                raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
            return False

        try:
            self.pump(handle, settings.timeout_seconds(), "the job")
        finally:
            self._guard_done()
            Gimp.progress_end()
        return result["layers"]

    def _show(self, row, last):
        """The job's state on GIMP's progress bar and in the progress view: queued, loading, step n of m."""
        text = f"{self.label}: {row.describe()}"
        if text != last.get("text"):
            last["text"] = text
            Gimp.progress_set_text(text)
        if row.total:
            Gimp.progress_update(row.fraction)
        else:
            Gimp.progress_pulse()
        if self.progress is not None:
            self.progress.show(text, row.fraction if row.total else None, row.preview)
