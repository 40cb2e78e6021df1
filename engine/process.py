"""`paintbridge serve` as a child process: start it on a free port, wait until it listens, stop or kill it.

Used by the tests (real engines on real sockets), the benchmarks and the GPU script; anything that needs a
running engine it owns.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocol.client import Client

ROOT = Path(__file__).resolve().parents[1]
LISTEN_RE = re.compile(r"listening on (wss?://[^\s]+)")


@dataclass
class EngineProcess:
    data_dir: Path
    args: list[str] = field(default_factory=list)
    root: Path = ROOT          # the checkout to run (benchmarks A/B-test another one)
    port: int = 0              # 0 until the first start; restarts reuse the port so clients can reconnect
    app: str = "python"
    proc: subprocess.Popen | None = None
    url: str = ""
    token: str = ""
    model_name: str | None = None
    log: list[str] = field(default_factory=list)

    def start(self, timeout: float = 120.0) -> "EngineProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(self.root))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
             *self.args], cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
                threading.Thread(target=self._drain, daemon=True).start()
                if not self.token:
                    self.token = self.cli("token").split()[-1]
                return self
        self.kill()
        raise RuntimeError("engine did not start:\n" + "".join(self.log[-50:]))

    def cli(self, *args: str) -> str:
        """Run `paintbridge ARGS --data-dir DATA_DIR`-style commands against this engine's data dir."""
        res = subprocess.run([sys.executable, "-m", "engine.cli", args[0], "--data-dir", str(self.data_dir),
                              *args[1:]], cwd=self.root, capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, PYTHONPATH=str(self.root)))
        if res.returncode != 0:
            raise RuntimeError(f"paintbridge {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res.stdout

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line)
            if len(self.log) > 5000:
                del self.log[:1000]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, token: str | None = "default", **kw):
        c = Client(self.url, self.token if token == "default" else token, app=self.app, **kw)
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

    def restart(self) -> "EngineProcess":
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
