"""Hardening, second pass (issue 17): each test failed on the code before its fix."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFilter

from engine.gallery import png as gallery
from engine.errors import BadRequest
from engine.nodes.image import grow_mask
from protocol.client import Client
from protocol.errors import ProtocolError

from .helpers import ROOT, cli


# ---- #4 mask_grow: O(pixels) whatever the radius ---------------------------------------------------------------
@pytest.mark.parametrize("pixels", [1, 2, 3, 7, -1, -4, 40, -40])
def test_grow_mask_equals_pil_rank_filter(pixels):
    rng = np.random.default_rng(abs(pixels))
    gray = (rng.random((37, 53)) > 0.93).astype(np.uint8) * rng.integers(1, 256, (37, 53), dtype=np.uint8)
    if pixels < 0:
        gray = 255 - gray
    size = 2 * abs(pixels) + 1
    filt = ImageFilter.MaxFilter(size) if pixels > 0 else ImageFilter.MinFilter(size)
    want = np.asarray(Image.fromarray(gray, "L").filter(filt))
    assert np.array_equal(grow_mask(gray, pixels), want)


def test_grow_mask_radius_beyond_the_image():
    gray = np.zeros((5, 9), np.uint8)
    gray[2, 4] = 200
    assert np.array_equal(grow_mask(gray, 256), np.full((5, 9), 200, np.uint8))
    assert np.array_equal(grow_mask(gray, -256), np.zeros((5, 9), np.uint8))


def _layer(c, arr, fmt):
    arr = np.ascontiguousarray(arr, np.uint8)
    return {"sha256": c.upload(arr.tobytes()), "w": arr.shape[1], "h": arr.shape[0], "format": fmt, "x": 0, "y": 0}


def test_large_mask_grow_does_not_freeze_the_engine(spine_server):
    """Before: PIL's rank filter, O(pixels * radius^2) holding the GIL - hours for this job, every user's requests
    stalled. Now it finishes and the grown square is exact."""
    n = 1024
    c = spine_server.client()
    gray = np.zeros((n, n), np.uint8)
    gray[n // 2, n // 2] = 255
    patch = np.full((n, n, 4), (10, 200, 30, 255), np.uint8)
    graph = {"nodes": {"base": {"type": "image_input", "layer": _layer(c, np.zeros((n, n, 4)), "rgba8")},
                       "patch": {"type": "image_input", "layer": _layer(c, patch, "rgba8")},
                       "mask": {"type": "mask_input", "layer": _layer(c, gray, "gray8")},
                       "grow": {"type": "mask_grow", "pixels": 256},
                       "paste": {"type": "paste", "feather": 0},
                       "out": {"type": "output", "name": "grown"}},
             "edges": [{"from": ["mask", "mask"], "to": ["grow", "mask"]},
                       {"from": ["base", "image"], "to": ["paste", "base"]},
                       {"from": ["patch", "image"], "to": ["paste", "image"]},
                       {"from": ["grow", "mask"], "to": ["paste", "mask"]},
                       {"from": ["paste", "image"], "to": ["out", "image"]}]}
    job = c.call("graph.submit", {"graph": graph})["job"]
    other = spine_server.client()
    while True:   # the engine keeps answering other requests meanwhile
        assert "time" in other.call("ping", timeout=60)
        try:
            ev = c.next_event(0.2, match=lambda e: e.data.get("job") == job and e.name in ("job.result",
                                                                                         "job.failed"))
            break
        except ProtocolError as exc:
            assert exc.code == "timeout"
    assert ev.name == "job.result", ev.data
    layer = ev.data["layers"][0]
    out = np.frombuffer(c.download(layer["sha256"]), np.uint8).reshape(n, n, 4)
    inside = np.zeros((n, n), bool)
    inside[n // 2 - 256:n // 2 + 257, n // 2 - 256:n // 2 + 257] = True
    assert (out[inside] == (10, 200, 30, 255)).all() and (out[~inside] == 0).all()
    c.close()
    other.close()


# ---- #6 images.import reads chunks, never pixels ----------------------------------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _huge_png_with_meta(side: int, meta_text: str) -> bytes:
    """A side x side RGBA PNG of zeros (tiny on disk), its metadata after the pixel data."""
    comp = zlib.compressobj(9)
    row = b"\0" + bytes(side * 4)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    itxt = gallery.PNG_KEY.encode() + b"\0\1\0\0\0" + zlib.compress(meta_text.encode())
    return (gallery.PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"iTXt", itxt) + _chunk(b"IEND", b""))


def test_read_png_meta_roundtrip_and_damage():
    meta = {"paintbridge": 1, "params": {"prompt": "a fox ✓"}}
    png = gallery.encode_png(np.zeros((4, 4, 4), np.uint8), meta)
    assert gallery.read_png_meta(png) == meta
    for bad in (png[:len(png) // 2], png[:20] + bytes([png[20] ^ 1]) + png[21:]):
        with pytest.raises(BadRequest):
            gallery.read_png_meta(bad)
    bomb = gallery.PNG_KEY.encode() + b"\0\1\0\0\0" + zlib.compress(bytes(64 * 1024 * 1024))
    with pytest.raises(BadRequest, match="larger than"):
        gallery.read_png_meta(gallery.PNG_SIGNATURE + _chunk(b"iTXt", bomb) + _chunk(b"IEND", b""))


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_import_of_a_huge_png_decodes_no_pixels(spawn_engine):
    """Before: the whole 8000x8000 image was decoded to find the chunk after it (+250 MiB per call)."""
    eng = spawn_engine()
    c = eng.client()
    png = _huge_png_with_meta(8000, '{"paintbridge": 1, "params": {"prompt": "x"}}')
    assert len(png) < 1_000_000
    before = _peak_rss_kib(eng.pid)
    res = c.call("images.import", {"data": png})
    assert res["params"] == {"prompt": "x"} and res["image"] is None
    assert _peak_rss_kib(eng.pid) - before < 100 * 1024
    c.close()


# ---- #11 secret.key ---------------------------------------------------------------------------------------------
@pytest.mark.slow   # eight CLI processes
def test_empty_or_short_secret_key_is_refused(tmp_path):
    cli("token", "--data-dir", str(tmp_path))   # first use writes a whole key
    key = tmp_path / "secret.key"
    assert len(bytes.fromhex(key.read_text())) == 32 and key.stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".secret.key")]
    for damaged in ("", "abcd", "zz" * 32):
        key.write_text(damaged)
        res = subprocess.run([sys.executable, "-m", "engine.cli", "token", "--data-dir", str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and "secret.key is damaged" in res.stderr and not res.stdout.strip()
        res = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--port", "0", "--data-dir",
                              str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and "secret.key is damaged" in res.stdout + res.stderr


# ---- #12 users.passwd on your own account needs the current password ------------------------------------------
def test_own_password_change_needs_the_current_one(spine_server):
    cli("users", "--data-dir", str(spine_server.data_dir), "add", "dora", "--password", "dorapw")
    dora = Client(spine_server.url, reconnect=False).connect()
    dora.login("dora", "dorapw")
    for args, code in (({}, "bad_request"), ({"current_password": "guess"}, "forbidden")):
        with pytest.raises(ProtocolError) as e:
            dora.call("users.passwd", {"name": "dora", "password": "stolen", **args})
        assert e.value.code == code and e.value.details == {"field": "current_password"}
    assert dora.call("ping")   # nothing changed: still signed in
    dora.call("users.passwd", {"name": "dora", "password": "dorapw2", "current_password": "dorapw"})
    c = Client(spine_server.url, reconnect=False).connect()
    c.login("dora", "dorapw2")
    # an admin resets another user's password without knowing it
    admin = spine_server.client()
    admin.call("users.passwd", {"name": "dora", "password": "reset"})
    c2 = Client(spine_server.url, reconnect=False).connect()
    c2.login("dora", "reset")
    for x in (dora, c, admin, c2):
        x.close()


# ---- #8, #9 sign-in limits --------------------------------------------------------------------------------------
def test_loopback_addresses_are_one_source_and_names_fold():
    from engine.auth import LoginLimiter

    assert LoginLimiter.keys("Bob", "127.0.0.2") == LoginLimiter.keys("bob", "127.0.0.1") == \
        LoginLimiter.keys("BOB", "::1")
    assert LoginLimiter.keys("bob", "192.0.2.7")[1] == "addr:192.0.2.7"


def test_simultaneous_guesses_are_not_all_evaluated(spine_server):
    """Before: the attempt was counted after scrypt, so 24 parallel guesses were all checked."""
    import threading

    cli("users", "--data-dir", str(spine_server.data_dir), "add", "erin", "--password", "erinpw")
    clients = [Client(spine_server.url, reconnect=False).connect() for _ in range(24)]
    start = threading.Barrier(len(clients))
    codes = []

    def guess(c, i):
        start.wait()
        try:
            c.login("erin", f"guess{i}")
            codes.append("ok")
        except ProtocolError as exc:
            codes.append(exc.code)

    threads = [threading.Thread(target=guess, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(codes) == 24 and "ok" not in codes
    assert codes.count("unauthenticated") <= 5 + 2, codes   # login_failures + login_concurrent
    assert codes.count("rate_limited") >= 24 - 7
    for c in clients:
        c.close()


def test_the_right_password_gets_in_after_the_back_off(spine_server):
    """Before: five failures from any local process locked the right password out for a whole minute."""
    import time

    cli("users", "--data-dir", str(spine_server.data_dir), "add", "fred", "--password", "fredpw")
    c = Client(spine_server.url, reconnect=False).connect()
    for _ in range(5):
        with pytest.raises(ProtocolError) as e:
            c.login("fred", "wrong")
        assert e.value.code == "unauthenticated"
    with pytest.raises(ProtocolError) as e:
        c.login("fred", "fredpw")
    assert e.value.code == "rate_limited" and 0 < e.value.details["retry_after_s"] <= 1.0
    time.sleep(e.value.details["retry_after_s"] + 0.1)
    c.login("fred", "fredpw")
    assert c.call("auth.whoami")["user"]["name"] == "fred"
    c.close()


# ---- #1, #2, #3, #7 connections ---------------------------------------------------------------------------------
@pytest.fixture
def tight_engine(spawn_engine, tmp_path):
    (tmp_path / "config.toml").write_text("[limits]\nmax_connections = 12\nmax_unauthenticated = 4\n"
                                          "header_timeout_s = 1.0\noutbox_bytes = 8388608\n")
    return spawn_engine(data_dir=tmp_path)


def _ws(url, **kw):
    from websockets.sync.client import connect

    return connect(url, compression=None, max_size=None, open_timeout=5, **kw)


def _closed(ws, timeout=5.0):
    """How the server ended the connection: ConnectionClosed (its .rcvd is the close frame, None when the socket
    was just cut), or None if it is still open after timeout."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            ws.recv(timeout)
    except TimeoutError:
        return None
    except ConnectionClosed as exc:
        return exc


