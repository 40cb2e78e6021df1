"""The client semantics the three plug-ins share (protocol/generate, gallery, jobs, updates, limits): pure
functions and state machines, no engine needed. The same code runs against a real engine in test_session.py."""

from __future__ import annotations

import random
import time

import pytest

from protocol import generate as g
from protocol.gallery import GalleryBrowser, format_date, tooltip
from protocol.jobs import CANCELED, COMPLETED, FAILED, GONE, QUEUED, REFUSED, RUNNING, SENDING, STARTING, JobTable
from protocol.limits import Limits
from protocol.pixels import Pixels
from protocol.updates import (CancelAcknowledged, EngineEvent, ErrorUpdate, ImagesPage, JobAccepted, JobCanceled,
                              JobFailed, JobProgress, JobQueued, JobResult, JobStarted, ResultLayer, StateChanged,
                              Update)

FORM = {"model": "tiny-sd15", "prompt": "a fox", "negative_prompt": "", "steps": 4, "guidance": 5.0, "seed": 7,
        "batch": 1, "lora": "", "lora_weight": 0.8, "strength": 0.5, "feather": 4.0, "width": 100, "height": 60,
        "x": 3, "y": 4, "scale": 2.0, "upscaler": "", "scheduler": "euler"}


# ---- the seed rule ---------------------------------------------------------------------------------------------
def test_random_seed_is_chosen_client_side_below_2_31_and_differs():
    seeds = {g.resolve_seed(-1) for _ in range(50)} | {g.resolve_seed(None) for _ in range(50)}
    assert len(seeds) > 90 and all(0 <= s < 2 ** 31 - 63 for s in seeds)
    assert g.resolve_seed(0) == 0 and g.resolve_seed(123) == 123   # 0 is a seed like any other
    rng = random.Random(5)
    assert g.resolve_seed(-1, rng) == random.Random(5).randrange(2 ** 31 - 64)
    with pytest.raises(g.FieldError) as e:
        g.resolve_seed(2 ** 53 + 1)
    assert e.value.field == "seed"
    with pytest.raises(g.FieldError):
        g.resolve_seed("12")


def test_generate_args_send_the_seed_actually_used():
    args = g.generate_args("txt2img", dict(FORM, seed=-1))
    assert isinstance(args["seed"], int) and 0 <= args["seed"] < 2 ** 31
    assert g.generate_args("txt2img", dict(FORM, seed=0))["seed"] == 0


# ---- modes and the fields they use --------------------------------------------------------------------------------
def test_each_mode_sends_only_its_fields():
    t2i = g.generate_args("txt2img", FORM)
    assert t2i == {"mode": "txt2img", "model": "tiny-sd15", "prompt": "a fox", "negative_prompt": "", "steps": 4,
                   "guidance": 5.0, "seed": 7, "batch": 1, "scheduler": "euler", "width": 104, "height": 64,
                   "x": 3, "y": 4, "loras": []}
    ref = g.generate_args("img2img", FORM)
    assert ref["strength"] == 0.5 and "width" not in ref and "height" not in ref and "feather" not in ref
    inp = g.generate_args("inpaint", FORM)
    assert inp["strength"] == 0.5 and inp["feather"] == 4.0 and "width" not in inp
    out = g.generate_args("outpaint", FORM)
    assert "strength" not in out and out["feather"] == 4.0 and out["model"] == "tiny-sd15" and "width" not in out
    up = g.generate_args("upscale", FORM)
    assert up == {"mode": "upscale", "scale": 2.0}        # no model, prompt or seed; "" upscaler = plain resize
    assert g.generate_args("upscale", dict(FORM, upscaler="tiny-esrgan"))["upscaler"] == "tiny-esrgan"
    assert g.MODES["inpaint"].mask and not g.MODES["txt2img"].image and g.MODES["outpaint"].image
    assert [m.label for m in g.MODES.values()] == ["Generate", "Refine", "Inpaint", "Outpaint", "Upscale"]


