"""Control layers, image references and regions of a Krita document (issues 18 and 19): which layer steers the
generation and how, kept with the document, and turned into generate's `control`, `reference` and `regions`
(protocol.generate.steer_args / region_args do the checking). No widgets here (panels.py); Krita is touched only
through host.py, on the main thread.

Stored in the document itself, as a JSON annotation that Krita saves in the .kra (host.read_store/write_store):
  {"controls":   [{"layer": uniqueId, "model", "preprocess", "strength", "start", "end"}],
   "references": [{"layer": uniqueId, "model", "strength", "start", "end"}],
   "regions":    [{"layer": uniqueId, "prompt", "negative_prompt"}],
   "sent":       {sha256 of an image or mask as the engine got it: uniqueId},
   "names":      {uniqueId: the layer's name when it was sent}}
Layers are named by Krita's uniqueId, which survives saving and reopening. A hidden layer (or one in a hidden
group) is not sent; a deleted one stays listed as gone until removed (Undo may bring it back).

Pixels: each control image (the layer over the area generated), reference image (the layer's own bounds) and
region mask (the layer's alpha over the area generated) is copied by Krita on the main thread and converted on
the Session's worker thread, which also notes the hash the engine will see ("sent"), so Use settings can find
the layer an image was made with (protocol.generate.recalled_steering / recalled_regions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._vendor.protocol import generate
from ._vendor.protocol.pixels import sha256_hex, swap_red_blue

from . import host

KINDS = ("controls", "references", "regions")
SENT_KEEP = 200          # image hashes remembered per document (for Use settings)
_NUMBERS = ("strength", "start", "end")


@dataclass
class Entry:
    """One row of the docker's lists."""
    kind: str            # "controls", "references" or "regions"
    index: int           # in the stored list (what remove() takes)
    layer: str           # the layer's uniqueId
    name: str            # the layer's name ("" when the layer is gone)
    exists: bool         # the layer is in the document
    shown: bool          # visible (and every group above it): sent
    settings: dict = field(default_factory=dict)   # model/strength/… or prompt/negative_prompt

    def describe(self) -> str:
        s = self.settings
        if self.kind == "regions":
            text = s.get("prompt") or "(the base prompt)"
            if s.get("negative_prompt"):
                text += f" — not: {s['negative_prompt']}"
        else:
            text = f"{s.get('model')} · {float(s.get('strength', 0)):.2f} · {float(s.get('start', 0)):.2f}–" \
                   f"{float(s.get('end', 1)):.2f}"
            if s.get("preprocess") not in (None, "", "none"):
                text += f" · {s['preprocess']}"
        where = self.name if self.exists else "(layer deleted)"
        if self.exists and not self.shown:
            where += " (hidden: not sent)"
        return f"{where}: {text}"


