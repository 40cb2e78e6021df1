"""Typed updates: what a Session hands its host on the main thread (Session.poll()).

Each update is a small dataclass; a host tests `isinstance(up, JobResult)` and reads `up.layers`. Every update
also has `kind` (a short name) and `data` (its fields as a dict), so code that dispatches on `up.kind` and reads
`up.data[...]` keeps working. `Update(kind, data)` builds a generic one (tests feeding a dialog by hand).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .limits import Limits
from .pixels import Pixels


class Update:
    """Base of every update. `Update(kind, data)` is a generic update with a dict payload."""

    kind: str

    def __init__(self, kind: str, data: dict | None = None):
        self.kind = kind
        self._data = dict(data or {})

    @property
    def data(self) -> dict:
        if type(self) is Update:
            return self._data
        return {f.name: getattr(self, f.name) for f in fields(self)}   # shallow: Pixels stay Pixels

    def __repr__(self) -> str:
        return f"Update({self.kind!r}, {self.data!r})"


@dataclass
class ResultLayer:
    name: str
    pixels: Pixels          # carries x, y in the sender's document coordinates, in the host's pixel order
    seed: int | None = None


# ---- connection -------------------------------------------------------------------------------------------
@dataclass(repr=False)
class StateChanged(Update):
    """The connection's state: connecting, connected, signed_out, expired, disconnected, closed.
    `lost` is True when an open connection dropped (the Session reconnects by itself in `retry_in` seconds);
    `limits` and `user` come with "connected"."""

    kind: ClassVar[str] = "state"
    state: str
    message: str = ""
    lost: bool = False
    retry_in: float | None = None
    user: dict | None = None
    limits: Limits | None = None


@dataclass(repr=False)
class SignedIn(Update):
    kind: ClassVar[str] = "signed_in"
    user: dict | None
    expires_at: float | None


@dataclass(repr=False)
class ModelsChanged(Update):
    """Main models for a picker, upscalers, LoRAs and VAEs (none whose file is missing), the samplers (nodes.list:
    id, label, schedules) for the sampler picker, control models (ControlNets and T2I-Adapters) and reference
    models (IP-Adapters); control/reference entries carry models.list's `preset`."""

    kind: ClassVar[str] = "models"
    models: list
    upscalers: list
    loras: list
    vaes: list = field(default_factory=list)
    samplers: list = field(default_factory=list)
    controls: list = field(default_factory=list)
    references: list = field(default_factory=list)


@dataclass(repr=False)
class WorkflowsChanged(Update):
    kind: ClassVar[str] = "workflows"
    workflows: list


# ---- jobs this Session submitted (never another app's or user's) ------------------------------------------
@dataclass(repr=False)
class JobAccepted(Update):
    """The engine queued request `request` as `job`; `seed` is the seed it runs with (show it: it is what
    remakes the image)."""

    kind: ClassVar[str] = "job"
    request: str
    job: str
    tag: Any = None
    seed: int | None = None


@dataclass(repr=False)
class JobQueued(Update):
    kind: ClassVar[str] = "queued"
    job: str
    tag: Any = None
    position: int | None = None


@dataclass(repr=False)
class JobStarted(Update):
    """Running, before its first step (loading the model)."""

    kind: ClassVar[str] = "started"
    job: str
    tag: Any = None


@dataclass(repr=False)
class JobProgress(Update):
    kind: ClassVar[str] = "progress"
    job: str
    tag: Any = None
    step: int = 0
    total: int = 0
    preview: Pixels | None = None    # host pixel order, at most 256 px a side
    tile: int | None = None          # a job refining in tiles: this step's tile (1-based) of `tiles`
    tiles: int | None = None


@dataclass(repr=False)
class JobResult(Update):
    """A finished job's layers (downloaded), or a gallery image opened with open_image() (then `image` is its
    id and `job` the job that made it)."""

    kind: ClassVar[str] = "result"
    job: str | None
    tag: Any = None
    layers: list = field(default_factory=list)   # [ResultLayer]
    image: str | None = None


@dataclass(repr=False)
class JobFailed(Update):
    """code "not_found": the engine no longer knows the job (gone)."""

    kind: ClassVar[str] = "failed"
    job: str
    tag: Any = None
    code: str | None = None
    message: str = "failed"


@dataclass(repr=False)
class JobCanceled(Update):
    kind: ClassVar[str] = "canceled"
    job: str
    tag: Any = None
    reason: str | None = None


@dataclass(repr=False)
class CancelAcknowledged(Update):
    """The engine's answer to job.cancel: "canceled" (it was queued), "canceling" (it stops at its next step), or
    the status it already had. The job's final update (JobCanceled/JobResult/JobFailed) follows in every case."""

    kind: ClassVar[str] = "cancel_ack"
    job: str
    tag: Any = None
    status: str = ""


# ---- model downloads (admin) ----------------------------------------------------------------------------
@dataclass(repr=False)
class DownloadProgress(Update):
    """A model download's state (downloads.DownloadTable keeps them): `request` is set on the answer to this
    Session's download_model() (state "started", or "refused" with `error`), `download` is the engine's id; the
    engine's models.download.progress events come with request None (an admin receives every admin's)."""

    kind: ClassVar[str] = "download"
    download: str | None
    state: str
    source: str = ""
    name: str | None = None
    bytes: int = 0
    total: int | None = None
    error: dict | None = None          # {code, message, details} for failed / refused
    model: dict | None = None          # the registered model, when done
    request: str | None = None
    tag: Any = None


# ---- other replies ----------------------------------------------------------------------------------------
@dataclass(repr=False)
class ErrorUpdate(Update):
    """A refused request or a local failure. `field` names the host form field the message belongs beside
    (generate.error_field), "" for the form as a whole; `request` is set for a refused generate/workflow run."""

    kind: ClassVar[str] = "error"
    message: str
    code: str | None = None
    details: Any = None
    request: str | None = None
    tag: Any = None
    field: str = ""


@dataclass(repr=False)
class ImagesPage(Update):
    """One gallery page; each summary's "thumbnail" is Pixels (host order) or None."""

    kind: ClassVar[str] = "images"
    images: list
    total: int
    next_cursor: str | None
    tag: Any = None


@dataclass(repr=False)
class Recalled(Update):
    """An image's parameters: `values` (forms.recalled), `workflow` (forms.recalled_workflow), `summary`."""

    kind: ClassVar[str] = "recalled"
    image: str
    params: dict | None
    values: dict
    workflow: tuple | None
    summary: dict
    tag: Any = None


@dataclass(repr=False)
class Reply(Update):
    kind: ClassVar[str] = "reply"
    op: str
    result: Any
    tag: Any = None


@dataclass(repr=False)
class EngineEvent(Update):
    """Any other server event; job events of other jobs never become one (download events: DownloadProgress)."""

    kind: ClassVar[str] = "event"
    name: str
    payload: dict

    @property
    def data(self) -> dict:
        return {"name": self.name, "data": self.payload}
