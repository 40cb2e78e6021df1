"""Liveness and clock: ping."""

from __future__ import annotations

import time

from ..opspec import op


@op("ping")
async def ping(ctx, args):
    """Liveness and clock: {time}."""
    return {"time": time.time()}