class Steering:
    def __init__(self, session):
        self.session = session

    # ---- the document's lists ------------------------------------------------------------------------------
    def load(self, doc) -> dict:
        """The document's store with every list present."""
        data = host.read_store(doc) if doc is not None else {}
        out = {k: [dict(e) for e in data.get(k) or [] if isinstance(e, dict) and e.get("layer")] for k in KINDS}
        for key in ("sent", "names"):
            out[key] = dict(data[key]) if isinstance(data.get(key), dict) else {}
        return out

    def save(self, doc, store: dict):
        if len(store["sent"]) > SENT_KEEP:   # the newest are last (dicts keep insertion order)
            store["sent"] = dict(list(store["sent"].items())[-SENT_KEEP:])
        store["names"] = {uid: name for uid, name in store["names"].items() if uid in store["sent"].values()}
        host.write_store(doc, store)

    def entries(self, doc) -> list[Entry]:
        """Every control, reference and region of the document, for the docker (regions top of the stack first,
        as Krita's layer list shows them)."""
        if doc is None:
            return []
        store = self.load(doc)
        out = []
        order = host.stack_order(doc) if store["regions"] else {}
        for kind in KINDS:
            rows = []
            for i, e in enumerate(store[kind]):
                node = host.find_node(doc, e["layer"])
                settings = {k: v for k, v in e.items() if k != "layer"}
                rows.append(Entry(kind, i, e["layer"], node.name() if node is not None else "", node is not None,
                                  node is not None and host.is_shown(node), settings))
            if kind == "regions":
                rows.sort(key=lambda r: -order.get(r.layer, -1))
            out += rows
        return out

    def kind_of(self, model: str) -> str | None:
        """"controls" for a ControlNet / T2I-Adapter of the engine, "references" for an IP-Adapter, else None."""
        if any(m.get("name") == model for m in self.session.controls):
            return "controls"
        if any(m.get("name") == model for m in self.session.references):
            return "references"
        return None

    def preset(self, model: str) -> dict:
        """What a new control/reference of this model starts with: the model's preset (models.list), else the
        engine's defaults."""
        kind = self.kind_of(model)
        entries = self.session.controls if kind == "controls" else self.session.references
        preset = next((m.get("preset") or {} for m in entries if m.get("name") == model), {})
        defaults = generate.CONTROL_DEFAULTS if kind == "controls" else generate.REFERENCE_DEFAULTS
        out = {k: preset.get(k, v) for k, v in defaults.items()}
        if kind == "controls" and out.get("preprocess") not in generate.PREPROCESSORS:
            out["preprocess"] = "none"
        return out

    def add(self, doc, model: str, settings: dict, node=None) -> str:
        """The active layer or group (or `node`) as a control or reference of `model` (which of the two follows
        the model's type). Returns the kind. Raises FieldError / CanvasError."""
        kind = self.kind_of(model)
        if kind is None:
            raise generate.FieldError("control", f"choose a control or reference model (the engine has no "
                                                 f"{model!r})" if model else "choose a control or reference model")
        node = node if node is not None else host.active_layer(doc)
        key = "control" if kind == "controls" else "reference"
        entry = {"model": model}
        for name in _NUMBERS:
            if settings.get(name) is not None:
                entry[name] = float(settings[name])
        if kind == "controls":
            entry["preprocess"] = settings.get("preprocess") or "none"
        generate.steer_args(key, [{**entry, "image": True}])   # the engine's checks, before anything is stored
        store = self.load(doc)
        store[kind].append({"layer": host.node_id(node), **entry})
        self.save(doc, store)
        return kind

    def remove(self, doc, kind: str, index: int) -> bool:
        store = self.load(doc)
        if kind not in KINDS or not 0 <= index < len(store[kind]):
            return False
        del store[kind][index]
        self.save(doc, store)
        return True

    def set_region(self, doc, prompt: str, negative: str = "", node=None) -> str:
        """Attach a prompt to the active layer or group, or `node` (replacing its earlier one). Returns its name."""
        node = node if node is not None else host.active_layer(doc)
        if not prompt.strip() and not negative.strip():
            raise generate.FieldError(generate.REGIONS, "type the region's prompt")
        uid = host.node_id(node)
        store = self.load(doc)
        entry = {"layer": uid, "prompt": prompt.strip(), "negative_prompt": negative.strip()}
        at = next((i for i, r in enumerate(store["regions"]) if r["layer"] == uid), None)
        if at is None:
            store["regions"].append(entry)
        else:
            store["regions"][at] = entry
        self.save(doc, store)
        return node.name()

    # ---- a request ---------------------------------------------------------------------------------------------
    def request(self, doc, mode: str, rect: tuple[int, int, int, int], sent: list | None = None) -> dict:
        """generate field values for the document's steering: {"control": [...], "reference": [...],
        "regions": [...]} with only shown layers, and only the regions whose layer touches `rect` (the area
        generated). sent=None: a dry run (images are placeholders, nothing is read) for checking the form before
        the canvas changes; else each image is a callable read on the worker thread, which appends (sha256 as
        the engine gets it, layer id) to `sent`."""
        m = generate.MODES.get(mode)
        out: dict = {"control": [], "reference": [], "regions": []}
        if doc is None or m is None or not m.uses("control"):
            return out
        store = self.load(doc)
        x, y, w, h = rect
        for kind, key in (("controls", "control"), ("references", "reference")):
            for e in store[kind]:
                node = host.find_node(doc, e["layer"])
                if node is None or not host.is_shown(node):
                    continue
                rect_read = (x, y, w, h)
                if kind == "references":   # a reference is the picture on its layer, wherever it is
                    rect_read = host.layer_rect(doc, node)
                    if rect_read is None:
                        raise generate.FieldError("reference", f"the reference layer {node.name()!r} is empty")
                image = True if sent is None else \
                    self._noted(host.layer_snapshot(node, *rect_read), e["layer"], sent)
                out[key].append({**{k: v for k, v in e.items() if k != "layer"}, "image": image})
        order = host.stack_order(doc) if store["regions"] else {}
        regions = []
        for r in store["regions"]:
            node = host.find_node(doc, r["layer"])
            if node is None or not host.is_shown(node) or not host.touches(node, x, y, w, h):
                continue
            mask = True if sent is None else self._noted(host.alpha_snapshot(node, x, y, w, h), r["layer"], sent)
            regions.append((order.get(r["layer"], 0), {"prompt": r.get("prompt") or "",
                                                       "negative_prompt": r.get("negative_prompt") or "",
                                                       "mask": mask}))
        out["regions"] = [r for _, r in sorted(regions, key=lambda t: t[0])]   # bottom of the stack first
        return out

    def _noted(self, read, uid: str, sent: list):
        """read, with the hash of what the engine will get noted (worker thread; list.append is atomic)."""
        swap = self.session.pixel_order == "bgra"

        def pixels():
            px = read()
            data = swap_red_blue(px.data) if swap and px.format == "rgba8" else px.data
            sent.append((sha256_hex(data), uid))
            return px
        return pixels

    def note_sent(self, doc, sent: list):
        """Remember which layer each sent image came from (main thread, once the job is accepted)."""
        if not sent or doc is None or not host.is_open(doc):
            return
        store = self.load(doc)
        for sha, uid in list(sent):
            store["sent"].pop(sha, None)
            store["sent"][sha] = uid
            node = host.find_node(doc, uid)
            if node is not None:   # named in Use settings' note should the layer be deleted
                store["names"][uid] = node.name()
        self.save(doc, store)

    # ---- Use settings ------------------------------------------------------------------------------------------
    def recall(self, doc, values: dict) -> list[str]:
        """The document's controls, references and regions become those an image was made with, where their
        layers are still in the document (found by the hash of what was sent). Returns notes for the rest. When
        none of them is found here (an image of another document, or one made without any), the document's own
        lists are left as they are."""
        store = self.load(doc)

        def find(image):
            uid = store["sent"].get((image or {}).get("sha256"))
            return uid if uid and host.find_node(doc, uid) is not None else None

        def named(items):   # the layer's name (as it was when sent) for the note about a deleted one
            out = []
            for e in items or []:
                image = e.get("image") if isinstance(e, dict) else None
                uid = store["sent"].get((image or {}).get("sha256"))
                if isinstance(image, dict) and not image.get("name") and store["names"].get(uid):
                    e = {**e, "image": {**image, "name": store["names"][uid]}}
                out.append(e)
            return out

        notes, found = [], {}
        for kind, key in (("controls", "control"), ("references", "reference")):
            kept, dropped = generate.recalled_steering(named(values.get(key)), find)
            notes += dropped
            keys = ("model", *_NUMBERS) + (("preprocess",) if kind == "controls" else ())
            found[kind] = [{"layer": e["image"], **{k: e[k] for k in keys if e.get(k) is not None}} for e in kept]
        regions = []
        for r in generate.recalled_regions(values):
            uid = find(r["mask"])
            if uid is None:
                name = store["names"].get(store["sent"].get(r["mask"].get("sha256")))
                layer = f"its layer {name}" if name else "its layer"
                notes.append(f"region {r['prompt'] or '(base prompt)'!r}: {layer} is not in this document")
                continue
            regions.append({"layer": uid, "prompt": r["prompt"], "negative_prompt": r["negative_prompt"]})
        found["regions"] = regions
        if any(found.values()):
            store.update(found)
            self.save(doc, store)
        return notes
