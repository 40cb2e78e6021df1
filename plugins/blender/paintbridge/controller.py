"""The add-on's state: it owns the shared Session, drains it on Blender's main thread and keeps what the panels
draw (STATE, the session's job table, the gallery browser, the workflows).

drain() runs from a bpy.app.timers timer, or is called directly by tests (timers do not fire under `blender -b`).
Requests are built with protocol.generate (one seed rule, the fields each mode uses); pixels are copied on the main
thread and converted off it (the session's worker for sending, a converter thread for results), so only
foreach_get/foreach_set and datablock calls run on the main thread - and, for controls taken from the scene's render
passes, the render itself (Blender renders on the main thread; host.render_passes), once per Generate.
Live mode (Live, below) watches the painted image through depsgraph/undo handlers and protocol.live.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor

import bpy

from ._vendor.protocol import forms, generate
from ._vendor.protocol.gallery import GalleryBrowser, format_date
from ._vendor.protocol.pixels import Pixels, pad, round8
from ._vendor.protocol.session import Session
from ._vendor.protocol.updates import (DownloadProgress, ErrorUpdate, ImagesPage, JobAccepted, JobCanceled,
                                       JobFailed, JobProgress, JobResult, ModelsChanged, Recalled, Reply, SignedIn,
                                       StateChanged, WorkflowsChanged)

from . import host, png, settings, workflow_form

GALLERY_PAGE = 24
THUMB_SIZE = 96

# Observable state the panels draw (main thread only).
STATE = {"state": "disconnected", "message": "", "models": [], "last_error": "", "results": [], "last_seed": None,
         "user": ""}
# The engine's main models, upscalers, LoRAs, VAEs (with base) and samplers as the Session gives them, behind
# the pickers.
_ENTRIES = {"models": [], "upscalers": [], "loras": [], "vaes": [], "samplers": []}
WORKFLOWS: dict = {"list": [], "loaded": False, "message": ""}
GALLERY_STATE = {"message": ""}
_session: Session | None = None
_gallery: GalleryBrowser | None = None
_converter: ThreadPoolExecutor | None = None
_placing: list = []                  # [(future of host.prepare_result, tag, layer, job)] in arrival order
_previews = None                     # bpy.utils.previews collection of gallery thumbnails (by image id)
_thumb_dir: str | None = None        # temporary folder of their PNG files
_auto_connect_tried = False


# ---- session ----------------------------------------------------------------------------------------------
def get_session() -> Session:
    global _session
    if _session is None:
        _session = Session("blender", bpy.app.version_string, settings.config_dir(), url=settings.server_url())
    return _session


def session() -> Session | None:
    return _session


def connect(token: str | None = None):
    """Connect with a pasted token, or the one stored for the server."""
    get_session().connect(settings.server_url(), (token or "").strip() or None)
    STATE["state"], STATE["message"], STATE["last_error"] = "connecting", "", ""


def sign_in(username: str, password: str, remember: bool):
    p = settings.prefs()
    if p is not None:
        p.username = username
    get_session().login(username, password, remember, url=settings.server_url())
    STATE["state"], STATE["message"], STATE["last_error"] = "connecting", "signing in…", ""


def sign_out():
    get_session().sign_out()


def auto_connect() -> bool:
    """At start: connect once with the stored token, if there is one (no prompt, no network otherwise)."""
    global _auto_connect_tried
    if _auto_connect_tried or _session is not None and _session.client is not None:
        return False
    _auto_connect_tried = True
    p = settings.prefs()
    if p is not None and not p.auto_connect:
        return False
    s = get_session()
    if not s.tokens.get(settings.server_url()):
        return False
    connect()
    return True


def limits():
    return get_session().limits


# ---- requests -----------------------------------------------------------------------------------------------
def build_request(s, image=None) -> tuple[dict, object, object, object]:
    """(params, image, mask, base) for the scene form and the active image. image/mask are host.Deferred
    conversions of a pixel copy taken now; base is the image an inpaint/outpaint patch is pasted onto.
    Raises ValueError (generate.FieldError names the field) for anything to fix before sending."""
    mode = settings.MODES[s.mode]
    sess = get_session()
    m = generate.MODES[mode]
    if m.image and image is None:
        raise generate.FieldError("", "open an image in the Image Editor first")
    values = settings.form_values(s)
    regions = []
    if mode != "upscale":
        size = _document_size(s, mode, image)
        values["control"], values["reference"] = steering(s, size)
        regions = region_entries(s, size)
    params = generate.generate_args(mode, values, limits=sess.limits, loras=_ENTRIES["loras"],
                                    upscalers=_ENTRIES["upscalers"], samplers=_ENTRIES["samplers"],
                                    vaes=_ENTRIES["vaes"], models=_ENTRIES["models"], regions=regions,
                                    source={"app": "blender", "document": _document_key()})
    if not m.image:
        return params, None, None, None
    snap = host.Snapshot(image)
    if mode == "outpaint":
        margins = (s.extend_left, s.extend_top, s.extend_right, s.extend_bottom)
        src = host.Deferred(lambda: pad(snap.pixels(), *margins))
    else:
        src = host.Deferred(snap.pixels)
    mask = base = None
    if mode == "inpaint":
        base = src
        if s.mask_source == "IMAGE":
            mimg = bpy.data.images.get(s.mask_image) if s.mask_image else None
            if mimg is None:
                raise generate.FieldError("mask_image", "choose a mask image")
            if tuple(mimg.size) != tuple(image.size):
                raise generate.FieldError("mask_image", f"mask {mimg.name!r} is {mimg.size[0]}x{mimg.size[1]}, "
                                                        f"the image is {image.size[0]}x{image.size[1]}")
            msnap = host.Snapshot(mimg)
            mask = host.Deferred(lambda: _not_empty(msnap.mask()))
        else:
            mask = host.Deferred(lambda: _not_empty(host.alpha_mask(src())))
    elif mode == "outpaint":
        base = src
    return params, src, mask, base


def _document_size(s, mode: str, image) -> tuple[int, int]:
    """The size controls and region masks are sent at: txt2img's width×height (as the engine rounds them), else
    the image's (outpaint: with the margins it grows by)."""
    if mode == "txt2img":
        return round8(s.width), round8(s.height)
    w, h = image.size
    if mode == "outpaint":
        w, h = w + s.extend_left + s.extend_right, h + s.extend_top + s.extend_bottom
    return int(w), int(h)


