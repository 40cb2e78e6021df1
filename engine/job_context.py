"""JobContext: the one door nodes have to the engine while a job runs (the `ctx` of Node.invoke), and `run_job`,
the one entry point that runs a job's graph with it.

A node loads models, LoRAs and upscalers, reads its input layers, writes result layers, reports progress and
checks for cancel through it, and nothing else: no server, no queue, no registry. The job queue
(engine/queue.py) builds one per job and runs it with `run_job` on its job thread; a pool worker
(engine/pool/worker.py) builds one with its own blob store, no database and an event sink for a hub, and runs
the same `run_job`. Ops never see one (they get an OpContext, engine/opspec.py).
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading

import numpy as np

from . import events
from .errors import BadRequest, Canceled, EngineError
from .graph import graph as graphs
from .graph.node import Image, Mask, ModelValue
from .store.owners import record

log = logging.getLogger("paintbridge.queue")
LIVE_HOLD_S = 300.0   # a live job's model is not evicted for this long after it (the next stroke's job needs it)


class JobContext:
    def __init__(self, row: dict, *, config, db, blobs, registry, cache, hub):
        self.job = row["id"]
        self.uid = row["user_id"]
        self.config = config
        self._db, self._blobs, self._registry, self._cache, self._hub = db, blobs, registry, cache, hub
        self.canceled = threading.Event()
        self.results: list[dict] = []
        self.progress_state: dict | None = None
        self.node_id = ""
        self.node_index = 0
        self.node_count = 0
        try:   # a live job's model stays loaded between strokes (ModelCache.use)
            self.live = bool(json.loads(row.get("request") or "{}").get("live"))
        except ValueError:
            self.live = False

    # -- cancel / errors
    def is_canceled(self) -> bool:
        return self.canceled.is_set()

    def check_canceled(self):
        if self.canceled.is_set():
            raise Canceled("canceled")

    def error(self, message: str) -> EngineError:
        return BadRequest(f"node {self.node_id!r}: {message}", details={"node": self.node_id})

    # -- models (engine.models.patch and engine.diffusion import torch: only once a job runs, not at start)
    def load_model(self, name: str, vae: str | None = None) -> ModelValue:
        """A main model; with `vae`, a registered VAE used instead of the model's own downstream of it."""
        from .models.patch import ModelRef, check_vae

        loaded = self._cache.get(name)
        self._cache.use(name, LIVE_HOLD_S if self.live else 0.0)
        if not vae:
            return ModelRef(loaded, name)
        entry = self._registry.get(vae, type="vae")
        try:
            check_vae(entry, loaded.family, loaded.name)
        except Exception as exc:
            raise self.error(getattr(exc, "message", str(exc))) from None
        module = self._cache.get_vae(vae, loaded.family, loaded.device, loaded.dtype)
        return ModelRef(loaded, name, vae=(vae, module))

    def add_lora(self, model: ModelValue, lora: str, weight: float) -> ModelValue:
        """model with the LoRA `lora` on it for everything downstream; refused for another base model."""
        from .models.patch import ModelRef, check_base

        raw = model.raw if isinstance(model, ModelRef) else model.loaded
        prev = model.loras if isinstance(model, ModelRef) else ()
        entry = self._registry.get(lora, type="lora")
        try:
            check_base(entry, raw.family, raw.name)
        except Exception as exc:
            raise self.error(getattr(exc, "message", str(exc))) from None
        weights = self._cache.get_lora(lora)
        if isinstance(model, ModelRef):
            return model.with_lora(lora, weight, weights)   # keeps its VAE
        return ModelRef(raw, model.name, prev + ((lora, float(weight), weights),), getattr(model, "sha256", ""))

    def load_control(self, name: str, model: ModelValue):
        """(kind, module) of a ControlNet or T2I-Adapter for `model`, cached between jobs; refused for another
        base."""
        from .models.control import check_control

        raw = model.raw if hasattr(model, "raw") else model.loaded
        entry = self._registry.get(name)
        try:
            check_control(entry, raw.family, raw.name)
        except Exception as exc:
            raise self.error(getattr(exc, "message", str(exc))) from None
        if entry.type == "controlnet":
            return entry.type, self._cache.get_controlnet(name, raw.device, raw.dtype)
        return entry.type, self._cache.get_t2i_adapter(name, raw.device, raw.dtype)

    def load_reference(self, name: str, model: ModelValue):
        """(IP-Adapter weights, its CLIP image encoder) for `model`, both cached between jobs."""
        from .models.control import find_image_encoder
        from .models.patch import check_base

        raw = model.raw if hasattr(model, "raw") else model.loaded
        entry = self._registry.get(name, type="ip_adapter")
        try:
            check_base(entry, raw.family, raw.name)
            encoder = find_image_encoder(self._registry, entry)
        except Exception as exc:
            raise self.error(getattr(exc, "message", str(exc))) from None
        return self._cache.get_ip_adapter(name), self._cache.get_clip_vision(encoder.name, raw.device, raw.dtype)

    def load_upscaler(self, name: str):
        """An engine.models.upscale.Upscaler, cached between jobs."""
        return self._cache.get_upscaler(name)

    def expand_prompt(self, text: str, model: ModelValue) -> str:
        """`<name>` of a registered textual-inversion embedding -> its tokens, loaded into the model for this job."""
        from .models.patch import expand_prompt
        return expand_prompt(self._registry, self._cache, text, model)

    # -- pixels in and out
    def _read_layer(self, layer: dict, fmt: str) -> np.ndarray:
        if layer.get("format", fmt) != fmt:
            raise self.error(f"expected a {fmt} layer, got {layer.get('format')}")
        data = self._blobs.read(layer["sha256"])
        w, h = int(layer["w"]), int(layer["h"])
        channels = 4 if fmt == "rgba8" else 1
        if len(data) != w * h * channels:
            raise self.error(f"blob {layer['sha256'][:12]}… has {len(data)} bytes, a {fmt} {w}x{h} layer needs "
                             f"{w * h * channels}")
        arr = np.frombuffer(data, np.uint8)
        return arr.reshape(h, w, 4) if channels == 4 else arr.reshape(h, w)

    def load_image(self, layer: dict) -> Image:
        return Image(self._read_layer(layer, "rgba8"), int(layer.get("x", 0)), int(layer.get("y", 0)))

    def load_mask(self, layer: dict) -> Mask:
        return Mask(self._read_layer(layer, "gray8"), int(layer.get("x", 0)), int(layer.get("y", 0)))

    def add_result(self, image: Image, name: str, seed: int | None):
        rgba = np.ascontiguousarray(image.rgba, dtype=np.uint8)
        sha, size = self._blobs.write(rgba.tobytes())
        if self._db is not None:   # a pool worker has none: the engine's blob route recorded the owner
            self._db.sync(record, sha, size, self.uid)
        layer = {"sha256": sha, "w": image.w, "h": image.h, "format": "rgba8", "x": image.x, "y": image.y,
                 "name": name}
        if seed is not None:
            layer["seed"] = seed
        self.results.append(layer)

    # -- progress
    def progress(self, step: int, total: int, loaded, latents):
        """A denoising step of `loaded`: the preview is made from its latents."""
        from . import diffusion   # torch, diffusers: see above

        rgb = None
        try:
            rgb = diffusion.preview(loaded, latents)
        except Exception:   # a preview is a nicety; never fail a job for it
            log.debug("preview failed", exc_info=True)
        self.report(step, total, rgb)

    def report(self, step: int, total: int, rgb: np.ndarray | None = None, tile: int | None = None,
               tiles: int | None = None):
        """Publish job.progress: step of total, an RGB preview (<= 256 px a side) and, for a job that runs in
        tiles, which tile (1-based) of how many."""
        self.progress_state = {"step": step, "total": total, "node": self.node_id}
        if tile is not None:
            self.progress_state.update(tile=tile, tiles=tiles)
        preview = None
        if rgb is not None:
            h, w = rgb.shape[:2]
            rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
            preview = {"w": w, "h": h, "format": "rgba8", "x": 0, "y": 0, "data": rgba.tobytes()}
        self._hub.publish_threadsafe(self.uid, events.job_progress(self.job, step, total, self.node_id, preview,
                                                                   tile, tiles), droppable=True)


