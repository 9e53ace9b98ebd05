"""/console/ on the control plane's app (Quart's test client): the page for every client-side route,
the assets with long caching, 404 for anything else, and the security headers on every answer
under /console/ (errors included) and on no other."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hw_testing import ADMIN_TOKEN
from quart import Quart

from headwater.console.routes import ASSETS, CONTENT_SECURITY_POLICY, PAGES, STATIC
from headwater.control.app import create_app
from headwater.control.settings import AdminToken, ControlSettings


@pytest.fixture
def app() -> Quart:
    settings = ControlSettings(
        clickhouse_url="chdb:///unused", admin_tokens=(AdminToken("tests", ADMIN_TOKEN),)
    )
    unused = cast(Any, None)  # the console's routes touch none of the services
    return create_app(settings, unused, unused, unused, unused)


def secured(headers: Any) -> bool:
    return (
        headers.get("Content-Security-Policy") == CONTENT_SECURITY_POLICY
        and headers.get("X-Content-Type-Options") == "nosniff"
        and headers.get("Referrer-Policy") == "no-referrer"
    )


@pytest.mark.parametrize("path", ["/console/", *(f"/console/{page}" for page in PAGES)])
async def test_every_client_route_answers_the_page(app: Quart, path: str) -> None:
    response = await app.test_client().get(path, query_string={"project": "shop"})
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert await response.get_data() == (STATIC / "index.html").read_bytes()
    assert response.headers["Cache-Control"] == "no-cache"
    assert secured(response.headers)


@pytest.mark.parametrize("name", sorted(ASSETS))
async def test_assets_are_cached_for_a_year(app: Quart, name: str) -> None:
    response = await app.test_client().get(f"/console/assets/{name}")
    assert response.status_code == 200
    assert response.content_type == ASSETS[name]
    assert await response.get_data() == (STATIC / name).read_bytes()
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert secured(response.headers)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/console/nowhere", 404),
        ("GET", "/console/assets/other.js", 404),
        ("GET", "/console/live/extra", 404),
        ("POST", "/console/", 405),
    ],
)
async def test_anything_else_is_refused_under_the_same_policy(
    app: Quart, method: str, path: str, status: int
) -> None:
    response = await app.test_client().open(path, method=method)
    assert response.status_code == status
    assert secured(response.headers)


async def test_the_api_answers_without_the_console_headers(app: Quart) -> None:
    response = await app.test_client().get("/healthz")
    assert response.status_code == 200
    assert "Content-Security-Policy" not in response.headers
