"""Blob garbage collection (engine/store/gc.py) through real engine processes, real SQLite and real files.

Time is not waited for: a test ages its own blobs (blobs.touched and the file's mtime) and jobs directly in the
database, which a running engine shares safely (WAL). Each test ages only the blobs it made, so the shared
engine's other blobs are untouched; counts are therefore checked with >=.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid

import pytest

from .helpers import EngineProc, cli, errcode, layer_ref, new_user, wait_job

DAY = 24 * 3600.0
OLD = 30 * DAY          # older than both default retentions (24 h uploads, 7 days jobs)
TXT = {"mode": "txt2img", "model": "tiny-sd15", "prompt": "gc", "width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def eng(tmp_path_factory, demo_models):
    """An engine with automatic GC off (gc_interval_min = 0): only the tests' own runs collect."""
    data = tmp_path_factory.mktemp("gc")
    (data / "config.toml").write_text("[blobs]\ngc_interval_min = 0\n")
    proc = EngineProc(data, ["--models", str(demo_models)]).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def admin(eng):
    c = eng.client(reconnect=False)
    yield c
    c.close()


def db(engine) -> sqlite3.Connection:
    return sqlite3.connect(engine.data_dir / "paintbridge.db", timeout=30, isolation_level=None)


def age_blobs(engine, shas, by=OLD):
    """Pretend these blobs were last uploaded/used `by` seconds ago (row and file)."""
    con = db(engine)
    try:
        for sha in shas:
            con.execute("UPDATE blobs SET touched = touched - ?, created = created - ? WHERE sha256 = ?",
                        [by, by, sha])
            path = engine.data_dir / "blobs" / sha[:2] / sha
            if path.exists():
                t = path.stat().st_mtime - by
                os.utime(path, (t, t))
    finally:
        con.close()


def age_job(engine, job, by=OLD):
    con = db(engine)
    try:
        con.execute("UPDATE jobs SET created = created - ?, started = started - ?, finished = finished - ? "
                    "WHERE id = ?", [by, by, by, job])
    finally:
        con.close()


def exists(client, sha) -> bool:
    """blob.has: note that a "have it" answer counts as use (it refreshes the blob's retention)."""
    return not client.call("blob.has", {"hashes": [sha]})["missing"]


def gc(client, dry_run=False) -> dict:
    res = client.call("blobs.gc", {"dry_run": dry_run}, timeout=300)
    assert set(res) == {"deleted", "bytes", "kept"} and all(isinstance(v, int) for v in res.values()), res
    return res


def rgba(n=16) -> bytes:
    return os.urandom(n * n * 4)


# ---- uploads ---------------------------------------------------------------------------------------------------
def test_old_upload_is_collected_fresh_one_kept_and_can_be_sent_again(eng, admin):
    old_data, fresh_data = os.urandom(5000), os.urandom(3000)
    old, fresh = admin.upload(old_data), admin.upload(fresh_data)
    age_blobs(eng, [old])
    res = gc(admin)
    assert res["deleted"] >= 1 and res["bytes"] >= len(old_data) and res["kept"] >= 1
    assert errcode(admin.call, "blob.get", {"sha256": old}).code == "not_found"
    assert not exists(admin, old)
    assert not (eng.data_dir / "blobs" / old[:2] / old).exists()
    con = db(eng)
    assert con.execute("SELECT COUNT(*) FROM blob_owners WHERE sha256 = ?", [old]).fetchone()[0] == 0
    assert con.execute("SELECT COUNT(*) FROM blobs WHERE sha256 = ?", [old]).fetchone()[0] == 0
    con.close()
    assert admin.download(fresh) == fresh_data
    # gone means "upload it again", which works like the first time
    assert admin.upload(old_data) == old and admin.download(old) == old_data


def test_dry_run_deletes_nothing(eng, admin):
    data = os.urandom(4000)
    sha = admin.upload(data)
    age_blobs(eng, [sha])
    res = gc(admin, dry_run=True)
    assert res["deleted"] >= 1 and res["bytes"] >= len(data)
    assert admin.download(sha) == data
    again = gc(admin, dry_run=True)   # still there to be counted
    assert again["deleted"] >= 1
    assert gc(admin)["deleted"] >= 1
    assert not exists(admin, sha)


