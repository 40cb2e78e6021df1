"""All of the plug-in's access to GIMP's images: read the visible image, the selection or a drawable as wire
Pixels, the layers that are regions (their prompt in a parasite), and place results as layers (each placement one
undo group). Main thread only (libgimp talks to GIMP over one pipe); no Session, no dialogs."""

from __future__ import annotations

import json
from dataclasses import dataclass

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

from protocol.pixels import BPP, Pixels, crop, sha256_hex  # noqa: E402
from protocol.pixels import context_region as _context  # noqa: E402

RGBA = "R'G'B'A u8"      # sRGB-encoded 8-bit, straight alpha: the wire's rgba8
GRAY = "Y' u8"
MASK = "Y u8"            # selection coverage, linear: 50 % selected -> 128
ALPHA = "A u8"           # a layer's alpha alone (babl extracts it while GEGL reads: no Python pixel loop)


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    def intersect(self, other: "Rect") -> "Rect":
        x, y = max(self.x, other.x), max(self.y, other.y)
        x2, y2 = min(self.x + self.w, other.x + other.w), min(self.y + self.h, other.y + other.h)
        return Rect(x, y, max(0, x2 - x), max(0, y2 - y))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h


def context_region(selection: Rect, image: Rect) -> Rect:
    """The part of the image sent with an inpaint request: the selection plus the same context the engine
    generates with (protocol.pixels.context_region), clipped to the image."""
    x, y, w, h = _context((selection.x - image.x, selection.y - image.y, selection.w, selection.h), image.w, image.h)
    return Rect(x + image.x, y + image.y, w, h)


# ---- reading ------------------------------------------------------------------------------------------------------

def image_rect(image) -> Rect:
    return Rect(0, 0, image.get_width(), image.get_height())


def selection_rect(image) -> Rect | None:
    """Selection bounds in image coordinates, or None when nothing is selected."""
    ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    if not ok or not non_empty:
        return None
    return Rect(x1, y1, x2 - x1, y2 - y1)


def read_visible(image, rect: Rect) -> Pixels:
    """The composite of the visible layers inside rect (image coordinates) as wire rgba8 Pixels."""
    vis = Gimp.Layer.new_from_visible(image, image, "paintbridge-visible")
    try:
        buf = vis.get_buffer()
        data = buf.get(Gegl.Rectangle.new(rect.x, rect.y, rect.w, rect.h), 1.0, RGBA, Gegl.AbyssPolicy.NONE)
    finally:
        vis.delete()
    return Pixels(bytes(data), rect.w, rect.h, "rgba8", rect.x, rect.y)


def read_selection(image, rect: Rect) -> Pixels:
    """The selection channel inside rect as a gray8 mask (255 = generate here)."""
    buf = image.get_selection().get_buffer()
    data = buf.get(Gegl.Rectangle.new(rect.x, rect.y, rect.w, rect.h), 1.0, MASK, Gegl.AbyssPolicy.NONE)
    return Pixels(bytes(data), rect.w, rect.h, "gray8", rect.x, rect.y)


def drawable_rect(drawable) -> Rect:
    ok, x, y = drawable.get_offsets()
    return Rect(x, y, drawable.get_width(), drawable.get_height())


def read_drawable(drawable) -> Pixels:
    """A drawable's own pixels as rgba8 at its offsets in the image."""
    r = drawable_rect(drawable)
    data = drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, r.w, r.h), 1.0, RGBA, Gegl.AbyssPolicy.NONE)
    return Pixels(bytes(data), r.w, r.h, "rgba8", r.x, r.y)


def read_alpha(drawable) -> Pixels:
    """A drawable's alpha as a gray8 mask at its offsets in the image (255 where it is opaque; a layer without an
    alpha channel is opaque everywhere)."""
    r = drawable_rect(drawable)
    data = drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, r.w, r.h), 1.0, ALPHA, Gegl.AbyssPolicy.NONE)
    return Pixels(bytes(data), r.w, r.h, "gray8", r.x, r.y)


def active_drawable(image, drawables):
    if drawables:
        return drawables[0]
    selected = image.get_selected_drawables()
    return selected[0] if selected else None


def source_reader(image, active):
    """read(source) for workflow_form.prepare: "active" -> the active drawable's pixels; "selection" -> the
    selection as gray8 over the active drawable's area (the whole image without one), so a mask lines up with an
    image parameter taken from the same layer; None when there is nothing to read."""
    def read(source):
        if source == "active":
            return read_drawable(active) if active is not None else None
        if Gimp.Selection.is_empty(image):
            return None
        rect = drawable_rect(active) if active is not None else image_rect(image)
        return read_selection(image, rect)
    return read


