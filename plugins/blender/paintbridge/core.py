"""Host adapter: the shared Session, image <-> wire pixel conversion, and drain() on Blender's main thread.

Everything that touches bpy data runs in drain() (from a bpy.app.timers timer, or called directly by tests:
timers do not fire under `blender -b`). Nothing here holds a bpy reference across calls: images are found
again by their "paintbridge_uid" ID property, because undo and deletion invalidate Python references.
"""

from __future__ import annotations

import array
import json
import os
import shutil
import tempfile
import uuid

import bpy

from ._vendor.protocol import default_url, forms
from ._vendor.protocol.pixels import Pixels, flip_rows, mask_from_transparency, paste
from ._vendor.protocol.session import Session

from . import png

try:  # official Blender builds bundle numpy; Debian's blender package does not depend on it
    import numpy as np
except ImportError:  # pragma: no cover - exercised on hosts without numpy
    np = None

PACKAGE = __package__
UID = "paintbridge_uid"
REV = "paintbridge_rev"
PREVIEW_NAME = "Paintbridge Preview"
MODES = {"GENERATE": "txt2img", "REFINE": "img2img", "INPAINT": "inpaint", "UPSCALE": "upscale"}
MODE_OF = {v: k for k, v in MODES.items()}
IMAGE_ID = "paintbridge_image_id"     # ID property: the gallery id of an image opened from the gallery
INT_MIN, INT_MAX = -2 ** 31, 2 ** 31 - 1   # Blender IntProperty range
GALLERY_PAGE = 24
THUMB_SIZE = 96

# Observable state the panel draws (main thread only).
# The engine's main models, upscalers and LoRAs as Session gives them (with base), behind the pickers.
_ENTRIES = {"models": [], "upscalers": [], "loras": []}
STATE = {"state": "disconnected", "message": "", "models": [], "jobs": {}, "last_error": "", "results": []}
_session: Session | None = None
_applied_revs: dict[str, int] = {}   # image uid -> revision whose pixels are in the image buffer
# Gallery paging state (the rows themselves live in WindowManager.paintbridge_gallery, for the UIList).
# gen: a refresh asks for page 1 with a new generation; pages of older generations are dropped.
GALLERY = {"gen": 0, "loading": False, "total": 0, "next_cursor": None, "message": ""}
WORKFLOWS: dict = {"list": [], "loaded": False, "message": ""}
_previews = None                     # bpy.utils.previews collection of gallery thumbnails (by image id)
_thumb_dir: str | None = None        # temporary folder of their PNG files


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
    if mode != "upscale":
        lora = forms.offered("LoRA", settings.lora, _ENTRIES["loras"], "none")
        params["loras"] = forms.loras_arg(lora, settings.lora_weight)
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
        upscaler = forms.offered("upscaler", settings.upscaler, _ENTRIES["upscalers"], "a plain resize")
        if upscaler:
            params["upscaler"] = upscaler
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
    if "title_prefix" in tag:   # gallery images and workflow outputs: named after the layer
        title = f"{tag['title_prefix']} {layer.name}".strip()
    else:
        title = f"{tag.get('name') or 'Paintbridge'} {tag.get('mode', 'result').lower()}"
    img = bpy.data.images.new(title, px.w, px.h, alpha=True, float_buffer=False)
    write_pixels(img, px)
    img.pack()                 # after the pixels: pixels set after pack() are not saved
    img.use_fake_user = True   # a finished result is never dropped on save, shown or not
    img[REV] = 1
    if tag.get("image"):
        img[IMAGE_ID] = tag["image"]
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
        was = STATE["state"]
        STATE["state"], STATE["message"] = d["state"], d.get("message", "")
        if d["state"] == "connected" and was != "connected":
            refresh_workflows()   # the session fetches models itself; the gallery and workflows are ours
            gallery_refresh()
    elif kind == "signed_in":
        STATE["message"] = ""
    elif kind == "models":
        _apply_models(d["models"], d["upscalers"], d["loras"])
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
        if d.get("image"):   # a gallery image opened with open_image(): not one of this session's jobs
            names = [place_result(dict(d.get("tag") or {}, image=d["image"]), layer) for layer in d["layers"]]
            STATE["results"].extend(names)
            GALLERY["message"] = f"Opened as image “{names[0]}”" if names else ""
            return
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
    elif kind == "images":
        _apply_page(d)
    elif kind == "recalled":
        tag = d.get("tag") if isinstance(d.get("tag"), dict) else {}
        scene = bpy.data.scenes.get(tag.get("scene") or "") or bpy.context.scene
        apply_recalled(scene, d.get("values") or {}, d.get("workflow"), d.get("summary") or {})
    elif kind == "workflows":
        _apply_workflows(d["workflows"])
    elif kind == "reply":
        _apply_reply(d)
    elif kind == "error":
        GALLERY["loading"] = False
        STATE["last_error"] = d.get("message", "error")
        info = STATE["jobs"].get(d.get("request"))
        if info:
            info.update(status="failed", message=d.get("message", ""))
        tag = d.get("tag") if isinstance(d.get("tag"), dict) else {}
        if tag.get("workflow"):
            _workflow_refused(tag["workflow"], d)


