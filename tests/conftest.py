"""Shared fixtures: real engine processes on real sockets (no mocks of our own server).

`spawn_engine(...)` starts `paintbridge serve` on a free port in its own data dir and returns an EngineProc
(url, token, data_dir, model_name; stop/kill/restart). `engine_server` is one engine with a tiny demo SD1.5
model shared by the whole session; tests that restart or kill the engine spawn their own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol.client import Client  # noqa: E402

LISTEN_RE = re.compile(r"listening on (wss?://[^\s]+)")


@dataclass
class EngineProc:
    data_dir: Path
    args: list[str]
    proc: subprocess.Popen | None = None
    url: str = ""
    port: int = 0   # 0 until the first start; restarts reuse the port so clients can reconnect
    token: str = ""
    model_name: str | None = None
    log: list[str] = field(default_factory=list)

    def start(self, timeout: float = 120.0) -> "EngineProc":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            m = LISTEN_RE.search(line)
            if m:
                self.url = m.group(1)
                self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
                # keep draining output so the pipe never fills up and blocks the engine
                import threading
                threading.Thread(target=self._drain, daemon=True).start()
                if not self.token:
                    self.token = cli("token", "--data-dir", str(self.data_dir)).split()[-1]
                return self
        raise RuntimeError("engine did not start:\n" + "".join(self.log))

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line)
            if len(self.log) > 5000:
                del self.log[:1000]

    def client(self, token: str | None = "default", **kw) -> Client:
        c = Client(self.url, self.token if token == "default" else token, app="pytest", **kw)
        c.connect()
        return c

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> "EngineProc":
        self.stop()
        return self.start()


def cli(*args: str, input: str | None = None, check: bool = True) -> str:
    res = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                         input=input, timeout=300)
    if check and res.returncode != 0:
        raise RuntimeError(f"paintbridge {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


@pytest.fixture
def spawn_engine(tmp_path_factory):
    procs: list[EngineProc] = []

    def spawn(*args: str, data_dir: Path | None = None) -> EngineProc:
        proc = EngineProc(data_dir or tmp_path_factory.mktemp("engine"), list(args)).start()
        procs.append(proc)
        return proc

    yield spawn
    for p in procs:
        p.kill()


@pytest.fixture(scope="module")
def spine_server(tmp_path_factory):
    """An engine without models, for protocol/auth/blob tests (one per test module)."""
    proc = EngineProc(tmp_path_factory.mktemp("spine"), []).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> Path:
    """A models folder with tiny random-weight demo models (they produce noise, by design)."""
    from engine.models.demo import make_demo

    root = tmp_path_factory.mktemp("models")
    for arch in ("sd15", "sdxl", "flux"):
        make_demo(root / "build", arch).rename(root / f"tiny-{arch}")
    return root


@pytest.fixture(scope="session")
def engine_server(tmp_path_factory, demo_models):
    proc = EngineProc(tmp_path_factory.mktemp("engine-shared"), ["--models", str(demo_models)])
    proc.model_name = "tiny-sd15"
    proc.start()
    yield proc
    proc.kill()