class Sent(host.Deferred):
    """A control image or region mask converted on the session's worker, remembering the hash of what was sent, so
    Use settings can find its source again (record_sent)."""

    def __init__(self, source: str, fn):
        super().__init__(fn)
        self.source = source   # "IMAGE:<uid>" or a render pass kind ("DEPTH", ...)
        self.sha256 = None

    def __call__(self) -> Pixels:
        px = super().__call__()
        if self.sha256 is None:
            self.sha256 = px.sha256()
        return px


def steering(s, size) -> tuple[list, list]:
    """(control, reference) entries for generate_args from the form's list: images copied now (one foreach_get
    each; the scene's passes rendered once for all), converted and scaled to `size` on the worker."""
    w, h = size
    items = [it for it in s.steer if it.enabled]
    for n, it in enumerate(items, 1):   # before any render: what generate_args would refuse anyway
        what = "control" if it.kind == "CONTROL" else "reference"
        if not it.model.strip():
            raise generate.FieldError(what, f"{what} {n}: choose a model")
        if it.source == "IMAGE" and bpy.data.images.get(it.image) is None:
            raise generate.FieldError(what, f"{what} {n} ({it.model}): choose an image")
    kinds = {it.source for it in items if it.source != "IMAGE"}
    passes = None
    if kinds:
        try:
            passes = host.render_passes(bpy.context.scene, w, h, kinds)
        except ValueError as exc:
            raise generate.FieldError("control", str(exc)) from None
    out = {"CONTROL": [], "REFERENCE": []}
    for it in items:
        if it.source == "IMAGE":
            img = bpy.data.images[it.image]
            snap = host.Snapshot(img)
            image = Sent(f"IMAGE:{host.ensure_uid(img)}", lambda snap=snap: host.fit(snap.pixels(), w, h))
        else:
            image = Sent(it.source, lambda kind=it.source: passes.pixels(kind))
        entry = {"model": it.model, "image": image, "strength": round(it.strength, 4), "start": round(it.start, 4),
                 "end": round(it.end, 4)}
        if it.kind == "CONTROL":
            entry["preprocess"] = it.preprocess
        out[it.kind].append(entry)
    return out["CONTROL"], out["REFERENCE"]


def region_entries(s, size) -> list:
    """Regions for generate_args: each mask image's luminance × alpha (host.region_mask), scaled to `size` and cut
    to the part it covers."""
    w, h = size
    out = []
    for n, r in enumerate(it for it in s.regions if it.enabled):
        img = bpy.data.images.get(r.image) if r.image else None
        if img is None:
            raise generate.FieldError(generate.REGIONS, f"region {n}: choose a mask image")
        snap = host.Snapshot(img)
        mask = Sent(f"IMAGE:{host.ensure_uid(img)}",
                    lambda snap=snap, what=f"region {n} ({img.name})": host.region_mask(snap.pixels(), w, h, what))
        out.append({"prompt": r.prompt, "negative_prompt": r.negative_prompt, "mask": mask})
    return out


