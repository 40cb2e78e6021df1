"""The GIMP 3 plug-in inside real GIMP 3.0 (gimp-console, batch mode; and gimp-3.0 with its GUI under Xvfb) from
the trixie host chroot.

Build the chroot once with `sudo tests/hosts/chroot/setup_chroot.sh`. Without it these tests skip, unless
PAINTBRIDGE_REQUIRE_HOSTS is set (CI on a prepared machine), in which case they fail.

The plug-in is installed the way users get it: `paintbridge plugin build gimp` (engine.plugin_build), unzipped
into the chroot's GIMP profile. Scripts run through GIMP's python-fu-eval batch interpreter, call the plug-in's
PDB procedures NONINTERACTIVE and report back as JSON. The scripts are files in gimp/scripts/ (each runs after
gimp/scripts/_prelude.py, inside a try whose finally writes OUT back).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE / "gimp"))
sys.path.insert(0, str(ROOT / "plugins" / "gimp" / "paintbridge"))

from gimp_host import GimpHost  # noqa: E402

import settings as gimp_settings  # noqa: E402  (the plug-in's GIMP-independent settings module)

HOST = GimpHost()
REQUIRED = bool(os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS"))
_WHY = HOST.unavailable_reason()

# Evaluated at collection, before any fixture (so no engine is started just to be skipped).
needs_gimp = pytest.mark.skipif(bool(_WHY) and not REQUIRED, reason=f"GIMP 3 host unavailable: {_WHY}")


@pytest.fixture(scope="module")
def gimp():
    if _WHY:
        pytest.fail(f"PAINTBRIDGE_REQUIRE_HOSTS is set but the GIMP 3 host is unavailable: {_WHY}")
    return HOST


@pytest.fixture(scope="module")
def gimp_plugin(gimp, tmp_path_factory) -> Path:
    """The plug-in as shipped (zip from engine.plugin_build), unpacked; returns its `paintbridge` folder."""
    from engine.plugin_build import build

    tmp = tmp_path_factory.mktemp("gimp-plugin")
    zpath = build("gimp", tmp / "paintbridge-gimp.zip")
    with zipfile.ZipFile(zpath) as zf:
        for info in zf.infolist():
            zf.extract(info, tmp / "unzipped")
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(tmp / "unzipped" / info.filename, mode)
    folder = tmp / "unzipped" / "paintbridge"
    assert os.access(folder / "paintbridge.py", os.X_OK), "the zip must keep paintbridge.py executable"
    return folder


SCRIPTS = HERE / "gimp" / "scripts"

EPILOGUE = r'''
except Exception:
    OUT["exception"] = traceback.format_exc()
finally:
    for im in Gimp.get_images():
        im.delete()
    finish()
'''


def gimp_script(name: str) -> str:
    """gimp/scripts/NAME.py after the prelude, inside try: ... finally: finish()."""
    body = (SCRIPTS / f"{name}.py").read_text()
    return ((SCRIPTS / "_prelude.py").read_text() + "\ntry:\n"
            + "\n".join("    " + line for line in body.strip("\n").splitlines()) + "\n    pass\n" + EPILOGUE)


def run_script(gimp, name: str, plugin: Path | None = None, env: dict | None = None, timeout: float = 300):
    res = gimp.run_batch(gimp_script(name), plugins=[plugin] if plugin else [], env=env, timeout=timeout)
    res.check()
    out = res.result
    assert isinstance(out, dict), f"the GIMP script wrote no result\n{res.output[-4000:]}"
    assert "exception" not in out, out["exception"] + "\n--- GIMP output ---\n" + res.output[-4000:]
    return out


# ---- inside GIMP, no engine -------------------------------------------------------------------------------------

@pytest.mark.host
@needs_gimp
def test_gimp_buffer_roundtrip_and_selection(gimp):
    """GEGL buffers take and give the wire's rgba8 bit for bit; the selection reads as a gray8 mask."""
    out = run_script(gimp, "buffer_roundtrip")
    assert out["same"] and out["sub_same"]
    assert out["bounds"] == [True, True, 2, 1, 7, 4]   # (ok, non_empty, x1, y1, x2, y2)
    rows = out["mask_rows"]
    for y in range(7):
        for x in range(13):
            assert rows[y][x] == (255 if 2 <= x < 7 and 1 <= y < 4 else 0), (x, y)


@pytest.mark.host
@needs_gimp
def test_plugin_registers_procedures(gimp, gimp_plugin):
    out = run_script(gimp, "registers", plugin=gimp_plugin)
    for name, info in out.items():
        assert info is not None, f"{name} not registered"
        assert info["menu"] == ["<Image>/Filters/Paintbridge"]
    assert {"prompt", "strength", "server-url"} <= set(out["paintbridge-inpaint"]["args"])
    assert {"image-id", "server-url"} <= set(out["paintbridge-gallery"]["args"])
    assert {"workflow", "values", "server-url"} <= set(out["paintbridge-workflow"]["args"])
    # control/reference slots on the four diffusion procedures (issue 18), Region Prompt and Live (issues 19, 21)
    steer = {f"{slot}-{arg}" for slot in ("control", "control-2", "reference")
             for arg in ("layer", "model", "strength", "start", "end")} | {"control-preprocess", "control-2-preprocess"}
    for name in ("paintbridge-generate", "paintbridge-refine", "paintbridge-inpaint", "paintbridge-outpaint"):
        assert steer <= set(out[name]["args"]), name
    assert not steer & set(out["paintbridge-upscale"]["args"])
    assert {"prompt", "negative-prompt"} <= set(out["paintbridge-region-prompt"]["args"])
    assert {"prompt", "strength", "preset", "model", "server-url"} <= set(out["paintbridge-live"]["args"])
    # issue 15 item 9: GIMP writes arguments to plug-in-settings files ("Save Settings", last values), so no
    # procedure may take a secret as an argument
    secret = {name: [a for a in info["args"] if "password" in a or "token" in a] for name, info in out.items()}
    assert not any(secret.values()), secret


@pytest.mark.host
@needs_gimp
def test_plugin_reports_unreachable_engine(gimp, gimp_plugin):
    """A clear error status, no layer added, and GIMP keeps running."""
    out = run_script(gimp, "unreachable", plugin=gimp_plugin)
    assert out["run"]["status"] == "execution-error", out
    assert "127.0.0.1:9" in (out["run"]["error"] or "")
    # issue 15 item 12: readable (not a raw "[Errno 111]"); GIMP shows the returned error once, no extra message
    assert "cannot reach the engine at ws://127.0.0.1:9/v1/ws" in out["run"]["error"], out["run"]["error"]
    assert "Errno" not in out["run"]["error"]
    assert out["layers"] == ["base"]


# ---- with a real engine ------------------------------------------------------------------------------------------

def _engine_env(engine_server) -> dict:
    # the plug-in takes a script's token from $PAINTBRIDGE_TOKEN: no procedure has a token argument
    return {"PB_URL": engine_server.url, "PAINTBRIDGE_TOKEN": engine_server.token,
            "PB_MODEL": engine_server.model_name, "PAINTBRIDGE_TIMEOUT": "240"}


