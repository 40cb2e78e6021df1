"""The model manager: which models exist, what they are, where they live. Records live in SQLite (`models`).

- The engine's `--models DIR`s are scanned at start (and again, at most once a second, when a name is not
  found, so a model copied into a folder while the engine runs is picked up). `paintbridge models scan DIR`
  registers any other folder; `models install PATH [--copy]` registers one file/folder (copied into
  DATA_DIR/models/<type>/ with --copy). Every entry is probed from headers/configs only (engine/models/probe.py).
- A name is the file's stem or the folder's name; names with path separators, control characters or a leading
  dot are refused. When two files share a stem, the first one found keeps the name; the other is reported.
- Files changed on disk (size or mtime) are re-probed when next used or listed; removed ones are dropped
  (scanned) or reported as missing (installed); nothing crashes on them.
- Content hashes (full SHA-256 of every byte; for folders over their files' names and hashes) are computed in
  a background thread by the engine, or at once with `models scan/install --hash`; until then `sha256` is null.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadRequest, ModelError

log = logging.getLogger("paintbridge.models")

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
MAX_DEPTH = 4
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f<>:\"|?*]")
_COLS = ("name", "path", "type", "base", "variant", "prediction", "format", "size", "mtime", "sha256", "source",
         "hidden", "added")


def check_name(name: str) -> str:
    """A model name as used in requests and file names: no traversal, no separators, no control characters."""
    if not isinstance(name, str) or not name or len(name) > 200 or name != name.strip() or name.startswith(".") \
            or _BAD_NAME.search(name):
        raise BadRequest(f"invalid model name {name!r}: 1-200 characters, no leading dot, no / \\ : < > \" | ? * "
                         "or control characters", details={"model": str(name)[:200]})
    return name


@dataclass
class ModelEntry:
    name: str
    path: Path
    family: str | None           # the base: sd1 | sd2 | sdxl | flux | None (upscalers)
    type: str = "main"
    format: str = "diffusers"
    variant: str = "normal"
    prediction: str | None = None
    size: int = 0
    mtime: float = 0.0
    sha256: str | None = None
    source: str = "scan"         # scan | install | copy
    missing: bool = False

    @property
    def base(self) -> str | None:
        return self.family

    def public(self, admin: bool = False) -> dict:
        out = {"name": self.name, "type": self.type, "base": self.family, "variant": self.variant,
               "prediction_type": self.prediction, "format": self.format, "size": self.size, "sha256": self.sha256}
        if self.missing:
            out["missing"] = True
        if admin:
            out["path"] = str(self.path)
            out["source"] = self.source
        return out


def _signature(path: Path) -> tuple[int, float] | None:
    """(total bytes, newest mtime) of a file or folder; None if it is gone."""
    try:
        if path.is_dir():
            size, mtime = 0, path.stat().st_mtime
            for p in path.rglob("*"):
                if p.is_file():
                    st = p.stat()
                    size += st.st_size
                    mtime = max(mtime, st.st_mtime)
            return size, mtime
        st = path.stat()
        return st.st_size, st.st_mtime
    except OSError:
        return None


def _is_model_folder(p: Path) -> bool:
    return any((p / f).is_file() for f in ("model_index.json", "config.json", "pytorch_lora_weights.safetensors",
                                           "learned_embeds.safetensors", "pytorch_lora_weights.bin",
                                           "learned_embeds.bin"))


def candidates(root: Path, unreadable: list[tuple[str, str]] | None = None) -> list[Path]:
    """Model files and model folders under root (not descending into model folders or hidden entries). Each
    folder is entered once, whatever symlinks lead to it again (a loop ends there); an entry that cannot be read
    is listed in `unreadable` (path, why) and the walk goes on."""
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def walk(d: Path, depth: int):
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            children = sorted(d.iterdir())
        except OSError as exc:
            if unreadable is not None:
                unreadable.append((str(d), f"cannot read: {exc.strerror or exc}"))
            return
        for p in children:
            if p.name.startswith("."):
                continue
            try:
                if p.is_dir():
                    if _is_model_folder(p):
                        out.append(p)
                    elif depth < MAX_DEPTH:
                        walk(p, depth + 1)
                elif p.is_file() and p.suffix.lower() in MODEL_SUFFIXES:
                    out.append(p)
            except OSError as exc:   # permission denied on a stat, a file vanishing mid-scan
                if unreadable is not None:
                    unreadable.append((str(p), f"cannot read: {exc.strerror or exc}"))

    if Path(root).is_dir():
        walk(Path(root), 1)
    return out


def content_hash(path: Path, stop: threading.Event | None = None) -> str | None:
    """Full SHA-256 of a file; of a folder: over its files' relative names and hashes. None if stopped."""
    def file_hash(f: Path) -> bytes | None:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while True:
                if stop is not None and stop.is_set():
                    return None
                chunk = fh.read(4 * 1024 * 1024)
                if not chunk:
                    return h.digest()
                h.update(chunk)

    path = Path(path)
    if path.is_file():
        d = file_hash(path)
        return d.hex() if d is not None else None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        d = file_hash(f)
        if d is None:
            return None
        h.update(str(f.relative_to(path)).encode() + b"\0" + d)
    return h.hexdigest()


