"""Regions (issue 19) end to end: a real engine with the tiny demo models (64 px, 3 steps).

Tolerance: regions that add nothing must give the same pixels as no regions "within float noise"; the blend's
weights sum to 1 at every UNet level, so we allow 1 uint8 step (measured: 0, bit-identical, for SD1.5 and SDXL).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from protocol.errors import ProtocolError

from .helpers import fetch, run, upload_mask, upload_rgba

BASE = "a castle on a hill"
OTHER = "zebra stripes, neon green, underwater"
W = H = 64
LEFT = np.zeros((H, W), np.uint8)
LEFT[:, :32] = 255
RIGHT = 255 - LEFT


@pytest.fixture(scope="module")
def client(engine_server):
    c = engine_server.client()
    yield c
    c.close()


def txt2img(client, model="tiny-sd15", regions=None, prompt=BASE, **kw):
    args = {"model": model, "prompt": prompt, "negative_prompt": "blurry", "width": W, "height": H, "steps": 3,
            "seed": 5, "guidance": 5.0, **kw}
    if regions is not None:
        args["regions"] = regions
    _, layers = run(client, "generate", args)
    return fetch(client, layers[0])[..., :3].astype(int), layers[0]


def gallery_image(client, job, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:   # the gallery records a result just after job.result
        found = [i for i in client.call("images.list", {"limit": 50})["images"] if i["job"] == job]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"job {job} is not in the gallery")


def halves(client, left_prompt, right_prompt):
    return [{"prompt": left_prompt, "mask": upload_mask(client, LEFT)},
            {"prompt": right_prompt, "mask": upload_mask(client, RIGHT)}]


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_regions_that_repeat_the_base_change_nothing(client, model):
    plain, _ = txt2img(client, model)
    same, _ = txt2img(client, model, regions=halves(client, BASE, BASE))
    assert np.abs(plain - same).max() <= 1
    # one region over everything becomes the base prompt: the same as that prompt alone
    whole = [{"prompt": "a red door", "mask": upload_mask(client, np.full((H, W), 255, np.uint8))}]
    covered, _ = txt2img(client, model, regions=whole)
    alone, _ = txt2img(client, model, prompt=f"a red door, {BASE}")
    assert np.array_equal(covered, alone)


def test_a_region_prompt_changes_its_own_area_most(client):
    plain, _ = txt2img(client)
    for mask, regions in ((LEFT, halves(client, OTHER, BASE)), (RIGHT, halves(client, BASE, OTHER))):
        got, _ = txt2img(client, regions=regions)
        diff = np.abs(got - plain).mean(axis=2)
        inside, outside = diff[mask > 0].mean(), diff[mask == 0].mean()
        print(f"region prompt changed: mean |Δ| inside {inside:.2f}, outside {outside:.2f} (of 255)")
        assert inside > 1.15 * outside and inside > 1.0   # measured: 6.32 vs 4.91 (left), 6.76 vs 4.44 (right)


def test_regions_in_inpaint_use_document_coordinates(client):
    """An inpaint of a 64 px image at (100, 50): the region masks are in document coordinates and cut to the
    generated crop; the request and the gallery keep the regions (prompts, mask hashes, bounds)."""
    img = np.zeros((H, W, 4), np.uint8)
    img[..., :3], img[..., 3] = 128, 255
    layer = upload_rgba(client, img, x=100, y=50)
    sel = np.zeros((H, W), np.uint8)
    sel[8:56, 8:56] = 255
    region = upload_mask(client, np.full((32, 64), 255, np.uint8), x=100, y=50)   # the image's top half
    args = {"mode": "inpaint", "model": "tiny-sd15", "prompt": BASE, "image": layer,
            "mask": upload_mask(client, sel, x=100, y=50), "steps": 3, "seed": 9, "strength": 1.0,
            "regions": [{"prompt": OTHER, "mask": region}]}
    job, layers = run(client, "generate", args)
    _, plain = run(client, "generate", {**args, "regions": []})
    assert layers[0]["sha256"] != plain[0]["sha256"]
    image = gallery_image(client, job)
    info = client.call("images.get", {"image": image["id"]})
    assert info["params"]["regions"][0]["prompt"] == OTHER
    assert info["meta"]["regions"] == [{"prompt": OTHER, "negative_prompt": "", "mask": region["sha256"],
                                        "x": 100, "y": 50, "w": 64, "h": 32}]
    # recall restores them: the same image again
    _, again = run(client, "generate", {"recall": image["id"]})
    assert again[0]["sha256"] == layers[0]["sha256"]


def test_regions_graph_node(client):
    mask = upload_mask(client, LEFT)
    graph = {"nodes": {"m": {"type": "load_model", "model": "tiny-sd15"},
                       "p": {"type": "prompt", "text": BASE, "negative": "blurry"},
                       "r": {"type": "regions", "regions": [{"prompt": OTHER, "mask": mask}], "x": 0, "y": 0,
                             "width": W, "height": H},
                       "n": {"type": "noise", "seed": 5, "width": W, "height": H},
                       "d": {"type": "denoise", "steps": 3, "guidance": 5.0},
                       "v": {"type": "vae_decode"}, "o": {"type": "output", "name": "regions"}},
             "edges": [{"from": ["m", "model"], "to": ["p", "model"]}, {"from": ["m", "model"], "to": ["r", "model"]},
                       {"from": ["p", "conditioning"], "to": ["r", "conditioning"]},
                       {"from": ["m", "model"], "to": ["d", "model"]},
                       {"from": ["r", "conditioning"], "to": ["d", "conditioning"]},
                       {"from": ["n", "noise"], "to": ["d", "noise"]}, {"from": ["m", "model"], "to": ["v", "model"]},
                       {"from": ["d", "latents"], "to": ["v", "latents"]},
                       {"from": ["v", "image"], "to": ["o", "image"]}]}
    job, layers = run(client, "graph.submit", {"graph": graph})
    same, _ = txt2img(client, regions=[{"prompt": OTHER, "mask": mask}])
    assert np.array_equal(fetch(client, layers[0])[..., :3], same)   # generate compiles to the same graph
    meta = client.call("images.get", {"image": gallery_image(client, job)["id"]})["meta"]
    assert meta["prompt"] == BASE and meta["regions"] == [{"prompt": OTHER, "negative_prompt": "",
                                                          "mask": mask["sha256"], "x": 0, "y": 0, "w": W, "h": H}]
    # a mask blob the caller never uploaded is refused before queueing
    graph["nodes"]["r"]["regions"][0]["mask"] = dict(mask, sha256="ab" * 32)
    with pytest.raises(ProtocolError) as e:
        client.call("graph.submit", {"graph": graph})
    assert e.value.code == "bad_request"


def test_bad_regions_are_refused_naming_the_region(client):
    mask = upload_mask(client, LEFT)
    rgba = upload_rgba(client, np.zeros((H, W, 4), np.uint8))
    base = {"model": "tiny-sd15", "prompt": BASE, "width": W, "height": H, "steps": 2}
    jobs = client.call("job.list", {})
    cases = [
        ([{"prompt": "a", "mask": mask}] * 11, None, "at most 10"),
        ([{"prompt": "a", "mask": mask}, {"prompt": "b", "mask": rgba}], 1, "gray8"),
        ([{"prompt": "a", "mask": dict(mask, x=64)}], 0, "outside the document"),
        ([{"prompt": "a", "mask": mask}, {"prompt": "a", "mask": mask, "loras": [{"model": "tiny-lora-sd15"}]}],
         1, "LoRAs per region"),
    ]
    for regions, index, words in cases:
        with pytest.raises(ProtocolError) as e:
            client.call("generate", {**base, "regions": regions})
        assert e.value.code == "bad_request" and words in e.value.message, e.value.message
        assert e.value.details["region"] == index
    with pytest.raises(ProtocolError) as e:
        client.call("generate", {**base, "prompt": "", "regions": [{"prompt": "a", "mask": mask},
                                                                   {"prompt": " ", "mask": mask}]})
    assert e.value.code == "bad_request" and e.value.message.startswith("region 1:")
    assert e.value.details["field"] == "regions.1.prompt"
    with pytest.raises(ProtocolError) as e:
        client.call("generate", {"model": "tiny-flux", "prompt": BASE, "width": W, "height": H,
                                 "regions": [{"prompt": "a", "mask": mask}]})
    assert "FLUX" in e.value.message
    assert client.call("job.list", {}) == jobs   # nothing was queued


def test_session_uploads_region_masks_like_image_and_mask(engine_server, tmp_path, client):
    """protocol's Session: a region's mask (Pixels, or a callable run on the worker thread) is uploaded and sent
    as a layer reference; the gallery then holds the regions with those masks' hashes and bounds."""
    from protocol import generate as g
    from protocol.pixels import Pixels

    from .helpers import open_session, wait_for

    s = open_session(engine_server, tmp_path, app="krita")
    try:
        left = Pixels(LEFT[:, :32].tobytes(), 32, H, "gray8", 0, 0)
        right = Pixels(RIGHT[:, 32:].tobytes(), 32, H, "gray8", 32, 0)
        values = {"model": "tiny-sd15", "prompt": BASE, "negative_prompt": "", "steps": 2, "seed": 4,
                  "width": W, "height": H}
        regions = [{"prompt": "a knight", "mask": left}, {"prompt": "a dragon", "mask": lambda: right}]
        params = g.generate_args("txt2img", values, regions=regions, limits=s.limits)
        rid = s.generate(params)
        job = wait_for(s, "job", pred=lambda d: d["request"] == rid)["job"]
        wait_for(s, "result", pred=lambda d: d["job"] == job)
        assert regions[1]["mask"] is not right and callable(regions[1]["mask"])   # the caller's list is untouched
        meta = client.call("images.get", {"image": gallery_image(client, job)["id"]})
    finally:
        s.close()
    assert [(r["prompt"], r["mask"], r["x"], r["y"], r["w"], r["h"]) for r in meta["meta"]["regions"]] == [
        ("a knight", left.sha256(), 0, 0, 32, H), ("a dragon", right.sha256(), 32, 0, 32, H)]
