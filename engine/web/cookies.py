"""The web page's browser sessions: a random cookie value, of which the database keeps only the SHA-256.

A session ends at its absolute expiry (token_ttl_s, or remember_ttl_s with "remember me"), after web_idle_s
without a request (web_remember_idle_s with "remember me"), when its user signs out, and with every token of its
user when the user's epoch moves (password changed, disabled, "sign out everywhere": engine/auth.py). Plug-ins
keep their bearer tokens; a browser never sees one.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from .. import auth
from ..errors import NotFound

COOKIE = "pb_session"
SECURE_COOKIE = "__Host-pb_session"   # under TLS: the prefix makes browsers insist on Secure, Path=/ and no Domain
TOUCH_EVERY_S = 30.0                  # `seen` is written at most this often per session
# An ended session's row stays this long, so every request that still carries its cookie (the page's own /session
# check, a socket retry, another tab) hears "expired" and not "none"; the sweep in create() removes it after.
KEEP_ENDED_S = 86400.0


def cookie_name(tls: bool) -> str:
    return SECURE_COOKIE if tls else COOKIE


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("ascii", "replace")).hexdigest()


@dataclass
class WebSession:
    id: str            # the SHA-256 of the cookie value
    user: dict         # the users row
    created: float
    expires: float     # absolute
    remember: bool

    def claims(self) -> auth.Claims:
        """Claims for a connection signed in by this session (no token is ever made from them)."""
        return auth.Claims(self.user["id"], self.expires, self.created, self.remember, self.user["epoch"])


def create(db, config, user: dict, remember: bool) -> tuple[str, float]:
    """A new session for user: (cookie value, absolute expiry). Rows ended over KEEP_ENDED_S ago are swept."""
    now = time.time()
    value = secrets.token_urlsafe(32)
    life = config.remember_ttl_s if remember else config.token_ttl_s
    idle = config.web_remember_idle_s if remember else config.web_idle_s
    gone = now - KEEP_ENDED_S
    db.execute("DELETE FROM web_sessions WHERE expires <= ? OR seen + idle_s <= ?", [gone, gone])
    db.execute("INSERT INTO web_sessions (id, user_id, epoch, created, seen, expires, idle_s, remember) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               [_digest(value), user["id"], user["epoch"], now, now, now + life, idle, int(remember)])
    return value, now + life


def find(db, value: str | None) -> tuple[WebSession | None, str]:
    """The live session for a cookie value, touched, or (None, why): "none" (no cookie or an unknown one) or
    "expired" (it was a session once: expired, idle too long, or its user signed out everywhere / disabled)."""
    if not value or len(value) > 256:
        return None, "none"
    sid = _digest(value)
    rows = list(db.query("SELECT * FROM web_sessions WHERE id = ?", [sid]))
    if not rows:
        return None, "none"
    row, now = rows[0], time.time()
    try:
        user = auth.get_user(db, uid=row["user_id"])
    except NotFound:
        user = None
    if (row["expires"] <= now or row["seen"] + row["idle_s"] <= now or user is None or user["disabled"]
            or user["epoch"] != row["epoch"]):
        return None, "expired"   # the row stays (KEEP_ENDED_S): asked again, it still says "expired"
    if now - row["seen"] >= TOUCH_EVERY_S:
        db.execute("UPDATE web_sessions SET seen = ? WHERE id = ?", [now, sid])
    return WebSession(sid, user, row["created"], row["expires"], bool(row["remember"])), ""


def alive(db, ids: list[str]) -> set[str]:
    """Which of these sessions are still within their absolute and idle expiry (not touched by asking)."""
    now = time.time()
    marks = ",".join("?" * len(ids))
    return {r["id"] for r in db.query(f"SELECT id FROM web_sessions WHERE id IN ({marks}) AND expires > ? "
                                      "AND seen + idle_s > ?", [*ids, now, now])}


def delete(db, sid: str) -> None:
    db.execute("DELETE FROM web_sessions WHERE id = ?", [sid])
