"""GIMP-independent parts of "Open from gallery…": the browser's page state and "Use settings" (recall).

No `gi` import here: the host test suite drives it with a real Session against a real engine, without GIMP.
Gallery pages, thumbnails, recall values and the star call come from the shared Session (protocol.session);
this module only keeps the dialog's state and turns recalled values into the plug-in's own argument values.
"""

from __future__ import annotations

from typing import Any

import pb_support as sup
from protocol import forms

PAGE_SIZE = 24
THUMB_SIZE = 96


class GalleryBrowser:
    """What the gallery dialog shows: the current filter, the summaries loaded so far, the cursor for "Load more".

    Every request carries a tag ("gallery", generation); a new search bumps the generation, so a page that
    arrives for an older search is dropped instead of being mixed into the new list."""

    def __init__(self, session, page_size: int = PAGE_SIZE, thumb_size: int = THUMB_SIZE):
        self.session = session
        self.page_size = page_size
        self.thumb_size = thumb_size
        self.query = ""
        self.starred_only = False
        self.items: list[dict] = []
        self.total = 0
        self.next_cursor: str | None = None
        self.generation = 0
        self.loading = False

    # -- requests --
    def filters(self) -> dict:
        f: dict[str, Any] = {}
        if self.query.strip():
            f["q"] = self.query.strip()
        if self.starred_only:
            f["starred"] = True
        return f

    def reload(self, query: str | None = None, starred_only: bool | None = None) -> None:
        """A new first page (after a search or filter change)."""
        if query is not None:
            self.query = query
        if starred_only is not None:
            self.starred_only = bool(starred_only)
        self.generation += 1
        self.items, self.total, self.next_cursor = [], 0, None
        self._request()

    def load_more(self) -> bool:
        """The next page, if there is one and none is on its way."""
        if self.next_cursor is None or self.loading:
            return False
        self._request(cursor=self.next_cursor)
        return True

    def _request(self, **extra) -> None:
        self.loading = True
        self.session.list_images(thumb_size=self.thumb_size, limit=self.page_size, tag=("gallery", self.generation),
                                 **self.filters(), **extra)

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None

    # -- updates (from Session.poll, on the host's main thread) --
    def accept(self, data: dict) -> list[dict] | None:
        """An 'images' update: returns the summaries to append to the view, or None for a stale/foreign page."""
        if data.get("tag") != ("gallery", self.generation):
            return None
        self.loading = False
        new = list(data.get("images") or [])
        self.items.extend(new)
        self.total = data.get("total", len(self.items))
        self.next_cursor = data.get("next_cursor")
        return new

    def find(self, image_id: str) -> dict | None:
        return next((it for it in self.items if it.get("id") == image_id), None)

    def set_starred(self, image_id: str, starred: bool) -> None:
        it = self.find(image_id)
        if it is not None:
            it["starred"] = bool(starred)

    def status(self) -> str:
        if self.loading and not self.items:
            return "Loading…"
        if not self.items:
            return "No images" + (" match" if self.filters() else " yet")
        return f"{len(self.items)} of {self.total} image{'s' if self.total != 1 else ''}"


def caption(summary: dict, width: int = 28) -> str:
    """Two short lines under a thumbnail: the prompt, then seed/size/app (and a star)."""
    prompt = (summary.get("prompt") or summary.get("name") or summary.get("mode") or "").strip()
    if len(prompt) > width:
        prompt = prompt[:width - 1] + "…"
    bits = []
    if summary.get("starred"):
        bits.append("★")
    if summary.get("seed") is not None:
        bits.append(f"#{summary['seed']}")
    layer = summary.get("layer") or {}
    w, h = summary.get("w") or layer.get("w"), summary.get("h") or layer.get("h")
    if w and h:
        bits.append(f"{w}×{h}")
    if summary.get("app"):
        bits.append(str(summary["app"]))
    return prompt + "\n" + " ".join(bits)


def tooltip(summary: dict) -> str:
    lines = [summary.get("prompt") or "(no prompt)"]
    for key in ("negative_prompt", "model", "mode", "seed", "steps", "guidance", "created", "app", "document"):
        if summary.get(key) not in (None, ""):
            lines.append(f"{key.replace('_', ' ')}: {summary[key]}")
    return "\n".join(lines)


