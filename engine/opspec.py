"""The op registry, below every op: `Args` (strict pydantic arguments), `@op` (registers a handler in OPS),
`OpContext` (what a handler sees) and `bad_args` (a validation failure as a typed bad_request).

A handler is `async def handler(ctx: OpContext, args) -> result`, where args is an instance of the op's
pydantic model, validated (strictly: no silent coercion, unknown fields refused) before the handler runs. Every
op `X.y` (or bare `X`) lives in engine/ops/X.py; importing engine.ops registers them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from .aio import run_blocking
from .errors import BadRequest, EngineError


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


@dataclass
class OpContext:
    """What a handler sees: the engine's services (engine.app.Services: config, db, blobs, queue, models, ...),
    the calling connection (engine.server.Connection: user, claims, token, client_info, sign_in) and the
    request id. Nodes never see this: they get a JobContext (engine/job_context.py)."""

    app: Any
    conn: Any
    rid: int

    async def run_blocking(self, fn, *args):
        """Blocking work (hashing, file I/O) on the thread pool, off the event loop."""
        return await run_blocking(fn, *args)


def bad_args(op_name: str, exc: ValidationError) -> EngineError:
    """A pydantic failure as bad_request naming every field: {fields: [{field, problem}]}."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "args"
        problems.append({"field": where, "problem": err["msg"]})
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return BadRequest(f"{op_name}: {first['field']}: {first['problem']}{more}", details={"fields": problems})
