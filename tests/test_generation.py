"""Generation end to end through a real engine with tiny demo models (64 px, few steps)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from protocol.errors import ProtocolError

from .helpers import cli, fetch, new_user, pattern, run_job, upload_mask, upload_rgba, wait_job

ARCHS = ["sd15", "sd2", "sdxl", "flux"]


@pytest.fixture(scope="module")
def client(engine_server):
    c = engine_server.client()
    yield c
    c.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_txt2img_end_to_end_and_deterministic(client, arch):
    args = {"model": f"tiny-{arch}", "prompt": "a red fox", "width": 64, "height": 64, "steps": 3, "seed": 42,
            "batch": 2, "guidance": 5.0}
    job, reply, result, events = run_job(client, args)
    assert result.name == "job.result", result.data
    names = [e.name for e in events]
    assert names[0] in ("job.queued", "job.started") and "job.progress" in names
    progress = [e for e in events if e.name == "job.progress"]
    assert progress[-1].data["step"] == progress[-1].data["total"] == 3
    prev = progress[0].data.get("preview")
    assert prev and prev["format"] == "rgba8" and len(prev["data"]) == prev["w"] * prev["h"] * 4
    assert max(prev["w"], prev["h"]) <= 256
    layers = result.data["layers"]
    assert [l["seed"] for l in layers] == [42, 43]
    assert all((l["w"], l["h"], l["x"], l["y"]) == (64, 64, 0, 0) for l in layers)
    a, b = fetch(client, layers[0]), fetch(client, layers[1])
    assert a.shape == (64, 64, 4) and (a[..., 3] == 255).all()
    assert not np.array_equal(a, b)                       # different seeds differ
    _, _, again, _ = run_job(client, {**args, "batch": 1})
    assert again.data["layers"][0]["sha256"] == layers[0]["sha256"]   # same seed, same pixels
    info = client.call("job.get", {"job": job})
    assert info["status"] == "completed" and info["layers"] == layers


def test_img2img_strength_zero_returns_input(client, engine_server):
    img = pattern()
    layer = upload_rgba(client, img, x=7, y=9)
    _, _, res, _ = run_job(client, {"mode": "img2img", "model": "tiny-sd15", "image": layer, "strength": 0.0,
                                    "steps": 2, "seed": 1})
    out = res.data["layers"][0]
    assert (out["x"], out["y"]) == (7, 9)
    assert np.array_equal(fetch(client, out), img)


def test_img2img_changes_pixels_at_the_sender_position(client):
    img = pattern()
    layer = upload_rgba(client, img, x=100, y=50)
    _, _, res, _ = run_job(client, {"mode": "img2img", "model": "tiny-sd15", "image": layer, "strength": 0.6,
                                    "steps": 3, "seed": 1})
    out = res.data["layers"][0]
    assert (out["x"], out["y"], out["w"], out["h"]) == (100, 50, 64, 64)
    assert not np.array_equal(fetch(client, out), img)


@pytest.mark.parametrize("arch", ARCHS)
def test_inpaint_keeps_unmasked_pixels(client, arch):
    img = pattern()
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 24:48] = 255
    mask[38:40, 24:26] = 0                              # not a plain rectangle
    layer = upload_rgba(client, img, x=300, y=200)
    _, _, res, _ = run_job(client, {"mode": "inpaint", "model": f"tiny-{arch}", "prompt": "a cat",
                                    "image": layer, "mask": upload_mask(client, mask, 300, 200), "steps": 3,
                                    "strength": 1.0, "seed": 3})
    assert res.name == "job.result", res.data
    out = res.data["layers"][0]
    assert (out["x"], out["y"], out["w"], out["h"]) == (300 + 24, 200 + 20, 24, 20)   # the mask's bounds
    got = fetch(client, out)
    region = img[20:40, 24:48]
    keep = mask[20:40, 24:48] == 0
    assert np.array_equal(got[keep], region[keep])       # exactly as sent where the mask is 0
    assert not np.array_equal(got[~keep], region[~keep])  # generated where it is 255


def test_outpaint_fills_transparent_area(client):
    img = pattern()
    img[:, 40:] = 0                                       # right part transparent: to be filled
    layer = upload_rgba(client, img)
    _, _, res, _ = run_job(client, {"mode": "outpaint", "model": "tiny-sd15", "image": layer, "steps": 3,
                                    "seed": 5})
    out = res.data["layers"][0]
    assert (out["x"], out["y"], out["w"], out["h"]) == (40, 0, 24, 64)
    got = fetch(client, out)
    assert (got[..., 3] == 255).all()


def test_upscale_without_model_is_lanczos(client):
    img = pattern(32, 24)
    _, _, res, _ = run_job(client, {"mode": "upscale", "image": upload_rgba(client, img, 4, 4), "scale": 2.0})
    out = res.data["layers"][0]
    assert (out["w"], out["h"], out["x"], out["y"]) == (64, 48, 4, 4)


def test_bad_requests_are_refused_before_queueing(client, engine_server):
    img = upload_rgba(client, pattern())
    before = len(client.call("job.list", {"limit": 500})["jobs"])
    cases = [
        ({"model": "tiny-sd15", "width": 60, "height": 64}, "multiple of 8"),
        ({"model": "tiny-sd15", "width": 8192, "height": 4096}, "budget"),
        ({"model": "tiny-sd15", "width": 64, "height": 64, "steps": 100000}, "steps"),
        ({"model": "tiny-sd15", "width": 64, "height": 64, "batch": 1000}, "batch"),
        ({"model": "no-such-model", "width": 64, "height": 64}, "unknown model"),
        ({"mode": "inpaint", "model": "tiny-sd15", "image": img,
          "mask": upload_mask(client, np.full((32, 32), 255))}, "must match"),
        ({"mode": "inpaint", "model": "tiny-sd15", "image": img,
          "mask": upload_mask(client, np.zeros((64, 64)))}, "empty"),
        ({"mode": "img2img", "model": "tiny-sd15", "image": {**img, "sha256": "ab" * 32}}, "not a blob you uploaded"),
        ({"mode": "img2img", "model": "tiny-sd15", "image": {**img, "w": 32}}, "bytes"),
        ({"mode": "img2img", "model": "tiny-sd15"}, "needs an image"),
    ]
    for args, words in cases:
        with pytest.raises(ProtocolError) as e:
            client.call("generate", args)
        assert e.value.code == "bad_request", (args, e.value)
        assert words in e.value.message, (words, e.value.message)
    assert len(client.call("job.list", {"limit": 500})["jobs"]) == before


def test_layer_of_another_user_is_refused(engine_server):
    owner = engine_server.client()
    layer = upload_rgba(owner, pattern())
    other = new_user(engine_server)
    with pytest.raises(ProtocolError) as e:
        other.call("generate", {"mode": "img2img", "model": "tiny-sd15", "image": layer})
    assert e.value.code == "bad_request"
    # (another user's jobs, results and job events: tests/test_isolation.py, for every op)
    owner.close()
    other.close()


def test_cancel_running_and_queued(client):
    long = {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 200, "seed": 9}
    first = client.call("generate", long)["job"]
    second = client.call("generate", long)["job"]
    client.next_event(120, name="job.progress", match=lambda e: e.data["job"] == first)
    assert client.call("job.cancel", {"job": second}) == {"status": "canceled"}
    assert client.call("job.cancel", {"job": first}) == {"status": "canceling"}
    client.next_event(60, name="job.canceled", match=lambda e: e.data["job"] == first)
    assert client.call("job.get", {"job": first})["status"] == "canceled"
    assert client.call("job.get", {"job": second})["status"] == "canceled"
    # the engine is free again
    _, _, res, _ = run_job(client, {**long, "steps": 1})
    assert res.name == "job.result"


def test_restart_runs_queued_and_reports_interrupted(spawn_engine, demo_models):
    eng = spawn_engine("--models", str(demo_models))
    c = eng.client()
    running = c.call("generate", {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 200, "seed": 1})["job"]
    queued = c.call("generate", {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 2, "seed": 2})["job"]
    done_before = None
    c.next_event(120, name="job.progress", match=lambda e: e.data["job"] == running)
    c.close()
    eng.kill()                                     # kill -9 mid-job
    eng.start()
    c = eng.client()
    info = wait_job(c, queued)
    assert info["status"] == "completed" and info["layers"]
    assert c.download(info["layers"][0]["sha256"])
    lost = c.call("job.get", {"job": running})
    assert lost["status"] == "failed" and lost["error"]["code"] == "interrupted"
    assert done_before is None
    c.close()


def test_cli_generate(engine_server, tmp_path):
    out = tmp_path / "fox.png"
    port = engine_server.url.rsplit(":", 1)[1].split("/")[0]
    text = cli("generate", "a fox", "-o", str(out), "--model", "tiny-sd15", "--size", "64", "--steps", "2",
               "--seed", "4", "--port", port, "--token", engine_server.token, "--quiet")
    assert str(out) in text
    im = Image.open(out)
    assert im.size == (64, 64)
