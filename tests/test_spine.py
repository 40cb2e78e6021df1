"""The engine spine over real sockets: sign-in, framing, typed errors, blobs, isolation, tokens."""

from __future__ import annotations

import hashlib
import os
import time

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from protocol import codec
from protocol.client import EXPIRED, Client
from protocol.errors import ProtocolError

from .helpers import cli, health, raw, rpc


def test_health_is_unauthenticated_and_data_free(spine_server):
    assert health(spine_server) == {"status": "ok", "protocol": 1}


def test_ops_before_hello_are_unauthenticated(spine_server):
    with raw(spine_server) as ws:
        for rid, op in enumerate(["ping", "blob.has", "nonexistent.op"], 1):
            r = rpc(ws, rid, op, {"hashes": []} if op == "blob.has" else {})
            assert r["re"] == rid and r["ok"] is False
        assert rpc(ws, 1, "ping")["error"]["code"] == "unauthenticated"
        # still usable: hello now works
        r = rpc(ws, 9, "hello", {"protocol": 1, "token": spine_server.token, "client": {"app": "t", "version": "1"}})
        assert r["ok"] and r["result"]["user"]["name"] == "admin"
        assert rpc(ws, 10, "ping")["ok"]


def test_hello_errors(spine_server):
    with raw(spine_server) as ws:
        r = rpc(ws, 1, "hello", {"protocol": 2, "token": spine_server.token})
        assert r["error"]["code"] == "unsupported_version" and r["error"]["details"] == {"supported": [1]}
        assert rpc(ws, 4, "hello", {"protocol": 1})["error"]["code"] == "bad_request"


def test_token_expiring_on_open_connection(spine_server):
    token = cli("token", "--data-dir", str(spine_server.data_dir), "--ttl", "2").split()[-1]
    with raw(spine_server, token) as ws:
        assert rpc(ws, 2, "ping")["ok"]
        time.sleep(3.5)   # the session sweep closes it about a second after expiry (issue 17 #7)
        with pytest.raises(ConnectionClosed) as e:
            rpc(ws, 3, "ping")
        assert e.value.rcvd.code == 4401 and "expired" in e.value.rcvd.reason
    c = Client(spine_server.url, token, reconnect=False).connect()
    assert c.state == EXPIRED
    c.close()


def test_bearer_header_signs_in(spine_server):
    with raw(spine_server, headers={"Authorization": f"Bearer {spine_server.token}"}) as ws:
        assert rpc(ws, 1, "ping")["ok"]


def test_bad_frames_get_typed_errors_and_connection_survives(spine_server):
    with raw(spine_server, spine_server.token) as ws:
        ws.send("hello as text")
        r = codec.decode(ws.recv(5))
        assert r["ok"] is False and r["re"] is None and r["error"]["code"] == "bad_request"
        ws.send(b"\xc1\xff\x00")                       # not msgpack
        assert codec.decode(ws.recv(5))["error"]["code"] == "bad_request"
        ws.send(msgpack.packb([1, 2, 3]))              # msgpack, not a map
        assert codec.decode(ws.recv(5))["re"] is None
        ws.send(msgpack.packb({"id": "x", "op": "ping"}))
        assert codec.decode(ws.recv(5))["error"]["code"] == "bad_request"
        r = rpc(ws, 5, "no.such.op")
        assert r["re"] == 5 and r["error"]["code"] == "bad_request" and "no.such.op" in r["error"]["message"]
        ws.send(msgpack.packb({"id": 6, "op": "ping", "args": [1]}))
        assert codec.decode(ws.recv(5))["error"]["code"] == "bad_request"
        r = rpc(ws, 7, "blob.get", {"sha256": 12})
        assert r["error"]["code"] == "bad_request" and "sha256" in r["error"]["message"]
        r = rpc(ws, 8, "blob.has", {"hashes": ["ABC"]})
        assert r["error"]["code"] == "bad_request"
        r = rpc(ws, 9, "blob.has", {"hashes": [], "extra": 1})
        assert r["error"]["code"] == "bad_request" and "extra" in r["error"]["message"]
        assert rpc(ws, 10, "ping")["ok"]


def test_oversized_frame_refused_connection_kept(spawn_engine):
    eng = spawn_engine("--frame-limit", str(1024 * 1024))
    with raw(eng, eng.token) as ws:
        data = os.urandom(1024 * 1024 + 10)
        ws.send(codec.encode(codec.request(3, "blob.put", {"data": data})))
        r = codec.decode(ws.recv(10))
        assert r["re"] == 3 and r["error"]["code"] == "too_large" and r["error"]["details"]["limit"] == 1024 * 1024
        assert rpc(ws, 4, "ping")["ok"]
        # nothing was stored
        sha = hashlib.sha256(data).hexdigest()
        assert rpc(ws, 5, "blob.has", {"hashes": [sha]})["result"]["missing"] == [sha]