def _sent_of(params: dict) -> list:
    return [it[k] for key, k in (("control", "image"), ("reference", "image"), ("regions", "mask"))
            for it in params.get(key) or [] if isinstance(it.get(k), Sent)]


SENT_KEY = "paintbridge_sent"   # scene ID property: {sha256[:SHA_KEY]: source} of the controls and masks sent
SENT_KEEP = 64
SHA_KEY = 40                    # ID property names hold at most 63 characters; 160 bits still name one image


def record_sent(scene, sent: list):
    """Main thread, once a request was accepted: remember which image or pass each sent hash came from (kept with
    the .blend, the newest SENT_KEEP)."""
    known = dict(scene.get(SENT_KEY) or {})
    for d in sent:
        if d.sha256:
            known.pop(d.sha256[:SHA_KEY], None)
            known[d.sha256[:SHA_KEY]] = d.source
    scene[SENT_KEY] = dict(list(known.items())[-SENT_KEEP:])


def _source_for(scene, layer: dict):
    """The source ("IMAGE:<uid>" whose image still exists, or a pass kind) of a recalled control image or mask."""
    src = (scene.get(SENT_KEY) or {}).get(str((layer or {}).get("sha256") or "")[:SHA_KEY])
    if src is None:
        return None
    if src.startswith("IMAGE:"):
        img = host.find_image(src[6:])
        return ("IMAGE", img.name) if img is not None else None
    return (src, "")


def _not_empty(mask: Pixels) -> Pixels:
    if not any(mask.data):
        raise ValueError("the mask is empty: make the area to inpaint transparent, or choose a mask image")
    return mask


def _document_key() -> str:
    return bpy.path.basename(bpy.data.filepath) if bpy.data.filepath else ""


def submit(s, image=None) -> str:
    """Start a job for the scene form; returns the local request id. Raises ValueError for bad input."""
    params, src, mask, base = build_request(s, image)
    replace = s.replace_active and s.mode != "GENERATE" and image is not None
    tag = {"mode": s.mode, "target": "replace" if replace else "new",
           "uid": host.ensure_uid(image) if image is not None else None,
           "name": image.name if image is not None else None, "prompt": s.prompt, "base": base}
    STATE["last_error"] = ""
    if s.mode == "OUTPAINT":   # grown once: another Generate fills again instead of growing again
        s.extend_left = s.extend_top = s.extend_right = s.extend_bottom = 0
    tag["sent"], tag["scene"] = _sent_of(params), bpy.context.scene.name
    return get_session().generate(params, src, mask, tag=tag)


def cancel_all():
    if _session is not None:
        _session.cancel_all()


def active_jobs() -> list:
    return _session.jobs.active() if _session is not None else []


def latest_job():
    return _session.jobs.latest() if _session is not None else None


# ---- the main-thread drain ------------------------------------------------------------------------------------
def drain(max_items: int = 100) -> int:
    """Apply the session's ready updates to Blender, and place results whose conversion finished. Main thread
    only; returns how many updates and results were handled."""
    handled = _place_ready()
    if _session is None:
        return handled
    ups = _session.poll(max_items)
    for up in ups:
        try:
            if LIVE.handle(up):   # live jobs' updates are live mode's
                _session.jobs.forget_finished(keep=20)
                continue
            _apply(up)
        except Exception as exc:  # one bad update must not stop the timer
            STATE["last_error"] = f"{type(exc).__name__}: {exc}"
    try:
        if LIVE.tick():
            handled += 1
    except Exception as exc:
        LIVE.stop()
        STATE["last_error"] = f"live mode stopped: {type(exc).__name__}: {exc}"
    if ups or handled:
        _redraw()
    return handled + len(ups)