def _workflow_refused(name: str, d: dict):
    """The engine refused a run's values: put its message on the field it names (details.param), else the form."""
    details = d.get("details") if isinstance(d.get("details"), dict) else {}
    message = d.get("message", "error")
    for scene in bpy.data.scenes:
        form = scene.paintbridge_workflow
        if form.workflow != name:
            continue
        row = next((it for it in form.fields if it.name == details.get("param")), None)
        if row is not None:
            row.error = message
        form.error = message


def _apply_models(models: list, upscalers: list, loras: list):
    """The engine's main models, upscalers and LoRAs: kept in STATE and in the pickers' lists (prop_search)."""
    _ENTRIES.update(models=models, upscalers=upscalers, loras=loras)
    STATE["models"] = [m["name"] for m in models]
    for wm in bpy.data.window_managers:
        catalog = wm.paintbridge_catalog
        _fill(catalog.models, STATE["models"])
        _fill(catalog.upscalers, [m["name"] for m in upscalers])
    _default_model()
    fill_loras()


def fill_loras(settings=None):
    """The LoRA picker's list: the LoRAs that fit the chosen model's base (also run when the Model field changes)."""
    if settings is None:
        settings = getattr(bpy.context.scene, "paintbridge", None) if bpy.context.scene else None
    model = settings.model if settings is not None else ""
    names = [m["name"] for m in forms.loras_for(_ENTRIES["loras"], _ENTRIES["models"], model)]
    for wm in bpy.data.window_managers:
        _fill(wm.paintbridge_catalog.loras, names)


def _fill(coll, names):
    coll.clear()
    for name in names:
        coll.add().name = name


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


# ---- gallery ----------------------------------------------------------------------------------------------
def gallery_props():
    """WindowManager.paintbridge_gallery: the rows the UIList draws and the filters (not saved in .blend)."""
    wm = getattr(bpy.context, "window_manager", None)
    return getattr(wm, "paintbridge_gallery", None) if wm is not None else None


def gallery_refresh(more: bool = False) -> bool:
    """Ask for the first page with the panel's filters (or, more=True, the next page). False if nothing asked."""
    g = gallery_props()
    if g is None or _session is None:
        return False
    if more:
        if not GALLERY["next_cursor"] or GALLERY["loading"]:
            return False
        cursor = GALLERY["next_cursor"]
    else:
        GALLERY["gen"] += 1
        cursor = None
    GALLERY["loading"], GALLERY["message"] = True, ""
    _session.list_images(thumb_size=THUMB_SIZE, limit=GALLERY_PAGE, tag={"gallery": GALLERY["gen"], "append": more},
                         starred=True if g.starred_only else None, q=g.search.strip() or None, cursor=cursor)
    return True


