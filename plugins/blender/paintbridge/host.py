"""All Blender data access: images <-> wire pixels, placing results (undoable), the Image Editor, previews.

bpy is touched on the main thread only, and only for the calls that must be there: `pixels.foreach_get` /
`foreach_set`, creating, packing and showing images. The conversions between Blender's float pixels (bottom-up,
sRGB bytes/255 or linear premultiplied) and wire pixels (top-down 8-bit sRGB, straight alpha) are plain
functions on buffers (`Snapshot.pixels`, `floats_for`) that the controller runs off the main thread.

Nothing here holds a bpy reference across calls: images are found again by their "paintbridge_uid" ID property,
because undo and deletion invalidate Python references.
"""

from __future__ import annotations

import array
import os
import re
import tempfile
import threading
import uuid

import bpy

from ._vendor.protocol.pixels import Pixels, crop, flip_rows, mask_bounds, mask_from_transparency, paste

from . import png

try:  # official Blender builds bundle numpy; Debian's blender package does not depend on it
    import numpy as np
except ImportError:  # pragma: no cover - exercised on hosts without numpy
    np = None

UID = "paintbridge_uid"
REV = "paintbridge_rev"
IMAGE_ID = "paintbridge_image_id"     # ID property: the gallery id of an image opened from the gallery
PREVIEW_NAME = "Paintbridge Preview"


# ---- reading: a float copy on the main thread, the conversion anywhere ------------------------------------
def _srgb_to_linear(v):
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def _linear_to_srgb(v):
    return v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


_BYTE_TO_LINEAR = [_srgb_to_linear(i / 255) for i in range(256)]
_BYTE_TO_FLOAT = [i / 255 for i in range(256)]


class Snapshot:
    """An image's pixels copied out with one foreach_get (main thread); `pixels()` and `mask()` convert the copy
    and touch no bpy, so they run on a worker thread."""

    def __init__(self, image):
        w, h = image.size
        if w == 0 or h == 0 or not image.has_data:
            raise ValueError(f"image {image.name!r} has no pixels")
        self.name, self.w, self.h, self.is_float = image.name, w, h, bool(image.is_float)
        n = w * h * 4
        self.buf = np.empty(n, np.float32) if np is not None else array.array("f", bytes(n * 4))
        image.pixels.foreach_get(self.buf)

    def pixels(self) -> Pixels:
        """Wire pixels: top-down rows, 8-bit sRGB, straight alpha. Byte images hold byte/255 in sRGB with straight
        alpha; float images hold scene-linear premultiplied values."""
        w, h, n = self.w, self.h, self.w * self.h * 4
        if np is not None:
            a = self.buf.reshape(h, w, 4)[::-1]
            if self.is_float:
                alpha = a[..., 3:4]
                rgb = np.where(alpha > 0, a[..., :3] / np.where(alpha > 0, alpha, 1), 0)
                rgb = np.clip(rgb, 0, 1)
                rgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
                a = np.concatenate([rgb, alpha], axis=2)
            return Pixels((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8).tobytes(), w, h)
        buf = self.buf
        if self.is_float:
            out = bytearray(n)
            for i in range(0, n, 4):
                al = min(max(buf[i + 3], 0.0), 1.0)
                for c in range(3):
                    v = buf[i + c] / al if al > 0 else 0.0
                    out[i + c] = int(_linear_to_srgb(min(max(v, 0.0), 1.0)) * 255 + 0.5)
                out[i + 3] = int(al * 255 + 0.5)
            data = bytes(out)
        else:
            data = bytes(int(min(max(v, 0.0), 1.0) * 255 + 0.5) for v in buf)
        return Pixels(flip_rows(data, w, h, 4), w, h)

    def mask(self, size=None) -> Pixels:
        """gray8 mask (255 = generate) from a chosen mask image: its red channel (black/white masks)."""
        if size is not None and (self.w, self.h) != tuple(size):
            raise ValueError(f"mask {self.name!r} is {self.w}x{self.h}, the image is {size[0]}x{size[1]}")
        px = self.pixels()
        return Pixels(px.data[0::4], px.w, px.h, "gray8")