def _apply(up):
    if isinstance(up, StateChanged):
        was = STATE["state"]
        STATE["state"], STATE["message"] = up.state, up.message
        if up.lost:
            STATE["message"] = "connection lost" + (f": retrying in {up.retry_in:.0f} s" if up.retry_in else "")
        if up.state == "connected":
            STATE["user"] = (up.user or {}).get("name", "")
            STATE["message"] = ""
            if was != "connected":
                refresh_workflows()   # the session fetches models itself; the gallery and workflows are ours
                gallery_refresh()
        elif up.state == "expired":
            STATE["message"] = "Your session expired: sign in again (your settings are kept)"
    elif isinstance(up, SignedIn):
        STATE["message"], STATE["last_error"] = "", ""
    elif isinstance(up, ModelsChanged):
        _apply_models(up.models, up.upscalers, up.loras, up.vaes, up.samplers)
    elif isinstance(up, DownloadProgress):
        _session.downloads.forget_finished(keep=5)
    elif isinstance(up, JobAccepted):
        tag = up.tag if isinstance(up.tag, dict) else {}
        if tag.get("sent"):
            record_sent(bpy.data.scenes.get(tag.get("scene") or "") or bpy.context.scene, tag.pop("sent"))
        if not tag.get("live"):
            STATE["last_seed"] = up.seed
    elif isinstance(up, JobProgress):
        if up.preview is not None:
            host.show_preview(up.preview, (up.tag or {}).get("name") if isinstance(up.tag, dict) else None)
    elif isinstance(up, JobResult):
        tag = dict(up.tag) if isinstance(up.tag, dict) else {}
        if up.image:   # a gallery image opened with open_image(): not one of this session's jobs
            tag["image"] = up.image
        _start_placing(tag, up.layers, up.job)
        _session.jobs.forget_finished(keep=20)
    elif isinstance(up, (JobFailed, JobCanceled)):
        host.drop_preview(up.tag.get("name") if isinstance(up.tag, dict) else None)
        _session.jobs.forget_finished(keep=20)
        if isinstance(up, JobFailed):
            STATE["last_error"] = up.message if up.code in (None, "internal") else f"{up.code}: {up.message}"
    elif isinstance(up, ImagesPage):
        _apply_page(up)
    elif isinstance(up, Recalled):
        tag = up.tag if isinstance(up.tag, dict) else {}
        scene = bpy.data.scenes.get(tag.get("scene") or "") or bpy.context.scene
        apply_recalled(scene, up.values, up.workflow, up.summary)
    elif isinstance(up, WorkflowsChanged):
        _apply_workflows(up.workflows)
    elif isinstance(up, Reply):
        if _gallery is not None and _gallery.replied(up):
            _sync_stars()
    elif isinstance(up, ErrorUpdate):
        if _gallery is not None and _gallery.failed(up):
            GALLERY_STATE["message"] = up.message
        STATE["last_error"] = up.message
        tag = up.tag if isinstance(up.tag, dict) else {}
        if tag.get("workflow"):
            details = up.details if isinstance(up.details, dict) else {}
            param = details.get("param") if isinstance(details.get("param"), str) else ""
            for scene in bpy.data.scenes:
                if scene.paintbridge_workflow.workflow == tag["workflow"]:
                    workflow_form.refused(scene.paintbridge_workflow, up.message, param)


def _start_placing(tag: dict, layers: list, job):
    """Convert each result layer on the converter thread; drain() places it when ready."""
    global _converter
    if _converter is None:
        _converter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-convert")
    target = host.result_target(tag)
    for layer in layers:
        _placing.append((_converter.submit(host.prepare_result, tag, layer, target), tag, layer, job))


def _place_ready() -> int:
    placed = 0
    while _placing and _placing[0][0].done():
        fut, tag, layer, job = _placing.pop(0)
        try:
            name = host.place_result(tag, layer, fut.result())
        except Exception as exc:
            STATE["last_error"] = f"could not place the result: {type(exc).__name__}: {exc}"
            continue
        STATE["results"].append(name)
        host.drop_preview()
        if tag.get("image"):
            GALLERY_STATE["message"] = f"Opened as image “{name}”"
        placed += 1
    return placed


def placing() -> bool:
    return bool(_placing)


def _apply_models(models: list, upscalers: list, loras: list, vaes: list = (), samplers: list = ()):
    """The engine's main models, upscalers, LoRAs, VAEs and samplers: kept in STATE and in the pickers' lists
    (prop_search; samplers by label)."""
    _ENTRIES.update(models=models, upscalers=upscalers, loras=loras, vaes=list(vaes),
                    samplers=list(samplers) or _ENTRIES["samplers"])
    STATE["models"] = [m["name"] for m in models]
    for wm in bpy.data.window_managers:
        catalog = wm.paintbridge_catalog
        _fill(catalog.models, STATE["models"])
        _fill(catalog.upscalers, [m["name"] for m in upscalers])
        _fill(catalog.samplers, [c.label for c in generate.scheduler_choices(_ENTRIES["samplers"])])
    _default_model()
    fill_loras()


