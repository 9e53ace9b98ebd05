"""The project life cycle through the control API, against real NATS and embedded ClickHouse:
updates (compare-and-set), key rotation with a grace period, disable, purge, idempotent create,
pagination, and the audit trail."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
import orjson
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hw_testing import admin_headers, basic_auth, eventually, track_event
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from headwater.control.audit import AUDIT_STREAM, AUDIT_SUBJECT
from headwater.core.wire.subjects import EVENTS_STREAM, events_subject
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services
ORIGIN = "https://app.example.com"


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=True, control=True, consumer=True)


class Api:
    def __init__(self, http: httpx.AsyncClient, stack: Stack) -> None:
        self.http = http
        self.base = f"{stack.control_url}/v1"

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return await self.http.request(
            method, self.base + path, json=body, headers={**admin_headers(), **headers}
        )


@pytest.fixture
def api(http: httpx.AsyncClient, stack: Stack) -> Api:
    return Api(http, stack)


@pytest.fixture
async def project(api: Api, project_id: str) -> dict[str, Any]:
    response = await api.call("POST", "/projects", {"id": project_id, "allowed_origins": [ORIGIN]})
    assert response.status_code == 201
    return dict(response.json())


async def edge_status(http: httpx.AsyncClient, stack: Stack, key: str, origin: str | None = None) -> int:
    headers = basic_auth(key) | ({"Origin": origin} if origin else {})
    return (await http.post(f"{stack.edge_url}/v1/track", json=track_event(), headers=headers)).status_code


async def test_patch_updates_fields_and_merges_settings(
    api: Api, project: dict[str, Any], project_id: str
) -> None:
    response = await api.call(
        "PATCH",
        f"/projects/{project_id}",
        {
            "name": "Renamed",
            "allowed_origins": ["https://*.Example.org", "https://shop.example.com:443"],
            "settings": {"rate_limits": {"project_events_per_second": 500}, "anonymisation": {"ip": "drop"}},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["project"]["name"] == "Renamed"
    assert body["project"]["allowed_origins"] == ["https://*.example.org", "https://shop.example.com"]
    assert response.headers["ETag"] == f'"{body["revision"]}"'
    settings = body["project"]["settings"]
    assert settings["rate_limits"]["project_events_per_second"] == 500
    assert settings["rate_limits"]["burst_seconds"] == 10  # untouched fields keep their values
    assert settings["anonymisation"] == {"ip": "drop", "redact_properties": [], "rules": []}
    assert settings["batching"] == {"span_seconds": 1.0}
    shown = await api.call("GET", f"/projects/{project_id}")
    assert shown.json() == body


@pytest.mark.parametrize(
    ("patch", "code", "field"),
    [
        ({"nope": 1}, "invalid_field", "nope"),
        ({"id": "other"}, "invalid_field", "id"),
        ({"enabled": "yes"}, "invalid_field", "enabled"),
        (
            {"allowed_origins": ["https://ok.example", "https://*.com"]},
            "invalid_origin",
            "allowed_origins[1]",
        ),
        ({"allowed_origins": ["*"]}, "invalid_origin", "allowed_origins[0]"),
        ({"settings": {"batching": {"span_seconds": 0}}}, "invalid_field", "settings.batching.span_seconds"),
        ({"settings": {"anonymisation": {"ip": "hash"}}}, "invalid_field", "settings.anonymisation.ip"),
        ({"settings": {"rate_limits": {"burst": 1}}}, "invalid_field", "settings.rate_limits.burst"),
        ({"settings": {"colour": "blue"}}, "invalid_field", "settings.colour"),
    ],
)
async def test_invalid_patches_name_the_field(
    api: Api, project: dict[str, Any], project_id: str, patch: dict[str, Any], code: str, field: str
) -> None:
    response = await api.call("PATCH", f"/projects/{project_id}", patch)
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    unchanged = await api.call("GET", f"/projects/{project_id}")
    assert unchanged.json()["revision"] == project["revision"]


async def test_any_origin_needs_the_explicit_opt_in(
    api: Api, project: dict[str, Any], project_id: str
) -> None:
    response = await api.call(
        "PATCH", f"/projects/{project_id}", {"allowed_origins": ["*"], "allow_any_origin": True}
    )
    assert response.status_code == 200
    refused = await api.call("PATCH", f"/projects/{project_id}", {"allow_any_origin": False})
    assert refused.status_code == 400
    assert refused.json()["field"] == "allow_any_origin"


async def test_if_match_turns_a_lost_race_into_412(
    api: Api, project: dict[str, Any], project_id: str
) -> None:
    revision = project["revision"]
    first, second = await asyncio.gather(
        api.call("PATCH", f"/projects/{project_id}", {"name": "first"}, **{"If-Match": f'"{revision}"'}),
        api.call("PATCH", f"/projects/{project_id}", {"name": "second"}, **{"If-Match": f'"{revision}"'}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 412]
    loser = first if first.status_code == 412 else second
    assert loser.json()["code"] == "revision_mismatch"
    stale = await api.call(
        "PATCH", f"/projects/{project_id}", {"name": "third"}, **{"If-Match": str(revision)}
    )
    assert stale.status_code == 412
    bad = await api.call("PATCH", f"/projects/{project_id}", {"name": "x"}, **{"If-Match": "yesterday"})
    assert bad.status_code == 400


async def test_concurrent_patches_without_if_match_lose_nothing(
    api: Api, project: dict[str, Any], project_id: str
) -> None:
    patches: list[dict[str, Any]] = [
        {"name": "concurrent"},
        {"settings": {"rate_limits": {"project_events_per_second": 111}}},
        {"settings": {"rate_limits": {"ip_events_per_second": 22}}},
        {"settings": {"rate_limits": {"burst_seconds": 3}}},
        {"settings": {"batching": {"span_seconds": 2.5}}},
        {"settings": {"anonymisation": {"ip": "keep"}}},
        {"settings": {"anonymisation": {"redact_properties": ["email"]}}},
        {"allowed_origins": ["https://one.example"]},
    ]
    responses = await asyncio.gather(*(api.call("PATCH", f"/projects/{project_id}", p) for p in patches))
    assert [r.status_code for r in responses] == [200] * len(patches)
    final = (await api.call("GET", f"/projects/{project_id}")).json()
    settings = final["project"]["settings"]
    assert final["project"]["name"] == "concurrent"
    assert final["project"]["allowed_origins"] == ["https://one.example"]
    assert settings["rate_limits"] == {
        "project_events_per_second": 111,
        "ip_events_per_second": 22,
        "burst_seconds": 3,
    }
    assert settings["batching"] == {"span_seconds": 2.5}
    assert settings["anonymisation"] == {"ip": "keep", "redact_properties": ["email"], "rules": []}
    assert final["revision"] == project["revision"] + len(patches)


@pytest.mark.parametrize("kind", ["public", "secret"])
async def test_rotated_key_keeps_the_old_one_for_the_grace_period(
    api: Api, http: httpx.AsyncClient, stack: Stack, project: dict[str, Any], project_id: str, kind: str
) -> None:
    old_key = project["public_key" if kind == "public" else "secret_key"]
    origin = ORIGIN if kind == "public" else None
    assert await edge_status(http, stack, old_key, origin) == 200
    rotated = await api.call(
        "POST", f"/projects/{project_id}/keys/rotate", {"kind": kind, "grace_seconds": 2}
    )
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["key"]
    assert new_key.startswith("hwpk_" if kind == "public" else "hwsk_") and new_key != old_key

    async def new_key_status() -> int:
        return await edge_status(http, stack, new_key, origin)

    await eventually(new_key_status, lambda s: s == 200, timeout=5)
    assert await edge_status(http, stack, old_key, origin) == 200  # within the grace period

    async def old_key_status() -> int:
        return await edge_status(http, stack, old_key, origin)

    assert await eventually(old_key_status, lambda s: s == 401, timeout=10) == 401
    assert await new_key_status() == 200
    shown = (await api.call("GET", f"/projects/{project_id}")).json()["project"]
    listed = shown["public_keys" if kind == "public" else "secret_keys"]
    assert len(listed) == 2 and listed[0]["expires_at"] is not None and listed[1]["expires_at"] is None


async def test_rotation_without_grace_refuses_the_old_key_at_once(
    api: Api, http: httpx.AsyncClient, stack: Stack, project: dict[str, Any], project_id: str
) -> None:
    rotated = await api.call(
        "POST", f"/projects/{project_id}/keys/rotate", {"kind": "secret", "grace_seconds": 0}
    )
    assert rotated.status_code == 200

    async def old_status() -> int:
        return await edge_status(http, stack, project["secret_key"])

    assert await eventually(old_status, lambda s: s == 401, timeout=5) == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "private"}, "kind"),
        ({"kind": "public", "grace_seconds": -1}, "grace_seconds"),
        ({"x": 1}, "x"),
    ],
)
async def test_invalid_rotations(
    api: Api, project: dict[str, Any], project_id: str, body: Any, field: str
) -> None:
    response = await api.call("POST", f"/projects/{project_id}/keys/rotate", body)
    assert response.status_code == 400
    assert response.json()["field"] == field


async def test_delete_disables_and_the_edge_refuses_its_keys(
    api: Api, http: httpx.AsyncClient, stack: Stack, project: dict[str, Any], project_id: str
) -> None:
    response = await api.call("DELETE", f"/projects/{project_id}")
    assert response.status_code == 200
    assert response.json()["project"]["enabled"] is False

    async def status() -> int:
        return await edge_status(http, stack, project["secret_key"])

    assert await eventually(status, lambda s: s == 403, timeout=5) == 403
    enabled = await api.call("PATCH", f"/projects/{project_id}", {"enabled": True})
    assert enabled.json()["project"]["enabled"] is True
    assert await eventually(status, lambda s: s == 200, timeout=5) == 200


async def test_purge_needs_confirmation_then_removes_everything(
    api: Api, http: httpx.AsyncClient, stack: Stack, project: dict[str, Any], project_id: str
) -> None:
    headers = basic_auth(project["secret_key"])
    for i in range(3):
        sent = await http.post(
            f"{stack.edge_url}/v1/track", json=track_event(messageId=f"p{i}"), headers=headers
        )
        assert sent.status_code == 200
    assert stack.nats is not None and stack.clickhouse is not None
    js = stack.nats.jetstream()
    clickhouse = stack.clickhouse

    async def rows() -> int:
        return int(clickhouse.query(f"SELECT count() FROM hw_{project_id}.events").result_rows[0][0])

    await eventually(rows, lambda n: n == 3, timeout=10)

    refused = await api.call("DELETE", f"/projects/{project_id}?purge=true")
    assert refused.status_code == 400
    assert refused.json()["code"] == "confirmation_required"
    wrong = await api.call("DELETE", f"/projects/{project_id}?purge=true&confirm=someone_else")
    assert wrong.status_code == 400
    misspelt = await api.call("DELETE", f"/projects/{project_id}?purge=true", {"confrim": project_id})
    assert misspelt.status_code == 400 and misspelt.json()["field"] == "confrim", misspelt.text
    assert await rows() == 3  # nothing of it was purged

    purged = await api.call("DELETE", f"/projects/{project_id}?purge=true", {"confirm": project_id})
    assert purged.status_code == 200, purged.text
    assert purged.json() == {
        "id": project_id,
        "purged": True,
        "messages_purged": 3,
        "database_dropped": f"hw_{project_id}",
    }
    info = await js.stream_info(EVENTS_STREAM, subjects_filter=events_subject(project_id))
    assert (info.state.subjects or {}).get(events_subject(project_id), 0) == 0
    databases = {row[0] for row in clickhouse.query("SHOW DATABASES").result_rows}
    assert f"hw_{project_id}" not in databases
    assert (await api.call("GET", f"/projects/{project_id}")).status_code == 404
    assert await edge_status(http, stack, project["secret_key"]) in (401, 403)
    # The id can be used again.
    again = await api.call("POST", "/projects", {"id": project_id})
    assert again.status_code == 201


async def test_idempotent_create_returns_the_first_answer(api: Api, project_id: str) -> None:
    key = str(uuid.uuid4())
    body = {"id": project_id, "allowed_origins": [ORIGIN]}
    first = await api.call("POST", "/projects", body, **{"Idempotency-Key": key})
    again = await api.call("POST", "/projects", body, **{"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()  # the same secret key, shown again to the same caller
    assert again.headers["Idempotent-Replayed"] == "true"
    other_body = await api.call("POST", "/projects", {**body, "name": "x"}, **{"Idempotency-Key": key})
    assert other_body.status_code == 422
    assert other_body.json()["code"] == "idempotency_key_reused"
    without_key = await api.call("POST", "/projects", body)
    assert without_key.status_code == 409


async def _keys_of(kv: KeyValue) -> list[str]:
    """The bucket's keys. nats-py lists them through a watcher that, on a loaded machine, can
    finish before the first entry reaches it and raise NoKeysError on a bucket that has one: the
    record is stored before the 201, so ask again for a while rather than read that as empty."""
    for _ in range(50):
        try:
            return await kv.keys()
        except NoKeysError:
            await asyncio.sleep(0.1)
    return await kv.keys()


async def test_the_idempotency_bucket_says_nothing_without_the_server_secret(
    api: Api, stack: Stack, project_id: str
) -> None:
    """Whoever reads the bucket (a NATS user, a backup) and guesses an Idempotency-Key can neither
    find its record nor decrypt the secret key in it: both need a secret of the control plane."""
    key = "guessable-key-1"
    created = await api.call("POST", "/projects", {"id": project_id}, **{"Idempotency-Key": key})
    assert created.status_code == 201
    assert stack.nats is not None
    kv = await stack.nats.jetstream().key_value("HW_IDEMPOTENCY")
    plain_lookup = "create." + hashlib.sha256(b"lookup:" + key.encode()).hexdigest()
    stored = await _keys_of(kv)
    assert stored and plain_lookup not in stored
    for record_key in stored:
        entry = await kv.get(record_key)
        assert entry.value is not None
        record = orjson.loads(entry.value)
        cipher = AESGCM(hashlib.sha256(b"encrypt:" + key.encode()).digest())
        with pytest.raises(InvalidTag):
            cipher.decrypt(bytes.fromhex(record["nonce"]), bytes.fromhex(record["answer"]), None)


async def test_concurrent_idempotent_retries_create_once(api: Api, project_id: str) -> None:
    key = str(uuid.uuid4())
    body = {"id": project_id}
    answers = await asyncio.gather(
        *(api.call("POST", "/projects", body, **{"Idempotency-Key": key}) for _ in range(4))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["secret_key"] for a in answers}) == 1


async def test_list_is_paginated(api: Api, project_id: str) -> None:
    ids = [f"{project_id}_{i}" for i in range(5)]
    for new_id in ids:
        assert (await api.call("POST", "/projects", {"id": new_id})).status_code == 201
    seen: list[str] = []
    after: str | None = project_id
    while after is not None:
        page = await api.call("GET", f"/projects?limit=2&after={after}")
        assert page.status_code == 200
        batch = [p["id"] for p in page.json()["projects"] if p["id"].startswith(project_id)]
        assert len(page.json()["projects"]) <= 2
        seen += batch
        after = page.json()["next_after"]
        if not batch:
            break
    assert seen == ids
    assert (await api.call("GET", "/projects?limit=0")).status_code == 400


async def test_every_change_is_audited_without_secrets(
    api: Api, stack: Stack, project: dict[str, Any], project_id: str
) -> None:
    await api.call("PATCH", f"/projects/{project_id}", {"name": "Audited"})
    await api.call("POST", f"/projects/{project_id}/keys/rotate", {"kind": "secret", "grace_seconds": 0})
    await api.call("DELETE", f"/projects/{project_id}")
    assert stack.nats is not None
    js = stack.nats.jetstream()
    subscription = await js.pull_subscribe(AUDIT_SUBJECT, stream=AUDIT_STREAM)
    messages = await subscription.fetch(1000, timeout=2)
    records = [orjson.loads(m.data) for m in messages]
    mine = [r for r in records if r["project"] == project_id]
    assert [r["action"] for r in mine] == [
        "project.create",
        "project.update",
        "project.rotate_key",
        "project.disable",
    ]
    assert {r["actor"] for r in mine} == {"tests"}
    assert mine[1]["details"]["changed"] == ["name"]
    raw = b"".join(m.data for m in messages)
    assert project["secret_key"].encode() not in raw
    assert project["public_key"].encode() not in raw
