"""The gallery: every result image of every job, with what made it, as a PNG on disk and a row in SQLite.

Recording happens on the job thread (`on_job_complete`, installed in JobQueue.on_complete): for each result
layer it writes DATA_DIR/images/YYYY/MM/DD/ID.png (local date) carrying the metadata as an iTXt chunk
`paintbridge` (JSON, see `build_meta`), a WebP thumbnail (at most 256 px per side) stored as a blob the owner
can read, and a row in `images`. It adds `image_id` to the layer dict, which is the same object the queue
sends in job.result and stores in jobs.result.

The metadata's `params` is exactly what `generate` takes, so a client refills its form from it, `generate`
with `recall: ID` reproduces the image, and `images.import` turns a dropped-in PNG back into params.

Query helpers (list/get/star/move/boards) run on the database thread via server.db.run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadRequest, NotFound
from .models.registry import content_hash

log = logging.getLogger("paintbridge.gallery")

PNG_KEY = "paintbridge"          # the PNG text chunk holding our metadata (JSON)
META_VERSION = 1
THUMB_SIZE = 256
# A model whose files add up to at most this many bytes, and whose full hash the registry has not computed yet,
# is hashed in full now ("sha256": the same value models.list reports); a bigger one by its configs, its
# safetensors headers (tensor names, dtypes, shapes, offsets) and file sizes ("index"): reading gigabytes of
# weights would stall the job's result for many seconds (the registry's background hasher does that later).
FULL_HASH_LIMIT = 256 * 1024 * 1024


# ---- model hash ----------------------------------------------------------------------------------------------
_hash_cache: dict[tuple, tuple[str, str]] = {}
_hash_lock = threading.Lock()


def _model_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def model_hash(path: Path, known_sha256: str | None = None) -> tuple[str, str]:
    """(hex, kind) for a model file or folder: kind "sha256" is the registry's content hash (known, or computed
    here for models up to FULL_HASH_LIMIT), kind "index" a quick hash of a bigger model's structure. Cached per
    process by (path, sizes, mtimes)."""
    if known_sha256:
        return known_sha256, "sha256"
    path = Path(path)
    files = _model_files(path)
    stats = [(str(p.relative_to(path)) if path.is_dir() else p.name, p.stat()) for p in files]
    key = (str(path), tuple((n, s.st_size, s.st_mtime_ns) for n, s in stats))
    with _hash_lock:
        hit = _hash_cache.get(key)
    if hit:
        return hit
    if sum(s.st_size for _, s in stats) <= FULL_HASH_LIMIT:
        out = (content_hash(path), "sha256")
    else:
        h = hashlib.sha256()
        for (name, st), p in zip(stats, files):
            h.update(name.encode() + b"\0" + str(st.st_size).encode() + b"\0")
            if p.suffix in (".json", ".txt", ".yaml", ".model"):
                h.update(p.read_bytes())
            elif p.suffix == ".safetensors":
                with p.open("rb") as f:
                    head = f.read(8)
                    n = int.from_bytes(head, "little") if len(head) == 8 else 0
                    h.update(f.read(min(n, 100 * 1024 * 1024)))
        out = (h.hexdigest(), "index")
    with _hash_lock:
        _hash_cache[key] = out
    return out


# ---- PNG / WebP ------------------------------------------------------------------------------------------------
def encode_png(rgba: np.ndarray, meta: dict) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(PNG_KEY, json.dumps(meta, separators=(",", ":")), zip=True)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba, np.uint8), "RGBA").save(buf, "PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def encode_thumbnail(rgba: np.ndarray) -> tuple[bytes, int, int]:
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgba, np.uint8), "RGBA")
    im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.LANCZOS)   # only ever shrinks
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=80, method=4)
    return buf.getvalue(), im.width, im.height


def read_png_meta(data: bytes) -> dict:
    """Our metadata from PNG bytes; BadRequest for anything that is not a PNG written by Paintbridge."""
    from PIL import Image, UnidentifiedImageError

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise BadRequest("not a PNG file (images.import reads PNGs written by Paintbridge)")
    try:
        im = Image.open(io.BytesIO(data))
        text = im.info.get(PNG_KEY)
        if text is None:   # chunks after the pixel data are only read by load()
            im.load()
            text = im.info.get(PNG_KEY)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"cannot read this PNG: {exc}"[:300]) from None
    if text is None:
        raise BadRequest("this PNG has no Paintbridge metadata (no 'paintbridge' text chunk): only images "
                         "generated by Paintbridge can be recalled from a file")
    try:
        meta = json.loads(text)
        assert isinstance(meta, dict) and META_VERSION >= int(meta.get("paintbridge", 0)) >= 1
    except Exception:
        raise BadRequest("the PNG's Paintbridge metadata is damaged or from a newer version") from None
    return meta


# ---- what made an image ------------------------------------------------------------------------------------------
def trace_graph(raw: dict, out_id: str) -> dict:
    """Best-effort generation facts for the output node out_id of a raw graph: walk upstream to the nearest
    denoise node and read its sampler literals, its noise (seed, size), prompt and model."""
    nodes = raw.get("nodes") or {}
    into: dict[str, dict[str, str]] = {}
    for e in raw.get("edges") or []:
        try:
            (src, _), (dst, field) = e["from"], e["to"]
            into.setdefault(dst, {})[field] = src
        except Exception:
            continue
    facts: dict[str, Any] = {}
    seen, todo = set(), [out_id]
    denoise = None
    while todo and denoise is None:
        nid = todo.pop(0)
        if nid in seen or nid not in nodes:
            continue
        seen.add(nid)
        if nodes[nid].get("type") == "denoise":
            denoise = nid
            break
        todo.extend(into.get(nid, {}).values())
    if denoise is None:
        return facts
    spec = nodes[denoise]
    for k in ("steps", "guidance", "scheduler", "strength"):
        if k in spec:
            facts[k] = spec[k]
    links = into.get(denoise, {})
    noise = nodes.get(links.get("noise", ""), {})
    for k in ("seed", "width", "height"):
        if k in noise:
            facts[k] = noise[k]
    prompt = nodes.get(links.get("conditioning", ""), {})
    if prompt.get("type") == "prompt":
        facts["prompt"], facts["negative_prompt"] = prompt.get("text", ""), prompt.get("negative", "")
    model = nodes.get(links.get("model", ""), {})
    if model.get("type") == "load_model":
        facts["model"] = model.get("model")
    return facts


def params_for(request: dict, layer: dict) -> dict:
    """The generate arguments that make exactly this layer: the request with this layer's seed, batch 1."""
    params = {k: v for k, v in request.items() if k != "recall"}
    if layer.get("seed") is not None:
        params["seed"] = layer["seed"]
    params["batch"] = 1
    return params