@pytest.mark.host
@needs_gimp
def test_plugin_inpaint_selection(gimp, gimp_plugin, engine_server):
    """Inpaint a selection: a new layer exactly at the selection, nothing outside it changes."""
    out = run_script(gimp, "inpaint_selection", plugin=gimp_plugin, env=_engine_env(engine_server))
    run = out["run"]
    assert run["status"] == "success", run
    layers = out["layers"]
    assert len(layers) == 2 and layers[1]["name"] == "base", layers
    new = layers[0]
    assert (new["x"], new["y"], new["w"], new["h"]) == (21, 13, 18, 14), new
    assert new["mask"], "the inpaint layer carries the selection as its layer mask"
    assert run["result"]["layers"][0]["id"] == new["id"]
    assert out["base_unchanged"]
    assert out["changed_outside"] == 0
    assert out["changed_inside"] > 0, "the demo model paints noise: something inside must differ"


@pytest.mark.host
@needs_gimp
def test_plugin_pixel_exact_roundtrip(gimp, gimp_plugin, engine_server):
    """GIMP -> wire -> engine -> wire -> GIMP is bit-exact: Refine at strength 0 returns the input unchanged
    (the engine passes it through), so an asymmetric pattern with partial alpha, read from a selection at an
    offset, must come back identical and at the same place (no flips, channel swaps or offsets)."""
    out = run_script(gimp, "pixel_roundtrip", plugin=gimp_plugin, env=_engine_env(engine_server))
    assert out["run"]["status"] == "success", out["run"]
    assert out["placed"] == [5, 3, 23, 11]
    assert out["exact"], f"first differing byte: {out['first_diff']}"


@pytest.mark.host
@needs_gimp
def test_plugin_generate_outpaint_upscale_settings(gimp, gimp_plugin, engine_server):
    """The other procedures, end to end: layers land where they belong, in the right sizes."""
    out = run_script(gimp, "generate_outpaint_upscale", plugin=gimp_plugin, env=_engine_env(engine_server))
    for key in ("generate", "outpaint", "upscale", "esrgan", "settings"):
        assert out[key]["status"] == "success", (key, out[key])
    (gen,) = out["generate"]["result"]["layers"]
    assert (gen["x"], gen["y"], gen["w"], gen["h"]) == (8, 4, 20, 16)
    # issue 15 item 10: rendered at the model's size (models.list says the demo model's native_size is 64: 64²
    # pixels at the 20×16 selection's aspect, multiples of 8), then placed at the selection's size; the size used
    # is reported
    with engine_server.client() as c:
        native = {m["name"]: m.get("native_size") for m in c.call("models.list", {})["models"]}
        sent = c.call("job.get", {"job": out["generate"]["result"]["job"]})["request"]
    assert native[engine_server.model_name] == 64
    assert out["generate"]["result"]["size"] == [72, 56]
    assert (sent["width"], sent["height"]) == (72, 56)
    # issue 15 item 11: a failed outpaint leaves the canvas as it was; a good one grows it and adds one layer
    # whose mask shows only the new area, so the layers below stay visible (and editable) in the old one
    assert out["bad_outpaint"]["status"] == "calling-error", out["bad_outpaint"]
    assert out["size_after_bad_outpaint"] == [48, 32] and out["layers_after_bad_outpaint"] == 2
    assert out["size_after_outpaint"] == [64, 40]
    (layer,) = out["outpaint"]["result"]["layers"]
    assert (layer["x"], layer["y"], layer["w"], layer["h"]) == (0, 0, 64, 40)
    assert out["outpaint_mask"] == {"at": [0, 0, 64, 40], "old_max": 0, "new_min": 255}, out["outpaint_mask"]
    assert out["old_area_shows_base"]
    assert out["upscaled_size"] == [128, 80] and out["esrgan_size"] == [128, 80]
    # issue 20: Upscale refined with the model, and Generate above the native size with hires
    assert out["refined"]["status"] == "success", out["refined"]
    assert out["refined_size"] == [128, 80]
    assert out["hires"]["status"] == "success", out["hires"]
    assert out["hires"]["result"]["size"] == [128, 96]
    with engine_server.client() as c:
        refined = c.call("job.get", {"job": out["refined"]["result"]["job"]})
        hires = c.call("job.get", {"job": out["hires"]["result"]["job"]})["request"]
    req = refined["request"]
    assert (req["mode"], req["model"], req["strength"], req["prompt"], req["seed"]) == \
        ("upscale", engine_server.model_name, 0.5, "detail", 3)
    assert refined["status"] == "completed" and refined["layers"][0]["w"] == 128
    assert hires["hires"] is True and (hires["width"], hires["height"]) == (128, 96)
    assert out["bad_lora"]["status"] == "calling-error" and "tiny-lora-sd15" in out["bad_lora"]["error"]
    with engine_server.client() as c:   # the generate above asked for the LoRA
        asked = [j["request"].get("loras") for j in c.call("job.list", {"limit": 50})["jobs"]
                 if j["request"].get("prompt") == "x" and j.get("kind") == "txt2img"]
    assert [{"model": "tiny-lora-sd15", "weight": 1.0}] in asked
    # an upscaler the engine lacks: a calling error naming the ones it has, and no new image
    assert out["bad_upscaler"]["status"] == "calling-error", out["bad_upscaler"]
    assert "tiny-esrgan" in out["bad_upscaler"]["error"] and out["images_after_bad"] == 0
    assert out["settings"]["result"]["url"]


@pytest.mark.host
@needs_gimp
def test_sign_in_keeps_password_and_token_out_of_gimp_settings(gimp, gimp_plugin, engine_server):
    """Issue 15 item 9: after a sign-in with "remember me" and runs on the stored sign-in, no file of GIMP's
    profile (plug-in-settings, pluginrc, …) holds the password or the token; only the token store does."""
    from ..helpers import cli

    user, password = f"gimp{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    cli("users", "--data-dir", str(engine_server.data_dir), "add", user, "--password", password)
    env = {"PB_URL": engine_server.url, "PB_USER": user, "PB_PASSWORD": password, "PAINTBRIDGE_PASSWORD": password}
    out = run_script(gimp, "sign_in_secrets", plugin=gimp_plugin, env=env)
    assert out["sign_in"]["status"] == "success", out["sign_in"]
    assert out["sign_in"]["result"]["user"] == user
    assert out["token_stored"], "remember me: the token store holds the token"
    # the stored sign-in works for the next runs (this image id does not exist: a clean "not found")
    assert out["gallery"]["status"] == "execution-error" and "0123456789abcdef" in out["gallery"]["error"]
    assert out["files_checked"] > 0 and out["leaks"] == [], out["leaks"]
    # sign out (Settings): said in the result, and the next run is no longer signed in
    assert out["sign_out"]["status"] == "success" and out["sign_out"]["result"]["signed_out"] is True
    assert out["after_sign_out"]["status"] == "execution-error" and "not signed in" in out["after_sign_out"]["error"]
    # ... and on the engine: the token is refused from then on (auth.logout), which the message says
    assert "engine no longer accepts" in out["sign_out"]["result"]["message"], out["sign_out"]["result"]
    assert hello_reply(engine_server, out["token"])["error"]["code"] == "unauthenticated"