def test_upscale_refines_with_the_model_only_when_asked():
    up = g.generate_args("upscale", dict(FORM, refine=True))
    assert up == {"mode": "upscale", "scale": 2.0, "strength": g.REFINE_STRENGTH, "model": "tiny-sd15",
                  "prompt": "a fox", "negative_prompt": "", "steps": 4, "seed": 7, "scheduler": "euler"}
    assert g.generate_args("upscale", dict(FORM, refine=True, refine_strength=0.5))["strength"] == 0.5
    assert g.generate_args("upscale", dict(FORM, refine=False, refine_strength=0.5)) == {"mode": "upscale",
                                                                                         "scale": 2.0}
    for values, fld in [(dict(FORM, refine=True, model=""), "model"),
                        (dict(FORM, refine=True, refine_strength=2.0), "refine_strength")]:
        with pytest.raises(g.FieldError) as e:
            g.generate_args("upscale", values)
        assert e.value.field == fld
    assert g.field_applies("upscale", "refine") and not g.field_applies("upscale", "model")
    assert g.field_applies("upscale", "model", refine=True) and g.field_applies("upscale", "refine_strength", True)
    assert g.field_applies("img2img", "model") and not g.field_applies("img2img", "refine", True)
    assert not g.field_applies("upscale", "strength", True)     # img2img's strength is not the refine strength
    # recalled: a refined upscale turns the checkbox on and its strength back into the refine strength
    fields, _ = g.recalled_fields({"mode": "upscale", "scale": 2.0, "model": "tiny-sd15", "strength": 0.4})
    assert fields["refine"] is True and fields["refine_strength"] == 0.4 and "strength" not in fields
    fields, _ = g.recalled_fields({"mode": "upscale", "scale": 2.0, "strength": 0.3})
    assert fields["refine"] is False and "refine_strength" not in fields


def test_generate_above_the_native_size_asks_for_hires():
    models = [{"name": "tiny-sd15", "native_size": 64}, {"name": "big", "native_size": None}]
    assert g.generate_args("txt2img", dict(FORM, width=128, height=64), models=models)["hires"] is True
    assert "hires" not in g.generate_args("txt2img", dict(FORM, width=64, height=64), models=models)
    assert "hires" not in g.generate_args("txt2img", dict(FORM, width=128, height=32), models=models)  # 64² px
    assert "hires" not in g.generate_args("txt2img", dict(FORM, model="big", width=4096, height=64), models=models)
    assert "hires" not in g.generate_args("txt2img", dict(FORM, width=128, height=64))   # no models.list given


def test_empty_values_are_left_to_the_engine_and_bad_ones_name_their_field():
    args = g.generate_args("img2img", dict(FORM, steps=None, guidance="", scheduler=None))
    assert "steps" not in args and "guidance" not in args and "scheduler" not in args
    for mode, values, fld in [("txt2img", dict(FORM, model=""), "model"),
                              ("warp", FORM, "mode"),
                              ("txt2img", dict(FORM, steps=0), "steps"),
                              ("txt2img", dict(FORM, steps=2.5), "steps"),
                              ("img2img", dict(FORM, strength=1.5), "strength"),
                              ("txt2img", dict(FORM, width=None), "width"),
                              ("txt2img", dict(FORM, lora="nope"), "lora"),
                              ("upscale", dict(FORM, upscaler="nope"), "upscaler")]:
        with pytest.raises(g.FieldError) as e:
            g.generate_args(mode, values, loras=[{"name": "tiny-lora-sd15"}], upscalers=[{"name": "tiny-esrgan"}])
        assert e.value.field == fld, (mode, values)


def test_limits_from_hello_bound_steps_batch_and_pixels():
    lim = Limits.from_wire({"max_steps": 10, "max_batch": 2, "max_pixels": 64 * 64, "frame_limit": "x",
                            "unknown": 1})
    assert (lim.max_steps, lim.max_batch, lim.max_pixels) == (10, 2, 4096)
    assert lim.frame_limit == Limits().frame_limit and Limits.from_wire(None) == Limits()
    with pytest.raises(g.FieldError, match="at most 10") as e:
        g.generate_args("txt2img", dict(FORM, steps=11), limits=lim)
    assert e.value.field == "steps"
    with pytest.raises(g.FieldError) as e:
        g.generate_args("txt2img", dict(FORM, batch=3), limits=lim)
    assert e.value.field == "batch"
    with pytest.raises(g.FieldError, match="MP") as e:
        g.generate_args("txt2img", dict(FORM, width=72, height=64), limits=lim)
    assert g.generate_args("txt2img", dict(FORM, width=64, height=64), limits=lim)["width"] == 64


def test_lora_picker_value_becomes_loras():
    args = g.generate_args("img2img", dict(FORM, lora="tiny-lora-sd15", lora_weight=0.6),
                           loras=[{"name": "tiny-lora-sd15"}], source={"app": "blender", "document": "d"})
    assert args["loras"] == [{"model": "tiny-lora-sd15", "weight": 0.6}]
    assert args["source"] == {"app": "blender", "document": "d"}


