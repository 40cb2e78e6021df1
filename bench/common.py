"""Shared plumbing: daemon processes, timing statistics, machine facts, test images."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.process import EngineProcess  # noqa: E402


# ---- timing ----------------------------------------------------------------------------------------------------
def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs) -> str:
    """'min–max' of a list of seconds, in ms."""
    if not xs:
        return ""
    lo, hi = min(xs) * 1e3, max(xs) * 1e3
    nd = 3 if hi < 1 else (2 if hi < 10 else 1)
    return f"{lo:.{nd}f}–{hi:.{nd}f}"


def timed(fn, repeat: int, warmup: int = 1, setup=None) -> list[float]:
    """Run fn() warmup+repeat times (setup() before each, untimed; its result is passed to fn); seconds."""
    out = []
    for i in range(warmup + repeat):
        arg = setup(i) if setup is not None else None
        t0 = time.perf_counter()
        fn(arg) if setup is not None else fn()
        dt = time.perf_counter() - t0
        if i >= warmup:
            out.append(dt)
    return out


# ---- daemon ----------------------------------------------------------------------------------------------------
class Daemon(EngineProcess):
    """`paintbridge serve` as a subprocess (engine/process.py), quiet, from this checkout or from
    PAINTBRIDGE_BENCH_ENGINE_ROOT (A/B-testing an engine fix against another checkout)."""

    def __init__(self, data_dir: Path, args: list[str] | None = None):
        root = Path(os.environ.get("PAINTBRIDGE_BENCH_ENGINE_ROOT") or ROOT)
        super().__init__(data_dir, ["--quiet", *(args or [])], root=root, app="bench")

    def client(self, token: str | None = None, **kw):
        return super().client(token or self.token, reconnect=False, **kw)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (bytes) of a process, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). False where not possible."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---- images ----------------------------------------------------------------------------------------------------
def painting(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A deterministic HxWx4 uint8 'painting': smooth gradients, filled shapes, soft strokes and a little noise,
    so that PNG compresses it about as well as real artwork (neither flat nor white noise)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 40 + 150 * x + 40 * np.sin(6.0 * y)
    img[..., 1] = 60 + 120 * y + 30 * np.cos(5.0 * x + 2.0 * y)
    img[..., 2] = 170 - 100 * x * y + 20 * np.sin(9.0 * (x + y))
    yy, xx = np.ogrid[:h, :w]
    for _ in range(24):   # discs and rectangles with flat-ish colour
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(max(2, min(w, h) // 40), max(3, min(w, h) // 6)))
        color = rng.uniform(0, 255, 3).astype(np.float32)
        if rng.random() < 0.5:
            m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        else:
            m = (abs(xx - cx) <= r) & (abs(yy - cy) <= r // 2)
        img[m] = 0.8 * color + 0.2 * img[m]
    img += rng.normal(0.0, 2.0, size=(h, w, 1)).astype(np.float32)  # paper/brush grain
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = np.clip(img, 0, 255).astype(np.uint8)
    a = np.full((h, w), 255, np.uint8)
    a[: h // 8, : w // 8] = 0          # a transparent corner, as layers have
    rgba[..., 3] = a
    return rgba


def mutate(buf: bytearray, i: int) -> bytearray:
    """Change a few pixels so the content hash is new (the blob store de-duplicates identical bytes)."""
    stamp = i.to_bytes(8, "little")
    n = len(buf)
    for k, pos in enumerate((n // 2, n // 3, n - 64)):
        buf[pos:pos + 8] = stamp
        buf[pos + 8 + k] ^= 0xFF
    return buf


# ---- machine facts ---------------------------------------------------------------------------------------------
def machine() -> dict:
    info = {"os": f"{platform.system()} {platform.release()}", "platform": platform.platform(),
            "python": platform.python_version(), "cores": os.cpu_count() or 0}
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu"] = cpu or "unknown"
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["ram_gib"] = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    info["os"] += " / " + line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return info


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "aiohttp", "msgpack", "websockets", "pydantic", "numpy",
                 "pillow", "paintbridge"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "—"
    try:
        import msgpack
        from msgpack import _cmsgpack  # noqa: F401
        out["msgpack"] += " (C ext)"
    except Exception:
        out["msgpack"] += " (pure Python)"
    try:
        import torch
        out["torch threads"] = str(torch.get_num_threads())
        out["device"] = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:
        pass
    return out
