"""GET /sdk/v1/headwater.js on the edge: the shipped SDK file, cacheable for a year, revalidated by
ETag, gzipped for clients that accept it. Driven in-process through the edge's ASGI app."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from headwater.core.projects.registry import KeyMatch
from headwater.core.service.httpapp import Readiness
from headwater.core.wire.envelope import Envelope
from headwater.edge.app import create_app, create_operator_app
from headwater.edge.metrics import EdgeMetrics
from headwater.edge.sdkfile import SDK_PATH
from headwater.edge.settings import EdgeSettings

BUILT = Path(__file__).resolve().parents[1] / "edge" / "static" / "headwater.js"


class NoSink:
    async def publish(self, envelope: Envelope) -> None:
        raise AssertionError("the SDK route publishes nothing")


class NoProjects:
    def resolve_key(self, key: str, now: datetime | None = None) -> KeyMatch | None:
        return None

    def any_project_allows(self, origin: str) -> bool:
        return False


@pytest.fixture
def metrics() -> EdgeMetrics:
    return EdgeMetrics()


@pytest.fixture
async def edge(metrics: EdgeMetrics) -> AsyncIterator[httpx.AsyncClient]:
    ready = lambda: Readiness({"nats": True})  # noqa: E731
    app = create_app(EdgeSettings(port=0), NoSink(), NoProjects(), ready, metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        yield client


@pytest.fixture
async def operator(metrics: EdgeMetrics) -> AsyncIterator[httpx.AsyncClient]:
    app = create_operator_app(lambda: Readiness({"nats": True}), metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://op") as client:
        yield client


async def test_serves_the_built_file_with_long_lived_cache_headers(edge: httpx.AsyncClient) -> None:
    response = await edge.get(SDK_PATH, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == BUILT.read_bytes()
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["etag"].startswith('"') and len(response.headers["etag"]) > 10
    assert response.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.8", "*"])
async def test_gzip_when_the_client_accepts_it(edge: httpx.AsyncClient, accept: str) -> None:
    response = await edge.get(SDK_PATH, headers={"Accept-Encoding": accept})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == BUILT.read_bytes()  # httpx decompressed it
    assert int(response.headers["content-length"]) < len(BUILT.read_bytes()) / 2


@pytest.mark.parametrize("accept", ["identity", "br", "gzip;q=0", "gzip; q=0.0, br"])
async def test_plain_when_gzip_is_not_accepted(edge: httpx.AsyncClient, accept: str) -> None:
    response = await edge.get(SDK_PATH, headers={"Accept-Encoding": accept})
    assert "content-encoding" not in response.headers
    assert response.content == BUILT.read_bytes()


async def test_etag_revalidation_answers_304(edge: httpx.AsyncClient) -> None:
    etag = (await edge.get(SDK_PATH)).headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = await edge.get(SDK_PATH, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (await edge.get(SDK_PATH, headers={"If-None-Match": '"stale"'})).status_code == 200


async def test_head_and_other_methods(edge: httpx.AsyncClient) -> None:
    head = await edge.head(SDK_PATH, headers={"Accept-Encoding": "gzip"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(gzip.compress(BUILT.read_bytes(), 9, mtime=0))
    post = await edge.post(SDK_PATH, content=b"x")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"


async def test_other_paths_still_reach_the_quart_app(
    edge: httpx.AsyncClient, operator: httpx.AsyncClient
) -> None:
    assert (await edge.get("/sdk/v1/other.js")).status_code == 404
    assert (await edge.get("/healthz")).status_code == 200
    assert (await edge.get("/metrics")).status_code == 404  # not on the public port
    await edge.get(SDK_PATH)
    metrics = (await operator.get("/metrics")).text
    assert 'headwater_edge_requests_total{endpoint="sdk",status="200"} 1.0' in metrics
