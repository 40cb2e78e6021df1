"""Model downloads (engine/models/download.py, `paintbridge models download`, the models.download op) against
local HTTP servers the tests start: a download site with Range/If-Range and failure modes, a stand-in for the
Hugging Face hub's routes (HF_ENDPOINT points at it) and a CDN on another origin. Never the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import BadRequest, Busy, Canceled, Forbidden, NotFound
from engine.models.download import Download, DownloadError, parse_source, starter_list
from engine.models.registry import ModelRegistry
from protocol.errors import ProtocolError

from .helpers import ROOT, cli


# ---- the stand-in servers -----------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.server.site.serve(self, head=True)

    def do_GET(self):
        self.server.site.serve(self, head=False)


class Site:
    """An HTTP server on 127.0.0.1: `files[path] = {"data": bytes, ...options}`; `log` has every request.

    Options: ctype, etag, disposition, no_length (body ends with the connection), fail_after + fails (the next
    `fails` GETs send fail_after bytes and drop the connection), status (answer only that), headers (extra),
    redirect (302 to that URL), slow (seconds between 64 KiB pieces). `routes[path] = fn(handler, head)` wins.
    """

    def __init__(self):
        self.files: dict[str, dict] = {}
        self.routes: dict = {}
        self.log: list[tuple[str, str, dict]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.site = self
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def requests(self, path: str, method: str = "GET") -> list[dict]:
        return [h for m, p, h in self.log if m == method and urlsplit(p).path == path]

    def serve(self, h: BaseHTTPRequestHandler, head: bool):
        path = urlsplit(h.path).path
        self.log.append((h.command, h.path, {k.lower(): v for k, v in h.headers.items()}))
        if path in self.routes:
            return self.routes[path](h, head)
        f = self.files.get(path)
        if f is None:
            return send(h, 404, b"not here", {"Content-Type": "text/plain"}, head)
        if f.get("status"):
            return send(h, f["status"], b"", f.get("headers", {}), head)
        if f.get("redirect"):
            return send(h, 302, b"", {"Location": f["redirect"], **f.get("headers", {})}, head)
        data = f["data"]
        status, start = 200, 0
        rng = h.headers.get("Range")
        if rng:
            if_range = h.headers.get("If-Range")
            if if_range is None or if_range == f.get("etag"):
                start = int(re.match(r"bytes=(\d+)-$", rng).group(1))
                if start >= len(data):
                    return send(h, 416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
                status = 206
        body = data[start:]
        headers = {"Content-Type": f.get("ctype", "application/octet-stream"), "Accept-Ranges": "bytes",
                   **f.get("headers", {})}
        if f.get("etag"):
            headers["ETag"] = f["etag"]
        if f.get("disposition"):
            headers["Content-Disposition"] = f["disposition"]
        if not f.get("no_length"):
            headers["Content-Length"] = str(len(body))
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if head:
            return
        if f.get("fails", 0) > 0:
            f["fails"] -= 1
            h.wfile.write(body[:f["fail_after"]])
            h.wfile.flush()
            h.close_connection = True
            return
        if f.get("slow"):
            for i in range(0, len(body), 65536):
                try:
                    h.wfile.write(body[i:i + 65536])
                    h.wfile.flush()
                except OSError:
                    return
                time.sleep(f["slow"])
            return
        h.wfile.write(body)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h, status: int, body: bytes, headers: dict, head: bool):
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if not head:
        h.wfile.write(body)


class Hub:
    """The hub routes huggingface_hub uses to download one file: HEAD /{repo}/resolve/{rev}/{file} (LFS files
    answer 302 to the CDN with X-Linked-Size / X-Linked-Etag, small ones 200 with a git ETag) and GET
    /api/models/{repo}[/revision/{rev}] for a repo's file list. A gated repo needs `Bearer good-token`."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, site: Site, cdn: Site):
        self.site, self.cdn = site, cdn
        self.repos: dict[str, dict[str, bytes]] = {}
        self.gated: set[str] = set()
        self.lfs_sha: dict[tuple[str, str], str] = {}   # (repo, file) → announced sha256 (default: the real one)
        site.routes = _Prefix(self)

    def add(self, repo: str, file: str, data: bytes):
        self.repos.setdefault(repo, {})[file] = data
        self.cdn.files[f"/cdn/{hashlib.sha256(data).hexdigest()}"] = {"data": data, "etag": '"cdn-etag"'}

    def handle(self, h, head: bool):
        path = urlsplit(h.path).path
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
        if m:
            repo = m.group(1)
            if repo not in self.repos:
                return send(h, 401, b"{}", {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"}, head)
            body = json.dumps({"id": repo, "sha": self.COMMIT,
                               "siblings": [{"rfilename": f} for f in self.repos[repo]]}).encode()
            return send(h, 200, body, {"Content-Type": "application/json"}, head)
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if not m:
            return send(h, 404, b"", {}, head)
        repo, rev, file = m.group(1), m.group(2), m.group(3)
        if repo not in self.repos:
            return send(h, 401, b"", {"X-Error-Code": "RepoNotFound"}, head)
        if repo in self.gated and h.headers.get("Authorization") != "Bearer good-token":
            return send(h, 403, b"", {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"}, head)
        if rev != "main":
            return send(h, 404, b"", {"X-Error-Code": "RevisionNotFound"}, head)
        if file not in self.repos[repo]:
            return send(h, 404, b"", {"X-Error-Code": "EntryNotFound"}, head)
        data = self.repos[repo][file]
        sha = hashlib.sha256(data).hexdigest()
        return send(h, 302, b"", {"Location": self.cdn.url(f"/cdn/{sha}"), "X-Repo-Commit": self.COMMIT,
                                  "ETag": '"git-etag"', "X-Linked-Etag": f'"{self.lfs_sha.get((repo, file), sha)}"',
                                  "X-Linked-Size": str(len(data))}, head)


class _Prefix(dict):
    """routes for the hub site: every path goes to the Hub."""

    def __init__(self, hub: Hub):
        super().__init__()
        self.hub = hub

    def __contains__(self, path):
        return True

    def __getitem__(self, path):
        return self.hub.handle


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


@pytest.fixture
def hub(monkeypatch):
    site, cdn = Site(), Site()
    monkeypatch.setenv("HF_ENDPOINT", site.url(""))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    h = Hub(site, cdn)
    yield h
    site.close()
    cdn.close()


# ---- test files: real model files that probe as what they are ------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """A 4 MiB textual-inversion embedding (big enough for several chunks), a small LoRA-shaped file and an
    ESRGAN-shaped upscaler; plus bytes that are not a model."""
    d = tmp_path_factory.mktemp("dlfiles")
    g = torch.Generator().manual_seed(0)
    save_file({"emb_params": torch.randn(32768, 32, generator=g)}, str(d / "emb.safetensors"))
    save_file({"emb_params": torch.randn(32768, 32, generator=g)}, str(d / "emb2.safetensors"))
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({k + ".lora_down.weight": torch.randn(4, 768, generator=g), k + ".lora_up.weight": torch.randn(320, 4),
               k + ".alpha": torch.tensor(4.0)}, str(d / "lora.safetensors"))
    return {"emb": (d / "emb.safetensors").read_bytes(), "emb2": (d / "emb2.safetensors").read_bytes(),
            "lora": (d / "lora.safetensors").read_bytes(), "junk": os.urandom(300_000)}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def reg(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    r = ModelRegistry([], db_path=data / "paintbridge.db", install_dir=data / "models", scan=False)
    yield r
    r.stop()


def leftovers(reg) -> list[str]:
    """Every file under DATA_DIR/models (partial files included)."""
    root = reg.install_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def run(reg, source: str, events: list | None = None, **kw) -> dict:
    src = parse_source(source, kw.pop("sha256", None), kw.pop("revision", None))
    progress = events.append if events is not None else None
    return Download(src, reg.install_dir, reg, progress=progress, **kw).run()


# ---- plain URLs ------------------------------------------------------------------------------------------------
def test_url_download_checks_installs_and_registers(site, reg, files):
    site.files["/f/fox-emb.safetensors"] = {"data": files["emb"], "etag": '"v1"'}
    events = []
    out = run(reg, site.url("/f/fox-emb.safetensors?token=secret-in-query"), events)
    assert out["name"] == "fox-emb" and out["sha256"] == sha(files["emb"])
    entry = reg.get("fox-emb")
    assert (entry.type, entry.family, entry.source) == ("embedding", "sd1", "copy")
    assert entry.path == reg.install_dir / "embedding" / "fox-emb.safetensors"
    assert entry.path.read_bytes() == files["emb"] and entry.sha256 == sha(files["emb"])
    assert leftovers(reg) == ["embedding/fox-emb.safetensors"]
    seen = [(e.state, e.bytes, e.total) for e in events]
    assert seen[0][0] == "resolving" and seen[-1][0] == "verifying"
    dl = [b for s, b, t in seen if s == "downloading"]
    assert dl == sorted(dl) and dl[-1] == len(files["emb"]) and len(dl) >= 4   # 1 MiB chunks of a 4 MiB file
    assert all(t == len(files["emb"]) for s, b, t in seen if s == "downloading")
    # the query (which may hold a token) shows nowhere
    assert all("secret" not in str(e) for e in events)
    # removing it deletes the downloaded copy (it is the engine's own file)
    reg.remove("fox-emb")
    assert leftovers(reg) == []


def test_name_and_content_disposition(site, reg, files):
    # a model site's API link: no file name in the URL, the name comes in Content-Disposition
    site.files["/api/download/models/123"] = {"data": files["lora"],
                                              "disposition": 'attachment; filename="pixel art.safetensors"'}
    assert run(reg, site.url("/api/download/models/123"))["name"] == "pixel art"
    assert reg.get("pixel art").type == "lora"
    site.files["/f/x.safetensors"] = {"data": files["lora"]}
    assert run(reg, site.url("/f/x.safetensors"), name="my-lora")["name"] == "my-lora"
    # a name that exists already is refused before any byte is written
    with pytest.raises(BadRequest, match="already exists"):
        run(reg, site.url("/f/x.safetensors"), name="my-lora")
    with pytest.raises(BadRequest, match="invalid model name"):
        run(reg, site.url("/f/x.safetensors"), name="../evil")
    assert leftovers(reg) == ["lora/my-lora.safetensors", "lora/pixel art.safetensors"]


def test_resume_after_broken_connections(site, reg, files):
    data = files["emb"]
    site.files["/f/emb.safetensors"] = {"data": data, "etag": '"v1"', "fail_after": 1_500_000, "fails": 2}
    out = run(reg, site.url("/f/emb.safetensors"))
    assert out["sha256"] == sha(data)
    ranges = [h.get("range") for h in site.requests("/f/emb.safetensors")]
    assert ranges == [None, "bytes=1500000-", "bytes=3000000-"], ranges
    ifr = [h.get("if-range") for h in site.requests("/f/emb.safetensors")]
    assert ifr == [None, '"v1"', '"v1"']
    assert reg.get("emb").path.read_bytes() == data


def test_resume_in_a_later_run_and_restart_when_the_file_changed(site, reg, files):
    data = files["emb"]
    site.files["/f/emb.safetensors"] = {"data": data, "etag": '"v1"'}
    d = Download(parse_source(site.url("/f/emb.safetensors")), reg.install_dir, reg,
                 progress=lambda p: p.state == "downloading" and p.bytes >= 2 * 1048576 and d.cancel(keep_partial=True))
    with pytest.raises(Canceled):
        d.run()
    parts = leftovers(reg)
    assert len(parts) == 2 and any(p.endswith(".part") for p in parts), parts   # the partial file and its validator
    assert reg.find("emb") is None
    kept = next(reg.install_dir.rglob("*.part")).stat().st_size
    assert 2 * 1048576 <= kept < len(data)
    events = []
    d2 = Download(parse_source(site.url("/f/emb.safetensors")), reg.install_dir, reg, progress=events.append)
    assert d2.run()["sha256"] == sha(data) and d2.resumed_from == kept
    assert site.requests("/f/emb.safetensors")[-1]["range"] == f"bytes={kept}-"
    assert events[1].state == "verifying" and events[1].extra == {"resumed_from": kept}
    reg.remove("emb")

    # a partial file of an older version: If-Range makes the server send the whole new file, which wins
    d = Download(parse_source(site.url("/f/emb.safetensors")), reg.install_dir, reg,
                 progress=lambda p: p.state == "downloading" and p.bytes >= 1048576 and d.cancel(keep_partial=True))
    with pytest.raises(Canceled):
        d.run()
    site.files["/f/emb.safetensors"] = {"data": files["emb2"], "etag": '"v2"'}
    assert run(reg, site.url("/f/emb.safetensors"))["sha256"] == sha(files["emb2"])
    last = site.requests("/f/emb.safetensors")[-1]
    assert last["range"].startswith("bytes=") and last["if-range"] == '"v1"'
    assert reg.get("emb").path.read_bytes() == files["emb2"]
    assert leftovers(reg) == ["embedding/emb.safetensors"]


def test_wrong_hash_truncated_and_corrupt_downloads_change_nothing(site, reg, files):
    data = files["emb"]
    site.files["/f/emb.safetensors"] = {"data": data}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/f/emb.safetensors"), sha256="0" * 64)
    assert e.value.details["reason"] == "hash_mismatch" and e.value.details["got"] == sha(data)
    assert e.value.code == "bad_request"
    # the connection breaks, then the server is down: typed error after the retries; only the partial file
    # stays, for a later resume, and nothing is registered
    calls = []

    def cut(h, head):
        calls.append(h.headers.get("Range"))
        if len(calls) > 1:
            return send(h, 503, b"down", {}, head)
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:100_000])   # then the connection drops
    site.routes["/f/cut.safetensors"] = cut
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/f/cut.safetensors"), retries=1)
    assert e.value.details == {"reason": "network", "status": 503} and "resume" in e.value.message
    assert e.value.code == "internal"
    assert calls == [None, "bytes=100000-", "bytes=100000-"]   # resumed at once, then one retry after a pause
    # a close-delimited body cut short (no Content-Length to notice it by): the expected hash catches it
    site.files["/f/short.safetensors"] = {"data": data[:3_000_000], "no_length": True}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/f/short.safetensors"), sha256=sha(data))
    assert e.value.details["reason"] == "hash_mismatch"
    # and the expected size (a starter entry's, or the hub's) too
    src = parse_source(site.url("/f/short.safetensors"))
    src.size = len(data)
    with pytest.raises(DownloadError) as e:
        Download(src, reg.install_dir, reg).run()
    assert e.value.details["reason"] == "size_mismatch"
    # a corrupt model file (right suffix, broken bytes) fails its probe and is deleted
    site.files["/f/broken.safetensors"] = {"data": data[:8] + b"\xff" * 5000}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/f/broken.safetensors"))
    assert e.value.details["reason"] == "not_a_model"
    assert reg.list() == []
    assert [p for p in leftovers(reg) if not p.startswith(".downloads/")] == []
    assert len([p for p in leftovers(reg) if p.endswith(".part")]) == 1   # cut.safetensors's, kept to resume


def test_not_a_model_and_http_errors(site, reg, files):
    site.files["/page"] = {"data": b"<!DOCTYPE html><html><body>Log in to download</body></html>",
                           "ctype": "text/html; charset=utf-8"}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/page"))
    assert e.value.details["reason"] == "not_a_model" and "web page" in e.value.message
    # an HTML page sent as a binary type is still told by its first bytes
    site.files["/f/page.safetensors"] = {"data": b"\n  <html><head><title>404</title></head></html>" * 50}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/f/page.safetensors"))
    assert e.value.details["reason"] == "not_a_model"
    # random bytes with a model's name: the probe refuses them
    site.files["/f/junk.safetensors"] = {"data": files["junk"]}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/f/junk.safetensors"))
    assert e.value.details["reason"] == "not_a_model"
    # no model suffix and bytes that are no model either
    site.files["/f/readme"] = {"data": b"just text " * 100, "ctype": "text/plain"}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/f/readme"))
    assert e.value.details["reason"] == "not_a_model"
    with pytest.raises(NotFound):
        run(reg, site.url("/nothing.safetensors"))
    site.files["/private.safetensors"] = {"status": 401}
    with pytest.raises(Forbidden, match="token"):
        run(reg, site.url("/private.safetensors"))
    site.files["/teapot.safetensors"] = {"status": 418}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/teapot.safetensors"))
    assert e.value.details == {"reason": "http_status", "status": 418}
    site.files["/busy.safetensors"] = {"status": 503}
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/busy.safetensors"), retries=1)
    assert len(site.requests("/busy.safetensors")) == 2
    assert reg.list() == [] and leftovers(reg) == []


def test_token_goes_only_to_the_first_host(site, reg, files):
    other = Site()
    try:
        other.files["/store/x.safetensors"] = {"data": files["lora"]}
        site.files["/dl/x.safetensors"] = {"redirect": other.url("/store/x.safetensors")}
        run(reg, site.url("/dl/x.safetensors"), token="site-token")
        assert site.requests("/dl/x.safetensors")[0]["authorization"] == "Bearer site-token"
        assert "authorization" not in other.requests("/store/x.safetensors")[0]
    finally:
        other.close()


def test_disk_space_is_checked_before_writing(site, reg, files):
    def huge(h, head):
        h.send_response(200)
        h.send_header("Content-Length", str(10**15))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if not head:
            h.wfile.write(files["emb"][:4096])
    site.routes["/f/huge.safetensors"] = huge
    with pytest.raises(DownloadError) as e:
        run(reg, site.url("/f/huge.safetensors"))
    assert e.value.details["reason"] == "disk_full" and e.value.code == "internal"
    assert "not enough disk space" in e.value.message
    assert leftovers(reg) == [] and reg.list() == []


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="needs root to mount a small tmpfs")
def test_full_disk_mid_download(site, tmp_path, files):
    """A real ENOSPC from the kernel: the models folder is a 2 MiB tmpfs, the server does not announce the size."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("mount is not allowed here")
    try:
        reg = ModelRegistry([], db_path=tmp_path / "paintbridge.db", install_dir=mnt / "models", scan=False)
        site.files["/f/emb.safetensors"] = {"data": files["emb"], "no_length": True}
        with pytest.raises(DownloadError) as e:
            run(reg, site.url("/f/emb.safetensors"))
        assert e.value.details["reason"] == "disk_full" and e.value.code == "internal", e.value.details
        assert "partial file was deleted" in e.value.message
        assert reg.list() == [] and leftovers(reg) == []
        # the same file fits once there is room (nothing of the failed try is in the way)
        site.files["/f/lora.safetensors"] = {"data": files["lora"], "no_length": True}
        assert run(reg, site.url("/f/lora.safetensors"))["name"] == "lora"
        reg.stop()
    finally:
        subprocess.run(["umount", str(mnt)])


def test_one_download_per_source_at_a_time(site, reg, files):
    site.files["/f/emb.safetensors"] = {"data": files["emb"], "slow": 0.05}
    started = threading.Event()
    d1 = Download(parse_source(site.url("/f/emb.safetensors")), reg.install_dir, reg, on_started=started.set)
    t = threading.Thread(target=lambda: pytest.raises(Canceled, d1.run))
    t.start()
    assert started.wait(30) and d1.accepted
    with pytest.raises(Busy):
        run(reg, site.url("/f/emb.safetensors"))
    d1.cancel()
    t.join(30)
    assert leftovers(reg) == [] and reg.list() == []


def test_sources_and_the_starter_list():
    for bad in ("", "justaname", "a/b/../c", "../x/y", "a/b/c?d", "ftp://x/y", "a b/c"):
        with pytest.raises(BadRequest):
            parse_source(bad)
    with pytest.raises(BadRequest, match="64 hex"):
        parse_source("a/b/c.safetensors", sha256="xyz")
    src = parse_source("Org/Repo.v1/sub/dir/model.safetensors")
    assert (src.kind, src.repo, src.file) == ("hub", "Org/Repo.v1", "sub/dir/model.safetensors")
    assert parse_source("Org/Repo").file is None
    src = parse_source("https://example.com/a/b.safetensors?token=xyz")
    assert src.text == "https://example.com/a/b.safetensors" and src.url.endswith("token=xyz")
    entries = starter_list()
    names = {e["name"] for e in entries}
    assert {"sd15", "sdxl-base", "realesrgan-x4plus", "flux-clip-l", "flux-t5xxl-fp8"} <= names
    assert {"main", "lora", "upscaler", "text_encoder"} <= {e["type"] for e in entries}
    for e in entries:
        src = parse_source(f"starter:{e['name']}")
        assert src.starter == e["name"] and (src.url or (src.repo and src.file))
        assert e["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", e["sha256"])
        assert e["size"] is None or e["size"] > 10_000_000
        assert src.register == (e["type"] != "text_encoder")
    with pytest.raises(NotFound, match="sd15"):
        parse_source("starter:nope")


# ---- the hub ------------------------------------------------------------------------------------------------------
def test_hub_file_through_huggingface_hub(hub, reg, files):
    hub.add("acme/loras", "styles/fox.safetensors", files["lora"])
    hub.add("acme/loras", "README.md", b"# hi")
    out = run(reg, "acme/loras/styles/fox.safetensors", token="hub-token")
    assert out["name"] == "fox" and reg.get("fox").type == "lora"
    head = hub.site.requests("/acme/loras/resolve/main/styles/fox.safetensors", "HEAD")[0]
    assert head["authorization"] == "Bearer hub-token"
    cdn = hub.cdn.requests(f"/cdn/{sha(files['lora'])}")
    assert len(cdn) == 1 and "authorization" not in cdn[0]   # the token never leaves the hub
    # a repo with exactly one model file needs no file name
    hub.add("acme/one", "model.safetensors", files["emb"])
    hub.add("acme/one", "config.json", b"{}")
    assert run(reg, "acme/one", name="one")["name"] == "one"
    assert reg.get("one").sha256 == sha(files["emb"])


def test_hub_bad_input(hub, reg, files):
    hub.add("acme/loras", "a.safetensors", files["lora"])
    hub.add("acme/loras", "b.safetensors", files["lora"])
    with pytest.raises(NotFound) as e:
        run(reg, "acme/loras")
    assert e.value.details["reason"] == "ambiguous" and "acme/loras/FILE" in e.value.message
    with pytest.raises(NotFound) as e:
        run(reg, "acme/loras/c.safetensors")
    assert e.value.details["reason"] == "no_file"
    with pytest.raises(NotFound) as e:
        run(reg, "acme/nothing/a.safetensors")
    assert e.value.details["reason"] == "no_repo"
    with pytest.raises(NotFound) as e:
        run(reg, "acme/loras/a.safetensors", revision="v9")
    assert e.value.details["reason"] == "no_revision"
    hub.add("acme/empty", "README.md", b"# nothing")
    with pytest.raises(NotFound) as e:
        run(reg, "acme/empty")
    assert e.value.details["reason"] == "no_file"
    # gated: refused without the right token, fine with it
    hub.add("acme/gated", "g.safetensors", files["lora"])
    hub.gated.add("acme/gated")
    with pytest.raises(Forbidden) as e:
        run(reg, "acme/gated/g.safetensors")
    assert e.value.details["reason"] == "gated"
    assert run(reg, "acme/gated/g.safetensors", token="good-token")["name"] == "g"
    # the CDN's bytes do not match the hub's LFS sha256
    hub.add("acme/bad", "x.safetensors", files["lora"])
    hub.lfs_sha[("acme/bad", "x.safetensors")] = "1" * 64
    with pytest.raises(DownloadError) as e:
        run(reg, "acme/bad/x.safetensors")
    assert e.value.details["reason"] == "hash_mismatch"
    # a given sha256 that contradicts the hub's is refused before any byte moves
    with pytest.raises(DownloadError) as e:
        run(reg, "acme/loras/a.safetensors", sha256="2" * 64)
    assert e.value.details["reason"] == "hash_mismatch"
    assert [e.name for e in reg.list()] == ["g"]
    assert [p for p in leftovers(reg) if not p.startswith("lora/g.")] == []


def test_starter_entry_through_the_hub_checks_the_listed_size(hub, reg, files):
    """starter:lcm-lora-sdxl resolves through huggingface_hub to the listed repo and file; our stand-in's file is
    not the real one, so its announced size differs from the list's and nothing is downloaded."""
    e = next(e for e in starter_list() if e["name"] == "lcm-lora-sdxl")
    hub.add(e["repo"], e["file"], files["lora"])
    with pytest.raises(DownloadError) as err:
        run(reg, "starter:lcm-lora-sdxl")
    assert err.value.details["reason"] in ("size_mismatch", "hash_mismatch")
    assert hub.site.requests(f"/{e['repo']}/resolve/main/{e['file']}", "HEAD")
    assert not hub.cdn.log and reg.list() == []
    # without the listed size and hash the same entry goes through, named after the entry, not the repo's file
    src = parse_source("starter:lcm-lora-sdxl")
    src.size = src.sha256 = None
    assert Download(src, reg.install_dir, reg).run()["name"] == "lcm-lora-sdxl"
    assert reg.get("lcm-lora-sdxl").type == "lora"


def test_support_file_is_kept_but_not_registered(hub, reg, files):
    """Starter entries with register=false (FLUX's text encoders) are saved under DATA_DIR/models/FOLDER/ after
    the same checks, without a probe (the registry has no such type) and without a registry entry."""
    hub.add("acme/te", "clip_l.safetensors", files["junk"])
    src = parse_source("acme/te/clip_l.safetensors")
    src.register, src.folder = False, "text_encoder"
    out = Download(src, reg.install_dir, reg).run()
    assert out["path"] == str(reg.install_dir / "text_encoder" / "clip_l.safetensors") and "model" not in out
    assert reg.list() == [] and leftovers(reg) == ["text_encoder/clip_l.safetensors"]
    with pytest.raises(BadRequest, match="exists already"):
        Download(src, reg.install_dir, reg).run()
    assert len(hub.cdn.log) == 1   # refused before the second transfer


# ---- the CLI -------------------------------------------------------------------------------------------------------
@pytest.mark.slow   # runs `paintbridge`, a Python that imports torch
def test_cli_download_list_and_bad_input(site, tmp_path, files):
    data_dir = tmp_path / "data"
    site.files["/f/fox-lora.safetensors"] = {"data": files["lora"]}
    token_file = tmp_path / "token"
    token_file.write_text("cli-secret\n")
    out = cli("models", "download", site.url("/f/fox-lora.safetensors"), "--data-dir", str(data_dir),
              "--token-file", str(token_file), "--json")
    res = json.loads(out)
    assert res["model"]["name"] == "fox-lora" and res["sha256"] == sha(files["lora"])
    assert site.requests("/f/fox-lora.safetensors")[0]["authorization"] == "Bearer cli-secret"
    listed = json.loads(cli("models", "list", "--json", "--data-dir", str(data_dir)))
    assert [(m["name"], m["type"], m["sha256"]) for m in listed] == [("fox-lora", "lora", sha(files["lora"]))]
    res = subprocess.run([sys.executable, "-m", "engine.cli", "models", "download", site.url("/f/fox-lora.safetensors"),
                          "--name", "other", "--sha256", "0" * 64, "--data-dir", str(data_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "sha256" in res.stderr and "Traceback" not in res.stderr
    assert len(json.loads(cli("models", "list", "--json", "--data-dir", str(data_dir)))) == 1
    out = cli("models", "starter")
    assert "starter:NAME" in out and "sdxl-base" in out


@pytest.mark.slow   # runs `paintbridge`, a Python that imports torch
def test_cli_hub_download_with_progress_bar(hub, tmp_path, files):
    hub.add("acme/emb", "big.safetensors", files["emb"])
    res = subprocess.run([sys.executable, "-m", "engine.cli", "models", "download", "acme/emb/big.safetensors",
                          "--data-dir", str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert "installed big: embedding" in res.stdout
    assert "100%" in res.stderr and "4.00M" in res.stderr   # tqdm's bar, in bytes


@pytest.mark.slow   # runs `paintbridge`, a Python that imports torch
def test_cli_ctrl_c_keeps_the_partial_file_and_the_same_command_resumes(site, tmp_path, files):
    import signal

    data_dir = tmp_path / "d"
    site.files["/f/slow.safetensors"] = {"data": files["emb"], "slow": 0.05, "etag": '"s1"'}
    cmd = [sys.executable, "-m", "engine.cli", "models", "download", site.url("/f/slow.safetensors"),
           "--data-dir", str(data_dir), "--quiet"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    downloads = data_dir / "models" / ".downloads"
    end = time.monotonic() + 120
    while time.monotonic() < end and not any(f.stat().st_size > 1048576 for f in downloads.glob("*.part")):
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "resume" in err, err
    kept = next(downloads.glob("*.part")).stat().st_size
    assert 1048576 < kept < len(files["emb"])
    site.files["/f/slow.safetensors"]["slow"] = 0
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert site.requests("/f/slow.safetensors")[-1]["range"] == f"bytes={kept}-"
    listed = json.loads(cli("models", "list", "--json", "--data-dir", str(data_dir)))
    assert [(m["name"], m["sha256"]) for m in listed] == [("slow", sha(files["emb"]))]
    assert not list(downloads.glob("*"))


# ---- the engine op ----------------------------------------------------------------------------------------------
def test_engine_op_progress_events_cancel_and_admin_only(spawn_engine, site, files):
    from protocol.client import Client

    proc = spawn_engine()
    c = Client(proc.url, proc.token, reconnect=False).connect()
    site.files["/f/fox-emb.safetensors"] = {"data": files["emb"]}
    got = c.call("models.download", {"source": site.url("/f/fox-emb.safetensors")})
    assert got["name"] == "fox-emb" and got["total"] == len(files["emb"]) and got["resumed_from"] == 0
    did = got["download"]
    events = []
    while not events or events[-1]["state"] not in ("done", "failed", "canceled"):
        ev = c.next_event(120, name="models.download.progress", match=lambda e: e.data["download"] == did)
        events.append(ev.data)
    assert events[-1]["state"] == "done", events[-1]
    assert events[-1]["model"]["name"] == "fox-emb" and events[-1]["model"]["type"] == "embedding"
    assert events[-1]["bytes"] == len(files["emb"])
    listed = {m["name"]: m for m in c.call("models.list", {})["models"]}
    assert listed["fox-emb"]["sha256"] == sha(files["emb"])

    # bad input: a typed error in the reply, nothing registered, no event
    for args, code in (({"source": "nonsense"}, "bad_request"),
                       ({"source": site.url("/missing.safetensors")}, "not_found"),
                       ({"source": site.url("/f/fox-emb.safetensors")}, "bad_request"),      # name taken
                       ({"source": "starter:nope"}, "not_found"),
                       ({"source": site.url("/f/fox-emb.safetensors"), "sha256": "zz"}, "bad_request"),
                       ({"source": site.url("/f/fox-emb.safetensors"), "extra": 1}, "bad_request")):
        with pytest.raises(ProtocolError) as e:
            c.call("models.download", args)
        assert e.value.code == code, (args, e.value)
    site.files["/page"] = {"data": b"<html>sign in</html>", "ctype": "text/html"}
    with pytest.raises(ProtocolError) as e:
        c.call("models.download", {"source": site.url("/page"), "name": "page"})
    assert e.value.code == "bad_request" and e.value.details["reason"] == "not_a_model"

    # cancel a running download: its event says so, nothing stays behind
    site.files["/f/slow.safetensors"] = {"data": files["emb2"], "slow": 0.05}
    did = c.call("models.download", {"source": site.url("/f/slow.safetensors")})["download"]
    running = c.call("models.download.list", {})["downloads"]
    assert [(d["download"], d["name"], d["state"], d["total"]) for d in running] == \
        [(did, "slow", "downloading", len(files["emb2"]))]
    assert c.call("models.download.cancel", {"download": did}) == {"download": did}
    ev = c.next_event(60, name="models.download.progress",
                      match=lambda e: e.data["download"] == did and e.data["state"] in ("canceled", "done", "failed"))
    assert ev.data["state"] == "canceled"
    with pytest.raises(ProtocolError) as e:
        c.call("models.download.cancel", {"download": did})
    assert e.value.code == "not_found"
    assert sorted(m["name"] for m in c.call("models.list", {})["models"]) == ["fox-emb"]
    assert c.call("models.download.list", {}) == {"downloads": []}
    models_dir = proc.data_dir / "models"
    assert sorted(str(p.relative_to(models_dir)) for p in models_dir.rglob("*") if p.is_file()) == \
        ["embedding/fox-emb.safetensors"]

    # a user who is not an admin can neither download nor cancel, and gets no progress events
    cli("users", "--data-dir", str(proc.data_dir), "add", "bob", "--password", "bobpassword")
    bob = Client(proc.url, reconnect=False).connect()
    bob.login("bob", "bobpassword")
    for op, args in (("models.download", {"source": site.url("/f/slow.safetensors")}),
                     ("models.download.cancel", {"download": "x"}), ("models.download.list", {})):
        with pytest.raises(ProtocolError) as e:
            bob.call(op, args)
        assert e.value.code == "forbidden"
    assert not [e for e in bob.drain() if e.name == "models.download.progress"]
    assert len(site.requests("/f/slow.safetensors")) == 1
    bob.close()
    c.close()