class Deferred:
    """A conversion to run later, once, on whichever thread asks first (the session's worker, which takes a
    zero-argument callable for an image or mask); later calls return the same Pixels."""

    def __init__(self, fn):
        self._fn = fn
        self._lock = threading.Lock()
        self._value = None

    def __call__(self) -> Pixels:
        with self._lock:
            if self._fn is not None:
                self._value, self._fn = self._fn(), None
            return self._value


def image_to_pixels(image) -> Pixels:
    """Snapshot + conversion in one go (for small images and tests; the panel converts off the main thread)."""
    return Snapshot(image).pixels()


def mask_from_image(image, size) -> Pixels:
    if tuple(image.size) != tuple(size):
        raise ValueError(f"mask {image.name!r} is {image.size[0]}x{image.size[1]}, the image is {size[0]}x{size[1]}")
    return Snapshot(image).mask(size)


def alpha_mask(px: Pixels) -> Pixels:
    """Inpaint from image alpha: its transparent pixels are the area to regenerate."""
    return Pixels(mask_from_transparency(px.data), px.w, px.h, "gray8")


# ---- writing: the conversion anywhere, foreach_set on the main thread --------------------------------------
def floats_for(px: Pixels, is_float: bool):
    """The float buffer foreach_set takes for wire pixels: rows flipped, sRGB/linear and alpha handled. No bpy."""
    if px.format == "gray8":
        px = Pixels(bytes(b for v in px.data for b in (v, v, v, 255)), px.w, px.h)
    w, h = px.w, px.h
    if np is not None:
        a = np.frombuffer(px.data, np.uint8).reshape(h, w, 4)[::-1].astype(np.float32) / np.float32(255)
        if is_float:
            rgb = a[..., :3]
            rgb = np.where(rgb <= 0.04045, rgb / 12.92, np.power((rgb + 0.055) / 1.055, 2.4)) * a[..., 3:4]
            a = np.concatenate([rgb, a[..., 3:4]], axis=2).astype(np.float32)
        return np.ascontiguousarray(a).ravel()
    data = flip_rows(px.data, w, h, 4)
    if is_float:
        vals = []
        for i in range(0, len(data), 4):
            al = data[i + 3] / 255
            vals += [_BYTE_TO_LINEAR[data[i]] * al, _BYTE_TO_LINEAR[data[i + 1]] * al,
                     _BYTE_TO_LINEAR[data[i + 2]] * al, al]
        return array.array("f", vals)
    lut = _BYTE_TO_FLOAT
    return array.array("f", [lut[v] for v in data])


def set_pixels(image, w: int, h: int, floats):
    """Main thread: put a floats_for() buffer into `image` (resized to w×h if needed) and refresh its display."""
    if tuple(image.size) != (w, h):
        image.scale(w, h)
    image.pixels.foreach_set(floats)
    image.update()


def write_pixels(image, px: Pixels):
    set_pixels(image, px.w, px.h, floats_for(px, bool(image.is_float)))


# ---- finding images again -------------------------------------------------------------------------------------
def ensure_uid(image) -> str:
    uid = image.get(UID)
    if not uid:
        uid = image[UID] = uuid.uuid4().hex
    return uid


def find_image(uid: str | None, name: str | None = None):
    if not uid:
        return None
    img = bpy.data.images.get(name) if name else None
    if img is not None and img.get(UID) == uid:
        return img
    for img in bpy.data.images:
        if img.get(UID) == uid:
            return img
    return None


def image_named(name: str):
    return bpy.data.images.get(name) if name else None


# ---- results -------------------------------------------------------------------------------------------------
_applied_revs: dict[str, int] = {}   # image uid -> revision whose pixels are in the image buffer
_MODE_WORDS = ("generate", "refine", "inpaint", "outpaint", "upscale", "result", "open", "workflow")