def _input_shas(kind: str, request: dict, graph: dict) -> list[str]:
    if kind != "graph" and kind != "workflow":
        return [request[k]["sha256"] for k in ("image",) if isinstance(request.get(k), dict)]
    return [spec["layer"]["sha256"] for spec in (graph.get("nodes") or {}).values()
            if isinstance(spec, dict) and spec.get("type") == "image_input" and isinstance(spec.get("layer"), dict)
            and isinstance(spec["layer"].get("sha256"), str)]


# ---- the job hook ------------------------------------------------------------------------------------------------
def on_job_complete(row: dict, ctx, layers: list[dict]) -> None:
    """JobQueue.on_complete hook (job thread): record every result layer in the gallery.

    A failure here is logged and leaves that layer without image_id; it never fails the job (the result
    itself is already safe in the blob store)."""
    server = ctx.server
    try:
        request = json.loads(row["request"]) if row.get("request") else {}
        graph = json.loads(row["graph"]) if row.get("graph") else {}
    except ValueError:
        request, graph = {}, {}
    kind = row.get("kind") or ""
    outputs = [nid for nid, spec in (graph.get("nodes") or {}).items()
               if isinstance(spec, dict) and spec.get("type") == "output"]
    # output nodes run in graph order; map each result layer to its node when the counts agree
    try:
        from .graph import graph as graphs
        outputs = graphs.validate(graph).output_nodes()
    except Exception:
        pass
    user = server.db.sync(lambda db: db.execute("SELECT name FROM users WHERE id = ?", [row["user_id"]]).fetchone())
    parent = request.get("recall") if kind != "graph" else None
    if parent is None:
        shas = _input_shas(kind, request, graph)
        if shas:
            parent = server.db.sync(_image_by_sha, row["user_id"], shas)
    hashes: dict[str, tuple[str, str] | None] = {}
    for i, layer in enumerate(layers):
        try:
            out_id = outputs[i] if len(outputs) == len(layers) else None
            _record_layer(server, ctx, row, request, graph, layer, out_id, parent, user[0] if user else None,
                          hashes)
        except Exception:
            log.exception("gallery: could not record layer %d of job %s", i, row.get("id"))