def test_bytes_before_sign_in_are_bounded(spine_server):
    """Before: an unauthenticated socket could send frames up to 64 MiB (4x the frame limit) and be answered."""
    ws = _ws(spine_server.url)
    ws.send(bytes(1024 * 1024))   # one 1 MiB frame, no hello
    assert _closed(ws) is not None
    ws = _ws(spine_server.url)    # small frames before sign-in are still answered
    ws.send(b"\x80")
    assert _closed(ws, 1.0) is None
    ws.close()


def test_waiting_for_sign_in_is_capped_oldest_closed_first(tight_engine):
    socks = [_ws(tight_engine.url) for _ in range(5)]   # cap 4
    rcvd = _closed(socks[0]).rcvd
    assert rcvd is not None and rcvd.code == 4401
    assert all(_closed(s, 0.3) is None for s in socks[1:])
    c = tight_engine.client()   # signing in takes a connection out of the waiting room
    assert c.call("ping")
    for s in socks[1:]:
        s.close()
    c.close()


def test_half_sent_requests_are_cut_and_connections_capped(tight_engine):
    """Before: no header deadline and no cap: idle or half-sent requests held descriptors forever."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(tight_engine.url)
    held = []
    for _ in range(12):   # max_connections = 12
        s = socket.create_connection((u.hostname, u.port), timeout=5)
        s.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")   # headers never finished
        held.append(s)
    extra = socket.create_connection((u.hostname, u.port), timeout=5)
    assert extra.recv(1) == b""                            # over the cap: closed at once
    for s in held:                                         # header_timeout_s = 1: each is cut
        assert s.recv(1) == b""
    c = tight_engine.client()                              # and real clients get in again
    assert c.call("ping")
    c.close()
    limits = open(f"/proc/{tight_engine.pid}/limits").read()
    soft = int(next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files")))
    assert soft >= 4096 or soft >= int(subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True,
                                                      text=True).stdout)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_replies_to_a_client_that_never_reads_are_bounded(tight_engine):
    """Before: 40 blob.get replies of 15 MiB were all queued for a reader that never read (+600 MiB)."""
    from protocol import codec

    c = tight_engine.client()
    sha = c.upload(np.random.default_rng(0).integers(0, 256, 15 * 1024 * 1024, dtype=np.uint8).tobytes())
    ws = _ws(tight_engine.url, max_queue=1)
    ws.send(codec.encode(codec.request(1, "hello", {"protocol": 1, "token": tight_engine.token})))
    assert codec.decode(ws.recv(5))["ok"]
    before = _rss_kib(tight_engine.pid)
    for i in range(40):
        ws.send(codec.encode(codec.request(10 + i, "blob.get", {"sha256": sha})))
    import time
    time.sleep(4)
    grown = _rss_kib(tight_engine.pid) - before
    assert grown < 200 * 1024, f"engine grew {grown // 1024} MiB"
    assert c.call("ping")   # the engine serves others meanwhile
    ws.close()
    c.close()


def test_revoked_and_disabled_sessions_are_closed(spine_server):
    """Before: a disabled user's open connection kept receiving its job events (and an admin's, everyone's)."""
    cli("users", "--data-dir", str(spine_server.data_dir), "add", "gina", "--password", "ginapw", "--admin")
    gina = Client(spine_server.url, reconnect=False).connect()
    gina.login("gina", "ginapw")
    raw = _ws(spine_server.url)
    from protocol import codec
    raw.send(codec.encode(codec.request(1, "hello", {"protocol": 1, "token": gina.token})))
    assert codec.decode(raw.recv(5))["ok"]
    admin = spine_server.client()
    admin.call("users.disable", {"name": "gina"})
    rcvd = _closed(raw).rcvd
    assert rcvd is not None and rcvd.code == 4401 and "signed out" in rcvd.reason
    # nothing published after that reaches gina: her client was closed too
    with pytest.raises(ProtocolError) as e:
        gina.call("ping")
    assert e.value.code == "disconnected"
    admin.close()


