"""The Blender add-on inside a real Blender, on three hosts (see blender_host.py):

  blender    `blender -b --factory-startup` (Debian 12's 3.4), the zip installed as a legacy add-on
  blender43  the Blender 4.3 program from the trixie host chroot (tests/hosts/chroot/setup_chroot.sh), without
             numpy like every Debian Blender, the zip installed as an extension
  bpy42      Blender 4.2 LTS as a Python module (tests/hosts/blender/setup_bpy.sh), the zip installed as a 4.2
             extension (manifest checked, module bl_ext.user_default.paintbridge)

and with the UI and its event loop (no -b, under Xvfb) on the two programs: test_generate_in_the_ui_event_loop.
A host that is missing is skipped, unless PAINTBRIDGE_REQUIRE_HOSTS=1 (then it fails).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE / "blender"))

from blender_host import (GUI_HOSTS, HOSTS, SCRIPTS, describe_failure, run_in_blender,  # noqa: E402
                           unavailable_reason)

pytestmark = pytest.mark.host

# where each host puts the installed zip, under the isolated user directory
INSTALLED_AT = {"blender": ("scripts/addons/paintbridge", "paintbridge"),
                "blender43": ("extensions/user_default/paintbridge", "bl_ext.user_default.paintbridge"),
                "bpy42": ("extensions/user_default/paintbridge", "bl_ext.user_default.paintbridge")}
VERSION = {"blender": "3.", "blender43": "4.3", "bpy42": "4.2"}


def _require(host, gui=False):
    why = unavailable_reason(host, gui)
    if why:
        if os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS") == "1":
            pytest.fail(f"{why} and PAINTBRIDGE_REQUIRE_HOSTS=1")
        pytest.skip(why)
    return host


@pytest.fixture(scope="session", params=HOSTS)
def host(request):
    return _require(request.param)


@pytest.fixture(scope="session", params=GUI_HOSTS)
def gui_host(request):
    return _require(request.param, gui=True)


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory):
    from engine.plugin_build import build

    return build("blender", tmp_path_factory.mktemp("blender-addon") / "paintbridge-blender.zip")


def _run(host, zip_path, script, timeout=120, **kw):
    out = run_in_blender(zip_path, SCRIPTS / script, timeout, host=host, **kw)
    assert out["ok"], describe_failure(out)
    return out


def test_pixel_facts(host):
    out = _run(host, None, "pixel_facts.py", 60)
    assert out["startup_s"] < 30
    assert out["result"]["ref_after_undo"] == "ReferenceError"
    assert out["blender_version"].startswith(VERSION[host])


def test_addon_installs_and_places_results(host, addon_zip, tmp_path):
    out = _run(host, addon_zip, "addon_smoke.py", user_dir=tmp_path / "u")
    where, module = INSTALLED_AT[host]
    assert out["module"] == module
    # installed into the isolated user directory (4.2: as an extension, so the manifest was accepted)
    assert out["result"]["addon_file"] == str(tmp_path / "u" / where / "__init__.py")
    assert out["result"]["drain_without_session"] == 0
    assert out["result"]["replace_packed_own_png"] is True   # Replace: no PNG encoded on the main thread
    if host == "blender43":   # the chroot has no numpy: the add-on's array('f') path is what ran
        assert out["result"]["numpy"] is False
    # undo/redo of "Replace active image" reloads the pixels from the restored packed file without Blender
    # re-reading a file path our packed images do not have (issue 15 item 6)
    assert "not available" not in out["stdout"] + out["stderr"], out["stderr"][-2000:]
    again = _run(host, addon_zip, "check_saved.py", blend_file=out["result"]["blend"], user_dir=tmp_path / "u",
                 params={"name": out["result"]["result_name"]})
    assert again["result"]["ok"]


def test_bad_addon_reports_enable_failure(host, tmp_path):
    import zipfile

    bad = tmp_path / "broken.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        # a missing dependency (a bare `raise ImportError()` has no .name, which crashes 4.2.0's installer itself)
        zf.writestr("broken/__init__.py", "bl_info = {'name': 'broken', 'blender': (3, 0, 0)}\n"
                    "import paintbridge_missing_dependency\n")
        zf.writestr("broken/blender_manifest.toml", 'schema_version = "1.0.0"\nid = "broken"\nversion = "0.1.0"\n'
                    'name = "broken"\ntagline = "Fails to import"\nmaintainer = "nobody"\ntype = "add-on"\n'
                    'blender_version_min = "4.2.0"\nlicense = ["SPDX:GPL-3.0-or-later"]\n')
    out = run_in_blender(bad, SCRIPTS / "pixel_facts.py", 60, host=host)
    assert not out["ok"] and out["stage"] == "enable" and out["returncode"] == 2, describe_failure(out)
    assert "paintbridge_missing_dependency" in out["error"], describe_failure(out)


def test_against_engine(host, addon_zip, engine_server, tmp_path):
    out = _run(host, addon_zip, "engine_roundtrip.py", timeout=480, user_dir=tmp_path / "u",
               params={"url": engine_server.url, "token": engine_server.token, "model": engine_server.model_name})
    r = out["result"]
    assert r["roundtrip"] == "exact"
    assert r["generate"]["size"] == [64, 48]
    assert r["inpaint"]["changed_outside_mask"] == 0
    assert engine_server.model_name in r["catalog"]["models"] and "tiny-esrgan" not in r["catalog"]["models"]
    assert r["catalog"]["upscalers"] == ["tiny-esrgan"]
    assert "no upscaler" in r["bad_upscaler"] and "tiny-esrgan" in r["bad_upscaler"]
    assert r["upscale"] == [128, 96]
    # issue 20: a refined upscale (2 steps at 0.5: one per tile; 6 tiles of the demo model's 64 px) and hires
    assert r["refined"] == [128, 96]
    assert r["refined_tiles"] and {n for _, n in r["refined_tiles"]} == {6}, r["refined_tiles"]
    assert r["hires"] is True
    with engine_server.client() as c:
        req = c.call("job.get", {"job": r["refined_job"]})["request"]
    assert (req["mode"], req["model"], req["strength"]) == ("upscale", engine_server.model_name, 0.5)
    # the token lives in Blender's (isolated) user config, mode 0600, unless a keyring took it
    if r["token_backend"].startswith("file"):
        f = Path(r["token_backend"][5:])
        assert f.is_relative_to(tmp_path / "u" / "config"), f
        assert f.exists() and (f.stat().st_mode & 0o777) == 0o600


# a paste of two exposed layers through an exposed mask (no model: runs in milliseconds)
PASTE = {"nodes": {"b": {"type": "image_input"}, "p": {"type": "image_input"}, "m": {"type": "mask_input"},
                   "x": {"type": "paste", "feather": 2.0}, "o": {"type": "output", "name": "pasted"}},
         "edges": [{"from": ["b", "image"], "to": ["x", "base"]}, {"from": ["p", "image"], "to": ["x", "image"]},
                   {"from": ["m", "mask"], "to": ["x", "mask"]}, {"from": ["x", "image"], "to": ["o", "image"]}]}
PASTE_PARAMS = [{"name": "base", "type": "image", "node": "b", "field": "layer"},
                {"name": "patch", "type": "image", "node": "p", "field": "layer"},
                {"name": "mask", "type": "mask", "node": "m", "field": "layer"},
                {"name": "feather", "type": "float", "node": "x", "field": "feather", "min": 0, "max": 16}]


def test_gallery_and_workflows(host, addon_zip, engine_server, tmp_path):
    """Gallery (list, thumbnails, Use settings, Open as image, Star, paging) and workflow forms in Blender."""
    import time

    from ..helpers import GRAPH, PARAMS, RESIZE, app_client

    nonce = f"n{time.time_ns()}"
    names = {"fox": f"BlenderFox_{nonce}", "shrink": f"BlenderShrink_{nonce}", "paste": f"BlenderPaste_{nonce}"}
    c = app_client(engine_server, "test")   # the same user as Blender, from another app
    try:
        c.call("workflows.save", {"name": names["fox"], "graph": GRAPH, "params": PARAMS})
        c.call("workflows.save", {"name": names["shrink"], "graph": RESIZE, "params": [
            {"name": "image", "type": "image", "node": "i", "field": "layer", "label": "Layer"},
            {"name": "width", "type": "int", "node": "r", "field": "width", "choices": [16, 32]}]})
        c.call("workflows.save", {"name": names["paste"], "graph": PASTE, "params": PASTE_PARAMS})
    finally:
        c.close()
    out = _run(host, addon_zip, "gallery_workflows.py", timeout=600, user_dir=tmp_path / "u",
               params={"url": engine_server.url, "token": engine_server.token, "model": engine_server.model_name,
                       "nonce": nonce, **names})
    r = out["result"]
    # gallery: listed, from Blender, with a thumbnail loaded from our PNG
    assert r["listed"] == {"prompt": f"a gallery teapot {nonce}", "seed": "4321", "app": "blender", "mode": "txt2img",
                           "model": engine_server.model_name, "starred": False, "size": [64, 48]}
    assert r["thumbnail"] == {"image_size": [64, 48], "file": True}
    # Use settings refilled every generate setting
    rec = r["recalled"]
    assert rec == {"mode": "GENERATE", "prompt": f"a gallery teapot {nonce}", "negative_prompt": "blurry",
                   "model": engine_server.model_name, "steps": 2, "seed": 4321, "guidance": 6.5, "width": 64,
                   "height": 48, "lora": ["tiny-lora-sd15", 0.65], "message": rec["message"]}
    assert r["loras"] == ["tiny-lora-sd15"] and r["loras_sdxl"] == []
    assert rec["message"].startswith("Settings filled in") and "not filled" not in rec["message"], rec["message"]
    op = r["opened"]
    assert op["size"] == [64, 48] and op["packed"] and op["same_pixels"] and op["distinct"] and op["image_id"]
    assert op["image_id"] in r["starred_filter"]
    # the panels draw (against a stand-in layout: nothing is drawn under -b)
    assert r["gallery_drawn"]["prompt_shown"] and r["gallery_drawn"]["row"] == [f"a gallery teapot {nonce}",
                                                                                "4321  blender"]
    # the workflow form: one row per parameter, in order, with the right widget, defaults and limits
    fox = r["fox_form"]
    assert fox["order"] == ["prompt", "seed", "steps", "scheduler", "cfg"]
    rows = fox["rows"]
    assert rows["prompt"] == {"widget": "textarea", "label": "Prompt", "required": False, "value": "a red fox"}
    assert rows["seed"] == {"widget": "int", "label": "Seed", "required": False, "min": 0, "value": 1}
    assert rows["steps"] == {"widget": "int", "label": "Steps", "required": False, "min": 1, "max": 8, "value": 2}
    assert rows["scheduler"]["widget"] == "choice" and "ddim" in rows["scheduler"]["choices"]
    assert rows["scheduler"]["choices"][int(rows["scheduler"]["value"])] == "euler"   # the node's default
    assert rows["cfg"] == {"widget": "float", "label": "Guidance", "required": False, "min": 0, "max": 20,
                           "value": 7.0}
    bad = r["bad"]
    assert bad["result"] == ["CANCELLED"] and "at most 8" in bad["steps_error"] and "at most 20" in bad["cfg_error"]
    assert bad["prompt_error"] == "" and bad["form_error"] and bad["report"]
    assert bad["local_jobs_added"] == 0 and bad["engine_jobs_added"] == 0
    assert bad["steps_error"] in r["bad_drawn"] and bad["cfg_error"] in r["bad_drawn"]
    run = r["fox_run"]
    assert run["size"] == [64, 64] and run["errors_cleared"] and run["name"].startswith(names["fox"])
    assert run["values"] == {"prompt": f"a gallery fox {nonce}", "seed": 5, "steps": 2, "scheduler": "ddim",
                             "cfg": 4.5}
    # image parameters
    assert r["shrink_form"]["image"] == {"widget": "layer", "label": "Layer", "required": True}
    assert r["shrink_form"]["width"]["choices"] == [16, 32]
    miss = r["shrink_missing"]
    assert miss["result"] == ["CANCELLED"] and "choose a layer" in miss["error"]
    assert miss["local_jobs_added"] == 0 and miss["engine_jobs_added"] == 0
    assert r["shrink_drawn"] == ["empty: the active image (none)", miss["error"]]
    assert r["shrink_run"] == {"name": r["shrink_run"]["name"], "size": [16, 16], "uniform": True}
    assert r["paste_form"]["mask"]["widget"] == "selection" and r["paste_form"]["feather"]["value"] == 2.0
    assert r["paste_wrong_mask"]["result"] == ["CANCELLED"] and "8x8" in r["paste_wrong_mask"]["error"]
    assert r["paste_drawn"] == ["empty: the active image (paste-patch)", r["paste_wrong_mask"]["error"]]
    assert r["paste_run"] == {"size": [32, 24], "wrong_inside": 0, "wrong_outside": 0}
    # paging: one image a page over this run's two prompted images
    pg = r["paging"]
    assert pg["first"] == [1, 2, True] and pg["after_more"] == [2, 2] and pg["ids_distinct"] and not pg["more_left"]
    assert pg["prompts"] == sorted([f"a gallery teapot {nonce}", f"a gallery fox {nonce}"])
    assert r["workflow_recalled"] == {"workflow": names["fox"], "prompt": f"a gallery fox {nonce}", "seed": 5,
                                      "cfg": 4.5, "scheduler": "ddim", "message": r["workflow_recalled"]["message"]}
    assert not r["last_error"] and r["thumbs_freed"]


def test_generate_in_the_ui_event_loop(gui_host, addon_zip, engine_server, tmp_path):
    """Blender with its UI (no -b): the add-on's own timer brings the job's progress and result in - nothing calls
    drain() - and the result is shown in the Image Editor; no job stays active afterwards."""
    out = _run(gui_host, addon_zip, "ui_loop.py", timeout=400, user_dir=tmp_path / "u", gui=True,
               params={"url": engine_server.url, "token": engine_server.token, "model": engine_server.model_name})
    r = out["result"]
    assert r["background"] is False and out["stage"] == "done"
    assert r["result"] == {"size": [64, 48], "packed": True, "shown": True}
    assert r["statuses"][0] in ("sending", "queued") and "running" in r["statuses"], r["statuses"]
    assert r["job_status"] == ["completed", True] and r["active_jobs"] == r["active_jobs_later"] == 0
    assert r["results_later"] == 1


def test_what_people_hit(host, addon_zip, engine_server, tmp_path):
    """Issue 15's Blender items 4-8 and Outpaint (issue 14), in the add-on driven like a person would; the
    engine's own record of each job says what was sent."""
    from ..helpers import hello_reply, user_token

    signout_token = user_token(engine_server, "admin")   # Sign out revokes it on the engine (not the shared one)
    out = _run(host, addon_zip, "people.py", timeout=600, user_dir=tmp_path / "u",
               params={"url": engine_server.url, "token": engine_server.token, "model": engine_server.model_name,
                       "signout_token": signout_token})
    r = out["result"]
    with engine_server.client() as c:
        def request(job):
            return c.call("job.get", {"job": job})["request"]

        # 4. "random" sends a fresh random seed each time (not 0), shown; Reuse puts it back and remakes the image
        seeds = r["seed"]
        assert r["seed_default"] == -1
        sent = [request(seeds[k]["job"])["seed"] for k in ("first", "second", "third")]
        assert sent == [seeds["first"]["seed"], seeds["second"]["seed"], seeds["third"]["seed"]]
        assert sent[0] != sent[1] and 0 not in sent[:2], sent
        assert seeds["field_after_reuse"] == sent[1] == sent[2] and seeds["third_same_pixels"]
        # 5. a 100x75 refine: no multiple-of-8 refusal, no size sent (the engine generates at the model's native
        # size), and the result has the image's size
        assert r["refine_odd"]["size"] == [100, 75]
        odd = request(r["refine_odd"]["job"])
        assert odd.get("width") is None and odd.get("height") is None, odd
    # 5. errors in full at the sidebar's width; 8. cleared by the next request
    drawn = r["error_drawn"]
    assert drawn["first"] and drawn["in_full"] and drawn["widest"] <= 40, drawn
    assert r["error_cleared"] == ""
    assert r["modes_drawn"] == ["GENERATE", "REFINE", "INPAINT", "OUTPAINT", "UPSCALE"]
    # Outpaint: margins grown and filled, the old pixels kept exactly; transparent pixels filled in place
    assert r["outpaint_margins"] == {"size": [48, 32], "kept": True, "filled": True, "margins_reset": [0, 0, 0, 0]}
    assert r["outpaint_hole"] == {"size": [32, 24], "kept": True, "filled": True}
    # 8. queued/loading before the first step (not "running 0/0"); the preview shown in the Image Editor, then
    # the result in its place; names that do not pile up; dates formatted; auto-connect; a token field
    assert r["status_before_first_step"] and r["status_before_first_step"][0].startswith(("sending", "queued",
                                                                                          "starting"))
    assert not any("0/0" in t or "0 of 0" in t for t in r["status_before_first_step"])
    assert r["preview_shown"] and r["preview_dropped"] and r["shown_after"] == [r["seed"]["first"]["name"]]
    assert r["names"][0] == "Paintbridge generate" and r["names"][1].startswith("Paintbridge refine"), r["names"]
    assert r["created_ok"], r["created"]
    assert r["auto_connected"] == "connected"
    assert r["connect_has_token"] and r["token_after_sign_out"] is None and r["token_stored"]
    assert "engine no longer accepts" in r["sign_out_message"], r["sign_out_message"]   # auth.logout
    assert hello_reply(engine_server, signout_token)["error"]["code"] == "unauthenticated"
    # 7. pixel conversion both ways ran off the main thread
    assert r["threads"]["to_wire"] and "MainThread" not in r["threads"]["to_wire"], r["threads"]
    assert r["threads"]["to_blender"] and "MainThread" not in r["threads"]["to_blender"], r["threads"]
    assert not r["last_error"]


def test_pickers_recall_and_an_admin_download(host, addon_zip, engine_server, tmp_path):
    """Issue 16 deliverable 5: the engine's sampler / schedule / clip-skip / VAE pickers, sizes that follow the
    model, the engine gets what was picked (its gallery metadata says so), Use settings restores it; an admin's
    download from a local stand-in site shows progress, a bad source a clear error; a user sees no control."""
    from ..helpers import FileSite, add_user, embedding_file, installed_vae, user_token

    site = FileSite({"harbour-emb.safetensors": embedding_file()}, slow=0.06)
    name = f"harbour-emb-{tmp_path.name[-8:]}"
    user, _ = add_user(engine_server)
    try:
        with installed_vae(engine_server, tmp_path) as vae:
            out = _run(host, addon_zip, "pickers.py", timeout=480, user_dir=tmp_path / "u",
                       params={"url": engine_server.url, "token": engine_server.token, "model": "tiny-sd15",
                               "user_token": user_token(engine_server, user), "vae": vae,
                               "download_url": site.url("harbour-emb.safetensors"), "download_name": name,
                               "missing_url": site.url("missing.safetensors")})
            with engine_server.client() as c:
                image = c.call("job.get", {"job": out["result"]["job"]})["layers"][0]["image_id"]
                params = c.call("images.get", {"image": image})["params"]
                models = [m["name"] for m in c.call("models.list", {})["models"]]
    finally:
        with engine_server.client() as c:
            if name in [m["name"] for m in c.call("models.list", {})["models"]]:
                c.call("models.remove", {"model": name})
        site.close()
    r = out["result"]
    # defaults follow the model: tiny-sd15 is made for 64 px (the property default is 512)
    assert r["size_before"] == [512, 512] and r["size_after_model"] == [64, 64] and r["result_size"] == [64, 64]
    assert "DPM++ 2M Karras" in r["samplers"] and "Euler a" in r["samplers"]
    assert r["vaes"] == [vae] and r["vaes_sdxl"] == [] and r["vae_after_sdxl"] == ""
    assert r["schedule_after_ddim"] == "default" and r["ddim_schedules"] == ["default", "trailing"]
    # the engine got the picks
    assert {k: params[k] for k in ("scheduler", "schedule", "clip_skip", "vae")} == \
        {"scheduler": "dpmpp_2m", "schedule": "karras", "clip_skip": 2, "vae": vae}
    rec = r["recalled"]
    assert rec == {"scheduler": "DPM++ 2M", "schedule": "karras", "clip_skip": 2, "vae": vae, "size": [64, 64],
                   "message": rec["message"]} and "not filled" not in rec["message"], rec
    # the admin's download: progress seen, then done and registered
    states = [st for st, _, _ in r["download_seen"]]
    assert r["admin_panel"] and states[-1] == "done" and name in models, r["download_seen"][-3:]
    assert any(st == "downloading" and "%" in text for st, _, text in r["download_seen"]), r["download_seen"]
    assert f"{name}: done, added as model" in r["download_drawn"], r["download_drawn"]
    assert r["missing_state"] == "refused" and "could not download" in r["missing_drawn"] and \
        "404" in r["missing_drawn"], r["missing_drawn"]
    assert "nothing" not in models
    assert r["user_panel"] is False


