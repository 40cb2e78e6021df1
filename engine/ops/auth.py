"""Password sign-in and tokens: auth.login, auth.refresh, auth.whoami, auth.logout."""

from __future__ import annotations

import time

from pydantic import Field

from .. import auth, sessions
from ..errors import Forbidden, Unauthenticated
from ..hub import CLOSE_SIGNED_OUT
from ..opspec import Args, op


class LoginArgs(Args):
    username: str = Field(max_length=auth.USERNAME_MAX)
    password: str = Field(max_length=1024)
    remember_me: bool = False


@op("auth.login", LoginArgs, auth=False)
async def login(ctx, args: LoginArgs):
    """Exchange a username and password for a token; the connection is signed in."""
    app = ctx.app
    user = await sessions.password_attempt(app.db, app.login_limiter, app.passwords, args.username,
                                           ctx.conn.remote, args.password)
    if user is None:
        raise Unauthenticated("wrong username or password")
    token, expires_at = app.tokens.issue(user["id"], user["epoch"], args.remember_me)
    ctx.conn.sign_in(user, app.tokens.verify(token), token, ctx.conn.client_info)
    return {"token": token, "expires_at": expires_at, **sessions.welcome(app.config, ctx.conn)}


@op("auth.refresh", mutating=False)
async def refresh(ctx, args):
    """Issue a fresh token now (same remember_me); the connection switches to it. Not for a connection signed
    in by the web page's session cookie: page scripts never hold a token."""
    if ctx.conn.web_session is not None:
        raise Forbidden("a browser session has no token to refresh")
    return sessions.refresh_token(ctx.app.tokens, ctx.conn)


@op("auth.whoami")
async def whoami(ctx, args):
    """The signed-in user and when the connection's token expires."""
    return sessions.welcome(ctx.app.config, ctx.conn)


@op("auth.logout")
async def logout(ctx, args):
    """Sign out on the engine: every token of this connection's sign-in (refreshed ones, any copy) is refused from
    now on, and every connection signed in with one is closed (4401) after this reply → {}. Other sign-ins of the
    same user stay valid."""
    app, conn = ctx.app, ctx.conn
    if conn.web_session is not None:
        raise Forbidden("a browser session has no token to revoke: sign out from the page")
    claims = conn.claims
    # no token of this sign-in outlives the latest expiry so far or a refresh made just before now
    keep_until = max(claims.sx, time.time() + max(app.config.token_ttl_s, app.config.remember_ttl_s))
    await app.db.run(auth.revoke_session, claims, keep_until)
    for other in app.hub.all():
        if other.claims is not None and other.claims.sid == claims.sid:
            app.hub.detach(other)
            other.user = None
            other.close_soon(CLOSE_SIGNED_OUT, auth.SIGNED_OUT)
    return {}
