"""The control API against real NATS (KV bucket) and embedded ClickHouse."""

from __future__ import annotations

import httpx
import pytest
from hw_testing import admin_headers

from headwater.core.projects.keys import key_digest
from headwater.core.projects.project import Project
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services


@pytest.fixture
async def control(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(control=True)


async def create(http: httpx.AsyncClient, stack: Stack, body: dict[str, object]) -> httpx.Response:
    return await http.post(f"{stack.control_url}/v1/projects", json=body, headers=admin_headers())


async def test_admin_token_is_required(control: Stack, http: httpx.AsyncClient) -> None:
    missing = await http.get(f"{control.control_url}/v1/projects")
    assert missing.status_code == 401
    assert missing.json()["code"] == "missing_admin_token"
    wrong = await http.get(
        f"{control.control_url}/v1/projects", headers=admin_headers("not-the-token-at-all")
    )
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "invalid_admin_token"
    create_without = await http.post(f"{control.control_url}/v1/projects", json={"id": "nope"})
    assert create_without.status_code == 401


async def test_health_endpoints_need_no_token(control: Stack, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{control.control_url}/healthz")).status_code == 200
    ready = await http.get(f"{control.control_url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"nats": True}}


async def test_create_project_stores_config_and_creates_database(
    control: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    response = await create(
        http,
        control,
        {"id": project_id, "name": "Shop", "allowed_origins": ["https://Shop.Example.com:443/"]},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    public_key, secret_key = body["public_key"], body["secret_key"]
    assert public_key.startswith("hwpk_") and secret_key.startswith("hwsk_")
    assert body["project"]["allowed_origins"] == ["https://shop.example.com"]

    # The KV entry holds the public key and only a hash of the secret one.
    assert control.nats is not None
    kv = await control.nats.jetstream().key_value("HW_PROJECTS")
    entry = await kv.get(project_id)
    assert entry.value is not None
    assert secret_key.encode() not in entry.value
    stored = Project.from_json(entry.value)
    assert stored.public_keys() == [public_key]
    assert key_digest(secret_key) in {k.digest for k in stored.keys if k.kind == "secret"}

    # The project's database and events table exist in ClickHouse.
    assert control.clickhouse is not None
    tables = control.clickhouse.query(f"SHOW TABLES FROM hw_{project_id}").result_rows
    assert ("events",) in tables

    shown = await http.get(f"{control.control_url}/v1/projects/{project_id}", headers=admin_headers())
    assert shown.status_code == 200
    assert secret_key not in shown.text
    assert key_digest(secret_key) not in shown.text
    listed = await http.get(f"{control.control_url}/v1/projects", headers=admin_headers())
    assert project_id in [p["id"] for p in listed.json()["projects"]]


async def test_existing_project_id_conflicts(
    control: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    assert (await create(http, control, {"id": project_id})).status_code == 201
    again = await create(http, control, {"id": project_id})
    assert again.status_code == 409
    assert again.json()["code"] == "project_exists"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"id": "Bad-Id"}, 400, "invalid_project_id", "id"),
        ({"id": "x" * 49}, 400, "invalid_project_id", "id"),
        ({"name": "no id"}, 400, "invalid_project_id", "id"),
        (
            {"id": "ok", "allowed_origins": ["https://a.example", "ftp://b.example"]},
            400,
            "invalid_origin",
            "allowed_origins[1]",
        ),
        (
            {"id": "ok", "allowed_origins": ["https://a.example/path"]},
            400,
            "invalid_origin",
            "allowed_origins[0]",
        ),
        ({"id": "ok", "allowed_origins": "https://a.example"}, 400, "invalid_field", "allowed_origins"),
        ({"id": "ok", "name": ""}, 400, "invalid_field", "name"),
        ({"id": "ok", "color": "red"}, 400, "invalid_field", "color"),
        (
            {"id": "ok", "settings": {"rate_limits": {"burst_seconds": "10"}}},
            400,
            "invalid_field",
            "settings.rate_limits.burst_seconds",
        ),
        (
            {"id": "ok", "settings": {"batching": {"span_seconds": 3601}}},
            400,
            "invalid_field",
            "settings.batching.span_seconds",
        ),
        (
            {"id": "ok", "settings": {"anonymisation": {"redact_properties": ["email"], "hash": True}}},
            400,
            "invalid_field",
            "settings.anonymisation.hash",
        ),
    ],
)
async def test_invalid_create_requests_say_which_field(
    control: Stack, http: httpx.AsyncClient, body: dict[str, object], status: int, code: str, field: str
) -> None:
    response = await create(http, control, body)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["field"] == field
    assert response.json()["message"].startswith(field)


async def test_malformed_json_is_a_clear_400(control: Stack, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{control.control_url}/v1/projects", content=b"{not json", headers=admin_headers()
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


async def test_unknown_project_is_404(control: Stack, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{control.control_url}/v1/projects/nothing_here", headers=admin_headers())
    assert response.status_code == 404
    assert response.json()["code"] == "project_not_found"


async def test_query_is_read_only_by_clickhouse_settings(
    control: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    assert (await create(http, control, {"id": project_id})).status_code == 201
    url = f"{control.control_url}/v1/projects/{project_id}/query"
    ok = await http.post(url, json={"sql": "SELECT count() AS n FROM events"}, headers=admin_headers())
    assert ok.status_code == 200
    assert ok.json() == {"columns": ["n"], "rows": [[0]]}
    for sql in (
        "DROP TABLE events",
        "INSERT INTO events (message_id) VALUES ('x')",
        "SELECT 1 SETTINGS readonly = 0",
    ):
        refused = await http.post(url, json={"sql": sql}, headers=admin_headers())
        assert refused.status_code == 403, sql
        assert refused.json()["code"] == "query_not_allowed"
    assert control.clickhouse is not None
    assert ("events",) in control.clickhouse.query(f"SHOW TABLES FROM hw_{project_id}").result_rows
