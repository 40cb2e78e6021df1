"""The job hooks: every result layer of a completed job into the gallery.

`name_images` (JobQueue.on_result, on the job thread, before job.result) gives each result layer its gallery id,
`image_id`, which job.result and jobs.result carry. `on_job_complete` (JobQueue.on_complete, on the queue's
archive thread, after job.result) then writes, for each layer, DATA_DIR/images/YYYY/MM/DD/ID.png (local date)
carrying the metadata (png.py), a WebP thumbnail (at most 256 px per side) stored as a blob the owner can read,
and a row in `images`, and sends the owner `images.added`. It may run again for the same job (the engine
stopped half-way): layers already in the gallery are skipped. The composition root (engine/app.py) wires both.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from pathlib import Path

import numpy as np

from .. import events
from ..store.owners import record
from .db import image_by_sha, summary
from .hashing import model_hash
from .png import META_VERSION, encode_png, encode_thumbnail
from .trace import input_shas, params_for, regions_summary, trace_graph

log = logging.getLogger("paintbridge.gallery")


class Recorder:
    def __init__(self, config, db, blobs, registry, hub):
        self.config, self.db, self.blobs, self.registry, self.hub = config, db, blobs, registry, hub

    def name_images(self, row: dict, layers: list[dict]) -> None:
        """JobQueue.on_result hook (job thread, before job.result): each layer's gallery id."""
        for layer in layers:
            layer.setdefault("image_id", secrets.token_hex(8))

    def on_job_complete(self, row: dict, graph, layers: list[dict]) -> None:
        """JobQueue.on_complete hook (archive thread, after job.result): record every result layer in the
        gallery, then tell the owner (images.added). graph: the job's validated engine.graph.graph.Graph (its
        output nodes, in run order, name the layers), or None.

        A layer that fails is logged and the others are still recorded; then this raises, so the queue archives
        the job again at the next start. The result itself is already safe in the blob store and jobs.result."""
        try:
            request = json.loads(row["request"]) if row.get("request") else {}
            raw = json.loads(row["graph"]) if row.get("graph") else {}
        except ValueError:
            request, raw = {}, {}
        kind = row.get("kind") or ""
        # output nodes run in graph order; map each result layer to its node when the counts agree
        outputs = graph.output_nodes() if graph is not None else []
        user = self.db.sync(lambda db: db.execute("SELECT name FROM users WHERE id = ?",
                                                  [row["user_id"]]).fetchone())
        parent = request.get("recall") if kind != "graph" else None
        if parent is None:
            shas = input_shas(kind, request, raw)
            if shas:
                parent = self.db.sync(image_by_sha, row["user_id"], shas)
        hashes: dict[str, tuple[str, str] | None] = {}
        ids = [layer["image_id"] for layer in layers if layer.get("image_id")]
        marks = ",".join("?" * len(ids))
        have = {r[0] for r in self.db.sync(lambda db: db.execute(
            f"SELECT id FROM images WHERE id IN ({marks})", ids).fetchall())} if ids else set()
        failed = 0
        for i, layer in enumerate(layers):
            if layer.get("image_id") in have:   # recorded before the engine stopped
                continue
            try:
                out_id = outputs[i] if len(outputs) == len(layers) else None
                self._record_layer(row, request, raw, layer, out_id, parent, user[0] if user else None, hashes)
            except Exception:
                failed += 1
                log.exception("gallery: could not record layer %d of job %s", i, row.get("id"))
        if ids:
            rows = self.db.sync(lambda db: list(db.query(
                f"SELECT * FROM images WHERE id IN ({marks}) ORDER BY seq", ids)))
            if rows:
                self.hub.publish_threadsafe(row["user_id"], events.images_added(row["id"], [summary(r) for r in rows]))
        if failed:
            raise RuntimeError(f"{failed} of {len(layers)} layer(s) of job {row.get('id')} are not in the gallery")

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

    def _steer_facts(self, item: dict, hashes: dict) -> dict:
        """What the gallery keeps of one control/reference: model (and its hash), strength, range, preprocessor,
        and the image: its blob hash and where it sat in the document."""
        image = item.get("image") or {}   # None: a graph's image that is not an input layer
        mh = self._model_hash_for(item.get("model"), hashes)
        out = {"model": item.get("model"), "model_hash": mh[0] if mh else None, "strength": item.get("strength"),
               "start": item.get("start"), "end": item.get("end"),
               "image": {k: image.get(k) for k in ("sha256", "w", "h", "x", "y", "name")}}
        if "preprocess" in item:
            out["preprocess"] = item["preprocess"]
        return out

    def _record_layer(self, row, request, graph, layer, out_id, parent, user_name, hashes):
        created = row.get("finished") or time.time()   # when the job completed: the same path if run again
        image_id = layer.get("image_id") or secrets.token_hex(8)
        kind = row.get("kind") or ""
        if kind in ("graph", "workflow"):
            facts = trace_graph(graph, out_id) if out_id else {}
            params = None
            mode = kind
        else:
            facts = {k: request.get(k) for k in ("prompt", "negative_prompt", "steps", "guidance", "scheduler",
                                                 "strength", "width", "height", "model")}
            facts["seed"] = layer.get("seed", request.get("seed"))
            facts["regions"] = regions_summary(request.get("regions"))
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
        if facts.get("regions"):
            meta["regions"] = facts["regions"]
        if kind == "workflow":
            meta["workflow"] = {"name": request.get("workflow"), "values": request.get("values")}
        for key in ("control", "reference"):
            if kind in ("graph", "workflow"):
                if facts.get(key):   # traced from the graph's control/reference nodes
                    meta[key] = [self._steer_facts(item, hashes) for item in facts[key]]
            elif request.get(key):
                meta[key] = [self._steer_facts(item, hashes) for item in request[key]]

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
