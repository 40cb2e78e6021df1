"""Signing in and out, users, and liveness: hello, auth.*, users.*, ping."""

from __future__ import annotations

import time

from pydantic import Field

from .. import auth
from ..errors import BadRequest, Forbidden, Unauthenticated, UnsupportedVersion
from . import Args, op


class ClientInfo(Args):
    app: str = Field(max_length=64)
    version: str = Field(default="", max_length=64)


class HelloArgs(Args):
    protocol: int
    token: str = Field(max_length=2048)
    client: ClientInfo | None = None


@op("hello", HelloArgs, auth=False)
async def hello(ctx, args: HelloArgs):
    """Sign a connection in with a token."""
    if args.protocol != 1:
        raise UnsupportedVersion(f"protocol {args.protocol} is not supported; this server speaks 1",
                                 details={"supported": [1]})
    claims = ctx.server.tokens.verify(args.token)
    user = await ctx.server.db.run(auth.check_user, claims)
    ctx.conn.sign_in(user, claims, args.token, args.client.model_dump() if args.client else {})
    return ctx.server.welcome(ctx.conn)


class LoginArgs(Args):
    username: str = Field(max_length=auth.USERNAME_MAX)
    password: str = Field(max_length=1024)
    remember_me: bool = False


@op("auth.login", LoginArgs, auth=False)
async def login(ctx, args: LoginArgs):
    """Exchange a username and password for a token; the connection is signed in."""
    server = ctx.server
    keys = (f"user:{args.username}", f"addr:{ctx.conn.remote}")
    server.login_limiter.check(*keys)

    def verify(db):
        try:
            user = auth.get_user(db, name=args.username)
        except Exception:
            auth.check_password(args.password, None, None)   # same cost whether or not the user exists
            return None
        if not auth.check_password(args.password, user["pw_hash"], user["pw_salt"]) or user["disabled"]:
            return None
        return user

    user = await server.run_blocking(lambda: server.db.sync(verify))
    if user is None:
        server.login_limiter.failed(*keys)
        raise Unauthenticated("wrong username or password")
    token, expires_at = server.tokens.issue(user["id"], user["epoch"], args.remember_me)
    ctx.conn.sign_in(user, server.tokens.verify(token), token, ctx.conn.client_info)
    return {"token": token, "expires_at": expires_at, **server.welcome(ctx.conn)}


@op("auth.refresh", mutating=False)
async def refresh(ctx, args):
    """Issue a fresh token now (same remember_me); the connection switches to it."""
    return ctx.server.refresh_token(ctx.conn)


@op("auth.whoami")
async def whoami(ctx, args):
    """The signed-in user and when the connection's token expires."""
    return ctx.server.welcome(ctx.conn)


@op("ping")
async def ping(ctx, args):
    """Liveness and clock: {time}."""
    return {"time": time.time()}


class UserArgs(Args):
    name: str = Field(max_length=auth.USERNAME_MAX)


class CreateUserArgs(UserArgs):
    password: str = Field(min_length=4, max_length=1024)
    admin: bool = False


class PasswdArgs(UserArgs):
    password: str = Field(min_length=4, max_length=1024)


@op("users.list", admin=True)
async def users_list(ctx, args):
    """All users (admin)."""
    return {"users": await ctx.server.db.run(auth.list_users)}


@op("users.create", CreateUserArgs, admin=True, mutating=True)
async def users_create(ctx, args: CreateUserArgs):
    """Create a user (admin)."""
    user = await ctx.server.run_blocking(lambda: ctx.server.db.sync(auth.create_user, args.name, args.password,
                                                                         args.admin))
    return {"user": auth.public_user(user)}


@op("users.passwd", PasswdArgs, mutating=False)
async def users_passwd(ctx, args: PasswdArgs):
    """Change a password: your own, or anyone's as admin. Every older token of that user stops working."""
    if args.name != ctx.conn.user["name"] and not ctx.conn.user["admin"]:
        raise Forbidden("only an admin can change another user's password")
    await ctx.server.run_blocking(lambda: ctx.server.db.sync(auth.set_password, args.name, args.password))
    return {}


class DisableArgs(UserArgs):
    disabled: bool = True


@op("users.disable", DisableArgs, admin=True, mutating=True)
async def users_disable(ctx, args: DisableArgs):
    """Disable (or re-enable) a user; their tokens stop working (admin)."""
    if args.name == ctx.conn.user["name"]:
        raise BadRequest("you cannot disable yourself")
    await ctx.server.db.run(auth.set_disabled, args.name, args.disabled)
    return {}
