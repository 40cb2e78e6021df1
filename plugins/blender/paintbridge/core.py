"""Host adapter: the shared Session, image <-> wire pixel conversion, and drain() on Blender's main thread.

Everything that touches bpy data runs in drain() (from a bpy.app.timers timer, or called directly by tests:
timers do not fire under `blender -b`). Nothing here holds a bpy reference across calls: images are found
again by their "paintbridge_uid" ID property, because undo and deletion invalidate Python references.
"""

from __future__ import annotations

import array
import uuid

import bpy

from protocol import default_url
from protocol.pixels import Pixels, flip_rows, mask_from_transparency, paste
from protocol.session import Session

try:  # official Blender builds bundle numpy; Debian's blender package does not depend on it
    import numpy as np
except ImportError:  # pragma: no cover - exercised on hosts without numpy
    np = None

PACKAGE = __package__
UID = "paintbridge_uid"
REV = "paintbridge_rev"
PREVIEW_NAME = "Paintbridge Preview"
MODES = {"GENERATE": "txt2img", "REFINE": "img2img", "INPAINT": "inpaint", "UPSCALE": "upscale"}

# Observable state the panel draws (main thread only).
STATE = {"state": "disconnected", "message": "", "models": [], "jobs": {}, "last_error": "", "results": []}
_session: Session | None = None
_applied_revs: dict[str, int] = {}   # image uid -> revision whose pixels are in the image buffer


# ---- session ----------------------------------------------------------------------------------------------
def prefs():
    addon = bpy.context.preferences.addons.get(PACKAGE)
    return addon.preferences if addon else None


def server_url() -> str:
    p = prefs()
    addr = (p.server if p else "").strip() or default_url()
    if "://" not in addr:
        host, _, port = addr.partition(":")
        return default_url(host or "127.0.0.1", int(port) if port else 9180)
    return addr


def config_dir() -> str:
    return bpy.utils.user_resource("CONFIG", path="paintbridge", create=True)


def get_session() -> Session:
    global _session
    if _session is None:
        _session = Session("blender", bpy.app.version_string, config_dir(), url=server_url())
    return _session


def connect():
    get_session().connect(server_url())
    STATE["state"], STATE["message"] = "connecting", ""


# ---- pixels -----------------------------------------------------------------------------------------------
def _srgb_to_linear(v):
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def _linear_to_srgb(v):
    return v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


_BYTE_TO_LINEAR = [_srgb_to_linear(i / 255) for i in range(256)]


def image_to_pixels(image) -> Pixels:
    """Wire pixels (top-down rows, 8-bit sRGB, straight alpha) from a Blender image.

    Byte images hold byte/255 in sRGB with straight alpha; float images hold scene-linear premultiplied values.
    """
    w, h = image.size
    n = w * h * 4
    if w == 0 or h == 0 or not image.has_data:
        raise ValueError(f"image {image.name!r} has no pixels")
    if np is not None:
        a = np.empty(n, np.float32)
        image.pixels.foreach_get(a)
        a = a.reshape(h, w, 4)[::-1]
        if image.is_float:
            alpha = a[..., 3:4]
            rgb = np.where(alpha > 0, a[..., :3] / np.where(alpha > 0, alpha, 1), 0)
            rgb = np.clip(rgb, 0, 1)
            rgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
            a = np.concatenate([rgb, alpha], axis=2)
        data = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8).tobytes()
        return Pixels(data, w, h)
    buf = array.array("f", bytes(n * 4))
    image.pixels.foreach_get(buf)
    if image.is_float:
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


def mask_from_image(image, size) -> Pixels:
    """gray8 mask (255 = generate) from a chosen mask image: its red channel (black/white masks)."""
    if tuple(image.size) != tuple(size):
        raise ValueError(f"mask {image.name!r} is {image.size[0]}x{image.size[1]}, the image is {size[0]}x{size[1]}")
    px = image_to_pixels(image)
    return Pixels(px.data[0::4], px.w, px.h, "gray8")


def write_pixels(image, px: Pixels):
    """Put wire pixels into `image` (same size): rows flipped, sRGB/linear and alpha handled."""
    if px.format == "gray8":
        px = Pixels(bytes(b for v in px.data for b in (v, v, v, 255)), px.w, px.h)
    w, h = px.w, px.h
    if tuple(image.size) != (w, h):
        image.scale(w, h)
    if np is not None:
        a = np.frombuffer(px.data, np.uint8).reshape(h, w, 4)[::-1].astype(np.float32) / np.float32(255)
        if image.is_float:
            rgb = a[..., :3]
            rgb = np.where(rgb <= 0.04045, rgb / 12.92, np.power((rgb + 0.055) / 1.055, 2.4)) * a[..., 3:4]
            a = np.concatenate([rgb, a[..., 3:4]], axis=2).astype(np.float32)
        image.pixels.foreach_set(np.ascontiguousarray(a).ravel())
    else:
        data = flip_rows(px.data, w, h, 4)
        if image.is_float:
            vals = []
            for i in range(0, len(data), 4):
                al = data[i + 3] / 255
                vals += [_BYTE_TO_LINEAR[data[i]] * al, _BYTE_TO_LINEAR[data[i + 1]] * al,
                         _BYTE_TO_LINEAR[data[i + 2]] * al, al]
            image.pixels.foreach_set(array.array("f", vals))
        else:
            image.pixels.foreach_set(array.array("f", [v / 255 for v in data]))
    image.update()


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


