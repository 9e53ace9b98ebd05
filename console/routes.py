"""`/console/` on a Quart app: the page for the console's client-side routes, its two assets, and on
every answer under /console/ a strict Content-Security-Policy.

The files hold no data (everything the console shows comes from /v1 calls that carry the admin
token), so they are served without one. The page names each asset with its content's digest
(`?v=`, console/web/build.mjs), so the assets may be cached for a year; the page itself is
revalidated on every load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from quart import Quart, Response, request
from werkzeug.exceptions import NotFound

STATIC: Final = Path(__file__).resolve().parent / "static"
PREFIX: Final = "/console/"

# The client-side routes (console/web/src/main.jsx): each answers the page.
PAGES: Final = ("signin", "projects", "live", "overview", "funnels", "paths", "suggestions", "health")
ASSETS: Final = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_CACHE: Final = "no-cache"
ASSET_CACHE: Final = "public, max-age=31536000, immutable"


def _read(name: str) -> bytes:
    try:
        return (STATIC / name).read_bytes()
    except FileNotFoundError:  # a source checkout whose assets were never built
        raise NotFound(f"console/static/{name} is missing: build it (docs/console.md)") from None


def install_console(app: Quart) -> None:
    """Registers the console's routes on `app` and the security headers on its answers (errors
    under /console/ included)."""

    async def index() -> Response:
        return Response(
            _read("index.html"),
            content_type="text/html; charset=utf-8",
            headers={"Cache-Control": PAGE_CACHE},
        )

    async def client_route(page: str) -> Response:
        if page not in PAGES:
            raise NotFound(f"the console has no page {page!r}")
        return await index()

    def asset(name: str, content_type: str) -> None:
        async def serve() -> Response:
            return Response(_read(name), content_type=content_type, headers={"Cache-Control": ASSET_CACHE})

        app.add_url_rule(f"{PREFIX}assets/{name}", f"console_asset_{name}", serve, methods=["GET"])

    app.add_url_rule(PREFIX, "console_page", index, methods=["GET"])
    app.add_url_rule(f"{PREFIX}<page>", "console_client_route", client_route, methods=["GET"])
    for name, content_type in ASSETS.items():
        asset(name, content_type)

    @app.after_request
    async def secure(response: Response) -> Response:
        if request.path == PREFIX.rstrip("/") or request.path.startswith(PREFIX):
            response.headers.update(SECURITY_HEADERS)
        return response
