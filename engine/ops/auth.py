"""Password sign-in and tokens: auth.login, auth.refresh, auth.whoami."""

from __future__ import annotations

from pydantic import Field

from .. import auth, sessions
from ..errors import Unauthenticated
from ..opspec import Args, op


class LoginArgs(Args):
    username: str = Field(max_length=auth.USERNAME_MAX)
    password: str = Field(max_length=1024)
    remember_me: bool = False


@op("auth.login", LoginArgs, auth=False)
async def login(ctx, args: LoginArgs):
    """Exchange a username and password for a token; the connection is signed in."""
    app = ctx.app
    keys = (f"user:{args.username}", f"addr:{ctx.conn.remote}")
    app.login_limiter.check(*keys)

    def verify(db):
        try:
            user = auth.get_user(db, name=args.username)
        except Exception:
            auth.check_password(args.password, None, None)   # same cost whether or not the user exists
            return None
        if not auth.check_password(args.password, user["pw_hash"], user["pw_salt"]) or user["disabled"]:
            return None
        return user

    user = await ctx.run_blocking(lambda: app.db.sync(verify))
    if user is None:
        app.login_limiter.failed(*keys)
        raise Unauthenticated("wrong username or password")
    token, expires_at = app.tokens.issue(user["id"], user["epoch"], args.remember_me)
    ctx.conn.sign_in(user, app.tokens.verify(token), token, ctx.conn.client_info)
    return {"token": token, "expires_at": expires_at, **sessions.welcome(app.config, ctx.conn)}


@op("auth.refresh", mutating=False)
async def refresh(ctx, args):
    """Issue a fresh token now (same remember_me); the connection switches to it."""
    return sessions.refresh_token(ctx.app.tokens, ctx.conn)


@op("auth.whoami")
async def whoami(ctx, args):
    """The signed-in user and when the connection's token expires."""
    return sessions.welcome(ctx.app.config, ctx.conn)