# ---- jobs -------------------------------------------------------------------------------------------------
def build_request(settings, image=None) -> tuple[dict, Pixels | None, Pixels | None]:
    """(params, image pixels, mask pixels) for the panel's settings and the active image."""
    mode = MODES[settings.mode]
    params = {"mode": mode, "model": settings.model, "prompt": settings.prompt,
              "negative_prompt": settings.negative_prompt, "steps": settings.steps,
              "guidance": settings.guidance, "seed": settings.seed, "batch": 1}
    src = mask = None
    if mode == "txt2img":
        params["width"], params["height"] = settings.width, settings.height
        return params, None, None
    if image is None:
        raise ValueError("open an image in the Image Editor first")
    src = image_to_pixels(image)
    params["width"], params["height"] = src.w, src.h
    if mode == "img2img":
        params["strength"] = settings.strength
    elif mode == "inpaint":
        params["strength"] = settings.strength
        if settings.mask_source == "IMAGE":
            mimg = bpy.data.images.get(settings.mask_image) if settings.mask_image else None
            if mimg is None:
                raise ValueError("choose a mask image")
            mask = mask_from_image(mimg, image.size)
        else:
            mask = Pixels(mask_from_transparency(src.data), src.w, src.h, "gray8")
        if not any(mask.data):
            raise ValueError("the mask is empty: make the area to inpaint transparent, or choose a mask image")
    elif mode == "upscale":
        params["scale"] = int(settings.upscale_factor)
    return params, src, mask


def submit(settings, image=None) -> str:
    """Start a job for the panel's settings; returns the local request id. Raises ValueError for bad input."""
    params, src, mask = build_request(settings, image)
    replace = settings.replace_active and settings.mode != "GENERATE" and image is not None
    tag = {"mode": settings.mode, "target": "replace" if replace else "new",
           "uid": ensure_uid(image) if image is not None else None,
           "name": image.name if image is not None else None, "prompt": settings.prompt,
           # inpaint results cover only the mask's bounds: they are pasted onto the source pixels
           "base": src if settings.mode == "INPAINT" else None}
    rid = get_session().generate(params, src, mask, tag=tag)
    STATE["jobs"][rid] = {"request": rid, "job": None, "status": "sending", "step": 0, "total": 0, "tag": tag}
    return rid


def cancel_all():
    s = get_session()
    for info in STATE["jobs"].values():
        if info.get("job") and info["status"] in ("queued", "running", "submitted"):
            s.cancel(info["job"])


def _job_by_id(job):
    for info in STATE["jobs"].values():
        if info.get("job") == job:
            return info
    return None


def place_result(tag: dict, layer) -> str:
    """Make a result an image datablock (new, or replacing the source in place with an undo step)."""
    px = layer.pixels
    base_px = tag.get("base")
    if base_px is not None and (px.w, px.h) != (base_px.w, base_px.h):
        px = paste(base_px, px)
    target = find_image(tag.get("uid"), tag.get("name")) if tag.get("target") == "replace" else None
    if target is not None:
        # Record the state before the change as its own undo step: the uid, and the old pixels in a packed
        # file (or the image file on disk), which the undo handler reloads.
        uid = ensure_uid(target)
        if target.packed_file is None and (target.source != "FILE" or target.is_dirty):
            target.pack()
        _applied_revs[uid] = int(target.get(REV, 0))
        _undo_push("Before Paintbridge result")
        write_pixels(target, px)
        target.pack()
        target[REV] = int(target.get(REV, 0)) + 1
        _applied_revs[ensure_uid(target)] = target[REV]
        _undo_push(f"Paintbridge {tag.get('mode', '').lower()}")
        return target.name
    base = tag.get("name") or "Paintbridge"
    img = bpy.data.images.new(f"{base} {tag.get('mode', 'result').lower()}", px.w, px.h, alpha=True,
                              float_buffer=False)
    write_pixels(img, px)
    img.pack()                 # after the pixels: pixels set after pack() are not saved
    img.use_fake_user = True   # a finished result is never dropped on save, shown or not
    img[REV] = 1
    _applied_revs[ensure_uid(img)] = 1
    _show(img, tag.get("name"))
    _undo_push("Paintbridge result")
    return img.name


