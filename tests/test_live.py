"""Live painting (issue 21): the live lane on a real engine - superseding, preempt, identical inputs, Stop,
round-robin with other users, the gallery only on images.keep - and the few-step presets."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from protocol.client import Client
from protocol.errors import ProtocolError

from .helpers import EngineProc, cli, copy_graph, fetch, layer_ref, pattern, upload_rgba

pytestmark = pytest.mark.slow
FINAL = ("job.result", "job.failed", "job.canceled")


@pytest.fixture(scope="module")
def live_engine(tmp_path_factory, demo_models):
    """The demo models, and the demo LoRA once more under the LCM LoRA's usual file name."""
    extra = tmp_path_factory.mktemp("live-models")
    shutil.copy(demo_models / "tiny-lora-sd15.safetensors", extra / "lcm-lora-sdv1-5.safetensors")
    proc = EngineProc(tmp_path_factory.mktemp("live-engine"), ["--models", str(demo_models), "--models", str(extra)])
    proc.start()
    yield proc
    proc.kill()


def collect(client, events: list, until, timeout=400):
    """Keep every event (next_event would drop the others) until until(events) holds."""
    end = time.monotonic() + timeout
    while not until(events):
        if time.monotonic() > end:
            raise AssertionError(f"timed out; events: {[(e.name, e.data.get('job')) for e in events][-20:]}")
        events.extend(client.drain(1000))
        time.sleep(0.02)
    return events


def ended(events, job):
    return next((e for e in events if e.name in FINAL and e.data.get("job") == job), None)


def live_args(layer, **extra):
    return {"mode": "img2img", "model": "tiny-sd15", "prompt": "live", "strength": 0.5, "steps": 40, "seed": 7,
            "image": layer, "live": True, **extra}


def frames(client, n):
    """n different 64 px inputs (a stroke each)."""
    out = []
    for i in range(n):
        px = pattern(64, 64)
        px[20:28, 4 * i:4 * i + 6] = (0, 0, 255, 255)
        out.append(upload_rgba(client, px))
    return out


def test_ten_live_requests(live_engine):
    c = live_engine.client()
    try:
        layers = frames(c, 10)
        events: list = []
        jobs = [c.call("generate", live_args(lay))["job"] for lay in layers]
        collect(c, events, lambda evs: all(ended(evs, j) for j in jobs))
        started = [e.data["job"] for e in events if e.name == "job.started" and e.data["job"] in jobs]
        assert len(started) <= 2 and started[-1] == jobs[-1], started
        assert set(started) <= {jobs[0], jobs[-1]}
        for j in jobs[1:-1]:   # the ones in between never ran: superseded while queued
            ev = ended(events, j)
            assert ev.name == "job.canceled" and ev.data["reason"] == "superseded", ev
        last = ended(events, jobs[-1])
        assert last.name == "job.result"
        # previews of the live job went out as it ran
        assert any(e.name == "job.progress" and e.data["job"] == jobs[-1] for e in events)

        # the last result is what an ordinary job with the same arguments makes, pixel for pixel
        plain = c.call("generate", {**live_args(layers[-1]), "live": False})["job"]
        collect(c, events, lambda evs: ended(evs, plain))
        assert ended(events, plain).name == "job.result"
        assert np.array_equal(fetch(c, last.data["layers"][0]), fetch(c, ended(events, plain).data["layers"][0]))

        # the same inputs again start nothing: the newest live job is answered
        n_jobs = len(c.call("job.list", {"limit": 500})["jobs"])
        again = c.call("generate", live_args(layers[-1]))
        assert again["job"] == jobs[-1] and again["unchanged"] is True and again["seed"] == 7
        time.sleep(0.5)
        assert len(c.call("job.list", {"limit": 500})["jobs"]) == n_jobs
        assert not [e for e in c.drain(1000) if e.name == "job.queued"]

        # live results are not in the gallery until kept; the ordinary one is
        listed = {i["job"] for i in c.call("images.list", {"limit": 500})["images"]}
        assert plain in listed and not listed & set(jobs)
        assert "image_id" not in last.data["layers"][0]
        kept = c.call("images.keep", {"job": jobs[-1]})["images"]
        assert len(kept) == 1 and kept[0]["job"] == jobs[-1]
        assert c.call("images.keep", {"job": jobs[-1]})["images"] == kept   # once
        listed = {i["job"] for i in c.call("images.list", {"limit": 500})["images"]}
        assert jobs[-1] in listed
        with pytest.raises(ProtocolError) as err:
            c.call("images.keep", {"job": jobs[1]})   # superseded: nothing to keep
        assert err.value.code == "bad_request"
    finally:
        c.close()