def test_blob_has_and_put_of_an_old_blob_keep_it(eng, admin):
    """blob.has answering "have it", or a put of bytes the engine already holds, count as use: the client is
    about to reference the blob, so a GC right after must not delete it."""
    a, b = os.urandom(2000), os.urandom(2000)
    sa, sb = admin.upload(a), admin.upload(b)
    age_blobs(eng, [sa, sb])
    assert admin.call("blob.has", {"hashes": [sa]})["missing"] == []
    assert admin.call("blob.put", {"data": b})["sha256"] == sb
    gc(admin)
    assert admin.download(sa) == a and admin.download(sb) == b


def test_orphan_files_and_rows_without_files_are_cleaned(eng, admin):
    # a file with no row (a crash between write and record), old: goes
    data = os.urandom(1000)
    orphan = hashlib.sha256(data).hexdigest()
    path = eng.data_dir / "blobs" / orphan[:2] / orphan
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    t = time.time() - OLD
    os.utime(path, (t, t))
    # a row whose file vanished, old: the row goes (blob.has already says missing)
    sha = admin.upload(os.urandom(1000))
    (eng.data_dir / "blobs" / sha[:2] / sha).unlink()
    age_blobs(eng, [sha])
    gc(admin)
    assert not path.exists()
    con = db(eng)
    assert con.execute("SELECT COUNT(*) FROM blobs WHERE sha256 = ?", [sha]).fetchone()[0] == 0
    con.close()
    assert not exists(admin, sha)


# ---- references ------------------------------------------------------------------------------------------------
def test_gallery_blobs_survive_then_go_after_delete_and_job_retention(eng, admin):
    job = admin.call("generate", {**TXT, "seed": 11})["job"]
    info = wait_job(admin, job)
    assert info["status"] == "completed", info
    lay = info["layers"][0]
    img = admin.call("images.get", {"image": lay["image_id"]})
    thumb = img["thumbnail"]["sha256"]
    pixels, webp = admin.download(lay["sha256"]), admin.download(thumb)
    age_blobs(eng, [lay["sha256"], thumb])
    age_job(eng, job)   # the job no longer keeps them: only the gallery does
    gc(admin)
    # (blob.get, unlike blob.has, does not count as use: it does not extend a blob's life)
    assert admin.download(lay["sha256"]) == pixels and admin.download(thumb) == webp

    admin.call("images.delete", {"image": lay["image_id"]})
    age_job(eng, job, by=-OLD)   # back to now: a recent job still keeps its results (job.get + blob.get)
    gc(admin)
    assert admin.download(lay["sha256"]) == pixels

    age_job(eng, job)   # now past job retention, and nothing else references them
    gc(admin)
    assert errcode(admin.call, "blob.get", {"sha256": lay["sha256"]}).code == "not_found"
    assert errcode(admin.call, "blob.get", {"sha256": thumb}).code == "not_found"
    assert admin.call("job.get", {"job": job})["status"] == "completed"   # the job record itself stays


def test_a_gallery_image_keeps_its_inputs_for_recall_until_it_is_deleted(eng, admin):
    """Use settings on an image older than the job retention still finds its init image: a gallery image keeps
    the blobs its params name (init image, control images, region masks) as long as it exists."""
    data = rgba(64)
    src = admin.upload(data)
    job = admin.call("generate", {"mode": "img2img", "model": "tiny-sd15", "prompt": "gc", "steps": 2, "seed": 3,
                                  "strength": 0.5, "image": layer_ref(src, 64, 64)})["job"]
    info = wait_job(admin, job)
    assert info["status"] == "completed", info
    image_id = info["layers"][0]["image_id"]
    age_blobs(eng, [src])
    age_job(eng, job)   # past job retention: only the gallery image can keep its input now
    gc(admin)
    assert admin.download(src) == data
    again = admin.call("generate", {"recall": image_id})["job"]   # recall sends the same init image again
    assert wait_job(admin, again)["status"] == "completed"

    age_job(eng, again)
    admin.call("images.delete", {"image": image_id})
    for lay in admin.call("job.get", {"job": again})["layers"]:
        admin.call("images.delete", {"image": lay["image_id"]})
    age_blobs(eng, [src])
    gc(admin)
    assert errcode(admin.call, "blob.get", {"sha256": src}).code == "not_found"