def _undo_push(message: str):
    try:
        bpy.ops.ed.undo_push(message=message)
    except Exception:
        pass


def _show(img, source_name=None):
    """Show `img` in the Image Editors that showed the source image (or in the first Image Editor)."""
    spaces = []
    for win in bpy.context.window_manager.windows:
        for area in win.screen.areas:
            if area.type == "IMAGE_EDITOR":
                spaces.append(area.spaces.active)
    chosen = [s for s in spaces if s.image is not None and s.image.name == source_name] or spaces[:1]
    for s in chosen:
        s.image = img


def _show_preview(px: Pixels):
    img = bpy.data.images.get(PREVIEW_NAME)
    if img is None or tuple(img.size) != (px.w, px.h):
        if img is not None:
            bpy.data.images.remove(img)
        img = bpy.data.images.new(PREVIEW_NAME, px.w, px.h, alpha=True)
    write_pixels(img, px)


def drain(max_items: int = 100) -> int:
    """Apply the session's ready updates to Blender. Main thread only; returns how many were handled."""
    if _session is None:
        return 0
    ups = _session.poll(max_items)
    for up in ups:
        d = up.data
        try:
            _apply(up.kind, d)
        except Exception as exc:  # one bad update must not stop the timer
            STATE["last_error"] = f"{type(exc).__name__}: {exc}"
    if ups:
        _redraw()
    return len(ups)


def _apply(kind, d):
    if kind == "state":
        STATE["state"], STATE["message"] = d["state"], d.get("message", "")
    elif kind == "signed_in":
        STATE["message"] = ""
    elif kind == "models":
        STATE["models"] = [m.get("name") if isinstance(m, dict) else str(m) for m in d["models"]]
        _default_model()
    elif kind == "job":
        info = STATE["jobs"].get(d["request"])
        if info is not None:
            info.update(job=d["job"], status="submitted")
    elif kind in ("queued", "started"):
        info = _job_by_id(d["job"])
        if info:
            info["status"] = "queued" if kind == "queued" else "running"
    elif kind == "progress":
        info = _job_by_id(d["job"])
        if info:
            info.update(status="running", step=d.get("step") or 0, total=d.get("total") or 0)
        if d.get("preview") is not None:
            _show_preview(d["preview"])
    elif kind == "result":
        info = _job_by_id(d["job"])
        tag = d.get("tag") or (info or {}).get("tag") or {}
        names = [place_result(tag, layer) for layer in d["layers"]]
        STATE["results"].extend(names)
        if info:
            info.update(status="done", images=names)
    elif kind in ("failed", "canceled"):
        info = _job_by_id(d["job"])
        if info:
            info.update(status=kind, message=d.get("message", ""))
        if kind == "failed":
            STATE["last_error"] = f"{d.get('code')}: {d.get('message')}"
    elif kind == "error":
        STATE["last_error"] = d.get("message", "error")
        info = STATE["jobs"].get(d.get("request"))
        if info:
            info.update(status="failed", message=d.get("message", ""))


def _default_model():
    try:
        settings = bpy.context.scene.paintbridge
    except AttributeError:
        return
    if STATE["models"] and settings.model not in STATE["models"]:
        settings.model = STATE["models"][0]


def _redraw():
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for win in wm.windows:
        for area in win.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.tag_redraw()


def active_jobs():
    return [i for i in STATE["jobs"].values() if i["status"] in ("sending", "submitted", "queued", "running")]


# ---- timer and undo handling ------------------------------------------------------------------------------
def _timer():
    drain()
    return 0.1 if active_jobs() or STATE["state"] in ("connecting",) else 0.25


@bpy.app.handlers.persistent
def _after_undo(*_args):
    """Memfile undo restores the packed file and REV but not the image buffer: reload changed images."""
    for img in bpy.data.images:
        uid = img.get(UID)
        if uid is None or uid not in _applied_revs:
            continue
        rev = int(img.get(REV, 0))
        if _applied_revs[uid] != rev and (img.packed_file is not None or img.source == "FILE"):
            img.reload()
            _applied_revs[uid] = rev


def register():
    for handlers in (bpy.app.handlers.undo_post, bpy.app.handlers.redo_post):
        if _after_undo not in handlers:
            handlers.append(_after_undo)
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=0.5, persistent=True)


def unregister():
    global _session
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    for handlers in (bpy.app.handlers.undo_post, bpy.app.handlers.redo_post):
        if _after_undo in handlers:
            handlers.remove(_after_undo)
    if _session is not None:
        _session.close()
        _session = None
