"""Anonymisation rules end to end: set through the control API, applied by the consumer to events
sent through the edge, over real NATS and the embedded ClickHouse; the preview's answer equals the
stored row, and the project's hash key never shows in an answer or an audit record; a replay
applies the rules of its day with the project's key."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
from clickhouse_connect.driver.client import Client
from hw_testing import admin_headers, basic_auth, create_project, eventually, query_rows
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from headwater.consumers.enrich import Enricher
from headwater.consumers.preview import JSON_COLUMNS, PREVIEW_COLUMNS
from headwater.consumers.replay import ClickHouseSink, Replay, ReplayWindow
from headwater.control.audit import AUDIT_STREAM, AUDIT_SUBJECT
from headwater.core.projects.project import utc_now_iso
from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import MSG_ID_HEADER, events_subject
from headwater.ops.runtime import Stack
from headwater.privacy.hashing import keyed_hash

pytestmark = pytest.mark.services

RULES: list[dict[str, Any]] = [
    {"path": "userId", "action": "hash"},
    {"path": "properties.email", "action": "hash"},
    {"path": "properties.user.address.street", "action": "drop"},
    {"path": "properties.card", "action": "mask", "keep_last": 4},
    {"path": "traits.*", "action": "redact", "detectors": ["email", "phone", "card", "iban", "ip"]},
    {"path": "context.page.url", "action": "redact", "detectors": ["url_secrets"]},
    {"path": "context.page.search", "action": "redact", "detectors": ["url_secrets"]},
    {"path": "context.page.referrer", "action": "redact", "keep_query": ["utm_source"]},
    {"path": "context.campaign.*", "action": "truncate", "length": 8},
    {"path": "properties.note", "action": "redact", "pattern": r"ORD-\d+", "placeholder": "[order]"},
]


def sample_event(message_id: str, user_id: str = "user-42") -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Checkout",
        "messageId": message_id,
        "userId": user_id,
        "anonymousId": "anon-1",
        "properties": {
            "email": "jane@example.com",
            "user": {"address": {"street": "Main St 1", "city": "Berlin"}},
            "card": "4111111111111111",
            "note": "about ORD-12345",
        },
        "traits": {"bio": "call +49 30 1234 5678 or mail jane@example.com, IBAN DE89370400440532013000"},
        "context": {
            "page": {
                "url": "https://shop.example/checkout?token=s3cr3t&step=2",
                "path": "/checkout",
                "search": "?token=s3cr3t&step=2",
                "referrer": "https://mail.example/open?u=jane%40example.com&utm_source=newsletter",
                "title": "Checkout",
            },
            "campaign": {"name": "winter-sale-2026", "source": "newsletter"},
        },
    }


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=True, control=True, consumer=True)


async def stored_row(
    http: httpx.AsyncClient, stack: Stack, project_id: str, message_id: str
) -> dict[str, Any]:
    columns = ", ".join(PREVIEW_COLUMNS)
    rows = await eventually(
        lambda: query_rows(
            http, stack, project_id, f"SELECT {columns} FROM events WHERE message_id = '{message_id}'"
        ),
        lambda rows: len(rows) == 1,
        timeout=15,
    )
    return {
        name: orjson.loads(value) if name in JSON_COLUMNS else value
        for name, value in zip(PREVIEW_COLUMNS, rows[0], strict=True)
    }


async def set_rules(
    http: httpx.AsyncClient, stack: Stack, project_id: str, rules: list[dict[str, Any]]
) -> dict[str, Any]:
    response = await http.patch(
        f"{stack.control_url}/v1/projects/{project_id}",
        json={"settings": {"anonymisation": {"rules": rules}}},
        headers=admin_headers(),
    )
    assert response.status_code == 200, response.text
    registry = stack.registry
    assert registry is not None

    async def applied() -> bool:
        project = registry.get(project_id)
        return project is not None and len(project.settings.anonymisation.rules) == len(rules)

    await eventually(applied, bool, timeout=10)
    return dict(response.json())


async def test_the_preview_equals_the_stored_row_and_the_key_is_never_shown(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    created = await create_project(http, stack, project_id, name="Private")
    answers: list[bytes] = [orjson.dumps(created)]
    patched = await set_rules(http, stack, project_id, RULES)
    answers.append(orjson.dumps(patched))
    assert patched["project"]["settings"]["anonymisation"]["rules"][0] == {"path": "userId", "action": "hash"}

    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    preview = await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/anonymisation/preview",
        json={"event": sample_event(first), "ip": "127.0.0.1"},
        headers=admin_headers(),
    )
    assert preview.status_code == 200, preview.text
    answers.append(preview.content)
    expected = preview.json()["stored"]
    changes = preview.json()["changes"]
    assert {"rule": 0, "path": "userId", "action": "hash"} in changes
    assert {"rule": 2, "path": "properties.user.address.street", "action": "drop"} in changes
    assert {"rule": 5, "path": "context.page.url", "action": "redact"} in changes

    secret = created["secret_key"]
    for message_id, user_id in ((first, "user-42"), (second, "user-42")):
        response = await http.post(
            f"{stack.edge_url}/v1/track", json=sample_event(message_id, user_id), headers=basic_auth(secret)
        )
        assert response.status_code == 200, response.text

    row = await stored_row(http, stack, project_id, first)
    assert row == expected
    # What the rules promise, in the stored row itself.
    assert "s3cr3t" not in str(row) and "jane" not in str(row) and "4111111111111111" not in str(row)
    assert row["page_url"] == "https://shop.example/checkout?step=2" and row["page_query"] == "step=2"
    assert row["referrer"] == "https://mail.example/open?utm_source=newsletter"
    assert row["utm_campaign"] == "winter-s" and row["utm_source"] == "newslett"
    assert row["properties"]["card"] == "************1111"
    assert row["traits"]["bio"] == "call [phone] or mail [email], IBAN [iban]"
    assert row["properties"]["note"] == "about [order]"
    # The same value hashes the same in every event (and joins), unreadable.
    again = await stored_row(http, stack, project_id, second)
    assert again["user_id"] == row["user_id"] != "user-42" and len(row["user_id"]) == 32
    assert again["properties"]["email"] == row["properties"]["email"]

    # The hash key: in the project's KV entry, and nowhere the API or the audit trail shows.
    assert stack.store is not None
    project, _ = await stack.store.get(project_id)
    key = project.anonymisation_key
    assert key is not None and len(key) == 32
    for path in (f"/v1/projects/{project_id}", "/v1/projects"):
        response = await http.get(f"{stack.control_url}{path}", headers=admin_headers())
        answers.append(response.content)
    assert stack.nats is not None
    subscription = await stack.nats.jetstream().pull_subscribe(AUDIT_SUBJECT, stream=AUDIT_STREAM)
    audit = b"".join(m.data for m in await subscription.fetch(1000, timeout=2))
    assert f'"project":"{project_id}"'.encode() in audit and b'"rules"' in audit
    for text in (*answers, audit):
        for form in (key, base64.b64encode(key), key.hex().encode(), b"anonymisation_key"):
            assert form not in text


async def test_a_preview_with_rules_to_try_stores_nothing_and_names_a_bad_rule(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    await create_project(http, stack, project_id, name="Try")
    url = f"{stack.control_url}/v1/projects/{project_id}/anonymisation/preview"
    event = {"event": "E", "userId": "u1", "properties": {"email": "a@example.com"}}
    tried = await http.post(
        url,
        json={"event": event, "rules": [{"path": "properties.email", "action": "mask"}]},
        headers=admin_headers(),
    )
    assert tried.status_code == 200, tried.text
    assert tried.json()["stored"]["properties"] == {"email": "*************"}
    assert tried.json()["stored"]["user_id"] == "u1"
    saved = await http.post(url, json={"event": event}, headers=admin_headers())
    assert (
        saved.json()["stored"]["properties"] == {"email": "a@example.com"} and saved.json()["changes"] == []
    )
    bad = await http.post(
        url,
        json={
            "event": event,
            "rules": [
                {"path": "userId", "action": "hash"},
                {"path": "traits.x", "action": "redact", "pattern": "(a"},
            ],
        },
        headers=admin_headers(),
    )
    assert bad.status_code == 400 and bad.json()["field"] == "rules[1].pattern", bad.text
    rows = await query_rows(http, stack, project_id, "SELECT count() FROM events")
    assert rows == [[0]]
    unknown = await http.post(
        f"{stack.control_url}/v1/projects/nope_{project_id[:20]}/anonymisation/preview",
        json={"event": event},
        headers=admin_headers(),
    )
    assert unknown.status_code == 404


async def test_a_rule_that_cannot_be_applied_is_refused_by_the_api_naming_it(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    await create_project(http, stack, project_id, name="Bad")
    response = await http.patch(
        f"{stack.control_url}/v1/projects/{project_id}",
        json={"settings": {"anonymisation": {"rules": [*RULES[:2], {"path": "email", "action": "drop"}]}}},
        headers=admin_headers(),
    )
    assert response.status_code == 400
    assert response.json()["field"] == "settings.anonymisation.rules[2].path"


async def test_a_project_older_than_hash_keys_gets_one_and_keeps_it(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    await create_project(http, stack, project_id, name="Old")
    assert stack.store is not None
    project, revision = await stack.store.get(project_id)
    await stack.store.update(replace(project, anonymisation_key=None), revision)  # as stored before keys
    url = f"{stack.control_url}/v1/projects/{project_id}/anonymisation/preview"
    body = {"event": {"userId": "u1"}, "rules": [{"path": "userId", "action": "hash"}]}
    first = await http.post(url, json=body, headers=admin_headers())
    assert first.status_code == 200, first.text
    project, _ = await stack.store.get(project_id)
    assert project.anonymisation_key is not None
    assert first.json()["stored"]["user_id"] == keyed_hash(project.anonymisation_key, "u1")
    second = await http.post(url, json=body, headers=admin_headers())
    assert second.json()["stored"]["user_id"] == first.json()["stored"]["user_id"]
    # A change through the API keeps the key (and gives one to a project without).
    await set_rules(http, stack, project_id, [{"path": "userId", "action": "hash"}])
    after, _ = await stack.store.get(project_id)
    assert after.anonymisation_key == project.anonymisation_key


async def test_a_replay_applies_todays_rules_with_the_projects_key(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, project_id: str
) -> None:
    event = {**sample_event("replayed-1"), "userId": "user-7"}
    envelope = Envelope(project_id, "replayed", utc_now_iso(), [event], "secret", "81.2.69.142")
    await js.publish(events_subject(project_id), envelope.encode(), headers={MSG_ID_HEADER: "replayed"})
    key = b"r" * 32
    settings = ProjectSettings().merged({"anonymisation": {"rules": RULES}})
    replay = Replay(
        nats_client,
        ReplayWindow(project_id),
        ClickHouseSink(clickhouse),
        Enricher(None),
        settings_of=lambda _project: settings,
        hash_key_of=lambda _project: key,
    )
    await replay.run()
    [(user_id, page_url, properties)] = clickhouse.query(
        f"SELECT user_id, page_url, properties FROM hw_{project_id}.events FINAL"
    ).result_rows
    assert user_id == keyed_hash(key, "user-7")
    assert page_url == "https://shop.example/checkout?step=2"
    assert orjson.loads(properties)["email"] == keyed_hash(key, "jane@example.com")
