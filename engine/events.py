"""Every event the engine pushes, `{"event": NAME, "data": map}` on the wire (SPEC.md §4, §7, §8), with its payload.

Emitters build events here and nowhere else, so "who sends X and with what" is one hop: the name's constant
below, then its callers. An Event is a (name, data) pair; the hub (engine/hub.py) sends it to connections.
"""

from __future__ import annotations

from typing import Any, NamedTuple

JOB_QUEUED = "job.queued"          # {job, position}: accepted; position among all queued jobs
JOB_STARTED = "job.started"        # {job}
JOB_PROGRESS = "job.progress"      # {job, step, total, node, preview?}: droppable for a slow client
JOB_RESULT = "job.result"          # {job, layers}: layer + name (+ seed) (+ image_id)
JOB_FAILED = "job.failed"          # {job, error: {code, message, details}}
JOB_CANCELED = "job.canceled"      # {job, reason?}: reason "superseded" for a live job a newer one replaced
MODEL_LOADED = "model.loaded"      # {model, type, size_mb}: to every signed-in connection
MODEL_UNLOADED = "model.unloaded"  # {model}: to every signed-in connection
AUTH_REFRESHED = "auth.refreshed"  # {token, expires_at}: after a mutating request, to that connection only
MODEL_DOWNLOAD_PROGRESS = "models.download.progress"   # {download, source, state, name, bytes, total, ...}: to the
#                                    admin who started it and every admin (engine/models/download.py)
IMAGES_ADDED = "images.added"      # {job, images: [image summary]}: a job's results are in the gallery (after job.result)

NAMES = (JOB_QUEUED, JOB_STARTED, JOB_PROGRESS, JOB_RESULT, JOB_FAILED, JOB_CANCELED, MODEL_LOADED,
         MODEL_UNLOADED, AUTH_REFRESHED, MODEL_DOWNLOAD_PROGRESS, IMAGES_ADDED)


class Event(NamedTuple):
    name: str
    data: dict[str, Any]


def job_queued(job: str, position: int) -> Event:
    return Event(JOB_QUEUED, {"job": job, "position": position})


def job_started(job: str) -> Event:
    return Event(JOB_STARTED, {"job": job})


def job_progress(job: str, step: int, total: int, node: str, preview: dict | None = None,
                 tile: int | None = None, tiles: int | None = None) -> Event:
    """preview: {w, h, format: "rgba8", x, y, data} with the pixels inline, or None when there is none.
    tile/tiles: a job that refines in tiles says which tile (1-based) of how many the step belongs to."""
    data = {"job": job, "step": step, "total": total, "node": node}
    if tile is not None:
        data["tile"], data["tiles"] = tile, tiles
    if preview is not None:
        data["preview"] = preview
    return Event(JOB_PROGRESS, data)


def job_result(job: str, layers: list[dict]) -> Event:
    return Event(JOB_RESULT, {"job": job, "layers": layers})


def job_failed(job: str, error: dict) -> Event:
    return Event(JOB_FAILED, {"job": job, "error": error})


def job_canceled(job: str, reason: str | None = None) -> Event:
    return Event(JOB_CANCELED, {"job": job, "reason": reason} if reason else {"job": job})


def model_loaded(model: str, kind: str, size_mb: float) -> Event:
    return Event(MODEL_LOADED, {"model": model, "type": kind, "size_mb": size_mb})


def model_unloaded(model: str) -> Event:
    return Event(MODEL_UNLOADED, {"model": model})


def auth_refreshed(token: str, expires_at: float) -> Event:
    return Event(AUTH_REFRESHED, {"token": token, "expires_at": expires_at})


def model_download_progress(download: str, source: str, state: str, name: str | None, nbytes: int,
                            total: int | None, **extra) -> Event:
    """state: resolving | verifying (+ resumed_from) | downloading | done (+ model or path) | failed (+ error) |
    canceled. total is None when the server does not say."""
    return Event(MODEL_DOWNLOAD_PROGRESS, {"download": download, "source": source, "state": state, "name": name,
                                           "bytes": nbytes, "total": total, **extra})


def images_added(job: str, images: list[dict]) -> Event:
    """images: the gallery summaries (as images.list gives them) of the job's result layers, in layer order."""
    return Event(IMAGES_ADDED, {"job": job, "images": images})