# ---- placing (each call one undo group) -----------------------------------------------------------------------------

def _new_layer(image, name, px: Pixels, position=0):
    kind = Gimp.ImageType.GRAYA_IMAGE if image.get_base_type() == Gimp.ImageBaseType.GRAY else Gimp.ImageType.RGBA_IMAGE
    layer = Gimp.Layer.new(image, name, px.w, px.h, kind, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, position)
    layer.set_offsets(px.x, px.y)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, px.w, px.h), RGBA if px.format == "rgba8" else GRAY, px.data)
    buf.flush()
    layer.update(0, 0, px.w, px.h)
    return layer


def _set_mask(layer, mask: Pixels):
    """A layer mask from a gray8 Pixels in image coordinates (255 = shown)."""
    m = layer.create_mask(Gimp.AddMaskType.BLACK)
    layer.add_mask(m)
    r = drawable_rect(layer)
    local = crop(mask.data, mask.w, mask.h, 1, r.x - mask.x, r.y - mask.y, r.w, r.h)
    buf = m.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, r.w, r.h), MASK, local)
    buf.flush()
    m.update(0, 0, r.w, r.h)


def describe(layer) -> dict:
    ok, x, y = layer.get_offsets()
    return {"id": layer.get_id(), "name": layer.get_name(), "x": x, "y": y,
            "w": layer.get_width(), "h": layer.get_height()}


def _crop(px: Pixels, clip: Rect) -> Pixels | None:
    r = Rect(px.x, px.y, px.w, px.h).intersect(clip)
    if r.empty:
        return None
    if r == Rect(px.x, px.y, px.w, px.h):
        return px
    return Pixels(crop(px.data, px.w, px.h, BPP[px.format], r.x - px.x, r.y - px.y, r.w, r.h), r.w, r.h,
                  px.format, r.x, r.y)


def place(image, results, name, clip: Rect | None = None, selection_mask=False, fit: Rect | None = None) -> list:
    """New layers for each ResultLayer, inside one undo group. Result x/y are image coordinates (the sender's).
    fit scales each result to that rectangle (a generation made at the model's size for a smaller or larger
    area); clip crops each result (to the selection: nothing outside it changes)."""
    placed = []
    image.undo_group_start()
    try:
        for res in results:
            px = res.pixels
            label = f"{name}: {res.name}" if res.name else name   # the engine's name carries prompt and seed
            if fit is not None:
                px = Pixels(px.data, px.w, px.h, px.format, fit.x, fit.y)
            elif clip is not None:
                px = _crop(px, clip)
                if px is None:
                    continue
            layer = _new_layer(image, label, px)
            if fit is not None and (px.w, px.h) != (fit.w, fit.h):
                layer.scale(fit.w, fit.h, False)   # interpolation: GIMP's default (Preferences)
                layer.set_offsets(fit.x, fit.y)
            if selection_mask:
                layer.add_mask(layer.create_mask(Gimp.AddMaskType.SELECTION))
            placed.append(describe(layer))
    finally:
        image.undo_group_end()
    return placed


def place_outpaint(image, results, name, margins, fill: Pixels) -> list:
    """Outpaint in one undo group: grow the canvas by margins (left, top, right, bottom) and add each result as
    a layer over the whole new canvas, masked by fill (gray8, 255 where the request was transparent), so only the
    filled area covers the layers below. Nothing happens to the image before the result is here."""
    left, top, right, bottom = margins
    placed = []
    image.undo_group_start()
    try:
        if any(margins):
            image.resize(image.get_width() + left + right, image.get_height() + top + bottom, left, top)
        for res in results:
            px = res.pixels
            px = Pixels(px.data, px.w, px.h, px.format, px.x + left, px.y + top)   # old image coordinates -> new
            layer = _new_layer(image, f"{name}: {res.name}" if res.name else name, px)
            _set_mask(layer, Pixels(fill.data, fill.w, fill.h, "gray8", fill.x + left, fill.y + top))
            placed.append(describe(layer))
    finally:
        image.undo_group_end()
    return placed


def new_image(results, name) -> tuple[object, list]:
    """A new image holding the results (an upscale), undo off while it is built."""
    first = results[0].pixels
    image = Gimp.Image.new(first.w, first.h, Gimp.ImageBaseType.RGB)
    image.undo_disable()
    for res in results:
        res.pixels.x = res.pixels.y = 0   # a new document: place at its origin
    layers = place(image, results, name)
    image.undo_enable()
    return image, layers


