"""The engine's web page (engine/web/) in a real browser: Debian's Chromium driven by Playwright, against a real
engine with the tiny demo models, next to a real plug-in client (protocol.session.Session).

One browser for the module, a fresh browser context (cookies) per person. Screenshots of every page go to
$PAINTBRIDGE_ARTIFACTS/web (default: artifacts/web in the checkout, git-ignored) so a person can look at them.
Without Chromium or Playwright the tests skip, unless PAINTBRIDGE_REQUIRE_HOSTS=1 (CI), where they fail.
"""

from __future__ import annotations

import http.server
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from websockets.sync.client import connect as ws_connect

from engine.gallery.png import read_png_meta
from protocol.session import Session

from .helpers import ROOT, add_user, user_token, wait_for

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
PROMPT = 'a lighthouse <b id="injected">bold</b> & "quotes" <script>window.pwned=1</script>'


@pytest.fixture(scope="module")
def browser():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install playwright)"
    if missing is None and not Path(CHROMIUM).exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    if missing:
        if os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    out = Path(os.environ.get("PAINTBRIDGE_ARTIFACTS") or ROOT / "artifacts") / "web"
    out.mkdir(parents=True, exist_ok=True)
    print(f"web page screenshots: {out}")
    return out


def base(engine) -> str:
    return engine.url.replace("ws://", "http://").replace("/v1/ws", "")


def sign_in(browser, engine, name, password, path="/gallery", remember=False):
    """A new browser (context) signed in as name; returns (context, page) on `path`."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    page = ctx.new_page()
    page.goto(base(engine) + path)
    assert "/signin" in page.url
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    if remember:
        page.check("input[name=remember]")
    page.click("form[action='/signin'] button[type=submit]")
    page.wait_for_url(re.compile(re.escape(path.split("?")[0])))
    return ctx, page


def until(page, expression: str, timeout: float = 60.0):
    """Wait until a JavaScript expression is true. Not page.wait_for_function: it polls with eval inside the page,
    which the page's own CSP (script-src 'self', no 'unsafe-eval') rightly refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.1)


def plugin_session(engine, tmp_path, name) -> Session:
    """A plug-in's client, signed in as name with a bearer token."""
    s = Session("blender", "test", str(tmp_path / "blender"), url=engine.url, use_keyring=False)
    s.connect(token=user_token(engine, name))
    wait_for(s, "state", pred=lambda d: d["state"] == "connected")
    return s


def tiny(prompt, steps=2, seed=7):
    return {"mode": "txt2img", "model": "tiny-sd15", "prompt": prompt, "width": 64, "height": 64, "steps": steps,
            "seed": seed}


