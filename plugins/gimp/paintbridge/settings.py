"""The plug-in's own settings file (GIMP-independent): server address, default model, the last form values of
each dialog, and "Use settings" recalls from the gallery.

Never a password or a token: those live only in protocol.tokens.TokenStore (the keyring, or a 0600 file), and
they are not procedure arguments either, so GIMP's plug-in-settings files cannot hold them.
"""

from __future__ import annotations

import json
import os

from protocol import generate

SETTINGS_FILE = "settings.json"
DEFAULT_TIMEOUT = 900.0

# Ranges of the procedures' numeric arguments (GIMP int arguments are 32-bit).
STEPS_MAX = 500
GUIDANCE_MAX = 50.0
SEED_MAX = 2 ** 31 - 1
BATCH_MAX = 16
CLIP_SKIP_MIN, CLIP_SKIP_MAX = generate.CLIP_SKIP_MIN, generate.CLIP_SKIP_MAX

SECRET_WORDS = ("password", "token")   # argument/value names that must never be stored


def load(config_dir: str) -> dict:
    try:
        with open(os.path.join(config_dir, SETTINGS_FILE), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save(config_dir: str, settings: dict) -> None:
    os.makedirs(config_dir, exist_ok=True)
    path = os.path.join(config_dir, SETTINGS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def update(config_dir: str, **changes) -> dict:
    settings = load(config_dir)
    settings.update(changes)
    save(config_dir, settings)
    return settings


def resolve_url(arg: str, settings: dict, default: str) -> str:
    """Procedure argument > $PAINTBRIDGE_URL > settings file > protocol default."""
    return (arg or "").strip() or os.environ.get("PAINTBRIDGE_URL", "").strip() or settings.get("url") or default


def script_token() -> str | None:
    """A token for non-interactive (script) runs: $PAINTBRIDGE_TOKEN, else the stored sign-in is used. Never a
    procedure argument: GIMP writes arguments to its plug-in-settings files."""
    return os.environ.get("PAINTBRIDGE_TOKEN", "").strip() or None


def pick_model(arg: str, prefs: dict, models: list) -> str:
    """The model to use: the form's, else the default set in Settings (if the engine has it), else the
    engine's default, else its first."""
    names = [m.get("name") for m in models if isinstance(m, dict)]
    if arg:
        return arg
    if prefs.get("model") and (not names or prefs["model"] in names):
        return prefs["model"]
    for m in models:
        if isinstance(m, dict) and m.get("default"):
            return m["name"]
    return names[0] if names else ""


def timeout_seconds() -> float:
    try:
        return float(os.environ.get("PAINTBRIDGE_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


# ---- last form values: kept when a run is canceled or fails (GIMP keeps only a successful run's) -----------------

def remember_form(config_dir: str, procedure: str, values: dict) -> None:
    settings = load(config_dir)
    forms_ = settings.setdefault("forms", {})
    forms_[procedure] = {k: v for k, v in values.items()
                         if isinstance(v, (str, int, float, bool)) and not any(w in k for w in SECRET_WORDS)}
    save(config_dir, settings)


def last_form(config_dir: str, procedure: str) -> dict:
    value = (load(config_dir).get("forms") or {}).get(procedure)
    return dict(value) if isinstance(value, dict) else {}


# ---- "Use settings": recalled values become the defaults of the Generate/Refine/Inpaint dialogs -------------------
#
# GIMP gives an interactive procedure run the argument values of its last successful run, falling back to the
# defaults declared in do_create_procedure. "Use settings" stores the recalled argument values under "recall",
# pending for each of RECALL_PROCS; the next interactive run of each copies them into its config before the dialog
# is built (they replace the last values once) and, when the dialog is accepted, clears its pending mark.

RECALL_PROCS = ("paintbridge-generate", "paintbridge-refine", "paintbridge-inpaint")


# recalled field -> (procedure argument, type, min, max): the ranges declared in paintbridge.py
RECALL_ARGS = {
    "prompt": ("prompt", str, None, None),
    "negative_prompt": ("negative-prompt", str, None, None),
    "model": ("model", str, None, None),
    "lora": ("lora", str, None, None),
    "lora_weight": ("lora-weight", float, -2.0, 2.0),
    "steps": ("steps", int, 0, STEPS_MAX),
    "guidance": ("guidance", float, 0.0, GUIDANCE_MAX),
    "seed": ("seed", int, -1, SEED_MAX),
    "strength": ("strength", float, 0.0, 1.0),
    "batch": ("batch", int, 1, BATCH_MAX),
    "scheduler": ("scheduler", str, None, None),
    "schedule": ("schedule", str, None, None),
    "clip_skip": ("clip-skip", int, CLIP_SKIP_MIN, CLIP_SKIP_MAX),
    "vae": ("vae", str, None, None),
}


def recall_args(values: dict, summary: dict | None = None) -> tuple[dict, list[str]]:
    """Recalled values -> ({procedure argument: value}, [notes about values GIMP's fields cannot hold])."""
    fields, notes = generate.recalled_fields(values, summary, seed_max=SEED_MAX)
    args = {}
    for key, (arg, kind, lo, hi) in RECALL_ARGS.items():
        if fields.get(key) is None:
            continue
        try:
            value = kind(fields[key])
        except (TypeError, ValueError):
            notes.append(f"{key} {fields[key]!r} is not a{'n' if kind is int else ''} {kind.__name__}")
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            notes.append(f"{key.replace('_', ' ')} {value} does not fit GIMP's field ({lo}..{hi}); "
                         f"the dialogs keep their own")
            continue
        args[arg] = value
    return args, notes


def recall_steer_args(values: dict | None, find, slots) -> tuple[dict, list[str]]:
    """A recalled image's control/reference entries as the procedures' slot arguments (SLOT-layer as a layer id,
    -model, -strength, -start, -end, -preprocess). find(wire layer) -> the layer id of the same pixels in the image
    now, or None (protocol.generate.recalled_steering). Slots with nothing recalled are cleared.
    (args, notes about what could not be restored)."""
    args, notes = {}, []
    for kind in ("control", "reference"):
        kept, dropped = generate.recalled_steering((values or {}).get(kind), find)
        notes += dropped
        names = [slot for slot, _label, k in slots if k == kind]
        for slot in names:
            args[f"{slot}-layer"] = None
        for slot, item in zip(names, kept):
            args[f"{slot}-layer"] = item["image"]
            args[f"{slot}-model"] = str(item.get("model") or "")
            for name in ("strength", "start", "end"):
                if isinstance(item.get(name), (int, float)):
                    args[f"{slot}-{name}"] = float(item[name])
            if kind == "control":
                args[f"{slot}-preprocess"] = str(item.get("preprocess") or "")
        if len(kept) > len(names):
            notes.append(f"{len(kept) - len(names)} more {kind}s than the dialogs have rows: left out")
    return args, notes


def store_recall(config_dir: str, image_id: str, args: dict) -> None:
    update(config_dir, recall={"image": image_id, "args": args, "pending": list(RECALL_PROCS)})


def pending_recall(config_dir: str, procedure: str, arg_names) -> dict:
    """The recalled values a procedure's dialog should start from (only the arguments it has), or {}."""
    rec = load(config_dir).get("recall")
    if not isinstance(rec, dict) or procedure not in (rec.get("pending") or []):
        return {}
    names = set(arg_names)
    return {k: v for k, v in (rec.get("args") or {}).items() if k in names}


def recall_used(config_dir: str, procedure: str) -> None:
    """The procedure's dialog was accepted with the recalled values (a canceled one leaves them pending)."""
    settings = load(config_dir)
    rec = settings.get("recall")
    if isinstance(rec, dict) and procedure in (rec.get("pending") or []):
        rec["pending"] = [p for p in rec["pending"] if p != procedure]
        save(config_dir, settings)


# An image a workflow made has no generate settings; "Use settings" on it preselects that workflow, with those
# values, the next time Run workflow's dialog opens (layer values are not kept: the dialog sends the current ones).

def store_workflow_recall(config_dir: str, image_id: str, name: str, values: dict) -> None:
    update(config_dir, recall_workflow={"image": image_id, "name": name,
                                        "values": {k: v for k, v in (values or {}).items()
                                                   if not isinstance(v, dict)}})


def pending_workflow_recall(config_dir: str) -> tuple[str, dict] | None:
    rec = load(config_dir).get("recall_workflow")
    if not isinstance(rec, dict) or not rec.get("name"):
        return None
    return rec["name"], dict(rec.get("values") or {})


def workflow_recall_used(config_dir: str) -> None:
    settings = load(config_dir)
    if settings.pop("recall_workflow", None) is not None:
        save(config_dir, settings)