def fill_loras(s=None, context=None):
    """The LoRA and VAE pickers' lists: those that fit the chosen model's base."""
    if s is None:
        s = getattr(bpy.context.scene, "paintbridge", None) if bpy.context.scene else None
    model = s.model if s is not None else ""
    names = [m["name"] for m in forms.loras_for(_ENTRIES["loras"], _ENTRIES["models"], model)]
    vaes = [v["name"] for v in generate.vaes_for(_ENTRIES["vaes"], _ENTRIES["models"], model)]
    for wm in bpy.data.window_managers:
        _fill(wm.paintbridge_catalog.loras, names)
        _fill(wm.paintbridge_catalog.vaes, vaes)
        _fill(wm.paintbridge_catalog.controls, [c["name"] for c in _steer_models("CONTROL", model)])
        _fill(wm.paintbridge_catalog.references, [c["name"] for c in _steer_models("REFERENCE", model)])


def _steer_models(kind: str, model: str) -> list:
    """The engine's ControlNets / T2I-Adapters (kind CONTROL) or IP-Adapters (REFERENCE) that fit the model."""
    if _session is None:
        return []
    entries = _session.controls if kind == "CONTROL" else _session.references
    base = generate.model_entry(_ENTRIES["models"], model).get("base")
    return [c for c in entries if not base or not c.get("base") or c["base"] == base]


def steer_model_changed(item, context=None):
    """A control's model changed: its strength, range and preprocessing from the model's preset (models.list)."""
    if _session is None:
        return
    entry = next((c for c in _session.controls + _session.references if c.get("name") == item.model), None)
    if entry is None:
        return
    preset = dict(generate.CONTROL_DEFAULTS if item.kind == "CONTROL" else generate.REFERENCE_DEFAULTS)
    preset.update(entry.get("preset") or {})
    item.strength, item.start, item.end = preset["strength"], preset["start"], preset["end"]
    if item.kind == "CONTROL" and preset.get("preprocess") in generate.PREPROCESSORS:
        item.preprocess = preset["preprocess"]


def model_changed(s, context=None):
    """The Model field changed: the pickers that depend on it, and the defaults that follow it (its native size;
    a VAE or LoRA that does not fit it goes back to none). protocol.generate.follow_model decides."""
    fill_loras(s, context)
    if not _ENTRIES["models"] or s.model not in STATE["models"]:
        return
    changes = generate.follow_model(settings.form_values(s), s.model, models=_ENTRIES["models"],
                                    vaes=_ENTRIES["vaes"], loras=_ENTRIES["loras"])
    for key, value in changes.items():
        setattr(s, key, value)


def scheduler_changed(s, context=None):
    """Another sampler: keep the schedule if it takes it, else its first."""
    if _ENTRIES["samplers"]:
        s.schedule = generate.fit_schedule(_ENTRIES["samplers"], s.scheduler, s.schedule)


def schedules(s) -> list:
    """The schedules the chosen sampler takes (the panel shows the Schedule field only when there is a choice)."""
    return generate.schedules_for(_ENTRIES["samplers"], s.scheduler)


# ---- model downloads (admins) --------------------------------------------------------------------------------
def is_admin() -> bool:
    return _session is not None and _session.is_admin


def download_model(source: str, name: str = "") -> str | None:
    """Ask the engine to download a model; its row in downloads() shows the progress or a clear error."""
    if not source.strip():
        STATE["last_error"] = "give a URL, a Hugging Face OWNER/REPO/FILE or starter:NAME to download"
        return None
    return get_session().download_model(source, name or None)


def downloads() -> list:
    """The download rows to show, newest last (this session's and other admins')."""
    return list(_session.downloads.rows.values()) if _session is not None else []


def _fill(coll, names):
    coll.clear()
    for name in names:
        coll.add().name = name


def _default_model():
    try:
        s = bpy.context.scene.paintbridge
    except AttributeError:
        return
    if STATE["models"] and s.model not in STATE["models"]:
        s.model = STATE["models"][0]


def _redraw():
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for win in wm.windows:
        for area in win.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.tag_redraw()


# ---- gallery ----------------------------------------------------------------------------------------------
def gallery_props():
    """WindowManager.paintbridge_gallery: the rows the UIList draws and the filters (not saved in .blend)."""
    wm = getattr(bpy.context, "window_manager", None)
    return getattr(wm, "paintbridge_gallery", None) if wm is not None else None


def gallery() -> GalleryBrowser:
    global _gallery
    if _gallery is None:
        _gallery = GalleryBrowser(get_session(), page_size=GALLERY_PAGE, thumb_size=THUMB_SIZE)
    return _gallery


def gallery_refresh(more: bool = False) -> bool:
    """Ask for the first page with the panel's filters (or, more=True, the next page). False if nothing asked."""
    g = gallery_props()
    if g is None or _session is None:
        return False
    gb = gallery()
    GALLERY_STATE["message"] = ""
    if more:
        return gb.load_more()
    gb.reload(query=g.search, starred_only=g.starred_only)
    return True


def _gallery_filter_changed(self, context):
    if STATE["state"] == "connected":
        gallery_refresh()


