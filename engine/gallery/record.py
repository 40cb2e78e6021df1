"""The job hook: every result layer of a completed job into the gallery, on the job thread.

For each layer it writes DATA_DIR/images/YYYY/MM/DD/ID.png (local date) carrying the metadata (png.py), a WebP
thumbnail (at most 256 px per side) stored as a blob the owner can read, and a row in `images`; it adds
`image_id` to the layer dict, which is the same object the queue sends in job.result and stores in jobs.result.
The composition root (engine/app.py) puts `Recorder.on_job_complete` in JobQueue.on_complete.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from pathlib import Path

import numpy as np

from ..store.owners import record
from .db import image_by_sha
from .hashing import model_hash
from .png import META_VERSION, encode_png, encode_thumbnail
from .trace import input_shas, params_for, trace_graph

log = logging.getLogger("paintbridge.gallery")


class Recorder:
    def __init__(self, config, db, blobs, registry):
        self.config, self.db, self.blobs, self.registry = config, db, blobs, registry

    def on_job_complete(self, row: dict, graph, layers: list[dict]) -> None:
        """JobQueue.on_complete hook (job thread): record every result layer in the gallery. graph: the job's
        validated engine.graph.graph.Graph (its output nodes, in run order, name the layers).

        A failure here is logged and leaves that layer without image_id; it never fails the job (the result
        itself is already safe in the blob store)."""
        try:
            request = json.loads(row["request"]) if row.get("request") else {}
            raw = json.loads(row["graph"]) if row.get("graph") else {}
        except ValueError:
            request, raw = {}, {}
        kind = row.get("kind") or ""
        # output nodes run in graph order; map each result layer to its node when the counts agree
        outputs = graph.output_nodes()
        user = self.db.sync(lambda db: db.execute("SELECT name FROM users WHERE id = ?",
                                                  [row["user_id"]]).fetchone())
        parent = request.get("recall") if kind != "graph" else None
        if parent is None:
            shas = input_shas(kind, request, raw)
            if shas:
                parent = self.db.sync(image_by_sha, row["user_id"], shas)
        hashes: dict[str, tuple[str, str] | None] = {}
        for i, layer in enumerate(layers):
            try:
                out_id = outputs[i] if len(outputs) == len(layers) else None
                self._record_layer(row, request, raw, layer, out_id, parent, user[0] if user else None, hashes)
            except Exception:
                log.exception("gallery: could not record layer %d of job %s", i, row.get("id"))

    def _model_hash_for(self, name: str | None, cache: dict) -> tuple[str, str] | None:
        if not name:
            return None
        if name not in cache:
            try:
                entry = self.registry.get(name)
                cache[name] = model_hash(entry.path, entry.sha256)
            except Exception:
                log.warning("gallery: cannot hash model %s", name, exc_info=True)
                cache[name] = None
        return cache[name]

    def _record_layer(self, row, request, graph, layer, out_id, parent, user_name, hashes):
        created = time.time()
        image_id = secrets.token_hex(8)
        kind = row.get("kind") or ""
        if kind in ("graph", "workflow"):
            facts = trace_graph(graph, out_id) if out_id else {}
            params = None
            mode = kind
        else:
            facts = {k: request.get(k) for k in ("prompt", "negative_prompt", "steps", "guidance", "scheduler",
                                                 "strength", "width", "height", "model")}
            facts["seed"] = layer.get("seed", request.get("seed"))
            params = params_for(request, layer)
            mode = request.get("mode", kind)
        if layer.get("seed") is not None:
            facts["seed"] = layer["seed"]
        source = request.get("source") or {}
        mh = self._model_hash_for(facts.get("model"), hashes)
        meta = {
            "paintbridge": META_VERSION, "id": image_id, "job": row["id"], "created": created,
            "owner": {"id": row["user_id"], "name": user_name},
            "app": row.get("app") or source.get("app") or "", "document": source.get("document") or "",
            "kind": kind, "mode": mode,
            "prompt": facts.get("prompt") or "", "negative_prompt": facts.get("negative_prompt") or "",
            "seed": facts.get("seed"), "steps": facts.get("steps"), "guidance": facts.get("guidance"),
            "scheduler": facts.get("scheduler"), "strength": facts.get("strength"),
            "model": facts.get("model"), "model_hash": mh[0] if mh else None, "model_hash_kind": mh[1] if mh else None,
            "layer": {k: layer.get(k) for k in ("name", "w", "h", "x", "y", "sha256")},
            "parent": parent, "params": params, "graph": graph,
        }
        if kind == "workflow":
            meta["workflow"] = {"name": request.get("workflow"), "values": request.get("values")}

        rgba = np.frombuffer(self.blobs.read(layer["sha256"]), np.uint8).reshape(layer["h"], layer["w"], 4)
        png = encode_png(rgba, meta)
        thumb, tw, th = encode_thumbnail(rgba)
        day = time.localtime(created)
        rel = Path("images") / f"{day.tm_year:04d}" / f"{day.tm_mon:02d}" / f"{day.tm_mday:02d}" / f"{image_id}.png"
        dest = self.config.data_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{image_id}.tmp")
        with open(tmp, "wb") as f:
            f.write(png)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        tsha, tsize = self.blobs.write(thumb)

        def insert(db):
            record(db, tsha, tsize, row["user_id"])
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM images").fetchone()[0]
            db["images"].insert({
                "id": image_id, "seq": seq, "user_id": row["user_id"], "job_id": row["id"], "created": created,
                "app": meta["app"], "document": meta["document"], "board_id": None, "starred": 0, "mode": mode,
                "prompt": meta["prompt"], "negative_prompt": meta["negative_prompt"], "seed": meta["seed"],
                "steps": meta["steps"], "guidance": meta["guidance"], "model": meta["model"],
                "model_hash": meta["model_hash"], "name": layer.get("name"), "sha256": layer["sha256"],
                "w": layer["w"], "h": layer["h"], "x": layer.get("x", 0), "y": layer.get("y", 0),
                "path": rel.as_posix(), "thumb_sha256": tsha, "thumb_w": tw, "thumb_h": th, "parent": parent,
                "params": json.dumps(params) if params is not None else None, "meta": json.dumps(meta)})

        self.db.sync(insert)
        layer["image_id"] = image_id