def result_title(source: str | None, mode: str) -> str:
    """A new result's image name: its source's name and the mode, without piling up ("Paintbridge generate",
    then "Paintbridge refine", never "Paintbridge generate refine"); Blender adds .001 etc. itself."""
    base = (source or "Paintbridge").strip()
    base = re.sub(r"\.\d{3}$", "", base)
    words = base.split(" ")
    while len(words) > 1 and words[-1].lower() in _MODE_WORDS:
        words.pop()
    return f"{' '.join(words)} {mode.lower()}".strip()


def result_target(tag: dict):
    """Main thread, before the conversion starts: None when the result becomes a new image, else whether the
    image it replaces holds floats."""
    target = find_image(tag.get("uid"), tag.get("name")) if tag.get("target") == "replace" else None
    return None if target is None else bool(target.is_float)


_png_dir: str | None = None


def prepare_result(tag: dict, layer, target) -> tuple:
    """Off the main thread: the final pixels of a result (an inpaint/outpaint patch pasted onto its base), and
    what the main thread needs to place it: a PNG file Blender loads and packs as it is (no encoding on the main
    thread) for a new image and for a replaced byte image; for a replaced float image the float buffer to set.
    target: result_target().
    Returns (Pixels, floats or None, is_float, PNG path or None)."""
    global _png_dir
    px = layer.pixels
    base_px = tag.get("base")
    if callable(base_px):   # a Deferred conversion of the source: done by now (it was sent)
        base_px = base_px()
    if base_px is not None and (px.w, px.h) != (base_px.w, base_px.h):
        px = paste(base_px, px)
    if target:   # a float image is replaced through foreach_set (Blender encodes it when it packs it)
        return px, floats_for(px, True), True, None
    if _png_dir is None or not os.path.isdir(_png_dir):
        _png_dir = tempfile.mkdtemp(prefix="paintbridge-results-")
    data = px.data if px.format == "rgba8" else bytes(b for v in px.data for b in (v, v, v, 255))
    path = os.path.join(_png_dir, uuid.uuid4().hex + ".png")
    with open(path, "wb") as fh:
        fh.write(png.encode_rgba(px.w, px.h, data, level=1))
    return px, None, False, path


def place_result(tag: dict, layer, prepared=None) -> str:
    """Main thread: make a result an image datablock (new, or replacing the source in place with an undo step).
    prepared: prepare_result()'s output, computed off the main thread (computed here when None or out of date)."""
    target = find_image(tag.get("uid"), tag.get("name")) if tag.get("target") == "replace" else None
    want = None if target is None else bool(target.is_float)
    if prepared is None or prepared[2] != (want or False) or (prepared[3] is None) != bool(want):
        prepared = prepare_result(tag, layer, want)   # (the target was deleted or changed meanwhile: rare)
    px, floats, _, png_path = prepared
    if target is not None:
        # Record the state before the change as its own undo step: the uid, and the old pixels in a packed
        # file (or the image file on disk), which the undo handler reloads.
        uid = ensure_uid(target)
        if target.packed_file is None and (target.source != "FILE" or target.is_dirty):
            target.pack()
        _applied_revs[uid] = int(target.get(REV, 0))
        _undo_push("Before Paintbridge result")
        if png_path is not None:
            _repack(target, png_path)
        else:
            set_pixels(target, px.w, px.h, floats)
            target.pack()
        target[REV] = int(target.get(REV, 0)) + 1
        _applied_revs[ensure_uid(target)] = target[REV]
        show(target, target.name)
        _undo_push(f"Paintbridge {tag.get('mode', '').lower()}")
        return target.name
    if "title_prefix" in tag:   # gallery images and workflow outputs: named after the layer
        title = f"{tag['title_prefix']} {layer.name}".strip()
    else:
        title = result_title(tag.get("name"), tag.get("mode", "result"))
    # Blender decodes the PNG (in C) and packs the file's bytes: byte pixels exactly as sent, sRGB, straight alpha
    img = bpy.data.images.load(png_path, check_existing=False)
    try:
        img.name = title
        img.alpha_mode = "STRAIGHT"
        img.pack()
    finally:
        try:
            os.remove(png_path)
        except OSError:
            pass
    img.filepath_raw = ""      # packed: no temporary path kept in the .blend
    img.use_fake_user = True   # a finished result is never dropped on save, shown or not
    img[REV] = 1
    if tag.get("image"):
        img[IMAGE_ID] = tag["image"]
    _applied_revs[ensure_uid(img)] = 1
    show(img, tag.get("name"))
    _undo_push("Paintbridge result")
    return img.name


