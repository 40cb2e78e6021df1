"""Which model made an image: a model's content hash for the gallery's metadata, cheap enough for a job's tail."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from ..models.registry import content_hash

# A model whose files add up to at most this many bytes, and whose full hash the registry has not computed yet,
# is hashed in full now ("sha256": the same value models.list reports); a bigger one by its configs, its
# safetensors headers (tensor names, dtypes, shapes, offsets) and file sizes ("index"): reading gigabytes of
# weights would stall the job's result for many seconds (the registry's background hasher does that later).
FULL_HASH_LIMIT = 256 * 1024 * 1024

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
