"""The generate form's sampler, schedule, clip-skip and VAE pickers, defaults that follow the model, and model
downloads an admin starts from a plug-in (issue 16, deliverable 5): the semantics in protocol/ once, pure first,
then through a real engine (nodes.list, models.list, generate, images.get, models.download)."""

from __future__ import annotations

import pytest

from protocol import forms
from protocol import generate as g
from protocol.downloads import DownloadTable
from protocol.session import Session
from protocol.updates import DownloadProgress

from .helpers import FileSite, add_user, embedding_file, installed_vae, open_session, user_token, wait_for

SAMPLERS = [{"id": "euler", "label": "Euler", "schedules": ["default", "karras", "trailing"]},
            {"id": "ddim", "label": "DDIM", "schedules": ["default", "trailing"]},
            {"id": "dpmpp_2m_karras", "label": "DPM++ 2M Karras", "schedules": ["karras"]}]
MODELS = [{"name": "sd", "type": "main", "base": "sd1", "native_size": 64},
          {"name": "xl", "type": "main", "base": "sdxl", "native_size": None},
          {"name": "two", "type": "main", "base": "sd2"}]
VAES = [{"name": "v1", "type": "vae", "base": "sd1"}, {"name": "vxl", "type": "vae", "base": "sdxl"}]
LORAS = [{"name": "l1", "type": "lora", "base": "sd1"}]
FORM = {"model": "sd", "prompt": "a fox", "negative_prompt": "", "steps": 4, "guidance": 5.0, "seed": 7, "batch": 1,
        "width": 64, "height": 64, "scheduler": "ddim", "schedule": "trailing", "clip_skip": 2, "vae": "v1"}


# ---- pure -------------------------------------------------------------------------------------------------------
def test_pickers_offer_what_the_engine_lists():
    assert [(c.value, c.label) for c in g.scheduler_choices(SAMPLERS)] == \
        [("euler", "Euler"), ("ddim", "DDIM"), ("dpmpp_2m_karras", "DPM++ 2M Karras")]
    assert g.scheduler_choices([]) == []          # nothing until the engine said
    assert [c.value for c in g.schedule_choices(SAMPLERS, "ddim")] == ["default", "trailing"]
    assert [c.value for c in g.schedule_choices(SAMPLERS, "DPM++ 2M Karras")] == ["karras"]   # by label too
    assert g.fit_schedule(SAMPLERS, "ddim", "karras") == "default"     # karras does not apply to DDIM
    assert g.fit_schedule(SAMPLERS, "euler", "trailing") == "trailing"
    assert g.fit_schedule(SAMPLERS, "dpmpp_2m_karras", "default") == "karras"
    assert [c.value for c in g.clip_skip_choices()] == [str(n) for n in range(1, 13)]
    # VAEs that fit the model's base ("" = the model's own first); an sd1 VAE serves SD2; unknown model: all
    assert [c.value for c in g.vae_choices(VAES, MODELS, "sd")] == ["", "v1"]
    assert [c.value for c in g.vae_choices(VAES, MODELS, "xl")] == ["", "vxl"]
    assert [v["name"] for v in g.vaes_for(VAES, MODELS, "two")] == ["v1"]
    assert [v["name"] for v in g.vaes_for(VAES, MODELS, "gone")] == ["v1", "vxl"]


def test_generate_args_send_the_pickers_and_refuse_what_does_not_fit():
    kw = {"samplers": SAMPLERS, "vaes": VAES, "models": MODELS}
    args = g.generate_args("txt2img", FORM, **kw)
    assert (args["scheduler"], args["schedule"], args["clip_skip"], args["vae"]) == ("ddim", "trailing", 2, "v1")
    # a label (a recalled or typed value) goes out as the id; a text picker's clip skip as a number
    assert g.generate_args("img2img", dict(FORM, scheduler="DDIM", clip_skip="3"), **kw)["scheduler"] == "ddim"
    assert g.generate_args("img2img", dict(FORM, clip_skip="3"), **kw)["clip_skip"] == 3
    assert "vae" not in g.generate_args("txt2img", dict(FORM, vae=""), **kw)     # the model's own
    assert "scheduler" not in g.generate_args("upscale", FORM, **kw)
    for bad, field, words in ((dict(FORM, scheduler="plms"), "scheduler", "no sampler 'plms'"),
                              (dict(FORM, schedule="karras"), "schedule", "karras schedule does not apply to DDIM"),
                              (dict(FORM, clip_skip=0), "clip_skip", "at least 1"),
                              (dict(FORM, clip_skip=13), "clip_skip", "at most 12"),
                              (dict(FORM, vae="nope"), "vae", "no VAE 'nope'"),
                              (dict(FORM, vae="vxl"), "vae", "not for sd1 models")):
        with pytest.raises(g.FieldError) as e:
            g.generate_args("txt2img", bad, **kw)
        assert e.value.field == field and words in e.value.message, (bad, e.value.message)
    # an engine that lists nothing: the values go as typed and the engine checks them
    assert g.generate_args("txt2img", dict(FORM, scheduler="DPM++ 2M Karras"))["scheduler"] == "DPM++ 2M Karras"


