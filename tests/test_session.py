"""The plug-ins' shared Session and forms against a real engine: generate, gallery pages with thumbnails,
recall, opening a gallery image, and workflow forms turned into runs — what all three hosts build on."""

from __future__ import annotations

import time

import pytest

from protocol import forms
from protocol.client import Client
from protocol.pixels import Pixels, swap_red_blue
from protocol.session import Session

from .helpers import GRAPH, PARAMS, RESIZE, app_client, open_session, updates_until, wait_error, wait_for
from .proxy import TcpProxy


@pytest.fixture(scope="module")
def sessions(engine_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sessions")
    krita = open_session(engine_server, tmp, "krita", "bgra")
    blender = open_session(engine_server, tmp, "blender")
    yield krita, blender
    krita.close()
    blender.close()


@pytest.fixture(scope="module")
def made(sessions):
    """One image generated from the Krita-like session (BGRA host order)."""
    krita, _ = sessions
    doc = f"session-test-{time.time_ns()}.kra"
    krita.generate({"model": "tiny-sd15", "prompt": "a lighthouse at dusk", "width": 64, "height": 64,
                    "steps": 2, "seed": 4242, "guidance": 5.0, "source": {"app": "krita", "document": doc}},
                   tag="gen")
    job = wait_for(krita, "job")["job"]
    res = wait_for(krita, "result", pred=lambda d: d["job"] == job)
    assert res["tag"] == "gen" and len(res["layers"]) == 1
    return doc, job, res["layers"][0]


def test_gallery_page_lists_the_image_from_another_app_with_thumbnails(sessions, made):
    krita, blender = sessions
    doc, job, layer = made
    blender.list_images(thumb_size=32, limit=5, document=doc, tag="page")
    page = wait_for(blender, "images")
    assert page["tag"] == "page" and page["total"] == 1 and len(page["images"]) == 1
    img = page["images"][0]
    assert img["job"] == job and img["app"] == "krita" and img["seed"] == 4242
    th = img["thumbnail"]
    assert isinstance(th, Pixels) and th.format == "rgba8" and max(th.w, th.h) == 32
    # the Krita-like session gets the same thumbnail in its own (BGRA) order
    krita.list_images(thumb_size=32, limit=5, document=doc)
    th_k = wait_for(krita, "images")["images"][0]["thumbnail"]
    assert swap_red_blue(th_k.data) == th.data
    # filters narrow: nothing of this document was made from Blender
    blender.list_images(limit=5, document=doc, app="blender")
    assert wait_for(blender, "images")["total"] == 0


def test_recall_refills_a_form_and_open_image_returns_the_pixels(sessions, made):
    krita, blender = sessions
    doc, job, layer = made
    blender.list_images(limit=1, document=doc)
    image_id = wait_for(blender, "images")["images"][0]["id"]
    blender.recall(image_id, tag="form")
    rec = wait_for(blender, "recalled")
    assert rec["tag"] == "form" and rec["image"] == image_id
    assert rec["values"] == {"mode": "txt2img", "model": "tiny-sd15", "prompt": "a lighthouse at dusk",
                             "negative_prompt": "", "seed": 4242, "steps": 2, "guidance": 5.0, "width": 64,
                             "height": 64, "strength": rec["params"]["strength"],
                             "scheduler": rec["params"]["scheduler"], "schedule": "default", "clip_skip": 1,
                             "batch": 1}
    # opening it from Blender gives the very pixels Krita received (Krita's copy is BGRA)
    blender.open_image(image_id, tag="open")
    res = wait_for(blender, "result", pred=lambda d: d.get("image") == image_id)
    px = res["layers"][0].pixels
    assert res["tag"] == "open" and res["job"] == job
    assert (px.w, px.h) == (64, 64) and px.data == swap_red_blue(layer.pixels.data)
    # a generate with the recalled values remakes it exactly
    blender.generate(dict(rec["values"]), tag="again")
    job2 = wait_for(blender, "job")["job"]
    again = wait_for(blender, "result", pred=lambda d: d["job"] == job2)["layers"][0].pixels
    assert again.data == px.data


def test_star_through_call_and_reply(sessions, made):
    _, blender = sessions
    doc, _, _ = made
    blender.list_images(limit=1, document=doc)
    image_id = wait_for(blender, "images")["images"][0]["id"]
    blender.call("images.star", {"image": image_id, "starred": True}, tag="star")
    reply = wait_for(blender, "reply")
    assert reply == {"op": "images.star", "result": {"starred": True}, "tag": "star"}
    blender.list_images(limit=5, document=doc, starred=True)
    assert [i["id"] for i in wait_for(blender, "images")["images"]] == [image_id]
    # decoded thumbnails must fit in one reply frame: a page too big for that is refused up front
    blender.call("images.list", {"thumbnails": "rgba8", "thumb_size": 256, "limit": 500})
    err = wait_error(blender)
    assert err and err["code"] == "bad_request" and "frame" in err["message"]


def test_workflow_form_from_schema_and_run(sessions, engine_server):
    _, blender = sessions
    c = app_client(engine_server, "test")
    c.call("workflows.save", {"name": "SessionFox", "graph": GRAPH, "params": PARAMS})
    blender.refresh_workflows()
    wf = next(w for w in wait_for(blender, "workflows")["workflows"] if w["name"] == "SessionFox")
    form = {f.name: f for f in forms.fields(wf)}
    assert form["prompt"].widget == forms.TEXTAREA and form["prompt"].default == "a red fox"
    assert form["scheduler"].widget == forms.CHOICE and "ddim" in form["scheduler"].choices
    assert form["steps"].widget == forms.INT and (form["steps"].min, form["steps"].max) == (1, 8)
    assert form["cfg"].widget == forms.FLOAT and form["cfg"].label == "Guidance" and form["cfg"].step == 0.5
    # raw text from entries, as GIMP gives it; mistakes are reported per field before anything is sent
    values, errors = forms.collect(list(form.values()), {"prompt": "a blue fox", "seed": "12", "steps": "9",
                                                         "scheduler": "plms", "cfg": "x"})
    assert set(errors) == {"steps", "scheduler", "cfg"} and "at most 8" in errors["steps"]
    assert values == {"prompt": "a blue fox", "seed": 12}
    values, errors = forms.collect(list(form.values()), {"prompt": "a blue fox", "seed": 12, "steps": 2,
                                                         "scheduler": "ddim", "cfg": 4.5})
    assert errors == {}
    blender.run_workflow("SessionFox", values, tag="wf")
    job = wait_for(blender, "job")["job"]
    res = wait_for(blender, "result", pred=lambda d: d["job"] == job)
    assert res["tag"] == "wf" and (res["layers"][0].pixels.w, res["layers"][0].pixels.h) == (64, 64)
    assert c.call("job.get", {"job": job})["request"]["values"]["cfg"] == 4.5
    # recalling the image a workflow made names the workflow and its values, for the host's workflow form
    blender.recall(c.call("job.get", {"job": job})["layers"][0]["image_id"], tag="wf-recall")
    rec = wait_for(blender, "recalled")
    assert rec["workflow"] == ("SessionFox", values) and rec["values"] == {} and rec["params"] is None
    # values the engine refuses (a host that skipped forms.collect) come back naming the parameter, so the
    # host can show the message beside that field
    blender.run_workflow("SessionFox", {**values, "steps": 99}, tag={"workflow": "SessionFox"})
    err = wait_error(blender)
    assert err["code"] == "bad_request" and err["details"]["param"] == "steps"
    assert err["tag"] == {"workflow": "SessionFox"} and "steps" in err["message"]
    # an error from a tagged call carries the tag
    blender.recall("0123456789abcdef", tag="missing")
    err = wait_error(blender)
    assert err and err["code"] == "not_found" and err["tag"] == "missing"
    c.close()


def test_workflow_image_parameter_is_uploaded_from_host_pixels(sessions, engine_server):
    krita, _ = sessions
    c = app_client(engine_server, "test")
    c.call("workflows.save", {"name": "SessionShrink", "graph": RESIZE,
                              "params": [{"name": "source", "type": "image", "node": "i", "field": "layer"}]})
    krita.refresh_workflows()
    wf = next(w for w in wait_for(krita, "workflows")["workflows"] if w["name"] == "SessionShrink")
    form = forms.fields(wf)
    assert [f.widget for f in form] == [forms.LAYER] and form[0].required
    assert forms.collect(form, {})[1] == {"source": "Source: choose a layer"}
    # a BGRA host layer: blue everywhere in host order is red on the wire, and comes back blue in host order
    bgra = Pixels(bytes([255, 0, 0, 255]) * (64 * 32), 64, 32, "rgba8")
    values, errors = forms.collect(form, {"source": bgra})
    assert errors == {}
    krita.run_workflow("SessionShrink", values)
    job = wait_for(krita, "job")["job"]
    out = wait_for(krita, "result", pred=lambda d: d["job"] == job)["layers"][0].pixels
    assert (out.w, out.h) == (32, 16) and out.data == bytes([255, 0, 0, 255]) * (32 * 16)
    sent = c.call("job.get", {"job": job})["request"]["values"]["source"]
    assert c.download(sent["sha256"])[:4] == bytes([0, 0, 255, 255])
    c.close()


def test_forms_coercion_rules():
    f = forms.fields({"params": [
        {"name": "n", "type": "int", "min": 0, "max": 4, "default": 1},
        {"name": "on", "type": "bool", "default": False},
        {"name": "label_me", "type": "str", "default": None, "choices": None}]})
    assert [x.label for x in f] == ["N", "On", "Label me"] and f[2].required and f[2].widget == forms.TEXT
    assert forms.collect(f, {"n": "", "on": "true", "label_me": "hi"}) == ({"on": True, "label_me": "hi"}, {})
    values, errors = forms.collect(f, {"n": 2.5, "on": False})
    assert set(errors) == {"n", "label_me"} and values == {"on": False}
    assert forms.coerce(f[0], 3.0) == 3 and forms.recalled(None) == {}
    assert forms.collect(f, {"label_me": "  "})[1] == {"label_me": "Label me is required"}   # blank is empty
    assert forms.recalled_workflow({"meta": {"workflow": None}}) is None
    # an optional model a host names in a field: empty, or one the engine offers
    ups = [{"name": "x2"}, {"name": "x4"}]
    assert forms.offered("upscaler", " x4 ", ups, "a plain resize") == "x4"
    assert forms.offered("upscaler", "", ups, "a plain resize") == ""
    with pytest.raises(ValueError, match="no upscaler 'x8'; it has: x2, x4 .leave it empty for a plain resize"):
        forms.offered("upscaler", "x8", ups, "a plain resize")


def test_random_seeds_fit_every_hosts_integer_field(engine_server):
    c = app_client(engine_server, "test")
    seeds = [c.call("generate", {"model": "tiny-sd15", "prompt": "x", "width": 64, "height": 64, "steps": 1,
                                 "batch": 2})["seed"] for _ in range(3)]
    assert all(0 <= s and s + 1 < 2 ** 31 for s in seeds), seeds
    c.close()


def test_model_pickers_get_main_models_and_upscalers_apart(engine_server, tmp_path):
    """The models update splits the engine's list: main models for the model picker, upscalers for Upscale (a
    LoRA or an upscaler chosen as the main model could only fail). An upscale with an upscaler model goes
    through it and comes back at the scale asked for."""
    s = open_session(engine_server, tmp_path, "gimp")
    try:
        s.refresh_models()
        got = wait_for(s, "models")
        assert {m["type"] for m in got["models"]} == {"main"} and "tiny-sd15" in [m["name"] for m in got["models"]]
        assert [m["name"] for m in got["upscalers"]] == ["tiny-esrgan"]
        assert [(m["name"], m["base"]) for m in got["loras"]] == [("tiny-lora-sd15", "sd1")]
        # a host's single LoRA picker: the LoRA changes the picture, and recall gives the picker its values back
        txt = {"model": "tiny-sd15", "prompt": "a fox", "width": 64, "height": 64, "steps": 2, "seed": 5}
        made, jobs = [], []
        for loras in ([], forms.loras_arg("tiny-lora-sd15", 1.0)):
            s.generate({**txt, "loras": loras}, tag=len(made))
            jobs.append(wait_for(s, "job")["job"])
            made.append(wait_for(s, "result", pred=lambda d: d["job"] == jobs[-1])["layers"][0])
        assert made[0].pixels.data != made[1].pixels.data
        with engine_server.client() as c:
            image_id = c.call("job.get", {"job": jobs[1]})["layers"][0]["image_id"]
        s.recall(image_id, tag="lora-recall")
        rec = wait_for(s, "recalled")
        assert forms.recalled_lora(rec["values"]) == ("tiny-lora-sd15", 1.0)
        assert forms.recalled_lora({}) == ("", 0.8) and forms.loras_arg("", 1.0) == []
        fits = {name: [lo["name"] for lo in forms.loras_for(got["loras"], got["models"], name)]
                for name in ("tiny-sd15", "tiny-sdxl", "not-a-model")}
        assert fits == {"tiny-sd15": ["tiny-lora-sd15"], "tiny-sdxl": [], "not-a-model": ["tiny-lora-sd15"]}
        assert s.upscalers == got["upscalers"] and s.models == got["models"]
        src = Pixels(bytes(range(256)) * (24 * 16 * 4 // 256), 24, 16, x=5, y=7)
        s.generate({"mode": "upscale", "scale": 2.0, "upscaler": "tiny-esrgan"}, src, tag="up")
        job = wait_for(s, "job")["job"]
        layer = wait_for(s, "result", pred=lambda d: d["job"] == job)["layers"][0]
        assert (layer.pixels.w, layer.pixels.h) == (48, 32)
        s.generate({"mode": "upscale", "scale": 2.0}, src, tag="lanczos")   # no upscaler: a plain resize
        job2 = wait_for(s, "job")["job"]
        plain = wait_for(s, "result", pred=lambda d: d["job"] == job2)["layers"][0]
        assert (plain.pixels.w, plain.pixels.h) == (48, 32) and plain.pixels.data != layer.pixels.data
        with engine_server.client() as c:
            ups = c.call("models.list", {"type": "upscaler"})["models"]
        assert [(m["name"], m["loaded"]) for m in ups] == [("tiny-esrgan", True)]
    finally:
        s.close()


# ---- a session acts only on its own jobs, and never loses one to a reconnect (issue 15, shared client 1-3) ------
TINY = {"model": "tiny-sd15", "prompt": "a harbour", "width": 64, "height": 64, "guidance": 5.0}


def proxied_session(engine, tmp_path, proxy: TcpProxy, app="blender") -> Session:
    s = Session(app, "test", str(tmp_path / app), url=proxy.url(engine.url), use_keyring=False)
    s.connect(token=engine.token)
    wait_for(s, "state", pred=lambda d: d["state"] == "connected")
    return s


def engine_proxy(engine) -> TcpProxy:
    port = int(engine.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    return TcpProxy("127.0.0.1", port)


def wait_status(client, job: str, statuses, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = client.call("job.get", {"job": job})
        if got["status"] in statuses:
            return got
        time.sleep(0.05)
    raise AssertionError(f"job {job} not {statuses} in {timeout}s")


@pytest.mark.slow
def test_a_session_acts_only_on_the_jobs_it_submitted(engine_server, tmp_path):
    """Signed in as admin (the README's default), a session receives every user's job events; the jobs of another
    app of the same user and of another user are neither downloaded nor handed to the host."""
    with engine_server.client() as admin_client:
        assert admin_client.call("auth.whoami", {})["user"]["admin"]
        name = f"bob{time.time_ns() % 10 ** 8}"
        admin_client.call("users.create", {"name": name, "password": "bob-password-1", "admin": False})
    blender = open_session(engine_server, tmp_path, "blender")
    krita = open_session(engine_server, tmp_path, "krita", "bgra")
    bob = Client(engine_server.url, app="gimp")
    bob.connect()
    bob.login(name, "bob-password-1")
    try:
        bob_job = bob.call("generate", {**TINY, "steps": 2, "seed": 1})["job"]
        krita.generate({**TINY, "steps": 2, "seed": 2}, tag="krita")
        krita_job = wait_for(krita, "job")["job"]
        wait_for(krita, "result", pred=lambda d: d["job"] == krita_job)
        bob.next_event(60, "job.result", match=lambda ev: ev.data["job"] == bob_job)
        rid = blender.generate({**TINY, "steps": 2, "seed": 3}, tag="mine")
        seen = updates_until(blender, lambda u: u.kind == "result" and u.data.get("tag") == "mine")
        foreign = [(u.kind, u.data["job"]) for u in seen if u.data.get("job") in (bob_job, krita_job)]
        assert foreign == [], "another app's or user's job reached this session"
        mine = next(u.data["job"] for u in seen if u.kind == "job")
        assert {u.data.get("job") for u in seen if u.kind in ("queued", "started", "progress", "result")} == {mine}
        assert list(blender.jobs.rows) == [rid] and blender.jobs.rows[rid].state == "completed"
        assert blender.jobs.rows[rid].seed == 3 and len(blender.jobs.rows[rid].layers) == 1
    finally:
        bob.close()
        blender.close()
        krita.close()


@pytest.mark.slow
def test_a_result_finished_while_disconnected_is_delivered_after_the_reconnect(engine_server, tmp_path):
    proxy = engine_proxy(engine_server)
    s = proxied_session(engine_server, tmp_path, proxy)
    watcher = engine_server.client()
    watcher.connect()
    try:
        rid = s.generate({**TINY, "steps": 8, "seed": 11}, tag="blip")
        job = wait_for(s, "job")["job"]
        wait_for(s, "progress", pred=lambda d: d["job"] == job)
        proxy.cut()
        seen = updates_until(s, lambda u: u.kind == "state" and u.data["state"] == "disconnected", 60)
        lost = seen[-1]
        done = wait_status(watcher, job, ("completed",))
        proxy.restore()
        res = wait_for(s, "result", timeout=60, pred=lambda d: d["job"] == job)
        assert res["tag"] == "blip" and len(res["layers"]) == 1
        assert c_download(watcher, done) == res["layers"][0].pixels.data
        assert lost.data["lost"] is True and lost.data["retry_in"] > 0, "a dropped connection says so"
        row = s.jobs.rows[rid]
        assert row.state == "completed" and not row.connection_lost and s.state == "connected"
    finally:
        watcher.close()
        s.close()
        proxy.close()


def c_download(client, job_info: dict) -> bytes:
    return client.download(job_info["layers"][0]["sha256"])


@pytest.mark.slow
def test_a_cancel_missed_while_disconnected_is_delivered_after_the_reconnect(engine_server, tmp_path):
    """The job is canceled from elsewhere (its job.canceled event sent while this session is away)."""
    proxy = engine_proxy(engine_server)
    s = proxied_session(engine_server, tmp_path, proxy)
    watcher = engine_server.client()
    watcher.connect()
    try:
        rid = s.generate({**TINY, "steps": 200, "seed": 12}, tag="long")
        job = wait_for(s, "job")["job"]
        wait_for(s, "progress", pred=lambda d: d["job"] == job)
        proxy.cut()
        wait_for(s, "state", 60, pred=lambda d: d["state"] == "disconnected")
        watcher.call("job.cancel", {"job": job})
        wait_status(watcher, job, ("canceled",))
        proxy.restore()
        got = wait_for(s, "canceled", timeout=60, pred=lambda d: d["job"] == job)
        assert got["tag"] == "long" and s.jobs.rows[rid].state == "canceled"
    finally:
        watcher.close()
        s.close()
        proxy.close()


@pytest.mark.slow
def test_a_cancel_asked_while_disconnected_still_cancels(engine_server, tmp_path):
    """Cancel always ends in a visible state: asked while the link is down (by request id), it is sent after
    the reconnect, and the job ends canceled."""
    proxy = engine_proxy(engine_server)
    s = proxied_session(engine_server, tmp_path, proxy)
    watcher = engine_server.client()
    watcher.connect()
    try:
        first = s.generate({**TINY, "steps": 200, "seed": 13}, tag="first")
        second = s.generate({**TINY, "steps": 200, "seed": 14}, tag="second")
        seen = updates_until(s, lambda u: u.kind == "progress", requests=(first, second))
        if not any(u.kind == "job" and u.data["request"] == second for u in seen):
            seen += updates_until(s, lambda u: u.kind == "job" and u.data["request"] == second,
                                  requests=(first, second))
        jobs = {u.data["request"]: u.data["job"] for u in seen if u.kind == "job"}
        proxy.cut()
        wait_for(s, "state", 60, pred=lambda d: d["state"] == "disconnected")
        s.cancel(second if hasattr(s, "jobs") else jobs[second])   # by request id (today's Session: job id)
        s.cancel(jobs[first])                                        # by job id
        time.sleep(1.0)               # the cancels are tried (and fail) while the link is down
        assert watcher.call("job.get", {"job": jobs[second]})["status"] == "queued"
        proxy.restore()
        ends = {}
        for up in updates_until(s, lambda u: (u.kind in ("canceled", "failed", "result")
                                               and ends.setdefault(u.data["job"], u.kind) and len(ends) == 2), 120):
            pass
        assert ends == {jobs[first]: "canceled", jobs[second]: "canceled"}
        assert s.jobs.rows[second].cancel_requested and s.jobs.rows[first].cancel_status == "canceling"
        assert s.jobs.rows[first].state == s.jobs.rows[second].state == "canceled"
    finally:
        watcher.close()
        s.close()
        proxy.close()


@pytest.mark.slow
def test_images_made_after_a_password_sign_in_name_the_app(engine_server, tmp_path):
    """auth.login carries no client info; the client says hello after it, so the gallery knows the app."""
    name = f"ana{time.time_ns() % 10 ** 8}"
    with engine_server.client() as admin:
        admin.call("users.create", {"name": name, "password": "ana-password-1", "admin": False})
    s = Session("blender", "test", str(tmp_path / "ana"), url=engine_server.url, use_keyring=False)
    try:
        s.login(name, "ana-password-1")
        wait_for(s, "signed_in")
        s.generate({**TINY, "steps": 1, "seed": 5}, tag="ana")   # no "source": the engine takes hello's app
        job = wait_for(s, "job")["job"]
        wait_for(s, "result", pred=lambda d: d["job"] == job)
        s.list_images(limit=1, tag="mine")
        page = wait_for(s, "images", pred=lambda d: d["tag"] == "mine")
        assert page["images"][0]["job"] == job and page["images"][0]["app"] == "blender"
    finally:
        s.close()


@pytest.mark.slow
def test_a_host_conversion_runs_on_the_worker_and_its_refusal_is_the_requests(engine_server, tmp_path):
    """generate() takes a callable for an image (a host converts pixels off its UI thread); a ValueError from it
    refuses that request, visibly, and nothing is queued."""
    import threading

    s = open_session(engine_server, tmp_path, "blender")
    ran = []

    def image():
        ran.append(threading.current_thread().name)
        return Pixels(bytes([40, 80, 120, 255]) * (64 * 64), 64, 64)

    def empty_mask():
        raise ValueError("the mask is empty")

    try:
        rid = s.generate({**TINY, "mode": "img2img", "steps": 2, "seed": 6, "strength": 0.5}, image, tag="ok")
        job = wait_for(s, "job")["job"]
        wait_for(s, "result", pred=lambda d: d["job"] == job)
        assert ran and "MainThread" not in ran and s.jobs.rows[rid].state == "completed"
        bad = s.generate({**TINY, "mode": "inpaint", "steps": 1}, image, empty_mask, tag="bad")
        err = wait_error(s)
        assert err["message"] == "the mask is empty" and err["request"] == bad and err["tag"] == "bad"
        assert s.jobs.rows[bad].state == "refused" and s.jobs.rows[bad].error == "the mask is empty"
    finally:
        s.close()


@pytest.mark.slow
def test_events_that_arrive_before_the_job_id_are_delivered_after_it(engine_server, tmp_path):
    """The engine sends job.queued before the reply that names the job: the host still gets JobAccepted first,
    then queued (with its position and tag), started, progress, result — none dropped (GIMP lost them)."""
    s = open_session(engine_server, tmp_path, "gimp")
    try:
        rid = s.generate({**TINY, "steps": 2, "seed": 8}, tag="order")
        seen = updates_until(s, lambda u: u.kind == "result" and u.data.get("tag") == "order")
        job = next(u.data["job"] for u in seen if u.kind == "job")
        kinds = [u.kind for u in seen if u.kind == "job" or u.data.get("job") == job]
        assert kinds[:3] == ["job", "queued", "started"] and kinds[-1] == "result", kinds
        queued = next(u for u in seen if u.kind == "queued")
        assert queued.data["tag"] == "order" and queued.data["position"] >= 1
        assert s.jobs.rows[rid].state == "completed"
    finally:
        s.close()


def test_sign_in_while_the_engine_is_unreachable_keeps_the_stored_sign_in(engine_server, tmp_path):
    """Issue 15 K2 (all three apps share it): Sign in while the engine is down replaced the client holding the
    stored token with one that had none, so when the engine came back the plug-in said "signed out"."""
    proxy = engine_proxy(engine_server)
    s = proxied_session(engine_server, tmp_path, proxy)
    try:
        proxy.cut()
        # a request the Session had in flight at the cut (a model list refresh...) fails "disconnected": expected
        wait_for(s, "state", pred=lambda d: d["state"] != "connected", timeout=60, skip_errors=("disconnected",))
        s.login("admin", "not-checked", url=s.url)
        err = wait_error(s)
        while "stored sign-in is kept" not in err["message"]:   # skip what was still failing from the cut
            assert err["code"] == "disconnected", err
            err = wait_error(s)
        assert err["code"] == "disconnected", err
        proxy.restore()
        wait_for(s, "state", pred=lambda d: d["state"] == "connected", timeout=90)
    finally:
        s.close()
        proxy.close()