# ---- recall -> field values ---------------------------------------------------------------------------------------
def test_recalled_values_become_field_values_with_notes():
    values = {"mode": "img2img", "model": "m", "prompt": "p", "seed": 5, "steps": 3, "strength": 0.4,
              "loras": [{"model": "l", "weight": 0.5}], "scheduler": "ddim"}
    out, notes = g.recalled_fields(values)
    assert out == {"mode": "img2img", "model": "m", "prompt": "p", "seed": 5, "steps": 3, "strength": 0.4,
                   "lora": "l", "lora_weight": 0.5, "scheduler": "ddim", "vae": ""} and notes == []
    out, notes = g.recalled_fields({"mode": "txt2img", "seed": 2 ** 40, "prompt": "p"})
    assert "seed" not in out and out["lora"] == "" and "seed" in notes[0]
    out, notes = g.recalled_fields({"mode": "graph", "prompt": "p"})
    assert "mode" not in out and notes
    # a workflow/graph image: no generate values, the summary's basics
    out, notes = g.recalled_fields({}, {"prompt": "q", "seed": 9, "steps": 2, "app": "krita"})
    assert out == {"prompt": "q", "seed": 9, "steps": 2} and "workflow" in notes[0]
    # recalled values remake the request: the builder sends what recall gave back
    again = g.generate_args("img2img", {**FORM, **g.recalled_fields(values)[0]})
    assert again["seed"] == 5 and again["loras"] == [{"model": "l", "weight": 0.5}] and again["scheduler"] == "ddim"


# ---- error -> field ----------------------------------------------------------------------------------------------
def test_error_details_route_to_a_field():
    assert g.error_field({"param": "steps"}) == "steps"
    assert g.error_field({"fields": [{"field": "width", "problem": "x"}]}) == "width"
    assert g.error_field({"fields": [{"field": "loras.0.weight", "problem": "x"}]}) == "lora"
    assert g.error_field({"fields": [{"field": "image.sha256", "problem": "x"}]}) == ""
    assert g.error_field({"node": "n", "field": "layer"}) == ""
    assert g.error_field(None) == "" and g.error_field("x") == ""


# ---- typed updates ---------------------------------------------------------------------------------------------
def test_typed_updates_keep_kind_and_data():
    layer = ResultLayer("a", Pixels(b"\0" * 4, 1, 1))
    up = JobResult("j1", {"t": 1}, [layer])
    assert up.kind == "result" and up.data == {"job": "j1", "tag": {"t": 1}, "layers": [layer], "image": None}
    assert up.data["layers"][0] is layer          # shallow: hosts get the Pixels themselves
    assert Update("images", {"total": 1}).data == {"total": 1} and Update("x").kind == "x"
    assert EngineEvent("models.download.progress", {"done": 1}).data == {"name": "models.download.progress",
                                                                        "data": {"done": 1}}
    assert ErrorUpdate("bad", field="steps").data["field"] == "steps"


# ---- the job table ------------------------------------------------------------------------------------------------
def test_job_table_follows_a_job_from_sending_to_done():
    t = JobTable()
    row = t.add("r1", "tag")
    assert row.state == SENDING and row.describe() == "sending…" and row.active
    t.apply(JobAccepted("r1", "j1", "tag", 42))
    assert (row.job, row.seed, row.state) == ("j1", 42, QUEUED)
    t.apply(JobQueued("j1", "tag", 2))
    assert row.describe() == "queued (2 ahead)"
    t.apply(JobStarted("j1", "tag"))
    assert row.state == STARTING and "loading the model" in row.describe()
    prev = Pixels(b"\0" * 4, 1, 1)
    t.apply(JobProgress("j1", "tag", 3, 20, prev))
    assert (row.state, row.step, row.total, row.preview) == (RUNNING, 3, 20, prev)
    assert row.describe() == "step 3 of 20" and row.fraction == 0.15
    t.apply(JobQueued("j1", "tag"))                # a late/resync "queued" never moves a running job back
    assert row.state == RUNNING
    assert t.apply(JobResult("j1", "open", ["G"], image="img1")) is None   # open_image of its gallery entry
    assert row.state == RUNNING
    t.apply(JobResult("j1", "tag", ["L"]))
    assert row.state == COMPLETED and row.layers == ["L"] and not row.active and "seed 42" in row.describe()
    assert t.apply(JobProgress("other", None, 1, 2)) is None and t.active() == []
    # a job refining in tiles: which tile, and the fraction of the whole job
    tiled = t.add("r9", "up")
    t.apply(JobAccepted("r9", "j9", "up", 5))
    t.apply(JobProgress("j9", "up", 1, 4, None, 3, 8))
    assert (tiled.tile, tiled.tiles) == (3, 8) and tiled.describe() == "tile 3 of 8, step 1 of 4"
    assert tiled.fraction == (2 + 0.25) / 8


