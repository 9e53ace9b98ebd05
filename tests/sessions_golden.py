"""The golden fixture of the sessions table: events as browsers and servers send them, and the
sessions they make under the default rules (30-minute timeout, 24-hour maximum, identity = the
anonymous id, client session ids honoured), worked out by hand from docs/sessions.md and written
out here — not computed by the sessionizer or its reference.

Times are offsets from BASE, two days ago at a whole hour: without a `sentAt` the consumer keeps
an event's timestamp as sent, and the project allows a week of lateness (LATENESS_SECONDS), so that
the sessionizer, which has already run on the empty project, takes them all as late arrivals
re-opening their sessions (a fixed date would be months late on a later run).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
LATENESS_SECONDS = 7 * 86_400  # the most a project may allow
SITE = "https://shop.example"
DESKTOP = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def at(hours: float = 0, minutes: float = 0, seconds: float = 0, ms: int = 0) -> datetime:
    return BASE + timedelta(hours=hours, minutes=minutes, seconds=seconds, milliseconds=ms)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(
    message_id: str,
    who: str,
    when: datetime,
    kind: str = "page",
    path: str | None = None,
    *,
    query: str = "",
    referrer: str = "",
    user_id: str = "",
    agent: str = DESKTOP,
    client_session: str = "",
) -> dict[str, Any]:
    """A Segment message. A page call names its page (`path`, the URL with `query`, `referrer`);
    other calls carry no page (as a server-side library sends them)."""
    context: dict[str, Any] = {"userAgent": agent}
    message: dict[str, Any] = {"type": kind, "messageId": message_id, "anonymousId": who}
    message["timestamp"] = iso(when)
    if path is not None:
        context["page"] = {"url": f"{SITE}{path}{query}", "path": path, "referrer": referrer}
    if client_session:
        context["sessionId"] = client_session
    if user_id:
        message["userId"] = user_id
    if kind == "track":
        message["event"] = "Clicked"
    message["context"] = context
    return message


# ------------------------------------------------------------------------------------------------
# The events

# Landing-page query strings carrying UTM parameters (the consumer reads them from the URL).
PAID = "utm_source=google&utm_medium=cpc&utm_campaign=spring"
MAILED = "utm_source=newsletter&utm_medium=email&utm_content=top"
DISPLAYED = "utm_source=partner&utm_medium=display&utm_term=shoes"

EVENTS: list[dict[str, Any]] = [
    # gap: 29:59 apart stays, exactly 30:00 apart stays, 30:00.001 apart starts a session.
    event("gap-1", "gap", at(0), path="/a"),
    event("gap-2", "gap", at(0, 29, 59), path="/b"),
    event("gap-3", "gap", at(0, 59, 59), path="/c"),
    event("gap-4", "gap", at(1, 29, 59, ms=1), path="/d"),
    event("gap-5", "gap", at(1, 40), "track"),
    # bounces: one page; a page and an identify (which does not count); a page and a track; two pages.
    event("b1-1", "bounce1", at(2), path="/only"),
    event("b2-1", "bounce2", at(2), path="/only"),
    event("b2-2", "bounce2", at(2, 1), "identify", user_id="user-b2"),
    event("b3-1", "bounce3", at(2), path="/only"),
    event("b3-2", "bounce3", at(2, 1), "track"),
    event("b4-1", "twopages", at(2), path="/one"),
    event("b4-2", "twopages", at(2, 2), path="/two"),
    # channels: one visitor, a session every two hours, each one page entered from elsewhere.
    event("ch-1", "channels", at(0), path="/"),
    event("ch-2", "channels", at(2), path="/", referrer="https://www.google.com/"),
    event("ch-3", "channels", at(4), path="/", query=f"?{PAID}"),
    event("ch-4", "channels", at(6), path="/", referrer="https://t.co/abc"),
    event("ch-5", "channels", at(8), path="/", query=f"?{MAILED}"),
    event("ch-6", "channels", at(10), path="/", referrer="https://blog.example.org/post"),
    event("ch-7", "channels", at(12), path="/", query=f"?{DISPLAYED}"),
    event("ch-8", "channels", at(14), path="/x", referrer="https://shop.example/"),
    # identifies mid-session: the first anonymous id, the last user id.
    event("id-1", "ident", at(3), path="/home"),
    event("id-2", "ident", at(3, 1), "identify", user_id="user-7"),
    event("id-3", "ident", at(3, 2), "track", user_id="user-7"),
    event("id-4", "ident", at(3, 3), path="/account", user_id="user-7"),
    # the first event has no page: the entry is the first event with one.
    event("tf-1", "trackfirst", at(3), "track"),
    event("tf-2", "trackfirst", at(3, 1), path="/landing", referrer="https://www.bing.com/search"),
    # a message stored twice (sent again below, in a request of its own) counts once.
    event("dup-1", "dup", at(4), path="/x"),
    event("dup-2", "dup", at(4, 5), path="/y"),
    # client session ids: a change starts a session; an event without one continues its visit.
    event("sid-1", "sid", at(5), path="/p1", client_session="s1"),
    event("sid-2", "sid", at(5, 5), path="/p2", client_session="s1"),
    event("sid-3", "sid", at(5, 10), path="/p3", client_session="s2"),
    event("sid-4", "sid", at(5, 12), path="/p4"),
    # devices: a phone; a crawler.
    event("ph-1", "phone", at(6), path="/m", agent=PHONE),
    event("bot-1", "bot", at(6), path="/r1", agent=BOT),
    event("bot-2", "bot", at(6, 0, 30), path="/r2", agent=BOT),
]
# long: a page every 20 minutes for 25 hours from midnight (76 pages), cut at 24 hours.
EVENTS += [event(f"long-{i}", "long", at(-8, 20 * i), path=f"/long/{i}") for i in range(76)]
# regulars: ten visitors, three sessions each (three hours apart), of two pages five minutes apart.
REGULARS = [f"reg{n:02}" for n in range(10)]
EVENTS += [
    event(f"{who}-{k}-{page}", who, at(3 * k, n + 5 * (page - 1)), path=f"/r/{k}/{page}")
    for n, who in enumerate(REGULARS)
    for k in range(3)
    for page in (1, 2)
]
SENT_AGAIN = [next(e for e in EVENTS if e["messageId"] == "dup-1")]


# ------------------------------------------------------------------------------------------------
# The sessions


def session_id(identity: str, first_message_id: str) -> str:
    """docs/sessions.md: lower(hex(MD5(identity ‖ '\\0' ‖ first event's message_id)))."""
    return hashlib.md5(f"{identity}\0{first_message_id}".encode()).hexdigest()  # noqa: S324 -- an id


@dataclass(frozen=True)
class Expected:
    identity: str
    first: str  # the first event's message id
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    events: int
    pageviews: int
    entry_path: str
    exit_path: str
    is_bounce: bool
    is_new_visitor: bool
    channel: str = "direct"
    visit_started_at: datetime | None = None  # None: started_at
    entry_query: str = ""
    entry_referrer: str = ""
    referrer_host: str = ""
    utm: dict[str, str] = field(default_factory=dict)
    user_id: str = ""
    device: tuple[str, str, str] = ("Chrome", "Linux", "desktop")
    is_bot: bool = False

    def row(self) -> dict[str, Any]:
        """Every column of the sessions table."""
        browser, os, device_type = self.device
        return {
            "session_id": session_id(self.identity, self.first),
            "identity": self.identity,
            "anonymous_id": self.identity,
            "user_id": self.user_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "visit_started_at": self.visit_started_at or self.started_at,
            "duration_seconds": self.duration_seconds,
            "events": self.events,
            "pageviews": self.pageviews,
            "entry_url": f"{SITE}{self.entry_path}{self.entry_query}" if self.entry_path else "",
            "entry_path": self.entry_path,
            "entry_referrer": self.entry_referrer,
            "referrer_host": self.referrer_host,
            "utm_source": self.utm.get("source", ""),
            "utm_medium": self.utm.get("medium", ""),
            "utm_campaign": self.utm.get("campaign", ""),
            "utm_term": self.utm.get("term", ""),
            "utm_content": self.utm.get("content", ""),
            "exit_path": self.exit_path,
            "channel": self.channel,
            "is_bounce": self.is_bounce,
            "is_new_visitor": self.is_new_visitor,
            "browser": browser,
            "os": os,
            "device_type": device_type,
            "country": "",  # the test's client address is local: no place
            "region": "",
            "city": "",
            "is_bot": self.is_bot,
        }


def _channel(hours: int, first: str, channel: str, new: bool, path: str = "/", **entry: Any) -> Expected:
    return Expected(
        "channels", first, at(hours), at(hours), 0.0, 1, 1, path, path, True, new, channel, **entry
    )


SESSIONS: list[Expected] = [
    Expected("gap", "gap-1", at(0), at(0, 59, 59), 3599.0, 3, 3, "/a", "/c", False, True),
    Expected("gap", "gap-4", at(1, 29, 59, ms=1), at(1, 40), 600.999, 2, 1, "/d", "/d", False, False),
    Expected("bounce1", "b1-1", at(2), at(2), 0.0, 1, 1, "/only", "/only", True, True),
    Expected("bounce2", "b2-1", at(2), at(2, 1), 60.0, 2, 1, "/only", "/only", True, True, user_id="user-b2"),
    Expected("bounce3", "b3-1", at(2), at(2, 1), 60.0, 2, 1, "/only", "/only", False, True),
    Expected("twopages", "b4-1", at(2), at(2, 2), 120.0, 2, 2, "/one", "/two", False, True),
    _channel(0, "ch-1", "direct", True),
    _channel(2, "ch-2", "organic_search", False, entry_referrer="https://www.google.com/",
             referrer_host="www.google.com"),
    _channel(4, "ch-3", "paid_search", False, entry_query=f"?{PAID}",
             utm={"source": "google", "medium": "cpc", "campaign": "spring"}),
    _channel(6, "ch-4", "social", False, entry_referrer="https://t.co/abc", referrer_host="t.co"),
    _channel(8, "ch-5", "email", False, entry_query=f"?{MAILED}",
             utm={"source": "newsletter", "medium": "email", "content": "top"}),
    _channel(10, "ch-6", "referral", False, entry_referrer="https://blog.example.org/post",
             referrer_host="blog.example.org"),
    _channel(12, "ch-7", "other", False, entry_query=f"?{DISPLAYED}",
             utm={"source": "partner", "medium": "display", "term": "shoes"}),
    # a referrer on the site's own host is no source: direct
    _channel(14, "ch-8", "direct", False, "/x", entry_referrer="https://shop.example/",
             referrer_host="shop.example"),
    Expected("ident", "id-1", at(3), at(3, 3), 180.0, 4, 2, "/home", "/account", False, True,
             user_id="user-7"),
    Expected("trackfirst", "tf-1", at(3), at(3, 1), 60.0, 2, 1, "/landing", "/landing", False, True,
             "organic_search", entry_referrer="https://www.bing.com/search", referrer_host="www.bing.com"),
    Expected("dup", "dup-1", at(4), at(4, 5), 300.0, 2, 2, "/x", "/y", False, True),
    Expected("sid", "sid-1", at(5), at(5, 5), 300.0, 2, 2, "/p1", "/p2", False, True),
    Expected("sid", "sid-3", at(5, 10), at(5, 12), 120.0, 2, 2, "/p3", "/p4", False, False),
    Expected("phone", "ph-1", at(6), at(6), 0.0, 1, 1, "/m", "/m", True, True,
             device=("Mobile Safari", "iOS", "mobile")),
    Expected("bot", "bot-1", at(6), at(6, 0, 30), 30.0, 2, 2, "/r1", "/r2", False, True,
             device=("Googlebot", "Other", "bot"), is_bot=True),
    # 72 pages from 00:00 to 23:40, then the 4 from 24:00 (the maximum length from the visit's
    # start) to 25:00: one visit, two sessions.
    Expected("long", "long-0", at(-8), at(-8, 1420), 85200.0, 72, 72, "/long/0", "/long/71", False, True),
    Expected("long", "long-72", at(16), at(17), 3600.0, 4, 4, "/long/72", "/long/75", False, False,
             visit_started_at=at(-8)),
]  # fmt: skip
SESSIONS += [
    Expected(
        who,
        f"{who}-{k}-1",
        at(3 * k, n),
        at(3 * k, n + 5),
        300.0,
        2,
        2,
        f"/r/{k}/1",
        f"/r/{k}/2",
        False,
        k == 0,
    )
    for n, who in enumerate(REGULARS)
    for k in range(3)
]
