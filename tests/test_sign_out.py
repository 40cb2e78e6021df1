"""A real server-side sign-out (issue #15's review: "a copy of the token stays valid on the engine until it
expires"): auth.logout revokes the calling connection's sign-in, every token of it (refreshed ones included),
and Session.sign_out calls it when connected."""

from __future__ import annotations

from websockets.exceptions import ConnectionClosed

from protocol.client import Client
from protocol.session import Session
from protocol.updates import SignedIn, StateChanged

from .helpers import add_user, hello_reply, raw, rpc, updates_until


def _closed(ws, timeout=5.0):
    try:
        while True:
            ws.recv(timeout)
    except TimeoutError:
        return None
    except ConnectionClosed as exc:
        return exc


def test_logout_revokes_the_sign_in_and_nothing_else(spine_server):
    name, password = add_user(spine_server)
    c = Client(spine_server.url, reconnect=False).connect()
    c.login(name, password)
    first = c.token
    refreshed = c.call("auth.refresh")["token"]          # the same sign-in, a newer token
    other = Client(spine_server.url, reconnect=False).connect()
    other.login(name, password)                          # a second sign-in of the same user
    copy = raw(spine_server, first)                      # another connection holding a copy of the token

    assert c.call("auth.logout") == {}
    assert _closed(copy).rcvd.code == 4401               # the copy's connection is signed out at once
    for token in (first, refreshed):
        reply = hello_reply(spine_server, token)
        assert reply["ok"] is False and reply["error"]["code"] == "unauthenticated", reply
        assert "signed out" in reply["error"]["message"]
    assert other.call("ping")["time"] > 0                # the other sign-in is untouched
    assert hello_reply(spine_server, other.token)["ok"] is True
    other.close()
    c.close()


def test_the_calling_connection_gets_the_reply_then_is_closed(spine_server):
    name, password = add_user(spine_server)
    c = Client(spine_server.url, reconnect=False).connect()
    c.login(name, password)
    ws = raw(spine_server, c.token)
    c.close()
    assert rpc(ws, 5, "auth.logout") == {"re": 5, "ok": True, "result": {}}
    closed = _closed(ws)
    assert closed is not None and closed.rcvd.code == 4401 and "signed out" in closed.rcvd.reason


def test_logout_needs_a_sign_in(spine_server):
    with raw(spine_server) as ws:
        reply = rpc(ws, 1, "auth.logout")
    assert reply["ok"] is False and reply["error"]["code"] == "unauthenticated"


def _wait(session, pred, timeout=15.0):
    return updates_until(session, pred, timeout)[-1]


def test_session_sign_out_revokes_the_token_on_the_engine(spine_server, tmp_path):
    name, password = add_user(spine_server)
    s = Session("pytest", "1", str(tmp_path), url=spine_server.url, use_keyring=False)
    try:
        s.login(name, password, remember_me=True)
        _wait(s, lambda up: isinstance(up, SignedIn))   # after the token is stored
        token = s.tokens.get(spine_server.url)
        assert token and hello_reply(spine_server, token)["ok"] is True
        s.sign_out()
        up = _wait(s, lambda up: isinstance(up, StateChanged) and up.state == "signed_out")
        assert "engine" in up.message     # says the sign-in was ended on the engine, not only here
        assert s.tokens.get(spine_server.url) is None
        reply = hello_reply(spine_server, token)
        assert reply["ok"] is False and reply["error"]["code"] == "unauthenticated"
    finally:
        s.close()


def test_session_sign_out_while_the_engine_is_away_still_forgets_the_token(tmp_path):
    """Not connected: nothing to revoke on the engine; the stored token is deleted and the message says so."""
    url = "ws://127.0.0.1:9/v1/ws"   # discard port: nothing listens
    s = Session("pytest", "1", str(tmp_path), url=url, use_keyring=False)
    try:
        s.tokens.set(url, "a.b")
        s.sign_out()
        up = _wait(s, lambda up: isinstance(up, StateChanged) and up.state == "signed_out")
        assert s.tokens.get(url) is None
        assert "this computer" in up.message and "not connected" in up.message
    finally:
        s.close()

