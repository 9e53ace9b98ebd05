"""The web console end to end: Debian's Chromium, driven by Playwright, on a real `headwater up`
subprocess, with data sent through its edge. Every page is used as a person would (labels, buttons),
its numbers are checked against SQL or the API over the same data, and its screenshot is saved: to a
temporary directory, or to the directory HEADWATER_CONSOLE_SCREENSHOTS names (docs/console/, which
docs/console.md shows).

Every request the page makes must go to the control plane's origin, and a Content-Security-Policy
violation, an uncaught error or an error in the browser's console fails the test."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hw_testing import basic_auth, eventually
from hw_up import UpProcess
from playwright.async_api import Browser, ConsoleMessage, Page, Request, Route, expect

from headwater.analytics.patterns.generator import GeneratorSettings, generate

pytestmark = [pytest.mark.services, pytest.mark.slow]

VIEWPORT = {"width": 1366, "height": 768}
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
# Chromium logs an API's refusal as an error: a test that provokes refusals on purpose (a wrong
# token, a bad origin) says which statuses it expects.
REFUSED = "Failed to load resource: the server responded with a status of {status} "


@dataclass
class Stack:
    control_url: str
    edge_url: str
    admin_token: str
    demo_key: str
    demo_origin: str
    seeded_from: datetime
    up: UpProcess


def _banner_value(up: UpProcess, pattern: str) -> str:
    for line in up.output:
        found = re.search(pattern, line)
        if found:
            return found.group(1)
    raise AssertionError(f"{pattern!r} not in the output of headwater up:\n" + "\n".join(up.output))


# -- the seeded data ------------------------------------------------------------------------------
# 15 visitors, three hours ago, two minutes apart. Visitors 0-11 see / then /pricing; 0-7 then
# start signing up, 0-4 finish (they are users: every event of theirs has a user id). Visitors
# 12-14 see /docs only (bounces). One session each: durations 90 s x5, 60 s x3, 30 s x4, 0 s x3.
VISITORS = 15
FUNNEL_STEPS = [("page", "/pricing"), ("event", "Signup Started"), ("event", "Signed Up")]


def _seed_events(start: datetime) -> list[dict[str, Any]]:
    events = []

    def add(i: int, seconds: int, body: dict[str, Any]) -> None:
        at = start + timedelta(minutes=2 * i, seconds=seconds)
        person: dict[str, Any] = {"anonymousId": f"visitor-{i:02d}"}
        if i < 5:
            person["userId"] = f"user-{i:02d}"
        referrer = "https://www.google.com/search" if i % 2 == 0 else ""
        page = {"referrer": referrer}
        if body["type"] == "page":
            path = body["properties"]["path"]
            page |= {"url": f"https://shop.example{path}", "path": path}
        context = {"userAgent": BROWSER_UA, "page": page, "locale": "en-US"}
        events.append(
            {
                **person,
                **body,
                "messageId": f"seed-{i}-{seconds}",
                "timestamp": at.isoformat(),
                "context": context,
            }
        )

    for i in range(VISITORS):
        if i >= 12:
            add(i, 0, {"type": "page", "properties": {"path": "/docs"}})
            continue
        add(i, 0, {"type": "page", "properties": {"path": "/"}})
        add(i, 30, {"type": "page", "properties": {"path": "/pricing"}})
        if i < 8:
            add(i, 60, {"type": "track", "event": "Signup Started", "properties": {"plan": "pro"}})
        if i < 5:
            add(i, 90, {"type": "track", "event": "Signed Up", "properties": {"plan": "pro"}})
    return events


# Pattern discovery needs hundreds of journeys to call a pattern significant: the generator's (as
# tests/test_patterns_api.py plants them), one visitor each, in the project `patterns`.
PLANTED = GeneratorSettings(
    sessions=800, distinct_steps=50, seed=3, mean_length=6, max_length=15,
    converter_patterns=3, shared_patterns=1, min_support=0.08,
)  # fmt: skip


def _planted_events(start: datetime) -> list[dict[str, Any]]:
    events = []
    for index, journey in enumerate(generate(PLANTED).journeys):
        for position, step in enumerate(journey):
            event: dict[str, Any] = {
                "anonymousId": f"journey-{index}",
                "messageId": f"planted-{index}-{position}",
                "timestamp": (start + timedelta(minutes=position)).isoformat(),
                "context": {"userAgent": BROWSER_UA},
            }
            if step.startswith("/"):
                page = {"path": step, "url": f"https://shop.example{step}"}
                event |= {
                    "type": "page",
                    "properties": page,
                    "context": {"page": page, "userAgent": BROWSER_UA},
                }
            else:
                event |= {"type": "track", "event": step}
            events.append(event)
    return events


def _seed_start() -> datetime:
    """Three hours ago, or four when the 30 minutes of visits would straddle midnight (UTC): the
    funnel's daily trend then has them all on one day."""
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    if (start + timedelta(minutes=31)).date() != start.date():
        start -= timedelta(hours=1)
    return start