def _apply_page(page):
    g = gallery_props()
    gb = gallery()
    new = gb.accept(page)
    if new is None or g is None:
        return   # an older refresh's page, or not ours
    if len(gb.items) == len(new):   # the first page of a new list (or an empty one)
        g.items.clear()
        g.index = 0
    for summary in new:
        it = g.items.add()
        _fill_item(it, summary)
        _load_thumb(summary["id"], summary.get("thumbnail"))


def _sync_stars():
    g = gallery_props()
    if g is None:
        return
    for it in g.items:
        summary = gallery().find(it.image_id)
        if summary is not None:
            it.starred = bool(summary.get("starred"))


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
    it.created = format_date(s.get("created"))


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


def thumb_dir() -> str | None:
    return _thumb_dir


def thumbs_freed() -> bool:
    return _previews is None and (_thumb_dir is None or not os.path.exists(_thumb_dir))


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
    GALLERY_STATE["message"] = "Fetching its settings…"


def apply_recalled(scene, values: dict, workflow: tuple | None, summary: dict) -> list[str]:
    """Copy recalled generate values into the scene's form (protocol.generate.recalled_fields), or, for a
    workflow image (forms.recalled_workflow), choose that workflow and fill its form with the values it ran with.
    Returns the keys set."""
    s = scene.paintbridge
    if not values:
        wf = find_workflow(workflow[0]) if workflow else None
        if wf is not None:
            workflow_form.build_form(scene.paintbridge_workflow, wf)
            filled = workflow_form.fill_form(scene.paintbridge_workflow, workflow[1])
            GALLERY_STATE["message"] = f"Workflow “{wf['name']}” chosen and its form filled in (images excepted)"
            return filled
        GALLERY_STATE["message"] = (f"Made by a {summary.get('mode') or 'graph'}"
                                    + (f" (“{workflow[0]}”, no longer saved)" if workflow else "")
                                    + ": there are no settings to recall")
        return []
    fields, skipped = generate.recalled_fields(values, seed_max=settings.INT_MAX)
    skipped += _recall_steering(scene, s, fields.pop("control", None) or [], fields.pop("reference", None) or [],
                                generate.recalled_regions(values))
    if "scheduler" in fields:   # the picker holds labels; images keep the id
        entry = generate.sampler_entry(_ENTRIES["samplers"], fields["scheduler"])
        fields["scheduler"] = (entry.get("label") or entry["id"]) if entry else fields["scheduler"]
    filled = []
    if "mode" in fields:
        s.mode = settings.MODE_OF[fields.pop("mode")]
        filled.append("mode")
    if "scale" in fields:   # an upscale: the factor field holds 2× and 4×
        scale = fields.pop("scale")
        if scale in (2, 4):
            s.upscale_factor = str(int(scale))
            filled.append("scale")
        else:
            skipped.append(f"scale {scale}")
    for key, v in fields.items():
        if key not in s.bl_rna.properties:
            continue
        try:
            setattr(s, key, v)
        except (TypeError, ValueError, OverflowError):
            skipped.append(f"{key} {v!r}")
            continue
        filled.append(key)
    GALLERY_STATE["message"] = "Settings filled in" + (f"; not filled: {', '.join(skipped)}" if skipped else "")
    return filled


def _recall_steering(scene, s, controls: list, references: list, regions: list) -> list[str]:
    """The form's controls, references and regions become the recalled ones whose image (or scene pass) this
    .blend still has (matched by the hash it was sent with: record_sent). Returns notes for the ones left out."""
    find = lambda layer: _source_for(scene, layer)   # noqa: E731
    kept_c, notes = generate.recalled_steering(controls, find)
    kept_r, more = generate.recalled_steering(references, find)
    notes = [f"control {n}" for n in notes] + [f"reference {n}" for n in more]
    s.steer.clear()
    for kind, items in (("CONTROL", kept_c), ("REFERENCE", kept_r)):
        for item in items:
            it = s.steer.add()
            it.kind = kind
            it.source, it.image = item["image"]
            it.model = item.get("model") or ""   # (its preset first, then the recorded values below)
            defaults = generate.CONTROL_DEFAULTS if kind == "CONTROL" else generate.REFERENCE_DEFAULTS
            it.strength, it.start, it.end = (float(item.get(k, defaults[k])) for k in ("strength", "start", "end"))
            if kind == "CONTROL" and item.get("preprocess") in generate.PREPROCESSORS:
                it.preprocess = item["preprocess"]
    s.regions.clear()
    for n, r in enumerate(regions):
        src = _source_for(scene, r["mask"])
        if src is None or src[0] != "IMAGE":
            notes.append(f"region {n} ({r['prompt'][:20]!r}): its mask image is not in this file")
            continue
        it = s.regions.add()
        it.image, it.prompt, it.negative_prompt = src[1], r["prompt"], r["negative_prompt"]
    return notes


