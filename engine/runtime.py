"""Wires the subsystems that sit behind the ops (job queue, model registry) into a Server."""

from __future__ import annotations

from .config import Config
from .server import Server


def install_runtime(server: Server, cfg: Config) -> None:
    try:
        from .queue import install as install_queue
    except ModuleNotFoundError as exc:   # generation not built yet
        if exc.name != "engine.queue":
            raise
        return
    install_queue(server, cfg)
