"""The web page's rules without a browser: browser sessions in a real SQLite database (expiry, idle, sign-out
everywhere), the same-origin and Host checks on real aiohttp requests, and (slow) an engine's answers to requests
a browser would never send but an attacker's script or a confused client might: no Origin, a foreign Origin, an
unknown Host, a page upgrade without a session, an image route for an id that is not one.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from websockets.sync.client import connect as ws_connect

from engine import auth
from engine.config import Config
from engine.store.db import Database
from engine.web import cookies, guard
from protocol import codec

from .helpers import add_user, app_client


@pytest.fixture
def db(tmp_path):
    d = Database(tmp_path / "pb.db")
    yield d
    d.close()


def test_a_session_is_stored_hashed_and_ends_by_expiry_idle_and_epoch(db, tmp_path):
    cfg = Config(data_dir=tmp_path, token_ttl_s=100, web_idle_s=50)
    user = db.sync(auth.create_user, "ann", "password1")
    value, expires = db.sync(cookies.create, cfg, user, False)
    assert abs(expires - (time.time() + 100)) < 5
    stored = db.sync(lambda d: [r["id"] for r in d.query("SELECT id FROM web_sessions")])
    assert stored == [cookies._digest(value)] and value not in stored   # only the hash is kept
    session, why = db.sync(cookies.find, value)
    assert session.user["name"] == "ann" and why == ""
    assert db.sync(cookies.find, value + "x") == (None, "none")
    assert db.sync(cookies.find, None) == (None, "none")

    db.sync(lambda d: d.execute("UPDATE web_sessions SET seen = seen - 60"))   # idle longer than web_idle_s
    assert db.sync(cookies.find, value) == (None, "expired")
    # asked again (the page's own /session check after its socket closed, a retry): still "expired", not "none"
    assert db.sync(cookies.find, value) == (None, "expired")
    idle = value

    value, _ = db.sync(cookies.create, cfg, user, True)
    db.sync(lambda d: d.execute("UPDATE web_sessions SET expires = ?", [time.time() - 1]))   # absolute expiry
    assert db.sync(cookies.find, value) == (None, "expired")

    value, _ = db.sync(cookies.create, cfg, db.sync(auth.get_user, None, "ann"), True)
    db.sync(auth.sign_out_everywhere, "ann")
    assert db.sync(cookies.find, value) == (None, "expired")
    value, _ = db.sync(cookies.create, cfg, db.sync(auth.get_user, None, "ann"), True)
    db.sync(auth.set_disabled, "ann", True)
    assert db.sync(cookies.find, value) == (None, "expired")

    # a day after it ended the row is swept when a session is made, and its cookie is only unknown
    db.sync(lambda d: d.execute("UPDATE web_sessions SET seen = seen - ? WHERE id = ?",
                                [cookies.KEEP_ENDED_S, cookies._digest(idle)]))
    db.sync(auth.set_disabled, "ann", False)
    db.sync(cookies.create, cfg, db.sync(auth.get_user, None, "ann"), False)
    assert db.sync(cookies.find, idle) == (None, "none")
    assert db.sync(cookies.find, value) == (None, "expired")   # ended just now: kept


def test_the_last_admin_stays_an_admin(db):
    db.sync(auth.create_user, "root", "password1", True)
    db.sync(auth.create_user, "bob", "password1")
    with pytest.raises(auth.BadRequest):
        db.sync(auth.set_admin, "root", False)
    db.sync(auth.set_admin, "bob", True)
    db.sync(auth.set_admin, "root", False)
    assert not db.sync(auth.get_user, None, "root")["admin"]


def _request(method="POST", host="127.0.0.1:9180", **headers):
    return make_mocked_request(method, "/users/add", headers={"Host": host, **headers})


def test_same_origin_needs_our_origin_or_fetch_site(tmp_path):
    cfg = Config(data_dir=tmp_path, port=9180)
    ours = "http://127.0.0.1:9180"
    assert guard.same_origin(_request(Origin=ours, **{"Sec-Fetch-Site": "same-origin"}), cfg)
    assert guard.same_origin(_request(Origin=ours), cfg)
    assert guard.same_origin(_request(**{"Sec-Fetch-Site": "same-origin"}), cfg)
    assert not guard.same_origin(_request(), cfg)                                   # neither: refused
    assert not guard.same_origin(_request(Origin="http://127.0.0.1:8000"), cfg)    # same site, other port
    assert not guard.same_origin(_request(Origin=ours, **{"Sec-Fetch-Site": "same-site"}), cfg)
    assert not guard.same_origin(_request(Origin="null"), cfg)
    assert not guard.same_origin(_request(Origin="https://127.0.0.1:9180"), cfg)   # scheme differs
    tls = Config(data_dir=tmp_path, tls_cert=Path("c.pem"))
    assert guard.same_origin(_request(Origin="https://127.0.0.1:9180"), tls)


def test_host_names_a_rebinding_page_cannot_use(tmp_path):
    cfg = Config(data_dir=tmp_path, web_hosts=["studio.lan"])
    for host in ("127.0.0.1:9180", "[::1]:9180", "localhost:9180", "192.168.1.20", "studio.lan:9180",
                 "app.localhost:9180"):
        assert guard.host_allowed(_request(host=host), cfg), host
    for host in ("evil.example:9180", "127.0.0.1.evil.example", "studio.lan.evil.example"):
        assert not guard.host_allowed(_request(host=host), cfg), host
    # a rebound name passes neither check, even with a matching Origin
    assert not guard.same_origin(_request(host="evil.example:9180", Origin="http://evil.example:9180"), cfg)


def _http(engine, method, path, data=None, headers=None):
    root = engine.url.replace("ws://", "http://").replace("/v1/ws", "")
    req = urllib.request.Request(root + path, method=method, headers=headers or {},
                                 data=urllib.parse.urlencode(data).encode() if data is not None else None)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    try:
        resp = urllib.request.build_opener(NoRedirect).open(req, timeout=20)
        return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_engine_refuses_what_a_browser_page_of_ours_would_not_send(spine_server):
    name, password = add_user(spine_server)
    root = spine_server.url.replace("ws://", "http://").replace("/v1/ws", "")
    own = {"Origin": root, "Sec-Fetch-Site": "same-origin"}
    # sign in without an Origin (a script elsewhere, or curl): refused before the password is looked at
    status, _, body = _http(spine_server, "POST", "/signin", {"username": name, "password": password})
    assert status == 403 and b"cross-site" in body
    status, headers, _ = _http(spine_server, "POST", "/signin", {"username": name, "password": password}, own)
    assert status == 303 and headers["Location"] == "/gallery"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age" not in cookie   # no remember me
    jar = {"Cookie": cookie.split(";")[0]}
    status, headers, body = _http(spine_server, "GET", "/gallery", headers=jar)
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    # a rebinding page's Host
    status, _, _ = _http(spine_server, "GET", "/signin", headers={"Host": "evil.example"})
    assert status == 421
    # image routes: an id that is not an image is not found, never another type of file
    status, _, _ = _http(spine_server, "GET", "/gallery/0123456789abcdef/image.png", headers=jar)
    assert status == 404
    status, _, _ = _http(spine_server, "GET", "/gallery/..%2f..%2fsecret.key/image.png", headers=jar)
    assert status in (400, 404)
    # a page upgrade without a session, and with one from a foreign origin
    with pytest.raises(Exception, match="401"):
        ws_connect(spine_server.url, additional_headers={"Origin": root})
    with pytest.raises(Exception, match="403"):
        ws_connect(spine_server.url, additional_headers={**jar, "Origin": "http://localhost:1"})
    with ws_connect(spine_server.url, additional_headers={**jar, **own}) as ws:
        ws.send(codec.encode(codec.request(1, "auth.whoami", {})))
        assert codec.decode(ws.recv(10))["result"]["user"]["name"] == name
        # users.sign_out (here: yourself) closes this very connection with 4401 and ends the cookie's session
        ws.send(codec.encode(codec.request(2, "users.sign_out", {"name": name})))
        assert codec.decode(ws.recv(10))["ok"] is True
        with pytest.raises(Exception):
            while True:
                ws.recv(5)
        assert ws.close_code == 4401
    status, headers, _ = _http(spine_server, "GET", "/queue", headers=jar)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)
    assert status == 303 and query == {"next": ["/queue"], "expired": ["1"]}


def test_changing_your_password_on_the_page_keeps_only_this_browser(spine_server):
    name, password = add_user(spine_server)
    root = spine_server.url.replace("ws://", "http://").replace("/v1/ws", "")
    own = {"Origin": root, "Sec-Fetch-Site": "same-origin"}
    jars = []
    for _ in range(2):   # two browsers
        status, headers, _ = _http(spine_server, "POST", "/signin", {"username": name, "password": password,
                                                                     "remember": "1"}, own)
        assert status == 303 and "Max-Age" in headers["Set-Cookie"]   # remember me: a lasting cookie
        jars.append({"Cookie": headers["Set-Cookie"].split(";")[0], **own})
    status, _, body = _http(spine_server, "POST", "/account/password",
                            {"current": "wrong", "password": "newpass1", "confirm": "newpass1"}, jars[0])
    assert status == 403 and b"current password is wrong" in body
    status, headers, _ = _http(spine_server, "POST", "/account/password",
                               {"current": password, "password": "newpass1", "confirm": "newpass1"}, jars[0])
    assert status == 303 and headers["Location"] == "/account?done=password"
    fresh = {"Cookie": headers["Set-Cookie"].split(";")[0]}
    assert _http(spine_server, "GET", "/account", headers=fresh)[0] == 200
    for jar in jars:   # both old sessions ended with the change
        status, headers, _ = _http(spine_server, "GET", "/account", headers={"Cookie": jar["Cookie"]})
        assert status == 303 and "expired=1" in headers["Location"]


def test_users_admin_and_sign_out_ops(spine_server):
    admin = app_client(spine_server, "pytest")
    name, password = add_user(spine_server)
    from protocol.client import Client
    user = Client(spine_server.url, app="krita", reconnect=False).connect()
    user.login(name, password)
    assert user.call("auth.whoami")["user"]["admin"] is False
    admin.call("users.admin", {"name": name, "admin": True})
    assert {u["name"]: u["admin"] for u in admin.call("users.list")["users"]}[name] is True
    admin.call("users.sign_out", {"name": name})
    time.sleep(2.5)   # the session sweep closes the user's connection within about a second
    with pytest.raises(Exception):
        user.call("auth.whoami")
    user.close()
    db = sqlite3.connect(spine_server.data_dir / "paintbridge.db")
    try:
        assert db.execute("SELECT epoch FROM users WHERE name = ?", [name]).fetchone()[0] == 1
    finally:
        db.close()