def _apply_page(d: dict):
    tag = d.get("tag")
    g = gallery_props()
    if not isinstance(tag, dict) or tag.get("gallery") != GALLERY["gen"] or g is None:
        return   # an older refresh's page, or not ours
    GALLERY["loading"] = False
    if not tag.get("append"):
        g.items.clear()
        g.index = 0
    have = {it.image_id for it in g.items}
    for summary in d["images"]:
        if summary["id"] in have:
            continue
        it = g.items.add()
        _fill_item(it, summary)
        _load_thumb(summary["id"], summary.get("thumbnail"))
    GALLERY["total"], GALLERY["next_cursor"] = d.get("total") or 0, d.get("next_cursor")
    if not d["images"] or len(g.items) >= GALLERY["total"]:
        GALLERY["next_cursor"] = None   # the engine hands out a cursor after every full page, the last one too


def _fill_item(it, s: dict):
    it.image_id = s["id"]
    it.prompt = s.get("prompt") or ""
    it.name = it.prompt or s["id"]   # the UIList's own name filter searches this
    it.seed = "" if s.get("seed") is None else str(s["seed"])
    it.app = s.get("app") or ""
    it.mode = s.get("mode") or ""
    it.model = s.get("model") or ""
    it.starred = bool(s.get("starred"))
    it.width, it.height = int(s.get("w") or 0), int(s.get("h") or 0)
    it.created = str(s.get("created") or "")


def _load_thumb(image_id: str, px):
    """Write the thumbnail (rgba8 Pixels) to a PNG in our temp folder and load it as a preview icon."""
    global _previews, _thumb_dir
    if px is None or px.format != "rgba8" or not image_id.isalnum():
        return
    if _previews is None:
        import bpy.utils.previews
        _previews = bpy.utils.previews.new()
    if image_id in _previews:
        return
    if _thumb_dir is None:
        _thumb_dir = tempfile.mkdtemp(prefix="paintbridge-thumbs-")
    path = png.write_rgba(os.path.join(_thumb_dir, image_id + ".png"), px.w, px.h, px.data)
    _previews.load(image_id, path, "IMAGE")


def thumbnail(image_id: str):
    """The preview of a listed image, or None. Its icon_id is 0 until Blender draws it (always 0 under -b)."""
    return _previews.get(image_id) if _previews is not None else None


def _free_thumbs():
    global _previews, _thumb_dir
    if _previews is not None:
        import bpy.utils.previews
        bpy.utils.previews.remove(_previews)
        _previews = None
    if _thumb_dir is not None:
        shutil.rmtree(_thumb_dir, ignore_errors=True)
        _thumb_dir = None


def selected_image_id() -> str:
    g = gallery_props()
    if g is None or not (0 <= g.index < len(g.items)):
        return ""
    return g.items[g.index].image_id


def gallery_item(image_id: str):
    g = gallery_props()
    return next((it for it in g.items if it.image_id == image_id), None) if g is not None else None


def recall(image_id: str, scene_name: str = ""):
    get_session().recall(image_id, tag={"recall": image_id, "scene": scene_name})
    GALLERY["message"] = "Fetching its settings…"


