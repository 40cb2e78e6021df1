"""Isolation between users and token hygiene.

For every op that takes an id (job, blob, image, workflow, ...; found by iterating engine.ops.OPS, so ops added
later are covered), another user gets exactly what a nonexistent id gets (`not_found`): existence is never
leaked; admins see everything. Tampered, forged, expired and revoked tokens are refused; browser Origins are
refused; secret files are private; traversal strings in names and paths get nowhere; no code path unpickles.
"""

from __future__ import annotations

import ast
import stat
import time
import typing
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from engine import ops  # importing it registers every op
from protocol.client import EXPIRED, SIGNED_OUT, Client
from protocol.errors import ProtocolError

from .helpers import ROOT, cli, copy_graph, errcode, hello_reply, layer_ref, wait_job

ID_FIELDS = ("job", "sha256", "hashes", "image", "workflow", "board", "id", "name")
TRAVERSAL = ["../../../../../../etc/passwd", "/etc/passwd", "..\\..\\..\\windows\\win.ini", "a/../../../etc/passwd",
             "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "x\x00../../etc/passwd"]


def dummy(annotation):
    """A harmless value of the field's type (for the arguments that are not under test)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return dummy(args[0]) if args else None
    if origin is typing.Literal:
        return typing.get_args(annotation)[0]
    if origin in (list, tuple, set):
        return []
    if origin is dict or annotation is dict:
        return {}
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return {k: dummy(f.annotation) for k, f in annotation.model_fields.items() if f.is_required()}
    return {str: "x", int: 0, float: 0.0, bool: False, bytes: b""}.get(annotation, "x")


def build_args(spec, values: dict) -> dict | None:
    fields = spec.args.model_fields
    if not any(f in fields for f in values):
        return None
    args = {k: dummy(f.annotation) for k, f in fields.items() if f.is_required()}
    args.update({k: v for k, v in values.items() if k in fields})
    return args


@pytest.fixture(scope="module")
def world(spine_server):
    d = str(spine_server.data_dir)
    for name in ("alice", "bob"):
        cli("users", "--data-dir", d, "add", name, "--password", f"{name}-pw")
    tok = {n: cli("token", "--data-dir", d, "--user", n).split()[-1] for n in ("alice", "bob")}
    alice = spine_server.client(token=tok["alice"])
    bob = spine_server.client(token=tok["bob"])
    admin = spine_server.client()
    data = bytes(range(64))
    sha = alice.upload(data)
    layer = {"sha256": sha, "w": 4, "h": 4, "format": "rgba8"}
    g = {"nodes": {"i": {"type": "image_input", "layer": layer}, "r": {"type": "resize", "width": 8, "height": 8},
                   "o": {"type": "output", "name": "alice-secret"}},
         "edges": [{"from": ["i", "image"], "to": ["r", "image"]}, {"from": ["r", "image"], "to": ["o", "image"]}]}
    job = alice.call("graph.submit", {"graph": g})["job"]
    info = wait_job(alice, job, timeout=60)
    assert info["status"] == "completed", info
    result_sha = info["layers"][0]["sha256"]
    # things other helpers' ops may own (gallery images, saved workflows): found through their list ops
    if "boards.create" in ops.OPS:
        try:
            alice.call("boards.create", {"name": "alice-board"})
        except ProtocolError:
            pass
    if "workflows.save" in ops.OPS:
        try:
            alice.call("workflows.save", {"name": "alice-wf", "graph": g})
        except ProtocolError:
            pass
    found = {"image": None, "workflow": None, "board": None}
    for kind in found:
        for op_name in (f"{kind}s.list",):
            if op_name in ops.OPS:
                try:
                    res = alice.call(op_name, {})
                except ProtocolError:
                    continue
                items = next((v for v in res.values() if isinstance(v, list)), [])
                for item in items:
                    if isinstance(item, dict):
                        found[kind] = item.get("id", item.get(kind, item.get("name")))
                        break
    yield {"alice": alice, "bob": bob, "admin": admin, "data_dir": spine_server.data_dir, "job": job, "sha": sha, "result_sha": result_sha,
           "data": data, "tokens": tok, **found}
    for c in (alice, bob, admin):
        c.close()


def fake_like(value):
    """An id of the same shape as a real one, that names nothing."""
    if isinstance(value, int):
        return 999999999
    if isinstance(value, str) and value and all(ch in "0123456789abcdef" for ch in value):
        return "0" * len(value)
    return "doesnotexist0000"


def resources_for(op_name: str, w: dict, real: bool) -> dict:
    prefix = op_name.split(".")[0]
    kind = {"images": "image", "workflows": "workflow", "boards": "board", "job": "job",
            "blob": "sha256"}.get(prefix)
    job = w["job"] if real else "0123456789abcdef"
    sha = w["result_sha"] if real else "e" * 64
    vals = {"job": job, "sha256": sha, "hashes": [sha]}
    for k in ("image", "workflow", "board"):
        if w[k] is not None:
            vals[k] = w[k] if real else fake_like(w[k])
    if kind in ("image", "workflow", "board") and w[kind] is not None:
        vals["id"] = vals[kind]
        vals["name"] = vals[kind]
    elif kind == "job":
        vals["id"] = job
    if prefix == "users":
        vals["name"] = "alice" if real else "nosuchuser"
    return vals


def call(client, op_name, args):
    try:
        return ("ok", client.call(op_name, args))
    except ProtocolError as exc:
        return (exc.code, exc.message)


def test_other_users_ids_look_missing_for_every_op(world):
    w = world
    checked = []
    for name, spec in sorted(ops.OPS.items()):
        if not spec.auth or name in ("hello", "auth.login"):
            continue
        real_args = build_args(spec, resources_for(name, w, True))
        fake_args = build_args(spec, resources_for(name, w, False))
        if real_args is None:
            continue
        got_real = call(w["bob"], name, real_args)
        got_fake = call(w["bob"], name, fake_args)
        if name == "blob.has":
            assert got_real[1]["missing"] == [w["result_sha"]]
        elif got_real[0] == "ok":
            # allowed only where it reveals nothing: same answer as for something that does not exist
            assert got_fake[0] == "ok", (name, got_real, got_fake)
        else:
            msg_real, msg_fake = str(got_real[1]), str(got_fake[1])
            for a, b in zip(real_args.values(), fake_args.values()):
                if isinstance(a, (str, int)) and isinstance(b, (str, int)):
                    msg_real, msg_fake = msg_real.replace(str(a), "ID"), msg_fake.replace(str(b), "ID")
            assert got_real[0] == got_fake[0], (name, got_real, got_fake)
            assert msg_real == msg_fake, (name, got_real, got_fake)
            if spec.admin:
                assert got_real[0] == "forbidden", (name, got_real)
            elif name.split(".")[0] not in ("users",):
                assert got_real[0] in ("not_found", "bad_request"), (name, got_real)
        checked.append(name)
    assert {"job.get", "job.cancel", "blob.get", "blob.has"} <= set(checked), checked
    print("isolation checked:", checked, {k: w[k] for k in ("image", "workflow", "board")})
    # nothing of alice's changed (bob's job.cancel did nothing) and admins see it all
    assert w["alice"].call("job.get", {"job": w["job"]})["status"] == "completed"
    assert w["admin"].call("job.get", {"job": w["job"]})["status"] == "completed"
    assert w["admin"].call("blob.get", {"sha256": w["result_sha"]})["size"] == 8 * 8 * 4
    assert w["admin"].call("blob.get", {"sha256": w["sha"]})["data"] == w["data"]
    assert w["job"] in {j["job"] for j in w["admin"].call("job.list", {"everyone": True})["jobs"]}
    assert w["job"] not in {j["job"] for j in w["bob"].call("job.list", {"everyone": True})["jobs"]}


def test_cannot_use_another_users_blob_as_a_layer(world):
    w = world
    g = copy_graph(layer_ref(w["sha"], 4, 4))
    with pytest.raises(ProtocolError) as e:
        w["bob"].call("graph.submit", {"graph": g})
    assert e.value.code == "bad_request"
    with pytest.raises(ProtocolError) as e2:   # same answer as for a blob nobody has
        g["nodes"]["i"]["layer"]["sha256"] = "d" * 64
        w["bob"].call("graph.submit", {"graph": g})
    assert e2.value.code == "bad_request"
    assert e.value.message.replace(w["sha"][:12], "X") == e2.value.message.replace("d" * 12, "X")


def test_job_events_reach_only_the_owner(world, spine_server):
    w = world
    bob2 = spine_server.client(token=w["tokens"]["bob"])
    g = copy_graph(layer_ref(w["sha"], 4, 4))
    bob2.drain(1000)
    job = w["alice"].call("graph.submit", {"graph": g})["job"]
    w["admin"].next_event(30, name="job.result", match=lambda e: e.data["job"] == job)   # admins see all
    time.sleep(0.3)
    assert not [e for e in bob2.drain(1000) if e.data.get("job") == job]
    bob2.close()


def test_tampered_forged_foreign_and_expired_tokens(spine_server, spawn_engine, world):
    import base64
    import json
    good = world["tokens"]["bob"]
    body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged_body = base64.urlsafe_b64encode(json.dumps({**claims, "uid": 1}).encode()).rstrip(b"=").decode()
    other = spawn_engine()   # same claims, signed with another engine's secret
    foreign = cli("token", "--data-dir", str(other.data_dir)).split()[-1]
    expired = cli("token", "--data-dir", str(spine_server.data_dir), "--user", "bob", "--ttl", "1").split()[-1]
    time.sleep(1.1)
    cases = {"forged uid": f"{forged_body}.{sig}", "bad signature": f"{body}.{sig[:-2]}AA",
             "foreign secret": foreign, "no signature": body, "empty": "", "huge": "a." + "b" * 5000,
             "expired": expired}
    for what, token in cases.items():
        r = hello_reply(spine_server, token)
        want = "token_expired" if what == "expired" else ("bad_request" if what == "huge" else "unauthenticated")
        assert r["ok"] is False and r["error"]["code"] == want, (what, r)
        if what not in ("huge", "empty"):   # an empty Bearer header is just no header
            with pytest.raises(InvalidStatus) as e:   # and as a Bearer header: 401 before the upgrade
                ws_connect(spine_server.url, additional_headers={"Authorization": f"Bearer {token}"})
            assert e.value.response.status_code == 401, what
    c = Client(spine_server.url, expired, reconnect=False)
    c.connect()
    assert c.state == EXPIRED   # the client tells "expired" from "signed out"
    c.close()


def test_sign_in_password_change_and_disable_revoke(spine_server):
    """A password sign-in gives a token; a password change or a disable revokes every token, also on open
    connections; a re-enable does not bring old tokens back."""
    d = str(spine_server.data_dir)
    cli("users", "--data-dir", d, "add", "carl", "--password", "carl-pw")
    carl = Client(spine_server.url, reconnect=False)
    carl.connect()
    assert carl.state == SIGNED_OUT
    res = carl.login("carl", "carl-pw", remember_me=True)
    assert res["user"]["name"] == "carl" and res["expires_at"] > time.time() + 6 * 86400
    assert errcode(carl.call, "users.list", {}).code == "forbidden"
    admin = spine_server.client()
    assert "carl" in {u["name"] for u in admin.call("users.list")["users"]}
    t1 = cli("token", "--data-dir", d, "--user", "carl").split()[-1]
    assert hello_reply(spine_server, t1)["ok"]

    old_token = carl.token
    cli("users", "--data-dir", d, "passwd", "carl", "--password", "carl-pw2")
    time.sleep(2.5)   # the session sweep (about once a second) closes the open connection with 4401
    assert errcode(carl.call, "ping").code == "disconnected"   # the open connection too
    assert hello_reply(spine_server, t1)["error"]["code"] == "unauthenticated"
    c = Client(spine_server.url, old_token, reconnect=False).connect()
    assert c.state == SIGNED_OUT
    c.login("carl", "carl-pw2")
    assert c.call("ping")

    t2 = cli("token", "--data-dir", d, "--user", "carl").split()[-1]
    admin.call("users.disable", {"name": "carl"})
    time.sleep(2.5)
    assert errcode(c.call, "ping").code == "disconnected"   # the open connection too
    assert hello_reply(spine_server, t2)["error"]["code"] == "unauthenticated"
    anon = Client(spine_server.url, reconnect=False).connect()
    # a disabled user cannot sign in with the password either
    assert errcode(anon.login, "carl", "carl-pw2").code == "unauthenticated"
    cli("users", "--data-dir", d, "disable", "carl", "--enable")
    assert hello_reply(spine_server, t2)["error"]["code"] == "unauthenticated"
    for x in (carl, c, anon, admin):
        x.close()


def test_browser_origins_refused_unless_allowed(spine_server, spawn_engine):
    port = spine_server.url.split(":")[2].split("/")[0]
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port}", "http://localhost", "file://"):
        for headers in (None, {"Authorization": f"Bearer {spine_server.token}"}):
            with pytest.raises(InvalidStatus) as e:
                ws_connect(spine_server.url, origin=origin, additional_headers=headers)
            # the engine's own web page (same origin) signs in by its session cookie only: 401 without one
            own = origin == f"http://127.0.0.1:{port}"
            assert e.value.response.status_code == (401 if own else 403), origin
    other = spawn_engine("--allow-origin", "http://localhost:3000")
    ws_connect(other.url, origin="http://localhost:3000").close()
    with pytest.raises(InvalidStatus) as e:
        ws_connect(other.url, origin="http://localhost:3001")
    assert e.value.response.status_code == 403


def test_secret_files_are_private(spine_server):
    d = spine_server.data_dir
    assert stat.S_IMODE((d / "secret.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "paintbridge.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) & 0o077 == 0   # blobs (people's images) sit inside


def test_traversal_in_names_and_paths_gets_nowhere(world):
    """Every string field that names something (model, name, upscaler, upload, path, ...) with traversal
    strings: refused, or treated as an opaque key; no reply ever carries a file's content."""
    w = world
    pathish = {"model", "name", "upscaler", "path", "file", "dir", "folder", "filename", "upload", "workflow",
               "image", "id", "job", "sha256", "username", "document", "app", "board"}
    outside = Path(w["data_dir"]).parent
    before = {p for p in outside.rglob("*") if Path(w["data_dir"]) not in p.parents}
    tried = 0
    for c in (w["bob"], w["admin"]):
        for name, spec in sorted(ops.OPS.items()):
            if name in ("hello", "auth.login", "users.passwd", "users.disable"):
                continue
            for fname in [f for f in spec.args.model_fields if f in pathish]:
                for evil in TRAVERSAL:
                    args = build_args(spec, {fname: evil}) or {}
                    if name == "blob.put":
                        args.update(data=b"t", offset=0, final=True)
                    code, res = call(c, name, args)
                    tried += 1
                    # refused, or kept as an opaque label (a board name, an upload id): never read as a path
                    assert b"root:x:0:0" not in repr(res).encode(), (name, fname, evil)
                    assert code in ("ok", "bad_request", "not_found", "forbidden"), (name, fname, evil, code, res)
    after = {p for p in outside.rglob("*") if Path(w["data_dir"]) not in p.parents}
    assert after == before, sorted(map(str, after - before))   # nothing written outside the data folder
    assert tried > 50
    # generate/graph with a model named by a path outside the models folders
    for evil in TRAVERSAL:
        with pytest.raises(ProtocolError) as e:
            w["bob"].call("generate", {"model": evil, "width": 64, "height": 64, "steps": 1})
        assert e.value.code == "bad_request"


def test_no_code_path_unpickles():
    """torch.load must always pass weights_only=True; pickle/torch.load of model files is not used elsewhere."""
    offenders = []
    for base in ("engine", "protocol", "plugins"):
        for path in (ROOT / base).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                fn = ast.unparse(node.func)
                if fn.endswith("torch.load") or fn == "load" and "torch" in path.read_text():
                    kw = {k.arg: k.value for k in node.keywords}
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        if fn.endswith("torch.load"):
                            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
                if fn in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load",
                          "numpy.load", "np.load"):
                    kw = {k.arg: k.value for k in node.keywords}
                    if fn in ("numpy.load", "np.load") and not (isinstance(kw.get("allow_pickle"), ast.Constant)
                                                                 and kw["allow_pickle"].value is True):
                        continue
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders
