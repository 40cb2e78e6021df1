"""Presets for controls and references (strength, range, preprocessor per kind of control model), as data:
engine/configs/control_presets.json. models.list gives each ControlNet / T2I-Adapter / IP-Adapter the preset its
name matches, for a client to fill a new control with; the engine's own defaults for generate do not change."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

PRESETS_FILE = Path(__file__).resolve().parent / "configs" / "control_presets.json"
_GROUP = {"controlnet": "control", "t2i_adapter": "control", "ip_adapter": "reference"}


@lru_cache(maxsize=1)
def _presets() -> dict:
    return json.loads(PRESETS_FILE.read_text(encoding="utf-8"))


def preset_for(model_type: str, name: str) -> dict | None:
    """The preset ({kind, strength, start, end[, preprocess]}) for a model of this type and name, or None for
    types that are not controls or references."""
    group = _GROUP.get(model_type)
    if group is None:
        return None
    lowered = name.lower()
    for entry in _presets()[group]:
        if any(m in lowered for m in entry["match"]):
            return {k: v for k, v in entry.items() if k != "match"}
    return None
