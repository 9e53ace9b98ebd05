"""`POST /v1/projects/{id}/funnels/query` end to end: events sent through the edge, stored by the
consumer, a funnel asked of the control plane and answered as the reference answers the same
stored rows; and its refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hw_sessions import quick_sessionizer, send_events, sessionized_through_last_insert
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
from nats.js import JetStreamContext

from headwater.analytics.funnels.definition import Exclusion, Funnel, Step
from headwater.analytics.funnels.reference import FunnelEvent, SessionSpan, funnel_progress, session_of
from headwater.analytics.funnels.summary import summary_of_progress
from headwater.analytics.funnels.trend_reference import trend_of_events
from headwater.control.query import QueryLimits, ReadOnlyQueries
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

NOW = datetime.now(UTC).replace(microsecond=0)
BASE = NOW - timedelta(hours=3)


def pricing(user: str, minutes: float, message_id: str) -> dict[str, Any]:
    when = BASE + timedelta(minutes=minutes)
    url = "https://shop.example/pricing"
    page = {"path": "/pricing", "url": url}
    campaign = {"source": "newsletter" if user in ("u1", "u2") else "ads"}
    return {"type": "page", "userId": user, "messageId": message_id, "timestamp": when.isoformat(),
            "properties": page, "context": {"page": page, "campaign": campaign}}  # fmt: skip


def signed_up(user: str, minutes: float, message_id: str, plan: dict[str, Any]) -> dict[str, Any]:
    when = BASE + timedelta(minutes=minutes)
    return {"type": "track", "event": "Signed Up", "userId": user, "messageId": message_id,
            "timestamp": when.isoformat(), "properties": plan}  # fmt: skip


EVENTS = [
    pricing("u1", 0, "e1"), signed_up("u1", 5, "e2", {"plan": "pro", "seats": 3}),  # converts after 5 min
    pricing("u2", 0, "e3"),  # drops
    {"type": "track", "event": "Closed Tab", "userId": "u2", "messageId": "e9",
     "timestamp": (BASE + timedelta(minutes=30)).isoformat(), "properties": {"reason": "price"}},
    pricing("u3", 10, "e4"),
    signed_up("u3", 100, "e5", {"plan": "team", "seats": 40}),  # too late for a 1 h window
    signed_up("u4", 1, "e6", {}),  # never saw the first step: not in the funnel
    pricing("u5", 20, "e7"), signed_up("u5", 21, "e8", {"plan": "pro", "seats": 1.5}),  # after 1 min
]  # fmt: skip
STEPS = [{"kind": "page", "value": "/pric*"}, {"kind": "event", "value": "Signed Up"}]


async def ask(http: httpx.AsyncClient, stack: Stack, project_id: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/funnels/query", json=body, headers=admin_headers()
    )


def request(**overrides: Any) -> dict[str, Any]:
    return {"steps": STEPS, "window": {"value": 1, "unit": "hour"},
            "from": (BASE - timedelta(hours=1)).isoformat(), "to": NOW.isoformat(), **overrides}  # fmt: skip


async def test_a_funnel_over_events_sent_through_the_edge(
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
    steps = response.json()["steps"]
    assert [step["count"] for step in steps] == [4, 2]
    assert steps[1] == {
        "step": {**STEPS[1], "filters": [], "optional": False, "window": None}, "count": 2,
        "conversion_from_start": 0.5,
        "conversion_from_previous": 0.5,
        "dropped": 2, "median_ms": 5 * 60_000, "average_ms": 3 * 60_000, "p90_ms": 5 * 60_000,
    }  # fmt: skip
    assert steps[0]["median_ms"] is None and steps[0]["dropped"] == 0

    # The same answer as the reference's over the rows the consumer stored (copies included).
    stored = await asyncio.to_thread(stored_rows, stack, project_id)
    funnel = Funnel((Step("page", "/pric*"), Step("event", "Signed Up")), 3_600_000)
    progress = funnel_progress(funnel, stored, BASE - timedelta(hours=1), NOW)
    reference = summary_of_progress(funnel, progress)
    assert [(s["count"], s["dropped"], s["median_ms"]) for s in steps] == [
        (s.count, s.dropped, s.median_ms) for s in reference
    ]
    # Strict: nothing of u1, u3, u5 comes between their steps, so the same here.
    strict = await ask(http, stack, project_id, request(order="strict"))
    assert [step["count"] for step in strict.json()["steps"]] == [4, 2]
    wider = await ask(http, stack, project_id, request(window={"value": 2, "unit": "hour"}))
    assert [step["count"] for step in wider.json()["steps"]] == [4, 3]  # u3 after 90 minutes

    # The lists of people, a page at a time.
    async def page(status: str, limit: int = 10, after: str | None = None) -> dict[str, Any]:
        listed = await ask(
            http,
            stack,
            project_id,
            request(people={"step": 2, "status": status, "limit": limit, "after": after}),
        )
        assert listed.status_code == 200, listed.text
        return dict(listed.json()["people"])

    assert (await page("converted"))["people"] == ["u1", "u5"]
    assert await page("dropped") == {
        "step": 2,
        "status": "dropped",
        "people": ["u2", "u3"],
        "next_after": None,
    }
    first = await page("converted", limit=1)
    assert (first["people"], first["next_after"]) == (["u1"], "u1")
    second = await page("converted", limit=1, after="u1")
    assert (second["people"], second["next_after"]) == (["u5"], None)
    assert response.json()["people"] is None  # none asked for

    # Broken down by the campaign at the first step: ads (u3 dropped, u5 converted) and newsletter
    # (u1 converted, u2 dropped) tie, so byte order ranks them; with a limit of 1, the rest together.
    split = await ask(http, stack, project_id, request(breakdown={"column": "utm_source", "limit": 1}))
    assert split.status_code == 200, split.text
    groups = split.json()["breakdown"]
    assert [(group["value"], [step["count"] for step in group["steps"]]) for group in groups] == [
        ("ads", [2, 1]),
        (None, [2, 1]),
    ]
    assert groups[1]["steps"][1]["median_ms"] == 5 * 60_000  # u1's

    # Filters: on a step (the property typed: "3" is not 3), on every event, and a breakdown by a
    # property (integers by their digits; 1.5 is no value).
    def with_filters(*filters: dict[str, Any]) -> list[dict[str, Any]]:
        return [STEPS[0], {**STEPS[1], "filters": list(filters)}]

    two_hours = {"value": 2, "unit": "hour"}
    cases = [
        (request(steps=with_filters({"key": "properties.plan", "op": "eq", "value": "team"}),
                 window=two_hours), [4, 1]),
        (request(steps=with_filters({"key": "properties.seats", "op": "gt", "value": 2}), window=two_hours),
         [4, 2]),
        (request(steps=with_filters({"key": "properties.seats", "op": "eq", "value": "3"})), [4, 0]),
        (request(steps=with_filters({"key": "properties.plan", "op": "regex", "value": "^p.o$"})), [4, 2]),
        (request(filters=[{"key": "utm_source", "op": "eq", "value": "ads"}]), [2, 0]),
        (request(filters=[{"key": "properties.path", "op": "is_not_set"}]), [0, 0]),
    ]  # fmt: skip
    for body, counts in cases:
        filtered = await ask(http, stack, project_id, body)
        assert filtered.status_code == 200, filtered.text
        assert [step["count"] for step in filtered.json()["steps"]] == counts, body
    by_seats = await ask(
        http, stack, project_id, request(breakdown={"column": "properties.seats", "attribution": "last"})
    )
    assert [(group["value"], group["steps"][1]["count"]) for group in by_seats.json()["breakdown"]] == [
        ("", 1),  # u5 (1.5) and u2, u3 (no second step, so the first's: no seats)
        ("3", 1),
    ]
    unreadable = await ask(
        http,
        stack,
        project_id,
        request(steps=with_filters({"key": "properties.plan", "op": "regex", "value": "(?=p)"})),
    )
    assert unreadable.status_code == 400, unreadable.text
    assert unreadable.json()["field"] == "steps[1].filters[0].value"

    # The daily trend: as the reference's, day by day, over the stored rows.
    trend_body, trend_url = request(), f"{stack.control_url}/v1/projects/{project_id}/funnels/trend"
    trend = await http.post(trend_url, json=trend_body, headers=admin_headers())
    assert trend.status_code == 200, trend.text
    expected_days = trend_of_events(funnel, stored, BASE - timedelta(hours=1), NOW, datetime.now(UTC))
    assert [(day["date"], [step["count"] for step in day["steps"]]) for day in trend.json()["days"]] == [
        (day.day.isoformat(), [step.count for step in day.steps]) for day in expected_days
    ]
    assert sum(day["steps"][0]["count"] for day in trend.json()["days"]) == 4
    assert trend.json()["days"][-1]["complete"] is False  # entries of the last hour, a 1 h window
    long_ago = (NOW - timedelta(days=401)).isoformat()
    too_long = await http.post(trend_url, json={**trend_body, "from": long_ago}, headers=admin_headers())
    assert (too_long.status_code, too_long.json()["field"]) == (400, "to")

    # Exclusions: u2 closed the tab 30 minutes after pricing and never signed up, within the hour,
    # so their only attempt is void and they are not in the funnel; the same as the reference's.
    closed = {"kind": "event", "value": "Closed Tab", "from_step": 1, "to_step": 2}
    excluded = await ask(http, stack, project_id, request(exclusions=[closed]))
    assert excluded.status_code == 200, excluded.text
    assert [step["count"] for step in excluded.json()["steps"]] == [3, 2]
    excluding = Funnel(
        funnel.steps, funnel.window_ms, exclusions=(Exclusion(Step("event", "Closed Tab"), 1, 2),)
    )
    assert [step["count"] for step in excluded.json()["steps"]] == [
        s.count
        for s in summary_of_progress(
            excluding, funnel_progress(excluding, stored, BASE - timedelta(hours=1), NOW)
        )
    ]
    for reason, counts in (("price", [3, 2]), ("other", [4, 2])):
        only = {**closed, "filters": [{"key": "properties.reason", "op": "eq", "value": reason}]}
        answer = await ask(http, stack, project_id, request(exclusions=[only]))
        assert [step["count"] for step in answer.json()["steps"]] == counts, reason
    short = await ask(
        http, stack, project_id, request(exclusions=[closed], window={"value": 20, "unit": "minute"})
    )
    assert [step["count"] for step in short.json()["steps"]] == [4, 2]  # the tab closed after the window
    bad_regex = {**closed, "filters": [{"key": "properties.reason", "op": "regex", "value": "(?=p)"}]}
    refused_regex = await ask(http, stack, project_id, request(exclusions=[bad_regex]))
    assert refused_regex.status_code == 400, refused_regex.text
    assert refused_regex.json()["field"] == "exclusions[0].filters[0].value"

    # The CLI, through the control API: the same answer, as JSON and as a table.
    cli = ("funnel", "--control-url", str(stack.control_url), "--project", project_id,
           "--step", "page:/pric*", "--step", "event:Signed Up", "--window", "1h",
           "--from", (BASE - timedelta(hours=1)).isoformat(), "--to", NOW.isoformat())  # fmt: skip
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    assert (await run_cli(*cli, "--json", env=env)).json() == response.json()
    table = await run_cli(*cli, env=env)
    assert table.code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "step",
        "people",
        "of",
        "first",
        "of",
        "previous",
        "dropped",
        "median",
        "average",
        "p90",
    ]
    assert lines[2].split() == ["event:Signed", "Up", "2", "50.0%", "50.0%", "2", "5m", "3m", "5m"]
    split_table = await run_cli(*cli, "--breakdown", "utm_source", env=env)
    assert split_table.code == 0, split_table.stderr
    assert "utm_source = 'ads'" in split_table.stdout and "utm_source = 'newsletter'" in split_table.stdout
    pro = ("--step-filter", "2", 'properties.plan in ["pro", "free"]')
    for extra, counts in (((), ["2", "50.0%"]), (("--filter", "properties.plan!=pro"), ["0", "0.0%"])):
        filtered_table = await run_cli(*cli, *pro, *extra, env=env)
        assert filtered_table.code == 0, filtered_table.stderr
        assert filtered_table.stdout.splitlines()[2].split()[2:4] == counts
    trend_table = await run_cli(*cli, "--trend", env=env)
    assert trend_table.code == 0, trend_table.stderr
    trend_lines = [line.split() for line in trend_table.stdout.splitlines()]
    assert trend_lines[0] == ["day", "entered", "converted", "conversion"]
    assert [line[:3] for line in trend_lines[1:]] == [
        [day["date"], str(day["steps"][0]["count"]), str(day["steps"][1]["count"])]
        for day in trend.json()["days"]
    ]
    assert trend_lines[-1][-2:] == ["(in", "progress)"]
    for extra, count in (
        (("--exclude", "1", "2", "event:Closed Tab"), "3"),
        (
            ("--exclude", "1", "2", "event:Closed Tab", "--exclude-filter", "1", "properties.reason=other"),
            "4",
        ),
    ):
        excluded_table = await run_cli(*cli, *extra, env=env)
        assert excluded_table.code == 0, excluded_table.stderr
        assert excluded_table.stdout.splitlines()[1].split()[1] == count
    refused = await run_cli(*cli[:-4], "--step", "click:x", env=env)
    assert refused.code != 0 and "event:NAME or page:PATH" in refused.stderr


def viewed_plans(user: str, minutes: float, message_id: str) -> dict[str, Any]:
    when = BASE + timedelta(minutes=minutes)
    return {"type": "track", "event": "Viewed Plans", "userId": user, "messageId": message_id,
            "timestamp": when.isoformat()}  # fmt: skip


async def test_optional_steps_and_step_windows_end_to_end(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    """Pricing, then plans (optional), then sign-up: w1 takes all three, w2 skips the plans and
    converts, w3 drops after the plans, w4 signs up 5 minutes after the plans. With sign-up at most
    4 minutes after the step before it, w4 stops at the plans (and cannot skip them: sign-up is 55
    minutes after pricing)."""
    stack = await make_stack(edge=True, control=True, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    events = [
        pricing("w1", 0, "o1"), viewed_plans("w1", 1, "o2"), signed_up("w1", 3, "o3", {}),
        pricing("w2", 0, "o4"), signed_up("w2", 2, "o5", {}),
        pricing("w3", 0, "o6"), viewed_plans("w3", 1, "o7"),
        pricing("w4", 0, "o8"), viewed_plans("w4", 50, "o9"), signed_up("w4", 55, "o10", {}),
    ]  # fmt: skip
    response = await http.post(f"{stack.edge_url}/v1/batch", json={"batch": events}, headers=basic_auth(key))
    assert response.status_code == 200, response.text
    await eventually(lambda: stored_copies(stack, project_id), lambda copies: len(copies) == len(events))
    stored = await asyncio.to_thread(stored_rows, stack, project_id)
    span = (BASE - timedelta(hours=1), NOW)
    plans = {"kind": "event", "value": "Viewed Plans", "optional": True}
    within = {"value": 4, "unit": "minute"}
    for last, counts, dropped in (
        (STEPS[1], [4, 3, 3], [0, 1, 1]),
        ({**STEPS[1], "window": within}, [4, 3, 2], [0, 1, 2]),
    ):
        answer = await ask(http, stack, project_id, request(steps=[STEPS[0], plans, last]))
        assert answer.status_code == 200, answer.text
        steps = answer.json()["steps"]
        assert [(step["count"], step["dropped"]) for step in steps] == list(zip(counts, dropped, strict=True))
        assert steps[1]["step"]["optional"] is True and steps[2]["step"]["window"] == last.get("window")
        funnel = Funnel(
            (
                Step("page", "/pric*"),
                Step("event", "Viewed Plans", optional=True),
                Step("event", "Signed Up", window_ms=None if "window" not in last else 4 * 60_000),
            ),
            3_600_000,
        )
        reference = summary_of_progress(funnel, funnel_progress(funnel, stored, *span))
        assert [(s["count"], s["dropped"], s["median_ms"], s["average_ms"]) for s in steps] == [
            (s.count, s.dropped, s.median_ms, s.average_ms) for s in reference
        ]
    # Who dropped at the optional step: took pricing, not the plans; at sign-up: not signed up.
    for step, people in ((2, ["w2"]), (3, ["w3", "w4"])):
        listed = await ask(
            http,
            stack,
            project_id,
            request(
                steps=[STEPS[0], plans, {**STEPS[1], "window": within}],
                people={"step": step, "status": "dropped"},
            ),
        )
        assert listed.json()["people"]["people"] == people, step
    for steps, field in (
        ([{**STEPS[0], "optional": True}, STEPS[1]], "steps[0].optional"),
        ([STEPS[0], {**STEPS[1], "optional": True}], "steps[1].optional"),
        ([{**STEPS[0], "window": within}, STEPS[1]], "steps[0].window"),
        ([STEPS[0], {**STEPS[1], "window": {"value": 367, "unit": "day"}}], "steps[1].window"),
    ):
        refused = await ask(http, stack, project_id, request(steps=steps))
        assert (refused.status_code, refused.json()["field"]) == (400, field), refused.text

    # The CLI: --optional and --step-window, the optional step marked in the table.
    cli = ("funnel", "--control-url", str(stack.control_url), "--project", project_id,
           "--step", "page:/pric*", "--step", "event:Viewed Plans", "--step", "event:Signed Up",
           "--window", "1h", "--optional", "2", "--step-window", "3", "4m",
           "--from", span[0].isoformat(), "--to", span[1].isoformat())  # fmt: skip
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    table = await run_cli(*cli, env=env)
    assert table.code == 0, table.stderr
    lines = [line.split() for line in table.stdout.splitlines()]
    assert lines[2][:4] == ["event:Viewed", "Plans", "(optional)", "3"]
    assert lines[3][:6] == ["event:Signed", "Up", "(within", "4m)", "2", "50.0%"]
    refused_cli = await run_cli(*cli, "--optional", "3", env=env)
    assert refused_cli.code != 0 and "steps[2].optional" in refused_cli.stderr


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


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"steps": STEPS[:1]}, "steps"),
        ({"steps": [{"kind": "click", "value": "x"}, *STEPS]}, "steps[0].kind"),
        ({"steps": [{"kind": "event", "value": ""}, *STEPS]}, "steps[0].value"),
        ({"window": {"value": 0}}, "window.value"),
        ({"window": {"value": 400, "unit": "day"}}, "window"),
        ({"from": NOW.isoformat(), "to": BASE.isoformat()}, "to"),
        ({"from": "2026-01-01T00:00:00"}, "from"),
        ({"order": "sideways"}, "order"),
        ({"extra": 1}, "extra"),
        ({"people": {"step": 1, "status": "dropped"}}, "people.step"),
        ({"people": {"step": 3, "status": "converted"}}, "people.step"),
        ({"people": {"step": 2, "status": "converted", "limit": 0}}, "people.limit"),
        ({"breakdown": {"column": "properties"}}, "breakdown.column"),
        ({"breakdown": {"column": "os", "limit": 101}}, "breakdown.limit"),
        ({"breakdown": {"column": "properties..x"}}, "breakdown.column"),
        ({"filters": [{"key": "country", "op": "lt", "value": 3}]}, "filters[0].value"),
        ({"filters": [{"key": "country", "op": "in", "value": []}]}, "filters[0].value"),
        ({"filters": [{"key": "properties.a", "op": "is_set", "value": "x"}]}, "filters[0].value"),
        ({"filters": [{"key": "message_id", "op": "eq", "value": "x"}]}, "filters[0].key"),
        ({"filters": [{"key": "country", "op": "near", "value": "x"}]}, "filters[0].op"),
        (
            {"steps": [{**STEPS[0], "filters": [{"key": "properties.a", "op": "gt"}]}, STEPS[1]]},
            "steps[0].filters[0].value",
        ),
        (
            {"exclusions": [{"kind": "event", "value": "X", "from_step": 1, "to_step": 3}]},
            "exclusions[0].to_step",
        ),
        (
            {"exclusions": [{"kind": "click", "value": "X", "from_step": 1, "to_step": 2}]},
            "exclusions[0].kind",
        ),
        ({"exclusions": [{"kind": "event", "value": "X", "from_step": 1}]}, "exclusions[0].to_step"),
        (
            {
                "exclusions": [
                    {
                        "kind": "event",
                        "value": "X",
                        "from_step": 1,
                        "to_step": 2,
                        "filters": [{"key": "country", "op": "lt", "value": 1}],
                    }
                ]
            },
            "exclusions[0].filters[0].value",
        ),
        ({"exclusions": [{"kind": "event", "value": "X", "from_step": 1, "to_step": 2}] * 6}, "exclusions"),
    ],
)
async def test_bad_funnels_are_refused_naming_the_field(
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    body: dict[str, Any],
    field: str,
) -> None:
    stack = await make_stack(control=True)
    await create_project(http, stack, project_id)
    response = await ask(http, stack, project_id, request(**body))
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


async def test_unknown_projects_and_missing_tokens(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(control=True)
    assert (await ask(http, stack, project_id, request())).status_code == 404
    await create_project(http, stack, project_id)
    url = f"{stack.control_url}/v1/projects/{project_id}/funnels/query"
    assert (await http.post(url, json=request())).status_code == 401


def test_built_queries_run_read_only_and_spill_their_grouping_to_disk(
    clickhouse_url: str, clickhouse: object, project_id: str
) -> None:
    """A funnel over a whole project groups every person's events in memory: past 40% of the memory
    limit the engine goes on on disk rather than refusing (10M events of 1M people: ~1.1 GB)."""
    queries = ReadOnlyQueries(clickhouse_url, limits=QueryLimits(max_memory_bytes=100_000_000))
    try:
        sql = "SELECT getSetting('max_bytes_before_external_group_by'), getSetting('readonly')"
        assert queries.run_built(project_id, sql, {}).rows == [[40_000_000, 1]]
    finally:
        queries.close()


async def test_a_funnel_by_sessions_of_the_sessionizer(
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    clickhouse_url: str,
    js: JetStreamContext,
) -> None:
    """v1 converts in their first visit and comes back two hours later to look again; v2 signs up
    45 minutes after pricing, in a visit of its own (the inactivity timeout is 30 minutes). By
    people both convert; by sessions, three visits see pricing and one converts."""
    stack = await make_stack(
        edge=True, control=True, consumer=True, sessionizer=quick_sessionizer(clickhouse_url)
    )
    key = str((await create_project(http, stack, project_id))["secret_key"])

    def anonymous(event: dict[str, Any], visitor: str) -> dict[str, Any]:
        return {**{k: v for k, v in event.items() if k != "userId"}, "anonymousId": visitor}

    events = [
        anonymous(pricing("v1", 0, "s1"), "v1"), anonymous(signed_up("v1", 5, "s2", {}), "v1"),
        anonymous(pricing("v1", 120, "s3"), "v1"),
        anonymous(pricing("v2", 0, "s4"), "v2"), anonymous(signed_up("v2", 45, "s5", {}), "v2"),
    ]  # fmt: skip
    await send_events(http, stack, key, project_id, events)
    assert stack.clickhouse is not None
    await sessionized_through_last_insert(stack.clickhouse, js, project_id)

    by_people = await ask(http, stack, project_id, request())
    assert [step["count"] for step in by_people.json()["steps"]] == [2, 2]
    by_sessions = await ask(http, stack, project_id, request(unit="sessions"))
    assert by_sessions.status_code == 200, by_sessions.text
    assert [step["count"] for step in by_sessions.json()["steps"]] == [3, 1]

    # The reference over the stored rows and the sessions table gives the same.
    stored = await asyncio.to_thread(stored_rows, stack, project_id)
    rows = stack.clickhouse.query(
        f"SELECT identity, session_id, started_at, ended_at FROM hw_{project_id}.sessions FINAL"
    ).result_rows
    spans = [SessionSpan(i, s, a.replace(tzinfo=UTC), b.replace(tzinfo=UTC)) for i, s, a, b in rows]
    funnel = Funnel((Step("page", "/pric*"), Step("event", "Signed Up")), 3_600_000, unit="sessions")
    progress = funnel_progress(
        funnel, stored, BASE - timedelta(hours=1), NOW, unit_of=session_of(spans, "anonymous_id")
    )
    assert [s.count for s in summary_of_progress(funnel, progress)] == [3, 1]
    converted = await ask(
        http, stack, project_id, request(unit="sessions", people={"step": 2, "status": "converted"})
    )
    assert converted.json()["people"]["people"] == [row.person for row in progress if row.level == 2]
    cli = ("funnel", "--control-url", str(stack.control_url), "--project", project_id, "--unit", "sessions",
           "--step", "page:/pric*", "--step", "event:Signed Up", "--window", "1h",
           "--from", (BASE - timedelta(hours=1)).isoformat(), "--to", NOW.isoformat(), "--json")  # fmt: skip
    answer = (await run_cli(*cli, env={**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN})).json()
    assert [step["count"] for step in answer["steps"]] == [3, 1]


async def test_an_unordered_funnel_through_the_edge_the_api_and_the_cli(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    """u1 signs up before looking at pricing: 2 steps in any order, 1 in order; u2 the other way
    round; u3 only signs up (1 step: any step starts an unordered attempt); u4 signs up and sees
    pricing two hours later (1: beyond the window). The same as the reference over the stored rows,
    by the API, a saved funnel and the CLI; exclusions refused."""
    stack = await make_stack(edge=True, control=True, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    events = [
        signed_up("u1", 0, "o1", {}), pricing("u1", 3, "o2"),
        pricing("u2", 0, "o3"), signed_up("u2", 10, "o4", {}),
        signed_up("u3", 5, "o5", {}),
        signed_up("u4", 0, "o6", {}), pricing("u4", 120, "o7"),
    ]  # fmt: skip
    response = await http.post(f"{stack.edge_url}/v1/batch", json={"batch": events}, headers=basic_auth(key))
    assert response.status_code == 200, response.text
    await eventually(lambda: stored_copies(stack, project_id), lambda copies: len(copies) == len(events))

    ordered = await ask(http, stack, project_id, request())
    assert [step["count"] for step in ordered.json()["steps"]] == [3, 1]
    unordered = await ask(
        http, stack, project_id, request(order="unordered", people={"step": 2, "status": "converted"})
    )
    assert unordered.status_code == 200, unordered.text
    steps = unordered.json()["steps"]
    assert [(step["count"], step["dropped"]) for step in steps] == [(4, 0), (2, 2)]
    assert (steps[1]["median_ms"], steps[1]["average_ms"]) == (10 * 60_000, 6.5 * 60_000)
    assert unordered.json()["people"]["people"] == ["u1", "u2"]

    stored = await asyncio.to_thread(stored_rows, stack, project_id)
    funnel = Funnel((Step("page", "/pric*"), Step("event", "Signed Up")), 3_600_000, "unordered")
    reference = summary_of_progress(funnel, funnel_progress(funnel, stored, BASE - timedelta(hours=1), NOW))
    assert [(s["count"], s["median_ms"], s["average_ms"]) for s in steps] == [
        (s.count, s.median_ms, s.average_ms) for s in reference
    ]

    closed = {"kind": "event", "value": "Closed Tab", "from_step": 1, "to_step": 2}
    refused = await ask(http, stack, project_id, request(order="unordered", exclusions=[closed]))
    assert (refused.status_code, refused.json()["field"]) == (400, "exclusions"), refused.text

    # Saved with its order, and run as the ad-hoc query answers.
    saved_url = f"{stack.control_url}/v1/projects/{project_id}/funnels"
    definition = {"steps": STEPS, "window": {"value": 1, "unit": "hour"}, "order": "unordered"}
    saved = await http.post(saved_url, json={"name": "any order", **definition}, headers=admin_headers())
    assert saved.status_code == 201, saved.text
    assert saved.json()["order"] == "unordered"
    span = {"from": (BASE - timedelta(hours=1)).isoformat(), "to": NOW.isoformat()}
    run = await http.post(f"{saved_url}/{saved.json()['id']}/query", json=span, headers=admin_headers())
    assert run.status_code == 200, run.text
    assert run.json()["steps"] == steps

    cli = ("funnel", "--control-url", str(stack.control_url), "--project", project_id,
           "--step", "page:/pric*", "--step", "event:Signed Up", "--window", "1h", "--order", "unordered",
           "--from", (BASE - timedelta(hours=1)).isoformat(), "--to", NOW.isoformat(), "--json")  # fmt: skip
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    answer = await run_cli(*cli, env=env)
    assert answer.code == 0, answer.stderr
    assert answer.json()["steps"] == steps
    excluded = await run_cli(*cli, "--exclude", "1", "2", "event:Closed Tab", env=env)
    assert excluded.code != 0 and "exclusions" in excluded.stderr