def _repack(image, png_path: str):
    """Replace a byte image's pixels with a PNG made off the main thread: the PNG becomes its packed file and the
    pixels load from it (decoded in C). image.pack() of changed pixels would encode a PNG here instead: 1-4 s for
    a 4K image on the main thread (issue 15 items 7 and 17)."""
    try:
        with open(png_path, "rb") as fh:
            data = fh.read()
    finally:
        try:
            os.remove(png_path)
        except OSError:
            pass
    image.pack(data=data, data_len=len(data))
    if image.source != "FILE":
        image.source = "FILE"
    image.alpha_mode = "STRAIGHT"   # as the PNG holds it (and as new results are)
    image.buffers_free()
    image.update()


def _undo_push(message: str):
    try:
        bpy.ops.ed.undo_push(message=message)
    except Exception:
        pass


def _image_spaces():
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return []
    return [area.spaces.active for win in wm.windows for area in win.screen.areas if area.type == "IMAGE_EDITOR"]


def show(img, source_name=None):
    """Show `img` in the Image Editors that showed the source image or the preview (else the first one)."""
    spaces = _image_spaces()
    names = {source_name, PREVIEW_NAME} - {None}
    chosen = [s for s in spaces if s.image is not None and s.image.name in names] or spaces[:1]
    for s in chosen:
        s.image = img


def shown_images() -> list[str]:
    return [s.image.name for s in _image_spaces() if s.image is not None]


def show_preview(px: Pixels, source_name: str | None):
    """A step's preview in the image "Paintbridge Preview", shown where the source (or nothing) is shown; the
    result replaces it there when it arrives. Small (≤256 px): converted here."""
    img = bpy.data.images.get(PREVIEW_NAME)
    if img is None or tuple(img.size) != (px.w, px.h):
        if img is not None:
            bpy.data.images.remove(img)
        img = bpy.data.images.new(PREVIEW_NAME, px.w, px.h, alpha=True)
    write_pixels(img, px)
    spaces = _image_spaces()
    chosen = [s for s in spaces if s.image is None or s.image.name in (source_name, PREVIEW_NAME)]
    for s in chosen[:1] or spaces[:1]:
        s.image = img


def drop_preview(source_name: str | None = None):
    """The job ended: an editor still showing the preview shows the source again, and the preview goes."""
    img = bpy.data.images.get(PREVIEW_NAME)
    if img is None:
        return
    source = bpy.data.images.get(source_name) if source_name else None
    for s in _image_spaces():
        if s.image == img:
            s.image = source
    bpy.data.images.remove(img)


# ---- undo -----------------------------------------------------------------------------------------------------
# Images whose Image Editors must draw them in full once more after an undo/redo (names), and the draw callback
# that says an editor has drawn since. Why: an undo that re-reads an image gives it a new partial-update register
# whose changeset ids start again from 0, while the editor's draw engine still holds the old, higher id. Blender
# 3.x takes that id as "seen everything" at the first draw and keeps its texture (the data is right, the screen
# is not; later versions refuse ids above the register's last). That first draw brings the engine's id into step;
# an update() after it is then a full change, drawn as such.
_redraw_after_draw: set[str] = set()
_draw_handle = None