def test_defaults_follow_the_chosen_model():
    assert g.native_size(MODELS[0]) == 64 and g.native_size(MODELS[1]) == 1024 and g.native_size({}) == 512
    assert g.follow_model(FORM, "sd", models=MODELS, vaes=VAES, loras=LORAS) == {"width": 64, "height": 64}
    # to SDXL: its native size, and the sd1 VAE and LoRA that no longer fit go back to none
    assert g.follow_model(dict(FORM, lora="l1"), "xl", models=MODELS, vaes=VAES, loras=LORAS) == \
        {"width": 1024, "height": 1024, "vae": "", "lora": ""}
    assert g.generation_size(1000, 500, 512, 16_000_000) == (728, 360)


def test_recall_restores_the_pickers_model_first():
    params = {"mode": "txt2img", "model": "sd", "prompt": "p", "seed": 3, "width": 64, "height": 48,
              "scheduler": "ddim", "schedule": "trailing", "clip_skip": 2, "vae": "v1", "loras": []}
    fields, notes = g.recalled_fields(forms.recalled(params))
    assert list(fields)[:2] == ["mode", "model"] and not notes
    assert (fields["scheduler"], fields["schedule"], fields["clip_skip"], fields["vae"]) == \
        ("ddim", "trailing", 2, "v1")
    # made with the model's own VAE (vae null): the picker goes back to it
    fields, _ = g.recalled_fields(forms.recalled(dict(params, vae=None)))
    assert fields["vae"] == ""


def test_download_table_follows_a_download_from_asking_to_done():
    t = DownloadTable()
    t.add("d1", "http://site/x.safetensors")
    assert t.rows["d1"].describe() == "asking the engine to download http://site/x.safetensors…"
    # events can arrive before the reply: kept under the download id, merged into the request's row on the reply
    t.apply(DownloadProgress("abc", "downloading", "http://site/x.safetensors", "x", 1_000_000, 4_000_000))
    t.apply(DownloadProgress("abc", "started", "http://site/x.safetensors", "x", 0, 4_000_000, request="d1"))
    assert list(t.rows) == ["d1"] and t.rows["d1"].state == "downloading" and t.rows["d1"].mine
    assert t.rows["d1"].describe() == "x: 1.0 of 4.0 MB (25%)" and t.rows["d1"].fraction == 0.25
    t.apply(DownloadProgress("abc", "done", "", "x", 4_000_000, 4_000_000, model={"name": "x", "type": "main"}))
    assert t.rows["d1"].describe() == "x: done, added as model 'x'" and not t.active()
    # a refused request: a clear error, no row left active
    t.add("d2", "nonsense")
    t.apply(DownloadProgress("r9", "resolving", "nonsense"))   # the engine's first event, then the refusal
    t.apply(DownloadProgress(None, "refused", "nonsense", error={"code": "bad_request", "message": "not a URL"},
                             request="d2"))
    assert t.rows["d2"].describe() == "could not download nonsense: not a URL"
    assert list(t.rows) == ["d1", "d2"]   # no row left saying "starting…" for ever
    # a failure after it started says why; another admin's download has a row of its own
    t.apply(DownloadProgress("zz", "failed", "u", "y", 10, None,
                             error={"code": "bad_request", "message": "sha256 differs"}))
    assert t.rows["zz"].describe() == "y: failed: sha256 differs" and not t.rows["zz"].mine
    assert t.latest(mine_only=True).key == "d2"


