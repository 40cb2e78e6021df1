"""The web page's routes: server-rendered pages (jinja2, autoescaped) whose forms post back here.

Every page action runs through the same op dispatch as a WebSocket request (Server.dispatch, with a PageConn for
the signed-in browser session), so the op's rules (arguments, ownership, admin rights, budgets) apply unchanged:
the page adds no rule of its own beyond who is signed in. Live data (queue progress, previews) is the page's own
scripts on the WebSocket (/v1/ws), signed in at the upgrade by the same session cookie (engine/server.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import jinja2
from aiohttp import web
from PIL import Image

from .. import __version__, auth, sessions
from ..aio import run_blocking
from ..errors import EngineError
from ..hub import CLOSE_SIGNED_OUT
from . import cookies, guard

log = logging.getLogger("paintbridge.web")

HERE = Path(__file__).parent
PAGE_SIZE = 24
SWEEP_S = 5.0                   # how often open pages' sockets are checked against their sessions' expiry
UPLOAD_MAX = 32 * 1024 * 1024   # an img2img source image file
STATUS = {"bad_request": 400, "unauthenticated": 401, "token_expired": 401, "forbidden": 403, "not_found": 404,
          "too_large": 413, "rate_limited": 429, "busy": 503}
NOTICES = {   # ?done=KEY after a form post: fixed texts, so a link cannot put words on the page
    "starred": "Starred.", "unstarred": "Star removed.", "deleted": "Image deleted.", "moved": "Image moved.",
    "board": "Board created.", "canceled": "Cancel sent.", "scanned": "Model folders scanned.",
    "installed": "Model installed.", "download": "Download started.", "unloaded": "Unloaded.",
    "user": "User added.", "disabled": "User disabled.", "enabled": "User enabled.", "reset": "Password reset.",
    "admin": "Admin rights changed.", "signedout": "Signed out everywhere.",
    "password": "Password changed; your other sessions were signed out.",
}
RASTER = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"}   # what the img2img upload accepts


class OpFailed(Exception):
    def __init__(self, op: str, error: dict):
        super().__init__(error.get("message", ""))
        self.op, self.code, self.message = op, error.get("code", "internal"), error.get("message", "")
        self.details = error.get("details")


class PageConn:
    """What an op sees for a page request: the signed-in browser session's user (like engine.server.Connection,
    without a socket: events for this user reach the page's own WebSocket)."""

    def __init__(self, session: cookies.WebSession, remote: str):
        self.user = session.user
        self.claims = session.claims()
        self.token = None
        self.web_session = session.id
        self.client_info = {"app": "web", "version": __version__}
        self.remote = remote
        self.checked_at = time.monotonic()   # the session lookup just checked the user

    @property
    def uid(self) -> int:
        return self.user["id"]

    @property
    def is_admin(self) -> bool:
        return bool(self.user["admin"])

    def send(self, message: dict, droppable: bool = False):
        pass