@contextlib.contextmanager
def installed_control(engine, tmp_path: Path):
    """The demo SD1.5 ControlNet and IP-Adapter (random weights) with the IP-Adapter's image encoder, registered on
    the running engine for the duration (models.install, then models.remove): the shared demo models stay as they
    are. Yields (controlnet name, ip-adapter name)."""
    from engine.models.demo import make_demo

    cn = make_demo(tmp_path / "cn-build", "controlnet-sd15")
    ipa = make_demo(tmp_path / "ipa-build", "ipadapter-sd15")
    names = {"blender-cn": cn, "blender-ipa": ipa, "blender-ipa-encoder": tmp_path / "ipa-build" / "demo-clip-vision"}
    with engine.client() as c:
        for name, path in names.items():
            c.call("models.install", {"path": str(path), "name": name})
    try:
        yield "blender-cn", "blender-ipa"
    finally:
        with engine.client() as c:
            for name in names:
                c.call("models.remove", {"model": name})


def test_controls_regions_and_live(host, addon_zip, engine_server, tmp_path):
    """Issues 18 (d5, d7), 19 (d5, d6), 21 (d3) in Blender: an image datablock and the depth pass of a scene with a
    cube as controls, a region mask with a prompt; the engine recorded them (gallery metadata), Use settings
    restores those whose images still exist; live mode: two paint changes -> two results, Apply as a new image
    and into the painted image (one undo step), Stop leaves nothing queued or running."""
    from ..helpers import new_user

    c = new_user(engine_server, app="test")   # a fresh user: the engine's job list holds only this test's jobs
    try:
        with installed_control(engine_server, tmp_path) as (cn, ipa):
            out = _run(host, addon_zip, "steer_live.py", timeout=600, user_dir=tmp_path / "u",
                       params={"url": engine_server.url, "token": c.token, "model": engine_server.model_name,
                               "control": cn, "reference": ipa})
            r = out["result"]
            got = c.call("images.get", {"image": r["image_id"]})
            jobs = c.call("job.list", {"limit": 200})["jobs"]
    finally:
        c.close()
    print(f"{host}: Generate with a depth control took {r['generate_call_s']} s on the main thread (the 64x64 "
          f"Cycles render of the passes); live: {r['live_sent']} requests for {len(r['live_results'])} results")
    assert r["controls_offered"] == [cn] and r["references_offered"] == [ipa]
    assert r["preset_applied"] == {"model": cn, "strength": 1.0, "start": 0.0, "end": 1.0}   # the catch-all preset
    meta = got["meta"]
    # the engine got both controls: the image scaled to the document, and the rendered depth pass
    ctrl = [(m["model"], m["strength"], m["start"], m["end"], m["image"]["sha256"], m["image"]["w"], m["image"]["h"])
            for m in meta["control"]]
    assert ctrl == [(cn, 0.8, 0.0, 0.75, r["sketch_sha"], 64, 64), (cn, 0.6, 0.0, 1.0, r["depth_sha"], 64, 64)]
    # the reference: the image as sent, its model's preset strength; the second one, switched off, was not sent
    assert [(m["model"], m["strength"], m["image"]["sha256"]) for m in meta["reference"]] == [(ipa, 0.6,
                                                                                             r["sketch_sha"])]
    assert r["depth_centre"] > 200 and r["depth_corner"] == 0   # the cube near = white, no surface = black
    assert r["normal"]["facing"] and r["normal"]["faces"] == 3 and r["normal"]["corner"] == [0, 0, 0], r["normal"]
    assert r["normal"]["surface_px"] > 300   # the cube covers about a tenth of the frame
    assert r["lines"]["white"] > 50 and r["lines"]["black"] > 2000 and r["lines"]["corner"] == 0, r["lines"]
    assert r["settings_kept"] == ["BLENDER_EEVEE" if host == "blender" else r["settings_kept"][0], 1920, False, False]
    bad = r["bad"]
    assert bad["no_model"][0] == "CANCELLED" and "control 1: choose a model" in bad["no_model"][1], bad
    assert bad["no_mask"][0] == "CANCELLED" and "region 0: choose a mask image" in bad["no_mask"][1], bad
    assert "region 1 (empty-mask): its mask is empty" in bad["empty_mask"], bad
    assert bad["jobs_added"] == 0
    # the regions: prompts and masks cut to what they cover (the left half, the top quarter), from luminance
    assert [(x["prompt"], x["negative_prompt"], x["x"], x["y"], x["w"], x["h"]) for x in meta["regions"]] == \
        [("a red dragon", "blue", 0, 0, 32, 64), ("a stormy sky", "", 0, 0, 64, 16)]
    assert meta["regions"][0]["mask"] == r["left_sha"]
    assert r["fit_threads"] and "MainThread" not in r["fit_threads"], r["fit_threads"]
    assert set(r["sent"].values()) >= {"DEPTH"} and r["sent"][r["depth_sha"][:40]] == "DEPTH"
    # Use settings: the controls and the region whose mask still exists came back; the deleted mask is named
    assert r["recalled_steer"] == [["CONTROL", "IMAGE", "sketch", cn, 0.8, 0.0, 0.75, "none"],
                                   ["CONTROL", "DEPTH", "", cn, 0.6, 0.0, 1.0, "none"],
                                   ["REFERENCE", "IMAGE", "sketch", ipa, 0.6, 0.0, 1.0, "none"]]
    assert r["recalled_regions"] == [["left-mask", "a red dragon", "blue"]]
    assert "not filled" in r["recall_message"] and "a stormy sky"[:12] in r["recall_message"], r["recall_message"]
    # live: each paint change was noticed through the depsgraph handler and gave a new result
    assert all(n >= 1 for n in r["changes_noticed"]), r["changes_noticed"]
    assert len(set(r["live_results"])) == 3 and None not in r["live_results"]
    assert r["live_image"] == [64, 64] and any("Newest result" in t for t in r["live_drawn"])
    assert r["applied_new_same"] and r["applied_into_same"] and r["undo_restores"]
    assert r["sent_after_stop"] == 0 and r["state_after_stop"] == "off"
    assert [j for j in jobs if j["status"] in ("queued", "running")] == []
    live_jobs = [j for j in jobs if j["request"].get("live")]
    assert len(jobs) - len(live_jobs) == 1   # one Generate: the refused requests never reached the engine
    assert len(live_jobs) >= 3 and {j["request"]["strength"] for j in live_jobs} == {0.5}
    assert r["kept_job"] in [j["job"] for j in live_jobs]
    assert not r["last_error"], r["last_error"]


