"""Gallery, boards, recall and PNG import, end to end through a real engine with the tiny demo SD1.5 model."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .helpers import app_client, errcode, fetch, new_user, run

BASE = {"model": "tiny-sd15", "prompt": "a red fox in the snow", "negative_prompt": "blurry", "width": 64,
        "height": 64, "steps": 2, "guidance": 6.5}


def registry_sha256(client, name, timeout=120):
    """The model manager's content hash (computed by a background thread after the engine starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sha = next(m["sha256"] for m in client.call("models.list", {})["models"] if m["name"] == name)
        if sha:
            return sha
        time.sleep(0.2)
    raise AssertionError(f"{name} was not hashed in {timeout}s")


@pytest.fixture(scope="module")
def krita(engine_server):
    c = app_client(engine_server, "krita")
    yield c
    c.close()


@pytest.fixture(scope="module")
def blender(engine_server):
    c = app_client(engine_server, "blender")
    yield c
    c.close()


@pytest.fixture(scope="module")
def made(krita):
    """Two images from Krita (batch 2), the app taken from the connection's hello."""
    job, layers = run(krita, "generate", {**BASE, "seed": 7, "batch": 2})
    return job, layers


def test_results_are_recorded_with_metadata_png_and_thumbnail(krita, blender, made, engine_server):
    job, layers = made
    ids = [lay["image_id"] for lay in layers]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids) and len(set(ids)) == 2
    assert [lay["image_id"] for lay in krita.call("job.get", {"job": job})["layers"]] == ids   # stored too

    # made in Krita, listed from Blender (same user), newest first; the app is only a filter
    listed = [im["id"] for im in blender.call("images.list", {"limit": 500})["images"]]
    assert set(ids) <= set(listed) and listed.index(ids[1]) < listed.index(ids[0])
    assert set(ids) <= {im["id"] for im in blender.call("images.list", {"app": "krita", "limit": 500})["images"]}
    assert not set(ids) & {im["id"] for im in blender.call("images.list", {"app": "blender"})["images"]}

    info = blender.call("images.get", {"image": ids[1], "png": True})
    assert info["app"] == "krita" and info["job"] == job and info["mode"] == "txt2img"
    assert (info["prompt"], info["negative_prompt"], info["seed"], info["steps"], info["guidance"]) == \
        (BASE["prompt"], "blurry", 8, 2, 6.5)
    assert info["model"] == "tiny-sd15" and re.fullmatch(r"[0-9a-f]{64}", info["model_hash"])
    # tiny models are hashed in full, to the same value the model manager reports
    assert info["meta"]["model_hash_kind"] == "sha256"
    assert info["model_hash"] == registry_sha256(blender, "tiny-sd15")
    assert info["meta"]["owner"]["name"] == "admin" and info["parent"] is None
    # params: exactly generate's arguments for this one image
    p = info["params"]
    assert {k: p[k] for k in BASE} == BASE and p["seed"] == 8 and p["batch"] == 1 and "recall" not in p
    assert info["graph"]["nodes"]["denoise1"]["type"] == "denoise"
    # pixels: the layer ref is the result blob; the PNG carries the same pixels and the metadata
    assert info["layer"]["sha256"] == layers[1]["sha256"] and info["layer"]["format"] == "rgba8"
    png = Image.open(io.BytesIO(info["png"]))
    assert np.array_equal(np.asarray(png.convert("RGBA")), fetch(blender, layers[1]))
    meta = json.loads(png.info["paintbridge"])
    assert meta["id"] == ids[1] and meta["params"] == p and meta["graph"] == info["graph"]
    # the file lives in a date folder of the data dir
    day = Path(*[f"{n:0{w}d}" for n, w in zip(__import__("time").localtime(info["created"])[:3], (4, 2, 2))])
    assert (engine_server.data_dir / "images" / day / f"{ids[1]}.png").read_bytes() == info["png"]
    # thumbnail: a WebP blob the owner can read, inline in images.get
    th = info["thumbnail"]
    assert th["format"] == "webp" and max(th["w"], th["h"]) <= 256
    assert blender.download(th["sha256"]) == th["data"]
    assert Image.open(io.BytesIO(th["data"])).format == "WEBP"