def _plugin_pids(gimp) -> list[int]:
    """Processes of the installed plug-in's paintbridge.py running in the GIMP chroot."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
            root = os.readlink(f"/proc/{d}/root")
        except OSError:
            continue
        if b"plug-ins/paintbridge/paintbridge.py" in cmd and os.path.realpath(root) == os.path.realpath(gimp.root):
            pids.append(int(d))
    return pids


@pytest.mark.host
@needs_gimp
def test_gimp_cancel_kills_the_plugin_and_the_engine_job_ends(gimp, gimp_plugin, engine_server):
    """Issue 15 item 3, GIMP's part: GIMP's own Cancel (status bar / progress bar) kills the plug-in process; the
    engine job it started must be canceled too, not run on into the gallery."""
    import signal
    import threading
    import time as _time

    prompt = f"gimpcancel{uuid.uuid4().hex[:8]}"
    killed = {}

    def kill_when_running():
        with engine_server.client() as c:
            deadline = _time.monotonic() + 240
            while _time.monotonic() < deadline and "pid" not in killed:
                jobs = [j for j in c.call("job.list", {"limit": 20})["jobs"] if j["request"].get("prompt") == prompt]
                if jobs and jobs[0]["status"] in ("queued", "running") and _plugin_pids(gimp):
                    # at once, as the job appears: the plug-in may not know its id yet (the guard finds it)
                    killed["job"] = jobs[0]["job"]
                    for pid in _plugin_pids(gimp):
                        os.kill(pid, signal.SIGKILL)      # what gimp_plug_in_close(plug_in, TRUE) does
                        killed["pid"] = pid
                    return
                _time.sleep(0.02)

    killer = threading.Thread(target=kill_when_running, daemon=True)
    killer.start()
    env = dict(_engine_env(engine_server), PB_PROMPT=prompt)
    res = gimp.run_batch(gimp_script("gimp_cancel"), plugins=[gimp_plugin], env=env, timeout=300)
    killer.join(10)
    out = res.result or {}
    status = None
    try:
        assert "pid" in killed, ("the job never ran", out, res.output[-3000:])
        assert out["run"]["status"] != "success" and out["layers"] == ["base"]
        with engine_server.client() as c:
            deadline = _time.monotonic() + 120
            while _time.monotonic() < deadline:
                status = c.call("job.get", {"job": killed["job"]})["status"]
                if status not in ("queued", "running"):
                    break
                _time.sleep(0.5)
        assert status == "canceled", (status, res.output[-3000:])
    finally:
        if killed.get("job") and status != "canceled":   # don't leave a long job in the shared engine's queue
            with engine_server.client() as c:
                c.call("job.cancel", {"job": killed["job"]})


# ---- plain unit tests of the GIMP-independent helpers --------------------------------------------------------------

def test_support_context_region_is_clipped():
    # host.context_region is this, shifted to the image's origin: the engine's context, a quarter of the
    # selection, at least 16 px, clipped to the image
    from protocol.pixels import context_region
    assert context_region((10, 10, 20, 20), 100, 80) == (0, 0, 46, 46)
    assert context_region((40, 30, 20, 20), 100, 80) == (24, 14, 52, 52)
    x, y, w, h = context_region((300, 300, 5, 5), 100, 80)
    assert w == 0 or h == 0


def test_support_settings_roundtrip(tmp_path, monkeypatch):
    monkeypatch.delenv("PAINTBRIDGE_URL", raising=False)
    cfg = str(tmp_path)
    assert gimp_settings.load(cfg) == {}
    gimp_settings.save(cfg, {"url": "ws://h:1/v1/ws"})
    s = gimp_settings.load(cfg)
    assert gimp_settings.resolve_url("", s, "ws://default") == "ws://h:1/v1/ws"
    assert gimp_settings.resolve_url(" ws://arg ", s, "ws://default") == "ws://arg"
    assert gimp_settings.pick_model("", {}, [{"name": "a"}, {"name": "b", "default": True}]) == "b"
    assert gimp_settings.pick_model("", {"model": "a"}, [{"name": "a"}, {"name": "b", "default": True}]) == "a"
    assert gimp_settings.pick_model("", {"model": "gone"}, [{"name": "a"}]) == "a"   # a default the engine lost
    # the last form values are kept (a canceled or failed run keeps what was typed), never a secret
    gimp_settings.remember_form(cfg, "paintbridge-generate", {"prompt": "a fox", "steps": 4, "token": "t0k",
                                                               "password": "pw"})
    assert gimp_settings.last_form(cfg, "paintbridge-generate") == {"prompt": "a fox", "steps": 4}
    assert "t0k" not in (tmp_path / "settings.json").read_text() and "pw" not in (tmp_path / "settings.json").read_text()


def test_support_recall_steer_args():
    """Use settings' control/reference entries -> the slots' procedure arguments: layers found by the host's find()
    (here: by hash), the rest cleared; one not in the image, and one more than the rows, are said."""
    slots = (("control", "Control", "control"), ("control-2", "Control 2", "control"),
             ("reference", "Reference", "reference"))
    layers = {"a" * 64: 11, "b" * 64: 12, "d" * 64: 14}
    values = {"control": [{"model": "cn", "image": {"sha256": "a" * 64, "name": "sketch"}, "strength": 0.8,
                           "start": 0.0, "end": 0.5, "preprocess": "canny"},
                          {"model": "cn", "image": {"sha256": "c" * 64, "name": "gone"}, "strength": 1.0},
                          {"model": "t2i", "image": {"sha256": "b" * 64}, "strength": 1, "preprocess": "none"},
                          {"model": "cn", "image": {"sha256": "d" * 64}}]}
    args, notes = gimp_settings.recall_steer_args(values, lambda wire: layers.get(wire.get("sha256")), slots)
    assert args == {"control-layer": 11, "control-model": "cn", "control-strength": 0.8, "control-start": 0.0,
                    "control-end": 0.5, "control-preprocess": "canny",
                    "control-2-layer": 12, "control-2-model": "t2i", "control-2-strength": 1.0,
                    "control-2-preprocess": "none", "reference-layer": None}
    assert len(notes) == 2 and "gone" in notes[0] and "1 more controls" in notes[1], notes
    assert gimp_settings.recall_steer_args({}, lambda w: None, slots) == (
        {"control-layer": None, "control-2-layer": None, "reference-layer": None}, [])


# ---- gallery and workflows: plain modules against a real engine (no GIMP) ------------------------------------------

import uuid  # noqa: E402

import workflow_form as pbw  # noqa: E402
from protocol.gallery import GalleryBrowser, caption  # noqa: E402
from protocol import forms  # noqa: E402
from protocol.pixels import Pixels  # noqa: E402

from ..helpers import GRAPH, PARAMS, RESIZE, app_client, hello_reply, open_session, run, wait_for  # noqa: E402

GENERATE_ARGS = ["prompt", "negative-prompt", "model", "lora", "lora-weight", "steps", "guidance", "seed", "batch",
                 "server-url", "token"]
REFINE_ARGS = ["prompt", "negative-prompt", "model", "lora", "lora-weight", "steps", "guidance", "seed", "strength",
               "server-url", "token"]
SHRINK_PARAMS = [{"name": "source", "type": "image", "node": "i", "field": "layer"}]
# an image and a mask parameter: the image pasted onto itself through the mask (the mask must be its size)
MASKED = {"nodes": {"i": {"type": "image_input"}, "m": {"type": "mask_input"},
                    "p": {"type": "paste", "feather": 0.0}, "o": {"type": "output", "name": "masked"}},
          "edges": [{"from": ["i", "image"], "to": ["p", "base"]}, {"from": ["i", "image"], "to": ["p", "image"]},
                    {"from": ["m", "mask"], "to": ["p", "mask"]}, {"from": ["p", "image"], "to": ["o", "image"]}]}
MASKED_PARAMS = [{"name": "source", "type": "image", "node": "i", "field": "layer"},
                 {"name": "area", "type": "mask", "node": "m", "field": "layer"}]


@pytest.fixture(scope="module")
def gimp_session(engine_server, tmp_path_factory):
    s = open_session(engine_server, tmp_path_factory.mktemp("gimp-session"), "gimp")
    yield s
    s.close()


def test_gallery_browser_pages_search_star_and_recall(gimp_session, engine_server, tmp_path):
    s = gimp_session
    word = f"gimpgal{uuid.uuid4().hex[:8]}"
    s.generate({"model": engine_server.model_name, "prompt": f"{word} lighthouse", "width": 64, "height": 64,
                "steps": 1, "seed": 77, "guidance": 4.0, "batch": 3})
    job = wait_for(s, "job")["job"]
    wait_for(s, "result", pred=lambda d: d["job"] == job)

    b = GalleryBrowser(s, page_size=2, thumb_size=32)
    b.reload(query=f"nomatch{word}")
    b.reload(query=word)                      # a new search before the first page came: that page is stale
    assert b.accept(wait_for(s, "images")) is None
    first = b.accept(wait_for(s, "images"))
    assert len(first) == 2 and b.total == 3 and b.has_more and not b.loading
    assert all(isinstance(it["thumbnail"], Pixels) and max(it["thumbnail"].w, it["thumbnail"].h) == 32
               for it in first)
    assert b.load_more() and not b.load_more()          # one page on its way at a time
    more = b.accept(wait_for(s, "images"))
    assert len(more) == 1 and not b.has_more and b.status() == "3 of 3 images"
    assert sorted(it["seed"] for it in b.items) == [77, 78, 79] and len({it["id"] for it in b.items}) == 3
    cap = caption(b.items[0])
    assert cap.startswith(word) and "64×64" in cap and "gimp" in cap and "★" not in cap

    target = b.items[-1]["id"]
    b.star(target, True)
    reply = wait_for(s, "reply")
    assert reply["result"] == {"starred": True} and b.replied(reply)
    assert "★" in caption(b.find(target))
    b.reload(starred_only=True)
    assert [it["id"] for it in b.accept(wait_for(s, "images"))] == [target] and b.filters() == {
        "q": word, "starred": True}

    # Use settings: recalled values become the next defaults of Generate/Refine/Inpaint, once each
    s.recall(target)
    rec = wait_for(s, "recalled")
    cfg = str(tmp_path)
    args, notes = gimp_settings.recall_args(rec["values"])
    gimp_settings.store_recall(cfg, target, args)
    assert notes == [] and args["seed"] == rec["values"]["seed"] and args["prompt"] == f"{word} lighthouse"
    gen = gimp_settings.pending_recall(cfg, "paintbridge-generate", GENERATE_ARGS)
    assert gen == {"prompt": f"{word} lighthouse", "negative-prompt": "", "model": engine_server.model_name,
                   "steps": 1, "guidance": 4.0, "seed": rec["values"]["seed"], "batch": 1, "lora": "",
                   "lora-weight": 0.8}
    ref = gimp_settings.pending_recall(cfg, "paintbridge-refine", REFINE_ARGS)
    assert "strength" in ref and "batch" not in ref
    gimp_settings.recall_used(cfg, "paintbridge-generate")
    assert gimp_settings.pending_recall(cfg, "paintbridge-generate", GENERATE_ARGS) == {}
    assert gimp_settings.pending_recall(cfg, "paintbridge-refine", REFINE_ARGS) == ref
    assert gimp_settings.pending_recall(cfg, "paintbridge-outpaint", REFINE_ARGS) == {}
    # a workflow image: Run workflow opens with that workflow and its (non-layer) values, once
    gimp_settings.store_workflow_recall(cfg, target, "GimpFox", {"steps": 3, "source": {"sha256": "ab"}})
    assert gimp_settings.pending_workflow_recall(cfg) == ("GimpFox", {"steps": 3})
    gimp_settings.workflow_recall_used(cfg)
    assert gimp_settings.pending_workflow_recall(cfg) is None and gimp_settings.pending_recall(
        cfg, "paintbridge-refine", REFINE_ARGS) == ref
    # the engine's random seeds go up to 2**32: GIMP's 32-bit seed field cannot hold them all
    args, notes = gimp_settings.recall_args({"seed": 2 ** 32 - 5, "steps": 3})
    assert args == {"steps": 3} and "seed" in notes[0]
    args, _ = gimp_settings.recall_args({"loras": [{"model": "tiny-lora-sd15", "weight": 1.25}]})
    assert (args["lora"], args["lora-weight"]) == ("tiny-lora-sd15", 1.25)


def test_workflow_widget_specs_and_checked_values(gimp_session, engine_server):
    s = gimp_session
    c = app_client(engine_server, "test")
    try:
        c.call("workflows.save", {"name": "GimpFox", "graph": GRAPH, "params": PARAMS})
        c.call("workflows.save", {"name": "GimpShrink", "graph": RESIZE, "params": SHRINK_PARAMS})
        c.call("workflows.save", {"name": "GimpMasked", "graph": MASKED, "params": MASKED_PARAMS})
    finally:
        c.close()
    s.refresh_workflows()
    wfs = wait_for(s, "workflows")["workflows"]
    with pytest.raises(LookupError, match="GimpShrink"):
        pbw.find_workflow(wfs, "NoSuchFlow")

    form, specs = pbw.form_specs(pbw.find_workflow(wfs, "GimpFox"), {"steps": 4, "scheduler": "ddim", "cfg": "x"})
    by = {sp["name"]: sp for sp in specs}
    assert by["prompt"]["widget"] == forms.TEXTAREA and by["prompt"]["value"] == "a red fox"
    assert {k: by["steps"][k] for k in ("min", "max", "step", "digits", "value")} == \
        {"min": 1, "max": 8, "step": 1, "digits": 0, "value": 4}         # the last run's value
    assert by["seed"]["min"] == 0 and by["seed"]["max"] == pbw.INT_BOUNDS[1]    # unbounded: finite for Gtk
    assert by["cfg"]["widget"] == forms.FLOAT and by["cfg"]["step"] == 0.5 and by["cfg"]["digits"] == 1
    assert by["cfg"]["value"] == 7.0                                     # "x" is not a float: the default stays
    assert by["scheduler"]["widget"] == forms.CHOICE and by["scheduler"]["items"][by["scheduler"]["active"]] == "ddim"

    form, specs = pbw.form_specs(pbw.find_workflow(wfs, "GimpMasked"))
    assert [(sp["widget"], sp["source"], sp["required"]) for sp in specs] == \
        [(forms.LAYER, "active", True), (forms.SELECTION, "selection", True)]
    layer = Pixels(bytes([10, 20, 30, 255]) * 12, 4, 3, "rgba8", 5, 6)
    mask = Pixels(bytes([255, 0, 0, 255]) * 3, 4, 3, "gray8", 5, 6)
    asked = []

    def read(src):
        asked.append(src)
        return {"active": layer, "selection": mask}[src]
    values, errors = pbw.prepare(form, {"source": "active", "area": "selection"}, read)
    assert errors == {} and values == {"source": layer, "area": mask} and asked == ["active", "selection"]
    values, errors = pbw.prepare(form, {"source": "selection", "bogus": 1}, lambda src: None)
    assert set(errors) == {"source", "area", "bogus"} and '"active"' in errors["source"]
    assert errors["area"] == 'Area is required: give "selection"'
    msg = pbw.describe_errors(form, errors)
    assert msg.index("Source") < msg.index("bogus")
    assert pbw.prepare(form, {"source": "active", "area": "selection"}, lambda src: None)[1]["area"].endswith(
        "select an area first")
    assert pbw.parse_values("") == {} and pbw.parse_values(' {"a": 1} ') == {"a": 1}
    for bad in ("[1]", "{nope"):
        with pytest.raises(ValueError, match="JSON"):
            pbw.parse_values(bad)

    # checked values are what workflows.run takes: the shrink runs, at the layer's place
    form = forms.fields(pbw.find_workflow(wfs, "GimpShrink"))
    src = Pixels(bytes([200, 30, 90, 255]) * (40 * 20), 40, 20, "rgba8", 6, 4)
    values, errors = pbw.prepare(form, {"source": "active"}, lambda s_: src)
    assert errors == {}
    s.run_workflow("GimpShrink", values)
    job = wait_for(s, "job")["job"]
    out = wait_for(s, "result", pred=lambda d: d["job"] == job)["layers"][0].pixels
    assert (out.x, out.y, out.w, out.h) == (6, 4, 32, 16) and out.data == bytes([200, 30, 90, 255]) * (32 * 16)


# ---- gallery and workflows inside GIMP (non-interactive procedures) ----------------------------------------------

def _newest_job(client):
    jobs = client.call("job.list", {"limit": 1})["jobs"]
    return jobs[0]["job"] if jobs else None


@pytest.mark.host
@needs_gimp
def test_plugin_open_from_gallery(gimp, gimp_plugin, engine_server):
    """Gallery images (made by another app) become layers with their exact pixels at their own x, y; an empty id
    takes the newest; an unknown id fails cleanly."""
    c = app_client(engine_server, "krita")
    try:
        c.call("workflows.save", {"name": "GimpGallerySrc", "graph": RESIZE, "params": SHRINK_PARAMS})
        made = {}
        for key, (x, y, seed) in {"older": (7, 5, 1), "newest": (3, 9, 2)}.items():
            data = bytes(((i * 37 + seed * 101) % 256) if i % 4 != 3 else 255 - (i // 4) % 50
                         for i in range(40 * 20 * 4))
            sha = c.upload(data)
            layer = {"sha256": sha, "w": 40, "h": 20, "format": "rgba8", "x": x, "y": y}
            _, layers = run(c, "workflows.run", {"name": "GimpGallerySrc", "values": {"source": layer}})
            made[key] = {"id": layers[0]["image_id"], "x": x, "y": y, "hex": c.download(layers[0]["sha256"]).hex()}
    finally:
        c.close()
    env = dict(_engine_env(engine_server), PB_OLDER=made["older"]["id"])
    out = run_script(gimp, "open_from_gallery", plugin=gimp_plugin, env=env)
    for key in ("older", "newest"):
        assert out[key]["status"] == "success", out[key]
        got, want = out[f"{key}_layer"], made[key]
        assert out[key]["result"]["image_id"] == want["id"]
        assert (got["x"], got["y"], got["w"], got["h"]) == (want["x"], want["y"], 32, 16), got
        assert got["hex"] == want["hex"], f"{key}: pixels differ"
        assert out[key]["result"]["layers"][0]["name"] == got["name"]
    assert out["missing"]["status"] == "execution-error" and "0123456789abcdef" in out["missing"]["error"]
    assert out["layers"] == 3


@pytest.mark.host
@needs_gimp
def test_plugin_run_workflow(gimp, gimp_plugin, engine_server):
    """A saved workflow with an image parameter from the active layer (and one with a mask from the selection)
    runs from GIMP; its result lands as a layer where the engine put it. Bad values fail with a message naming
    the parameter, and queue nothing."""
    c = app_client(engine_server, "test")
    c.call("workflows.save", {"name": "GimpShrink", "graph": RESIZE, "params": SHRINK_PARAMS})
    c.call("workflows.save", {"name": "GimpMasked", "graph": MASKED, "params": MASKED_PARAMS})
    before = _newest_job(c)
    out = run_script(gimp, "run_workflow", plugin=gimp_plugin, env=_engine_env(engine_server))
    try:
        bad = {k: out[k] for k in ("bad_source", "unknown", "no_such", "not_json", "no_selection", "missing")}
        for key, res in bad.items():
            assert res["status"] == "execution-error", (key, res)
        assert '"active"' in bad["bad_source"]["error"] and "Source" in bad["bad_source"]["error"]
        assert "bogus" in bad["unknown"]["error"]
        assert "NoSuchFlow" in bad["no_such"]["error"] and "GimpShrink" in bad["no_such"]["error"]
        assert "JSON" in bad["not_json"]["error"]
        assert "select an area" in bad["no_selection"]["error"]
        assert "Source is required" in bad["missing"]["error"]
        assert out["layers_after_failures"] == ["src", "base"]

        assert out["ok"]["status"] == "success", out["ok"]
        name, x, y, w, h = out["placed"]
        assert (x, y, w, h) == (6, 4, 32, 16) and name.startswith("Paintbridge GimpShrink")
        assert out["uniform"]
        assert out["ok"]["result"]["workflow"] == "GimpShrink"
        jobs = c.call("job.list", {"limit": 3})["jobs"]
        mine = [j["job"] for j in jobs]
        # exactly two jobs were queued by the script (the good shrink and the masked run), none by the failures
        assert out["ok"]["result"]["job"] in mine and out["masked"]["result"]["job"] == mine[0]
        assert mine[2] == before if before else len(mine) == 2

        assert out["masked"]["status"] == "success", out["masked"]
        sent = c.call("job.get", {"job": out["masked"]["result"]["job"]})["request"]["values"]
        assert (sent["area"]["w"], sent["area"]["h"], sent["area"]["x"], sent["area"]["y"]) == (40, 20, 6, 4)
        m = c.download(sent["area"]["sha256"])
        assert [(i % 40 + 6, i // 40 + 4) for i, v in enumerate(m) if v] == \
            [(x, y) for y in range(8, 11) for x in range(10, 15)]    # the selection, over the layer's area
    finally:
        c.close()


# ---- the interactive dialogs' Gtk code, under Xvfb (no GIMP process: GIMP's batch mode has no display) -------------



@contextlib.contextmanager
def xvfb():
    """An Xvfb display for the chroot's Gtk (reached over TCP: the chroot has no /tmp/.X11-unix of ours)."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed")
    display = next(n for n in range(180, 1000)
                   if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"))
    proc = subprocess.Popen(["Xvfb", f":{display}", "-listen", "tcp", "-ac", "-screen", "0", "1280x1024x24"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", 6000 + display), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Xvfb did not start"
                time.sleep(0.2)
        yield f"127.0.0.1:{display}"
    finally:
        proc.terminate()
        proc.wait(10)


def _windows(display) -> str:
    res = subprocess.run(["xwininfo", "-root", "-tree", "-display", display], capture_output=True, text=True)
    return res.stdout


DIALOGS = {"generate": "Generate", "refine": "Refine", "inpaint": "Inpaint Selection", "outpaint": "Outpaint",
           "upscale": "Upscale", "settings": "Settings", "region-prompt": "Region Prompt", "live": "Live"}


@pytest.mark.host
@needs_gimp
@pytest.mark.parametrize("proc", list(DIALOGS))
def test_procedure_dialog_inside_gimp(gimp, gimp_plugin, engine_server, proc):
    """Each procedure's real dialog (GimpUi.ProcedureDialog in GIMP, under Xvfb) after the plug-in connected:
    titled after the procedure, the model/LoRA/upscaler pickers built (no "no picker" fallback), and no mnemonic
    warnings (issue 15 item 12). The dialog is closed by killing the plug-in, as GIMP's Cancel would."""
    import signal
    import threading

    if not shutil.which("xwininfo"):
        pytest.skip("xwininfo is not installed")
    seen = {}
    with xvfb() as display:
        def watch():
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                tree = _windows(display)
                if f'"Paintbridge: {DIALOGS[proc]}"' in tree:
                    time.sleep(2.0)                      # let it draw (warnings come while it is built)
                    seen["tree"] = tree
                    break
                time.sleep(0.3)
            for pid in _plugin_pids(gimp):
                os.kill(pid, signal.SIGKILL)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        env = dict(_engine_env(engine_server), DISPLAY=display, PAINTBRIDGE_URL=engine_server.url,
                   PB_PROC=f"paintbridge-{proc}")
        res = gimp.run_batch(gimp_script("interactive_dialog"), plugins=[gimp_plugin], env=env, timeout=200)
        watcher.join(10)
    assert "tree" in seen, res.output[-4000:]
    assert "no picker" not in res.output, res.output[-4000:]
    assert "mnemonic" not in res.output.lower(), res.output[-4000:]
    # (GIMP's own LibGimpUI transient-window CRITICAL is gimp-console's: it has no image window to be above)
    assert "Gtk-CRITICAL" not in res.output and "Gtk-WARNING" not in res.output, res.output[-4000:]


@pytest.mark.host
@needs_gimp
def test_interactive_dialogs_build_and_read_back(gimp, gimp_plugin):
    """The Gtk side of both dialogs in the chroot's Gtk 3 under Xvfb: form widgets per field, values and
    per-field errors read back, gallery rows with thumbnails, star and "Use settings"."""
    with xvfb() as display:
        gimp.install_plugin(gimp_plugin)
        res = gimp.run_in_root(["python3", "-c", (SCRIPTS / "dialog_smoke.py").read_text()], env={"DISPLAY": display},
                               timeout=120)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("SMOKE ")), None)
    assert line, res.output[-4000:]
    out = json.loads(line[6:])
    assert out["widgets"] == ["ScrolledWindow", "SpinButton", "SpinButton", "ComboBoxText", "CheckButton", "Entry",
                              "SpinButton"], out["widgets"]
    assert out["initial"] == {"prompt": "a red fox", "steps": 5, "cfg": 7.0, "scheduler": "ddim", "tiled": False,
                              "title": "x", "count": None}
    assert out["first_check"] is None and list(out["errors_shown"]) == ["count"]
    assert "required" in out["errors_shown"]["count"]
    name, values, raw = out["second_check"]
    assert name == "Fox" and values["count"] == 3 and values["steps"] == 5 and out["errors_after"] == {}
    assert out["masked_widgets"] == ["layer", "selection"] and out["masked_check"] is None
    assert list(out["masked_errors"]) == ["area"] and "select an area" in out["masked_errors"]["area"]
    assert [r[1] for r in out["rows"]] == [f"{1:016x}", f"{2:016x}"]      # the stale page was dropped
    assert out["pixbuf"] == [12, 8, True, True] and out["more_sensitive"]
    assert "★" in out["starred_caption"] and out["star_label"] == "Un_star"
    assert out["progress_title"] == "Paintbridge: Inpaint Selection"
    assert out["progress"] == [0.5, "Paintbridge: step 2 of 4", 192, 144]
    assert out["cancel"] == [True, "Canceling…"]
    assert out["sign_in"] == ["Paintbridge: Sign In", False, "ana", True]
    # issue 15 item 12: each procedure's dialogs are titled after it, not all "Paintbridge"
    assert out["titles"] == ["Paintbridge: Generate", "Paintbridge: Refine", "Paintbridge: Inpaint Selection",
                             "Paintbridge: Outpaint", "Paintbridge: Upscale", "Paintbridge: Sign In",
                             "Paintbridge: Settings", "Paintbridge: Open from Gallery", "Paintbridge: Run Workflow",
                             "Paintbridge: Region Prompt", "Paintbridge: Live"]
    assert "Generate, Refine and Inpaint" in out["status"]
    assert out["settings"]["recall"] == {"image": f"{2:016x}",
                                         "args": {"prompt": "image 2", "seed": 2, "steps": 3},
                                         "pending": list(gimp_settings.RECALL_PROCS)}
    assert "Fox" in out["wf_status"] and out["wf_recall"] == ["Fox", {"steps": 4}]
    kinds = [c[0] for c in out["calls"]]
    assert kinds == ["list", "images.star", "recall", "list"] and out["calls"][-1][1]["cursor"] == "c1"


# ---- GIMP with its GUI (gimp-3.0 under Xvfb) ------------------------------------------------------------------------

@pytest.mark.host
@needs_gimp
def test_plugin_in_gimp_gui(gimp, gimp_plugin, engine_server):
    """The same procedures in GIMP with its windows: the image has a display, the procedure runs from GIMP's own
    main loop (as after a menu click, progress in that window's status bar), and its layer lands pixel-exact."""
    why = gimp.unavailable_reason(gui=True)
    if why:
        (pytest.fail if REQUIRED else pytest.skip)(why)
    res = gimp.run_batch(gimp_script("gui_refine"), plugins=[gimp_plugin], env=_engine_env(engine_server), gui=True,
                         timeout=300)
    res.check()
    out = res.result
    assert isinstance(out, dict), f"the GIMP script wrote no result\n{res.output[-4000:]}"
    assert "exception" not in out, out["exception"] + "\n--- GIMP output ---\n" + res.output[-4000:]
    assert out["display"] and out["display_after"]
    assert out["run"]["status"] == "success", out["run"]
    assert out["placed"] == [4, 2, 20, 12] and out["exact"]


@pytest.mark.host
@needs_gimp
def test_pickers_and_an_admin_download_in_gimp(gimp, gimp_plugin, engine_server, tmp_path):
    """Issue 16 deliverable 5 in GIMP: Generate sends the engine's pickers (the gallery metadata says so), a sampler
    the engine lacks is refused beside its field, recall gives the pickers' arguments back; an admin's Settings
    download follows the model download to the end, and a bad source fails with the engine's reason."""
    from ..helpers import FileSite, embedding_file, installed_vae

    site = FileSite({"kite-emb.safetensors": embedding_file()}, slow=0.06)
    try:
        with installed_vae(engine_server, tmp_path) as vae:
            env = {**_engine_env(engine_server), "PB_VAE": vae,
                   "PB_DOWNLOAD": site.url("kite-emb.safetensors"), "PB_MISSING": site.url("missing.safetensors")}
            out = run_script(gimp, "pickers", plugin=gimp_plugin, env=env)
            assert out["generate"]["status"] == "success", out["generate"]
            with engine_server.client() as c:
                image = c.call("job.get", {"job": out["generate"]["result"]["job"]})["layers"][0]["image_id"]
                params = c.call("images.get", {"image": image})["params"]
                models = [m["name"] for m in c.call("models.list", {})["models"]]
    finally:
        with engine_server.client() as c:
            if "kite-emb" in [m["name"] for m in c.call("models.list", {})["models"]]:
                c.call("models.remove", {"model": "kite-emb"})
        site.close()
    assert {k: params[k] for k in ("scheduler", "schedule", "clip_skip", "vae")} == \
        {"scheduler": "dpmpp_2m", "schedule": "karras", "clip_skip": 2, "vae": vae}
    assert out["bad_sampler"]["status"] == "calling-error" and "scheduler: the engine has no sampler 'plms'" in \
        out["bad_sampler"]["error"], out["bad_sampler"]
    # recall: the image's pickers become the dialogs' arguments
    args, notes = gimp_settings.recall_args(forms.recalled(params))
    assert {k: args[k] for k in ("scheduler", "schedule", "clip-skip", "vae")} == \
        {"scheduler": "dpmpp_2m", "schedule": "karras", "clip-skip": 2, "vae": vae} and not notes
    dl = out["download"]
    assert dl["status"] == "success" and dl["result"]["download"]["state"] == "done", dl
    assert "kite-emb" in models and dl["result"]["download"]["text"] == "kite-emb: done, added as model 'kite-emb'"
    assert any("%)" in line for line in dl["result"]["download"]["seen"]), dl["result"]["download"]["seen"]
    bad = out["bad_download"]
    assert bad["status"] == "execution-error" and "could not download" in bad["error"] and "404" in bad["error"], bad


@pytest.mark.slow
def test_job_guard_cancels_a_job_whose_id_the_plugin_never_learned(engine_server):
    """Issue 15 item 3 (GIMP): a Cancel in GIMP's status bar in the first instant kills the plug-in before the
    job id reached it. The guard (started before the request is sent) finds the job by the request's fields - the
    client-picked seed, prompt, mode, source - and cancels it; another job of the same user is left alone."""
    import random

    guard_py = ROOT / "plugins" / "gimp" / "paintbridge" / "job_guard.py"
    prompt, source = f"guard {uuid.uuid4().hex[:8]}", {"app": "gimp", "document": "guarded.xcf"}
    seed = random.randrange(2 ** 30)
    args = {"model": engine_server.model_name, "prompt": prompt, "steps": 200, "width": 64, "height": 64,
            "source": source}
    with engine_server.client() as c:
        other = c.call("generate", dict(args, seed=seed + 1))["job"]   # runs first; not the plug-in's
        guard = subprocess.Popen([sys.executable, str(guard_py)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            match = {"mode": "txt2img", "seed": seed, "prompt": prompt, "source": source}
            guard.stdin.write((json.dumps({"url": engine_server.url, "token": engine_server.token,
                                           "match": match}) + "\n").encode())
            guard.stdin.flush()
            job = c.call("generate", dict(args, seed=seed))["job"]
            guard.stdin.close()            # the plug-in died: no {"job"}, no {"done"}
            assert guard.wait(60) == 0, guard.stderr.read().decode()
            status = c.call("job.get", {"job": job})["status"]
            assert status == "canceled", status
            assert c.call("job.get", {"job": other})["status"] in ("queued", "running", "completed")
        finally:
            if guard.poll() is None:
                guard.kill()
            for j in (other, locals().get("job")):
                if j:
                    c.call("job.cancel", {"job": j})


# ---- control and reference layers, regions, live (issues 18, 19, 21) ------------------------------------------------

@contextlib.contextmanager
def installed_steering(engine, tmp_path: Path):
    """The demo ControlNet and IP-Adapter (with its image encoder) registered on the running shared engine for the
    duration (models.install, then models.remove): the shared demo models stay as they are."""
    from engine.models.demo import make_demo

    build = tmp_path / "steer-build"
    names = {"gimp-cn": make_demo(build, "controlnet-sd15"), "gimp-ipa": make_demo(build, "ipadapter-sd15"),
             "gimp-ipa-encoder": build / "demo-clip-vision"}
    installed = []
    try:
        with engine.client() as c:
            for name, path in names.items():
                c.call("models.install", {"path": str(path), "name": name})
                installed.append(name)
        yield names
    finally:
        with engine.client() as c:
            for name in installed:
                c.call("models.remove", {"model": name})


def _mask_rows(c, mask) -> list[list[int]]:
    data = c.download(mask["sha256"])
    return [list(data[y * mask["w"]:(y + 1) * mask["w"]]) for y in range(mask["h"])]


@pytest.mark.host
@needs_gimp
def test_plugin_control_reference_and_regions(gimp, gimp_plugin, engine_server, tmp_path):
    """Issue 18 d6/d7 and issue 19 d5/d6 in GIMP: a control layer (with its preprocess and strength), a reference
    layer and two region layers whose prompts the Region Prompt procedure stored as parasites, in one Generate;
    the gallery metadata of the result holds them (layer pixels, places, masks from alpha, bottom first); "Use
    settings" finds the layers again by their pixels and puts the region prompts back."""
    with installed_steering(engine_server, tmp_path):
        out = run_script(gimp, "steer_regions", plugin=gimp_plugin, env=_engine_env(engine_server))
        with engine_server.client() as c:
            presets = {m["name"]: m.get("preset") for m in c.call("models.list", {})["models"]
                       if m["name"] in ("gimp-cn", "gimp-ipa")}
            assert out["generate"]["status"] == "success", out["generate"]
            job = c.call("job.get", {"job": out["generate"]["result"]["job"]})
            params = c.call("images.get", {"image": job["layers"][0]["image_id"]})["params"]
            masks = [_mask_rows(c, r["mask"]) for r in params["regions"]]
            ids = out["ids"]
    # the region prompts: stored on the layers, one cleared again by empty prompts
    assert out["region_sky"]["status"] == "success" and out["region_sky"]["result"]["region"] is True
    assert out["region_ref_cleared"]["result"]["region"] is False
    assert json.loads(out["parasites"]["sky"]) == {"prompt": "stormy sky", "negative_prompt": "sun", "tagged": True}
    assert json.loads(out["parasites"]["knight"]) == {"prompt": "a knight", "negative_prompt": "", "tagged": False}
    # the Layers dialog shows which layers are regions (an orange tag), a tag of the person's own is kept
    assert out["tags"] == {"base": "none", "ref": "none", "sky": "orange", "knight": "blue"}, out["tags"]
    assert out["parasites"]["ref"] is None and out["parasites"]["base"] is None
    assert out["region_knight"]["result"]["regions"] == [ids["sky"], ids["knight"]]   # bottom first
    # a control model the engine lacks: refused before anything is sent, naming the ones it has
    assert out["bad_model"]["status"] == "calling-error" and "gimp-cn" in out["bad_model"]["error"], out["bad_model"]
    # what the engine got (its gallery metadata): the control layer at its place, the hidden one left out
    result = out["generate"]["result"]
    assert result["steering"] == {"control": [{"model": "gimp-cn", "layer": ids["sketch"]}],
                                  "reference": [{"model": "gimp-ipa", "layer": ids["ref"]}]}
    (control,) = params["control"]
    assert {k: control["image"][k] for k in ("w", "h", "x", "y")} == {"w": 48, "h": 32, "x": 8, "y": 8}
    assert control["model"] == "gimp-cn" and control["strength"] == 0.8 and control["preprocess"] == "invert"
    assert (control["start"], control["end"]) == (presets["gimp-cn"]["start"], presets["gimp-cn"]["end"])
    (reference,) = params["reference"]
    assert reference["model"] == "gimp-ipa" and reference["strength"] == presets["gimp-ipa"]["strength"]
    assert {k: reference["image"][k] for k in ("w", "h", "x", "y")} == {"w": 64, "h": 48, "x": 0, "y": 0}
    assert control["image"]["sha256"] == out["sketch_sha"] and reference["image"]["sha256"] == out["ref_sha"]
    # two regions, bottom of the stack first, masks from the layers' alpha at their places in the image
    assert [(r["prompt"], r.get("negative_prompt")) for r in params["regions"]] == [("stormy sky", "sun"),
                                                                                    ("a knight", None)]
    sky, knight = (r["mask"] for r in params["regions"])
    assert (sky["x"], sky["y"], sky["w"], sky["h"], sky["format"]) == (0, 0, 64, 48, "gray8")
    assert (knight["x"], knight["y"], knight["w"], knight["h"]) == (30, 20, 24, 24)
    assert all(v == (255 if y < 24 else 0) for y, row in enumerate(masks[0]) for v in row)
    assert all(v == 255 for row in masks[1] for v in row)
    assert params["prompt"] == "oil painting"
    # Use settings in a copy of the image: controls by layer (ids of the copy), the sky's region prompt back on its
    # layer; the knight moved, so its region is not found (and said)
    dup = out["dup_ids"]
    args = out["recall"]["args"]
    assert (args["control-layer"], args["control-model"], args["control-strength"], args["control-preprocess"]) == \
        (dup["sketch"], "gimp-cn", 0.8, "invert")
    assert args["control-2-layer"] is None and args["reference-layer"] == dup["ref"]
    assert json.loads(out["dup_parasites"]["sky"])["prompt"] == "stormy sky"
    assert out["dup_parasites"]["knight"] is None
    assert "1 region prompt put back" in out["recall_text"] and "a knight" in out["recall_text"], out["recall_text"]


@pytest.mark.host
@needs_gimp
def test_plugin_live_mode(gimp, gimp_plugin, engine_server):
    """Issue 21 d3 in GIMP: live mode's GIMP side on a real image. The marker (layer structure + the core's
    thumbnail) notices three paint changes and nothing while idle; each change gets its result; Apply adds one
    layer; Stop leaves no live job queued or running on the engine. The marker's cost per comparison is printed."""
    out = run_script(gimp, "live_batch", plugin=gimp_plugin, env=_engine_env(engine_server))
    print(f"GIMP live marker: min/max/mean {out['marker_ms'][:3]} ms over {out['marker_ms'][3]} comparisons")
    assert out["script_live"]["status"] == "calling-error" and "own window" in out["script_live"]["error"]
    assert out["first"] and all(out[f"change{i}"] for i in range(3)), out
    assert out["idle_changes"] == 0, "an unchanged image must not look changed"
    assert out["changes_seen"] == 3 and len(set(out["results"])) == 4, out
    assert out["sent"] >= 4
    assert out["layers_added"] == 1 and out["applied"][0]["name"].startswith("Paintbridge live: live fox")
    assert out["last_sent"], "the last change was sent: Stop has its live job to end (or it had finished)"
    assert out["settled"] and out["state_after_stop"] == "off"
    with engine_server.client() as c:
        kept = c.call("job.get", {"job": out["results"][-1]})
        live = [j for j in c.call("job.list", {"limit": 50})["jobs"]
                if j["request"].get("live") and j["status"] in ("queued", "running")]
        last = [c.call("job.get", {"job": j})["status"] for j in out["last_requests"].values() if j]
    assert live == [], live
    assert all(s in ("canceled", "completed") for s in last), last
    assert kept["status"] == "completed" and kept["layers"][0].get("image_id"), "Apply keeps it in the gallery"
    req = kept["request"]
    assert (req["mode"], req["strength"], req["prompt"], req["live"]) == ("img2img", 0.5, "live fox", True)


@pytest.mark.host
@needs_gimp
def test_reconnect_while_a_job_runs_in_gimp_gui(gimp, gimp_plugin, engine_server):
    """Issue 15 item 2 in GIMP with its windows: the link to the engine is cut while a Generate runs and stays
    down until the engine has finished the job (its job.result goes to nobody). The procedure, following the job
    from GIMP's main loop, reconnects, learns the job's end from the engine (job.get) and places the result, rather
    than waiting for its timeout."""
    from ..helpers import new_user
    from .cut_link import CutWhileRunning

    why = gimp.unavailable_reason(gui=True)
    if why:
        (pytest.fail if REQUIRED else pytest.skip)(why)
    c = new_user(engine_server, app="gimp")
    try:
        with CutWhileRunning(engine_server, c) as cut:
            env = {"PB_URL": cut.url, "PAINTBRIDGE_TOKEN": c.token, "PB_MODEL": engine_server.model_name,
                   "PAINTBRIDGE_TIMEOUT": "240", "PB_STEPS": "20"}
            res = gimp.run_batch(gimp_script("gui_reconnect"), plugins=[gimp_plugin], env=env, gui=True,
                                 timeout=400)
        res.check()
        out = res.result
        assert isinstance(out, dict), f"the GIMP script wrote no result\n{res.output[-4000:]}"
        assert "exception" not in out, out["exception"] + "\n--- GIMP output ---\n" + res.output[-4000:]
        assert cut.error is None, cut.error
        assert cut.finished_while_cut and cut.status == "completed", (cut.job, cut.status)
        assert out["run"]["status"] == "success", out["run"]
        assert out["run"]["result"]["job"] == cut.job, (out["run"], cut.job)
        assert out["layers"] == 2 and out["top"][1:] == [64, 48], out
    finally:
        c.close()