def open_image(image_id: str):
    """Download a gallery image; it becomes a new packed image datablock (through host.place_result)."""
    get_session().open_image(image_id, tag={"mode": "OPEN", "target": "new", "uid": None, "name": None,
                                            "title_prefix": ""})
    GALLERY_STATE["message"] = "Downloading…"


def star(image_id: str, starred: bool):
    gallery().star(image_id, starred)


# ---- workflows ----------------------------------------------------------------------------------------------
def refresh_workflows():
    if _session is not None:
        _session.refresh_workflows()


def find_workflow(name: str):
    return next((w for w in WORKFLOWS["list"] if w.get("name") == name), None)


def _apply_workflows(workflows: list):
    WORKFLOWS["list"], WORKFLOWS["loaded"] = list(workflows), True
    for scene in bpy.data.scenes:   # a form whose workflow changed on the engine is rebuilt
        form = getattr(scene, "paintbridge_workflow", None)
        if form is None or not form.workflow:
            continue
        wf = find_workflow(form.workflow)
        if wf is None:
            form.error = f"The workflow “{form.workflow}” no longer exists"
        elif workflow_form.params_json(wf) != form.params_json:
            workflow_form.build_form(form, wf)
            form.error = "The workflow changed on the engine: its form was rebuilt"


def run_workflow(form, active_image=None) -> tuple[str | None, dict]:
    """Run the form's workflow: (local request id, {}) or (None, errors) with nothing sent."""
    if not form.workflow:
        form.error = "Choose a workflow"
        return None, {"": form.error}
    values, errors = workflow_form.collect_form(form, active_image)
    if errors:
        return None, errors
    tag = {"mode": "WORKFLOW", "target": "new", "uid": None, "name": None, "title_prefix": form.workflow,
           "workflow": form.workflow}
    STATE["last_error"] = ""
    return get_session().run_workflow(form.workflow, values, tag=tag), {}