def test_queued_job_input_survives(eng, admin):
    data = rgba(64)
    src = admin.upload(data)
    # a long job holds the worker so the next one stays queued while we collect
    blocker = admin.call("generate", {**TXT, "steps": 200, "seed": 1})["job"]
    job = admin.call("generate", {"mode": "img2img", "model": "tiny-sd15", "prompt": "gc", "steps": 2,
                                  "strength": 0.5, "width": 64, "height": 64, "image": layer_ref(src, 64, 64)})["job"]
    try:
        assert admin.call("job.get", {"job": job})["status"] in ("queued", "running")
        age_blobs(eng, [src])
        age_job(eng, job)   # only its being queued keeps its input, not its age
        gc(admin)
        assert admin.download(src) == data
    finally:
        admin.call("job.cancel", {"job": blocker})
    info = wait_job(admin, job)
    assert info["status"] == "completed", info   # its input was still there when it ran


def test_workflow_layers_survive_until_the_workflow_goes(eng, admin):
    data = rgba(16)
    sha = admin.upload(data)
    graph = {"nodes": {"i": {"type": "image_input", "layer": layer_ref(sha, 16, 16)},
                       "r": {"type": "resize", "width": 8, "height": 8},
                       "o": {"type": "output", "name": "small"}},
             "edges": [{"from": ["i", "image"], "to": ["r", "image"]}, {"from": ["r", "image"], "to": ["o", "image"]}]}
    name = f"gc-{uuid.uuid4().hex[:6]}"
    admin.call("workflows.save", {"name": name, "graph": graph})
    age_blobs(eng, [sha])
    gc(admin)
    assert admin.download(sha) == data
    admin.call("workflows.delete", {"name": name})
    gc(admin)
    assert not exists(admin, sha)


# ---- access, serving, CLI --------------------------------------------------------------------------------------
def test_non_admin_gets_forbidden(eng):
    c = new_user(eng, app="pytest")
    try:
        sha = c.upload(os.urandom(100))
        age_blobs(eng, [sha])
        assert errcode(c.call, "blobs.gc", {}).code == "forbidden"
        assert errcode(c.call, "blobs.gc", {"dry_run": True}).code == "forbidden"
        assert exists(c, sha)   # refused: nothing collected
    finally:
        c.close()


def test_engine_serves_during_and_after_gc(eng, admin):
    shas = [admin.call("blob.put", {"data": os.urandom(64) + i.to_bytes(4, "big")})["sha256"] for i in range(600)]
    age_blobs(eng, shas)   # more than two batches
    out: dict = {}

    def run():
        c = eng.client(reconnect=False)
        try:
            out["res"] = gc(c)
        except BaseException as exc:   # reported below
            out["err"] = exc
        finally:
            c.close()

    t = threading.Thread(target=run)
    t.start()
    served = 0
    while t.is_alive() or served < 3:
        data = os.urandom(500)
        sha = admin.upload(data)
        assert admin.download(sha) == data and admin.call("ping")["time"] > 0
        served += 1
    t.join()
    assert "err" not in out, out.get("err")
    assert out["res"]["deleted"] >= 600
    missing = set(admin.call("blob.has", {"hashes": shas})["missing"])
    assert missing == set(shas)
    job = admin.call("generate", {**TXT, "seed": 3})["job"]
    assert wait_job(admin, job)["status"] == "completed"


def test_cli_stats_and_gc_while_the_engine_runs(eng, admin):
    data = os.urandom(7000)
    sha = admin.upload(data)
    age_blobs(eng, [sha])
    st = json.loads(cli("blobs", "--data-dir", str(eng.data_dir), "stats", "--json"))
    assert st["garbage"] >= 1 and st["garbage_bytes"] >= len(data) and st["blobs"] >= st["garbage"]
    human = cli("blobs", "stats", "--data-dir", str(eng.data_dir))
    assert "garbage" in human
    dry = json.loads(cli("blobs", "gc", "--dry-run", "--json", "--data-dir", str(eng.data_dir)))
    assert dry["dry_run"] and dry["deleted"] >= 1
    assert admin.download(sha) == data
    last = cli("blobs", "gc", "--data-dir", str(eng.data_dir)).strip().splitlines()[-1]
    fields = dict(kv.split("=") for kv in last.split())
    assert int(fields["deleted"]) >= 1 and int(fields["bytes"]) >= len(data)
    assert errcode(admin.call, "blob.get", {"sha256": sha}).code == "not_found"
    assert admin.call("ping")


