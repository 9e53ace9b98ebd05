"""A project's tunable settings: rate limits, the consumer's batching span, anonymisation rules.

Declared once as msgspec Structs: their types, defaults and ranges are the validation (when the
control plane receives settings, and when a project's config is read back), and the OpenAPI
document's schemas are generated from them (control/openapi.py). Applied by the edge (rate limits)
and the consumers (batching, anonymisation). Updates merge: a PATCH that names one field of a group
leaves the group's other fields as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from headwater.core.service.errors import APIError
from headwater.core.service.validation import convert_body
from headwater.privacy.bots import MAX_NETWORK_LENGTH, NETWORK_PATTERN, parse_network
from headwater.privacy.cookieless import CookielessMode
from headwater.privacy.rules import MAX_RULES, Rule, rule_problem

IpHandling = Literal["keep", "truncate", "drop"]
IP_HANDLING: tuple[IpHandling, ...] = ("keep", "truncate", "drop")
MAX_REDACTED_PROPERTIES = 100

EventsPerSecond = Annotated[float, Meta(ge=0.01, le=1e7)]
PropertyName = Annotated[str, Meta(min_length=1, max_length=200)]
MAX_APP_IDS = 50
# What Snowplow trackers send as `aid`: printable, no spaces (a key-shaped value is not refused here,
# but an app id equal to one of the project's keys would be pointless).
AppId = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[!-~]+$")]


class RateLimits(Struct, frozen=True, forbid_unknown_fields=True):
    """Events per second, refilled continuously; `burst_seconds` of headroom. None: unlimited."""

    project_events_per_second: Annotated[
        EventsPerSecond | None, Meta(description="Events per second for the whole project; null: unlimited.")
    ] = None
    ip_events_per_second: Annotated[
        EventsPerSecond | None, Meta(description="Events per second per client IP; null: unlimited.")
    ] = None
    burst_seconds: Annotated[
        float, Meta(ge=0.1, le=3600, description="Seconds of headroom above the rate.")
    ] = 10.0


class Batching(Struct, frozen=True, forbid_unknown_fields=True):
    span_seconds: Annotated[
        float, Meta(ge=0.05, le=60, description="How long the consumer batches events.")
    ] = 1.0


class Anonymisation(Struct, frozen=True, forbid_unknown_fields=True):
    ip: Annotated[IpHandling, Meta(description="What happens to client IPs.")] = "truncate"
    redact_properties: Annotated[
        tuple[PropertyName, ...],
        Meta(
            max_length=MAX_REDACTED_PROPERTIES,
            description="Event property names removed before storage (a name given twice is kept once).",
        ),
    ] = ()
    rules: Annotated[
        tuple[Rule, ...],
        Meta(
            max_length=MAX_RULES,
            description=(
                "Anonymisation rules, applied in order by the consumers before an event is stored "
                "(docs/privacy.md, Anonymisation rules)."
            ),
        ),
    ] = ()


class Snowplow(Struct, frozen=True, forbid_unknown_fields=True):
    """How Snowplow trackers name this project (docs/ingest-api.md, Snowplow)."""

    app_ids: Annotated[
        tuple[AppId, ...],
        Meta(
            max_length=MAX_APP_IDS,
            description=(
                "Snowplow app ids (`aid`, the tracker's appId) whose events belong to this project, "
                "beside its keys. Treated as a public key: from browsers only on the allowed origins. "
                "An app id may belong to one project only (a name given twice is kept once)."
            ),
        ),
    ] = ()
    allow_without_origin: Annotated[
        bool,
        Meta(
            description=(
                "Accept app-id events that carry no Origin (server-side trackers). Anyone who knows "
                "the app id can then send events; use a secret key as `aid` where you can."
            )
        ),
    ] = False


BotMode = Literal["flag", "drop"]
MAX_IP_BLOCKLIST = 1000
Cidr = Annotated[str, Meta(max_length=MAX_NETWORK_LENGTH, pattern=NETWORK_PATTERN)]


class Bots(Struct, frozen=True, forbid_unknown_fields=True):
    """What the consumers do with events that are not a person's (docs/privacy.md, "Bot and spam
    filtering")."""

    mode: Annotated[
        BotMode,
        Meta(
            description=(
                "flag: store bots' events with is_bot and bot_reason (queries leave them out by "
                "default); drop: do not store them (counted per reason in the consumer's metrics)."
            )
        ),
    ] = "flag"
    ip_blocklist: Annotated[
        tuple[Cidr, ...],
        Meta(
            max_length=MAX_IP_BLOCKLIST,
            description=(
                "Networks (CIDR, or single addresses) whose events are bots' (reason ip_blocklist); "
                "stored in canonical form, a network given twice kept once."
            ),
        ),
    ] = ()
    referrer_spam: Annotated[
        bool, Meta(description="Flag events whose referrer is a known referrer spammer.")
    ] = True
    datacentre: Annotated[
        bool,
        Meta(
            description=(
                "Flag events from the data-centre ranges the operator gave the consumers "
                "(--datacentre-ranges); no effect without them."
            )
        ),
    ] = True


SessionIdentity = Literal["anonymous_id", "user_id"]


