"""What more than one test module needs: engine processes and the CLI, raw sockets, jobs, layers, users, Session
updates, and the shared workflow graphs. Test modules import from here, never from each other (fixtures live
in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
import uuid
import weakref
from pathlib import Path

import numpy as np
import pytest
from websockets.sync.client import connect as ws_connect

from engine.process import EngineProcess
from protocol import codec
from protocol.client import Client
from protocol.errors import ProtocolError
from protocol.session import Session

ROOT = Path(__file__).resolve().parents[1]
FINISHED = ("job.result", "job.failed", "job.canceled")
ENGINE_ALLOWED = True   # conftest.py sets it per test: False in tests not marked slow


# ---- engine processes and the CLI ------------------------------------------------------------------------------
class EngineProc(EngineProcess):
    """An engine process for tests (see engine/process.py)."""

    def __init__(self, data_dir: Path, args: list[str]):
        super().__init__(data_dir, args, app="pytest")

    def start(self, timeout: float = 120.0) -> "EngineProc":
        if not ENGINE_ALLOWED:
            raise RuntimeError("this test starts an engine but is not marked slow: use a fixture from "
                               "conftest.SLOW_FIXTURES or mark it @pytest.mark.slow")
        return super().start(timeout)


def cli_run(*args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`paintbridge ARGS` from this checkout; the caller checks the exit status."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          input=input, timeout=300, env=env)


def cli(*args: str, input: str | None = None, check: bool = True) -> str:
    res = cli_run(*args, input=input)
    if check and res.returncode != 0:
        raise RuntimeError(f"paintbridge {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def health(engine) -> dict:
    """GET /v1/health (no sign-in)."""
    url = engine.url.replace("ws://", "http://").replace("/v1/ws", "/v1/health")
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


# ---- users -----------------------------------------------------------------------------------------------------
def add_user(engine, name: str | None = None, admin: bool = False) -> tuple[str, str]:
    """A new user in the engine's data dir (a random name unless given); returns (name, password)."""
    name = name or f"u{uuid.uuid4().hex[:8]}"
    password = "pw-" + name
    engine.cli("users", "add", name, "--password", password, *(["--admin"] if admin else []))
    return name, password


def user_token(engine, name: str, *extra: str) -> str:
    """`paintbridge token --user NAME` (extra: e.g. "--ttl", "1")."""
    return engine.cli("token", "--user", name, *extra).split()[-1]


def app_client(engine, app, token=None) -> Client:
    return Client(engine.url, token or engine.token, app=app, reconnect=False).connect()


def new_user(engine, admin=False, app="krita") -> Client:
    """A connection signed in with the password of a new user."""
    name, password = add_user(engine, admin=admin)
    c = Client(engine.url, app=app, reconnect=False).connect()
    c.login(name, password)
    return c


def errcode(fn, *a) -> ProtocolError:
    """The typed error that fn(*a) must raise."""
    with pytest.raises(ProtocolError) as e:
        fn(*a)
    return e.value


# ---- raw websockets (below protocol.client) ------------------------------------------------------------------
def raw(engine, token=None, headers=None, app="raw"):
    """A bare websocket; signed in with `hello` when a token is given."""
    ws = ws_connect(engine.url, compression=None, max_size=None, additional_headers=headers)
    if token:
        ws.send(codec.encode(codec.request(0, "hello", {"protocol": 1, "token": token,
                                                        "client": {"app": app, "version": "0"}})))
        assert codec.decode(ws.recv(10))["ok"] is True
    return ws


def rpc(ws, rid, op, args=None):
    ws.send(codec.encode(codec.request(rid, op, args or {})))
    return codec.decode(ws.recv(10))


def hello_reply(engine, token):
    """The reply to a `hello` with this token, on a fresh connection."""
    with raw(engine) as ws:
        return rpc(ws, 1, "hello", {"protocol": 1, "token": token})


# ---- layers ----------------------------------------------------------------------------------------------------
def layer_ref(sha, w, h, format="rgba8", x=0, y=0) -> dict:
    return {"sha256": sha, "w": w, "h": h, "format": format, "x": x, "y": y}


def upload_rgba(client, rgba, x=0, y=0) -> dict:
    rgba = np.ascontiguousarray(rgba, np.uint8)
    return layer_ref(client.upload(rgba.tobytes()), rgba.shape[1], rgba.shape[0], "rgba8", x, y)


