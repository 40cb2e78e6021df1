"""The engine's web page, served by the daemon on its own port (`/` and below; the wire protocol stays at /v1/).

pages.py   the routes: sign in, gallery, generate, queue, models, users, your account (jinja2 templates in
           templates/, autoescaped; the page's own scripts and the vendored msgpack build in static/)
cookies.py browser sessions: an HttpOnly SameSite=Strict cookie whose SHA-256 the database keeps
guard.py   security headers (strict CSP), the same-origin check on every state-changing request and on a page's
           WebSocket upgrade, and the Host check against DNS rebinding

The transport (engine/server.py) mounts it (`WebPages(server).routes(app)`) and asks it whether a browser's
upgrade carries a signed-in session (`page_upgrade`).
"""

from .pages import WebPages  # noqa: F401