def test_gc_runs_at_start(spawn_engine):
    e = spawn_engine()   # default config: collection at start and hourly
    c = e.client(reconnect=False)
    old, fresh = c.upload(os.urandom(3000)), c.upload(os.urandom(3000))
    c.close()
    e.stop()
    age_blobs(e, [old])
    e.start()
    c = e.client(reconnect=False)
    try:
        end = time.monotonic() + 120
        while exists(c, old) and time.monotonic() < end:
            time.sleep(0.2)
        assert not exists(c, old)
        assert exists(c, fresh)
    finally:
        c.close()


def test_config_keys(tmp_path):
    from engine.config import load_config

    (tmp_path / "config.toml").write_text("[blobs]\nupload_retention_h = 2\njob_retention_h = 48\n"
                                          "gc_interval_min = 0\n")
    cfg = load_config(tmp_path)
    assert (cfg.blobs.upload_retention_h, cfg.blobs.job_retention_h, cfg.blobs.gc_interval_min) == (2, 48, 0)
    (tmp_path / "config.toml").write_text("[blobs]\nretention = 2\n")
    with pytest.raises(ValueError, match="blobs.retention"):
        load_config(tmp_path)


def test_store_interleavings_with_gc(tmp_path):
    """The store's protocol against GC at the exact points where a writer and a GC run can interleave, with real
    SQLite and files in this process: a writer that found the bytes already stored (write, Upload.finish) and
    records them after a GC run still has them; a GC run before the write means the write stores them again; a
    blob.has/layer check (owned) just before GC keeps the blob."""
    from engine.config import BlobRetention
    from engine.store.owners import owned, record
    from engine.store.blobs import BlobStore
    from engine.store.db import connect
    from engine.store.gc import collect

    store, path = BlobStore(tmp_path / "blobs"), tmp_path / "paintbridge.db"
    conn = connect(path).conn
    keep = BlobRetention()

    def stored_and_aged() -> tuple[bytes, str]:
        data = os.urandom(300)
        sha, size = store.write(data)
        record(conn, sha, size, 1)
        conn.execute("UPDATE blobs SET touched = touched - ? WHERE sha256 = ?", [OLD, sha])
        t = time.time() - OLD
        os.utime(store.path(sha), (t, t))
        return data, sha

    def whole(sha, data):
        assert store.read(sha) == data
        assert conn.execute("SELECT COUNT(*) FROM blobs WHERE sha256 = ?", [sha]).fetchone()[0] == 1

    # write finds the file -> GC -> record: the write refreshed the file, GC keeps it
    data, sha = stored_and_aged()
    store.write(data)
    collect(store, path, keep)
    record(conn, sha, len(data), 1)
    whole(sha, data)

    # the same through a chunked upload
    data, sha = stored_and_aged()
    up = store.begin()
    up.append(data[:100])
    up.append(data[100:])
    assert up.finish() == (sha, len(data))
    collect(store, path, keep)
    record(conn, sha, len(data), 1)
    whole(sha, data)

    # GC first -> write -> record: row and file gone, then both back
    data, sha = stored_and_aged()
    assert collect(store, path, keep)["deleted"] == 1 and not store.exists(sha)
    store.write(data)
    record(conn, sha, len(data), 1)
    whole(sha, data)

    # owned (blob.has "have it", a generate's layer check) -> GC: kept
    data, sha = stored_and_aged()
    assert owned(conn, 1, [sha]) == {sha}
    collect(store, path, keep)
    whole(sha, data)
    assert owned(conn, 2, [sha]) == set()   # someone else's check neither sees nor refreshes it
    conn.execute("UPDATE blobs SET touched = touched - ? WHERE sha256 = ?", [OLD, sha])
    assert owned(conn, 2, [sha]) == set()
    assert collect(store, path, keep)["deleted"] == 1 and not store.exists(sha)
    conn.close()
