"""The worker pool: pool.status (admin)."""

from __future__ import annotations

from ..opspec import op


@op("pool.status", admin=True)
async def pool_status(ctx, args):
    """The worker pool: mode (off | local | cluster), state (starting | up | down), its workers (models loaded,
    busy or idle, the job each runs) and how many jobs wait (admin)."""
    pool = ctx.app.pool
    queued = await ctx.app.db.run(lambda db: db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
                                  .fetchone()[0])
    if pool is None:
        return {"mode": "off", "state": "off", "message": "jobs run in the engine's own process", "workers": [],
                "queued": queued}
    return {**pool.status(), "queued": queued}