# ---- #10 upload races -------------------------------------------------------------------------------------------
def _parallel(fns):
    import threading

    start = threading.Barrier(len(fns))
    out = [None] * len(fns)

    def run(i, fn):
        start.wait()
        try:
            out[i] = fn()
        except ProtocolError as exc:
            out[i] = exc.code

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def _upload_temp_files(eng):
    return [p for p in (eng.data_dir / "blobs").rglob("upload.*")]


def test_parallel_upload_starts_respect_the_limit(spawn_engine):
    """Before: the limit was checked before an await and recorded after it: 23 of 40 parallel starts passed."""
    eng = spawn_engine()
    clients = [eng.client() for _ in range(24)]
    out = _parallel([lambda c=c, i=i: c.call("blob.put", {"upload": f"u{i}", "offset": 0, "data": b"x" * 100,
                                                          "final": False})
                     for i, c in enumerate(clients)])
    accepted = [o for o in out if isinstance(o, dict)]
    assert len(accepted) == 8 and out.count("busy") == 16, out   # max_pending_uploads = 8
    assert len(_upload_temp_files(eng)) == 8
    for c in clients:
        c.close()


def test_one_upload_id_started_on_several_connections(spawn_engine):
    """Before: each start made its own temp file and the last one won; the others were orphaned for good."""
    eng = spawn_engine()
    clients = [eng.client() for _ in range(6)]
    out = _parallel([lambda c=c: c.call("blob.put", {"upload": "same", "offset": 0, "data": b"y" * 100,
                                                     "final": False}) for c in clients])
    assert sum(isinstance(o, dict) for o in out) == 1 and out.count("bad_request") == 5, out
    assert len(_upload_temp_files(eng)) == 1
    done = clients[0].call("blob.put", {"upload": "same", "offset": 100, "data": b"z", "final": True})
    assert done["size"] == 101 and not _upload_temp_files(eng)
    for c in clients:
        c.close()