@bpy.app.handlers.persistent
def after_undo(*_args):
    """Memfile undo restores the packed file and REV but not the image buffer: drop the changed images' buffers
    so they load again from the restored packed file (or file on disk), and update() them so the Image Editor
    shows those pixels, not its cached texture; once more after the editor's next draw (above). (reload() would
    also re-read a packed image's original path, which our packed results do not have: Blender then prints
    'Image "" not available'.)"""
    global _draw_handle
    for img in bpy.data.images:
        uid = img.get(UID)
        if uid is None or uid not in _applied_revs:
            continue
        rev = int(img.get(REV, 0))
        if _applied_revs[uid] != rev and (img.packed_file is not None or (img.source == "FILE" and img.filepath)):
            img.buffers_free()
            try:
                img.update()
            except RuntimeError:   # "does not have any image data": nothing to show anyway
                _applied_revs[uid] = rev
                continue
            _applied_revs[uid] = rev
            _redraw_after_draw.add(img.name)
    if _redraw_after_draw and _draw_handle is None:
        _draw_handle = bpy.types.SpaceImageEditor.draw_handler_add(_drawn_once, (), "WINDOW", "POST_PIXEL")


def _drawn_once():
    """An Image Editor drew (draw callback: change nothing here); the update runs from a timer."""
    if not bpy.app.timers.is_registered(_update_after_draw):
        bpy.app.timers.register(_update_after_draw, first_interval=0.0)


def _update_after_draw():
    global _draw_handle
    if _draw_handle is not None:
        bpy.types.SpaceImageEditor.draw_handler_remove(_draw_handle, "WINDOW")
        _draw_handle = None
    names = list(_redraw_after_draw)
    _redraw_after_draw.clear()
    for name in names:
        img = bpy.data.images.get(name)
        if img is not None:
            try:
                img.update()
            except RuntimeError:
                pass
    wm = getattr(bpy.context, "window_manager", None)
    for win in (wm.windows if wm is not None else []):
        for area in win.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.tag_redraw()
    return None


def register():
    for handlers in (bpy.app.handlers.undo_post, bpy.app.handlers.redo_post):
        if after_undo not in handlers:
            handlers.append(after_undo)


def unregister():
    global _draw_handle
    for handlers in (bpy.app.handlers.undo_post, bpy.app.handlers.redo_post):
        if after_undo in handlers:
            handlers.remove(after_undo)
    if bpy.app.timers.is_registered(_update_after_draw):
        bpy.app.timers.unregister(_update_after_draw)
    if _draw_handle is not None:
        bpy.types.SpaceImageEditor.draw_handler_remove(_draw_handle, "WINDOW")
        _draw_handle = None
    _redraw_after_draw.clear()