def test_job_table_failures_cancel_and_lost_connection():
    t = JobTable()
    a, b, c, d = (t.add(f"r{i}") for i in range(4))
    for i in range(3):
        t.apply(JobAccepted(f"r{i}", f"j{i}"))
    t.apply(ErrorUpdate("model missing", code="bad_request", request="r3"))
    assert d.state == REFUSED and d.error == "model missing"
    a.cancel_requested = True
    t.apply(CancelAcknowledged("j0", None, "canceling"))
    assert a.cancel_status == "canceling" and a.describe() == "canceling…" and a.active
    t.apply(StateChanged("disconnected", "connection lost", lost=True, retry_in=0.5))
    assert a.connection_lost and b.connection_lost and "connection lost" in b.describe()
    t.apply(StateChanged("connecting"))
    assert b.connection_lost
    t.apply(JobCanceled("j0"))
    t.apply(JobFailed("j1", None, "interrupted", "the engine stopped"))
    t.apply(JobFailed("j2", None, "not_found", "gone"))
    assert (a.state, b.state, c.state) == (CANCELED, FAILED, GONE)
    assert not (a.connection_lost or b.connection_lost or c.connection_lost)
    assert b.describe() == "failed: the engine stopped" and t.active() == []
    for i in range(30):
        t.add(f"x{i}")
    t.forget_finished(keep=0)
    assert list(t.rows) == [f"x{i}" for i in range(30)]


# ---- the gallery browser ------------------------------------------------------------------------------------------
class Recorder:
    """Stands in for the Session's request side only: it records what the browser asks for."""

    def __init__(self):
        self.asked = []

    def list_images(self, **kw):
        self.asked.append(kw)

    def call(self, op, args, tag=None):
        self.asked.append({"op": op, "args": args, "tag": tag})


def summary(i, **kw):
    return {"id": f"{i:016x}", "prompt": f"image {i}", "seed": i, "created": 1_700_000_000 + i, **kw}


def test_gallery_pages_filters_and_the_one_has_more_rule():
    rec = Recorder()
    gb = GalleryBrowser(rec, page_size=2, thumb_size=32)
    gb.reload(query=" fox ", starred_only=True, board="b1")
    assert rec.asked[-1] == {"thumb_size": 32, "limit": 2, "tag": ("gallery", 1), "q": "fox", "starred": True,
                             "board": "b1"}
    assert gb.status() == "Loading…"
    assert gb.accept(ImagesPage([summary(1)], 5, "c0", ("gallery", 0))) is None      # an older search's page
    assert gb.accept(ImagesPage([summary(1), summary(2)], 3, "c1", ("gallery", 1))) == [summary(1), summary(2)]
    assert gb.has_more and gb.load_more() and rec.asked[-1]["cursor"] == "c1"
    assert not gb.load_more()                                                          # one page at a time
    gb.accept({"images": [summary(3)], "total": 3, "next_cursor": "c2", "tag": ("gallery", 1)})
    assert not gb.has_more and gb.status() == "3 of 3 images"   # a cursor after the last page is not "more"
    gb.reload(starred_only=False, board=None, document="doc.kra")
    assert rec.asked[-1] == {"thumb_size": 32, "limit": 2, "tag": ("gallery", 2), "q": "fox", "document": "doc.kra"}
    gb.accept(ImagesPage([], 0, "c9", ("gallery", 2)))
    assert not gb.has_more and gb.status() == "No images match"
    assert gb.failed({"message": "boom", "tag": ("gallery", 2)}) and gb.status() == "boom" and not gb.loading
    with pytest.raises(TypeError):
        gb.reload(colour="red")


def test_gallery_star_round_trip():
    rec = Recorder()
    gb = GalleryBrowser(rec)
    gb.reload()
    gb.accept(ImagesPage([summary(1)], 1, None, ("gallery", 1)))
    gb.star(summary(1)["id"])
    assert rec.asked[-1] == {"op": "images.star", "args": {"image": summary(1)["id"], "starred": True},
                             "tag": ("star", summary(1)["id"])}
    assert gb.replied({"op": "images.star", "result": {"starred": True}, "tag": rec.asked[-1]["tag"]})
    assert gb.find(summary(1)["id"])["starred"] is True
    assert not gb.replied({"op": "x", "result": {}, "tag": "other"})