def test_source_argument_sets_app_and_document(blender):
    _, layers = run(blender, "generate", {**BASE, "seed": 3, "source": {"app": "gimp", "document": "cat.xcf"}})
    iid = layers[0]["image_id"]
    got = blender.call("images.list", {"app": "gimp", "document": "cat.xcf"})["images"]
    assert [im["id"] for im in got] == [iid]
    assert blender.call("images.get", {"image": iid})["params"]["source"] == {"app": "gimp", "document": "cat.xcf"}


def test_recall_reproduces_bit_identical_and_overrides(krita, blender, made):
    _, layers = made
    iid, sha = layers[1]["image_id"], layers[1]["sha256"]
    reply = blender.call("generate", {"recall": iid})
    assert reply["seed"] == 8
    _, again = run(blender, "generate", {"recall": iid})
    assert again[0]["sha256"] == sha                                   # same params, same model: same pixels
    info = blender.call("images.get", {"image": again[0]["image_id"]})
    assert info["parent"] == iid and info["seed"] == 8 and info["prompt"] == BASE["prompt"]
    assert info["app"] == "blender"
    # given arguments override the recalled ones; the rest (seed included) is kept
    _, other = run(blender, "generate", {"recall": iid, "steps": 3, "prompt": "a blue fox"})
    info = blender.call("images.get", {"image": other[0]["image_id"]})
    assert (info["steps"], info["prompt"], info["seed"], info["guidance"]) == (3, "a blue fox", 8, 6.5)
    assert other[0]["sha256"] != sha
    # bad recalls are refused before queueing
    assert errcode(blender.call, "generate", {"recall": "0123456789abcdef"}).code == "not_found"
    assert errcode(blender.call, "generate", {"recall": iid, "width": 60, "height": 64}).code == "bad_request"


def test_import_png_gives_params_back(blender, made):
    _, layers = made
    iid = layers[0]["image_id"]
    png = blender.call("images.get", {"image": iid, "png": True})["png"]
    got = blender.call("images.import", {"data": png})
    assert got["image"] == iid and got["params"]["seed"] == 7 and got["meta"]["prompt"] == BASE["prompt"]
    sha = blender.upload(png)
    assert blender.call("images.import", {"sha256": sha})["params"] == got["params"]
    # recall from a file: generate with the imported params reproduces the pixels
    _, again = run(blender, "generate", got["params"])
    assert again[0]["sha256"] == layers[0]["sha256"]
    # PNGs without our metadata, and non-PNG data, get a clear bad_request
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (1, 2, 3, 255)).save(buf, "PNG")
    e = errcode(blender.call, "images.import", {"data": buf.getvalue()})
    assert e.code == "bad_request" and "no Paintbridge metadata" in e.message
    e = errcode(blender.call, "images.import", {"data": b"GIF89a not a png"})
    assert e.code == "bad_request" and "not a PNG" in e.message
    assert errcode(blender.call, "images.import", {}).code == "bad_request"


def test_lineage_from_refining_a_gallery_image(krita, made):
    _, layers = made
    src = layers[0]
    layer = {k: src[k] for k in ("sha256", "w", "h", "format", "x", "y")}
    _, out = run(krita, "generate", {"mode": "img2img", "model": "tiny-sd15", "image": layer, "strength": 0.5,
                                     "steps": 2, "seed": 1})
    assert krita.call("images.get", {"image": out[0]["image_id"]})["parent"] == src["image_id"]


