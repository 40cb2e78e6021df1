"""GIMP-independent parts of the Paintbridge GIMP plug-in: settings file, request regions, request parameters.

No `gi` import here, so the host test suite can unit-test it with plain Python. Pixel formats, hashing, masks
and crops live in the shared client (`protocol.pixels`); nothing here re-implements them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from protocol.pixels import context_region as _context
from protocol.pixels import round8

SETTINGS_FILE = "settings.json"
DEFAULT_TIMEOUT = 900.0

# Ranges of the procedures' numeric arguments (GIMP int arguments are 32-bit).
STEPS_MAX = 500
GUIDANCE_MAX = 50.0
SEED_MAX = 2 ** 31 - 1
BATCH_MAX = 16


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def x2(self) -> int:
        return self.x + self.w

    @property
    def y2(self) -> int:
        return self.y + self.h

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    def intersect(self, other: "Rect") -> "Rect":
        x, y = max(self.x, other.x), max(self.y, other.y)
        x2, y2 = min(self.x2, other.x2), min(self.y2, other.y2)
        return Rect(x, y, max(0, x2 - x), max(0, y2 - y))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h


def context_region(selection: Rect, image: Rect) -> Rect:
    """The part of the image sent with an inpaint request: the selection plus the same context the engine
    generates with (protocol.pixels.context_region), clipped to the image."""
    x, y, w, h = _context((selection.x - image.x, selection.y - image.y, selection.w, selection.h), image.w, image.h)
    return Rect(x + image.x, y + image.y, w, h)


def local_rect(r: Rect, origin: Rect) -> Rect:
    """r in the coordinates of a buffer whose top-left is origin's."""
    return Rect(r.x - origin.x, r.y - origin.y, r.w, r.h)


# ---- settings -----------------------------------------------------------------------------------------------

def load_settings(config_dir: str) -> dict:
    try:
        with open(os.path.join(config_dir, SETTINGS_FILE), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_settings(config_dir: str, settings: dict) -> None:
    os.makedirs(config_dir, exist_ok=True)
    path = os.path.join(config_dir, SETTINGS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def resolve_url(arg: str, settings: dict, default: str) -> str:
    """Procedure argument > $PAINTBRIDGE_URL > settings file > protocol default."""
    return (arg or "").strip() or os.environ.get("PAINTBRIDGE_URL", "").strip() or settings.get("url") or default


def model_name(entry) -> str:
    """A models.list entry may be a name or a map."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return str(entry.get("name") or entry.get("id") or "")
    return ""


def pick_model(arg: str, settings: dict, models: list) -> str:
    if arg:
        return arg
    if settings.get("model"):
        return settings["model"]
    for m in models:
        if isinstance(m, dict) and m.get("default"):
            return model_name(m)
    return model_name(models[0]) if models else ""


def generate_params(mode: str, model: str, *, prompt: str = "", negative_prompt: str = "",
                    width: int | None = None, height: int | None = None, steps: int = 0, guidance: float = 0.0,
                    seed: int = -1, strength: float | None = None, batch: int = 1,
                    extra: dict | None = None) -> dict:
    """The `generate` request args (without image/mask, which the session uploads and fills in).
    width/height are the *generation* size (multiples of 8); leave them out for modes with an image and the
    engine picks the model's native size. Zero/negative steps, guidance and seed mean "server default" and are
    left out; so is an empty model (upscale needs none)."""
    params = {"mode": mode, "prompt": prompt, "negative_prompt": negative_prompt, "batch": max(1, int(batch))}
    if model:
        params["model"] = model
    if width is not None and height is not None:
        params["width"], params["height"] = round8(width), round8(height)
    if steps > 0:
        params["steps"] = int(steps)
    if guidance > 0:
        params["guidance"] = float(guidance)
    if seed >= 0:
        params["seed"] = int(seed)
    if strength is not None:
        params["strength"] = float(strength)
    params.update(extra or {})
    return params


def timeout_seconds() -> float:
    try:
        return float(os.environ.get("PAINTBRIDGE_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
