"""The bodies of the endpoints the console reads (docs/control-api.md, "Health", "Live",
"Overview"): `GET /v1/health`, `GET /v1/projects/{id}/live`, `POST /v1/projects/{id}/overview`,
as msgspec Structs; the OpenAPI document's schemas are generated from them."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from msgspec import Meta, Struct, field

from headwater.analytics.overview import Interval

from .schemas import AwareTime, IncludeBots, IsoTime

Schema = dict[str, Any]
Count = Annotated[int, Meta(ge=0)]
LIVE_DEFAULT_LIMIT = 50
LIVE_MAX_LIMIT = 200

# -- overview -------------------------------------------------------------------------------------


class OverviewRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    start: Annotated[AwareTime, Meta(description="From this time (inclusive).")] = field(name="from")
    end: Annotated[
        AwareTime, Meta(description="Up to this time (exclusive); at most 400 days after `from`.")
    ] = field(name="to")
    interval: Annotated[
        Interval, Meta(description="The series' bucket, in UTC; `hour` over at most 31 days.")
    ] = "day"
    limit: Annotated[int, Meta(ge=1, le=100, description="Entries of each top list.")] = 10
    include_bots: IncludeBots = False

    json_schema_extra: ClassVar[Schema] = {
        "examples": [
            {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "interval": "day", "limit": 10}
        ]
    }


class OverviewTotals(Struct, forbid_unknown_fields=True):
    events: Count
    pageviews: Count
    visitors: Annotated[int, Meta(ge=0, description="Distinct user ids, else anonymous ids.")]
    sessions: Count
    bounce_rate: Annotated[float, Meta(ge=0, le=1, description="Bounced sessions / sessions; 0 without any.")]
    avg_session_seconds: Annotated[float, Meta(ge=0)]
    median_session_seconds: Annotated[float, Meta(ge=0)]


class OverviewPoint(Struct, forbid_unknown_fields=True):
    t: Annotated[IsoTime, Meta(description="The bucket's start (UTC).")]
    events: Count
    pageviews: Count
    visitors: Count
    sessions: Count


class TopValue(Struct, forbid_unknown_fields=True):
    value: str
    count: Count


class OverviewTop(Struct, forbid_unknown_fields=True):
    pages: list[TopValue]
    referrers: list[TopValue]
    channels: list[TopValue]
    countries: list[TopValue]
    browsers: list[TopValue]
    devices: list[TopValue]


class OverviewAnswer(Struct, forbid_unknown_fields=True):
    totals: OverviewTotals
    series: Annotated[list[OverviewPoint], Meta(description="Every bucket of the range, in order.")]
    top: OverviewTop


# -- live -----------------------------------------------------------------------------------------


class LiveEvent(Struct, forbid_unknown_fields=True):
    received_at: IsoTime
    timestamp: IsoTime
    type: str
    event: str
    anonymous_id: str
    user_id: str
    url: str
    path: str
    country: Annotated[str, Meta(description="ISO 3166 code; empty when unknown.")]
    browser: str
    is_bot: bool
    message_id: str


class ReasonCount(Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(description="The edge's error code, e.g. `origin_not_allowed`.")]
    count: Count


class RefusalSample(Struct, forbid_unknown_fields=True):
    at: IsoTime
    reason: str
    field: str | None
    message: str
    node: Annotated[str, Meta(description="The edge node that refused.")]


class Refusals(Struct, forbid_unknown_fields=True):
    window_seconds: Annotated[int, Meta(ge=1)]
    counts: Annotated[list[ReasonCount], Meta(description="By reason over the window, most first.")]
    recent: Annotated[list[RefusalSample], Meta(description="The latest refusals, newest first.")]


class LiveAnswer(Struct, forbid_unknown_fields=True):
    events: Annotated[list[LiveEvent], Meta(description="The last events received, newest first.")]
    refusals: Refusals


# -- health ---------------------------------------------------------------------------------------


class NodeStatus(Struct, forbid_unknown_fields=True):
    role: Annotated[str, Meta(description="`edge`, `control`, `consumer` or `sessionizer`.")]
    node: Annotated[str, Meta(description="`hostname-pid` of the process.")]
    ready: bool
    checks: dict[str, bool]
    details: Annotated[dict[str, Any], Meta(description="As the role's /readyz reports them.")]
    reported_at: IsoTime
    age_seconds: Annotated[float, Meta(description="Seconds since the report (as this clock reads).")]


class ConsumerStatus(Struct, forbid_unknown_fields=True):
    stream: str
    name: str
    pending: Annotated[int, Meta(ge=0, description="Messages not delivered yet: the consumer's lag.")]
    ack_pending: Count
    redelivered: Count


class StreamStatus(Struct, forbid_unknown_fields=True):
    name: str
    messages: Count
    bytes: Count
    max_bytes: Annotated[int, Meta(description="-1: unlimited.")]
    max_age_seconds: Annotated[float, Meta(ge=0, description="0: unlimited.")]
    usage: Annotated[float | None, Meta(description="bytes / max_bytes; null when unlimited.")]


class DeadLetters(Struct, forbid_unknown_fields=True):
    messages: Count
    bytes: Count


class HealthAnswer(Struct, forbid_unknown_fields=True):
    generated_at: IsoTime
    nodes: list[NodeStatus]
    consumers: list[ConsumerStatus]
    streams: list[StreamStatus]
    dead_letters: DeadLetters
    refusals_without_project: Annotated[
        list[ReasonCount], Meta(description="Refusals of the last hour no project could be named for.")
    ]