# ---- "Use settings": recalled values become the defaults of the Generate/Refine/Inpaint dialogs -------------------
#
# GIMP gives an interactive procedure run the argument values of its last successful run (GimpProcedureConfig
# "last values"), falling back to the defaults declared in do_create_procedure. "Use settings" stores the recalled
# values in the plug-in's settings.json under "recall", marked pending for each of the three procedures; the next
# interactive run of each one copies them into its config before the dialog is built (so they replace the last
# values once) and, when the dialog is accepted, clears its pending mark. From then on GIMP's own last values carry
# them forward.

RECALL_PROCS = ("paintbridge-generate", "paintbridge-refine", "paintbridge-inpaint")

# recalled generate arg -> (procedure argument, its type, min, max): the ranges declared in paintbridge.py
RECALL_ARGS = {
    "prompt": ("prompt", str, None, None),
    "negative_prompt": ("negative-prompt", str, None, None),
    "model": ("model", str, None, None),
    "steps": ("steps", int, 0, sup.STEPS_MAX),
    "guidance": ("guidance", float, 0.0, sup.GUIDANCE_MAX),
    "seed": ("seed", int, -1, sup.SEED_MAX),
    "strength": ("strength", float, 0.0, 1.0),
    "batch": ("batch", int, 1, sup.BATCH_MAX),
}


def recall_args(values: dict) -> tuple[dict, list[str]]:
    """forms.recalled values -> ({procedure argument: value}, [notes about values GIMP's fields cannot hold])."""
    args, notes = {}, []
    args["lora"], args["lora-weight"] = forms.recalled_lora(values)   # none recalled: the field is cleared
    for key, (arg, kind, lo, hi) in RECALL_ARGS.items():
        if values.get(key) is None:
            continue
        try:
            value = kind(values[key])
        except (TypeError, ValueError):
            notes.append(f"{key} {values[key]!r} is not a{'n' if kind is int else ''} {kind.__name__}")
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            notes.append(f"{key.replace('_', ' ')} {value} does not fit GIMP's field ({lo}..{hi}); "
                         f"the dialogs keep their own")
            continue
        args[arg] = value
    return args, notes


def store_recall(config_dir: str, image_id: str, values: dict) -> tuple[dict, list[str]]:
    """Remember recalled values as the next defaults of every RECALL_PROCS dialog. Returns recall_args()."""
    args, notes = recall_args(values)
    settings = sup.load_settings(config_dir)
    settings["recall"] = {"image": image_id, "args": args, "pending": list(RECALL_PROCS)}
    sup.save_settings(config_dir, settings)
    return args, notes


def pending_recall(config_dir: str, procedure: str, arg_names) -> dict:
    """The recalled values a procedure's dialog should start from (only the arguments it has), or {} when
    "Use settings" was not used since this procedure last took them."""
    rec = sup.load_settings(config_dir).get("recall")
    if not isinstance(rec, dict) or procedure not in (rec.get("pending") or []):
        return {}
    names = set(arg_names)
    return {k: v for k, v in (rec.get("args") or {}).items() if k in names}


def recall_used(config_dir: str, procedure: str) -> None:
    """The procedure's dialog was accepted with the recalled values: from now on GIMP's last values carry them
    (a canceled dialog leaves them pending: GIMP does not keep a canceled run's values)."""
    settings = sup.load_settings(config_dir)
    rec = settings.get("recall")
    if isinstance(rec, dict) and procedure in (rec.get("pending") or []):
        rec["pending"] = [p for p in rec["pending"] if p != procedure]
        sup.save_settings(config_dir, settings)


# An image a workflow made has no generate settings; "Use settings" on it preselects that workflow, with those
# values, the next time Run workflow's dialog opens (layer values are not kept: the dialog sends the current ones).

def store_workflow_recall(config_dir: str, image_id: str, name: str, values: dict) -> None:
    settings = sup.load_settings(config_dir)
    settings["recall_workflow"] = {"image": image_id, "name": name,
                                   "values": {k: v for k, v in (values or {}).items() if not isinstance(v, dict)}}
    sup.save_settings(config_dir, settings)


def pending_workflow_recall(config_dir: str) -> tuple[str, dict] | None:
    rec = sup.load_settings(config_dir).get("recall_workflow")
    if not isinstance(rec, dict) or not rec.get("name"):
        return None
    return rec["name"], dict(rec.get("values") or {})


def workflow_recall_used(config_dir: str) -> None:
    settings = sup.load_settings(config_dir)
    if settings.pop("recall_workflow", None) is not None:
        sup.save_settings(config_dir, settings)