def upload_mask(client, gray, x=0, y=0) -> dict:
    gray = np.ascontiguousarray(gray, np.uint8)
    return layer_ref(client.upload(gray.tobytes()), gray.shape[1], gray.shape[0], "gray8", x, y)


def upload_layer(client, w=4, h=4, seed=0) -> tuple[dict, bytes]:
    """A small RGBA layer of known bytes: (layer, data)."""
    data = bytes((seed + i) % 256 for i in range(w * h * 4))
    return layer_ref(client.upload(data), w, h), data


def fetch(client, layer) -> np.ndarray:
    data = client.download(layer["sha256"])
    return np.frombuffer(data, np.uint8).reshape(layer["h"], layer["w"], 4)


def pattern(w=64, h=64) -> np.ndarray:
    """Asymmetric, so flips and channel swaps show."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = (xx * 255 // max(1, w - 1)).astype(np.uint8)
    rgba[..., 1] = (yy * 255 // max(1, h - 1)).astype(np.uint8)
    rgba[..., 2] = ((xx + 2 * yy) % 256).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[:8, :16] = (255, 0, 0, 255)
    return rgba


# ---- graphs ----------------------------------------------------------------------------------------------------
def copy_graph(layer, name="copy") -> dict:
    """A graph that returns its input layer (no model: runs in milliseconds)."""
    return {"nodes": {"i": {"type": "image_input", "layer": layer}, "o": {"type": "output", "name": name}},
            "edges": [{"from": ["i", "image"], "to": ["o", "image"]}]}


# txt2img with the tiny SD1.5 demo model, and the parameters a workflow exposes from it
GRAPH = {"nodes": {"m": {"type": "load_model", "model": "tiny-sd15"},
                   "p": {"type": "prompt", "text": "a red fox"},
                   "n": {"type": "noise", "seed": 1, "width": 64, "height": 64},
                   "d": {"type": "denoise", "steps": 2},
                   "v": {"type": "vae_decode"},
                   "o": {"type": "output", "name": "fox"}},
         "edges": [{"from": ["m", "model"], "to": ["p", "model"]}, {"from": ["m", "model"], "to": ["d", "model"]},
                   {"from": ["p", "conditioning"], "to": ["d", "conditioning"]},
                   {"from": ["n", "noise"], "to": ["d", "noise"]}, {"from": ["m", "model"], "to": ["v", "model"]},
                   {"from": ["d", "latents"], "to": ["v", "latents"]}, {"from": ["v", "image"], "to": ["o", "image"]}]}
PARAMS = [{"name": "prompt", "type": "str", "node": "p", "field": "text", "label": "Prompt", "multiline": True},
          {"name": "seed", "type": "int", "node": "n", "field": "seed", "min": 0},
          {"name": "steps", "type": "int", "node": "d", "field": "steps", "min": 1, "max": 8, "default": 2},
          {"name": "scheduler", "type": "str", "node": "d", "field": "scheduler"},
          {"name": "cfg", "type": "float", "node": "d", "field": "guidance", "min": 0, "max": 20, "step": 0.5,
           "label": "Guidance"}]

# no model: an exposed image layer, resized (runs in milliseconds)
RESIZE = {"nodes": {"i": {"type": "image_input"}, "r": {"type": "resize", "width": 32, "height": 16},
                    "o": {"type": "output", "name": "small"}},
          "edges": [{"from": ["i", "image"], "to": ["r", "image"]}, {"from": ["r", "image"], "to": ["o", "image"]}]}


# ---- jobs ------------------------------------------------------------------------------------------------------
def run_job(client, args, timeout=300, op="generate"):
    """Submit and follow the job's events to its end: (job, reply, last event, all events)."""
    reply = client.call(op, args)
    job = reply["job"]
    events = []
    while True:
        ev = client.next_event(timeout, match=lambda e: e.data.get("job") == job)
        events.append(ev)
        if ev.name in FINISHED:
            return job, reply, ev, events


def run(client, op, args, timeout=300):
    """Submit, expect a result: (job, layers)."""
    job, _, ev, _ = run_job(client, args, timeout, op=op)
    assert ev.name == "job.result", ev.data
    return job, ev.data["layers"]


def wait_job(client, job, timeout=120) -> dict:
    """Poll job.get until the job ends (survives reconnects and restarts, unlike events)."""
    end = time.monotonic() + timeout
    while True:
        info = client.call("job.get", {"job": job})
        if info["status"] in ("completed", "failed", "canceled"):
            return info
        if time.monotonic() > end:
            raise AssertionError(f"job {job} did not finish: {info}")
        time.sleep(0.1)