def run_job(ctx: JobContext, graph_of, cache, max_job_bytes: int, after=None):
    """Run a job's graph with ctx, where the engine runs jobs: its job thread, or a pool worker's. graph_of() gives
    the validated Graph (a failure fails the job); after(), when given, runs once the results are written (the
    gallery names them: an exception fails the job). Returns (status, error, graph); never raises."""
    try:
        graph = graph_of()
        graphs.execute(graph, ctx, max_live_bytes=max_job_bytes)
        if after is not None:
            after()
        return "completed", None, graph
    except Canceled:
        _release_memory()
        return "canceled", None, None
    except EngineError as exc:
        _release_memory()
        return "failed", {"code": exc.code, "message": exc.message, "details": exc.details}, None
    except Exception as exc:
        _release_memory()   # a failed job (OOM included) gives its memory back before the next one
        if _is_oom(exc):
            msg = "out of memory: try a smaller size, fewer images per batch, or a smaller model"
            return "failed", {"code": "internal", "message": msg, "details": None}, None
        log.exception("job %s failed", ctx.job)
        return "failed", {"code": "internal", "message": f"{type(exc).__name__}: {exc}"[:500], "details": None}, None
    finally:
        try:   # LoRAs and embeddings come off the cached models: the next job sees the original weights
            cache.release()   # and its models may be evicted again (a live job's after LIVE_HOLD_S)
            cache.reset_patches()
        except Exception:
            log.exception("restoring models after job %s failed", ctx.job)


def _release_memory():
    """A full collection costs ~0.2 s with torch loaded: only after failures, where an exception's traceback may
    hold big tensors in cycles. Completed jobs free theirs by reference counting."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_oom(exc: Exception) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")   # only a job that ran torch can have run out of its memory
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    return "out of memory" in str(exc).lower()