def _local_path(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never //elsewhere or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/gallery"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/gallery"
    return target


def _int(form, name: str, default=None):
    raw = (form.get(name) or "").strip()
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise OpFailed("form", {"code": "bad_request", "message": f"{name} must be a whole number",
                                "details": {"field": name}}) from None


def _float(form, name: str, default=None):
    raw = (form.get(name) or "").strip()
    if raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise OpFailed("form", {"code": "bad_request", "message": f"{name} must be a number",
                                "details": {"field": name}}) from None


def _decode_upload(data: bytes, max_pixels: int) -> tuple[bytes, int, int]:
    """An uploaded image file as rgba8 pixels; only raster formats Pillow knows, within the pixel limit."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in RASTER:
                raise ValueError(f"{im.format} is not an image format the page takes")
            if im.width * im.height > max_pixels:
                raise ValueError(f"{im.width}x{im.height} is more than the engine's {max_pixels} pixels")
            im = im.convert("RGBA")
            return im.tobytes(), im.width, im.height
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise OpFailed("form", {"code": "bad_request", "message": f"the image cannot be used: {exc}",
                                "details": {"field": "image"}}) from None


class WebPages:
    def __init__(self, server):
        self.server = server
        self.services = server.services
        self.config = server.config
        self.tls = bool(self.config.tls_cert)
        self.cookie = cookies.cookie_name(self.tls)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                      undefined=jinja2.StrictUndefined)
        self.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else ""
        self.env.filters["json"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
        self._rid = 0

    # ---- plumbing ---------------------------------------------------------------------------------------
    def routes(self, app: web.Application):
        app.middlewares.append(self._guard)
        app.on_startup.append(self._start_sweeper)
        app.on_shutdown.append(self._stop_sweeper)
        r = app.router
        r.add_get("/", lambda request: self._redirect("/gallery"))
        r.add_get("/favicon.ico", lambda request: web.Response(status=204))
        r.add_get("/signin", self.signin_page)
        r.add_post("/signin", self.signin)
        r.add_post("/signout", self.signout)
        r.add_get("/session", self.session_state)
        r.add_get("/gallery", self.gallery)
        r.add_post("/boards", self.board_create)
        r.add_get("/gallery/{image}", self.image_page)
        r.add_get("/gallery/{image}/thumb.webp", self.thumbnail)
        r.add_get("/gallery/{image}/image.png", self.png)
        r.add_post("/gallery/{image}/star", self.star)
        r.add_post("/gallery/{image}/delete", self.delete)
        r.add_post("/gallery/{image}/move", self.move)
        r.add_get("/generate", self.generate_page)
        r.add_post("/generate", self.generate)
        r.add_get("/queue", self.queue_page)
        r.add_post("/queue/cancel", self.cancel)
        r.add_get("/models", self.models_page)
        r.add_post("/models/{action}", self.models_action)
        r.add_get("/users", self.users_page)
        r.add_post("/users/{action}", self.users_action)
        r.add_get("/account", self.account_page)
        r.add_post("/account/password", self.account_password)
        r.add_post("/account/signout", self.account_signout)
        r.add_static("/static", HERE / "static", append_version=False)

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if request.path.startswith("/v1/"):   # the wire protocol: its own rules (engine/server.py)
            return await handler(request)
        if not guard.host_allowed(request, self.config):
            return web.Response(status=421, text="unknown host name: add it to web_hosts in config.toml")
        if request.method not in ("GET", "HEAD") and not guard.same_origin(request, self.config):
            return web.Response(status=403, text="cross-site request refused")
        try:
            return await handler(request)
        except OpFailed as exc:
            return self._render(request, "error.html", {"error": exc}, status=STATUS.get(exc.code, 500))

    async def call(self, conn: PageConn, op: str, args: dict):
        """Run op as this page's user through the engine's dispatch; its error as OpFailed."""
        self._rid += 1
        reply = await self.server.dispatch(conn, self._rid, op, args)
        if not reply["ok"]:
            raise OpFailed(op, reply["error"])
        return reply["result"]

    def _redirect(self, location: str) -> web.Response:
        raise web.HTTPSeeOther(location)

    def _render(self, request, template: str, ctx: dict, status: int = 200, conn: PageConn | None = None):
        conn = conn or request.get("conn")
        page = {"user": conn.user if conn else None, "admin": bool(conn and conn.is_admin), "path": request.path,
                "notice": NOTICES.get(request.query.get("done", "")), "version": __version__}
        html = self.env.get_template(template).render(page=page, **ctx)
        return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)

    async def _session(self, request) -> tuple[cookies.WebSession | None, str]:
        return await self.services.db.run(cookies.find, request.cookies.get(self.cookie))

    async def signed_in(self, request: web.Request, admin: bool = False) -> PageConn:
        """The browser session's user, or a redirect to sign in that comes back here afterwards."""
        session, why = await self._session(request)
        if session is None:
            here = request.path_qs
            if request.method != "GET":   # a form post: come back to the page the form was on
                ref = urlsplit(request.headers.get("Referer", ""))
                here = (ref.path + (f"?{ref.query}" if ref.query else "")) if ref.path else "/gallery"
            query = {"next": _local_path(here)}
            if why == "expired":
                query["expired"] = "1"
            resp = web.HTTPSeeOther("/signin?" + urlencode(query))
            if why == "expired":
                resp.del_cookie(self.cookie, path="/")
            raise resp
        conn = PageConn(session, request.remote or "?")
        request["conn"] = conn
        if admin and not conn.is_admin:
            raise OpFailed("page", {"code": "forbidden", "message": "this page is for admins"})
        return conn

    def _set_cookie(self, resp: web.StreamResponse, value: str, remember: bool, expires: float):
        resp.set_cookie(self.cookie, value, path="/", httponly=True, samesite="Strict", secure=self.tls,
                        max_age=int(expires - time.time()) if remember else None)

    def _close_session_sockets(self, sid: str, why: str):
        hub = self.services.hub
        for conn in hub.all():
            if conn.web_session == sid:
                hub.detach(conn)
                conn.user = None
                conn.close_soon(CLOSE_SIGNED_OUT, why)

    async def _start_sweeper(self, app):
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _stop_sweeper(self, app):
        self._sweeper.cancel()

    async def _sweep_forever(self):
        """A page's WebSocket lives only as long as its browser session: past the session's idle or absolute
        expiry it is closed (4401) and the page goes to sign in. (A password change or sign-out everywhere
        closes it at once: engine/sessions.py sweeps epochs for every connection.)"""
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                ids = sorted({c.web_session for c in self.services.hub.all() if c.web_session is not None})
                if ids:
                    live = await self.services.db.run(cookies.alive, ids)
                    for sid in set(ids) - live:
                        self._close_session_sockets(sid, "session expired: sign in again")
            except Exception:   # never let it die: it is what ends expired pages' sockets
                log.exception("web session sweep failed")

    async def page_upgrade(self, request: web.Request) -> tuple[cookies.WebSession | None, str]:
        """For engine/server.py: a browser's WebSocket upgrade from a page. (session, "") when it comes from this
        engine's own page with a live session cookie; else (None, why): "cross-site" or "signed out"."""
        if not guard.same_origin(request, self.config):
            return None, "cross-site"
        session, _ = await self._session(request)
        return (session, "") if session is not None else (None, "signed out")

    # ---- sign in / out ----------------------------------------------------------------------------------
    async def signin_page(self, request):
        session, _ = await self._session(request)
        nxt = _local_path(request.query.get("next"))
        if session is not None:
            self._redirect(nxt)
        message = "Your session expired: sign in again." if request.query.get("expired") else ""
        return self._render(request, "signin.html", {"next": nxt, "message": message, "username": ""})

    async def signin(self, request):
        form = await request.post()
        name, password = str(form.get("username", ""))[:64], str(form.get("password", ""))[:1024]
        remember = form.get("remember") == "1"
        nxt = _local_path(str(form.get("next", "")))
        app = self.services
        try:
            user = await sessions.password_attempt(app.db, app.login_limiter, app.passwords, name,
                                                   request.remote or "?", password)
        except EngineError as exc:   # rate_limited: the same limit as auth.login, said on the form
            return self._render(request, "signin.html", {"next": nxt, "message": exc.message, "username": name},
                                status=STATUS.get(exc.code, 500))
        if user is None:
            return self._render(request, "signin.html", {"next": nxt, "message": "Wrong username or password.",
                                                         "username": name}, status=401)
        value, expires = await app.db.run(cookies.create, self.config, user, remember)
        resp = web.HTTPSeeOther(nxt)
        self._set_cookie(resp, value, remember, expires)
        raise resp

    async def signout(self, request):
        session, _ = await self._session(request)
        if session is not None:
            await self.services.db.run(cookies.delete, session.id)
            self._close_session_sockets(session.id, "signed out")
        resp = web.HTTPSeeOther("/signin")
        resp.del_cookie(self.cookie, path="/")
        raise resp

    async def session_state(self, request):
        """For the page's scripts after their WebSocket closed: still signed in?"""
        session, why = await self._session(request)
        return web.json_response({"signed_in": session is not None, "expired": why == "expired"})

    # ---- gallery ----------------------------------------------------------------------------------------
    async def gallery(self, request):
        conn = await self.signed_in(request)
        q = request.query.get("q", "").strip()[:1000]
        starred = request.query.get("starred") == "1"
        board = request.query.get("board", "")
        page = max(1, _int(request.query, "page", 1))
        args = {"limit": PAGE_SIZE, "offset": (page - 1) * PAGE_SIZE}
        if q:
            args["q"] = q
        if starred:
            args["starred"] = True
        if board == "none":
            args["unsorted"] = True
        elif board:
            args["board"] = board
        listing = await self.call(conn, "images.list", args)
        boards = (await self.call(conn, "boards.list", {}))["boards"]
        pages = max(1, -(-listing["total"] // PAGE_SIZE))

        def link(to_page: int) -> str:
            query = {"q": q, "starred": "1" if starred else "", "board": board, "page": str(to_page)}
            return "/gallery?" + urlencode({k: v for k, v in query.items() if v})
        return self._render(request, "gallery.html", {
            "images": listing["images"], "total": listing["total"], "page_no": page, "pages": pages, "q": q,
            "starred": starred, "board": board, "boards": boards,
            "prev": link(page - 1) if page > 1 else None, "next": link(page + 1) if page < pages else None})

    async def board_create(self, request):
        conn = await self.signed_in(request)
        form = await request.post()
        res = await self.call(conn, "boards.create", {"name": str(form.get("name", ""))})
        self._redirect("/gallery?" + urlencode({"board": res["board"]["id"], "done": "board"}))

    async def image_page(self, request):
        conn = await self.signed_in(request)
        image = await self.call(conn, "images.get", {"image": request.match_info["image"]})
        image.pop("thumbnail", None)
        boards = (await self.call(conn, "boards.list", {}))["boards"]
        meta = image.get("meta") or {}
        params = image.get("params") or {}
        extras = {k: params[k] for k in ("control", "reference", "regions", "loras") if params.get(k)}
        return self._render(request, "image.html", {"image": image, "boards": boards, "meta": meta,
                                                    "extras": extras})

    async def thumbnail(self, request):
        conn = await self.signed_in(request)
        image = await self.call(conn, "images.get", {"image": request.match_info["image"]})
        th = image.get("thumbnail")
        if not th or not th.get("data"):
            raise web.HTTPNotFound()
        return web.Response(body=th["data"], content_type="image/webp",
                            headers={"Cache-Control": "private, max-age=3600"})

    async def png(self, request):
        conn = await self.signed_in(request)
        image_id = request.match_info["image"]
        image = await self.call(conn, "images.get", {"image": image_id, "png": True})
        headers = {"Cache-Control": "private, max-age=3600"}
        if request.query.get("download"):   # the PNG as written, with its Paintbridge metadata chunks
            headers["Content-Disposition"] = f'attachment; filename="paintbridge-{image["id"]}.png"'
        return web.Response(body=image["png"], content_type="image/png", headers=headers)

    async def star(self, request):
        conn = await self.signed_in(request)
        form = await request.post()
        starred = form.get("starred") != "0"
        image = request.match_info["image"]
        await self.call(conn, "images.star", {"image": image, "starred": starred})
        self._redirect(f"/gallery/{quote(image)}?done={'starred' if starred else 'unstarred'}")

    async def delete(self, request):
        conn = await self.signed_in(request)
        await self.call(conn, "images.delete", {"image": request.match_info["image"]})
        self._redirect("/gallery?done=deleted")

    async def move(self, request):
        conn = await self.signed_in(request)
        form = await request.post()
        image = request.match_info["image"]
        await self.call(conn, "images.move", {"images": [image], "board": str(form.get("board", "")) or None})
        self._redirect(f"/gallery/{quote(image)}?done=moved")

    # ---- generate ---------------------------------------------------------------------------------------
    async def generate_page(self, request):
        conn = await self.signed_in(request)
        models = (await self.call(conn, "models.list", {"type": "main"}))["models"]
        values = {"mode": "txt2img", "model": models[0]["name"] if models else "", "prompt": "",
                  "negative_prompt": "", "width": "", "height": "", "steps": 20, "guidance": 7.0, "seed": "",
                  "strength": 0.75}
        again = request.query.get("again")
        job = request.query.get("job", "")[:64]
        note = ""
        if job and not again:   # the form keeps what was just sent (the seed stays as chosen: empty = random)
            try:
                sent = (await self.call(conn, "job.get", {"job": job})).get("request") or {}
            except OpFailed:
                sent = {}
            for k in values:
                if k != "seed" and sent.get(k) is not None:
                    values[k] = sent[k]
            if values["mode"] not in ("txt2img", "img2img"):
                values["mode"] = "txt2img"
        if again:
            image = await self.call(conn, "images.get", {"image": again})
            params = image.get("params")
            if params:
                for k in values:
                    if params.get(k) is not None:
                        values[k] = params[k]
                if values["mode"] not in ("txt2img", "img2img"):
                    note = f"This image was made with {values['mode']}: the page fills in its settings as txt2img."
                    values["mode"] = "txt2img"
                if values["mode"] == "img2img":
                    note = "Choose the source image again for img2img."
            else:
                note = "This image was made by a node graph: its prompt is filled in, resubmit the graph for the rest."
                values["prompt"] = image.get("prompt") or ""
        return self._render(request, "generate.html", {"models": models, "values": values, "note": note,
                                                       "job": job,
                                                       "seed": request.query.get("seed", "")[:20]})

    async def generate(self, request):
        conn = await self.signed_in(request)
        form, upload = {}, None
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError):   # not multipart/form-data
            raise OpFailed("form", {"code": "bad_request", "message": "send the generate form"}) from None
        for _ in range(32):   # the form has 13 fields
            part = await reader.next()
            if part is None:
                break
            is_file = part.name == "image" and bool(part.filename)
            limit = UPLOAD_MAX if is_file else 64 * 1024   # read no more than that, whatever was sent
            data = bytearray()
            while chunk := await part.read_chunk(256 * 1024):
                data += chunk
                if len(data) > limit:
                    raise OpFailed("form", {"code": "too_large", "message": f"the {part.name} field is larger than "
                                            f"{limit // 1024} KiB"})
            if is_file:
                upload = bytes(data)
            elif part.name:
                form[part.name] = bytes(data).decode("utf-8", "replace")
        mode = form.get("mode", "txt2img")
        args = {"mode": mode, "model": form.get("model") or None, "prompt": form.get("prompt", ""),
                "negative_prompt": form.get("negative_prompt", ""), "steps": _int(form, "steps", 20),
                "guidance": _float(form, "guidance", 7.0), "source": {"app": "web", "document": ""}}
        seed = _int(form, "seed")
        if seed is not None and seed >= 0:
            args["seed"] = seed
        if mode == "txt2img":
            w, h = _int(form, "width"), _int(form, "height")
            if w is None and h is None and args["model"]:   # empty: the model's own size, as the plug-ins do
                models = (await self.call(conn, "models.list", {"type": "main"}))["models"]
                native = next((m["native_size"] for m in models if m["name"] == args["model"]), None)
                w = h = native
            if w is not None or h is not None:
                args["width"], args["height"] = w, h
        elif mode == "img2img":
            if upload is None:
                raise OpFailed("form", {"code": "bad_request", "message": "img2img needs a source image",
                                        "details": {"field": "image"}})
            args["strength"] = _float(form, "strength", 0.75)
            pixels, w, h = await run_blocking(_decode_upload, upload, self.config.limits.max_pixels)
            blob = await self.call(conn, "blob.put", {"data": pixels})
            args["image"] = {"sha256": blob["sha256"], "w": w, "h": h, "format": "rgba8", "x": 0, "y": 0}
        res = await self.call(conn, "generate", args)
        self._redirect("/generate?" + urlencode({"job": res["job"], "seed": res["seed"]}))

    # ---- queue ------------------------------------------------------------------------------------------
    async def queue_page(self, request):
        conn = await self.signed_in(request)
        jobs = (await self.call(conn, "job.list", {"limit": 50, "everyone": conn.is_admin}))["jobs"]
        names = {}
        if conn.is_admin:
            names = {u["id"]: u["name"] for u in (await self.call(conn, "users.list", {}))["users"]}
        for j in jobs:
            j["user"] = names.get(j.get("owner"), "")
            j["prompt"] = ((j.get("request") or {}).get("prompt") or "")[:200]
        return self._render(request, "queue.html", {"jobs": jobs})

    async def cancel(self, request):
        conn = await self.signed_in(request)
        form = await request.post()
        await self.call(conn, "job.cancel", {"job": str(form.get("job", ""))})
        self._redirect("/queue?done=canceled")

    # ---- models -----------------------------------------------------------------------------------------
    async def models_page(self, request):
        conn = await self.signed_in(request)
        listing = await self.call(conn, "models.list", {})
        return self._render(request, "models.html", {"models": listing["models"], "cache": listing["cache"],
                                                     "report": None})

    async def models_action(self, request):
        conn = await self.signed_in(request)
        form = await request.post()
        action = request.match_info["action"]
        text = lambda k: str(form.get(k, "")).strip()   # noqa: E731
        if action == "scan":
            report = await self.call(conn, "models.scan", {"dir": text("dir")} if text("dir") else {})
            listing = await self.call(conn, "models.list", {})
            return self._render(request, "models.html", {"models": listing["models"], "cache": listing["cache"],
                                                         "report": report})
        if action == "install":
            args = {"path": text("path"), "copy": form.get("copy") == "1"}
            if text("name"):
                args["name"] = text("name")
            await self.call(conn, "models.install", args)
            self._redirect("/models?done=installed")
        if action == "download":
            args = {"source": text("source")}
            if text("name"):
                args["name"] = text("name")
            await self.call(conn, "models.download", args)
            self._redirect("/models?done=download")
        if action == "unload":
            await self.call(conn, "models.unload", {"model": text("model")} if text("model") else {})
            self._redirect("/models?done=unloaded")
        raise web.HTTPNotFound()

    # ---- users and your account -------------------------------------------------------------------------
    async def users_page(self, request):
        conn = await self.signed_in(request, admin=True)
        users = (await self.call(conn, "users.list", {}))["users"]
        return self._render(request, "users.html", {"users": users})

    async def users_action(self, request):
        conn = await self.signed_in(request, admin=True)
        form = await request.post()
        action = request.match_info["action"]
        name = str(form.get("name", ""))
        if action == "add":
            await self.call(conn, "users.create", {"name": name, "password": str(form.get("password", "")),
                                                   "admin": form.get("admin") == "1"})
            done = "user"
        elif action == "disable":
            disabled = form.get("disabled") != "0"
            await self.call(conn, "users.disable", {"name": name, "disabled": disabled})
            done = "disabled" if disabled else "enabled"
        elif action == "password":
            await self.call(conn, "users.passwd", {"name": name, "password": str(form.get("password", ""))})
            done = "reset"
        elif action == "admin":
            await self.call(conn, "users.admin", {"name": name, "admin": form.get("admin") != "0"})
            done = "admin"
        elif action == "signout":
            await self.call(conn, "users.sign_out", {"name": name})
            done = "signedout"
        else:
            raise web.HTTPNotFound()
        if name == conn.user["name"] and action in ("password", "signout"):
            self._redirect("/signin")   # that ended this session too
        self._redirect(f"/users?done={done}")

    async def account_page(self, request):
        await self.signed_in(request)
        return self._render(request, "account.html", {})

    async def account_password(self, request):
        conn = await self.signed_in(request)
        form = await request.post()
        new = str(form.get("password", ""))
        if new != str(form.get("confirm", "")):
            raise OpFailed("form", {"code": "bad_request", "message": "the new passwords differ",
                                    "details": {"field": "confirm"}})
        await self.call(conn, "users.passwd", {"name": conn.user["name"], "password": new,
                                               "current_password": str(form.get("current", ""))})
        # Every session of this user ended with the password change; this browser carries on in a new one.
        db = self.services.db
        fresh = await db.run(auth.get_user, conn.uid)
        remember = conn.claims.rm
        value, expires = await db.run(cookies.create, self.config, fresh, remember)
        resp = web.HTTPSeeOther("/account?done=password")
        self._set_cookie(resp, value, remember, expires)
        raise resp

    async def account_signout(self, request):
        conn = await self.signed_in(request)
        await self.call(conn, "users.sign_out", {"name": conn.user["name"]})
        resp = web.HTTPSeeOther("/signin")
        resp.del_cookie(self.cookie, path="/")
        raise resp