def test_sign_in_see_a_plugin_image_and_its_metadata(browser, engine_server, tmp_path, shots):
    name, password = add_user(engine_server)
    s = plugin_session(engine_server, tmp_path, name)
    try:
        s.generate(tiny(PROMPT))
        layers = wait_for(s, "result")["layers"]
    finally:
        s.close()
    assert layers

    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    page = ctx.new_page()
    first = page.goto(base(engine_server) + "/gallery?q=lighthouse")
    assert "/signin?next=" in page.url
    headers = first.headers   # the sign-in page's own response, after the redirect
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    page.screenshot(path=str(shots / "signin.png"))
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", "wrong password")
    page.click("form[action='/signin'] button[type=submit]")
    assert page.inner_text("#message") == "Wrong username or password."
    page.fill("input[name=password]", password)
    page.check("input[name=remember]")
    page.click("form[action='/signin'] button[type=submit]")
    page.wait_for_url(re.compile(r"/gallery\?q=lighthouse$"))   # back where the person was going

    cookie = next(c for c in ctx.cookies() if c["name"] == "pb_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["expires"] > time.time() + 3600          # remember me: a lasting cookie
    assert page.evaluate("document.cookie") == ""           # page scripts cannot read it

    thumb = page.locator("#images img").first
    thumb.wait_for()
    until(page, "document.querySelector('#images img').naturalWidth > 0")
    assert page.inner_text("#images .sub").startswith("blender")   # made by the plug-in
    assert page.locator("#injected").count() == 0 and page.evaluate("window.pwned") is None
    page.screenshot(path=str(shots / "gallery.png"), full_page=True)

    thumb.click()
    page.wait_for_url(re.compile(r"/gallery/[0-9a-f]+$"))
    assert page.inner_text("#prompt") == PROMPT   # shown as text, escaped
    assert page.locator("#injected").count() == 0 and page.evaluate("window.pwned") is None
    assert page.inner_text("#model").startswith("tiny-sd15")
    assert page.inner_text("#seed") == "7"
    assert page.inner_text("#app") == "blender"
    until(page, "document.querySelector('#full').naturalWidth === 64")
    page.click("#all-meta summary")
    assert '"prompt"' in page.inner_text("#all-meta pre")
    page.screenshot(path=str(shots / "image.png"), full_page=True)

    with page.expect_download() as dl:
        page.click("#download")
    data = Path(dl.value.path()).read_bytes()
    meta = read_png_meta(data)   # the PNG as written, with its metadata
    assert meta["params"]["prompt"] == PROMPT and meta["params"]["seed"] == 7

    page.click("#star")
    page.wait_for_url(re.compile(r"done=starred"))
    assert "Unstar" in page.inner_text("#star")
    image_url = page.url.split("?")[0]
    page.goto(base(engine_server) + "/gallery?starred=1")
    assert page.locator("#images li").count() == 1

    # boards: make one, put the image on it, filter by it
    page.click("details.box summary")
    page.fill("form[action='/boards'] input[name=name]", "<i>sea</i> studies")
    page.click("form[action='/boards'] button")
    page.wait_for_url(re.compile(r"done=board"))
    assert page.locator("#images li").count() == 0
    page.goto(image_url)
    page.select_option("form[action$='/move'] select", label="<i>sea</i> studies")
    page.click("form[action$='/move'] button")
    page.wait_for_url(re.compile(r"done=moved"))
    page.goto(base(engine_server) + "/gallery")
    page.select_option("select[name=board]", label="<i>sea</i> studies (1)")
    page.click("form.filters button")
    assert page.locator("#images li").count() == 1

    page.goto(image_url)
    page.once("dialog", lambda d: d.accept())   # "Delete this image?"
    page.click("#delete")
    page.wait_for_url(re.compile(r"/gallery\?done=deleted"))
    assert page.inner_text(".notice") == "Image deleted." and page.locator("#images li").count() == 0
    ctx.close()


def test_generate_from_the_page_with_live_preview(browser, engine_server, tmp_path, shots):
    name, password = add_user(engine_server)
    ctx, page = sign_in(browser, engine_server, name, password, "/generate")
    page.wait_for_selector("#live.on")
    page.select_option("#model", "tiny-sd15")
    page.fill("#prompt", "a red boat")
    page.fill("input[name=width]", "64")
    page.fill("input[name=height]", "64")
    page.fill("#steps", "16")
    page.fill("input[name=seed]", "11")
    page.click("#go")
    page.wait_for_url(re.compile(r"/generate\?job="))
    assert page.inner_text("#job-seed") == "11"
    assert page.input_value("#prompt") == "a red boat" and page.input_value("#model") == "tiny-sd15"
    # the preview canvas is drawn from job.progress previews (rgba8 over msgpack), then the result links appear
    until(page, "document.querySelector('#preview').width !== 256", timeout=120)   # a 64 px preview was drawn
    page.wait_for_selector("#results a img", timeout=120_000)
    assert page.inner_text("#job-status") == "done" and not page.is_visible("#cancel")
    page.screenshot(path=str(shots / "generate.png"), full_page=True)
    page.click("#results a")
    page.wait_for_url(re.compile(r"/gallery/[0-9a-f]+$"))
    assert page.inner_text("#app") == "web"
    page.click("#again")   # "generate again": the form filled with the image's settings
    assert page.input_value("#prompt") == "a red boat"
    assert page.input_value("input[name=seed]") == "11"

    # img2img from a file the person picks
    src = tmp_path / "source.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(src)
    page.check("input[name=mode][value=img2img]")
    page.set_input_files("input[name=image]", str(src))
    page.fill("#steps", "4")
    page.fill("input[name=strength]", "0.5")
    page.click("#go")
    page.wait_for_url(re.compile(r"/generate\?job="))
    page.wait_for_selector("#results a img", timeout=120_000)
    page.click("#results a")
    assert page.inner_text("table.meta").count("img2img") == 1
    ctx.close()


def test_cancel_a_running_plugin_job_from_the_queue_page(browser, engine_server, tmp_path, shots):
    name, password = add_user(engine_server)
    s = plugin_session(engine_server, tmp_path, name)
    try:
        s.generate(tiny("a long job", steps=200))
        job = wait_for(s, "progress")["job"]   # running
        ctx, page = sign_in(browser, engine_server, name, password, "/queue")
        row = page.locator(f"tr[data-job='{job}']")
        row.wait_for()
        page.wait_for_selector("#live.on")
        until(page, f"document.querySelector(\"tr[data-job='{job}'] .step\").textContent !== ''")
        page.screenshot(path=str(shots / "queue.png"), full_page=True)
        row.locator("button.cancel").click()
        page.wait_for_url(re.compile(r"done=canceled"))
        assert wait_for(s, "canceled", timeout=60)["job"] == job   # the plug-in hears its job was canceled
        page.wait_for_selector(f"tr[data-job='{job}'][data-status='canceled']")
        ctx.close()
    finally:
        s.close()


def test_admin_adds_a_user_who_then_signs_in(browser, engine_server, tmp_path, shots):
    admin, admin_pw = add_user(engine_server, admin=True)
    other, _ = add_user(engine_server)
    s = plugin_session(engine_server, tmp_path, other)   # someone else's job shows on the admin's queue
    try:
        s.generate(tiny("someone else's", steps=2))
        wait_for(s, "result")
    finally:
        s.close()
    ctx, page = sign_in(browser, engine_server, admin, admin_pw, "/users")
    new = f"new{os.getpid()}"
    page.fill("#add-user input[name=name]", new)
    page.fill("#add-user input[name=password]", "pw-of-new")
    page.click("#add-user button[type=submit]")
    page.wait_for_url(re.compile(r"/users\?done=user"))
    assert page.locator(f"tr[data-user='{new}']").count() == 1
    page.screenshot(path=str(shots / "users.png"), full_page=True)
    page.goto(base(engine_server) + "/queue")
    row = page.locator("#jobs tbody tr", has_text="someone else's").first
    assert row.locator(".user").inner_text() == other and "blender" in row.inner_text()
    page.goto(base(engine_server) + "/models")
    assert "tiny-sd15" in page.inner_text("#models")
    page.click("#scan")
    page.wait_for_selector("#scan-report")
    page.screenshot(path=str(shots / "models.png"), full_page=True)
    page.goto(base(engine_server) + "/account")
    page.screenshot(path=str(shots / "account.png"), full_page=True)
    ctx.close()

    ctx2, page2 = sign_in(browser, engine_server, new, "pw-of-new")
    assert page2.inner_text("#me") == new
    assert "No images yet" in page2.inner_text("main")
    ctx2.close()


def test_a_non_admin_gets_403_on_admin_pages(browser, engine_server, shots):
    name, password = add_user(engine_server)
    ctx, page = sign_in(browser, engine_server, name, password)
    assert page.locator("header nav a[href='/users']").count() == 0
    resp = page.goto(base(engine_server) + "/users")
    assert resp.status == 403
    page.screenshot(path=str(shots / "forbidden.png"))
    page.goto(base(engine_server) + "/models")
    assert page.locator("form[action='/models/scan']").count() == 0   # read only
    # a same-origin form post a non-admin builds by hand is refused by the op's own rule
    status = page.evaluate("""async () => {
        const out = {};
        for (const [path, body] of [["/users/add", "name=x1&password=abcdef"], ["/models/scan", "dir="],
                                    ["/users/admin", "name=x1&admin=1"]]) {
            const r = await fetch(path, {method: "POST", body: new URLSearchParams(body)});
            out[path] = r.status;
        }
        return out;
    }""")
    assert status == {"/users/add": 403, "/models/scan": 403, "/users/admin": 403}
    ctx.close()


class _Foreign(http.server.BaseHTTPRequestHandler):
    """Another site on this machine (same site, other origin: our cookie is SameSite but the port differs)."""
    html = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *a):
        pass


