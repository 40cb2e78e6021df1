"""Users: users.list|create|passwd|disable|admin|sign_out (admin, except changing your own password and signing
yourself out everywhere)."""

from __future__ import annotations

from pydantic import Field

from .. import auth, sessions
from ..errors import BadRequest, Forbidden
from ..opspec import Args, op


class UserArgs(Args):
    name: str = Field(max_length=auth.USERNAME_MAX)


class CreateUserArgs(UserArgs):
    password: str = Field(min_length=4, max_length=1024)
    admin: bool = False


class PasswdArgs(UserArgs):
    password: str = Field(min_length=4, max_length=1024)
    current_password: str | None = Field(default=None, max_length=1024)


@op("users.list", admin=True)
async def users_list(ctx, args):
    """All users (admin)."""
    return {"users": await ctx.app.db.run(auth.list_users)}


@op("users.create", CreateUserArgs, admin=True, mutating=True)
async def users_create(ctx, args: CreateUserArgs):
    """Create a user (admin)."""
    user = await ctx.run_blocking(lambda: ctx.app.db.sync(auth.create_user, args.name, args.password,
                                                                         args.admin))
    return {"user": auth.public_user(user)}


@op("users.passwd", PasswdArgs, mutating=False)
async def users_passwd(ctx, args: PasswdArgs):
    """Change a password: your own, or anyone's as admin. Every older token of that user stops working."""
    app, me = ctx.app, ctx.conn.user
    if args.name != me["name"]:
        if not me["admin"]:
            raise Forbidden("only an admin can change another user's password")
    else:
        # Your own password needs the current one, so a stolen token cannot become a permanent takeover. Each try
        # counts against the same limit as a sign-in: this must not be a way around it.
        if args.current_password is None:
            raise BadRequest("current_password is required to change your own password",
                             details={"field": "current_password"})
        if await sessions.password_attempt(app.db, app.login_limiter, app.passwords, me["name"], ctx.conn.remote,
                                           args.current_password, uid=me["id"]) is None:
            raise Forbidden("the current password is wrong", details={"field": "current_password"})
    await ctx.run_blocking(lambda: app.db.sync(auth.set_password, args.name, args.password))
    return {}


class DisableArgs(UserArgs):
    disabled: bool = True


@op("users.disable", DisableArgs, admin=True, mutating=True)
async def users_disable(ctx, args: DisableArgs):
    """Disable (or re-enable) a user; their tokens stop working (admin)."""
    if args.name == ctx.conn.user["name"]:
        raise BadRequest("you cannot disable yourself")
    await ctx.app.db.run(auth.set_disabled, args.name, args.disabled)
    return {}


class AdminArgs(UserArgs):
    admin: bool = True


@op("users.admin", AdminArgs, admin=True, mutating=True)
async def users_admin(ctx, args: AdminArgs):
    """Make a user an admin (or, admin=false, an ordinary user); the last enabled admin stays one (admin)."""
    await ctx.app.db.run(auth.set_admin, args.name, args.admin)
    return {}


@op("users.sign_out", UserArgs, mutating=False)
async def users_sign_out(ctx, args: UserArgs):
    """Sign a user out everywhere: every token and browser session of theirs stops working, open connections
    are closed. Yours, or anyone's as admin."""
    if args.name != ctx.conn.user["name"] and not ctx.conn.is_admin:
        raise Forbidden("only an admin can sign another user out")
    await ctx.app.db.run(auth.sign_out_everywhere, args.name)
    return {}
