"""Which models exist: the entries of the configured model folders, by name.

A name is the file's stem or the folder's name. Entries are re-listed when a name is not found, so a model
copied into a folder while the engine runs is picked up; one removed from disk is reported, not crashed on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadRequest

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass
class ModelEntry:
    name: str
    path: Path
    family: str | None
    type: str = "main"
    format: str = "diffusers"

    def public(self) -> dict:
        return {"name": self.name, "type": self.type, "base": self.family, "format": self.format}


class ModelRegistry:
    def __init__(self, dirs: list[Path]):
        self.dirs = dirs
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self.rescan()

    def rescan(self) -> None:
        from .loader import detect_family

        found: dict[str, ModelEntry] = {}
        for root in self.dirs:
            if not root.is_dir():
                continue
            for p in sorted(root.iterdir()):
                if p.is_dir() and (p / "model_index.json").exists():
                    fmt = "diffusers"
                elif p.is_file() and p.suffix.lower() in MODEL_SUFFIXES:
                    fmt = "checkpoint"
                else:
                    continue
                try:
                    family = detect_family(p)
                except Exception:
                    continue   # not a main model we can use; the models manager probes other types
                found.setdefault(p.stem if p.is_file() else p.name, ModelEntry(p.stem if p.is_file() else p.name,
                                                                               p, family, "main", fmt))
        with self._lock:
            self._entries = found

    def list(self) -> list[ModelEntry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def get(self, name: str) -> ModelEntry:
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or not entry.path.exists():
            self.rescan()
            with self._lock:
                entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(e.name for e in self.list()) or "none: start the engine with --models DIR"
            raise BadRequest(f"unknown model {name!r} (available: {known})", details={"model": name})
        return entry


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
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None