def _send(edge_url: str, key: str, origin: str, events: list[dict[str, Any]]) -> httpx.Response:
    headers = basic_auth(key) | {"User-Agent": BROWSER_UA} | ({"Origin": origin} if origin else {})
    return httpx.post(f"{edge_url}/v1/batch", json={"batch": events}, headers=headers, timeout=10)


def _send_when_known(edge_url: str, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    """A batch sent with a new project's key: the edge learns of the project through KV within moments."""
    deadline = time.monotonic() + 10
    while True:
        sent = _send(edge_url, key, "", events)
        if sent.status_code != 401 or time.monotonic() > deadline:
            return sent
        time.sleep(0.2)


def _sql(stack: Stack, project: str, sql: str) -> list[list[Any]]:
    response = httpx.post(
        f"{stack.control_url}/v1/projects/{project}/query",
        json={"sql": sql},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["rows"])


def _api(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(
        method,
        f"{stack.control_url}/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=60,
    )
    assert response.is_success, response.text
    return response.json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("console") / "hw"
    up = UpProcess(data_dir)
    try:
        up.wait_for("stop with Ctrl-C", timeout=90)
        edge_url = _banner_value(up, r"^\s+edge\s+(http\S+)")
        started = Stack(
            control_url=_banner_value(up, r"^\s+control API\s+(http\S+)"),
            edge_url=edge_url,
            admin_token=_banner_value(up, r"admin token \(new, stored in .*\): (\S+)"),
            demo_key=_banner_value(up, r"public key (hwpk_\S+)"),
            demo_origin="http://localhost:" + edge_url.rsplit(":", 1)[1],
            seeded_from=_seed_start(),
            up=up,
        )
        sent = _send(
            started.edge_url, started.demo_key, started.demo_origin, _seed_events(started.seeded_from)
        )
        assert sent.status_code == 200, sent.text
        secret = _api(started, "POST", "/projects", {"id": "patterns"})["secret_key"]
        planted = _planted_events(started.seeded_from - timedelta(hours=3))
        for at in range(0, len(planted), 500):
            sent = _send_when_known(started.edge_url, secret, planted[at : at + 500])
            assert sent.status_code == 200, sent.text
        yield started
    finally:
        assert up.stop() == 0, "\n".join(up.output)


def _screenshots(tmp_path: Path) -> Path:
    named = os.environ.get("HEADWATER_CONSOLE_SCREENSHOTS")
    directory = Path(named) if named else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@dataclass
class Console:
    """A browser tab on the console, recording what it requests and what goes wrong in it."""

    page: Page
    stack: Stack
    screenshots: Path
    requests: list[Request] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    expected_refusals: tuple[int, ...] = ()

    async def open(self, path: str) -> None:
        await self.page.goto(f"{self.stack.control_url}{path}")

    async def sign_in(self, token: str | None = None) -> None:
        await self.open("/console/")
        await self.page.get_by_label("Admin token").fill(token or self.stack.admin_token)
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page.get_by_role("navigation", name="Pages")).to_be_visible()

    async def screenshot(self, name: str) -> None:
        await self.page.screenshot(path=str(self.screenshots / f"{name}.png"), full_page=True)

    def api_requests(self, path_end: str) -> list[Request]:
        return [r for r in self.requests if urlsplit(r.url).path.endswith(path_end)]

    async def check(self) -> None:
        """No request to another origin; no CSP violation, uncaught error or console error."""
        origin = self.stack.control_url
        elsewhere = [r.url for r in self.requests if not r.url.startswith((origin + "/", "data:"))]
        assert not elsewhere, f"requests to another origin than {origin}: {elsewhere}"
        violations = await self.page.evaluate("window.__violations || []")
        assert not violations, f"Content-Security-Policy violations: {violations}"
        assert not self.problems, self.problems


@pytest.fixture
async def console(browser: Browser, stack: Stack, tmp_path: Path) -> AsyncIterator[Console]:
    context = await browser.new_context(viewport=VIEWPORT, user_agent=BROWSER_UA)
    page = await context.new_page()
    tab = Console(page, stack, _screenshots(tmp_path))

    def requested(request: Request) -> None:
        tab.requests.append(request)

    page.on("request", requested)

    def logged(message: ConsoleMessage) -> None:
        expected = tuple(REFUSED.format(status=status) for status in tab.expected_refusals)
        if message.type == "error" and not message.text.startswith(expected or ("\0",)):
            tab.problems.append(f"console error: {message.text}")

    page.on("console", logged)
    page.on("pageerror", lambda error: tab.problems.append(f"uncaught: {error}"))
    await page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation', (e) =>"
        " window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));"
    )
    yield tab
    await tab.check()
    await context.close()


