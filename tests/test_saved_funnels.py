"""Saved funnels (docs/funnels.md, "Saved funnels") against real NATS (the HW_FUNNELS KV bucket,
the audit stream) and the embedded ClickHouse: CRUD, order, If-Match, the limit, refusals, audit
records, purge, a saved funnel's run equal to the ad-hoc query, and `headwater funnels`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from hw_testing import (
    ADMIN_TOKEN,
    StackFactory,
    admin_headers,
    basic_auth,
    cli_env,
    create_project,
    eventually,
    run_cli,
    stored_copies,
)

from headwater.control.audit import AUDIT_STREAM, AUDIT_SUBJECT
from headwater.control.saved_funnels import FUNNELS_BUCKET, MAX_SAVED_FUNNELS
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

NOW = datetime.now(UTC).replace(microsecond=0)
BASE = NOW - timedelta(hours=3)
STEPS = [{"kind": "page", "value": "/pric*"}, {"kind": "event", "value": "Signed Up"}]
DEFINITION: dict[str, Any] = {"steps": STEPS, "window": {"value": 1, "unit": "hour"}}


class Api:
    def __init__(self, http: httpx.AsyncClient, stack: Stack, project_id: str) -> None:
        self.http = http
        self.base = f"{stack.control_url}/v1/projects/{project_id}/funnels"

    async def call(
        self, method: str, path: str = "", body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.http.request(
            method, self.base + path, json=body, headers={**admin_headers(), **(headers or {})}
        )

    async def save(self, name: str, **definition: Any) -> dict[str, Any]:
        response = await self.call("POST", "", {"name": name, **DEFINITION, **definition})
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack(control=True)


@pytest.fixture
async def api(stack: Stack, http: httpx.AsyncClient, project_id: str) -> Api:
    await create_project(http, stack, project_id)
    return Api(http, stack, project_id)


async def audit_records(stack: Stack, project_id: str) -> list[dict[str, Any]]:
    assert stack.nats is not None
    subscription = await stack.nats.jetstream().pull_subscribe(AUDIT_SUBJECT, stream=AUDIT_STREAM)
    messages = await subscription.fetch(1000, timeout=2)
    records = [orjson.loads(m.data) for m in messages]
    return [r for r in records if r["project"] == project_id and r["action"].startswith("funnel.")]


async def test_optional_steps_and_step_windows_are_kept(api: Api) -> None:
    plans = {"kind": "event", "value": "Viewed Plans", "filters": [], "optional": True, "window": None}
    within = {"value": 30, "unit": "minute"}
    steps = [STEPS[0], plans, {**STEPS[1], "window": within}]
    saved = await api.save("Stepped", steps=steps)
    shown = await api.call("GET", f"/{saved['id']}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["steps"] == [
        {**STEPS[0], "filters": [], "optional": False, "window": None},
        plans,
        {**STEPS[1], "filters": [], "optional": False, "window": within},
    ]
    refused = await api.call("POST", "", {**DEFINITION, "name": "Bad", "steps": [STEPS[0], plans, plans]})
    assert (refused.status_code, refused.json()["field"]) == (400, "steps[2].optional"), refused.text


async def test_crud_round_trip_order_if_match_and_audit(stack: Stack, api: Api, project_id: str) -> None:
    breakdown = {"column": "utm_source", "attribution": "last", "limit": 5}
    filters = [{"key": "country", "op": "neq", "value": "FR"}]
    first = await api.save("  Pricing  ", order="strict", breakdown=breakdown, filters=filters)
    assert len(first["id"]) == 12 and first["id"].isalnum() and first["id"].islower()
    assert first == {
        "id": first["id"], "name": "Pricing",
        "steps": [{**s, "filters": [], "optional": False, "window": None} for s in STEPS],
        "window": {"value": 1, "unit": "hour"}, "order": "strict", "breakdown": breakdown,
        "filters": filters, "exclusions": [], "unit": "people", "include_bots": False,
        "created_at": first["created_at"],
        "updated_at": first["created_at"], "revision": first["revision"],
    }  # fmt: skip
    second = await api.save("Activation")
    third = await api.save("Activation")
    assert second["breakdown"] is None and second["filters"] == [] and second["order"] == "ordered"

    # Listed by name, then id.
    listed = await api.call("GET")
    assert listed.status_code == 200, listed.text
    ids = [f["id"] for f in listed.json()["funnels"]]
    assert ids == [*sorted([second["id"], third["id"]]), first["id"]]
    assert listed.json()["funnels"][-1] == first

    shown = await api.call("GET", f"/{first['id']}")
    assert shown.status_code == 200 and shown.json() == first
    assert shown.headers["ETag"] == f'"{first["revision"]}"'

    # Replaced with the right revision; then the old revision is refused with 412.
    replaced = await api.call(
        "PUT",
        f"/{first['id']}",
        {"name": "Pricing v2", **DEFINITION},
        {"If-Match": f'"{first["revision"]}"'},
    )
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["name"], body["order"], body["breakdown"], body["created_at"]) == (
        "Pricing v2", "ordered", None, first["created_at"],
    )  # fmt: skip
    assert body["revision"] > first["revision"] and body["updated_at"] >= first["updated_at"]
    stale = await api.call(
        "PUT", f"/{first['id']}", {"name": "lost", **DEFINITION}, {"If-Match": f'"{first["revision"]}"'}
    )
    assert stale.status_code == 412 and stale.json()["code"] == "revision_mismatch"
    stale_delete = await api.call("DELETE", f"/{first['id']}", headers={"If-Match": f'"{first["revision"]}"'})
    assert stale_delete.status_code == 412
    # Without If-Match, the change lands on the newest revision.
    renamed = await api.call("PUT", f"/{first['id']}", {"name": "Pricing v3", **DEFINITION})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Pricing v3"
    # The same content again: no new revision, no audit record.
    same = await api.call("PUT", f"/{first['id']}", {"name": "Pricing v3", **DEFINITION})
    assert same.json()["revision"] == renamed.json()["revision"]

    deleted = await api.call("DELETE", f"/{second['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await api.call("GET", f"/{second['id']}")
    assert gone.status_code == 404 and gone.json()["code"] == "funnel_not_found"
    assert (await api.call("DELETE", f"/{second['id']}")).status_code == 404
    assert [f["id"] for f in (await api.call("GET")).json()["funnels"]] == [third["id"], first["id"]]

    records = await audit_records(stack, project_id)
    assert [(r["action"], r["details"]["funnel_id"], r["details"]["name"]) for r in records] == [
        ("funnel.create", first["id"], "Pricing"),
        ("funnel.create", second["id"], "Activation"),
        ("funnel.create", third["id"], "Activation"),
        ("funnel.update", first["id"], "Pricing v2"),
        ("funnel.update", first["id"], "Pricing v3"),
        ("funnel.delete", second["id"], "Activation"),
    ]
    assert {r["actor"] for r in records} == {"tests"}
    assert records[3]["details"]["changed"] == ["breakdown", "filters", "name", "order"]


async def test_unknown_projects_funnels_and_missing_tokens(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    unknown = Api(http, stack, project_id)
    body = {"name": "x", **DEFINITION}
    run = {"from": BASE.isoformat(), "to": NOW.isoformat()}
    for method, path, sent in (
        ("GET", "", None),
        ("POST", "", body),
        ("GET", "/aaaaaaaaaaaa", None),
        ("PUT", "/aaaaaaaaaaaa", body),
        ("DELETE", "/aaaaaaaaaaaa", None),
        ("POST", "/aaaaaaaaaaaa/query", run),
        ("POST", "/aaaaaaaaaaaa/trend", run),
        ("POST", "/aaaaaaaaaaaa/anomalies", run),
    ):
        response = await unknown.call(method, path, sent)
        assert (response.status_code, response.json()["code"]) == (404, "project_not_found"), (method, path)

    await create_project(http, stack, project_id)
    for method, path, sent in (
        ("GET", "/aaaaaaaaaaaa", None),
        ("PUT", "/aaaaaaaaaaaa", body),
        ("DELETE", "/aaaaaaaaaaaa", None),
        ("POST", "/aaaaaaaaaaaa/query", run),
        ("POST", "/aaaaaaaaaaaa/trend", run),
        ("POST", "/aaaaaaaaaaaa/anomalies", run),
    ):
        response = await unknown.call(method, path, sent)
        assert (response.status_code, response.json()["code"]) == (404, "funnel_not_found"), (method, path)
    # Not an id at all: no such route. `funnels/query` stays the ad-hoc query.
    assert (await unknown.call("GET", "/Not-An-Id")).json()["code"] == "not_found"
    assert (await unknown.call("GET", "/query")).status_code == 405
    adhoc = await unknown.call("POST", "/query", {**DEFINITION, **run})
    assert adhoc.status_code == 200, adhoc.text

    saved = await unknown.save("mine")
    for method, path in (
        ("GET", ""),
        ("POST", ""),
        ("GET", f"/{saved['id']}"),
        ("DELETE", f"/{saved['id']}"),
    ):
        response = await http.request(method, unknown.base + path, json=body)
        assert (response.status_code, response.json()["code"]) == (401, "missing_admin_token")
    assert (await unknown.call("GET", f"/{saved['id']}")).status_code == 200  # still there


BAD_DEFINITIONS: list[tuple[dict[str, Any], str]] = [
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"steps": STEPS[:1]}, "steps"),
    ({"steps": [{"kind": "click", "value": "x"}, *STEPS]}, "steps[0].kind"),
    ({"steps": [{"kind": "event", "value": ""}, *STEPS]}, "steps[0].value"),
    ({"window": {"value": 0}}, "window.value"),
    ({"window": {"value": 400, "unit": "day"}}, "window"),
    ({"order": "sideways"}, "order"),
    ({"from": NOW.isoformat()}, "from"),  # a time range is given when the funnel runs
    ({"people": {"step": 2, "status": "dropped"}}, "people"),
    ({"breakdown": {"column": "properties"}}, "breakdown.column"),
    ({"breakdown": {"column": "os", "limit": 101}}, "breakdown.limit"),
    ({"filters": [{"key": "country", "op": "lt", "value": 3}]}, "filters[0].value"),
    ({"filters": [{"key": "message_id", "op": "eq", "value": "x"}]}, "filters[0].key"),
    (
        {"steps": [{**STEPS[0], "filters": [{"key": "properties.a", "op": "gt"}]}, STEPS[1]]},
        "steps[0].filters[0].value",
    ),
    (
        {
            "steps": [
                STEPS[0],
                {**STEPS[1], "filters": [{"key": "properties.a", "op": "regex", "value": "(?=p)"}]},
            ]
        },
        "steps[1].filters[0].value",
    ),
    (
        {"order": "unordered", "exclusions": [{"kind": "event", "value": "X", "from_step": 1, "to_step": 2}]},
        "exclusions",
    ),
]


async def test_bad_definitions_are_refused_naming_the_field(api: Api) -> None:
    saved = await api.save("good")
    for change, field in BAD_DEFINITIONS:
        body = {"name": "a funnel", **DEFINITION, **change}
        for method, path in (("POST", ""), ("PUT", f"/{saved['id']}")):
            response = await api.call(method, path, body)
            assert response.status_code == 400, (change, response.text)
            assert (response.json()["code"], response.json()["field"]) == ("invalid_field", field), change
    # The ad-hoc query names the same fields for the same definitions.
    run = {"from": BASE.isoformat(), "to": NOW.isoformat()}
    for change, field in BAD_DEFINITIONS[3:9] + BAD_DEFINITIONS[11:]:
        response = await api.call("POST", "/query", {**DEFINITION, **run, **change})
        assert response.json()["field"] == field, change
    for body, field in (
        ({"from": NOW.isoformat(), "to": BASE.isoformat()}, "to"),
        ({**run, "people": {"step": 3, "status": "converted"}}, "people.step"),
        ({**run, "steps": STEPS}, "steps"),
        ({"to": NOW.isoformat()}, "from"),
    ):
        response = await api.call("POST", f"/{saved['id']}/query", body)
        assert (response.status_code, response.json()["field"]) == (400, field), body
    assert (await api.call("GET", f"/{saved['id']}")).json() == saved  # refusals changed nothing


async def test_a_project_keeps_at_most_100_saved_funnels(stack: Stack, api: Api, project_id: str) -> None:
    for number in range(MAX_SAVED_FUNNELS - 3):
        await api.save(f"funnel {number:03}")
    # Concurrent creates for the last 3 places: exactly 3 land, whatever the interleaving.
    racing = await asyncio.gather(
        *(api.call("POST", "", {"name": f"racer {n}", **DEFINITION}) for n in range(6))
    )
    assert sorted(r.status_code for r in racing) == [201] * 3 + [409] * 3
    refused = [r.json() for r in racing if r.status_code == 409]
    assert {r["code"] for r in refused} == {"funnel_limit_reached"}
    listed = (await api.call("GET")).json()["funnels"]
    assert len(listed) == MAX_SAVED_FUNNELS
    assert (await api.call("DELETE", f"/{listed[0]['id']}")).status_code == 204
    assert (await api.call("POST", "", {"name": "one more", **DEFINITION})).status_code == 201
    assert (await api.call("POST", "", {"name": "too many", **DEFINITION})).status_code == 409

    # A create that stopped between claiming its place and writing the funnel (a crash): the place
    # is not listed, and it is reclaimed once the index is full.
    assert stack.nats is not None
    kv = await stack.nats.jetstream().key_value(FUNNELS_BUCKET)
    await kv.delete(f"{project_id}.{listed[1]['id']}")  # the funnel gone, its id still in the index
    assert len(orjson.loads((await kv.get(project_id)).value or b"")) == MAX_SAVED_FUNNELS
    assert len((await api.call("GET")).json()["funnels"]) == MAX_SAVED_FUNNELS - 1
    assert (await api.call("POST", "", {"name": "reclaimed", **DEFINITION})).status_code == 201
    assert len(orjson.loads((await kv.get(project_id)).value or b"")) == MAX_SAVED_FUNNELS
    assert (await api.call("POST", "", {"name": "too many", **DEFINITION})).status_code == 409


async def test_racing_updates_with_the_same_if_match_one_gets_412(api: Api) -> None:
    saved = await api.save("raced")
    revision = saved["revision"]
    for attempt in range(5):
        answers = await asyncio.gather(
            *(
                api.call("PUT", f"/{saved['id']}", {"name": f"{attempt} by {who}", **DEFINITION},
                         {"If-Match": f'"{revision}"'})
                for who in ("a", "b")
            )
        )  # fmt: skip
        assert sorted(a.status_code for a in answers) == [200, 412], [a.text for a in answers]
        winner = next(a.json() for a in answers if a.status_code == 200)
        assert (await api.call("GET", f"/{saved['id']}")).json() == winner
        revision = winner["revision"]


async def test_purge_removes_the_project_s_saved_funnels(
    stack: Stack, api: Api, http: httpx.AsyncClient, project_id: str
) -> None:
    other = f"{project_id}_other"
    await create_project(http, stack, other)
    kept = await Api(http, stack, other).save("kept")
    for name in ("a", "b"):
        await api.save(name)
    purged = await http.delete(
        f"{stack.control_url}/v1/projects/{project_id}",
        params={"purge": "true", "confirm": project_id},
        headers=admin_headers(),
    )
    assert purged.status_code == 200, purged.text
    assert stack.nats is not None
    js = stack.nats.jetstream()
    info = await js.stream_info(
        f"KV_{FUNNELS_BUCKET}", subjects_filter=f"$KV.{FUNNELS_BUCKET}.{project_id}.>"
    )
    assert not info.state.subjects  # nothing left under the project, not even a marker
    assert (await api.call("GET")).status_code == 404
    # A new project of the same id starts without saved funnels; the other project keeps its own.
    await create_project(http, stack, project_id)
    assert (await api.call("GET")).json() == {"funnels": []}
    assert (await Api(http, stack, other).call("GET")).json()["funnels"] == [kept]


def pricing(user: str, minutes: float, message_id: str, source: str) -> dict[str, Any]:
    page = {"path": "/pricing", "url": "https://shop.example/pricing"}
    return {"type": "page", "userId": user, "messageId": message_id,
            "timestamp": (BASE + timedelta(minutes=minutes)).isoformat(), "properties": page,
            "context": {"page": page, "campaign": {"source": source}}}  # fmt: skip


def signed_up(user: str, minutes: float, message_id: str, plan: str) -> dict[str, Any]:
    when = (BASE + timedelta(minutes=minutes)).isoformat()
    return {"type": "track", "event": "Signed Up", "userId": user, "messageId": message_id,
            "timestamp": when, "properties": {"plan": plan}}  # fmt: skip


EVENTS = [
    pricing("u1", 0, "e1", "news"), signed_up("u1", 5, "e2", "pro"),
    pricing("u2", 0, "e3", "news"),
    pricing("u3", 10, "e4", "ads"), signed_up("u3", 100, "e5", "team"),
    pricing("u5", 20, "e7", "ads"), signed_up("u5", 21, "e8", "pro"),
    pricing("u6", 30, "e9", "ads"), signed_up("u6", 50, "e10", "free"),
]  # fmt: skip


async def test_a_saved_funnel_answers_as_the_ad_hoc_query_and_the_cli(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(edge=True, control=True, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    response = await http.post(f"{stack.edge_url}/v1/batch", json={"batch": EVENTS}, headers=basic_auth(key))
    assert response.status_code == 200, response.text
    await eventually(lambda: stored_copies(stack, project_id), lambda copies: len(copies) == len(EVENTS))

    api = Api(http, stack, project_id)
    paid = {"key": "properties.plan", "op": "in", "value": ["pro", "team"]}
    definition = {
        "steps": [STEPS[0], {**STEPS[1], "filters": [paid]}],
        "window": {"value": 2, "unit": "hour"},
        "breakdown": {"column": "utm_source", "attribution": "first", "limit": 10},
        "filters": [{"key": "properties.plan", "op": "neq", "value": "enterprise"}],
    }  # fmt: skip
    saved = await api.save("Pricing to paid", **definition)
    window = {"from": (BASE - timedelta(hours=1)).isoformat(), "to": NOW.isoformat()}
    for extra in (
        {},
        {"people": {"step": 2, "status": "dropped"}},
        {"people": {"step": 2, "status": "converted"}},
    ):
        ran = await api.call("POST", f"/{saved['id']}/query", {**window, **extra})
        assert ran.status_code == 200, ran.text
        adhoc = await api.call("POST", "/query", {**definition, **window, **extra})
        assert adhoc.status_code == 200, adhoc.text
        assert ran.json() == adhoc.json()
    answer = ran.json()
    # The daily trend: the ad-hoc trend of the definition, less the breakdown a trend does not have.
    daily = await api.call("POST", f"/{saved['id']}/trend", window)
    assert daily.status_code == 200, daily.text
    trend_body = {k: v for k, v in definition.items() if k != "breakdown"}
    adhoc_daily = await api.call("POST", "/trend", {**trend_body, **window})
    assert adhoc_daily.status_code == 200, adhoc_daily.text
    assert daily.json() == adhoc_daily.json()
    assert sum(day["steps"][0]["count"] for day in daily.json()["days"]) == 5
    assert [s["count"] for s in answer["steps"]] == [5, 3]  # u1, u3 (90 min), u5; u6's plan is free
    assert answer["people"]["people"] == ["u1", "u3", "u5"]

    # The CLI: save, list, show, run (the same table as `headwater funnel`), delete.
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    paid_text = 'properties.plan in ["pro", "team"]'
    where = ("--control-url", str(stack.control_url), "--project", project_id)
    save = await run_cli(
        "funnels", "save", *where, "--name", "From the CLI", "--step", "page:/pric*",
        "--step", "event:Signed Up", "--window", "2h", "--step-filter", "2", paid_text,
        "--filter", "properties.plan!=enterprise", "--breakdown", "utm_source", "--json", env=env,
    )  # fmt: skip
    from_cli = save.json()
    assert {k: from_cli[k] for k in ("steps", "filters", "breakdown")} == {
        k: saved[k] for k in ("steps", "filters", "breakdown")
    }
    assert from_cli["window"] == {"value": 7200, "unit": "second"}
    # The definition options are `headwater funnel`'s own: exclusions and the unit too.
    by_visit = await run_cli(
        "funnels", "save", *where, "--name", "By visit", "--step", "page:/pric*", "--step", "event:Signed Up",
        "--unit", "sessions", "--exclude", "1", "2", "event:Closed Tab", "--json", env=env,
    )  # fmt: skip
    assert (by_visit.json()["unit"], by_visit.json()["exclusions"]) == (
        "sessions",
        [{"kind": "event", "value": "Closed Tab", "filters": [], "from_step": 1, "to_step": 2}],
    )
    assert (await run_cli("funnels", "delete", *where, by_visit.json()["id"], env=env)).code == 0
    listed = await run_cli("funnels", "list", *where, env=env)
    assert listed.code == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "name", "steps"]
    assert lines[1].startswith(from_cli["id"]) and "From the CLI" in lines[1]
    assert lines[2].startswith(saved["id"]) and "Pricing to paid" in lines[2]
    shown = await run_cli("funnels", "show", *where, saved["id"], env=env)
    assert shown.code == 0 and "Pricing to paid" in shown.stdout and "utm_source" in shown.stdout
    times = ("--from", window["from"], "--to", window["to"])
    run_json = await run_cli("funnels", "run", *where, from_cli["id"], *times, "--json", env=env)
    assert run_json.json() == {**answer, "people": None}
    table = await run_cli("funnels", "run", *where, from_cli["id"], *times, env=env)
    assert table.code == 0, table.stderr
    adhoc_table = await run_cli(
        "funnel", *where, "--step", "page:/pric*", "--step", "event:Signed Up", "--window", "2h",
        "--step-filter", "2", paid_text, "--filter", "properties.plan!=enterprise",
        "--breakdown", "utm_source", *times, env=env,
    )  # fmt: skip
    assert table.stdout == adhoc_table.stdout
    trend_table = await run_cli("funnels", "run", *where, from_cli["id"], *times, "--trend", env=env)
    adhoc_trend = await run_cli(
        "funnel", *where, "--step", "page:/pric*", "--step", "event:Signed Up", "--window", "2h",
        "--step-filter", "2", paid_text, "--filter", "properties.plan!=enterprise", "--trend", *times,
        env=env,
    )  # fmt: skip
    assert trend_table.code == 0 and adhoc_trend.code == 0, trend_table.stderr + adhoc_trend.stderr
    assert trend_table.stdout == adhoc_trend.stdout
    assert "utm_source = 'ads'" in table.stdout
    replaced = await run_cli(
        "funnels", "save", *where, "--replace", from_cli["id"], "--if-match", "1", "--name", "x",
        "--step", "event:a", "--step", "event:b", env=env,
    )  # fmt: skip
    assert replaced.code != 0 and "revision_mismatch" in replaced.stderr
    deleted = await run_cli("funnels", "delete", *where, from_cli["id"], env=env)
    assert deleted.code == 0, deleted.stderr
    missing = await run_cli("funnels", "show", *where, from_cli["id"], env=env)
    assert missing.code != 0 and "funnel_not_found" in missing.stderr