def test_live_in_the_ui_event_loop(gui_host, addon_zip, engine_server, tmp_path):
    """Issue 21 d3 with Blender's UI running: real paint strokes in the Image Editor (paint.image_paint) are noticed
    through the depsgraph handler and each gives a new live result, all through the add-on's own timer; Stop leaves
    nothing queued or running. Prints the main thread's longest gap while live mode works."""
    from ..helpers import new_user

    c = new_user(engine_server, app="test")
    try:
        out = _run(gui_host, addon_zip, "live_ui.py", timeout=400, user_dir=tmp_path / "u", gui=True,
                   params={"url": engine_server.url, "token": c.token, "model": engine_server.model_name})
        jobs = c.call("job.list", {"limit": 200})["jobs"]
    finally:
        c.close()
    r = out["result"]
    print(f"{gui_host}: live mode, longest main-thread gap {r['stall_ms']} ms while it sends and generates (the same "
          f"loop with live off: {r['stall_baseline_ms']} ms; Blender's own redraws are in both); the add-on's drain: "
          f"longest {r['drain_max_ms']} ms over {r['drain_calls']} calls; {r['sent']} requests for "
          f"{len(r['results'])} results")
    assert r["drain_calls"] > 10
    # Blender 3.4: real strokes. 4.3 from Debian has no brushes (they are assets there, and it ships none): the
    # pixels change through the API and the image is tagged, which is what Blender does when a stroke ends
    assert r["stroke_kind"] == ("paint.image_paint" if gui_host == "blender" else "update_tag")
    assert r["painting"] == "canvas" and r["strokes"] == [["FINISHED"]] * 2 and r["painted"] == [True, True]
    assert all(n >= 1 for n in r["changes"]), r["changes"]   # each stroke noticed, no pixels read to notice it
    assert len(set(r["results"])) == 3 and None not in r["results"]
    assert "Paintbridge Live" in r["live_shown_in"] and "canvas" in r["live_shown_in"]
    assert r["sent_after_stop"] == 0 and r["state_after_stop"] == "off"
    assert [j for j in jobs if j["status"] in ("queued", "running")] == []
    assert not r["last_error"], r["last_error"]


