"""Token policy for a signed-in connection: what `hello`/`auth.login`/`auth.whoami` answer, the revocation
re-check before each op, the sliding refresh (`auth.refreshed`) after a mutating request, and the sweep that
closes expired and revoked sessions."""

from __future__ import annotations

import asyncio
import logging
import time

from protocol import PROTOCOL_VERSION

from . import __version__, auth, events
from .errors import NotFound, TokenExpired, Unauthenticated
from .hub import CLOSE_SIGNED_OUT

log = logging.getLogger("paintbridge.sessions")


def welcome(config, conn) -> dict:
    lim = config.limits
    return {"protocol": PROTOCOL_VERSION, "server": {"name": "paintbridge", "version": __version__},
            "user": auth.public_user(conn.user), "expires_at": conn.claims.exp,
            "limits": {"frame_limit": lim.frame_limit, "max_blob_size": lim.max_blob_size,
                       "max_pixels": lim.max_pixels, "max_steps": lim.max_steps, "max_batch": lim.max_batch,
                       "max_regions": lim.max_regions, "max_controls": lim.max_controls}}


def refresh_token(tokens: auth.Tokens, conn) -> dict:
    """A fresh token for conn's user (same remember_me); the connection switches to it: {token, expires_at}."""
    token, exp = tokens.issue(conn.uid, conn.user["epoch"], conn.claims.rm, sid=conn.claims.sid, sx=conn.claims.sx)
    conn.claims, conn.token = tokens.verify(token), token
    return {"token": token, "expires_at": exp}


def sliding_refresh(config, tokens: auth.Tokens, conn) -> events.Event | None:
    """After a successful mutating request: a new token once the current one is refresh_after_s old."""
    # A browser session (engine/web/) never gets a token: page scripts must not hold one (XSS could take it).
    if conn.web_session is not None:
        return None
    if conn.claims is not None and time.time() - conn.claims.iat >= config.refresh_after_s:
        return events.auth_refreshed(**refresh_token(tokens, conn))
    return None


async def check_signed_in(db, conn):
    """Before an op that needs sign-in: a valid, unexpired token whose user is still enabled."""
    if conn.user is None:
        raise Unauthenticated("sign in first: send hello with a token, or auth.login")
    if conn.claims.exp <= time.time():
        raise TokenExpired("token expired: sign in again")
    # Revocation (password change, disable) is re-checked at most once a second per connection.
    if time.monotonic() - conn.checked_at > 1.0:
        user = await db.run(auth.check_user, conn.claims)
        conn.user, conn.checked_at = user, time.monotonic()


async def password_attempt(db, limiter: auth.LoginLimiter, passwords: auth.PasswordChecker, name: str,
                           remote: str, password: str, uid: int | None = None) -> dict | None:
    """One password check (sign-in, or the current password when changing your own): the attempt is reserved
    before scrypt runs and counted as a failure when wrong. The user when the password is right, else None."""
    keys = auth.LoginLimiter.keys(name, remote)
    limiter.reserve(*keys)   # before the (slow) check, so parallel guesses are not all run
    failed = False
    try:
        try:
            user = await db.run(auth.get_user, uid, None if uid is not None else name)
        except NotFound:
            user = None
        failed = not await passwords.check(password, user)
    finally:
        limiter.release(*keys, failed=failed)
    return None if failed else user


async def sweep(db, hub):
    """Detach and close connections whose token expired or whose user was disabled or changed password (also
    from the CLI, which only changes the database): they must stop receiving events at once, not only be refused
    on their next request."""
    conns = hub.all()
    if not conns:
        return
    now = time.time()
    users = {u["id"]: u for u in await db.run(auth.users_by_id, sorted({c.uid for c in conns}))}
    for conn in conns:
        user = users.get(conn.uid)
        if conn.claims.exp <= now:
            why = "token expired: sign in again"
        elif user is None or user["disabled"] or user["epoch"] != conn.claims.ep:
            why = "signed out: the account was disabled or its password changed"
        else:
            continue
        hub.detach(conn)
        conn.user = None
        conn.close_soon(CLOSE_SIGNED_OUT, why)


async def sweep_forever(db, hub, every_s: float = 1.0):
    while True:
        await asyncio.sleep(every_s)
        try:
            await sweep(db, hub)
        except Exception:   # never let it die: it is what closes revoked sessions
            log.exception("session sweep failed")
