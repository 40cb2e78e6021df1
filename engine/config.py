"""Engine configuration: defaults, overridden by DATA_DIR/config.toml, overridden by the command line.

One place for every limit (issue: hardening), so an operator can read and change them together.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import platformdirs

MiB = 1024 * 1024


@dataclass
class Limits:
    frame_limit: int = 16 * MiB            # largest accepted WebSocket frame (wire contract default)
    max_blob_size: int = 2048 * MiB        # largest blob (chunked upload total)
    max_pending_uploads: int = 8           # chunked uploads in flight per user
    upload_idle_s: float = 600.0           # an idle chunked upload is dropped after this
    max_pixels: int = 16 * 1024 * 1024     # width*height of one generation (16 MP)
    max_steps: int = 200
    max_batch: int = 16
    max_queued_per_user: int = 200
    max_job_bytes: int = 2048 * MiB        # images/tensors one job may hold at once (intermediate results)
    max_outputs: int = 64                  # output nodes in one graph
    max_regions: int = 10                  # regions in one generate (a regions node takes at most 64)
    max_controls: int = 8                  # controls + references in one generate request
    max_connections_per_user: int = 64
    max_connections: int = 1024            # open TCP connections, engine-wide (descriptors are raised to fit)
    max_unauthenticated: int = 64          # WebSockets not signed in yet; at the cap the oldest is closed
    preauth_bytes: int = 64 * 1024         # bytes a connection may send before it signs in (hello is ~1 KiB)
    header_timeout_s: float = 10.0         # a connection must complete a request (or TLS handshake) this fast
    outbox_bytes: int = 64 * MiB           # replies queued for a slow reader: past this its requests wait
    login_failures: int = 5                # failed logins allowed per user (per address: 4x) ...
    login_window_s: float = 60.0           # ... within this window, then a back-off (1 s, doubling, up to the window)
    login_concurrent: int = 2              # sign-ins being checked at once per account and per source address
    login_workers: int = 2                 # threads that run scrypt (never the database thread)
    login_queue: int = 32                  # sign-ins waiting for those threads, engine-wide; more are rate_limited
    bad_frames_before_close: int = 50      # consecutive undecodable frames before we drop the peer


@dataclass
class BlobRetention:
    """[blobs] in config.toml: how long unreferenced blobs stay, and how often they are collected (store/gc.py).

    A blob is kept while a gallery image, a queued or running job, a job finished less than job_retention_h ago
    or a saved workflow references it, and for upload_retention_h after it was last uploaded or referenced
    (blob.put, blob.has answering "have it", a generate that uses it). Everything else is deleted."""
    upload_retention_h: float = 24.0       # an unreferenced blob lives this long after its last upload/use
    job_retention_h: float = 7 * 24.0      # a finished job keeps its inputs and results (job.get) this long
    gc_interval_min: float = 60.0          # collect at start and then this often; 0 = never automatically


@dataclass
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 9180
    model_dirs: list[Path] = field(default_factory=list)
    allow_origins: list[str] = field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_ttl_s: int = 24 * 3600
    remember_ttl_s: int = 7 * 24 * 3600
    refresh_after_s: int = 60              # sliding window: re-issue a token at most this often per connection
    # The web page's browser sessions (engine/web/): signed out after this long without a request (absolute
    # expiry: token_ttl_s, or remember_ttl_s with "remember me")
    web_idle_s: int = 2 * 3600
    web_remember_idle_s: int = 3 * 24 * 3600
    # Host names the web page answers to besides IP addresses, localhost and --host (DNS-rebinding guard)
    web_hosts: list[str] = field(default_factory=list)
    ram_budget_mb: int = 0                 # model cache budgets; 0 = automatic
    # generate's few-step presets (engine/presets.py): "PRESET/BASE" -> the registered LoRA to use, e.g.
    # "lcm/sdxl" = "my-lcm-lora", when its file has none of the usual names
    preset_loras: dict[str, str] = field(default_factory=dict)
    vram_budget_mb: int = 0
    # The worker pool (engine/pool/): jobs run on Ray Serve workers, one per GPU. Off when both are unset.
    pool_workers: int = 0                  # workers (GPUs); alone: a local Ray cluster with that many
    pool_address: str | None = None        # an existing Ray cluster (HOST:6379) to run the workers on
    pool_port: int = 0                     # the port of the workers' blob route (0: any free one)
    limits: Limits = field(default_factory=Limits)
    blobs: BlobRetention = field(default_factory=BlobRetention)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "paintbridge.db"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


def default_data_dir() -> Path:
    env = os.environ.get("PAINTBRIDGE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("paintbridge", appauthor=False))


def load_config(data_dir: str | os.PathLike | None = None, **overrides) -> Config:
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    cfg = Config(data_dir=root)
    file = root / "config.toml"
    if file.exists():
        with file.open("rb") as f:
            raw = tomllib.load(f)
        _apply(cfg.limits, raw.pop("limits", {}), "limits")
        _apply(cfg.blobs, raw.pop("blobs", {}), "blobs")
        _apply(cfg, raw, "")
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    cfg.model_dirs = [Path(p).expanduser() for p in cfg.model_dirs]
    return cfg


def _apply(obj, raw: dict, prefix: str):
    known = {f.name: f for f in fields(obj)}
    for key, value in raw.items():
        if key not in known or key in ("data_dir", "limits", "blobs"):
            raise ValueError(f"config.toml: unknown setting {prefix + '.' if prefix else ''}{key}")
        setattr(obj, key, value)
