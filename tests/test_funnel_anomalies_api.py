"""A saved funnel's anomalies (docs/patterns.md, "Anomalies") end to end: 40 days of events sent
through the edge, stored by the consumer in the embedded ClickHouse, the funnel saved in the
HW_FUNNELS KV bucket of a real nats-server; the one day whose conversion collapses is flagged
low and no other; bad settings are 400s naming the field; `headwater funnels anomalies`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
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

pytestmark = pytest.mark.services

DAYS = 40
COLLAPSED = 30  # the day whose conversion collapses
ENTERED = 60
# The first day's midnight, 41 days ago: every day of the range is complete (a 1 hour window).
FIRST = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS + 1)
DEFINITION: dict[str, Any] = {
    "name": "Pricing to sign-up",
    "steps": [{"kind": "page", "value": "/pricing"}, {"kind": "event", "value": "Signed Up"}],
    "window": {"value": 1, "unit": "hour"},
}
RANGE = {"from": FIRST.isoformat(), "to": (FIRST + timedelta(days=DAYS)).isoformat()}


def converted_on(day: int) -> int:
    """About half convert, a little more or less from day to day; 3 of 60 on the collapsed day."""
    return 3 if day == COLLAPSED else 30 + 2 * (day % 3 - 1)


def day_events(day: int) -> list[dict[str, Any]]:
    events = []
    for person in range(ENTERED):
        user = f"u{day}-{person}"
        entry = FIRST + timedelta(days=day, hours=9, minutes=person * 5)
        page = {"path": "/pricing", "url": "https://shop.example/pricing"}
        events.append({"type": "page", "userId": user, "messageId": f"{user}-p", "properties": page,
                       "timestamp": entry.isoformat(), "context": {"page": page}})  # fmt: skip
        if person < converted_on(day):
            events.append({"type": "track", "event": "Signed Up", "userId": user, "messageId": f"{user}-s",
                           "timestamp": (entry + timedelta(minutes=10)).isoformat()})  # fmt: skip
    return events


async def test_the_collapsed_day_is_flagged_low_and_no_other(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(edge=True, control=True, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    sent = 0
    for day in range(DAYS):
        batch = day_events(day)
        batch_url = f"{stack.edge_url}/v1/batch"
        response = await http.post(batch_url, json={"batch": batch}, headers=basic_auth(key))
        assert response.status_code == 200, response.text
        sent += len(batch)
    await eventually(lambda: stored_copies(stack, project_id), lambda copies: len(copies) == sent, timeout=60)

    funnels = f"{stack.control_url}/v1/projects/{project_id}/funnels"
    saved = await http.post(funnels, json=DEFINITION, headers=admin_headers())
    assert saved.status_code == 201, saved.text
    one = f"{funnels}/{saved.json()['id']}"
    answered = await http.post(f"{one}/anomalies", json=RANGE, headers=admin_headers())
    assert answered.status_code == 200, answered.text
    answer = answered.json()
    days = answer["days"]

    # The days are the trend's, entries its first step's count, conversions its last step's.
    trend = (await http.post(f"{one}/trend", json=RANGE, headers=admin_headers())).json()["days"]
    assert [(d["date"], d["entered"], d["converted"], d["complete"]) for d in days] == [
        (t["date"], t["steps"][0]["count"], t["steps"][-1]["count"], t["complete"]) for t in trend
    ]
    assert [(d["entered"], d["converted"]) for d in days] == [(ENTERED, converted_on(i)) for i in range(DAYS)]

    statuses = [d["status"] for d in days]
    assert statuses[:14] == ["warming_up"] * 14  # two weeks, two of each weekday
    assert statuses[COLLAPSED] == "low"
    assert statuses[14:] == ["low" if i == COLLAPSED else "normal" for i in range(14, DAYS)]
    assert answer["anomalies"] == 1
    collapsed = days[COLLAPSED]
    assert collapsed["rate"] == pytest.approx(3 / ENTERED)
    assert collapsed["upper"] >= collapsed["expected"] > collapsed["lower"] > collapsed["rate"]
    assert collapsed["expected"] == pytest.approx(0.5, abs=0.04) and collapsed["z"] < -5
    assert collapsed["p_value"] < answer["method"]["day_alpha"]
    # The next day's band was not dragged down by the collapse: it is left out of the baseline.
    assert days[COLLAPSED + 7]["expected"] == pytest.approx(0.5, abs=0.04)
    assert answer["method"] == {
        "name": "beta-binomial band", "baseline_days": 28, "min_baseline_days": 14, "dispersion_days": 91,
        "confidence": 0.99, "min_entered": 30, "seasonality": "weekly", "judgeable_days": DAYS - 14,
        "day_alpha": pytest.approx(0.01 / (DAYS - 14)),
    }  # fmt: skip

    # Every day too small to judge: nothing flagged; without seasonality the first 14 days warm up.
    small = await http.post(f"{one}/anomalies", json={**RANGE, "min_entered": 61}, headers=admin_headers())
    assert {d["status"] for d in small.json()["days"]} == {"insufficient_data"}
    assert small.json()["anomalies"] == 0
    flat_body = {**RANGE, "seasonality": "none", "min_baseline_days": 7}
    flat = await http.post(f"{one}/anomalies", json=flat_body, headers=admin_headers())
    assert [d["status"] for d in flat.json()["days"]][:8] == ["warming_up"] * 7 + ["normal"]
    assert [i for i, d in enumerate(flat.json()["days"]) if d["status"] != "normal"][7:] == [COLLAPSED]

    # Refusals: 400 naming the field; 404 for an unknown funnel or project.
    for change, field in [
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0.3}, "confidence"),
        ({"baseline_days": 1}, "baseline_days"),
        ({"baseline_days": 10, "min_baseline_days": 7}, "baseline_days"),  # weekly: two of each weekday
        ({"min_baseline_days": 29}, "min_baseline_days"),  # more than the baseline holds
        ({"min_entered": 0}, "min_entered"),
        ({"seasonality": "monthly"}, "seasonality"),
        ({"steps": DEFINITION["steps"]}, "steps"),  # the definition is the saved one
        ({"to": RANGE["from"]}, "to"),
        ({"from": (FIRST - timedelta(days=400)).isoformat()}, "to"),  # at most 400 days
    ]:
        refused = await http.post(f"{one}/anomalies", json={**RANGE, **change}, headers=admin_headers())
        assert refused.status_code == 400, (change, refused.text)
        assert (refused.json()["code"], refused.json()["field"]) == ("invalid_field", field), change
    unknown = await http.post(f"{funnels}/aaaaaaaaaaaa/anomalies", json=RANGE, headers=admin_headers())
    assert (unknown.status_code, unknown.json()["code"]) == (404, "funnel_not_found")
    elsewhere = f"{stack.control_url}/v1/projects/{project_id}_none/funnels/{saved.json()['id']}/anomalies"
    no_project = await http.post(elsewhere, json=RANGE, headers=admin_headers())
    assert (no_project.status_code, no_project.json()["code"]) == (404, "project_not_found")
    assert (await http.post(f"{one}/anomalies", json=RANGE)).status_code == 401

    # The CLI: the API's answer with --json; a table marking the flagged day.
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    where = ("--control-url", str(stack.control_url), "--project", project_id, saved.json()["id"])
    times = ("--from", RANGE["from"], "--to", RANGE["to"])
    as_json = await run_cli("funnels", "anomalies", *where, *times, "--json", env=env)
    assert as_json.code == 0, as_json.stderr
    assert as_json.json() == answer
    tuned = await run_cli("funnels", "anomalies", *where, *times, "--min-entered", "61", "--json", env=env)
    assert tuned.json() == small.json()
    table = await run_cli("funnels", "anomalies", *where, *times, env=env)
    assert table.code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["day", "entered", "converted", "rate", "expected", "band"]
    flagged = [line for line in lines if "LOW" in line or "HIGH" in line]
    assert len(flagged) == 1 and flagged[0].startswith(days[COLLAPSED]["date"]) and "5.0%" in flagged[0]
    assert sum("(warming up)" in line for line in lines) == 14
    assert "1 day flagged of 26 judged" in table.stdout
    refused_cli = await run_cli("funnels", "anomalies", *where, *times, "--confidence", "2", env=env)
    assert refused_cli.code != 0 and "confidence" in refused_cli.stderr