# -- the tests ------------------------------------------------------------------------------------


def test_console_files_carry_a_strict_policy_and_no_data(stack: Stack) -> None:
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    page = httpx.get(f"{stack.control_url}/console/live", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-cache"
    assets = re.findall(r'(?:src|href)="(/console/assets/[^"]+)"', page.text)
    assert len(assets) == 2, page.text
    for asset in assets:
        answer = httpx.get(f"{stack.control_url}{asset}", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert answer.headers["content-security-policy"] == policy
    missing = httpx.get(f"{stack.control_url}/console/nowhere", timeout=10)
    assert missing.status_code == 404 and missing.headers["content-security-policy"] == policy
    # Nothing the token opens is in them.
    assert stack.admin_token not in page.text and "demo" not in page.text


async def test_sign_in_refuses_a_wrong_token(console: Console) -> None:
    page = console.page
    console.expected_refusals = (403,)
    await console.open("/console/projects")
    await page.get_by_label("Admin token").fill("not-the-token")
    await page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("invalid_admin_token")
    await console.screenshot("signin-refused")
    assert await page.evaluate("sessionStorage.length") == 0

    await page.get_by_label("Admin token").fill(console.stack.admin_token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    # Kept in the tab's session storage only: not in a cookie, local storage or a URL.
    assert await page.evaluate("sessionStorage.getItem('headwater.adminToken')") == console.stack.admin_token
    assert await page.context.cookies() == []
    assert await page.evaluate("localStorage.length") == 0
    assert all(console.stack.admin_token not in r.url for r in console.requests)
    # Every API call carries it.
    api_calls = [r for r in console.requests if "/v1/" in r.url]
    assert api_calls and all(r.headers.get("authorization", "").startswith("Bearer ") for r in api_calls)

    # A kept token the API stops taking (revoked, say) signs the tab out, saying why.
    await page.evaluate("sessionStorage.setItem('headwater.adminToken', 'revoked-token')")
    await console.open("/console/overview")
    await expect(page.get_by_label("Admin token")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("403 invalid_admin_token")
    assert await page.evaluate("sessionStorage.length") == 0


async def test_a_form_being_filled_survives_the_project_list_arriving(console: Console) -> None:
    """The projects page stays mounted when the list of projects arrives after the page: what was
    typed into the create form before that stays there (it was once wiped by a remount)."""
    page = console.page
    await console.sign_in()
    asked, arrived = asyncio.Event(), asyncio.Event()

    async def hold(route: Route) -> None:
        asked.set()
        await arrived.wait()
        await route.continue_()

    await page.route("**/v1/projects?limit=500", hold)
    await console.open("/console/projects")
    await asyncio.wait_for(asked.wait(), 10)  # the list is asked for, and held
    await page.get_by_label("Id", exact=True).fill("typed_early")
    arrived.set()
    await expect(page.get_by_label("Project", exact=True)).not_to_have_value("")
    await expect(page.get_by_label("Id", exact=True)).to_have_value("typed_early")
    await page.unroute("**/v1/projects?limit=500")


async def test_projects_then_live_events(console: Console) -> None:
    """Creates a project, adds an origin, rotates its public key, and sees events sent with the new
    key from that origin on the live page within seconds, with the refusal of another origin's."""
    stack, page = console.stack, console.page
    console.expected_refusals = (400, 409, 412)
    await console.sign_in()
    await console.open("/console/projects")
    await page.get_by_label("Id", exact=True).fill("web_shop")
    await page.get_by_label("Name", exact=True).fill("Web shop")
    await page.get_by_role("button", name="Create").click()
    created = page.get_by_test_id("created-secret-key")
    await expect(created).to_contain_text("hwsk_")
    # An API refusal is shown as the API words it.
    await page.get_by_label("Id", exact=True).fill("web_shop")
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("alert")).to_contain_text("409 project_exists")

    await page.get_by_role("button", name="web_shop").click()
    origins = page.get_by_label("Allowed origins, one per line").last
    await origins.fill("not an origin")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("alert").last).to_contain_text("invalid_origin")
    await expect(page.get_by_role("alert").last).to_contain_text("allowed_origins[0]")
    await origins.fill("https://shop.example")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_text("Saved (revision")).to_be_visible()
    [patch] = [r for r in console.api_requests("/projects/web_shop") if r.method == "PATCH"][-1:]
    assert patch.headers.get("if-match", "").strip('"').isdigit()
    assert json.loads(patch.post_data or "{}") == {"allowed_origins": ["https://shop.example"]}

    # Settings, edited as JSON: a value out of range is refused naming the field; a change made
    # meanwhile by someone else is not overwritten (If-Match: 412); a fresh read saves.
    await page.get_by_text("Settings (JSON)").click()
    settings_box = page.get_by_label("Settings", exact=True)
    settings = json.loads(await settings_box.input_value())
    settings["sessions"]["inactivity_timeout_seconds"] = 5
    await settings_box.fill(json.dumps(settings, indent=2))
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("alert").last).to_contain_text(
        "settings.sessions.inactivity_timeout_seconds"
    )
    _api(stack, "PATCH", "/projects/web_shop", {"name": "Renamed elsewhere"})
    settings["sessions"]["inactivity_timeout_seconds"] = 900
    await settings_box.fill(json.dumps(settings, indent=2))
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("alert").last).to_contain_text("412 revision_mismatch")
    await page.get_by_role("button", name="Read it again").click()
    await expect(page.get_by_label("Name", exact=True).last).to_have_value("Renamed elsewhere")
    await expect(page.get_by_role("alert")).to_have_count(1)  # the create form's 409 only
    await settings_box.fill(json.dumps(settings, indent=2))
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_text("Saved (revision")).to_be_visible()

    async def stored() -> dict[str, Any]:
        return dict(_api(stack, "GET", "/projects/web_shop")["project"])

    saved = await eventually(stored, lambda p: p["settings"]["sessions"]["inactivity_timeout_seconds"] == 900)
    assert saved["name"] == "Renamed elsewhere"  # not overwritten by the page's older copy

    await page.get_by_label("Kind", exact=True).select_option("public")
    await page.get_by_label("Old keys valid for (seconds)").fill("0")
    await page.get_by_role("button", name="Rotate key").click()
    rotated = page.get_by_test_id("rotated-key")
    await expect(rotated).to_contain_text("hwpk_")
    new_key = (await rotated.inner_text()).strip()
    await console.screenshot("projects")
    project = _api(stack, "GET", "/projects/web_shop")["project"]
    assert project["allowed_origins"] == ["https://shop.example"]
    assert [k["key"] for k in project["public_keys"] if k["expires_at"] is None] == [new_key]

    await console.open("/console/live?project=web_shop")
    await expect(page.get_by_text("No events stored yet.")).to_be_visible()
    event = {
        "type": "track",
        "event": "Live Check",
        "anonymousId": "live-visitor",
        "context": {"userAgent": BROWSER_UA},
    }

    async def accepted() -> int:
        return _send(stack.edge_url, new_key, "https://shop.example", [event]).status_code

    # The edges learn of the new key through KV within moments.
    await eventually(accepted, lambda status: status == 200, timeout=10, interval=0.5)
    refused = _send(stack.edge_url, new_key, "https://elsewhere.example", [{**event, "event": "Elsewhere"}])
    assert refused.status_code == 403, refused.text
    sent_at = time.monotonic()
    await expect(page.locator("table.events").get_by_text("Live Check")).to_be_visible(timeout=20_000)
    print(f"the event was on the live page {time.monotonic() - sent_at:.1f}s after it was sent")
    await expect(page.get_by_text("origin_not_allowed").first).to_be_visible(timeout=20_000)
    await console.screenshot("live")
    polls = console.api_requests("/projects/web_shop/live")
    assert len(polls) >= 2, "the live page polls while it is open"

    # Disabled from the projects page: its keys are refused from then on.
    await console.open("/console/projects")
    await page.get_by_role("button", name="web_shop").click()
    await page.get_by_role("button", name="Disable…").click()
    await page.get_by_role("button", name="Disable web_shop").click()
    await expect(page.get_by_text("Disabled: its keys are refused from now on.")).to_be_visible()
    assert _api(stack, "GET", "/projects/web_shop")["project"]["enabled"] is False

    async def refused_now() -> int:
        return _send(stack.edge_url, new_key, "https://shop.example", [event]).status_code

    await eventually(refused_now, lambda status: status != 200, timeout=10, interval=0.5)


