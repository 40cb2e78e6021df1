"""Jobs: job.get, job.cancel, job.list (queued by generate, graph.submit and workflows.run)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..opspec import Args, op


class JobArgs(Args):
    job: str = Field(min_length=1, max_length=64)


@op("job.get", JobArgs)
async def job_get(ctx, args: JobArgs):
    """A job's status, result layers or error (works after a reconnect or an engine restart)."""
    return await ctx.app.queue.get(args.job, ctx.conn.uid, ctx.conn.is_admin)


@op("job.cancel", JobArgs, mutating=True)
async def job_cancel(ctx, args: JobArgs):
    """Cancel a queued job now, or a running one at its next step ({status})."""
    return await ctx.app.queue.cancel(args.job, ctx.conn.uid, ctx.conn.is_admin)


class ListArgs(Args):
    status: Literal["queued", "running", "completed", "failed", "canceled"] | None = None
    limit: int = Field(default=50, ge=1, le=500)
    everyone: bool = False


@op("job.list", ListArgs)
async def job_list(ctx, args: ListArgs):
    """Your jobs, newest first (admins: everyone's with everyone=true)."""
    return {"jobs": await ctx.app.queue.list(ctx.conn.uid, ctx.conn.is_admin, args.status, args.limit,
                                             args.everyone)}