def test_preempt_and_stop(live_engine):
    c = live_engine.client()
    try:
        a, b, d = frames(c, 3)
        events: list = []
        first = c.call("generate", live_args(a, steps=200))["job"]
        collect(c, events, lambda evs: any(e.name == "job.progress" and e.data["job"] == first for e in evs))
        second = c.call("generate", live_args(b, steps=200, preempt=True))["job"]
        collect(c, events, lambda evs: ended(evs, first))
        assert ended(events, first).name == "job.canceled" and ended(events, first).data["reason"] == "superseded"
        collect(c, events, lambda evs: any(e.name == "job.progress" and e.data["job"] == second for e in evs))
        third = c.call("generate", live_args(d, steps=200))["job"]   # no preempt: waits for the running one
        assert c.call("job.get", {"job": third})["status"] == "queued"
        assert c.call("job.get", {"job": second})["status"] == "running"
        # Stop: cancel what is queued and running; nothing is left
        for j in (third, second):
            c.call("job.cancel", {"job": j})
        collect(c, events, lambda evs: ended(evs, second) and ended(evs, third))
        assert ended(events, third).name == "job.canceled" and "reason" not in ended(events, third).data
        left = [j for j in c.call("job.list", {"limit": 500})["jobs"] if j["status"] in ("queued", "running")]
        assert left == []
    finally:
        c.close()


def test_a_closed_connection_leaves_no_live_job_queued(live_engine):
    """A live job belongs to its connection's lane: when the connection closes, its queued live job is canceled
    (nobody is left to see it; reason "disconnected"), its running one ends as usual, and a new connection of the
    same user starts a lane of its own."""
    watcher = live_engine.client()
    c = live_engine.client()
    try:
        a, b = frames(watcher, 2)
        running = c.call("generate", live_args(a, steps=200))["job"]
        watcher.next_event(120, name="job.progress", match=lambda e: e.data["job"] == running)
        queued = c.call("generate", live_args(b, steps=200))["job"]
        assert watcher.call("job.get", {"job": queued})["status"] == "queued"
        c.close()
        ev = watcher.next_event(60, name="job.canceled", match=lambda e: e.data["job"] == queued)
        assert ev.data.get("reason") == "disconnected"
        assert watcher.call("job.get", {"job": running})["status"] in ("running", "completed")
        watcher.call("job.cancel", {"job": running})
        # the same inputs from another connection are a new job, not the closed lane's answer
        again = watcher.call("generate", live_args(b, steps=2))
        assert again["job"] != queued and not again.get("unchanged")
        got = watcher.next_event(240, name="job.result", match=lambda e: e.data["job"] == again["job"])
        assert got.data["job"] == again["job"]
    finally:
        c.close()
        watcher.close()