# ---- layers as controls, references and regions ------------------------------------------------------------------

REGION_PARASITE = "paintbridge-region"   # a layer's region prompt: JSON {"prompt", "negative_prompt"}, saved in .xcf


def layers_bottom_first(image) -> list:
    """Every layer of the image (group layers and their children too), bottom of the stack first."""
    top_first = []

    def walk(layers):
        for layer in layers:
            top_first.append(layer)
            if layer.is_group():
                walk(layer.get_children())
    walk(image.get_layers())
    return top_first[::-1]


def shown(layer) -> bool:
    """The layer and every group above it are visible (a hidden region or control is off)."""
    item = layer
    while item is not None:
        if not item.get_visible():
            return False
        item = item.get_parent()
    return True


def layer_in(image, layer) -> bool:
    return layer is not None and layer.is_valid() and layer.get_image().get_id() == image.get_id()


def _region_parasite(layer) -> dict | None:
    """The layer's region parasite as stored ({"prompt", "negative_prompt", "tagged"}), None if absent or not ours."""
    p = layer.get_parasite(REGION_PARASITE)
    if p is None:
        return None
    try:
        value = json.loads(bytes(p.get_data()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def region_prompt(layer) -> dict | None:
    """The region prompt stored on a layer ({"prompt", "negative_prompt"}), or None."""
    value = _region_parasite(layer)
    if value is None:
        return None
    return {"prompt": str(value.get("prompt") or ""), "negative_prompt": str(value.get("negative_prompt") or "")}


REGION_TAG = "ORANGE"   # the colour tag a region layer gets in the Layers dialog (unless it had one already)


def set_region_prompt(image, layer, prompt: str, negative: str = "") -> bool:
    """Store (or, with both prompts empty, remove) a layer's region prompt, as one undo step. True when stored.
    A layer without a colour tag gets REGION_TAG while it is a region, so the Layers dialog shows which are."""
    tag = getattr(Gimp.ColorTag, REGION_TAG)
    old = layer.get_parasite(REGION_PARASITE)
    tagged = bool((_region_parasite(layer) or {}).get("tagged"))
    image.undo_group_start()
    try:
        if not prompt.strip() and not negative.strip():
            if old is not None:
                layer.detach_parasite(REGION_PARASITE)
                if tagged and layer.get_color_tag() == tag:
                    layer.set_color_tag(Gimp.ColorTag.NONE)
            return False
        if old is None and layer.get_color_tag() == Gimp.ColorTag.NONE:
            layer.set_color_tag(tag)
            tagged = True
        data = json.dumps({"prompt": prompt, "negative_prompt": negative, "tagged": tagged}).encode("utf-8")
        layer.attach_parasite(Gimp.Parasite.new(REGION_PARASITE, Gimp.PARASITE_PERSISTENT | Gimp.PARASITE_UNDOABLE,
                                                list(data)))
        return True
    finally:
        image.undo_group_end()


def region_layers(image) -> list:
    """[(layer, {"prompt", "negative_prompt"})] of the shown layers with a region prompt, bottom first."""
    out = []
    for layer in layers_bottom_first(image):
        rp = region_prompt(layer)
        if rp is not None and shown(layer):
            out.append((layer, rp))
    return out


def regions(image) -> list[dict]:
    """The image's regions for protocol.generate.region_args, bottom first: each mask is the layer's alpha at its
    offsets in the image, read here (libgimp talks to GIMP over one pipe: main thread only) straight as gray8, so
    nothing is left to convert; the Session hashes and uploads it on its worker thread."""
    return [{**rp, "mask": read_alpha(layer), "layer": layer.get_id()} for layer, rp in region_layers(image)]


def find_layer(image, wire: dict, alpha: bool = False):
    """The layer of the image whose pixels (or, with alpha, whose alpha) are the recorded wire layer ({sha256, w,
    h, x, y}): same place and size first (cheap), then the same bytes. None when the image no longer has it."""
    for layer in layers_bottom_first(image):
        r = drawable_rect(layer)
        if (r.x, r.y, r.w, r.h) != (wire.get("x", 0), wire.get("y", 0), wire.get("w"), wire.get("h")):
            continue
        data = (read_alpha(layer) if alpha else read_drawable(layer)).data
        if sha256_hex(data) == wire.get("sha256"):
            return layer
    return None
