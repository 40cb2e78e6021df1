"""The add-on's state: it owns the shared Session, drains it on Blender's main thread and keeps what the panels
draw (STATE, the session's job table, the gallery browser, the workflows).

drain() runs from a bpy.app.timers timer, or is called directly by tests (timers do not fire under `blender -b`).
Requests are built with protocol.generate (one seed rule, the fields each mode uses); pixels are copied on the main
thread and converted off it (the session's worker for sending, a converter thread for results), so only
foreach_get/foreach_set and datablock calls run on the main thread.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor

import bpy

from ._vendor.protocol import forms, generate
from ._vendor.protocol.gallery import GalleryBrowser, format_date
from ._vendor.protocol.pixels import Pixels, pad
from ._vendor.protocol.session import Session
from ._vendor.protocol.updates import (ErrorUpdate, ImagesPage, JobAccepted, JobCanceled, JobFailed, JobProgress,
                                       JobResult, ModelsChanged, Recalled, Reply, SignedIn, StateChanged,
                                       WorkflowsChanged)

from . import host, png, settings, workflow_form

GALLERY_PAGE = 24
THUMB_SIZE = 96

# Observable state the panels draw (main thread only).
STATE = {"state": "disconnected", "message": "", "models": [], "last_error": "", "results": [], "last_seed": None,
         "user": ""}
# The engine's main models, upscalers and LoRAs as the Session gives them (with base), behind the pickers.
_ENTRIES = {"models": [], "upscalers": [], "loras": []}
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
    params = generate.generate_args(mode, settings.form_values(s), limits=sess.limits, loras=_ENTRIES["loras"],
                                    upscalers=_ENTRIES["upscalers"], models=_ENTRIES["models"],
                                    source={"app": "blender", "document": _document_key()})
    if not generate.MODES[mode].image:
        return params, None, None, None
    if image is None:
        raise generate.FieldError("", "open an image in the Image Editor first")
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
            _apply(up)
        except Exception as exc:  # one bad update must not stop the timer
            STATE["last_error"] = f"{type(exc).__name__}: {exc}"
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
        _apply_models(up.models, up.upscalers, up.loras)
    elif isinstance(up, JobAccepted):
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


def fill_loras(s=None, context=None):
    """The LoRA picker's list: the LoRAs that fit the chosen model's base (also run when the Model field changes)."""
    if s is None:
        s = getattr(bpy.context.scene, "paintbridge", None) if bpy.context.scene else None
    model = s.model if s is not None else ""
    names = [m["name"] for m in forms.loras_for(_ENTRIES["loras"], _ENTRIES["models"], model)]
    for wm in bpy.data.window_managers:
        _fill(wm.paintbridge_catalog.loras, names)


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


# ---- timer --------------------------------------------------------------------------------------------------
def _timer():
    auto_connect()
    drain()
    busy = active_jobs() or _placing or STATE["state"] == "connecting"
    return 0.1 if busy else 0.25


def register():
    settings.HOOKS.update(model_changed=fill_loras, gallery_filter_changed=_gallery_filter_changed)
    host.register()
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=0.5, persistent=True)


def unregister():
    global _session, _gallery, _converter, _auto_connect_tried
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    host.unregister()
    settings.HOOKS.update(model_changed=None, gallery_filter_changed=None)
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