def test_a_live_job_queued_when_the_engine_died_is_canceled_at_start(demo_models, tmp_path):
    """Killed with a live job queued (its connection is gone with the process): the next start cancels it instead
    of running it for nobody; an ordinary queued job still runs."""
    eng = EngineProc(tmp_path / "data", ["--models", str(demo_models)]).start()
    try:
        c = eng.client()
        a = frames(c, 1)[0]
        blocker = c.call("generate", {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 200})["job"]
        c.next_event(120, name="job.progress", match=lambda e: e.data["job"] == blocker)
        live = c.call("generate", live_args(a, steps=2))["job"]
        plain = c.call("generate", {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 1, "seed": 2})["job"]
        assert c.call("job.get", {"job": live})["status"] == "queued"
        eng.kill()   # no goodbye: the connection's end is never handled
        eng.start()
        c = eng.client()
        assert c.call("job.get", {"job": live})["status"] == "canceled"
        deadline = time.monotonic() + 240
        while c.call("job.get", {"job": plain})["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert c.call("job.get", {"job": plain})["status"] == "completed"
        c.close()
    finally:
        eng.kill()


def test_live_lane_and_round_robin(live_engine):
    """A user's live job runs ahead of that user's older ordinary job but takes that user's turn: another
    user's jobs still alternate with them."""
    d = str(live_engine.data_dir)
    for name in ("lina", "otto"):
        cli("users", "--data-dir", d, "add", name, "--password", name + "-pw")
    admin = live_engine.client()
    lina = Client(live_engine.url, reconnect=False).connect()
    lina.login("lina", "lina-pw")
    otto = Client(live_engine.url, reconnect=False).connect()
    otto.login("otto", "otto-pw")
    try:
        px = np.arange(16, dtype=np.uint8).tobytes()
        sha_l, sha_o = lina.upload(px), otto.upload(px)
        layer = upload_rgba(lina, pattern(64, 64))
        blocker = admin.call("generate", {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 200})["job"]
        admin.next_event(120, name="job.progress", match=lambda e: e.data["job"] == blocker)
        jobs = {"a1": lina.call("graph.submit", {"graph": copy_graph(layer_ref(sha_l, 2, 2), "a1")})["job"],
                "live": lina.call("generate", live_args(layer, steps=2))["job"],
                "b1": otto.call("graph.submit", {"graph": copy_graph(layer_ref(sha_o, 2, 2), "b1")})["job"],
                "b2": otto.call("graph.submit", {"graph": copy_graph(layer_ref(sha_o, 2, 2), "b2")})["job"]}
        admin.call("job.cancel", {"job": blocker})
        names = {v: k for k, v in jobs.items()}
        order: list = []
        while len(order) < len(jobs):
            ev = admin.next_event(120, name="job.started")
            if ev.data["job"] in names:
                order.append(names[ev.data["job"]])
        assert order == ["live", "b1", "a1", "b2"], order
    finally:
        for cl in (admin, lina, otto):
            cl.close()


def test_presets(live_engine):
    c = live_engine.client()
    try:
        presets = {p["name"]: p for p in c.call("models.list", {})["presets"]}
        assert {"lcm", "hyper-sd", "lightning", "turbo"} <= set(presets)
        layer = frames(c, 1)[0]
        args = {"mode": "img2img", "model": "tiny-sd15", "prompt": "x", "strength": 0.5, "seed": 3, "image": layer,
                "live": True, "preset": "LCM"}
        job = c.call("generate", args)["job"]
        info = c.call("job.get", {"job": job})
        req = info["request"]
        # the LCM set-up, with its LoRA found by its usual file name, and 6 denoising steps at strength 0.5
        assert (req["scheduler"], req["guidance"], req["steps"]) == ("lcm", 1.5, 12)
        assert req["loras"] == [{"model": "lcm-lora-sdv1-5", "weight": 1.0}]
        for _ in range(600):
            info = c.call("job.get", {"job": job})
            if info["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        assert info["status"] == "completed", info
        # a value the client gives wins over the preset's
        job2 = c.call("generate", {**args, "steps": 3, "seed": 4})["job"]
        assert c.call("job.get", {"job": job2})["request"]["steps"] == 3
        c.call("job.cancel", {"job": job2})

        def refused(**kw):
            with pytest.raises(ProtocolError) as err:
                c.call("generate", {**args, **kw})
            assert err.value.code == "bad_request"
            return err.value
        err = refused(preset="hyper-sd")   # its LoRA is not among the models: named
        assert "Hyper-SD15-8steps-lora" in err.message and err.details["field"] == "preset"
        err = refused(preset="lightning")  # SDXL only
        assert "SDXL" in err.message and "tiny-sd15" in err.message
        err = refused(preset="nope")
        assert "lcm" in err.message
        err = refused(model="tiny-sdxl", preset="lcm")   # its SDXL LoRA is missing
        assert "lcm-lora-sdxl" in err.message
    finally:
        c.close()


def test_live_model_is_held(demo_models, tmp_path):
    """A live job's model is not evicted by the next load (here: the cache holds one main model)."""
    from engine.models.cache import ModelCache
    from engine.models.registry import ModelRegistry

    reg = ModelRegistry([demo_models], db_path=tmp_path / "m.db")
    cache = ModelCache(reg, max_models=1)
    cache.get("tiny-sd15")
    cache.use("tiny-sd15", hold_s=60)
    cache.release()
    cache.get("tiny-sd2")
    assert set(cache.loaded()) >= {"tiny-sd15", "tiny-sd2"}
    cache.use("tiny-sd2")      # an ordinary job: nothing held after it
    cache.release()
    cache._held.clear()        # the hold ran out: the next load evicts as before
    cache.get("tiny-sdxl")
    assert cache.loaded() == ["tiny-sdxl"]


def test_live_controller_with_a_session(live_engine, tmp_path):
    """protocol.live.LiveController on a real Session: one request per burst of changes, the newest result shown,
    a refused preset pauses instead of retrying, Stop leaves nothing on the engine."""
    from protocol.live import BUSY, OFF, PAUSED, LiveController
    from protocol.pixels import Pixels

    from .helpers import open_session

    s = open_session(live_engine, tmp_path, app="krita")
    canvas = {"px": pattern(64, 64), "preset": None}

    def read():
        params = {"mode": "img2img", "model": "tiny-sd15", "prompt": "live", "strength": 0.5, "steps": 4, "seed": 9}
        if canvas["preset"]:
            params["preset"] = canvas["preset"]
        return params, Pixels(canvas["px"].tobytes(), 64, 64, "rgba8"), None

    live = LiveController(s, read, debounce_s=0.2, max_wait_s=5.0)

    def pump(cond, timeout=120):
        end = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < end, live.describe()
            for up in s.poll():
                live.handle(up)
            live.tick()
            time.sleep(0.01)

    try:
        assert live.state == OFF and not live.tick()
        live.start()
        pump(lambda: live.sent == 1)
        assert live.state == BUSY and live.busy
        pump(lambda: live.result and not live.busy)
        first = live.result[0].pixels.data
        # a burst of five changes, 20 ms apart: one request once the canvas is quiet
        for i in range(5):
            canvas["px"] = canvas["px"].copy()
            canvas["px"][30:34, 10 * i:10 * i + 8] = (255, 255, 0, 255)
            live.changed()
            live.tick()
            time.sleep(0.02)
        assert live.sent == 1
        pump(lambda: live.sent == 2)
        pump(lambda: not live.busy)
        second = live.result[0].pixels.data
        assert second != first
        # a change notification without a pixel change: sent, the engine starts nothing, the result stays
        jobs_before = len(s.client.call("job.list", {"limit": 500})["jobs"])
        live.changed()
        pump(lambda: live.sent == 3)
        pump(lambda: not live.busy)
        assert live.result[0].pixels.data == second
        assert len(s.client.call("job.list", {"limit": 500})["jobs"]) == jobs_before
        # a preset whose LoRA is missing: paused with the engine's message, no retry on later changes
        canvas["preset"] = "hyper-sd"
        live.settings_changed()
        pump(lambda: live.state == PAUSED)
        assert "Hyper-SD15-8steps-lora" in live.describe()
        sent = live.sent
        live.changed()
        time.sleep(0.3)
        pump(lambda: True)
        assert live.sent == sent
        # fixed: resumes; then Stop while it runs leaves nothing queued or running
        canvas["preset"] = None
        canvas["px"] = pattern(64, 64)[::-1].copy()
        live.settings_changed()
        pump(lambda: live.busy)
        live.stop()
        pump(lambda: not live.busy)
        active = [j for j in s.client.call("job.list", {"limit": 500})["jobs"] if j["status"] in ("queued", "running")]
        assert active == [] and live.state == OFF
    finally:
        s.close()