def test_gallery_dates_are_formatted_not_raw_floats():
    now = time.mktime((2026, 12, 3, 15, 0, 0, 0, 0, -1))
    assert format_date(now - 3600, now) == "14:00"
    assert format_date(time.mktime((2026, 1, 5, 9, 30, 0, 0, 0, -1)), now) == "5 Jan 09:30"
    assert format_date(time.mktime((2024, 7, 1, 9, 30, 0, 0, 0, -1)), now) == "1 Jul 2024"
    assert format_date(None) == "" and format_date("x") == ""
    assert "created: " in tooltip(summary(1)) and "1700000001" not in tooltip(summary(1))


def test_pad_adds_transparent_margins_and_keeps_the_old_pixels_in_place():
    from protocol.pixels import pad, paste
    px = Pixels(bytes(range(2 * 2 * 4)), 2, 2, x=5, y=6)
    out = pad(px, 1, 2, 3, 0)
    assert (out.w, out.h, out.x, out.y) == (6, 4, 4, 4)
    assert paste(out, px).data == out.data                          # the old pixels sit where they were
    assert sum(out.data) == sum(px.data) and out.data[:6 * 4 * 2] == bytes(6 * 4 * 2)
    assert pad(px, 0, 0, 0, 0) is px
    with pytest.raises(ValueError):
        pad(px, -1, 0, 0, 0)


# ---- live mode (protocol.live) ---------------------------------------------------------------------------------
def test_live_requests_wait_for_quiet_and_a_refusal_pauses(tmp_path):
    """LiveController on a Session with no engine: when it sends (debounce, the longest wait during a long
    stroke, never while a request is still on its way), and that a refused request pauses instead of retrying."""
    from protocol.live import OFF, PAUSED, LiveController
    from protocol.session import Session

    s = Session("krita", "test", str(tmp_path), url="ws://127.0.0.1:9/v1/ws", use_keyring=False)
    now = [100.0]
    live = LiveController(s, lambda: ({"mode": "img2img", "model": "m"}, None, None), debounce_s=0.3,
                          max_wait_s=1.0, clock=lambda: now[0])

    def settle():   # the Session's worker answers "not connected"
        end = time.monotonic() + 10
        while live.busy:
            assert time.monotonic() < end
            for up in s.poll():
                live.handle(up)
            time.sleep(0.01)

    try:
        live.changed()
        assert not live.tick() and live.state == OFF   # off: changes are ignored
        live.start()
        assert live.tick() and live.sent == 1          # the canvas as it is, at once
        live.changed()
        now[0] += 5
        assert not live.tick()                         # the first is still on its way
        settle()
        assert live.state == PAUSED and "not connected" in live.describe()
        live.changed()
        now[0] += 5
        assert not live.tick() and live.sent == 1      # paused: no retry loop
        live.settings_changed()                        # the person changed something: resume (the canvas
        assert live.tick() and live.sent == 2          # has been waiting longer than max_wait_s: at once)
        settle()
        live.settings_changed()
        now[0] += 0.1
        assert not live.tick()                         # not quiet for 0.3 s yet
        now[0] += 0.3
        assert live.tick() and live.sent == 3
        settle()
        live.settings_changed()
        for _ in range(9):                             # a long stroke: a change every 0.1 s
            now[0] += 0.1
            live.changed()
            assert not live.tick()
        now[0] += 0.15
        live.changed()
        assert live.tick() and live.sent == 4          # sent after max_wait_s although it goes on
        live.stop()
        assert live.state == OFF
    finally:
        s.close()


def test_one_row_per_job_when_a_live_request_is_answered_with_an_earlier_job():
    t = JobTable()
    t.add("r1")
    t.apply(JobAccepted("r1", "j1"))
    t.add("r2")
    t.apply(JobAccepted("r2", "j1"))   # "unchanged": the engine answered r2 with r1's job
    assert list(t.rows) == ["r2"] and t.by_job("j1").request == "r2"
    t.apply(JobResult("j1", layers=[]))
    assert t.rows["r2"].state == COMPLETED


def test_live_requests_stay_out_of_the_generate_panels_job_line_and_cancel():
    """Live mode's requests have their own panel and Stop: the jobs a Generate panel shows (active, latest), its
    busy state and its Cancel (Session.cancel_all) are the person's own requests only, unless asked for."""
    t = JobTable()
    t.add("gen", {"mode": "txt2img"})
    t.apply(JobAccepted("gen", "j1"))
    t.add("live1", {"live": True})
    t.apply(JobAccepted("live1", "j2"))
    assert [r.request for r in t.active()] == ["gen"] and t.latest().request == "gen"
    assert [r.request for r in t.active(live=True)] == ["gen", "live1"] and t.latest(live=True).request == "live1"
    t.apply(JobResult("j1", layers=[]))
    assert t.active() == [] and t.latest().state == COMPLETED and [r.request for r in t.active(live=True)] == ["live1"]