def _model_hash_for(ctx, name: str | None, cache: dict) -> tuple[str, str] | None:
    if not name:
        return None
    if name not in cache:
        try:
            entry = ctx.queue.registry.get(name)
            cache[name] = model_hash(entry.path, entry.sha256)
        except Exception:
            log.warning("gallery: cannot hash model %s", name, exc_info=True)
            cache[name] = None
    return cache[name]


def _record_layer(server, ctx, row, request, graph, layer, out_id, parent, user_name, hashes):
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
    mh = _model_hash_for(ctx, facts.get("model"), hashes)
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

    rgba = np.frombuffer(server.blobs.read(layer["sha256"]), np.uint8).reshape(layer["h"], layer["w"], 4)
    png = encode_png(rgba, meta)
    thumb, tw, th = encode_thumbnail(rgba)
    day = time.localtime(created)
    rel = Path("images") / f"{day.tm_year:04d}" / f"{day.tm_mon:02d}" / f"{day.tm_mday:02d}" / f"{image_id}.png"
    dest = server.config.data_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{image_id}.tmp")
    with open(tmp, "wb") as f:
        f.write(png)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    tsha, tsize = server.blobs.write(thumb)

    def insert(db):
        from .ops.blobs import record
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

    server.db.sync(insert)
    layer["image_id"] = image_id


def _image_by_sha(db, uid: int, shas: list[str]) -> str | None:
    marks = ",".join("?" * len(shas))
    # the first image with these pixels: later identical ones are recalls of it
    hit = db.execute(f"SELECT id FROM images WHERE user_id = ? AND sha256 IN ({marks}) ORDER BY seq LIMIT 1",
                     [uid, *shas]).fetchone()
    return hit[0] if hit else None


# ---- queries (database thread) -------------------------------------------------------------------------------------
def summary(row: dict) -> dict:
    return {"id": row["id"], "job": row["job_id"], "created": row["created"], "app": row["app"],
            "document": row["document"], "board": row["board_id"], "starred": bool(row["starred"]),
            "mode": row["mode"], "prompt": row["prompt"], "negative_prompt": row["negative_prompt"],
            "seed": row["seed"], "steps": row["steps"], "guidance": row["guidance"], "model": row["model"],
            "model_hash": row["model_hash"], "name": row["name"], "w": row["w"], "h": row["h"], "x": row["x"],
            "y": row["y"], "parent": row["parent"], "owner": row["user_id"],
            "layer": {"sha256": row["sha256"], "w": row["w"], "h": row["h"], "format": "rgba8", "x": row["x"],
                      "y": row["y"], "name": row["name"]},
            "thumbnail": ({"sha256": row["thumb_sha256"], "w": row["thumb_w"], "h": row["thumb_h"],
                           "format": "webp"} if row["thumb_sha256"] else None)}


def get_row(db, image_id: str, uid: int, admin: bool) -> dict:
    rows = list(db.query("SELECT * FROM images WHERE id = ?", [image_id]))
    if not rows or (rows[0]["user_id"] != uid and not admin):
        raise NotFound(f"no image {image_id}")     # another user's image looks like a missing one
    return rows[0]


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_images(db, uid: int, admin: bool, *, everyone: bool = False, app: str | None = None,
                document: str | None = None, board: str | None = None, unsorted: bool = False,
                starred: bool | None = None, q: str | None = None, limit: int = 50, offset: int = 0,
                cursor: int | None = None) -> tuple[list[dict], int]:
    where, params = ["1=1"], []
    if not (admin and everyone):
        where.append("user_id = ?")
        params.append(uid)
    if app:
        where.append("app = ?")
        params.append(app)
    if document:
        where.append("document = ?")
        params.append(document)
    if board:
        where.append("board_id = ?")
        params.append(board)
    if unsorted:
        where.append("board_id IS NULL")
    if starred is not None:
        where.append("starred = ?")
        params.append(int(starred))
    for word in (q or "").split():
        where.append("prompt LIKE ? ESCAPE '\\'")   # LIKE is case-insensitive for ASCII
        params.append(_like(word))
    total = db.execute(f"SELECT COUNT(*) FROM images WHERE {' AND '.join(where)}", params).fetchone()[0]
    if cursor is not None:
        where.append("seq < ?")
        params.append(cursor)
    rows = list(db.query(f"SELECT * FROM images WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ? OFFSET ?",
                         [*params, limit, offset]))
    return rows, total