def test_reconnect_while_a_job_runs_in_the_ui_event_loop(gui_host, addon_zip, engine_server, tmp_path):
    """Issue 15 item 2 in Blender with its UI (no -b, the add-on's timer drains): the link to the engine is cut
    while a Generate runs and stays down until the engine has finished the job (its job.result goes to nobody); the
    panel says the connection was lost, the add-on reconnects by itself, the result is shown in the Image Editor,
    and the job ends "completed", not "running"."""
    from ..helpers import new_user
    from .cut_link import CutWhileRunning

    c = new_user(engine_server, app="blender")
    try:
        with CutWhileRunning(engine_server, c) as cut:
            out = _run(gui_host, addon_zip, "reconnect_ui.py", timeout=400, user_dir=tmp_path / "u", gui=True,
                       params={"url": cut.url, "token": c.token, "model": engine_server.model_name, "steps": 20})
        r = out["result"]
        assert cut.error is None, cut.error
        assert cut.finished_while_cut and cut.status == "completed" and cut.job == r["job"], (cut.job, r)
        assert r["background"] is False
        # the panel showed the link down (its status is "disconnected" only until the first retry, at once, then
        # "connecting" while the relay holds the attempt; the job line's "connection lost" can be cleared early
        # by an event of the job handled after the drop, so it is not required here)
        assert any(state in ("disconnected", "connecting") for state, _, _, _ in r["seen"][1:]), r["seen"]
        assert r["state"] == "connected" and r["job_state"] == "completed", r["seen"]
        assert r["result"] == {"size": [64, 48], "shown": True}
        assert r["active_jobs"] == r["active_jobs_later"] == 0
    finally:
        c.close()