@dataclass
class ScanReport:
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]
    skipped: list[tuple[str, str]]   # (path, reason)

    def public(self) -> dict:
        return {"added": self.added, "updated": self.updated, "unchanged": len(self.unchanged),
                "removed": self.removed, "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}


class ModelRegistry:
    def __init__(self, dirs: list[Path], db_path: Path | None = None, install_dir: Path | None = None,
                 scan: bool = True):
        self.dirs = [Path(d).expanduser() for d in dirs]
        self.install_dir = Path(install_dir) if install_dir else None
        self._lock = threading.RLock()
        if db_path is None:
            from ..store.db import SCHEMA
            self.conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            for stmt in SCHEMA:
                self.conn.execute(stmt)
        else:
            from ..store.db import connect
            self.conn = connect(Path(db_path)).conn
        self.conn.row_factory = sqlite3.Row
        self._last_rescan = 0.0
        self._hash_wake = threading.Event()
        self._stop = threading.Event()
        self._hasher: threading.Thread | None = None
        if scan:
            self.rescan()

    # -- rows
    def _q(self, sql: str, params=()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self.conn.execute(sql, params))

    def _x(self, sql: str, params=()) -> int:
        with self._lock:
            return self.conn.execute(sql, params).rowcount

    @staticmethod
    def _entry(row) -> ModelEntry:
        return ModelEntry(name=row["name"], path=Path(row["path"]), family=row["base"], type=row["type"],
                          format=row["format"], variant=row["variant"] or "normal", prediction=row["prediction"],
                          size=row["size"], mtime=row["mtime"], sha256=row["sha256"], source=row["source"])

    def _row(self, name: str):
        rows = self._q("SELECT * FROM models WHERE name = ?", [name])
        return rows[0] if rows else None

    def _upsert(self, name: str, path: Path, info: dict, sig: tuple[int, float], source: str,
                sha256: str | None = None):
        with self._lock:
            self.conn.execute(
                "INSERT INTO models (name, path, type, base, variant, prediction, format, size, mtime, sha256, source,"
                " hidden, added) VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?) ON CONFLICT(name) DO UPDATE SET path=excluded.path,"
                " type=excluded.type, base=excluded.base, variant=excluded.variant, prediction=excluded.prediction,"
                " format=excluded.format, size=excluded.size, mtime=excluded.mtime, sha256=excluded.sha256,"
                " source=excluded.source, hidden=0",
                [name, str(path), info["type"], info["base"], info["variant"], info["prediction_type"], info["format"],
                 sig[0], sig[1], sha256, source, time.time()])
        self._hash_wake.set()

    # -- scanning
    def scan(self, root: Path, progress=None, source: str = "scan") -> ScanReport:
        """Register every model under root; re-probe changed ones; drop scanned entries whose files are gone."""
        from .probe import probe

        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise ModelError(f"{root} is not a folder")
        rep = ScanReport([], [], [], [], [])
        found = candidates(root, rep.skipped)
        by_path = {r["path"]: r for r in self._q("SELECT * FROM models")}
        for p in found:
            if progress is not None:
                progress(p)
            try:
                p = p.resolve()
            except OSError as exc:
                rep.skipped.append((str(p), f"cannot read: {exc.strerror or exc}"))
                continue
            sig = _signature(p)
            if sig is None:
                continue
            row = by_path.get(str(p))
            if row is not None and row["size"] == sig[0] and row["mtime"] == sig[1]:
                rep.unchanged.append(row["name"])
                continue
            if row is not None and row["hidden"]:
                continue
            try:
                info = probe(p)
            except ModelError as e:
                rep.skipped.append((str(p), e.message if hasattr(e, "message") else str(e)))
                continue
            except Exception as e:   # a probe bug must not stop a scan
                rep.skipped.append((str(p), f"{type(e).__name__}: {e}"[:300]))
                continue
            if row is not None:
                self._upsert(row["name"], p, info, sig, row["source"])
                rep.updated.append(row["name"])
                continue
            name = p.stem if p.is_file() else p.name
            try:
                check_name(name)
            except BadRequest as e:
                rep.skipped.append((str(p), e.message))
                continue
            other = self._row(name)
            if other is not None and other["path"] != str(p) and Path(other["path"]).exists():
                rep.skipped.append((str(p), f"the name {name!r} is taken by {other['path']}"))
                continue
            self._upsert(name, p, info, sig, source)
            rep.added.append(name)
        for r in self._q("SELECT * FROM models WHERE source = 'scan'"):
            rp = Path(r["path"])
            if (rp == root or root in rp.parents) and not rp.exists():
                self._x("DELETE FROM models WHERE name = ?", [r["name"]])
                rep.removed.append(r["name"])
        return rep

    def rescan(self) -> None:
        self._last_rescan = time.monotonic()
        for root in self.dirs:
            if not root.is_dir():
                continue
            try:
                rep = self.scan(root)
            except Exception:
                log.exception("scanning %s failed", root)
                continue
            for path, reason in rep.skipped:
                log.info("models: skipped %s: %s", path, reason)

    # -- manager operations
    def install(self, path: Path, copy: bool = False, name: str | None = None, move: bool = False,
                sha256: str | None = None) -> ModelEntry:
        """Register a model file/folder where it is, or copied (copy) or renamed (move: a finished download in
        the install folder's filesystem) into DATA_DIR/models/TYPE/; sha256, when the caller just computed it,
        spares the background hasher a second read."""
        from .probe import probe

        src = Path(path).expanduser().resolve()
        info = probe(src)
        name = check_name(name or (src.stem if src.is_file() else src.name))
        dest, source = src, "install"
        existing = self._row(name)
        if existing is not None and existing["path"] != str(src) and not (copy and existing["source"] == "copy"):
            raise BadRequest(f"a model named {name!r} already exists ({existing['path']}); remove it first or "
                             "choose another name", details={"model": name})
        if copy or move:
            if self.install_dir is None:
                raise BadRequest("this registry has no install folder for --copy")
            folder = (self.install_dir / info["type"]).resolve()
            dest = (folder / (name + src.suffix.lower() if src.is_file() else name)).resolve()
            if folder not in dest.parents:
                raise BadRequest(f"invalid model name {name!r}")
            if dest.exists():
                raise BadRequest(f"{dest} already exists", details={"model": name})
            folder.mkdir(parents=True, exist_ok=True)
            if move:
                os.replace(src, dest)
            else:
                tmp = folder / f".partial-{os.getpid()}-{dest.name}"
                try:
                    if src.is_dir():
                        shutil.copytree(src, tmp)
                    else:
                        shutil.copy2(src, tmp)
                    os.replace(tmp, dest)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
            source = "copy"
        sig = _signature(dest)
        try:
            self._upsert(name, dest, info, sig, source, sha256)
        except BaseException:
            if move:   # never leave an unregistered file behind in the install folder
                dest.unlink(missing_ok=True)
            raise
        return self._entry(self._row(name))

    def remove(self, name: str) -> ModelEntry:
        """Forget a model. A copy in the install folder is deleted; a file in a scanned folder stays on disk and
        is hidden from later scans (install it again to bring it back); an installed path is left alone."""
        check_name(name)
        row = self._row(name)
        if row is None or row["hidden"]:
            raise BadRequest(f"unknown model {name!r}", details={"model": name})
        entry = self._entry(row)
        if row["source"] == "scan":
            self._x("UPDATE models SET hidden = 1 WHERE name = ?", [name])
        else:
            self._x("DELETE FROM models WHERE name = ?", [name])
            if row["source"] == "copy" and self.install_dir is not None:
                p, inst = entry.path.resolve(), self.install_dir.resolve()
                if inst in p.parents and p.exists():
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        return entry

    # -- lookups
    def _refresh(self, row) -> ModelEntry:
        """The entry, re-probed if its file changed; missing=True if it is gone."""
        entry = self._entry(row)
        sig = _signature(entry.path)
        if sig is None:
            entry.missing = True
            return entry
        if (sig[0], sig[1]) != (row["size"], row["mtime"]):
            from .probe import probe
            try:
                info = probe(entry.path)
            except ModelError as e:
                log.warning("model %s changed on disk and is no longer usable: %s", entry.name, e)
                entry.missing = True
                return entry
            self._upsert(entry.name, entry.path, info, sig, row["source"])
            entry = self._entry(self._row(entry.name))
        return entry

    def list(self, type: str | None = None, base: str | None = None) -> list[ModelEntry]:
        sql, params = "SELECT * FROM models WHERE hidden = 0", []
        if type:
            sql += " AND type = ?"
            params.append(type)
        if base:
            sql += " AND base = ?"
            params.append(base)
        out = [self._refresh(r) for r in self._q(sql + " ORDER BY name", params)]
        return [e for e in out if (not type or e.type == type) and (not base or e.family == base)]

    def find(self, name: str) -> ModelEntry | None:
        """The entry named `name` (no rescan, no errors), or None."""
        try:
            check_name(name)
        except BadRequest:
            return None
        row = self._row(name)
        if row is None or row["hidden"]:
            return None
        entry = self._refresh(row)
        return None if entry.missing else entry

    def get(self, name: str, type: str | None = None) -> ModelEntry:
        check_name(name)
        row = self._row(name)
        if (row is None or row["hidden"] or not Path(row["path"]).exists()) and \
                time.monotonic() - self._last_rescan > 1.0:
            self.rescan()
            row = self._row(name)
        if row is None or row["hidden"]:
            avail = [e.name for e in self.list(type=type)]
            known = ", ".join(avail[:50]) or "none: start the engine with --models DIR or `paintbridge models install`"
            raise BadRequest(f"unknown model {name!r} (available: {known})", details={"model": name})
        entry = self._refresh(row)
        if entry.missing:
            raise BadRequest(f"model {name!r} is registered but its file {entry.path} is missing or unreadable",
                             details={"model": name})
        if type and entry.type != type:
            article = "an" if entry.type[0] in "aeiou" else "a"
            raise BadRequest(f"{name!r} is {article} {entry.type} model, not a {type} model", details={"model": name})
        return entry

    # -- a pool worker's copy (engine/pool/): the engine's names and paths, on another process or machine
    def rows(self) -> list[dict]:
        """Every registered model as plain data, for mirror()."""
        return [dict(r) for r in self._q("SELECT * FROM models")]

    def mirror(self, rows: list[dict]) -> None:
        """Hold exactly `rows` (another registry's rows()), in this registry's own (in-memory) table."""
        with self._lock:
            known = [c[1] for c in self.conn.execute("PRAGMA table_info(models)")]
            self.conn.execute("DELETE FROM models")
            for r in rows:
                cols = [c for c in known if c in r]
                self.conn.execute(f"INSERT INTO models ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                  [r[c] for c in cols])

    # -- hashing
    def hash_pending(self, stop: threading.Event | None = None, progress=None) -> int:
        """Compute missing content hashes; returns how many were stored."""
        done = 0
        for row in self._q("SELECT * FROM models WHERE sha256 IS NULL AND hidden = 0 ORDER BY size"):
            if stop is not None and stop.is_set():
                break
            p = Path(row["path"])
            before = _signature(p)
            if before is None or before != (row["size"], row["mtime"]):
                continue
            if progress is not None:
                progress(row["name"])
            try:
                digest = content_hash(p, stop)
            except OSError:
                continue
            if digest is None or _signature(p) != before:
                continue
            done += self._x("UPDATE models SET sha256 = ? WHERE name = ? AND size = ? AND mtime = ?",
                            [digest, row["name"], row["size"], row["mtime"]])
        return done

    def start_hasher(self) -> None:
        if self._hasher is not None:
            return

        def loop():
            while not self._stop.is_set():
                self._hash_wake.wait(60)
                self._hash_wake.clear()
                if self._stop.is_set():
                    break
                try:
                    self.hash_pending(self._stop)
                except Exception:
                    log.exception("model hashing failed")

        self._hasher = threading.Thread(target=loop, name="paintbridge-model-hash", daemon=True)
        self._hash_wake.set()
        self._hasher.start()

    def stop(self) -> None:
        self._stop.set()
        self._hash_wake.set()


# The image size each base was trained at, for a model whose configs do not say: SD2 at 768 for its v-prediction
# checkpoints (768-v), 512 for epsilon ones (512-base)
NATIVE = {"sd1": 512, "sd2": 768, "sdxl": 1024, "flux": 1024}
_native_cache: dict[tuple, int] = {}


def native_size(entry: ModelEntry) -> int:
    """The side of the square image a main model was trained at (what a client should default to): from its
    configs (a demo model says 64), else by its base and prediction type. Cached per (path, size, mtime)."""
    key = (str(entry.path), entry.size, entry.mtime)
    if key not in _native_cache:
        hint = native_size_hint(entry.path)
        if hint is None and entry.family == "sd2" and entry.prediction == "epsilon":
            hint = 512
        _native_cache[key] = hint or NATIVE.get(entry.family or "sd1", 512)
    return _native_cache[key]


def native_size_hint(path: Path) -> int | None:
    """The model's native image size from its configs, without loading weights (None when unknown)."""
    import json

    files: dict[str, str] = {}
    try:
        if path.is_dir():
            for rel in ("unet/config.json", "transformer/config.json", "vae/config.json"):
                if (path / rel).exists():
                    files[rel] = (path / rel).read_text()
        elif path.suffix == ".safetensors":
            from .loader import META_CONFIGS, read_safetensors_header
            _, meta = read_safetensors_header(path)
            files = json.loads(meta.get(META_CONFIGS, "{}"))
        vae = json.loads(files.get("vae/config.json", "{}"))
        if "unet/config.json" in files:
            unet = json.loads(files["unet/config.json"])
            scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
            return int(unet["sample_size"]) * scale
        if "transformer/config.json" in files and vae.get("sample_size"):
            return int(vae["sample_size"])
    except (OSError, ValueError, KeyError, TypeError, ModelError):
        return None
    return None
