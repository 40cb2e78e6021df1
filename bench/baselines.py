"""The comparison servers for B1, in one small aiohttp process (`python -m bench.baselines`):

- ComfyUI style: POST /upload/image (multipart PNG) → {"name"}; GET /view?filename=NAME → the PNG.
- A1111 style: POST /sdapi/v1/echo {"init_images": [base64 PNG]} → {"images": [base64 PNG]} (the same PNG back).
- The floor: GET /ws, a bare WebSocket speaking msgpack: {"op": "put", "key", "data", "final"} → {"ok"};
  {"op": "get", "key", "offset", "length"} → {"data", "size"}. Bytes live in a dict; no hashing, no disk, no
  validation, no auth.

The servers never decode or re-encode PNGs (real ones do at least that much more), so these baselines are the
cheapest each style can be.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys

import msgpack
from aiohttp import WSMsgType, web

MAX = 1024 * 1024 * 1024


def make_app() -> web.Application:
    store: dict[str, bytes] = {}
    chunks: dict[str, list[bytes]] = {}

    async def upload(request: web.Request):
        reader = await request.multipart()
        name = None
        async for part in reader:
            if part.name == "image":
                name = part.filename or "image.png"
                store[name] = bytes(await part.read())
        if name is None:
            return web.json_response({"error": "no image"}, status=400)
        return web.json_response({"name": name, "subfolder": "", "type": "input"})

    async def view(request: web.Request):
        data = store.get(request.query.get("filename", ""))
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/png")

    async def echo(request: web.Request):
        body = await request.read()
        msg = json.loads(body)
        png = base64.b64decode(msg["init_images"][0])
        store["a1111"] = png
        out = json.dumps({"images": [base64.b64encode(store["a1111"]).decode("ascii")]})
        return web.Response(text=out, content_type="application/json")

    async def ws(request: web.Request):
        sock = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024 * 1024)
        await sock.prepare(request)
        async for m in sock:
            if m.type != WSMsgType.BINARY:
                continue
            msg = msgpack.unpackb(m.data, raw=False)
            if msg["op"] == "put":
                key = msg["key"]
                chunks.setdefault(key, []).append(msg["data"])
                if msg.get("final"):
                    store[key] = b"".join(chunks.pop(key))
                    await sock.send_bytes(msgpack.packb({"ok": True, "size": len(store[key])}))
                else:
                    await sock.send_bytes(msgpack.packb({"ok": True}))
            elif msg["op"] == "get":
                data = store[msg["key"]]
                off = msg.get("offset", 0)
                part = data[off:off + msg.get("length", len(data))]
                await sock.send_bytes(msgpack.packb({"data": part, "size": len(data)}, use_bin_type=True))
            elif msg["op"] == "drop":
                store.pop(msg["key"], None)
                await sock.send_bytes(msgpack.packb({"ok": True}))
        return sock

    app = web.Application(client_max_size=MAX)
    app.router.add_post("/upload/image", upload)
    app.router.add_get("/view", view)
    app.router.add_post("/sdapi/v1/echo", echo)
    app.router.add_get("/ws", ws)
    return app


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    async def run():
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = runner.addresses[0][1]
        print(f"baselines listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


# ---- clients (run in the bench process) -------------------------------------------------------------------------
def png_encode(rgba, level: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def png_decode(data: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


class HttpBaselines:
    """aiohttp client calls against the baseline server, on a private event loop."""

    def __init__(self, base_url: str):
        import aiohttp

        self.base = base_url
        self.runner = asyncio.Runner()
        self.session = self.runner.run(self._session(aiohttp))

    @staticmethod
    async def _session(aiohttp):
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))

    def close(self):
        self.runner.run(self.session.close())
        self.runner.close()

    def comfy_roundtrip(self, rgba, level: int, name: str) -> dict:
        """PNG encode → multipart POST → GET → PNG decode; returns the phase times (s)."""
        import time

        import aiohttp

        t0 = time.perf_counter()
        png = png_encode(rgba, level)
        t1 = time.perf_counter()

        async def io_():
            form = aiohttp.FormData()
            form.add_field("image", png, filename=name, content_type="image/png")
            async with self.session.post(self.base + "/upload/image", data=form) as r:
                stored = (await r.json())["name"]
            async with self.session.get(self.base + "/view", params={"filename": stored}) as r:
                return await r.read()

        back = self.runner.run(io_())
        t2 = time.perf_counter()
        out = png_decode(back)
        t3 = time.perf_counter()
        assert out.shape == rgba.shape
        return {"encode": t1 - t0, "transfer": t2 - t1, "decode": t3 - t2, "total": t3 - t0, "png_bytes": len(png)}

    def a1111_roundtrip(self, rgba, level: int) -> dict:
        """PNG encode → base64 in JSON → POST → JSON with base64 PNG back → decode."""
        import time

        t0 = time.perf_counter()
        png = png_encode(rgba, level)
        body = json.dumps({"init_images": [base64.b64encode(png).decode("ascii")], "prompt": ""})
        t1 = time.perf_counter()

        async def io_():
            async with self.session.post(self.base + "/sdapi/v1/echo", data=body,
                                         headers={"Content-Type": "application/json"}) as r:
                return await r.read()

        raw = self.runner.run(io_())
        t2 = time.perf_counter()
        back = base64.b64decode(json.loads(raw)["images"][0])
        out = png_decode(back)
        t3 = time.perf_counter()
        assert out.shape == rgba.shape
        return {"encode": t1 - t0, "transfer": t2 - t1, "decode": t3 - t2, "total": t3 - t0, "png_bytes": len(png)}


class WsFloor:
    """Raw msgpack over a bare WebSocket (same client library as protocol.client), chunked and pipelined."""

    def __init__(self, base_url: str, chunk: int):
        from websockets.sync.client import connect

        self.ws = connect(base_url.replace("http://", "ws://") + "/ws", compression=None, max_size=64 * 1024 * 1024)
        self.chunk = chunk

    def close(self):
        self.ws.close()

    def roundtrip(self, data: bytes, key: str) -> bytes:
        view, n, c = memoryview(data), len(data), self.chunk
        offsets = range(0, n, c)
        for off in offsets:
            end = min(off + c, n)
            self.ws.send(msgpack.packb({"op": "put", "key": key, "data": view[off:end], "final": end == n},
                                       use_bin_type=True))
        for _ in offsets:
            msgpack.unpackb(self.ws.recv(), raw=False)
        for off in offsets:
            self.ws.send(msgpack.packb({"op": "get", "key": key, "offset": off, "length": c}))
        parts = [msgpack.unpackb(self.ws.recv(), raw=False)["data"] for _ in offsets]
        self.ws.send(msgpack.packb({"op": "drop", "key": key}))
        msgpack.unpackb(self.ws.recv(), raw=False)
        return b"".join(parts)


if __name__ == "__main__":
    sys.exit(main())
