"""Faults: kill -9 mid-job and mid-upload, a client that disconnects mid-job, a full data folder, a corrupt
model, a pickled checkpoint, and a job that runs out of memory. Nothing finished is lost; the daemon keeps
serving; every failure is a clear, typed error."""

from __future__ import annotations

import hashlib
import os
import pickle
import resource
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from protocol.errors import ProtocolError

from .helpers import copy_graph, upload_layer, wait_job


def check_store(data_dir: Path):
    """The database is consistent, no temp file survives, and every visible blob holds exactly its hash."""
    con = sqlite3.connect(data_dir / "paintbridge.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = dict(con.execute("SELECT sha256, size FROM blobs").fetchall())
    con.close()
    blobs = data_dir / "blobs"
    assert not any((blobs / "tmp").iterdir())
    for sub in blobs.iterdir():
        if sub.name == "tmp":
            continue
        for f in sub.iterdir():
            assert hashlib.sha256(f.read_bytes()).hexdigest() == f.name, f"partial blob visible: {f}"
    for sha, size in rows.items():   # every recorded blob is there, whole
        assert (blobs / sha[:2] / sha).stat().st_size == size


def test_disconnect_mid_job_then_kill_9_mid_job_and_mid_upload(spawn_engine, demo_models):
    eng = spawn_engine("--models", str(demo_models))
    c = eng.client()
    # finished results from before the crash
    done = []
    for i in range(3):
        layer, data = upload_layer(c, seed=i)
        job = c.call("graph.submit", {"graph": copy_graph(layer)})["job"]
        info = wait_job(c, job)
        assert info["status"] == "completed"
        done.append((job, info["layers"], data))

    # a client that disconnects mid-job gets its result after reconnecting
    job = c.call("generate", {"model": "tiny-sd15", "prompt": "x", "width": 64, "height": 64, "steps": 6,
                              "seed": 3})["job"]
    c.next_event(120, name="job.started", match=lambda e: e.data["job"] == job)
    c.close()
    c = eng.client()
    info = wait_job(c, job)
    assert info["status"] == "completed" and len(info["layers"]) == 1
    lay = info["layers"][0]
    assert len(c.download(lay["sha256"])) == lay["w"] * lay["h"] * 4
    done.append((job, info["layers"], None))

    # now kill -9 while a long job runs and a chunked upload is being written
    long_job = c.call("generate", {"model": "tiny-sd15", "prompt": "x", "width": 64, "height": 64, "steps": 200,
                                   "seed": 1})["job"]
    c.next_event(120, name="job.progress", match=lambda e: e.data["job"] == long_job)
    big = os.urandom(6 * 1024 * 1024)
    big_sha = hashlib.sha256(big).hexdigest()
    chunk = 1024 * 1024
    for off in range(0, 2 * chunk, chunk):   # two chunks acknowledged: a temp file exists
        c.call("blob.put", {"upload": "big", "offset": off, "data": big[off:off + chunk], "final": False})
    assert any((eng.data_dir / "blobs" / "tmp").iterdir())

    def feed():   # keep writing the rest, final chunk included, while the process dies
        for off in range(2 * chunk, len(big), chunk):
            c.request("blob.put", {"upload": "big", "offset": off, "data": big[off:off + chunk],
                                   "final": off + chunk >= len(big)})
    t = threading.Thread(target=feed)
    t.start()
    eng.kill()
    t.join()
    c.close()

    eng.start()
    check_store(eng.data_dir)
    c = eng.client()
    info = c.call("job.get", {"job": long_job})
    assert info["status"] == "failed" and info["error"]["code"] == "interrupted", info
    for job, layers, data in done:   # every finished result survived
        info = c.call("job.get", {"job": job})
        assert info["status"] == "completed" and info["layers"] == layers
        for lay in layers:
            got = c.download(lay["sha256"])
            assert len(got) == lay["w"] * lay["h"] * 4
            if data is not None:
                assert got == data
    if c.call("blob.has", {"hashes": [big_sha]})["missing"]:
        # the upload did not complete before the kill: it is gone, and must be sent again from 0
        with pytest.raises(ProtocolError) as e:
            c.call("blob.put", {"upload": "big", "offset": 2 * chunk, "data": big[2 * chunk:3 * chunk],
                                "final": False})
        assert e.value.details == {"expected": 0}
    else:   # it did complete: then it is whole
        assert c.download(big_sha) == big
    # and the engine works normally
    layer, data = upload_layer(c, seed=99)
    info = wait_job(c, c.call("graph.submit", {"graph": copy_graph(layer)})["job"])
    assert info["status"] == "completed" and c.download(info["layers"][0]["sha256"]) == data
    c.close()


def test_full_data_folder(spawn_engine, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root/CAP_SYS_ADMIN): {res.stderr.decode()}")
    try:
        eng = spawn_engine(data_dir=mnt / "data")
        c = eng.client()
        ballast = mnt / "ballast"
        free = shutil.disk_usage(mnt).free
        ballast.write_bytes(b"\0" * max(0, free - 600 * 1024))   # leave ~600 KiB
        with pytest.raises(ProtocolError) as e:
            c.call("blob.put", {"data": os.urandom(1024 * 1024)})
        assert e.value.code == "internal" and "storage" in e.value.message, e.value
        with pytest.raises(ProtocolError) as e:   # a chunked upload that hits the full disk is dropped whole
            for off in range(0, 2 * 1024 * 1024, 256 * 1024):
                c.call("blob.put", {"upload": "fill", "offset": off, "data": os.urandom(256 * 1024),
                                    "final": False})
        assert e.value.code in ("internal", "bad_request"), e.value
        assert not any((mnt / "data" / "blobs" / "tmp").iterdir())   # no partial temp file left
        assert c.call("ping")
        ballast.unlink()
        data = os.urandom(1024 * 1024)
        sha = c.upload(data)   # space again: works
        assert c.download(sha) == data
        c.close()
        eng.stop()
        check_store(mnt / "data")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_corrupt_model_and_pickled_checkpoint(spawn_engine, demo_models, tmp_path):
    bad = tmp_path / "bad-models"
    bad.mkdir()
    (bad / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + os.urandom(100))
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    (bad / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": Evil()}))

    eng = spawn_engine("--models", str(demo_models), "--models", str(bad))
    c = eng.client()
    for name in ("broken", "evil"):
        try:
            job = c.call("generate", {"model": name, "prompt": "x", "width": 64, "height": 64, "steps": 1})["job"]
        except ProtocolError as exc:   # refused before queueing
            assert exc.code == "bad_request" and exc.message, exc
            continue
        info = wait_job(c, job)
        assert info["status"] == "failed" and info["error"]["code"] in ("bad_request", "internal")
        assert name in info["error"]["message"] or "model" in info["error"]["message"].lower(), info["error"]
    assert not marker.exists(), "a .ckpt was unpickled"
    # the daemon keeps serving, good models still work
    job = c.call("generate", {"model": "tiny-sd15", "prompt": "x", "width": 64, "height": 64, "steps": 1})["job"]
    assert wait_job(c, job)["status"] == "completed"
    c.close()


def test_out_of_memory_in_a_job(spawn_engine, tmp_path):
    """Provoked honestly: the engine process gets a real address-space limit (RLIMIT_AS via prlimit, nothing
    inside the engine knows about the test), then a graph asks for a 1 GiB image."""
    data = tmp_path / "oom"
    data.mkdir()
    (data / "config.toml").write_text("[limits]\nmax_pixels = 300000000\n")
    eng = spawn_engine(data_dir=data)
    c = eng.client()
    layer, _ = upload_layer(c)
    assert wait_job(c, c.call("graph.submit", {"graph": copy_graph(layer)})["job"])["status"] == "completed"
    pid = eng.proc.pid
    vm = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmSize:")) * 1024
    old = resource.prlimit(pid, resource.RLIMIT_AS)
    resource.prlimit(pid, resource.RLIMIT_AS, (vm + 512 * 1024 * 1024, old[1]))
    try:
        g = {"nodes": {"i": {"type": "image_input", "layer": layer},
                       "r": {"type": "resize", "width": 16384, "height": 16384},
                       "o": {"type": "output"}},
             "edges": [{"from": ["i", "image"], "to": ["r", "image"]}, {"from": ["r", "image"], "to": ["o", "image"]}]}
        info = wait_job(c, c.call("graph.submit", {"graph": g})["job"])
        assert info["status"] == "failed", info
        assert "out of memory" in info["error"]["message"], info["error"]
        assert c.call("ping")
    finally:
        resource.prlimit(pid, resource.RLIMIT_AS, old)
    layer2, data2 = upload_layer(c, seed=5)
    info = wait_job(c, c.call("graph.submit", {"graph": copy_graph(layer2)})["job"])
    assert info["status"] == "completed" and c.download(info["layers"][0]["sha256"]) == data2
    c.close()


def test_graph_cannot_bypass_the_pixel_and_step_budgets(spawn_engine, tmp_path):
    data = tmp_path / "budget"
    data.mkdir()
    (data / "config.toml").write_text("[limits]\nmax_pixels = 4096\nmax_steps = 3\nmax_batch = 1\n")
    eng = spawn_engine(data_dir=data)
    c = eng.client()
    layer, _ = upload_layer(c)
    g = {"nodes": {"i": {"type": "image_input", "layer": layer}, "r": {"type": "resize", "width": 128,
                                                                       "height": 128},
                   "o": {"type": "output"}},
         "edges": [{"from": ["i", "image"], "to": ["r", "image"]}, {"from": ["r", "image"], "to": ["o", "image"]}]}
    with pytest.raises(ProtocolError) as e:
        c.call("graph.submit", {"graph": g})
    assert e.value.code == "bad_request" and e.value.details["node"] == "r" and "budget" in e.value.message
    g["nodes"]["r"].update(width=64, height=64)
    assert wait_job(c, c.call("graph.submit", {"graph": g})["job"])["status"] == "completed"
    from engine.config import Limits
    from engine.errors import BadRequest
    from engine.budgets import check_graph_budget
    g2 = {"nodes": {"n": {"type": "noise", "width": 64, "height": 64}, "d1": {"type": "denoise", "steps": 4},
                    "d2": {"type": "denoise", "steps": 1}}}
    with pytest.raises(BadRequest) as e2:
        check_graph_budget(g2, Limits(max_steps=3))
    assert e2.value.details == {"node": "d1", "field": "steps"}
    with pytest.raises(BadRequest) as e2:   # two denoise nodes = a batch of two
        check_graph_budget(g2, Limits(max_steps=4, max_batch=1))
    assert "max_batch" in e2.value.message
    c.close()
