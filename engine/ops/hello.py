"""Signing a connection in with a token: hello (the first request of every connection, SPEC.md §4)."""

from __future__ import annotations

from pydantic import Field

from .. import auth, sessions
from ..errors import UnsupportedVersion
from ..opspec import Args, op


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
    claims = ctx.app.tokens.verify(args.token)
    user = await ctx.app.db.run(auth.check_user, claims)
    ctx.conn.sign_in(user, claims, args.token, args.client.model_dump() if args.client else {})
    return sessions.welcome(ctx.app.config, ctx.conn)