def test_blob_roundtrip_whole_and_ranges(spine_server):
    c = spine_server.client()
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    assert c.call("blob.has", {"hashes": [sha]}) == {"missing": [sha]}
    assert c.call("blob.put", {"data": data}) == {"sha256": sha, "size": len(data)}
    assert c.call("blob.has", {"hashes": [sha]}) == {"missing": []}
    assert c.call("blob.get", {"sha256": sha})["data"] == data
    part = c.call("blob.get", {"sha256": sha, "offset": 1000, "length": 500})
    assert part == {"data": data[1000:1500], "size": len(data)}
    assert c.call("blob.get", {"sha256": sha, "offset": len(data)})["data"] == b""
    with pytest.raises(ProtocolError) as e:
        c.call("blob.get", {"sha256": sha, "offset": len(data) + 1})
    assert e.value.code == "bad_request"
    with pytest.raises(ProtocolError) as e:
        c.call("blob.get", {"sha256": "0" * 64})
    assert e.value.code == "not_found"
    c.close()


def test_chunked_40mib_layer(spine_server):
    c = spine_server.client()
    data = os.urandom(40 * 1024 * 1024)
    sha = c.upload(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert c.download(sha) == data
    # the second upload of the same bytes sends nothing: blob.has says it is there
    assert c.call("blob.has", {"hashes": [sha]})["missing"] == []
    c.close()
    blob_file = spine_server.data_dir / "blobs" / sha[:2] / sha
    assert blob_file.stat().st_size == len(data)
    assert not any((spine_server.data_dir / "blobs" / "tmp").iterdir())


def test_chunk_errors_change_nothing(spine_server):
    c = spine_server.client()
    with pytest.raises(ProtocolError) as e:
        c.call("blob.put", {"upload": "u1", "offset": 5, "data": b"abc", "final": False})
    assert e.value.code == "bad_request" and e.value.details == {"expected": 0}
    assert c.call("blob.put", {"upload": "u1", "offset": 0, "data": b"abc", "final": False}) == \
        {"upload": "u1", "received": 3}
    with pytest.raises(ProtocolError) as e:
        c.call("blob.put", {"upload": "u1", "offset": 10, "data": b"def", "final": True})
    assert e.value.details == {"expected": 3}
    with pytest.raises(ProtocolError) as e:
        c.call("blob.put", {"upload": "u1", "data": b"def"})   # chunk without offset
    assert e.value.code == "bad_request"
    r = c.call("blob.put", {"upload": "u1", "offset": 3, "data": b"def", "final": True})
    assert r == {"sha256": hashlib.sha256(b"abcdef").hexdigest(), "size": 6}
    assert c.call("blob.get", {"sha256": r["sha256"]})["data"] == b"abcdef"
    c.close()


def test_failed_logins_are_rate_limited(spine_server):
    cli("users", "--data-dir", str(spine_server.data_dir), "add", "carol", "--password", "carolpw")
    c = Client(spine_server.url, reconnect=False).connect()
    codes = []
    for _ in range(6):
        try:
            c.login("carol", "wrong")
        except ProtocolError as exc:
            codes.append(exc.code)
    assert codes[:5] == ["unauthenticated"] * 5 and codes[5] == "rate_limited"
    with pytest.raises(ProtocolError) as e:   # even the right password waits now
        c.login("carol", "carolpw")
    assert e.value.code == "rate_limited"
    c.close()


def test_sliding_refresh_pushes_new_token(spawn_engine):
    eng = spawn_engine()
    cfg = eng.data_dir / "config.toml"
    cfg.write_text("refresh_after_s = 0\n")
    eng.restart()
    c = eng.client()
    first = c.token
    c.call("blob.put", {"data": b"mutating"})
    ev = c.next_event(5, name="auth.refreshed")
    assert ev.data["token"] != first and c.token == ev.data["token"]
    assert Client(eng.url, ev.data["token"], reconnect=False).connect().state == "connected"
    c.call("ping")   # not mutating: no new refresh
    with pytest.raises(ProtocolError):
        c.next_event(0.5, name="auth.refreshed")
    c.close()


def test_client_reconnects_with_backoff(spawn_engine):
    eng = spawn_engine()
    c = eng.client()
    assert c.call("ping")
    eng.stop()
    c.next_event(10, name="client.state", match=lambda e: e.data["state"] == "disconnected")
    eng.start()
    assert c.wait_connected(40)
    assert c.call("ping")
    c.close()


def test_tls_and_loud_warning_for_clear_text_on_the_network(spawn_engine, tmp_path):
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    eng = spawn_engine("--host", "localhost", "--tls-cert", str(tmp_path / "cert.pem"),
                       "--tls-key", str(tmp_path / "key.pem"))
    assert eng.url.startswith("wss://")
    ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    c = Client(eng.url, eng.token, reconnect=False, ssl_context=ctx).connect()
    assert c.state == "connected" and c.call("ping")
    c.close()
    assert not any("WITHOUT TLS" in line for line in eng.log)

    open_eng = spawn_engine("--host", "0.0.0.0")
    assert any("WITHOUT TLS" in line for line in open_eng.log)