class Sessions(Struct, frozen=True, forbid_unknown_fields=True):
    """How events are grouped into sessions (docs/sessions.md)."""

    inactivity_timeout_seconds: Annotated[
        int,
        Meta(
            ge=60,
            le=36_000,
            description="A gap between two events of a visitor longer than this starts a new session.",
        ),
    ] = 1800
    max_length_seconds: Annotated[
        int,
        Meta(
            ge=60,
            le=7 * 86_400,
            description=(
                "A visit longer than this is cut into sessions of this length, measured from its first event."
            ),
        ),
    ] = 86_400
    identity: Annotated[
        SessionIdentity,
        Meta(description="The id a session follows; the other one when an event has no such id."),
    ] = "anonymous_id"
    honour_client_session_id: Annotated[
        bool,
        Meta(
            description=(
                "A change of the session id a client sends (context.sessionId: the SDK's, Snowplow's "
                "sid) starts a new session."
            )
        ),
    ] = True
    lateness_seconds: Annotated[
        int,
        Meta(
            ge=0,
            le=7 * 86_400,
            description=(
                "How long after its session closed an event may arrive and still re-open and "
                "re-aggregate it; later ones are counted, not sessionized."
            ),
        ),
    ] = 21_600


class Cookieless(Struct, frozen=True, forbid_unknown_fields=True):
    """Visitor ids without cookies: a daily-salted hash made by the edge (docs/privacy.md)."""

    mode: Annotated[
        CookielessMode,
        Meta(
            description=(
                "`off`: ids as clients send them; `missing`: a browser event (public key) without an "
                "anonymousId gets the cookieless one; `always`: every browser event's anonymousId is "
                "replaced by it. Under `missing` and `always` the edge keeps only the /24 (IPv4) or /48 "
                "(IPv6) network of every address of the project's events."
            )
        ),
    ] = "off"


class ProjectSettings(Struct, frozen=True, forbid_unknown_fields=True):
    """A project's settings; in a request, the groups and fields to change (those not named keep
    their values, or take the defaults shown when the project is created)."""

    rate_limits: RateLimits = RateLimits()
    batching: Batching = Batching()
    anonymisation: Anonymisation = Anonymisation()
    snowplow: Snowplow = Snowplow()
    sessions: Sessions = Sessions()
    cookieless: Cookieless = Cookieless()
    bots: Bots = Bots()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(self)
        data["anonymisation"]["redact_properties"] = list(self.anonymisation.redact_properties)
        data["anonymisation"]["rules"] = [
            msgspec.json.decode(msgspec.json.encode(r)) for r in self.anonymisation.rules
        ]
        data["snowplow"]["app_ids"] = list(self.snowplow.app_ids)
        data["bots"]["ip_blocklist"] = list(self.bots.ip_blocklist)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, field_prefix: str = "settings") -> ProjectSettings:
        """Settings given in full or in part (fields not named take their defaults); APIError naming
        the field at fault otherwise."""
        settings = convert_body(_whole_numbers_as_integers({} if data is None else data), cls, field_prefix)
        names = settings.anonymisation.redact_properties
        if len(set(names)) != len(names):
            unique = msgspec.structs.replace(
                settings.anonymisation, redact_properties=tuple(dict.fromkeys(names))
            )
            settings = msgspec.structs.replace(settings, anonymisation=unique)
        for index, rule in enumerate(settings.anonymisation.rules):
            problem = rule_problem(rule)
            if problem is not None:
                field = f"{field_prefix}.anonymisation.rules[{index}].{problem.field}"
                raise APIError(400, "invalid_field", f"{field}: {problem.message}", field)
        app_ids = settings.snowplow.app_ids
        if len(set(app_ids)) != len(app_ids):
            snowplow = msgspec.structs.replace(settings.snowplow, app_ids=tuple(dict.fromkeys(app_ids)))
            settings = msgspec.structs.replace(settings, snowplow=snowplow)
        return _canonical_blocklist(settings, field_prefix)

    def merged(self, patch: object, field_prefix: str = "settings") -> ProjectSettings:
        """These settings with `patch` applied; APIError naming the field at fault otherwise."""
        if not isinstance(patch, dict):
            raise APIError(400, "invalid_field", f"{field_prefix} must be an object", field_prefix)
        current = self.to_dict()
        for group, fields in patch.items():
            if isinstance(fields, dict) and isinstance(current.get(group), dict):
                fields = {**current[group], **fields}
            current[group] = fields
        return self.from_dict(current, field_prefix)


def _canonical_blocklist(settings: ProjectSettings, field_prefix: str) -> ProjectSettings:
    """The bots group's networks checked (APIError naming the entry at fault) and in canonical form."""
    networks = []
    for index, text in enumerate(settings.bots.ip_blocklist):
        try:
            networks.append(str(parse_network(text)))
        except ValueError as exc:
            field = f"{field_prefix}.bots.ip_blocklist[{index}]"
            raise APIError(400, "invalid_field", f"{field}: {exc}", field) from None
    canonical = tuple(dict.fromkeys(networks))
    if canonical == settings.bots.ip_blocklist:
        return settings
    bots = msgspec.structs.replace(settings.bots, ip_blocklist=canonical)
    return msgspec.structs.replace(settings, bots=bots)


def _whole_numbers_as_integers(data: dict[str, Any]) -> dict[str, Any]:
    """JSON has one number type: 60.0 is the integer 60 to JSON Schema (and to the OpenAPI document
    generated from these settings), so the sessions group's integer fields take it too."""
    group = data.get("sessions")
    if not isinstance(group, dict):
        return data
    whole = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in group.items()}
    return {**data, "sessions": whole}
