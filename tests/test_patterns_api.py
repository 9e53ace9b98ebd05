"""`POST /v1/projects/{id}/patterns/query` end to end: the generator's journeys sent through the
edge, stored by the consumer, sessionized by the sessionizer, read back by the control plane and
mined; the planted patterns come back as suggested funnels, a goal gives the converter-only
patterns as drivers and a null data set none, each project sees its own journeys only; the CLI
prints the same answer; bad input and the journey limit are refused naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from hw_sessions import post_batch, quick_sessionizer, sessionized_through_last_insert, wait_stored
from hw_testing import (
    ADMIN_TOKEN,
    StackFactory,
    admin_headers,
    cli_env,
    create_project,
    run_cli,
)
from nats.js import JetStreamContext

from headwater.analytics.patterns.generator import Dataset, GeneratorSettings, generate, null_dataset
from headwater.analytics.patterns.prefixspan import contains
from headwater.control.patterns import mining_slots, run_patterns
from headwater.control.patterns_schemas import PatternsRequest
from headwater.control.query import ReadOnlyQueries
from headwater.control.settings import AdminToken, ControlSettings
from headwater.core.service.errors import APIError
from headwater.ops.patterns import goal_of
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

NOW = datetime.now(UTC).replace(microsecond=0)
BASE = NOW - timedelta(hours=6)
FROM, TO = (BASE - timedelta(hours=1)).isoformat(), NOW.isoformat()
# Small enough to send through the edge in seconds, large enough that what is planted stands out:
# 800 sessions over 50 steps, 3 patterns planted only in converters and 1 in everyone, 8-20% each.
PLANTED = GeneratorSettings(
    sessions=800, distinct_steps=50, seed=3, mean_length=6, max_length=15,
    converter_patterns=3, shared_patterns=1, min_support=0.08,
)  # fmt: skip
BATCH = 500


def one_step_off(found: Sequence[str], planted: Sequence[str]) -> bool:
    found, planted = tuple(found), tuple(planted)
    return (
        found == planted
        or (len(found) == len(planted) - 1 and contains(planted, found))
        or (len(found) == len(planted) + 1 and contains(found, planted))
    )


def events_of(data: Dataset, prefix: str) -> list[dict[str, Any]]:
    """Journey i as visitor i // 2's events a minute apart; the second journey of a visitor starts
    three hours after the first (a session of its own: the inactivity timeout is 30 minutes)."""
    events = []
    for index, journey in enumerate(data.journeys):
        visitor = f"{prefix}-v{index // 2}"
        start = BASE + timedelta(hours=3 * (index % 2))
        for position, step in enumerate(journey):
            when = (start + timedelta(minutes=position)).isoformat()
            event: dict[str, Any] = {
                "anonymousId": visitor,
                "messageId": f"{prefix}-{index}-{position}",
                "timestamp": when,
            }
            if step.startswith("/"):
                page = {"path": step, "url": f"https://shop.example{step}"}
                event |= {"type": "page", "properties": page, "context": {"page": page}}
            else:
                event |= {"type": "track", "event": step}
            events.append(event)
    return events


async def send(
    http: httpx.AsyncClient, stack: Stack, key: str, project_id: str, events: list[dict[str, Any]]
) -> None:
    for at in range(0, len(events), BATCH):
        await post_batch(http, stack, key, events[at : at + BATCH])
    await wait_stored(stack, project_id, [event["messageId"] for event in events])


async def ask(http: httpx.AsyncClient, stack: Stack, project_id: str, **body: Any) -> httpx.Response:
    return await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/patterns/query",
        json={"from": FROM, "to": TO, **body},
        headers=admin_headers(),
        timeout=120,
    )


async def test_planted_patterns_and_drivers_come_back_through_the_whole_stack(
    make_stack: StackFactory, http: httpx.AsyncClient, clickhouse_url: str, js: JetStreamContext
) -> None:
    stack = await make_stack(
        edge=True, control=True, consumer=True, sessionizer=quick_sessionizer(clickhouse_url)
    )
    planted, null = generate(PLANTED), null_dataset(300, seed=4)
    shop = str((await create_project(http, stack, "shop"))["secret_key"])
    other = str((await create_project(http, stack, "other"))["secret_key"])
    await send(http, stack, shop, "shop", events_of(planted, "shop"))
    await send(http, stack, other, "other", events_of(null, "other"))
    assert stack.clickhouse is not None
    await sessionized_through_last_insert(stack.clickhouse, js, "shop")

    # By sessions (the default): one journey per generated journey; every planted pattern among
    # the suggestions, each with a funnel definition of its steps.
    response = await ask(http, stack, "shop")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["unit"], answer["journeys"], answer["truncated"]) == ("sessions", 800, 0)
    patterns = answer["patterns"]
    for p in planted.planted:
        assert any(one_step_off(found["steps"], p.steps) for found in patterns), p
    right = sum(any(one_step_off(found["steps"], p.steps) for p in planted.planted) for found in patterns)
    assert right / len(patterns) >= 0.5
    top = patterns[0]
    assert top["kinds"] == ["page" if s.startswith("/") else "event" for s in top["steps"]]
    assert top["funnel"] == {
        "steps": [{"kind": k, "value": s} for k, s in zip(top["kinds"], top["steps"], strict=True)],
        "window": {"value": 1, "unit": "day"},
        "order": "ordered",
        "unit": "sessions",
    }
    # The definition is one the funnel API runs: its first step's count is the pattern's first.
    funnel = await http.post(
        f"{stack.control_url}/v1/projects/shop/funnels/query",
        json={**top["funnel"], "from": FROM, "to": TO},
        headers=admin_headers(),
    )
    assert funnel.status_code == 200, funnel.text
    assert funnel.json()["steps"][-1]["count"] == top["support"]
    assert answer["next_step"]["top3_accuracy"] > answer["next_step"]["baseline_top3_accuracy"]
    assert "drivers" not in answer

    # With the goal: every converter-only pattern is a driver that raises conversion, none of the
    # pattern planted in everyone.
    goal = await ask(http, stack, "shop", goal={"kind": "event", "value": planted.goal}, next_step=False)
    assert goal.status_code == 200, goal.text
    drivers = goal.json()["drivers"]
    assert goal.json()["converters"] == sum(planted.converted)
    for p in planted.converter_only:
        assert any(one_step_off(d["steps"], p.steps) and d["direction"] == "raises" for d in drivers), p
    for p in planted.shared:
        assert not any(d["steps"] == list(p.steps) for d in drivers)
    assert all(d["q_value"] <= 0.05 for d in drivers)

    # By people: two journeys of a visitor are one; the other project's journeys are not read, and
    # its null data set has no drivers.
    by_people = await ask(http, stack, "shop", unit="people", next_step=False)
    assert by_people.json()["journeys"] == 400
    null_answer = await ask(http, stack, "other", unit="people", goal={"kind": "event", "value": null.goal})
    assert null_answer.status_code == 200, null_answer.text
    assert null_answer.json()["journeys"] == 150
    assert null_answer.json()["drivers"] == []

    # The CLI through the control API: the same answer as JSON, and a table.
    cli = ("patterns", "--control-url", str(stack.control_url), "--project", "shop", "--goal", planted.goal,
           "--since", FROM, "--until", TO)  # fmt: skip
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    by_cli = (await run_cli(*cli, "--json", env=env)).json()
    with_goal = (await ask(http, stack, "shop", goal={"kind": "event", "value": planted.goal})).json()
    assert by_cli == with_goal
    table = await run_cli(*cli, env=env)
    assert table.code == 0, table.stderr
    assert "mining the sessions of shop" in table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "800 sessions read"
    assert " → ".join(patterns[0]["steps"]) in table.stdout
    assert any(line.startswith("What converters do differently") for line in lines)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from": NOW.isoformat(), "to": BASE.isoformat()}, "to"),
        ({"from": "2026-01-01T00:00:00"}, "from"),
        ({"unit": "visits"}, "unit"),
        ({"goal": {"kind": "click", "value": "x"}}, "goal.kind"),
        ({"goal": {"kind": "page", "value": "/p/*"}}, "goal.value"),
        ({"top": 0}, "top"),
        ({"top": 101}, "top"),
        ({"min_support": 0}, "min_support"),
        ({"max_length": 1}, "max_length"),
        ({"max_length": 21}, "max_length"),
        ({"cleaning": [{"regex": "(", "replacement": ""}]}, "cleaning[0].regex"),
        ({"cleaning": [{"regex": "(?#x)a", "replacement": ""}]}, "cleaning[0].regex"),  # re2 refuses it
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_requests_are_refused_naming_the_field(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str, body: dict[str, Any], field: str
) -> None:
    stack = await make_stack(control=True)
    await create_project(http, stack, project_id)
    response = await ask(http, stack, project_id, **body)
    assert response.status_code == 400, response.text
    assert (response.json()["code"], response.json()["field"]) == ("invalid_field", field)


async def six_people_under(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str, clickhouse_url: str, **limits: Any
) -> Stack:
    """A stack whose control plane has the patterns `limits`, and a project holding 12 generated
    sessions of six people sent through its edge."""
    settings = ControlSettings(
        clickhouse_url=clickhouse_url, admin_tokens=(AdminToken("tests", ADMIN_TOKEN),), port=0, **limits
    )
    stack = await make_stack(edge=True, control=settings, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    data = generate(GeneratorSettings(sessions=12, distinct_steps=50, seed=1, converter_patterns=0,
                                      shared_patterns=1, max_support=0.2))  # fmt: skip
    await send(http, stack, key, project_id, events_of(data, "x"))
    return stack


async def test_more_journeys_than_the_limit_are_refused(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str, clickhouse_url: str
) -> None:
    stack = await six_people_under(make_stack, http, project_id, clickhouse_url, patterns_max_journeys=5)
    refused = await ask(http, stack, project_id, unit="people")
    assert refused.status_code == 422, refused.text
    assert (refused.json()["code"], refused.json()["field"]) == ("too_many_journeys", "from")
    # Six people, but by sessions (none: no sessionizer ran) nothing to refuse.
    assert (await ask(http, stack, project_id, next_step=False)).json()["journeys"] == 0
    unknown = await ask(http, stack, "nosuchproject")
    assert unknown.status_code == 404
    url = f"{stack.control_url}/v1/projects/{project_id}/patterns/query"
    assert (await http.post(url, json={"from": FROM, "to": TO})).status_code == 401


async def test_mining_past_the_time_limit_is_stopped(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str, clickhouse_url: str
) -> None:
    stack = await six_people_under(make_stack, http, project_id, clickhouse_url, patterns_max_seconds=1e-9)
    stopped = await ask(http, stack, project_id, unit="people")
    assert stopped.status_code == 422, stopped.text
    assert (stopped.json()["code"], stopped.json()["field"]) == ("mining_timed_out", "min_support")


def test_the_goal_option_tells_pages_by_their_leading_slash() -> None:
    assert goal_of("Purchased") == {"kind": "event", "value": "Purchased"}
    assert goal_of("/checkout/done") == {"kind": "page", "value": "/checkout/done"}
    assert goal_of("event:/x") == {"kind": "event", "value": "/x"}  # an event named like a path
    assert goal_of("page:done") == {"kind": "page", "value": "done"}
    assert goal_of("Signed Up: trial") == {"kind": "event", "value": "Signed Up: trial"}


def test_a_second_pattern_query_is_refused_while_one_runs() -> None:
    """One mining run at a time per process: the next is a 429 before anything is read."""
    slots = mining_slots(1)
    request = msgspec.convert({"from": FROM, "to": TO}, PatternsRequest)
    queries = ReadOnlyQueries("http://127.0.0.1:9")  # never reached
    assert slots.acquire(blocking=False)  # a run in progress
    with pytest.raises(APIError) as refused:
        run_patterns(queries, "shop", request, slots=slots)
    assert (refused.value.status, refused.value.code) == (429, "too_many_queries")
    slots.release()