# ---- #5 per-job memory ------------------------------------------------------------------------------------------
def _resize_fan(c, n: int, side: int):
    """n resize nodes fed from one 1x1 upload, all read by paste nodes at the very end (all alive at once)."""
    px = _layer(c, np.zeros((1, 1, 4)), "rgba8")
    nodes = {"src": {"type": "image_input", "layer": px}}
    edges = []
    for i in range(n):
        nodes[f"r{i}"] = {"type": "resize", "width": side - i, "height": side - i}   # distinct: no cache hit
        edges.append({"from": ["src", "image"], "to": [f"r{i}", "image"]})
    prev = "r0"
    for i in range(1, n):
        nodes[f"p{i}"] = {"type": "paste", "feather": 0}
        edges += [{"from": [prev, "image"], "to": [f"p{i}", "base"]},
                  {"from": [f"r{i}", "image"], "to": [f"p{i}", "image"]}]
        prev = f"p{i}"
    nodes["out"] = {"type": "output"}
    edges.append({"from": [prev, "image"], "to": ["out", "image"]})
    return {"nodes": nodes, "edges": edges}


def test_job_memory_is_budgeted_and_freed(spawn_engine, tmp_path):
    """Before: each node's output lived until the job ended, and the budget was per node only."""
    (tmp_path / "config.toml").write_text("[limits]\nmax_job_bytes = 134217728\n")   # 128 MiB
    eng = spawn_engine(data_dir=tmp_path)
    c = eng.client()

    def run(graph):
        job = c.call("graph.submit", {"graph": graph})["job"]
        return c.next_event(300, match=lambda e: e.data.get("job") == job and e.name in ("job.result", "job.failed"))

    # 40 images of 8 MiB all alive at once: 320 MiB > 128 MiB -> a typed failure naming the node
    ev = run(_resize_fan(c, 40, 1448))
    assert ev.name == "job.failed" and ev.data["error"]["code"] == "too_large", ev.data
    assert "max_job_bytes" in ev.data["error"]["message"]
    # the same amount of work in a chain frees each image after its last reader: it runs
    px = _layer(c, np.zeros((1, 1, 4)), "rgba8")
    nodes, edges, prev = {"src": {"type": "image_input", "layer": px}}, [], "src"
    for i in range(40):
        nodes[f"r{i}"] = {"type": "resize", "width": 1448 - i, "height": 1448 - i}
        edges.append({"from": [prev, "image"], "to": [f"r{i}", "image"]})
        prev = f"r{i}"
    nodes["out"] = {"type": "output"}
    edges.append({"from": [prev, "image"], "to": ["out", "image"]})
    ev = run({"nodes": nodes, "edges": edges})
    assert ev.name == "job.result", ev.data
    c.close()


