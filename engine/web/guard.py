"""The web page's browser rules: response headers, the same-origin check for every state-changing request and for
a page's WebSocket upgrade, and the Host check against DNS rebinding.

Why each: the session cookie is SameSite=Strict, but "site" ignores the port, so another service on the same
machine (127.0.0.1:8000) is same-site and its pages would send our cookie. So every POST and every page upgrade
must also come from our own origin: Sec-Fetch-Site (sent by every current browser) must say "same-origin", and
Origin (sent on every POST and upgrade) must be this server's. A request with neither is refused: browsers send
at least one, and non-browser clients use bearer tokens, not the cookie.
A page on a rebound name (evil.example resolving to 127.0.0.1) is same-origin with itself; it has no cookie, but
the Host check keeps it off the sign-in form too.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp import web

# script-src 'self' and no 'unsafe-inline' anywhere: a prompt that smuggles markup past escaping still runs nothing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


async def security_headers(request: web.Request, response: web.StreamResponse):
    """Every response: nothing of ours runs in a frame, types are never sniffed, pages are not cached."""
    h = response.headers
    h["Content-Security-Policy"] = CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "same-origin"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    if "Cache-Control" not in h:
        h["Cache-Control"] = "no-store"


def scheme(config) -> str:
    return "https" if config.tls_cert else "http"


def own_origin(request: web.Request, config) -> str:
    return f"{scheme(config)}://{request.host}"


def host_allowed(request: web.Request, config) -> bool:
    """The Host header names this engine: an IP address, localhost, --host, this machine's name or a configured
    web_hosts name."""
    host = request.host.lower()
    if host.startswith("["):   # [::1]:9180
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    names = {"localhost", config.host.lower(), socket.gethostname().lower(),
             *(h.lower() for h in config.web_hosts)}
    return name in names or name.endswith(".localhost")


def same_origin(request: web.Request, config) -> bool:
    """A state-changing request or a page's upgrade came from a page of this engine."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site is None and origin is None:
        return False
    if site is not None and site != "same-origin":
        return False
    if origin is not None and origin != own_origin(request, config):
        return False
    return host_allowed(request, config)
