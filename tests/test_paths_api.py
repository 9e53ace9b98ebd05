"""`POST /v1/projects/{id}/paths/query` end to end: events sent through the edge, stored by the
consumer, paths asked of the control plane (and by `headwater paths`) and answered as the reference
answers the same stored rows; and its refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
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

from headwater.analytics.funnels.definition import Step
from headwater.analytics.funnels.reference import FunnelEvent
from headwater.analytics.paths.definition import CleaningRule, Paths
from headwater.analytics.paths.graph import graph_of_paths
from headwater.analytics.paths.reference import person_paths
from headwater.control.paths import answer_of
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

NOW = datetime.now(UTC).replace(microsecond=0)
BASE = NOW - timedelta(hours=3)


def page(user: str, minutes: float, path: str, message_id: str) -> dict[str, Any]:
    when = BASE + timedelta(minutes=minutes)
    properties = {"path": path, "url": f"https://shop.example{path}"}
    return {"type": "page", "userId": user, "messageId": message_id, "timestamp": when.isoformat(),
            "properties": properties, "context": {"page": properties}}  # fmt: skip


def track(user: str, minutes: float, name: str, message_id: str) -> dict[str, Any]:
    when = BASE + timedelta(minutes=minutes)
    return {"type": "track", "event": name, "userId": user, "messageId": message_id,
            "timestamp": when.isoformat()}  # fmt: skip


EVENTS = [
    page("u1", 0, "/pricing", "e1"), page("u1", 1, "/users/7", "e2"), page("u1", 2, "/users/12", "e3"),
    track("u1", 3, "Signed Up", "e4"),
    page("u2", 0, "/pricing", "e5"), page("u2", 1, "/docs", "e6"),
    page("u3", 0, "/pricing", "e7"), page("u3", 1, "/users/9", "e8"), track("u3", 2, "Signed Up", "e9"),
    track("u4", 0, "Signed Up", "e10"),  # never on /pricing: no path from it
]  # fmt: skip
CLEANING = [{"regex": r"^/users/\d+", "replacement": "/users/:id"}]


def request(**overrides: Any) -> dict[str, Any]:
    return {"from": (BASE - timedelta(hours=1)).isoformat(), "to": NOW.isoformat(),
            "start": {"kind": "page", "value": "/pricing"}, "steps": 3, "cleaning": CLEANING,
            **overrides}  # fmt: skip


async def ask(http: httpx.AsyncClient, stack: Stack, project_id: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/paths/query", json=body, headers=admin_headers()
    )


def stored_rows(stack: Stack, project_id: str) -> list[FunnelEvent]:
    assert stack.clickhouse is not None
    columns = ", ".join(FunnelEvent.__dataclass_fields__)
    rows = stack.clickhouse.query(f"SELECT {columns} FROM hw_{project_id}.events").result_rows
    stored = []
    for row in rows:
        fields = dict(zip(FunnelEvent.__dataclass_fields__, row, strict=True))
        for name in ("timestamp", "received_at"):  # naive from the embedded engine
            fields[name] = fields[name].replace(tzinfo=UTC)
        stored.append(FunnelEvent(**fields))
    return stored


def node(node_id: str, people: int) -> dict[str, Any]:
    depth, kind, value = node_id.split(":", 2)
    return {"id": node_id, "depth": int(depth), "step": {"kind": kind, "value": value}, "people": people}


async def test_paths_over_events_sent_through_the_edge(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(edge=True, control=True, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    for _ in range(2):  # the second time a retry: the same messages again, stored twice
        response = await http.post(
            f"{stack.edge_url}/v1/batch", json={"batch": EVENTS}, headers=basic_auth(key)
        )
        assert response.status_code == 200, response.text
    await eventually(lambda: stored_copies(stack, project_id), lambda copies: len(copies) == len(EVENTS))

    response = await ask(http, stack, project_id, request())
    assert response.status_code == 200, response.text
    answer = response.json()
    # u1's two user pages are one step once cleaned; the heavier edges first, then by depth.
    assert answer == {
        "people": 3,
        "nodes": [
            node("1:page:/pricing", 3),
            node("2:page:/users/:id", 2),
            node("2:page:/docs", 1),
            node("3:event:Signed Up", 2),
        ],
        "edges": [
            {"source": "1:page:/pricing", "target": "2:page:/users/:id", "people": 2},
            {"source": "2:page:/users/:id", "target": "3:event:Signed Up", "people": 2},
            {"source": "1:page:/pricing", "target": "2:page:/docs", "people": 1},
        ],
    }
    # The same answer as the reference's over the rows the consumer stored (copies included).
    stored = await asyncio.to_thread(stored_rows, stack, project_id)
    paths = Paths(
        start=Step("page", "/pricing"), steps=3, cleaning=(CleaningRule(r"^/users/\d+", "/users/:id"),)
    )
    reference = graph_of_paths(paths, person_paths(paths, stored, BASE - timedelta(hours=1), NOW))
    assert answer == msgspec.to_builtins(answer_of(reference))

    # To an end point, events only: u1 and u3 and u4 signed up; u4 with nothing before.
    signed_up = {"kind": "event", "value": "Signed Up"}
    ending = await ask(
        http, stack, project_id, request(start=None, end=signed_up, include="events", cleaning=[])
    )
    assert ending.status_code == 200, ending.text
    assert ending.json() == {"people": 3, "nodes": [], "edges": []}
    ending = await ask(
        http, stack, project_id, request(start=None, end=signed_up, steps=2, edge_limit=1, cleaning=[])
    )
    assert ending.json()["edges"] == [
        {"source": "1:page:/users/12", "target": "2:event:Signed Up", "people": 1}
    ]  # no cleaning: /users/12 and /users/9 tie, and "/users/12" is first in byte order

    # The CLI, through the control API: the same answer, as JSON and as a table.
    cli = ("paths", "--control-url", str(stack.control_url), "--project", project_id,
           "--start", "page:/pricing", "--steps", "3", "--clean", r"^/users/\d+=>/users/:id",
           "--from", (BASE - timedelta(hours=1)).isoformat(), "--to", NOW.isoformat())  # fmt: skip
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    assert (await run_cli(*cli, "--json", env=env)).json() == answer
    table = await run_cli(*cli, env=env)
    assert table.code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["depth", "from", "to", "people", "share"]
    assert lines[1].split() == ["1→2", "page:/pricing", "page:/users/:id", "2", "66.7%"]
    assert lines[3].split() == ["1→2", "page:/pricing", "page:/docs", "1", "33.3%"]
    assert lines[-1] == "3 people with a path; 3 edges shown"
    refused = await run_cli(*cli, "--end", "event:Signed Up", env=env)
    assert refused.code != 0 and "--start and --end" in refused.stderr
    bad = await run_cli(*cli, "--clean", "(=>x", env=env)
    assert bad.code != 0 and "cleaning[1].regex" in bad.stderr


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cleaning": [{"regex": "(", "replacement": ""}]}, "cleaning[0].regex"),
        # Python's re reads it (a comment), re2 does not: ClickHouse's refusal, named.
        ({"cleaning": [*CLEANING, {"regex": "(?#x)a", "replacement": ""}]}, "cleaning[1].regex"),
        ({"cleaning": [{"regex": "(a)", "replacement": "\\2"}]}, "cleaning[0].replacement"),
        ({"cleaning": [{"regex": "", "replacement": ""}]}, "cleaning[0].regex"),
        ({"end": {"kind": "event", "value": "Signed Up"}}, "end"),
        ({"steps": 1}, "steps"),
        ({"steps": 11}, "steps"),
        ({"edge_limit": 0}, "edge_limit"),
        ({"edge_limit": 501}, "edge_limit"),
        ({"include": "events"}, "start"),
        ({"include": "all"}, "include"),
        ({"start": {"kind": "click", "value": "x"}}, "start.kind"),
        # A funnel step's filters are not a path point's: refused, not ignored.
        ({"start": {"kind": "event", "value": "x", "filters": []}}, "start.filters"),
        ({"from": NOW.isoformat(), "to": BASE.isoformat()}, "to"),
        ({"from": "2026-01-01T00:00:00"}, "from"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_paths_are_refused_naming_the_field(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str, body: dict[str, Any], field: str
) -> None:
    stack = await make_stack(control=True)
    await create_project(http, stack, project_id)
    response = await ask(http, stack, project_id, request(**body))
    assert response.status_code == 400, response.text
    assert (response.json()["code"], response.json()["field"]) == ("invalid_field", field)


async def test_unknown_projects_and_missing_tokens(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(control=True)
    assert (await ask(http, stack, project_id, request())).status_code == 404
    await create_project(http, stack, project_id)
    url = f"{stack.control_url}/v1/projects/{project_id}/paths/query"
    assert (await http.post(url, json=request())).status_code == 401