def test_cross_site_form_post_and_websocket_are_refused(browser, engine_server, shots):
    admin, admin_pw = add_user(engine_server, admin=True)
    ctx, page = sign_in(browser, engine_server, admin, admin_pw)
    target = base(engine_server)
    _Foreign.html = f"""<!doctype html><body>
<form id="f" method="post" action="{target}/users/add"><input name="name" value="evil{os.getpid()}">
<input name="password" value="evilpass"><input name="admin" value="1"></form>
<script>
const ws = new WebSocket("{engine_server.url}");
ws.onopen = () => {{ document.title = "ws:open"; }};
ws.onclose = () => {{ if (document.title !== "ws:open") document.title = "ws:refused"; }};
</script></body>""".encode()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Foreign)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        evil = ctx.new_page()
        evil.goto(f"http://127.0.0.1:{srv.server_port}/")
        evil.wait_for_function("document.title.startsWith('ws:')")
        assert evil.title() == "ws:refused"
        with evil.expect_navigation() as nav:
            evil.evaluate("document.getElementById('f').submit()")
        assert nav.value.status == 403
        assert "cross-site request refused" in evil.inner_text("body")
        evil.screenshot(path=str(shots / "cross-site-refused.png"))
    finally:
        srv.shutdown()
    page.goto(target + "/users")
    assert page.locator(f"tr[data-user='evil{os.getpid()}']").count() == 0

    # The upgrade itself, with the admin's real cookie: refused for a foreign Origin, accepted for our own.
    cookie = next(c for c in ctx.cookies() if c["name"] == "pb_session")
    header = {"Cookie": f"pb_session={cookie['value']}"}
    with pytest.raises(Exception) as refused:
        ws_connect(engine_server.url, additional_headers={**header, "Origin": "http://127.0.0.1:1"})
    assert "403" in str(refused.value)
    with ws_connect(engine_server.url, additional_headers={**header, "Origin": target}) as ws:
        from protocol import codec
        ws.send(codec.encode(codec.request(1, "auth.whoami", {})))
        assert codec.decode(ws.recv(10))["result"]["user"]["name"] == admin
        ws.send(codec.encode(codec.request(2, "auth.refresh", {})))   # a browser session never gets a token
        assert codec.decode(ws.recv(10))["error"]["code"] == "forbidden"
    ctx.close()


