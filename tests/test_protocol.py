"""The protocol package: conformance vectors, codec edge cases, pixel helpers, token store, pure imports."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from protocol import codec, pixels
from protocol.errors import ProtocolError
from protocol.tokens import TokenStore

from .helpers import ROOT, raw, rpc

VECTORS = ROOT / "protocol" / "vectors"


def from_json(o):
    if isinstance(o, dict):
        if set(o) == {"$bin"}:
            return bytes.fromhex(o["$bin"])
        return {k: from_json(v) for k, v in o.items()}
    if isinstance(o, list):
        return [from_json(v) for v in o]
    return o


FRAMES = json.loads((VECTORS / "frames.json").read_text())["frames"]
EXCHANGES = json.loads((VECTORS / "exchanges.json").read_text())["exchanges"]


@pytest.mark.parametrize("vec", FRAMES, ids=[v["name"] for v in FRAMES])
def test_frame_vectors(vec):
    data = bytes.fromhex(vec["hex"])
    assert codec.decode(data) == from_json(vec["meaning"])
    assert codec.encode(from_json(vec["meaning"])) == data


@pytest.mark.parametrize("vec", EXCHANGES, ids=[v["name"] for v in EXCHANGES])
def test_exchange_vectors_against_engine(vec, spine_server):
    with raw(spine_server, spine_server.token) as ws:
        ws.send(vec["text"] if "text" in vec else bytes.fromhex(vec["hex"]))
        reply = codec.decode(ws.recv(10))
        assert reply["ok"] is False
        assert reply["re"] == vec["reply"]["re"]
        assert reply["error"]["code"] == vec["reply"]["code"]
        assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
        assert rpc(ws, 99, "ping")["ok"]


def test_decode_rejects_non_maps_and_garbage():
    for bad in (b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa1a", b"\x01\x02"):
        with pytest.raises(ProtocolError) as e:
            codec.decode(bad)
        assert e.value.code == "bad_request"


def test_kind():
    assert codec.kind({"id": 1, "op": "x"}) == "request"
    assert codec.kind({"re": 1, "ok": True}) == "reply"
    assert codec.kind({"event": "e", "data": {}}) == "event"


def test_protocol_imports_without_heavy_packages():
    code = ("import sys; import protocol, protocol.client, protocol.session, protocol.pixels, protocol.tokens; "
            "bad = [m for m in ('torch', 'aiohttp', 'pydantic_core', 'numpy', 'engine') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_protocol_runs_on_pure_python_msgpack():
    env = dict(os.environ, MSGPACK_PUREPYTHON="1")
    code = ("import msgpack, msgpack.fallback; from protocol import codec; "
            "assert msgpack.Packer is msgpack.fallback.Packer; "
            "assert codec.decode(codec.encode({'a': b'x'})) == {'a': b'x'}")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def test_pixel_helpers():
    w, h = 3, 2
    rgba = bytes(range(w * h * 4))
    bgra = pixels.rgba_to_bgra(rgba)
    assert bgra[:4] == bytes([2, 1, 0, 3]) and pixels.bgra_to_rgba(bgra) == rgba
    flipped = pixels.flip_rows(rgba, w, h, 4)
    assert flipped[:12] == rgba[12:] and pixels.flip_rows(flipped, w, h, 4) == rgba
    assert pixels.crop(rgba, w, h, 4, 1, 1, 2, 1) == rgba[16:24]
    mask = bytes([0, 0, 0, 0,
                  0, 0, 9, 0,
                  0, 5, 0, 0])
    assert pixels.mask_bounds(mask, 4, 3) == (1, 1, 2, 2)
    assert pixels.mask_bounds(bytes(12), 4, 3) is None
    trans = bytes([1, 2, 3, 0, 1, 2, 3, 255, 1, 2, 3, 7])
    assert pixels.mask_from_transparency(trans) == bytes([255, 0, 0])
    px = pixels.Pixels(rgba, w, h, x=5, y=6)
    assert px.layer()["x"] == 5 and px.layer()["sha256"] == pixels.sha256_hex(rgba)
    with pytest.raises(ValueError):
        pixels.Pixels(b"123", 1, 1)
    # outpaint margins: alpha 0 outside the kept rect, colours and the inside untouched
    opaque = bytes([1, 2, 3, 255]) * (5 * 4)
    out = pixels.clear_outside(opaque, 5, 4, (1, 1, 3, 2))
    assert pixels.alpha_of(out) == bytes([0, 0, 0, 0, 0,
                                          0, 255, 255, 255, 0,
                                          0, 255, 255, 255, 0,
                                          0, 0, 0, 0, 0])
    assert bytes(b for i, b in enumerate(out) if i % 4 != 3) == bytes(b for i, b in enumerate(opaque) if i % 4 != 3)


def test_token_store_file_fallback_is_private(tmp_path):
    store = TokenStore(tmp_path, use_keyring=False)
    assert store.get("ws://x") is None
    store.set("ws://x", "tok1")
    store.set("ws://y", "tok2")
    assert store.get("ws://x") == "tok1" and store.get("ws://y") == "tok2"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.delete("ws://x")
    assert store.get("ws://x") is None and store.get("ws://y") == "tok2"


def test_paste_places_patch_at_document_position():
    base = pixels.Pixels(bytes(4 * 4), 4, 4, "gray8", x=10, y=20)
    patch = pixels.Pixels(bytes([1, 2, 3, 4]), 2, 2, "gray8", x=11, y=22)
    out = pixels.paste(base, patch)
    assert out.data == bytes([0, 0, 0, 0,  0, 0, 0, 0,  0, 1, 2, 0,  0, 3, 4, 0])
    assert (out.x, out.y) == (10, 20)
    clipped = pixels.paste(base, pixels.Pixels(bytes([9] * 4), 2, 2, "gray8", x=13, y=23))
    assert clipped.data[-1] == 9 and clipped.data.count(9) == 1


def test_spec_documents_every_op_and_event():
    """SPEC.md is what outside clients are written from: every registered op and every event must be in it."""
    import re

    from engine.events import NAMES
    from engine.ops import OPS

    spec = (ROOT / "protocol" / "SPEC.md").read_text()
    documented = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", spec)) | set(re.findall(r"`(hello|ping|generate)`", spec))
    missing = sorted(set(OPS) - documented)
    assert not missing, f"ops missing from SPEC.md: {missing}"
    events = set(NAMES)   # every emitter takes its event from engine/events.py (tests/test_layout.py)
    assert {"job.progress", "job.result", "auth.refreshed"} <= events
    undocumented = sorted(e for e in events if f"`{e}`" not in spec)
    assert not undocumented, f"events missing from SPEC.md: {undocumented}"
