"""The jobs one client submitted, as its host shows them: state, progress, result, error, cancel.

A Session keeps one JobTable (`session.jobs`) and applies every update to it in poll(), on the host's main
thread, so a panel only reads it. Rows are keyed by the local request id generate()/run_workflow() return;
the engine's job id arrives with JobAccepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import updates as u

# Job.state values
SENDING = "sending"        # uploading layers / waiting for the engine to accept the request
QUEUED = "queued"
STARTING = "starting"      # running, before its first step (the engine is loading the model)
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELED = "canceled"
GONE = "gone"              # the engine no longer knows the job
REFUSED = "refused"        # the request was refused before a job existed (see Job.error)
ACTIVE = (SENDING, QUEUED, STARTING, RUNNING)
FINAL = (COMPLETED, FAILED, CANCELED, GONE, REFUSED)


@dataclass
class Job:
    request: str
    tag: Any = None
    job: str | None = None
    seed: int | None = None
    state: str = SENDING
    position: int | None = None        # place in the queue, when queued
    step: int = 0
    total: int = 0
    preview: Any = None                # latest preview Pixels (host order) or None
    tile: int | None = None            # refining in tiles: the tile (1-based) of `tiles` the step belongs to
    tiles: int | None = None
    layers: list = field(default_factory=list)   # ResultLayers once completed
    error: str = ""                    # failure message, for FAILED / GONE / REFUSED
    error_code: str | None = None
    cancel_requested: bool = False
    cancel_status: str | None = None   # the engine's answer to job.cancel
    connection_lost: bool = False      # the connection dropped while this job was active: its state is re-read

    @property
    def live(self) -> bool:
        """A live-mode request (protocol.live tags its requests): its own panel follows it."""
        return tag_is_live(self.tag)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        """Of the whole job: a job in tiles counts its finished tiles and this tile's steps."""
        done = min(1.0, self.step / self.total) if self.total else 0.0
        if self.tile and self.tiles:
            return min(1.0, (self.tile - 1 + done) / self.tiles)
        return done

    def describe(self) -> str:
        """One line for a status label, e.g. "queued (2 ahead)", "step 3 of 20", "failed: ..."."""
        if self.connection_lost and self.active:
            return "connection lost: will check this job again on reconnect"
        if self.cancel_requested and self.active:
            return "canceling…"
        if self.state == SENDING:
            return "sending…"
        if self.state == QUEUED:
            return "queued" + (f" ({self.position} ahead)" if self.position else "")
        if self.state == STARTING:
            return "starting (loading the model)…"
        if self.state == RUNNING:
            steps = f"step {self.step} of {self.total}" if self.total else "running…"
            return f"tile {self.tile} of {self.tiles}, {steps}" if self.tile and self.tiles else steps
        if self.state == COMPLETED:
            return "done" + (f" (seed {self.seed})" if self.seed is not None else "")
        if self.state == CANCELED:
            return "canceled"
        if self.state == GONE:
            return "the engine no longer knows this job"
        return f"failed: {self.error}" if self.error else "failed"


class JobTable:
    """Main-thread only (Session.poll applies updates; the host reads)."""

    def __init__(self):
        self.rows: dict[str, Job] = {}      # request id -> Job, in submission order

    def add(self, request: str, tag: Any = None) -> Job:
        row = self.rows[request] = Job(request, tag)
        return row

    def by_job(self, job: str | None) -> Job | None:
        if job is None:
            return None
        return next((r for r in self.rows.values() if r.job == job), None)

    def active(self, live: bool = False) -> list[Job]:
        """The jobs still running, live mode's only with live=True: a Generate panel's job line, busy state and
        Cancel are about the person's own requests, and live mode has its own Stop."""
        return [r for r in self.rows.values() if r.active and (live or not r.live)]

    def latest(self, live: bool = False) -> Job | None:
        """The newest job (live mode's only with live=True)."""
        return next((r for r in reversed(self.rows.values()) if live or not r.live), None)

    def forget_finished(self, keep: int = 20) -> None:
        """Drop the oldest finished rows beyond `keep`."""
        finished = [k for k, r in self.rows.items() if not r.active]
        for k in finished[:max(0, len(finished) - keep)]:
            del self.rows[k]

    def apply(self, up: "u.Update") -> Job | None:
        """Update the row an update is about; returns it (None when the update is not about a job of ours)."""
        if isinstance(up, u.StateChanged):
            if up.state not in ("connected", "connecting"):   # connected: the Session re-reads each job
                for r in self.active():
                    if r.job is not None:
                        r.connection_lost = True
            return None
        if isinstance(up, u.JobAccepted):
            for key in [k for k, r in self.rows.items() if r.job == up.job and k != up.request]:
                del self.rows[key]   # a live request answered with an earlier job ("unchanged"): one row per job
            row = self.rows.get(up.request) or self.add(up.request, up.tag)
            row.job, row.seed = up.job, up.seed
            if row.state == SENDING:
                row.state = QUEUED
            return row
        if isinstance(up, u.ErrorUpdate):
            row = self.rows.get(up.request) if up.request else None
            if row is not None and row.state == SENDING:
                row.state, row.error, row.error_code = REFUSED, up.message, up.code
            return row
        if isinstance(up, u.JobResult) and up.image is not None:
            return None   # a gallery image opened with open_image(), not a job's end
        job = getattr(up, "job", None)
        row = self.by_job(job)
        if row is None:
            return None
        if not isinstance(up, u.CancelAcknowledged):
            row.connection_lost = False   # news of the job: its state is known again
        if isinstance(up, u.JobQueued):
            if row.state in (SENDING, QUEUED):
                row.state, row.position = QUEUED, up.position
        elif isinstance(up, u.JobStarted):
            if row.state in (SENDING, QUEUED):
                row.state = STARTING
        elif isinstance(up, u.JobProgress):
            if row.active:
                row.state, row.step, row.total = RUNNING, up.step or 0, up.total or 0
                row.tile, row.tiles = getattr(up, "tile", None), getattr(up, "tiles", None)
                if up.preview is not None:
                    row.preview = up.preview
        elif isinstance(up, u.JobResult):
            row.state, row.layers = COMPLETED, list(up.layers)
            if row.total:
                row.step = row.total
        elif isinstance(up, u.JobFailed):
            row.state = GONE if up.code == "not_found" else FAILED
            row.error, row.error_code = up.message, up.code
        elif isinstance(up, u.JobCanceled):
            row.state = CANCELED
        elif isinstance(up, u.CancelAcknowledged):
            row.cancel_status = up.status
        return row


def tag_is_live(tag: Any) -> bool:
    """The tag protocol.live.LiveController gives its requests."""
    return isinstance(tag, dict) and bool(tag.get("live"))