def test_output_nodes_are_capped(spine_server):
    c = spine_server.client()
    px = _layer(c, np.zeros((1, 1, 4)), "rgba8")
    nodes = {"src": {"type": "image_input", "layer": px}}
    nodes.update({f"o{i}": {"type": "output"} for i in range(65)})
    edges = [{"from": ["src", "image"], "to": [f"o{i}", "image"]} for i in range(65)]
    with pytest.raises(ProtocolError) as e:
        c.call("graph.submit", {"graph": {"nodes": nodes, "edges": edges}})
    assert e.value.code == "bad_request" and "max_outputs" in e.value.message
    c.close()


# ---- weak spots: names, Server header -----------------------------------------------------------------------
def test_look_alike_user_names_and_hidden_characters_are_refused(spine_server):
    admin = spine_server.client()
    admin.call("users.create", {"name": "Hal", "password": "halpw"})
    for name, says in (("hal", "confused with"), ("ｈａｌ", "confused with"), ("hаl", "cannot mix"),
                       ("h\u200bal", "printable"), ("h\u202eal", "printable")):
        with pytest.raises(ProtocolError) as e:
            admin.call("users.create", {"name": name, "password": "pppp"})
        assert e.value.code == "bad_request" and says in e.value.message, (name, e.value.message)
    admin.call("users.create", {"name": "Хал", "password": "pppp"})   # one script is fine
    for name in ("a\nb", "x\x07", "\u2066rtl"):
        with pytest.raises(ProtocolError) as e:
            admin.call("boards.create", {"name": name})
        assert e.value.code == "bad_request" and e.value.details == {"field": "name"}
    assert not [b for b in admin.call("boards.list")["boards"] if "\n" in b["name"]]
    admin.close()


