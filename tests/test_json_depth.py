"""JSON nested deeper than any API accepts is refused before it is decoded: 400 `too_deep`, never a
500 from the decoder's recursion — on every ingest route and on the control API."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from hw_testing import admin_headers, basic_auth, create_project, track_event
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core.service.jsondepth import nesting_exceeds
from headwater.ops.runtime import Stack


def deep(levels: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * levels + closer * levels


@pytest.mark.parametrize(
    ("document", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": [2]}], "c": {}}', 4),
        (b'{"s": "[[[[[[[[[[{{{{{{{{"}', 1),  # brackets in a string do not count
        (b'{"s": "\\"[[[[[[[[[[", "t": "\\\\", "u": [[1]]}', 3),  # nor after escaped quotes
        (b'["\\\\\\"[[[[[[[[", [[[]]]]', 4),
        (deep(40), 40),
        (b'{"a":' + deep(30, b'{"b":', b"}") + b"}", 31),
        (b"[[[[[[[[[[[[", 12),  # unclosed: as deep as a decoder would recurse before failing
    ],
)
def test_nesting_is_measured_outside_strings(document: bytes, depth: int) -> None:
    assert nesting_exceeds(document, depth - 1)
    assert not nesting_exceeds(document, depth)


def test_a_large_shallow_body_is_not_too_deep() -> None:
    event = track_event(type="track", properties={"a": [1, {"b": "[[["}]})
    body = orjson.dumps({"batch": [event] * 2000})
    assert not nesting_exceeds(body, 6)  # body, batch, event, properties, a, {b}
    assert nesting_exceeds(body, 5)


def reference_nesting_exceeds(data: bytes, limit: int) -> bool:
    """The plain form of the definition: escapes out, strings split off at their quotes, and every
    bracket left counted in turn."""
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    depth = 0
    for byte in outside:
        if byte in b"{[":
            depth += 1
            if depth > limit:
                return True
        elif byte in b"}]":
            depth -= 1
    return False


_PIECES = st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b"a", b",", b":", b"1"])
_TEXT = st.text(alphabet='{}[]"\\ab\n', max_size=6)
_JSON = st.recursive(
    st.none() | st.integers(-1000, 1000) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_PIECES, max_size=60).map(b"".join), st.integers(0, 12))
def test_any_bytes_read_as_the_plain_definition(data: bytes, limit: int) -> None:
    assert nesting_exceeds(data, limit) == reference_nesting_exceeds(data, limit), (data, limit)


@settings(max_examples=500, deadline=None)
@given(_JSON, st.integers(0, 12))
def test_any_json_read_as_the_plain_definition(value: Any, limit: int) -> None:
    data = orjson.dumps(value)
    assert nesting_exceeds(data, limit) == reference_nesting_exceeds(data, limit), (data, limit)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 20_000), st.integers(0, 20_000), st.integers(0, 300))
def test_long_unbalanced_bodies_read_as_the_plain_definition(opened: int, closed: int, limit: int) -> None:
    """Past one chunk of brackets, balanced or not, and a long chain around many shallow objects."""
    data = b"[" * opened + b'{"a":{}}' * 3000 + b"]" * closed
    assert nesting_exceeds(data, limit) == reference_nesting_exceeds(data, limit)


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=True, control=True)


def deep_event(levels: int) -> bytes:
    """A track event whose properties nest `levels` arrays."""
    return b'{"type":"track","event":"e","userId":"u","properties":{"p":' + deep(levels) + b"}}"


@pytest.mark.services
@pytest.mark.parametrize("levels", [1000, 5000, 100_000])
@pytest.mark.parametrize("path", ["track", "batch", "import"])
async def test_ingest_refuses_a_too_deep_body_with_400(
    stack: Stack, http: httpx.AsyncClient, project_id: str, path: str, levels: int
) -> None:
    keys = await create_project(http, stack, project_id)
    event = deep_event(levels)
    body = event if path == "track" else b'{"batch":[' + event + b"]}"
    response = await http.post(
        f"{stack.edge_url}/v1/{path}",
        content=body,
        headers={**basic_auth(keys["secret_key"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "too_deep"


@pytest.mark.services
async def test_a_batch_still_refuses_a_deep_event_on_its_own(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    """Below the body's limit, a too-deep event is refused alone and the others are accepted."""
    keys = await create_project(http, stack, project_id)
    body = b'{"batch":[' + deep_event(60) + b"," + orjson.dumps(track_event(type="track")) + b"]}"
    response = await http.post(
        f"{stack.edge_url}/v1/batch",
        content=body,
        headers={**basic_auth(keys["secret_key"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 1
    assert [r["code"] for r in answer["rejected"]] == ["too_deep"]


@pytest.mark.services
@pytest.mark.parametrize("levels", [1000, 5000])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/projects"), ("PATCH", "/v1/projects/{id}"), ("POST", "/v1/projects/{id}/query")],
)
async def test_control_refuses_a_too_deep_body_with_400(
    stack: Stack, http: httpx.AsyncClient, project_id: str, method: str, path: str, levels: int
) -> None:
    await create_project(http, stack, project_id)
    body: dict[str, Any] = {"id": f"{project_id}_2"} if path == "/v1/projects" else {}
    raw = orjson.dumps({**body, "name": "x"})[:-1] + b',"allowed_origins":' + deep(levels) + b"}"
    response = await http.request(
        method,
        f"{stack.control_url}{path.format(id=project_id)}",
        content=raw,
        headers={**admin_headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "too_deep"
