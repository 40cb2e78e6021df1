"""A finished job is answered first and archived to the gallery after (issue 15 item 13): job.result goes out as
soon as the result blobs and the job row are durable, the gallery's PNG, thumbnail and row follow, and
`images.added` says when; a crash between the two loses nothing (the next start archives the job)."""

from __future__ import annotations


import pytest

from protocol.errors import ProtocolError

JOB = {"model": "tiny-sd15", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 7,
       "batch": 2}


def events_of(client, job: str, until: str, timeout: float = 300) -> list:
    """Every event of this job, in arrival order, up to and including the first `until`."""
    seen = []
    while True:
        ev = client.next_event(timeout, match=lambda e: e.data.get("job") == job)
        seen.append(ev)
        assert ev.name not in ("job.failed", "job.canceled"), ev.data
        if ev.name == until:
            return seen


def test_job_result_comes_before_the_gallery_entry_and_images_added_follows(engine_server):
    c = engine_server.client()
    job = c.call("generate", JOB)["job"]
    seen = events_of(c, job, "images.added")
    names = [e.name for e in seen]
    assert names.index("job.result") < names.index("images.added"), names
    layers = next(e for e in seen if e.name == "job.result").data["layers"]
    added = seen[-1].data["images"]
    # job.result names each layer's gallery entry; images.added carries those entries, in layer order
    assert [lay["image_id"] for lay in layers] == [img["id"] for img in added]
    assert [img["layer"]["sha256"] for img in added] == [lay["sha256"] for lay in layers]
    assert all(img["job"] == job and img["thumbnail"] for img in added)
    for lay in layers:
        assert c.call("images.get", {"image": lay["image_id"]})["job"] == job
    c.close()


def test_an_image_id_from_job_result_is_found_at_once(engine_server):
    """images.* answer after the archive of every job whose result the client may have seen."""
    c = engine_server.client()
    job = c.call("generate", {**JOB, "batch": 1, "seed": 8})["job"]
    layer = events_of(c, job, "job.result")[-1].data["layers"][0]
    assert c.call("images.get", {"image": layer["image_id"]})["job"] == job
    assert layer["image_id"] in [i["id"] for i in c.call("images.list", {"limit": 5})["images"]]
    c.close()


def test_a_result_not_archived_when_the_engine_died_is_archived_at_the_next_start(spawn_engine, demo_models):
    eng = spawn_engine("--models", str(demo_models))
    # a file where the gallery's folder goes: every archive fails, as if the engine had died before it ran
    blocker = eng.data_dir / "images"
    blocker.write_bytes(b"")
    c = eng.client()
    job = c.call("generate", JOB)["job"]
    layers = events_of(c, job, "job.result")[-1].data["layers"]
    assert all(lay.get("image_id") for lay in layers), layers   # named before it was archived
    with pytest.raises(ProtocolError) as e:
        c.call("images.get", {"image": layers[0]["image_id"]})
    assert e.value.code == "not_found"
    c.close()
    eng.kill()   # kill -9: nothing on the way out gets a second chance

    blocker.unlink()
    eng.start()
    c = eng.client()
    assert c.call("job.get", {"job": job})["layers"] == layers   # the result itself was never at risk
    listed = {i["id"]: i for i in c.call("images.list", {"limit": 10})["images"]}
    for lay in layers:
        assert lay["image_id"] in listed and listed[lay["image_id"]]["layer"]["sha256"] == lay["sha256"]
        info = c.call("images.get", {"image": lay["image_id"], "png": True})
        assert info["png"].startswith(b"\x89PNG") and info["job"] == job
    assert len(listed) == len(layers)   # archived once
    c.close()
    # archived for good: a second restart records nothing new
    eng.stop()
    eng.start()
    c = eng.client()
    assert len(c.call("images.list", {"limit": 10})["images"]) == len(layers)
    c.close()