def test_server_header_names_no_versions(spine_server):
    import urllib.request

    url = spine_server.url.replace("ws://", "http://").replace("/v1/ws", "/v1/health")
    with urllib.request.urlopen(url, timeout=5) as res:
        assert res.headers["Server"] == "paintbridge"


# ---- weak spot: a workflow's free-form text could pin other users' blobs ----------------------------------------
def test_a_workflow_cannot_pin_another_users_blob(spawn_engine, tmp_path):
    import sqlite3

    (tmp_path / "config.toml").write_text("[blobs]\ngc_interval_min = 0\n")
    eng = spawn_engine(data_dir=tmp_path)
    admin = eng.client()
    theirs = admin.upload(b"admin's private bytes" * 10)
    cli("users", "--data-dir", str(tmp_path), "add", "ivan", "--password", "ivanpw")
    ivan = Client(eng.url, reconnect=False).connect()
    ivan.login("ivan", "ivanpw")
    mine = ivan.upload(bytes(16))
    layer = {"sha256": mine, "w": 2, "h": 2, "format": "rgba8", "x": 0, "y": 0}
    graph = {"nodes": {"i": {"type": "image_input", "layer": layer}, "o": {"type": "output"}},
             "edges": [{"from": ["i", "image"], "to": ["o", "image"]}], "meta": {"pin": theirs}}
    ivan.call("workflows.save", {"name": "pinner", "graph": graph, "description": f"see {theirs}"})
    con = sqlite3.connect(tmp_path / "paintbridge.db", isolation_level=None)
    con.execute("UPDATE blobs SET touched = touched - 1e7, created = created - 1e7")
    con.close()
    for sha in (theirs, mine):
        p = tmp_path / "blobs" / sha[:2] / sha
        os_t = p.stat().st_mtime - 1e7
        import os
        os.utime(p, (os_t, os_t))
    admin.call("blobs.gc", {})
    assert admin.call("blob.has", {"hashes": [theirs]})["missing"] == [theirs]   # collected: not pinned
    assert ivan.download(mine) == bytes(16)                                      # ivan's own layer kept
    admin.close()
    ivan.close()


# ---- weak spot: models.scan and symlink loops -------------------------------------------------------------------
@pytest.mark.slow   # builds a demo LoRA with torch
def test_scan_survives_symlink_loops(tmp_path):
    import os

    from engine.models.demo import make_demo
    from engine.models.registry import ModelRegistry, candidates

    root = tmp_path / "models"
    (root / "a" / "b").mkdir(parents=True)
    make_demo(tmp_path / "build", "lora-sd15").rename(root / "a" / "b" / "tiny-lora.safetensors")
    os.symlink(root, root / "a" / "b" / "up")          # a loop back to the top
    os.symlink(root / "a", root / "a" / "again")       # and a second way into a/
    os.symlink("self", root / "self")                  # a link to itself (ELOOP)
    found = candidates(root)
    assert [p.name for p in found] == ["tiny-lora.safetensors"]
    reg = ModelRegistry([], db_path=tmp_path / "reg.db", install_dir=tmp_path / "installed")
    rep = reg.scan(root)
    assert rep.added == ["tiny-lora"], rep