def _seconds(value: float) -> str:
    """As the console writes a duration (console/web/src/format.js)."""
    if value < 60:
        return f"{value:.1f} s"
    minutes = int(value // 60)
    return f"{minutes} min {round(value - minutes * 60)} s"


async def _wait_for_sessions(stack: Stack) -> None:
    async def sessions() -> list[list[Any]]:
        return _sql(stack, "demo", "SELECT count() FROM sessions FINAL")

    await eventually(sessions, lambda rows: rows == [[VISITORS]], timeout=90, interval=2)


async def test_overview_equals_sql(console: Console) -> None:
    stack, page = console.stack, console.page
    await _wait_for_sessions(stack)
    await console.sign_in()
    await console.open("/console/overview?project=demo")
    await expect(page.locator("[data-total=events]")).to_have_text(re.compile(r"^[1-9]"))
    [asked] = [json.loads(r.post_data or "{}") for r in console.api_requests("/projects/demo/overview")]
    assert asked["interval"] == "hour" and asked["include_bots"] is False
    start, end = asked["from"], asked["to"]

    def in_range(column: str) -> str:
        return (
            f"{column} >= parseDateTime64BestEffort('{start}') "
            f"AND {column} < parseDateTime64BestEffort('{end}') AND NOT is_bot"
        )

    [[events, pageviews, visitors]] = _sql(
        stack,
        "demo",
        "SELECT count(), countIf(type = 'page'), uniqExact(if(user_id != '', user_id, anonymous_id))"
        f" FROM events FINAL WHERE {in_range('timestamp')}",
    )
    [[sessions, bounce, average, median]] = _sql(
        stack,
        "demo",
        "SELECT count(), avg(is_bounce), avg(duration_seconds), median(duration_seconds)"
        f" FROM sessions FINAL WHERE {in_range('started_at')}",
    )
    # The seeded data, as SQL reads it (so the comparison below is not between two zeros).
    assert (events, pageviews, visitors, sessions) == (40, 27, 15, 15)
    totals = ("events", "pageviews", "visitors", "sessions", "bounce_rate")
    totals += ("avg_session_seconds", "median_session_seconds")
    shown = {key: await page.locator(f"[data-total={key}]").inner_text() for key in totals}
    assert shown == {
        "events": str(events),
        "pageviews": str(pageviews),
        "visitors": str(visitors),
        "sessions": str(sessions),
        "bounce_rate": f"{bounce * 100:.1f}%",
        "avg_session_seconds": _seconds(average),
        "median_session_seconds": _seconds(median),
    }
    top_pages = page.get_by_role("table", name="Pages")
    await expect(top_pages.get_by_role("row")).to_have_count(1 + 3)  # the header, /, /pricing, /docs
    await expect(page.get_by_role("img", name=re.compile("Events, page views"))).to_be_visible()
    await console.screenshot("overview")


async def test_a_funnel_built_in_the_page_equals_the_api(console: Console) -> None:
    stack, page = console.stack, console.page
    await console.sign_in()
    await console.open("/console/funnels?project=demo")
    for i, (kind, value) in enumerate(FUNNEL_STEPS, start=1):
        await page.get_by_label(f"Step {i} kind").select_option(kind)
        await page.get_by_label(re.compile(f"^Step {i} (path|event name)")).fill(value)
    await page.get_by_role("button", name="Show the funnel").click()
    table = page.locator("table.funnel-steps")
    await expect(table.get_by_role("row")).to_have_count(4)
    shown = [
        [await cell.inner_text() for cell in await row.locator("td").all()][:5]
        for row in await table.locator("tbody tr").all()
    ]
    [asked] = [json.loads(r.post_data or "{}") for r in console.api_requests("/projects/demo/funnels/query")]
    definition = {
        "steps": [{"kind": kind, "value": value} for kind, value in FUNNEL_STEPS],
        "window": {"value": 1, "unit": "day"},
        "order": "ordered",
        "unit": "people",
        "from": asked["from"],
        "to": asked["to"],
    }
    answer = _api(stack, "POST", "/projects/demo/funnels/query", definition)
    counts = [step["count"] for step in answer["steps"]]
    assert counts == [12, 8, 5]  # the seeded data
    assert [int(row[1]) for row in shown] == counts
    assert [int(row[4]) for row in shown] == [step["dropped"] for step in answer["steps"]]
    assert [row[2] for row in shown] == [f"{s['conversion_from_start'] * 100:.1f}%" for s in answer["steps"]]
    await expect(page.get_by_role("img", name=re.compile("^Funnel: "))).to_be_visible()

    # Who dropped at the last step: the visitors who started signing up and did not finish.
    await page.get_by_role("button", name="List the 3").click()
    dropped = page.get_by_test_id("dropped-people")
    await expect(dropped.locator("li")).to_have_count(3)
    assert sorted(await dropped.locator("li").all_inner_texts()) == ["visitor-05", "visitor-06", "visitor-07"]

    # Broken down by a column: one row per value, with the same counts here (every visitor used Chrome).
    await page.get_by_label("Breakdown by (optional)").fill("browser")
    await page.get_by_role("button", name="Show the funnel").click()
    breakdown = page.get_by_role("table", name="Breakdown: people per step and value")
    await expect(breakdown.get_by_role("row", name=re.compile("^Chrome"))).to_have_text(
        re.compile(r"Chrome\s*12\s*8\s*5\s*41\.7%")
    )
    await page.get_by_label("Breakdown by (optional)").fill("")

    await page.get_by_label("Name", exact=True).fill("Pricing to sign-up")
    await page.get_by_role("button", name="Save this funnel").click()
    await expect(page.get_by_role("heading", name=re.compile("Daily trend of"))).to_be_visible()
    trend = page.get_by_role("table", name="Per day of entry (UTC)")
    await expect(trend).to_contain_text("41.7%")  # 5 of 12 on the seeded day
    saved = _api(stack, "GET", "/projects/demo/funnels")["funnels"]
    [funnel] = [f for f in saved if f["name"] == "Pricing to sign-up"]
    assert [(step["kind"], step["value"]) for step in funnel["steps"]] == FUNNEL_STEPS
    await console.screenshot("funnels")


async def test_paths_and_suggestions_render(console: Console) -> None:
    stack, page = console.stack, console.page
    await _wait_for_sessions(stack)
    await console.sign_in()
    await console.open("/console/paths?project=demo")
    await page.get_by_label("Point (empty: every journey's first step)").fill("/pricing")
    await page.get_by_role("button", name="Show the paths").click()
    flows = page.locator("table.flows")
    await expect(flows).to_contain_text("Signup Started")
    await expect(page.get_by_role("heading", name="12 people")).to_be_visible()
    await expect(page.get_by_role("img", name=re.compile("^Sankey"))).to_be_visible()
    await console.screenshot("paths")

    async def journeys() -> list[list[Any]]:
        return _sql(stack, "patterns", "SELECT uniqExact(anonymous_id) FROM events")

    await eventually(journeys, lambda rows: rows == [[PLANTED.sessions]], timeout=60, interval=1)
    await console.open("/console/suggestions?project=patterns")
    await page.get_by_label("Journeys of").select_option("people")
    await page.get_by_label("Goal (optional: finds its drivers)").fill("Purchased")
    await page.get_by_role("button", name="Find patterns").click()
    patterns = page.locator("table.patterns tbody tr")
    await expect(patterns.first).to_be_visible(timeout=30_000)
    await expect(page.get_by_text("From 800 people")).to_be_visible()
    assert await patterns.count() >= 1
    assert "No pattern stands out" not in await patterns.first.inner_text()
    journey = (await patterns.first.locator("td").first.inner_text()).strip()
    await patterns.first.get_by_role("button", name=re.compile("^Save .* as a funnel$")).click()
    await expect(patterns.first.get_by_role("status")).to_have_text("Saved")
    await expect(page.get_by_role("heading", name=re.compile("^Drivers of"))).to_be_visible()
    await console.screenshot("suggestions")
    await expect(page.locator("table.drivers tbody tr").first).to_contain_text("raises")
    names = [f["name"] for f in _api(stack, "GET", "/projects/patterns/funnels")["funnels"]]
    assert journey in names


async def test_health_lists_the_roles(console: Console) -> None:
    page = console.page
    await console.sign_in()
    await console.open("/console/health")
    nodes = page.locator("table.nodes")
    for role in ("edge", "consumer", "sessionizer", "control"):
        await expect(nodes.get_by_role("cell", name=role, exact=True)).to_be_visible(timeout=30_000)
    await expect(page.get_by_role("table", name="JetStream streams and how full they are")).to_contain_text(
        "HW_EVENTS"
    )
    await expect(page.get_by_test_id("dead-letters")).to_have_text("0")
    edge = nodes.get_by_role("row").filter(has=page.get_by_role("cell", name="edge", exact=True))
    await expect(edge).to_contain_text(re.compile(r"spool \d+ waiting \("))  # the edge's spool depth
    await console.screenshot("health")


async def test_every_page_is_reachable_by_keyboard(console: Console) -> None:
    page = console.page
    await console.sign_in()
    await console.open("/console/overview?project=demo")
    reached = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate("document.activeElement.textContent.trim()"))
    for title in ("Projects", "Live", "Overview", "Funnels", "Paths", "Suggestions", "Health"):
        assert title in reached, reached
    # The focused element is visibly outlined.
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