def apply_recalled(scene, values: dict, workflow: tuple | None, summary: dict) -> list[str]:
    """Copy recalled generate values (forms.recalled) into the scene's Paintbridge settings, or, for a workflow
    image (forms.recalled_workflow), choose that workflow and fill its form with the values it ran with.
    Returns the keys set."""
    settings = scene.paintbridge
    if not values:
        wf = find_workflow(workflow[0]) if workflow else None
        if wf is not None:
            build_form(scene.paintbridge_workflow, wf)
            filled = fill_form(scene.paintbridge_workflow, workflow[1])
            GALLERY["message"] = f"Workflow “{wf['name']}” chosen and its form filled in (images excepted)"
            return filled
        GALLERY["message"] = (f"Made by a {summary.get('mode') or 'graph'}"
                              + (f" (“{workflow[0]}”, no longer saved)" if workflow else "")
                              + ": there are no settings to recall")
        return []
    filled, skipped = [], []
    mode = values.get("mode")
    if mode in MODE_OF:
        settings.mode = MODE_OF[mode]
        filled.append("mode")
    elif mode:
        skipped.append(f"mode {mode}")
    if mode != "upscale":   # the LoRA picker: the image's first LoRA, or none
        settings.lora, settings.lora_weight = forms.recalled_lora(values)
        filled.append("lora")
    if values.get("scale") is not None:   # an upscale: the factor field holds 2× and 4×
        if values["scale"] in (2, 4):
            settings.upscale_factor = str(int(values["scale"]))
            filled.append("scale")
        else:
            skipped.append(f"scale {values['scale']}")
    for key in ("prompt", "negative_prompt", "model", "steps", "guidance", "seed", "strength", "width", "height",
                "upscaler"):
        if key not in values:
            continue
        v = values[key]
        if key == "seed" and not 0 <= v <= INT_MAX:
            skipped.append(f"seed {v} (Blender's seed field holds at most {INT_MAX})")
            continue
        try:
            setattr(settings, key, v)
        except (TypeError, ValueError, OverflowError):
            skipped.append(f"{key} {v!r}")
            continue
        filled.append(key)
    GALLERY["message"] = "Settings filled in" + (f"; not filled: {', '.join(skipped)}" if skipped else "")
    return filled


def open_image(image_id: str):
    """Download a gallery image; it becomes a new packed image datablock (through place_result)."""
    get_session().open_image(image_id, tag={"mode": "OPEN", "target": "new", "uid": None, "name": None,
                                            "title_prefix": ""})
    GALLERY["message"] = "Downloading…"


def star(image_id: str, starred: bool):
    get_session().call("images.star", {"image": image_id, "starred": bool(starred)}, tag={"star": image_id})


def _apply_reply(d: dict):
    tag = d.get("tag") or {}
    if d.get("op") == "images.star" and isinstance(tag, dict):
        it = gallery_item(tag.get("star", ""))
        if it is not None:
            it.starred = bool((d.get("result") or {}).get("starred"))


# ---- workflows ----------------------------------------------------------------------------------------------
def refresh_workflows():
    if _session is not None:
        _session.refresh_workflows()


def find_workflow(name: str):
    return next((w for w in WORKFLOWS["list"] if w.get("name") == name), None)


def _params_json(wf: dict) -> str:
    return json.dumps(wf.get("params") or [], sort_keys=True)


def _apply_workflows(workflows: list):
    WORKFLOWS["list"], WORKFLOWS["loaded"] = list(workflows), True
    for scene in bpy.data.scenes:   # a form whose workflow changed on the engine is rebuilt
        form = getattr(scene, "paintbridge_workflow", None)
        if form is None or not form.workflow:
            continue
        wf = find_workflow(form.workflow)
        if wf is None:
            form.error = f"The workflow “{form.workflow}” no longer exists"
        elif _params_json(wf) != form.params_json:
            build_form(form, wf)
            form.error = "The workflow changed on the engine: its form was rebuilt"


def build_form(form, wf: dict):
    """(Re)build the scene's workflow form from the workflow's parameters: one row per forms.Field."""
    form.fields.clear()
    form.workflow, form.description = wf["name"], wf.get("description") or ""
    form.params_json, form.error = _params_json(wf), ""
    for f in forms.fields(wf):
        it = form.fields.add()
        it.name, it.label, it.widget, it.ftype = f.name, f.label, f.widget, f.type
        it.description, it.required = f.description, f.required
        it.has_min, it.min_value = f.min is not None, f.min if f.min is not None else 0.0
        it.has_max, it.max_value = f.max is not None, f.max if f.max is not None else 0.0
        it.step = f.step or 0.0
        it.choices_json = json.dumps(f.choices)
        d = f.default
        if f.widget == forms.CHOICE:
            it.choice = str(f.choices.index(d)) if d in f.choices else "-"
        elif f.type == "int" and d is not None:
            it.int_value = max(INT_MIN, min(INT_MAX, int(d)))
        elif f.type == "float" and d is not None:
            it.float_value = float(d)
        elif f.type == "str":
            it.str_value = "" if d is None else str(d)
        elif f.type == "bool":
            it.bool_value = bool(d)