def test_undo_redo_of_a_replace_redraws_the_image_editor(gui_host, addon_zip, engine_server, tmp_path):
    """Issue 15 item 6 as a person sees it, in Blender with its UI: after a Refine with "Replace active image",
    Ctrl+Z and then Ctrl+Shift+Z change what the Image Editor draws (read back from screenshots of the area), not
    only the image's data. The source is pure green; the result is not. (Blender 3.4 drew the result after Ctrl+Z,
    with the data green again, until the add-on updated the image once more after the editor's first draw: see
    host.after_undo.)"""
    if gui_host == "blender43":
        pytest.skip("Blender 4.3 here (llvmpipe under Xvfb, in the chroot) saves its screenshots black, so what the "
                    "Image Editor draws cannot be read back")
    out = _run(gui_host, addon_zip, "undo_redraw_ui.py", timeout=400, user_dir=tmp_path / "u", gui=True,
               params={"url": engine_server.url, "token": engine_server.token, "model": engine_server.model_name})
    r = out["result"]
    print({k: r.get(k) for k in ("before", "after_replace", "after_undo", "editor_empty", "shown_again", "after_redo",
                                 "rev_after_undo")})
    assert r["replaced_in_place"] is True
    assert r["data_after_undo_green"] is True
    assert r["green"] == {"before": True, "after_replace": False, "after_undo": True, "after_redo": False}, r
