"""Live painting, the client side every plug-in shares: when to send, what to show, how to stop.

A host tells the LiveController when its canvas (or the live settings) changed - from its own change
notifications, never by reading pixels on a timer - and calls `tick()` from the timer that already drains its
Session. The controller sends one live request per burst of changes: once the canvas has been quiet for
`debounce_s`, or after `max_wait_s` of continuous change (a long stroke still gets results), and never while its
previous request is still being sent (the next one goes when that one is accepted, with the newest canvas).
Pixels are read through the host's `read` callable only when a request goes out; the Session hashes and
uploads them on its worker thread, and the engine starts nothing for inputs identical to the newest live job's
(SPEC §7 "Live": an undo back to the same pixels costs one upload check, no generation). The engine keeps at most
one queued live job per connection; a superseded one ends canceled and is not shown.

A refused request or a failed job pauses live mode with the message (a missing preset LoRA must not be retried in
a loop); a change of the live settings, or start(), resumes it. stop() cancels every live job still queued or
running, so nothing of it is left on the engine.
"""

from __future__ import annotations

import time
from typing import Callable

from .updates import ErrorUpdate, JobAccepted, JobCanceled, JobFailed, JobProgress, JobResult

OFF, WATCHING, WAITING, BUSY, PAUSED = "off", "watching", "waiting", "busy", "paused"


class LiveController:
    def __init__(self, session, read: Callable[[], tuple], debounce_s: float = 0.3, max_wait_s: float = 1.0,
                 preempt: bool = False, clock: Callable[[], float] = time.monotonic):
        """read(): the request for the canvas now, as (params, image, mask) for Session.generate (image/mask:
        Pixels or callables run on the worker thread); raise ValueError (or a host error) with a message to pause
        live mode instead. Called on the host's main thread, from tick()."""
        self.session = session
        self.read = read
        self.debounce_s, self.max_wait_s, self.preempt = debounce_s, max_wait_s, preempt
        self.clock = clock
        self.on = False
        self.paused = ""              # why live mode is paused ("" = not paused)
        self.result: list = []        # the newest result's ResultLayers (host pixel order)
        self.result_job: str | None = None
        self.preview = None           # the newest progress preview (Pixels) of the running live job
        self.progress = (0, 0)        # (step, total) of the running live job
        self.sent = 0                 # live requests sent (tests and the bench count them)
        self.superseded = 0           # of those, replaced before they ran
        self._dirty_since: float | None = None
        self._last_change = 0.0
        self._sending: str | None = None      # the request id whose job id is not known yet
        self._mine: dict[str, str | None] = {}   # request id -> job id, of live requests not finished
        self._index: dict[str, int] = {}      # request id -> its number (a late older result is not shown)
        self._shown = -1                      # the number of the result shown

    # ---- what the host calls (main thread) ------------------------------------------------------------
    def start(self) -> None:
        """Turn live mode on: the canvas as it is now is sent on the next tick."""
        self.on, self.paused = True, ""
        self._dirty_since = self._last_change = float("-inf")   # due now: no need to wait for quiet

    def stop(self) -> None:
        """Turn live mode off and cancel every live job still queued or running."""
        self.on = False
        self._dirty_since = None
        for rid in list(self._mine):
            self.session.cancel(rid)

    def changed(self) -> None:
        """The canvas changed (a stroke ended, an undo, a layer edit): send it once things are quiet."""
        if not self.on:
            return
        now = self.clock()
        if self._dirty_since is None:
            self._dirty_since = now
        self._last_change = now

    def settings_changed(self) -> None:
        """Prompt, strength, preset... changed: resumes a paused live mode, and sends."""
        if self.on:
            self.paused = ""
            self.changed()

    @property
    def state(self) -> str:
        if not self.on:
            return OFF
        if self.paused:
            return PAUSED
        if self._mine:
            return BUSY
        return WAITING if self._dirty_since is not None else WATCHING

    @property
    def busy(self) -> bool:
        """A live request is being sent, queued or generated: show the busy indicator."""
        return bool(self._mine)

    def describe(self) -> str:
        st = self.state
        if st == OFF:
            return "Live: off"
        if st == PAUSED:
            return f"Live paused: {self.paused}"
        if st == BUSY:
            step, total = self.progress
            return f"Live: generating (step {step} of {total})…" if total else "Live: generating…"
        return "Live: waiting for the canvas to settle…" if st == WAITING else "Live: watching the canvas"

    def tick(self) -> bool:
        """From the host's timer: send if a change is due. True when a request went out."""
        if not self.on or self.paused or self._dirty_since is None or self._sending is not None:
            return False
        now = self.clock()
        if now - self._last_change < self.debounce_s and now - self._dirty_since < self.max_wait_s:
            return False
        self._dirty_since = None
        try:
            params, image, mask = self.read()
        except Exception as exc:   # the host says why the canvas cannot be sent (no document, bad value...)
            self.paused = str(exc) or type(exc).__name__
            return False
        params = dict(params, live=True)
        if self.preempt:
            params["preempt"] = True
        rid = self.session.generate(params, image, mask, tag={"live": True})
        self._sending = rid
        self._mine[rid] = None
        self.sent += 1
        self._index[rid] = self.sent
        return True

    def handle(self, up) -> bool:
        """Give every update from Session.poll() here first; True when it was about live mode (the host
        redraws its live widgets then). A live JobResult sets `result` when it is the newest one."""
        rid = self._request_of(up)
        if rid is None:
            return False
        if isinstance(up, JobAccepted):
            for older in [r for r, j in self._mine.items() if j == up.job]:
                self._mine.pop(older)   # "unchanged": the engine answered an earlier live job; this one follows it
            self._mine[rid] = up.job
            if self._sending == rid:
                self._sending = None
        elif isinstance(up, JobProgress):
            self.progress = (up.step, up.total)
            if up.preview is not None:
                self.preview = up.preview
        elif isinstance(up, JobResult):
            self._finish(rid)
            index = self._index.pop(rid, -1)
            if index >= self._shown:
                self._shown = index
                self.result, self.result_job, self.preview = list(up.layers), up.job, None
        elif isinstance(up, JobCanceled):
            self._finish(rid)
            self._index.pop(rid, None)
            if up.reason == "superseded":
                self.superseded += 1
        elif isinstance(up, (JobFailed, ErrorUpdate)):
            self._finish(rid)
            self._index.pop(rid, None)
            if self.on:
                msg = up.message if isinstance(up, JobFailed) else (up.message or "refused")
                self.paused = msg or "failed"
        return True

    def forget_result(self) -> None:
        self.result, self.result_job = [], None

    # ---- internals ------------------------------------------------------------------------------------
    def _request_of(self, up) -> str | None:
        if isinstance(up, (JobAccepted, ErrorUpdate)):
            rid = getattr(up, "request", None)
            return rid if rid in self._mine else None
        job = getattr(up, "job", None)
        if job is None:
            return None
        return next((r for r, j in self._mine.items() if j == job), None)

    def _finish(self, rid: str) -> None:
        self._mine.pop(rid, None)
        if self._sending == rid:
            self._sending = None
        if not self._mine:
            self.progress = (0, 0)