def test_graph_jobs_are_recorded_with_their_graph(krita):
    graph = {"nodes": {"m": {"type": "load_model", "model": "tiny-sd15"},
                       "p": {"type": "prompt", "text": "graph fox", "negative": "neg"},
                       "n": {"type": "noise", "seed": 11, "width": 64, "height": 64},
                       "d": {"type": "denoise", "steps": 2, "guidance": 3.0}, "v": {"type": "vae_decode"},
                       "o": {"type": "output", "name": "fox"}},
             "edges": [{"from": ["m", "model"], "to": ["p", "model"]}, {"from": ["m", "model"], "to": ["d", "model"]},
                       {"from": ["p", "conditioning"], "to": ["d", "conditioning"]},
                       {"from": ["n", "noise"], "to": ["d", "noise"]}, {"from": ["m", "model"], "to": ["v", "model"]},
                       {"from": ["d", "latents"], "to": ["v", "latents"]},
                       {"from": ["v", "image"], "to": ["o", "image"]}]}
    _, layers = run(krita, "graph.submit", {"graph": graph})
    info = krita.call("images.get", {"image": layers[0]["image_id"]})
    assert info["params"] is None and info["graph"] == graph and info["mode"] == "graph"
    assert (info["prompt"], info["negative_prompt"], info["seed"], info["steps"], info["model"]) == \
        ("graph fox", "neg", 11, 2, "tiny-sd15")
    e = errcode(krita.call, "generate", {"recall": layers[0]["image_id"]})
    assert e.code == "bad_request" and "graph" in e.message


def test_boards_star_search_paging_delete(engine_server):
    c = new_user(engine_server)
    ids = []
    for i, prompt in enumerate(["a green frog", "a red fox", "a Red panda"]):
        _, layers = run(c, "generate", {**BASE, "prompt": prompt, "steps": 1, "seed": 100 + i})
        ids.append(layers[0]["image_id"])
    listed = c.call("images.list", {})
    assert [im["id"] for im in listed["images"]] == ids[::-1] and listed["total"] == 3
    assert listed["images"][0]["thumbnail"]["format"] == "webp" and "data" not in listed["images"][0]["thumbnail"]
    assert "data" in c.call("images.list", {"thumbnails": True})["images"][0]["thumbnail"]
    # paging: cursor and offset
    page1 = c.call("images.list", {"limit": 2})
    page2 = c.call("images.list", {"limit": 2, "cursor": page1["next_cursor"]})
    assert [im["id"] for im in page1["images"] + page2["images"]] == ids[::-1] and page2["next_cursor"] is None
    assert [im["id"] for im in c.call("images.list", {"limit": 1, "offset": 1})["images"]] == [ids[1]]
    # a last page that is exactly full says so: no cursor to a page that would be empty
    full = c.call("images.list", {"limit": 3})
    assert len(full["images"]) == 3 and full["next_cursor"] is None
    # text search over the prompt (words, case-insensitive); LIKE wildcards are literal
    assert {im["id"] for im in c.call("images.list", {"q": "red"})["images"]} == {ids[1], ids[2]}
    assert [im["id"] for im in c.call("images.list", {"q": "RED fox"})["images"]] == [ids[1]]
    assert c.call("images.list", {"q": "%"})["images"] == []
    # star
    assert c.call("images.star", {"image": ids[0]}) == {"starred": True}
    assert [im["id"] for im in c.call("images.list", {"starred": True})["images"]] == [ids[0]]
    c.call("images.star", {"image": ids[0], "starred": False})
    assert c.call("images.list", {"starred": True})["images"] == []
    # boards
    board = c.call("boards.create", {"name": "Foxes"})["board"]
    assert errcode(c.call, "boards.create", {"name": "Foxes"}).code == "bad_request"
    assert c.call("images.move", {"images": [ids[1], ids[2]], "board": board["id"]}) == {"moved": 2}
    assert {im["id"] for im in c.call("images.list", {"board": board["id"]})["images"]} == {ids[1], ids[2]}
    assert [im["id"] for im in c.call("images.list", {"unsorted": True})["images"]] == [ids[0]]
    assert c.call("images.get", {"image": ids[1]})["board"] == board["id"]
    renamed = c.call("boards.rename", {"board": board["id"], "name": "Red things"})["board"]
    assert renamed["name"] == "Red things" and renamed["count"] == 2
    assert [(b["name"], b["count"]) for b in c.call("boards.list", {})["boards"]] == [("Red things", 2)]
    c.call("images.move", {"images": [ids[2]], "board": None})
    assert c.call("boards.delete", {"board": board["id"]}) == {"unsorted": 1}
    assert c.call("boards.list", {})["boards"] == []
    assert c.call("images.list", {"unsorted": True})["total"] == 3
    assert errcode(c.call, "images.move", {"images": [ids[0]], "board": board["id"]}).code == "not_found"
    # delete: the row and the PNG go, the pixel blob stays readable
    sha = c.call("images.get", {"image": ids[0]})["layer"]["sha256"]
    files = list((engine_server.data_dir / "images").rglob(f"{ids[0]}.png"))
    assert len(files) == 1
    c.call("images.delete", {"image": ids[0]})
    assert not files[0].exists()
    assert errcode(c.call, "images.get", {"image": ids[0]}).code == "not_found"
    assert c.call("images.list", {})["total"] == 2 and c.download(sha)
    # typed errors for bad arguments
    assert errcode(c.call, "images.list", {"limit": 0}).code == "bad_request"
    assert errcode(c.call, "images.list", {"bogus": 1}).code == "bad_request"
    assert errcode(c.call, "images.get", {"image": "not-an-id"}).code == "bad_request"
    c.close()