# ---- controls, references and regions -----------------------------------------------------------------------
def fit(px: Pixels, w: int, h: int) -> Pixels:
    """px scaled to w×h (nearest pixel) when its size differs: controls and masks travel in document coordinates,
    and the document is the image (or txt2img's width×height). No bpy: runs on the session's worker."""
    if (px.w, px.h) == (w, h):
        return px
    bpp = 1 if px.format == "gray8" else 4
    cols = [(x * px.w // w) * bpp for x in range(w)]
    out = bytearray()
    for y in range(h):
        row = px.data[(y * px.h // h) * px.w * bpp:][:px.w * bpp]
        if bpp == 1:
            out += bytes(row[c] for c in cols)
        else:
            for c in cols:
                out += row[c:c + 4]
    return Pixels(bytes(out), w, h, px.format)


def luminance_mask(px: Pixels) -> Pixels:
    """gray8 region mask from a mask image: luminance × alpha, so a black/white image painted in Blender (opaque,
    as new images are) and an image painted with transparency both work; 255 = this region."""
    d = px.data
    out = bytearray(px.w * px.h)
    for i in range(len(out)):
        j = 4 * i
        out[i] = (d[j] * 299 + d[j + 1] * 587 + d[j + 2] * 114) * d[j + 3] // 255000
    return Pixels(bytes(out), px.w, px.h, "gray8")


def region_mask(px: Pixels, w: int, h: int, what: str) -> Pixels:
    """A region's mask from its mask image: luminance_mask() scaled to the document (w×h), cut to the part it
    covers (placed at its x, y: less to upload, and the gallery keeps where the region is). ValueError when empty."""
    mask = fit(luminance_mask(px), w, h)
    bounds = mask_bounds(mask.data, w, h)
    if bounds is None:
        raise ValueError(f"{what}: its mask is empty (paint white where the region is)")
    x, y, bw, bh = bounds
    return Pixels(crop(mask.data, w, h, 1, x, y, bw, bh), bw, bh, "gray8", x, y)


PASS_KINDS = ("DEPTH", "NORMAL", "LINES")
_SOCKETS = {"DEPTH": ("Depth", "Z"), "NORMAL": ("Normal",), "LINES": ("Freestyle",)}
BACKGROUND_DEPTH = 1e9   # Cycles writes 1e10 where no surface is hit


class PassSnapshot:
    """Render passes of a scene copied out (one foreach_get each, main thread); depth()/normal()/lines() make wire
    pixels of them and touch no bpy (the session's worker runs them)."""

    def __init__(self, w: int, h: int, buffers: dict, cam_rotation):
        self.w, self.h, self.buffers = w, h, buffers
        self.rot = cam_rotation   # the camera's world rotation, 3×3 rows (world -> camera is its transpose)

    def _rows(self, fn) -> Pixels:
        """Top-down rgba8 from fn(index of a bottom-up pixel) -> (r, g, b)."""
        w, h = self.w, self.h
        out = bytearray(w * h * 4)
        o = 0
        for y in range(h - 1, -1, -1):
            for i in range(y * w, y * w + w):
                out[o:o + 4] = bytes((*fn(i), 255))
                o += 4
        return Pixels(bytes(out), w, h)

    def depth(self) -> Pixels:
        """Z normalised over the surfaces the camera sees: nearest = white, farthest = black, background black."""
        buf = self.buffers["DEPTH"]
        z = [buf[4 * i] for i in range(self.w * self.h)]
        hits = [v for v in z if v < BACKGROUND_DEPTH]
        if not hits:
            raise ValueError("the scene's depth pass is empty: nothing is in front of the camera")
        near, far = min(hits), max(hits)
        span = (far - near) or 1.0

        def px(i):
            v = z[i]
            g = 0 if v >= BACKGROUND_DEPTH else int(255 * (far - v) / span + 0.5) if far > near else 255
            return g, g, g
        return self._rows(px)

    def normal(self) -> Pixels:
        """Normals turned into the camera's space and mapped to 0..255 (x right = red, y up = green, towards the
        camera = blue); the background (no surface) black."""
        buf, r = self.buffers["NORMAL"], self.rot

        def px(i):
            x, y, z = buf[4 * i], buf[4 * i + 1], buf[4 * i + 2]
            if x * x + y * y + z * z < 0.25:
                return 0, 0, 0
            # camera-space = R^T · n (R: camera -> world rotation, rows)
            cx = r[0][0] * x + r[1][0] * y + r[2][0] * z
            cy = r[0][1] * x + r[1][1] * y + r[2][1] * z
            cz = r[0][2] * x + r[1][2] * y + r[2][2] * z
            return tuple(min(255, max(0, int((c + 1) * 127.5 + 0.5))) for c in (cx, cy, cz))
        return self._rows(px)

    def lines(self) -> Pixels:
        """Freestyle strokes (dark lines over transparency) as white lines on black, what line ControlNets take."""
        buf = self.buffers["LINES"]

        def px(i):
            g = min(255, max(0, int(buf[4 * i + 3] * 255 + 0.5)))
            return g, g, g
        return self._rows(px)

    def pixels(self, kind: str) -> Pixels:
        return {"DEPTH": self.depth, "NORMAL": self.normal, "LINES": self.lines}[kind]()


def render_passes(scene, w: int, h: int, kinds) -> PassSnapshot:
    """Main thread: render the scene's camera view at w×h once with Cycles (1 sample: passes, not beauty) and copy
    out the passes asked for (PASS_KINDS). The compositor writes them through a File Output node as float EXRs,
    which load as images and are read with one foreach_get each; every setting changed is put back, and our nodes,
    files and images are removed. Raises ValueError with what to fix (no camera, no Freestyle pass)."""
    kinds = [k for k in PASS_KINDS if k in set(kinds)]
    if scene.camera is None:
        raise ValueError(f"the scene {scene.name!r} has no camera to render its passes from")
    if not hasattr(scene, "cycles"):
        raise ValueError("the scene's passes are rendered with Cycles: enable the Cycles add-on in Preferences")
    view_layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
    r = scene.render
    saved = [(r, "engine", r.engine), (r, "resolution_x", r.resolution_x), (r, "resolution_y", r.resolution_y),
             (r, "resolution_percentage", r.resolution_percentage), (r, "use_compositing", r.use_compositing),
             (r, "use_freestyle", r.use_freestyle), (scene, "use_nodes", scene.use_nodes),
             (scene.cycles, "samples", scene.cycles.samples), (view_layer, "use_pass_z", view_layer.use_pass_z),
             (view_layer, "use_pass_normal", view_layer.use_pass_normal),
             (view_layer, "use_freestyle", view_layer.use_freestyle),
             (view_layer.freestyle_settings, "as_render_pass", view_layer.freestyle_settings.as_render_pass)]
    if hasattr(scene.cycles, "use_denoising"):
        saved.append((scene.cycles, "use_denoising", scene.cycles.use_denoising))
    tmp = tempfile.mkdtemp(prefix="paintbridge-passes-")
    added = []
    tree = None
    try:
        r.engine = "CYCLES"
        scene.cycles.samples = 1
        if hasattr(scene.cycles, "use_denoising"):
            scene.cycles.use_denoising = False
        r.resolution_x, r.resolution_y, r.resolution_percentage = w, h, 100
        r.use_compositing = True
        view_layer.use_pass_z = view_layer.use_pass_z or "DEPTH" in kinds
        view_layer.use_pass_normal = view_layer.use_pass_normal or "NORMAL" in kinds
        if "LINES" in kinds:
            r.use_freestyle = view_layer.use_freestyle = True
            view_layer.freestyle_settings.as_render_pass = True
        scene.use_nodes = True
        tree = scene.node_tree
        rl = tree.nodes.new("CompositorNodeRLayers")
        added.append(rl)
        rl.scene, rl.layer = scene, view_layer.name
        out = tree.nodes.new("CompositorNodeOutputFile")
        added.append(out)
        out.base_path = tmp + os.sep
        out.format.file_format = "OPEN_EXR"
        out.format.color_mode = "RGBA"
        out.format.color_depth = "32"
        out.file_slots.clear()
        for kind in kinds:
            socket = next((rl.outputs[n] for n in _SOCKETS[kind] if n in rl.outputs and rl.outputs[n].enabled),
                          None)
            if socket is None:
                raise ValueError(f"this Blender's render gives no {_SOCKETS[kind][0]} pass")
            out.file_slots.new(kind.lower() + "_")
            tree.links.new(socket, out.inputs[-1])
        bpy.ops.render.render(scene=scene.name)
    finally:
        for node in added:
            tree.nodes.remove(node)
        for obj, attr, value in reversed(saved):
            try:
                setattr(obj, attr, value)
            except (AttributeError, TypeError):
                pass
    buffers = {}
    try:
        for kind in kinds:
            names = [n for n in os.listdir(tmp) if n.startswith(kind.lower() + "_")]
            if not names:
                raise ValueError(f"the render wrote no {kind.lower()} pass")
            img = bpy.data.images.load(os.path.join(tmp, names[0]), check_existing=False)
            try:
                if tuple(img.size) != (w, h):
                    raise ValueError(f"the {kind.lower()} pass is {img.size[0]}x{img.size[1]}, not {w}x{h}")
                n = w * h * 4
                buf = np.empty(n, np.float32) if np is not None else array.array("f", bytes(n * 4))
                img.pixels.foreach_get(buf)
                buffers[kind] = buf
            finally:
                bpy.data.images.remove(img)
    finally:
        for name in os.listdir(tmp):
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)
    rot = scene.camera.matrix_world.to_3x3()
    return PassSnapshot(w, h, buffers, tuple(tuple(row) for row in rot))