def fill_form(form, values: dict) -> list[str]:
    """Put typed values (as workflows.run took them) into the form's rows; image and mask rows are left alone."""
    filled = []
    for it in form.fields:
        if it.name not in values or it.widget in (forms.LAYER, forms.SELECTION) or values[it.name] is None:
            continue
        v = values[it.name]
        try:
            if it.widget == forms.CHOICE:
                choices = json.loads(it.choices_json)
                if v not in choices:
                    continue
                it.choice = str(choices.index(v))
            elif it.widget == forms.INT:
                it.int_value = max(INT_MIN, min(INT_MAX, int(v)))
            elif it.widget == forms.FLOAT:
                it.float_value = float(v)
            elif it.widget in (forms.TEXT, forms.TEXTAREA):
                it.str_value = str(v)
            elif it.widget == forms.CHECK:
                it.bool_value = bool(v)
        except (TypeError, ValueError):
            continue
        filled.append(it.name)
    return filled


def form_fields(form) -> list:
    return forms.fields({"params": json.loads(form.params_json or "[]")})


def _raw_value(f, it, active_image, layer_size):
    """What the row's widget holds, as forms.collect takes it (Pixels for image/mask rows)."""
    w = f.widget
    if w == forms.CHOICE:
        if it.choice in ("", "-"):
            return None
        return json.loads(it.choices_json)[int(it.choice)]
    if w == forms.INT:
        return it.int_value
    if w == forms.FLOAT:   # FloatProperty is single precision: 0.3 would arrive as 0.30000001192…
        return float(f"{it.float_value:.7g}")
    if w in (forms.TEXT, forms.TEXTAREA):
        return it.str_value
    if w == forms.CHECK:
        return it.bool_value
    if w == forms.LAYER:
        img = it.image or active_image
        return image_to_pixels(img) if img is not None else None
    if w == forms.SELECTION:
        img = it.image
        return mask_from_image(img, layer_size or tuple(img.size)) if img is not None else None
    raise ValueError(f"unknown widget {w!r}")


def collect_form(form, active_image=None) -> tuple[dict, dict]:
    """(values for workflows.run, {field name: message}); the messages are also put on the rows."""
    fl = form_fields(form)
    rows = {it.name: it for it in form.fields}
    layer_size = None   # a mask must match the size of the (first) image it goes with
    for f in fl:
        it = rows.get(f.name)
        img = (it.image or active_image) if it is not None and f.widget == forms.LAYER else None
        if img is not None:
            layer_size = tuple(img.size)
            break
    raw, errors = {}, {}
    for f in fl:
        it = rows.get(f.name)
        if it is None:
            errors[f.name] = f"{f.label}: not in the form (choose the workflow again)"
            continue
        try:
            raw[f.name] = _raw_value(f, it, active_image, layer_size)
        except ValueError as exc:
            errors[f.name] = f"{f.label}: {exc}"
    values, more = forms.collect([f for f in fl if f.name not in errors], raw)
    errors.update(more)
    for it in form.fields:
        it.error = errors.get(it.name, "")
    form.error = f"Fix {len(errors)} field{'s' if len(errors) > 1 else ''} first" if errors else ""
    return values, errors


def run_workflow(form, active_image=None) -> tuple[str | None, dict]:
    """Run the form's workflow: (local request id, {}) or (None, errors) with nothing sent."""
    if not form.workflow:
        form.error = "Choose a workflow"
        return None, {"": form.error}
    values, errors = collect_form(form, active_image)
    if errors:
        return None, errors
    tag = {"mode": "WORKFLOW", "target": "new", "uid": None, "name": None, "title_prefix": form.workflow,
           "workflow": form.workflow}
    rid = get_session().run_workflow(form.workflow, values, tag=tag)
    STATE["jobs"][rid] = {"request": rid, "job": None, "status": "sending", "step": 0, "total": 0, "tag": tag}
    return rid, {}


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
    _free_thumbs()
    GALLERY.update(gen=0, loading=False, total=0, next_cursor=None, message="")
    WORKFLOWS.update(list=[], loaded=False, message="")