def test_isolation_between_users_and_admin_sees_all(engine_server):
    ana, bob = new_user(engine_server), new_user(engine_server)
    admin = app_client(engine_server, "blender")
    _, layers = run(ana, "generate", {**BASE, "steps": 1, "seed": 5})
    iid = layers[0]["image_id"]
    board = ana.call("boards.create", {"name": "mine"})["board"]
    ana.call("images.move", {"images": [iid], "board": board["id"]})
    for op, args in [("images.get", {"image": iid}), ("images.star", {"image": iid}),
                     ("images.delete", {"image": iid}), ("images.move", {"images": [iid], "board": None}),
                     ("boards.rename", {"board": board["id"], "name": "x"}), ("boards.delete", {"board": board["id"]}),
                     ("generate", {"recall": iid})]:
        assert errcode(bob.call, op, args).code == "not_found", op
    assert bob.call("images.list", {"everyone": True})["images"] == []   # everyone is for admins only
    assert bob.call("boards.list", {"everyone": True})["boards"] == []
    # bob cannot put his image on ana's board either
    _, mine = run(bob, "generate", {**BASE, "steps": 1, "seed": 6})
    assert errcode(bob.call, "images.move", {"images": [mine[0]["image_id"]], "board": board["id"]}).code == \
        "not_found"
    # admins see all
    assert admin.call("images.get", {"image": iid})["owner"] == ana.user["id"]
    assert iid not in {im["id"] for im in admin.call("images.list", {"limit": 500})["images"]}
    assert iid in {im["id"] for im in admin.call("images.list", {"limit": 500, "everyone": True})["images"]}
    assert board["id"] in {b["id"] for b in admin.call("boards.list", {"everyone": True})["boards"]}
    assert ana.call("images.get", {"image": iid})["board"] == board["id"]
    for c in (ana, bob, admin):
        c.close()


def test_gallery_survives_a_restart(spawn_engine, demo_models):
    eng = spawn_engine("--models", str(demo_models))
    c = app_client(eng, "krita")
    _, layers = run(c, "generate", {**BASE, "steps": 1, "seed": 2})
    c.close()
    eng.restart()
    c = app_client(eng, "blender")
    info = c.call("images.get", {"image": layers[0]["image_id"], "png": True})
    assert info["app"] == "krita" and Image.open(io.BytesIO(info["png"])).size == (64, 64)
    c.close()