def expire_sessions(engine, name):
    """What time does to a browser session, done at once: its absolute expiry passes."""
    db = sqlite3.connect(engine.data_dir / "paintbridge.db", timeout=30)
    try:
        db.execute("UPDATE web_sessions SET expires = ? WHERE user_id = (SELECT id FROM users WHERE name = ?)",
                   [time.time() - 1, name])
        db.commit()
    finally:
        db.close()


def test_an_expired_session_goes_back_to_sign_in(browser, engine_server, shots):
    name, password = add_user(engine_server)
    ctx, page = sign_in(browser, engine_server, name, password, "/queue?x=1")
    page.wait_for_selector("#live.on")
    # an open page: the engine closes its socket when the session expires, the page goes to sign in by itself
    expire_sessions(engine_server, name)
    page.wait_for_url(re.compile(r"/signin\?next=%2Fqueue%3Fx%3D1&expired=1"), timeout=30_000)
    assert "expired" in page.inner_text("#message")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("form[action='/signin'] button[type=submit]")
    page.wait_for_url(re.compile(r"/queue\?x=1$"))

    # a page opened after the session expired
    expire_sessions(engine_server, name)
    page.goto(base(engine_server) + "/gallery?q=boat")
    assert "/signin?" in page.url and "expired=1" in page.url
    assert "expired" in page.inner_text("#message")
    page.screenshot(path=str(shots / "expired.png"))
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("form[action='/signin'] button[type=submit]")
    page.wait_for_url(re.compile(r"/gallery\?q=boat$"))   # where the person was

    # An admin signs the user out everywhere on the Users page: the user's open page goes to sign in by itself
    # (the engine closes its WebSocket, the page asks /session and leaves).
    page.goto(base(engine_server) + "/queue")
    page.wait_for_selector("#live.on")
    admin, admin_pw = add_user(engine_server, admin=True)
    actx, apage = sign_in(browser, engine_server, admin, admin_pw, "/users")
    apage.locator(f"tr[data-user='{name}'] form[action='/users/signout'] button").click()
    apage.wait_for_url(re.compile(r"done=signedout"))
    page.wait_for_url(re.compile(r"/signin\?next=%2Fqueue&expired=1$"), timeout=20_000)
    actx.close()
    ctx.close()