# ---- the plug-ins' Session -------------------------------------------------------------------------------------
# updates drained by poll() but not consumed yet, per session: every helper below takes from here first, so an
# update that came in the same poll() as the one a helper waited for is not lost (a job's first progress and the
# next request's job id often do)
_BACKLOG: "weakref.WeakKeyDictionary[Session, list]" = weakref.WeakKeyDictionary()


def updates_until(session: Session, done, timeout: float = 240, requests=()) -> list:
    """Every update drained (like a host timer) until done(update) is true for one; returns them all, the rest stay
    for the next call. An error update for one of `requests` (local request ids) fails at once, with the engine's
    words."""
    backlog = _BACKLOG.setdefault(session, [])
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        backlog.extend(session.poll())
        while backlog:
            up = backlog.pop(0)
            seen.append(up)
            if up.kind == "error" and up.data.get("request") in requests:
                raise AssertionError(f"request {up.data['request']} refused: {up.data.get('code')}: "
                                     f"{up.data.get('message')}")
            if done(up):
                return seen
        time.sleep(0.02)
    saw = [(u.kind, u.data.get("job") or u.data.get("message")) for u in seen]
    raise AssertionError(f"not done in {timeout}s; saw {saw}"[:3000])


def wait_for(session: Session, kind: str, timeout: float = 240, pred=lambda d: True, skip_errors=()) -> dict:
    """Drain updates like a host timer would until one of `kind` arrives; fail on errors (but those whose code is
    in skip_errors). Updates drained in the same poll but not consumed stay for the next call (a fast job's result
    can come with its job id)."""
    backlog = _BACKLOG.setdefault(session, [])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backlog.extend(session.poll())
        while backlog:
            up = backlog.pop(0)
            if up.kind == "error" and up.data.get("code") in skip_errors:
                continue
            if up.kind in ("error", "failed"):
                raise AssertionError(f"{up.kind}: {up.data}")
            if up.kind == kind and pred(up.data):
                return up.data
        time.sleep(0.02)
    raise AssertionError(f"no {kind} update in {timeout}s")


def wait_error(session: Session, timeout: float = 60) -> dict:
    return updates_until(session, lambda u: u.kind == "error", timeout)[-1].data


def open_session(engine, tmp_path, app="blender", pixel_order="rgba") -> Session:
    s = Session(app, "test", str(tmp_path / app), url=engine.url, use_keyring=False, pixel_order=pixel_order)
    s.connect(token=engine.token)
    wait_for(s, "state", pred=lambda d: d["state"] == "connected")
    return s


# ---- the pickers' VAE and a download site (plug-in tests of issue 16, deliverable 5) --------------------------
PICKER_VAE = "picker-vae"


@contextlib.contextmanager
def installed_vae(engine, tmp_path: Path, name: str = PICKER_VAE):
    """A demo SD1 VAE (a diffusers folder) registered on a running engine for the duration (models.install,
    then models.remove), so a VAE picker has something to offer without changing the shared demo models."""
    import torch

    from engine.models.demo import _sd_vae

    folder = tmp_path / name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(23)
        _sd_vae().save_pretrained(folder)
    with engine.client() as c:
        c.call("models.install", {"path": str(folder), "name": name})
    try:
        yield name
    finally:
        with engine.client() as c:
            c.call("models.remove", {"model": name})


class FileSite:
    """A local HTTP server standing in for a model site (tests never touch the network): GET /NAME sends
    files[NAME] with its length, in 64 KiB pieces `slow` seconds apart (so a download shows progress: the engine
    sends a "downloading" event at most every 0.5 s; 2 MiB at 0.06 s a piece takes about 2 s)."""

    def __init__(self, files: dict[str, bytes], slow: float = 0.0):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                data = site.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for i in range(0, len(data), 65536):
                    try:
                        self.wfile.write(data[i:i + 65536])
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(site.slow)

        self.files, self.slow = files, slow
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        import threading

        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def embedding_file(rows: int = 16384, seed: int = 0) -> bytes:
    """A textual-inversion embedding (rows × 32 floats, 2 MiB by default): a real model file a download probes."""
    import torch
    from safetensors.torch import save

    return save({"emb_params": torch.randn(rows, 32, generator=torch.Generator().manual_seed(seed))})