# ---- live mode ----------------------------------------------------------------------------------------------
class Live:
    """Live mode on the image being painted (issue 21): protocol.live.LiveController decides when to send and what
    to show; this is the Blender side.

    Watching without reading pixels: Blender tags an image for a depsgraph update when a paint stroke ends (2D and
    projection painting), and our depsgraph_update_post handler asks only whether an image was tagged
    (depsgraph.id_type_updated: a few Python calls, no pixel access) and marks the canvas changed; undo and redo
    (undo_post/redo_post) mark it too. Blender gives add-ons no per-stroke event, and an `is_dirty` flag stays
    set after the first stroke, so comparing it on a timer would miss every later stroke. Scripts that change
    pixels through the API call changed() themselves (or image.update_tag()). Pixels are copied once per request
    sent (one foreach_get), converted on the session's worker; the engine starts nothing for identical inputs."""

    IMAGE = "Paintbridge Live"   # the newest result, shown in an Image Editor that is not showing the painted one

    def __init__(self):
        self.live = None
        self.uid = self.name = None   # the painted image
        self.seed = 0
        self.changes_seen = 0
        self._shown_job = None
        self._showing = None          # (job, Pixels, future of its float buffer) converting for the live image

    @property
    def on(self) -> bool:
        return self.live is not None and self.live.on

    def start(self, image) -> None:
        import random

        from ._vendor.protocol.live import LiveController
        if image is None:
            raise ValueError("open the image to paint in the Image Editor first")
        sess = get_session()
        if self.live is None or self.live.session is not sess:
            self.live = LiveController(sess, self._read)
        self.uid, self.name = host.ensure_uid(image), image.name
        self.seed = random.randrange(generate.SEED_MAX - 64)   # one seed while live: same canvas, same image
        self.live.start()
        _watch(True)

    def stop(self) -> None:
        _watch(False)
        if self.live is not None:
            self.live.stop()

    def changed(self) -> None:
        if self.on:
            self.changes_seen += 1
            self.live.changed()

    def settings_changed(self) -> None:
        if self.live is not None:
            self.live.settings_changed()

    def image(self):
        return host.find_image(self.uid, self.name)

    def handle(self, up) -> bool:
        return self.live is not None and self.live.handle(up)

    def tick(self) -> bool:
        """From the timer: send a due change; put a new result into the live image (converted off the main
        thread, then one foreach_set)."""
        if self.live is None:
            return False
        sent = self.live.tick()
        res, job = self.live.result, self.live.result_job
        if res and job != self._shown_job and (self._showing is None or self._showing[0] != job):
            global _converter
            if _converter is None:
                _converter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-convert")
            self._showing = (job, res[0].pixels, _converter.submit(host.floats_for, res[0].pixels, False))
        if self._showing is not None and self._showing[2].done():
            job, px, fut = self._showing
            self._showing = None
            self._show(px, fut.result())
            self._shown_job = job
            return True
        return sent

    def _show(self, px, floats):
        img = bpy.data.images.get(self.IMAGE)
        if img is None or tuple(img.size) != (px.w, px.h) or img.is_float:
            if img is not None:
                bpy.data.images.remove(img)
            img = bpy.data.images.new(self.IMAGE, px.w, px.h, alpha=True)
        host.set_pixels(img, px.w, px.h, floats)
        spaces = host._image_spaces()
        painted = self.image()
        others = [sp for sp in spaces if painted is None or sp.image != painted]
        if others:   # never in place of the image being painted
            others[0].image = img

    @property
    def shown_job(self):
        return self._shown_job

    def apply(self, into: bool) -> str | None:
        """The newest result as a new image, or into the painted image (one undo step); kept in the gallery."""
        if self.live is None or not self.live.result:
            return None
        painted = self.image()
        tag = {"mode": "LIVE", "target": "replace" if into and painted is not None else "new",
               "uid": self.uid, "name": self.name, "prompt": bpy.context.scene.paintbridge.live_prompt}
        _start_placing(tag, self.live.result[:1], self.live.result_job)
        if self.live.result_job:
            get_session().call("images.keep", {"job": self.live.result_job}, tag={"keep": True})
        return tag["target"]

    def describe(self) -> str:
        return self.live.describe() if self.live is not None else "Live: off"

    def _read(self):
        img = self.image()
        if img is None:
            raise ValueError("the image live mode was painting on is gone")
        s = bpy.context.scene.paintbridge
        values = dict(settings.form_values(s), prompt=s.live_prompt, strength=round(s.live_strength, 4),
                      seed=self.seed)
        params = generate.generate_args("img2img", values, limits=get_session().limits, loras=_ENTRIES["loras"],
                                        samplers=_ENTRIES["samplers"], vaes=_ENTRIES["vaes"],
                                        models=_ENTRIES["models"],
                                        source={"app": "blender", "document": _document_key()})
        if s.live_preset != "NONE":
            params.pop("steps", None)   # the preset's
            params["preset"] = s.live_preset
        snap = host.Snapshot(img)
        return params, host.Deferred(snap.pixels), None


LIVE = Live()


@bpy.app.handlers.persistent
def _on_depsgraph(scene, depsgraph=None):
    # An image that no material uses is not in the depsgraph, so its update is not among depsgraph.updates; the
    # depsgraph still records that an image was tagged. Another image's update costs one upload check at most.
    if LIVE.on and depsgraph is not None and depsgraph.id_type_updated("IMAGE"):
        LIVE.changed()


@bpy.app.handlers.persistent
def _on_undo(*_args):
    LIVE.changed()


_HANDLERS = (("depsgraph_update_post", _on_depsgraph), ("undo_post", _on_undo), ("redo_post", _on_undo))


def _watch(on: bool):
    for name, fn in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if on and fn not in handlers:
            handlers.append(fn)
        elif not on and fn in handlers:
            handlers.remove(fn)


def live_settings_changed(s=None, context=None):
    LIVE.settings_changed()


# ---- timer --------------------------------------------------------------------------------------------------
def _timer():
    auto_connect()
    drain()
    busy = active_jobs() or _placing or STATE["state"] == "connecting" or LIVE.on
    return 0.1 if busy else 0.25


def register():
    settings.HOOKS.update(model_changed=model_changed, scheduler_changed=scheduler_changed,
                          gallery_filter_changed=_gallery_filter_changed, steer_model_changed=steer_model_changed,
                          live_settings_changed=live_settings_changed)
    host.register()
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=0.5, persistent=True)


def unregister():
    global _session, _gallery, _converter, _auto_connect_tried
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    LIVE.stop()
    LIVE.live = None
    host.unregister()
    settings.HOOKS.update(model_changed=None, scheduler_changed=None, gallery_filter_changed=None,
                          steer_model_changed=None, live_settings_changed=None)
    if _session is not None:
        _session.close()
        _session = None
    if _converter is not None:
        _converter.shutdown(wait=False, cancel_futures=True)
        _converter = None
    _placing.clear()
    _gallery, _auto_connect_tried = None, False
    _free_thumbs()
    WORKFLOWS.update(list=[], loaded=False, message="")
    GALLERY_STATE["message"] = ""

