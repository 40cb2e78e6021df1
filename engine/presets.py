"""Few-step sampling presets (LCM, Hyper-SD, Lightning, Turbo), picked by name in generate's `preset`.

The set-ups are data (configs/presets.json): sampler, schedule, steps, guidance, the bases each works for and,
per base, the usual file names of the LoRA it needs. `apply` fills a request from one: a value the client gave
itself wins; the LoRA is found among the registered LoRAs of the model's base by those names (or the one named
in config.toml `[preset_loras]` as "PRESET/BASE" = "lora name"); a missing one is a clear error naming it.
For img2img-like modes the schedule is lengthened so that strength × steps still denoises `steps` times (a
6-step preset at strength 0.3 would otherwise run one step, or none).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import BadRequest

PRESETS: dict[str, dict] = {k: v for k, v in json.loads(
    (Path(__file__).resolve().parent / "configs" / "presets.json").read_text(encoding="utf-8")).items()
    if not k.startswith("_")}


def public() -> list[dict]:
    """What models.list-like answers show: name, label, steps, guidance, bases."""
    return [{"name": k, "label": p["label"], "steps": p["steps"], "guidance": p["guidance"], "bases": p["bases"],
             "lora": bool(p.get("lora"))} for k, p in PRESETS.items()]


def get(name: str) -> dict:
    key = name.strip().lower()
    if key not in PRESETS:
        raise BadRequest(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}",
                         details={"field": "preset", "choices": list(PRESETS)})
    return PRESETS[key]


def find_lora(name: str, preset: dict, base: str | None, loras: list, configured: dict) -> str | None:
    """The registered LoRA (a name among `loras`, ModelEntry-likes of type lora) that `preset` needs on a model
    of `base`; None when it needs none. Raises BadRequest naming what is missing."""
    wanted = preset.get("lora", {}).get(base or "")
    if not preset.get("lora"):
        return None
    label = preset["label"]
    pinned = configured.get(f"{name}/{base}")
    if pinned:
        if any(e.name == pinned for e in loras):
            return pinned
        raise BadRequest(f"preset {label}: the LoRA {pinned!r} set in config.toml [preset_loras] for "
                         f"{(base or '?').upper()} is not registered", details={"field": "preset", "lora": pinned})
    if not wanted:
        raise BadRequest(f"preset {label} has no LoRA for {(base or '?').upper()} models", details={"field": "preset"})
    by_name = {e.name.lower(): e.name for e in loras if (getattr(e, "family", None) or base) == base}
    for stem in wanted:
        if stem.lower() in by_name:
            return by_name[stem.lower()]
    raise BadRequest(f"preset {label} needs its LoRA for {base.upper()}: {wanted[0]}.safetensors (or "
                     f"{', '.join(wanted[1:]) or 'a LoRA named in config.toml [preset_loras]'}) is not among the "
                     f"models; put it in a models folder", details={"field": "preset", "lora": wanted[0]})


def apply(args, name: str, base: str | None, model: str, loras: list, configured: dict,
          max_steps: int) -> tuple[str, float] | None:
    """Fill GenerateArgs `args` from preset `name` for a model of `base` (given fields win); returns the LoRA it
    needs as (name, weight) for the caller to add, or None. Raises BadRequest for an unknown preset, a model of a
    base it does not work for, or its missing LoRA."""
    preset = get(name)
    key = name.strip().lower()
    if base not in preset["bases"]:
        raise BadRequest(f"preset {preset['label']} is for {', '.join(b.upper() for b in preset['bases'])} "
                         f"models; {model!r} is {(base or 'unknown').upper()}",
                         details={"field": "preset", "base": base, "bases": preset["bases"]})
    lora = find_lora(key, preset, base, loras, configured)
    given = set(args.model_fields_set)
    for field in ("scheduler", "schedule", "guidance"):
        if field not in given:
            setattr(args, field, preset[field])
    if "steps" not in given:
        steps = preset["steps"]
        if args.mode != "txt2img" and 0 < args.strength < 1:
            steps = math.ceil(steps / args.strength)
        args.steps = min(steps, max_steps)
    if lora is None or any(ref.model == lora for ref in args.loras):
        return None
    return lora, float(preset.get("lora_weight", 1.0))