# ---- through a real engine --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pickers_from_the_engine_reach_the_job_and_come_back_on_recall(engine_server, tmp_path):
    with installed_vae(engine_server, tmp_path) as vae:
        s = open_session(engine_server, tmp_path)
        try:
            got = wait_for(s, "models", pred=lambda d: any(v["name"] == vae for v in d["vaes"]))
            assert {x["id"]: x["schedules"] for x in got["samplers"]}["dpmpp_2m_karras"] == ["karras"]
            assert s.samplers == got["samplers"] and [v["name"] for v in s.vaes] == [vae]
            assert [c.value for c in g.vae_choices(s.vaes, s.models, "tiny-sd15")] == ["", vae]
            assert [c.value for c in g.vae_choices(s.vaes, s.models, "tiny-sdxl")] == [""]
            size = g.follow_model({}, "tiny-sd15", models=s.models)
            assert size == {"width": 64, "height": 64}      # the demo model's native size, from models.list
            values = {"model": "tiny-sd15", "prompt": "a fox", "steps": 2, "seed": 5, "scheduler": "DPM++ 2M",
                      "schedule": "karras", "clip_skip": 2, "vae": vae, **size}
            params = g.generate_args("txt2img", values, samplers=s.samplers, vaes=s.vaes, models=s.models)
            rid = s.generate(params, tag="pick")
            job = wait_for(s, "job", pred=lambda d: d["request"] == rid)["job"]
            wait_for(s, "result", pred=lambda d: d["job"] == job)
            with engine_server.client() as c:
                image = c.call("job.get", {"job": job})["layers"][0]["image_id"]
                meta = c.call("images.get", {"image": image})
            assert {k: meta["params"][k] for k in ("scheduler", "schedule", "clip_skip", "vae")} == \
                {"scheduler": "dpmpp_2m", "schedule": "karras", "clip_skip": 2, "vae": vae}
            s.recall(image, tag="r")
            fields, notes = g.recalled_fields(wait_for(s, "recalled")["values"])
            assert (fields["scheduler"], fields["schedule"], fields["clip_skip"], fields["vae"]) == \
                ("dpmpp_2m", "karras", 2, vae) and not notes
        finally:
            s.close()


@pytest.mark.slow
def test_an_admin_download_shows_progress_and_a_user_has_no_control(engine_server, tmp_path):
    site = FileSite({"fox-emb.safetensors": embedding_file()}, slow=0.06)
    s = open_session(engine_server, tmp_path)   # the engine's admin token
    name = f"fox-emb-{tmp_path.name[-6:]}"
    try:
        assert s.is_admin
        rid = s.download_model(site.url("fox-emb.safetensors"), name=name)
        states = []
        while True:
            wait_for(s, "download")
            row = s.downloads.rows[rid]
            states.append((row.state, row.bytes))
            if not row.active:
                break
        assert row.state == "done", row
        assert any(st == "downloading" and 0 < n < len(site.files["fox-emb.safetensors"]) for st, n in states), states
        assert row.describe() == f"{name}: done, added as model {name!r}"
        # a clear error for a source that is not there, and nothing registered
        bad = s.download_model(site.url("missing.safetensors"), name="nothing")
        wait_for(s, "download", pred=lambda d: d["request"] == bad)
        assert s.downloads.rows[bad].state == "refused" and "404" in s.downloads.rows[bad].describe()
        with engine_server.client() as c:
            names = [m["name"] for m in c.call("models.list", {})["models"]]
        assert name in names and "nothing" not in names
        # a user who is not an admin: no control (is_admin False), and the engine refuses anyway
        user, _ = add_user(engine_server)
        u = Session("blender", "test", str(tmp_path / "u"), url=engine_server.url, use_keyring=False)
        u.connect(token=user_token(engine_server, user))
        wait_for(u, "state", pred=lambda d: d["state"] == "connected")
        assert not u.is_admin and u.user["name"] == user
        refused = u.download_model(site.url("fox-emb.safetensors"), name="not-allowed")
        wait_for(u, "download", pred=lambda d: d["request"] == refused)
        assert u.downloads.rows[refused].error["code"] == "forbidden"
        u.close()
    finally:
        with engine_server.client() as c:
            if name in [m["name"] for m in c.call("models.list", {})["models"]]:
                c.call("models.remove", {"model": name})
        s.close()
        site.close()