def delete_image(db, image_id: str, uid: int, admin: bool) -> dict:
    row = get_row(db, image_id, uid, admin)
    db.execute("DELETE FROM images WHERE id = ?", [image_id])
    db.execute("UPDATE images SET parent = NULL WHERE parent = ?", [image_id])
    return row


def star(db, image_id: str, uid: int, admin: bool, starred: bool) -> None:
    get_row(db, image_id, uid, admin)
    db.execute("UPDATE images SET starred = ? WHERE id = ?", [int(starred), image_id])


# boards ---------------------------------------------------------------------------------------------------------
def board_public(row: dict, count: int = 0) -> dict:
    return {"id": row["id"], "name": row["name"], "created": row["created"], "owner": row["user_id"],
            "count": count}


def get_board(db, board_id: str, uid: int, admin: bool) -> dict:
    rows = list(db.query("SELECT * FROM boards WHERE id = ?", [board_id]))
    if not rows or (rows[0]["user_id"] != uid and not admin):
        raise NotFound(f"no board {board_id}")
    return rows[0]


def _name_free(db, owner: int, name: str, except_id: str | None = None):
    hit = db.execute("SELECT id FROM boards WHERE user_id = ? AND name = ? AND id IS NOT ?",
                     [owner, name, except_id]).fetchone()
    if hit:
        raise BadRequest(f"you already have a board named {name!r}", details={"field": "name", "board": hit[0]})


def create_board(db, uid: int, name: str) -> dict:
    _name_free(db, uid, name)
    row = {"id": secrets.token_hex(6), "user_id": uid, "name": name, "created": time.time()}
    db["boards"].insert(row)
    return board_public(row)


def list_boards(db, uid: int, admin: bool, everyone: bool) -> list[dict]:
    sql = ("SELECT b.*, (SELECT COUNT(*) FROM images i WHERE i.board_id = b.id) AS n FROM boards b")
    params: list = []
    if not (admin and everyone):
        sql += " WHERE b.user_id = ?"
        params.append(uid)
    sql += " ORDER BY b.name COLLATE NOCASE, b.created"
    return [board_public(r, r["n"]) for r in db.query(sql, params)]


def rename_board(db, board_id: str, uid: int, admin: bool, name: str) -> dict:
    row = get_board(db, board_id, uid, admin)
    _name_free(db, row["user_id"], name, board_id)
    db.execute("UPDATE boards SET name = ? WHERE id = ?", [name, board_id])
    n = db.execute("SELECT COUNT(*) FROM images WHERE board_id = ?", [board_id]).fetchone()[0]
    return board_public({**row, "name": name}, n)


def delete_board(db, board_id: str, uid: int, admin: bool) -> int:
    """Delete a board; its images stay in the gallery, on no board. Returns how many were moved out."""
    get_board(db, board_id, uid, admin)
    n = db.execute("UPDATE images SET board_id = NULL WHERE board_id = ?", [board_id]).rowcount
    db.execute("DELETE FROM boards WHERE id = ?", [board_id])
    return n


def move_images(db, image_ids: list[str], board_id: str | None, uid: int, admin: bool) -> int:
    rows = [get_row(db, i, uid, admin) for i in image_ids]
    if board_id is not None:
        board = get_board(db, board_id, uid, admin)
        for r in rows:
            if r["user_id"] != board["user_id"]:
                raise BadRequest(f"image {r['id']} and board {board_id} belong to different users",
                                 details={"image": r["id"]})
    marks = ",".join("?" * len(image_ids))
    return db.execute(f"UPDATE images SET board_id = ? WHERE id IN ({marks})", [board_id, *image_ids]).rowcount


# ---- recall --------------------------------------------------------------------------------------------------------
async def resolve_recall(ctx, args):
    """generate with recall: the recalled image's params, overridden by every argument the caller gave."""
    from pydantic import ValidationError

    from .ops.jobs import GenerateArgs
    from .server import _bad_args

    row = await ctx.server.db.run(get_row, args.recall, ctx.conn.uid, ctx.conn.is_admin)
    if not row["params"]:
        raise BadRequest(f"image {args.recall} was made by a node graph, not by generate: resubmit its graph "
                         "(images.get returns it) with graph.submit", details={"field": "recall"})
    params = json.loads(row["params"])
    given = args.model_dump(include=set(args.model_fields_set) - {"recall"})
    try:
        merged = GenerateArgs.model_validate({**params, **given})
    except ValidationError as exc:
        raise _bad_args("generate", exc) from None
    merged.recall = args.recall
    return merged
