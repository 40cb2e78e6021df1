"""The op registry: every wire op is one async handler in one module of this package, named after its prefix
(hello/auth.* → session.py, blob.* → blobs.py, generate/graph.*/job.* → jobs.py, models.* → models.py, ...).

A handler is `async def handler(ctx, args) -> result`, where args is an instance of the op's pydantic model,
validated (strictly: no silent coercion, unknown fields refused) before the handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, ConfigDict


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoArgs(Args):
    pass


@dataclass
class OpSpec:
    name: str
    handler: Callable[..., Awaitable[Any]]
    args: type[Args]
    auth: bool          # needs a signed-in connection
    admin: bool         # needs an admin user
    mutating: bool      # success triggers the sliding token refresh
    doc: str


OPS: dict[str, OpSpec] = {}


def op(name: str, args: type[Args] = NoArgs, *, auth: bool = True, admin: bool = False, mutating: bool = False):
    def register(fn):
        if name in OPS:
            raise RuntimeError(f"op {name} registered twice")
        OPS[name] = OpSpec(name, fn, args, auth, admin, mutating, (fn.__doc__ or "").strip())
        return fn
    return register


def load_all():
    """Import every handler module so their @op decorators run."""
    from . import blobs, images, jobs, models, session, workflows  # noqa: F401
