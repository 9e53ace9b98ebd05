"""The control API's request and response bodies, declared once as msgspec Structs.

A request body is converted to its struct (core/service/validation.py: a 400 naming the field at
fault); the OpenAPI document's schemas are generated from these structs (openapi.py). Rules a type
cannot express (origin syntax, the project id's exact match, `*` needing `allow_any_origin`) are
checked in `__post_init__` or by the service, with the same error codes. `error_codes` maps a
field to its error code where it is not `invalid_field`. `json_schema_extra` adds what the
generated schema cannot say (cross-field rules, examples) to the struct's component.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

from headwater.analytics.funnels.definition import (
    MAX_EXCLUSIONS,
    Attribution,
    Order,
    PeopleStatus,
    StepKind,
    Unit,
)
from headwater.analytics.funnels.filters import (
    KEY_PATTERN,
    MAX_FUNNEL_FILTERS,
    MAX_KEY_LENGTH,
    MAX_STEP_FILTERS,
    FilterOp,
)
from headwater.analytics.paths.definition import Include as PathsInclude
from headwater.analytics.patterns.anomalies import Seasonality
from headwater.analytics.patterns.anomalies import Status as AnomalyStatus
from headwater.core.projects.keys import KeyKind
from headwater.core.projects.origins import normalise_origins
from headwater.core.projects.project import PROJECT_ID_PATTERN, validate_project_id
from headwater.core.projects.settings import ProjectSettings

Schema = dict[str, Any]

MAX_GRACE_SECONDS = 30 * 24 * 3600
DEFAULT_GRACE_SECONDS = 24 * 3600

ProjectId = Annotated[
    str,
    Meta(
        pattern=PROJECT_ID_PATTERN.pattern,
        description="Lowercase letters, digits and `_`: a subject token and part of a database name.",
        examples=["shop"],
    ),
]
ProjectName = Annotated[
    str, Meta(max_length=200, pattern=r"\S", description="Surrounding whitespace is removed.")
]
OriginInput = Annotated[
    str,
    Meta(
        pattern=r"\S",
        description="An origin `scheme://host[:port]` (http or https; normalised: lowercase host, "
        "default port and trailing `/` dropped), a wildcard over the subdomains of a domain of at "
        "least two labels (`https://*.example.com`), or `*` (needs `allow_any_origin: true`). "
        "A bad entry is refused with `400 invalid_origin` naming it, e.g. `allowed_origins[1]`.",
        examples=["https://shop.example.com"],
    ),
]
# Settings in a request are merged onto the project's (onto the defaults for a new project) by
# ProjectSettings.merged, so they stay a dict until then; the document gives the settings' schema.
SettingsPatch = Annotated[
    dict[str, Any], Meta(extra_json_schema={"$ref": "#/components/schemas/ProjectSettings"})
]
_GRACE_RANGE = Meta(ge=0, le=MAX_GRACE_SECONDS)
GraceSeconds = Annotated[
    Annotated[int, _GRACE_RANGE] | Annotated[float, _GRACE_RANGE] | None,
    Meta(description="How long the current keys of this kind stay valid; null: 24 hours."),
]

# `*` may be written with surrounding whitespace; it is then stored as `*`.
_ANY_ORIGIN_ENTRY = {"type": "string", "pattern": r"^\s*\*\s*$"}
_ANY_ORIGIN_NEEDS_CONFIRMING: Schema = {
    "if": {
        "properties": {"allowed_origins": {"contains": _ANY_ORIGIN_ENTRY}},
        "required": ["allowed_origins"],
    },
    "then": {"properties": {"allow_any_origin": {"const": True}}},
}

IncludeBots = Annotated[
    bool,
    Meta(
        description="Count the events of bots and spam (`is_bot`: crawlers, automation, blocked "
        "addresses, referrer spam; docs/privacy.md), which are left out by default."
    ),
]

# -- requests ---------------------------------------------------------------------------------


class CreateProject(Struct, forbid_unknown_fields=True):
    id: ProjectId
    name: (
        Annotated[ProjectName, Meta(description="Defaults to the id; surrounding whitespace is removed.")]
        | UnsetType
    ) = UNSET
    allowed_origins: tuple[OriginInput, ...] = ()
    allow_any_origin: Annotated[bool, Meta(description="Confirms `*` in allowed_origins.")] = False
    settings: SettingsPatch = {}

    error_codes: ClassVar[dict[str, str]] = {
        "id": "invalid_project_id",
        "allowed_origins[]": "invalid_origin",
    }
    json_schema_extra: ClassVar[Schema] = {
        "if": _ANY_ORIGIN_NEEDS_CONFIRMING["if"],
        "then": {**_ANY_ORIGIN_NEEDS_CONFIRMING["then"], "required": ["allow_any_origin"]},
        "examples": [
            {
                "id": "shop",
                "name": "Shop",
                "allowed_origins": ["https://shop.example.com", "https://*.example.org"],
            }
        ],
    }

    def __post_init__(self) -> None:
        validate_project_id(self.id)  # the pattern's `$` also matches before a final newline
        self.name = self.id if isinstance(self.name, UnsetType) else self.name.strip()
        self.allowed_origins = normalise_origins(list(self.allowed_origins), self.allow_any_origin)

    @property
    def project_name(self) -> str:
        return self.id if isinstance(self.name, UnsetType) else self.name


class ProjectPatch(Struct, forbid_unknown_fields=True):
    """Fields to change; those not named keep their values."""

    name: ProjectName | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    allowed_origins: (
        Annotated[tuple[OriginInput, ...], Meta(description="Replaces the list.")] | UnsetType
    ) = UNSET
    allow_any_origin: (
        Annotated[bool, Meta(description="false is refused while `*` stays in allowed_origins.")] | UnsetType
    ) = UNSET
    settings: SettingsPatch | UnsetType = UNSET

    error_codes: ClassVar[dict[str, str]] = {"allowed_origins[]": "invalid_origin"}
    json_schema_extra: ClassVar[Schema] = {
        **_ANY_ORIGIN_NEEDS_CONFIRMING,
        "examples": [{"name": "Shop", "settings": {"rate_limits": {"ip_events_per_second": 50}}}],
    }

    def __post_init__(self) -> None:
        if isinstance(self.name, str):
            self.name = self.name.strip()


class RotateKey(Struct, forbid_unknown_fields=True):
    kind: KeyKind
    grace_seconds: GraceSeconds = None

    @property
    def grace(self) -> int | float:
        return DEFAULT_GRACE_SECONDS if self.grace_seconds is None else self.grace_seconds


class PurgeConfirmation(Struct, forbid_unknown_fields=True):
    """The body a purge may carry instead of `?confirm=`."""

    confirm: str | None = None


class Query(Struct):
    sql: Annotated[str, Meta(min_length=1, description="One read-only query.")]

    json_schema_extra: ClassVar[Schema] = {
        "examples": [{"sql": "SELECT event, count() FROM events FINAL GROUP BY event"}]
    }


WindowUnit = Literal["second", "minute", "hour", "day"]
WINDOW_UNIT_MS: dict[str, int] = {"second": 1000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
AwareTime = Annotated[datetime, Meta(tz=True, description="ISO-8601 with a time zone.")]


FilterKey = Annotated[
    str,
    Meta(
        max_length=MAX_KEY_LENGTH,
        pattern=KEY_PATTERN,
        description="An events column, or `properties.` and a path of keys joined by `.`.",
        examples=["properties.plan", "country"],
    ),
]
FilterScalar = str | bool | int | float


class FilterSpec(Struct, forbid_unknown_fields=True):
    key: FilterKey
    op: Annotated[
        FilterOp,
        Meta(
            description="`eq`, `neq`, `in` (a list), `contains` and `regex` (re2, unanchored) on strings, "
            "`lt` and `gt` on numbers, `is_set` and `is_not_set` without a value."
        ),
    ]
    value: Annotated[
        FilterScalar | list[FilterScalar] | None,
        Meta(description="Compared within its JSON type: a string with strings, a number with numbers."),
    ] = None


StepFilters = Annotated[list[FilterSpec], Meta(max_length=MAX_STEP_FILTERS)]


class StepSpec(Struct, forbid_unknown_fields=True):
    kind: Annotated[
        StepKind,
        Meta(description="`event`: an event by its exact name; `page`: a page view by its path."),
    ]
    value: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=200,
            description="The event's name, or the page's path where `*` matches any run of characters.",
        ),
    ]


class FilteredStepSpec(StepSpec, forbid_unknown_fields=True):
    filters: Annotated[StepFilters, Meta(description="Conditions the step's event meets, all of them.")] = []


class FunnelWindow(Struct, forbid_unknown_fields=True):
    value: Annotated[int, Meta(ge=1, le=366 * 24 * 3600)]
    unit: WindowUnit = "day"


class FunnelStepSpec(FilteredStepSpec, forbid_unknown_fields=True):
    optional: Annotated[
        bool,
        Meta(
            description="An attempt may skip this step (not the first nor the last); a skipped step "
            "counts nobody, and the next step's conversion and drop-off are from the required step before."
        ),
    ] = False
    window: Annotated[
        FunnelWindow | None,
        Meta(
            description="At most this long after the previous step the attempt took (not on the first "
            "step); the funnel's window still bounds every step from the first."
        ),
    ] = None


class FunnelExclusionSpec(FilteredStepSpec, forbid_unknown_fields=True, kw_only=True):
    """An event or page, matched as a step is, that voids an attempt when it comes between two of
    its steps (docs/funnels.md, "Definitions")."""

    from_step: Annotated[int, Meta(ge=1, le=19, description="1-based: after this step's event...")]
    to_step: Annotated[
        int,
        Meta(
            ge=2,
            le=20,
            description="...and before this one's; or, when the attempt did not reach it, within the window.",
        ),
    ]


class FunnelPeopleRequest(Struct, forbid_unknown_fields=True):
    step: Annotated[int, Meta(ge=1, le=20, description="1-based, in the order of `steps`.")]
    status: Annotated[
        PeopleStatus,
        Meta(description="`converted`: took the step; `dropped`: took the required step before it, not it."),
    ]
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    after: Annotated[str | None, Meta(description="The last person of the previous page.")] = None


class FunnelBreakdownRequest(Struct, forbid_unknown_fields=True):
    column: Annotated[
        FilterKey, Meta(description="The events column, or the property, whose value splits the people.")
    ]
    attribution: Annotated[
        Attribution,
        Meta(description="The value at the first step of a person's attempt, or at the last it reached."),
    ] = "first"
    limit: Annotated[int, Meta(ge=1, le=100, description="Values with most people; the rest together.")] = 10


class FunnelDefinitionSpec(Struct, kw_only=True, forbid_unknown_fields=True):
    """What a funnel is, without the time it is asked over (shared by the query and the trend)."""

    steps: Annotated[list[FunnelStepSpec], Meta(min_length=2, max_length=20)]
    window: Annotated[FunnelWindow, Meta(description="The last step at most this long after the first.")]
    order: Annotated[
        Order,
        Meta(
            description="`ordered`: other events may come between steps; `strict`: none may; "
            "`unordered`: the steps in any order (no `exclusions` then)."
        ),
    ] = "ordered"
    filters: Annotated[
        list[FilterSpec],
        Meta(max_length=MAX_FUNNEL_FILTERS, description="Events failing any are left out, every step's."),
    ] = []
    exclusions: Annotated[
        list[FunnelExclusionSpec],
        Meta(max_length=MAX_EXCLUSIONS, description="Events that void an attempt between two of its steps."),
    ] = []
    unit: Annotated[
        Unit,
        Meta(
            description="`people` (the user id, else the anonymous id) or `sessions` (each event in its "
            "session of the sessions table)."
        ),
    ] = "people"
    include_bots: IncludeBots = False


class FunnelTrendRequest(FunnelDefinitionSpec, kw_only=True, forbid_unknown_fields=True):
    start: Annotated[AwareTime, Meta(description="Entries from this time (UTC days).")] = field(name="from")
    end: Annotated[
        AwareTime, Meta(description="Entries before this time; conversions up to a window later.")
    ] = field(name="to")

    json_schema_extra: ClassVar[Schema] = {
        "examples": [
            {
                "steps": [{"kind": "page", "value": "/pricing"}, {"kind": "event", "value": "Signed Up"}],
                "window": {"value": 1, "unit": "day"},
                "from": "2026-11-01T00:00:00Z",
                "to": "2026-12-01T00:00:00Z",
            }
        ]
    }


class FunnelRequest(FunnelDefinitionSpec, kw_only=True, forbid_unknown_fields=True):
    start: AwareTime = field(name="from")
    end: AwareTime = field(name="to")
    people: Annotated[
        FunnelPeopleRequest | None, Meta(description="Also list the people of one step, a page at a time.")
    ] = None
    breakdown: Annotated[
        FunnelBreakdownRequest | None, Meta(description="Also the answer per value of a column.")
    ] = None

    json_schema_extra: ClassVar[Schema] = {
        "examples": [
            {
                "steps": [{"kind": "page", "value": "/pricing"}, {"kind": "event", "value": "Signed Up"}],
                "window": {"value": 1, "unit": "day"},
                "from": "2026-11-01T00:00:00Z",
                "to": "2026-12-01T00:00:00Z",
            }
        ]
    }


# -- responses ----------------------------------------------------------------------------------
# Documentation of what the server sends (tests/test_openapi_fuzz.py checks every answer against it).

IsoTime = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Revision = Annotated[int, Meta(ge=1)]
DatabaseName = Annotated[str, Meta(pattern="^hw_[a-z0-9_]{1,48}$")]
PUBLIC_KEY_PATTERN = "^hwpk_[A-Za-z0-9_-]+$"


class Error(Struct, forbid_unknown_fields=True):
    status: Annotated[int, Meta(ge=400, le=599)]
    code: Annotated[str, Meta(min_length=1, description="Machine-readable error code.")]
    message: Annotated[str, Meta(description="Explanation for people.")]
    field: (
        Annotated[
            str, Meta(description="The field, parameter or header at fault, e.g. `allowed_origins[1]`.")
        ]
        | UnsetType
    ) = UNSET


class Health(Struct, forbid_unknown_fields=True):
    status: Literal["ok"]


class Readiness(Struct):
    """Open: a role may report details of its checks beside them (the edge reports `config`)."""

    ready: Annotated[bool, Meta(description="Whether every check passes.")]
    checks: dict[str, bool]


class PublicKey(Struct, forbid_unknown_fields=True):
    key: Annotated[str, Meta(pattern=PUBLIC_KEY_PATTERN)]
    created_at: IsoTime
    expires_at: Annotated[IsoTime | None, Meta(description="Set once the key was rotated.")]


class SecretKeyHint(Struct, forbid_unknown_fields=True):
    hint: Annotated[
        str,
        Meta(
            pattern="^hwsk_[A-Za-z0-9_-]{4}$",
            description="The key's first characters; the key itself is never stored.",
        ),
    ]
    created_at: IsoTime
    expires_at: IsoTime | None


AllowedOrigin = Annotated[
    str,
    Meta(
        pattern=r"^(\*|https?://[^/?#]+)$",
        description="A normalised origin `scheme://host[:port]`, a wildcard `scheme://*.domain[:port]`, "
        "or `*` (any origin).",
    ),
]


class ProjectView(Struct, forbid_unknown_fields=True):
    """A project as the API shows it (Project.public_view)."""

    id: ProjectId
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    enabled: bool
    allowed_origins: Annotated[list[AllowedOrigin], Meta(extra_json_schema={"uniqueItems": True})]
    allow_any_origin: bool
    settings: ProjectSettings
    created_at: IsoTime
    updated_at: IsoTime | None
    database: DatabaseName
    public_keys: list[PublicKey]
    secret_keys: list[SecretKeyHint]

    # `*` is only ever stored together with allow_any_origin.
    json_schema_extra: ClassVar[Schema] = {
        "if": {"properties": {"allowed_origins": {"contains": {"const": "*"}}}},
        "then": {"properties": {"allow_any_origin": {"const": True}}},
    }


class ProjectAnswer(Struct, forbid_unknown_fields=True):
    project: ProjectView
    revision: Revision


class CreatedProject(Struct, forbid_unknown_fields=True):
    project: ProjectView
    revision: Revision
    public_key: Annotated[str, Meta(pattern=PUBLIC_KEY_PATTERN)]
    secret_key: Annotated[
        str,
        Meta(
            pattern="^hwsk_[A-Za-z0-9_-]+$",
            description="Shown in this answer only: headwater stores its SHA-256 digest.",
        ),
    ]


class ProjectPage(Struct, forbid_unknown_fields=True):
    projects: list[ProjectView]
    next_after: Annotated[
        Annotated[str, Meta(pattern=PROJECT_ID_PATTERN.pattern)] | None,
        Meta(description="Pass as `after` for the next page; null on the last page."),
    ]


class RotatedKey(Struct, forbid_unknown_fields=True):
    project: ProjectView
    revision: Revision
    kind: KeyKind
    key: Annotated[
        str,
        Meta(
            pattern="^hw[ps]k_[A-Za-z0-9_-]+$",
            description="The new key; a secret key is shown in this answer only.",
        ),
    ]
    previous_keys_expire_at: Annotated[
        IsoTime, Meta(description="When the last of the earlier keys of this kind stops working.")
    ]


class PurgedProject(Struct, forbid_unknown_fields=True):
    id: ProjectId
    purged: Annotated[bool, Meta(extra_json_schema={"const": True})]
    messages_purged: Annotated[int, Meta(ge=0)]
    database_dropped: DatabaseName


class QueryResult(Struct, forbid_unknown_fields=True):
    columns: list[str]
    rows: Annotated[
        list[list[Any]],
        Meta(description="One array per row, in column order; values as JSON, dates as strings."),
    ]


Share = Annotated[float, Meta(ge=0, le=1)]


class FunnelStepAnswer(Struct, forbid_unknown_fields=True):
    step: FunnelStepSpec
    count: Annotated[int, Meta(ge=0, description="People whose attempt took the step.")]
    conversion_from_start: Share | None
    conversion_from_previous: Share | None
    dropped: Annotated[int, Meta(ge=0, description="People who took the required step before, not this one.")]
    median_ms: Annotated[int | None, Meta(description="From the previous step taken (null for the first).")]
    average_ms: float | None
    p90_ms: int | None


class FunnelPeopleAnswer(Struct, forbid_unknown_fields=True):
    step: int
    status: PeopleStatus
    people: list[str]
    next_after: Annotated[str | None, Meta(description="`after` for the next page; null on the last.")]


class FunnelBreakdownAnswer(Struct, forbid_unknown_fields=True):
    value: Annotated[str | None, Meta(description="null: every value outside the top ones, together.")]
    steps: list[FunnelStepAnswer]


class FunnelAnswer(Struct, forbid_unknown_fields=True):
    steps: list[FunnelStepAnswer]
    people: FunnelPeopleAnswer | None = None
    breakdown: list[FunnelBreakdownAnswer] | None = None


class FunnelTrendDay(Struct, forbid_unknown_fields=True):
    date: Annotated[str, Meta(description="The UTC day (YYYY-MM-DD) of the people's entry.")]
    complete: Annotated[
        bool, Meta(description="A window has passed since the day's last entry: later events change nothing.")
    ]
    steps: list[FunnelStepAnswer]


class FunnelTrendAnswer(Struct, forbid_unknown_fields=True):
    days: Annotated[list[FunnelTrendDay], Meta(description="Every day of [from, to), in order.")]


# -- paths (docs/paths.md) ----------------------------------------------------------------------


class PathsCleaningRule(Struct, forbid_unknown_fields=True):
    regex: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=500,
            description="re2 syntax (ClickHouse's replaceRegexpAll), also valid for Python's re: no "
            "lookarounds or back-references. One that does not compile is `400 invalid_field` naming it.",
            examples=[r"^/users/\d+"],
        ),
    ]
    replacement: Annotated[
        str,
        Meta(
            max_length=500,
            description="`\\0`..`\\9`: the match and its groups; `\\x`: the character x.",
            examples=["/users/:id"],
        ),
    ] = ""


class PathsRequest(Struct, forbid_unknown_fields=True):
    start_time: AwareTime = field(name="from")
    end_time: AwareTime = field(name="to")
    start: Annotated[
        StepSpec | None,
        Meta(description="From each person's first step matching this (a page glob on the cleaned path)."),
    ] = None
    end: Annotated[
        StepSpec | None,
        Meta(description="To each person's last step matching this; not with `start`."),
    ] = None
    steps: Annotated[
        int, Meta(ge=2, le=10, description="Nodes per path, the start or end point included.")
    ] = 4
    include: Annotated[
        PathsInclude,
        Meta(description="`pages`: page views as `page:<cleaned path>`; `events`: track events as "
             "`event:<name>`; `both`."),
    ] = "both"  # fmt: skip
    cleaning: Annotated[
        list[PathsCleaningRule], Meta(max_length=20, description="Applied in order to every page path.")
    ] = field(default_factory=list)
    edge_limit: Annotated[int, Meta(ge=1, le=500, description="The heaviest edges answered.")] = 50
    include_bots: IncludeBots = False

    json_schema_extra: ClassVar[Schema] = {
        "examples": [
            {
                "from": "2026-11-01T00:00:00Z",
                "to": "2026-12-01T00:00:00Z",
                "start": {"kind": "page", "value": "/pricing"},
                "steps": 4,
                "cleaning": [{"regex": r"^/users/\d+", "replacement": "/users/:id"}],
            }
        ]
    }


class PathsStep(Struct, forbid_unknown_fields=True):
    kind: StepKind
    value: Annotated[str, Meta(description="An event's name, or a page's cleaned path (may be empty).")]


class PathsNode(Struct, forbid_unknown_fields=True):
    id: Annotated[str, Meta(description="`depth:kind:value`, e.g. `2:page:/pricing`.")]
    depth: Annotated[int, Meta(ge=1, le=10)]
    step: PathsStep
    people: Annotated[int, Meta(ge=0, description="People whose path passes through this node.")]


class PathsEdge(Struct, forbid_unknown_fields=True):
    source: Annotated[str, Meta(description="A node's id, at one depth less than the target.")]
    target: str
    people: Annotated[int, Meta(ge=0, description="People whose path goes from source to target.")]


class PathsAnswer(Struct, forbid_unknown_fields=True):
    people: Annotated[int, Meta(ge=0, description="People with a path (one each).")]
    nodes: Annotated[list[PathsNode], Meta(description="The nodes the edges touch.")]
    edges: Annotated[list[PathsEdge], Meta(description="The heaviest edges, heaviest first.")]


# -- saved funnels (docs/funnels.md, "Saved funnels") -------------------------------------------

FunnelId = Annotated[
    str,
    Meta(
        pattern="^[a-z2-7]{12}$",
        description="Server-generated: 12 characters of lowercase base32.",
        examples=["k3qv7xzab2mf"],
    ),
]
SavedFunnelName = Annotated[
    str,
    Meta(min_length=1, max_length=200, pattern=r"\S", description="Surrounding whitespace is removed."),
]


class SavedFunnelRequest(FunnelDefinitionSpec, kw_only=True, forbid_unknown_fields=True):
    """A funnel's definition (the fields of a funnel query but the time range and the people list),
    validated as the query validates them, and its name."""

    name: SavedFunnelName
    breakdown: Annotated[
        FunnelBreakdownRequest | None, Meta(description="Also the answer per value of a column.")
    ] = None

    json_schema_extra: ClassVar[Schema] = {
        "examples": [
            {
                "name": "Pricing to sign-up",
                "steps": [{"kind": "page", "value": "/pricing"}, {"kind": "event", "value": "Signed Up"}],
                "window": {"value": 1, "unit": "day"},
            }
        ]
    }

    def __post_init__(self) -> None:
        self.name = self.name.strip()


class SavedFunnelRun(Struct, forbid_unknown_fields=True):
    """The time range (and optionally a people list) a saved funnel is run over."""

    start: AwareTime = field(name="from")
    end: AwareTime = field(name="to")
    people: Annotated[
        FunnelPeopleRequest | None, Meta(description="Also list the people of one step, a page at a time.")
    ] = None

    json_schema_extra: ClassVar[Schema] = {
        "examples": [{"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}]
    }


class SavedFunnel(FunnelDefinitionSpec, kw_only=True, forbid_unknown_fields=True):
    id: FunnelId
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    breakdown: FunnelBreakdownRequest | None
    created_at: IsoTime
    updated_at: IsoTime
    revision: Annotated[Revision, Meta(description="The KV revision, for `If-Match` on a later PUT.")]


class SavedFunnelList(Struct, forbid_unknown_fields=True):
    funnels: Annotated[list[SavedFunnel], Meta(description="By name, then id; 100 at most.")]


class SavedFunnelTrendRun(Struct, forbid_unknown_fields=True):
    """The range of days a saved funnel's daily trend covers (its breakdown is not used)."""

    start: Annotated[AwareTime, Meta(description="Entries from this time (UTC days).")] = field(name="from")
    end: Annotated[
        AwareTime, Meta(description="Entries before this time; conversions up to a window later.")
    ] = field(name="to")

    json_schema_extra: ClassVar[Schema] = {
        "examples": [{"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}]
    }


# -- anomalies of a saved funnel's daily conversion (docs/patterns.md, "Anomalies") ---------------


class SavedFunnelAnomaliesRun(SavedFunnelTrendRun, kw_only=True, forbid_unknown_fields=True):
    """The trend's range, and how its days are judged: each against a band from the days before it
    in the range (the first `min_baseline_days` usable days warm up)."""

    baseline_days: Annotated[
        int, Meta(ge=2, le=365, description="The days before a day whose rate it is expected to have.")
    ] = 28
    min_baseline_days: Annotated[
        int,
        Meta(ge=2, le=365, description="A day is judged once its baseline holds this many usable days."),
    ] = 14
    confidence: Annotated[
        float,
        Meta(
            ge=0.5,
            lt=1,
            description="On a quiet series, the chance that no day of the range is flagged "
            "(Bonferroni across the days judged).",
        ),
    ] = 0.99
    min_entered: Annotated[
        int, Meta(ge=1, le=1_000_000_000, description="Days with fewer entries are never judged.")
    ] = 30
    seasonality: Annotated[
        Seasonality,
        Meta(description="`weekly`: a day is expected to convert as its weekday did; `none`: as every day."),
    ] = "weekly"

    json_schema_extra: ClassVar[Schema] = {
        "examples": [{"from": "2026-09-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}]
    }


Rate = Annotated[float, Meta(ge=0, le=1)]


class AnomalyDay(Struct, forbid_unknown_fields=True):
    date: Annotated[str, Meta(description="The UTC day (YYYY-MM-DD) of the people's entry.")]
    complete: Annotated[bool, Meta(description="As in the trend: false while the day can still convert.")]
    entered: Annotated[int, Meta(ge=0)]
    converted: Annotated[int, Meta(ge=0, description="Entered that day and reached the last step.")]
    rate: Annotated[Rate | None, Meta(description="converted / entered; null when nobody entered.")]
    status: Annotated[
        AnomalyStatus,
        Meta(
            description="`low`/`high`: outside the band; `normal`: inside; `insufficient_data`: fewer "
            "than `min_entered` entries; `warming_up`: too few usable days before it; "
            "`in_progress`: not complete."
        ),
    ]
    expected: Annotated[Rate | None, Meta(description="The baseline's rate; null when not judged.")]
    lower: Annotated[Rate | None, Meta(description="The lowest rate not flagged.")]
    upper: Annotated[Rate | None, Meta(description="The highest rate not flagged.")]
    p_value: Annotated[
        Rate | None, Meta(description="Two-sided, of this day alone; flagged below `method.day_alpha`.")
    ]
    z: Annotated[
        float | None, Meta(description="(converted - entered x expected) / its predictive deviation.")
    ]


class AnomalyMethod(Struct, forbid_unknown_fields=True):
    name: Literal["beta-binomial band"]
    baseline_days: int
    min_baseline_days: int
    dispersion_days: Annotated[int, Meta(description="The days before a day its over-dispersion reads.")]
    confidence: float
    min_entered: int
    seasonality: Seasonality
    judgeable_days: Annotated[int, Meta(ge=0, description="m of the Bonferroni correction.")]
    day_alpha: Annotated[float, Meta(description="(1 - confidence) / m: a day's threshold for its p-value.")]


class FunnelAnomaliesAnswer(Struct, forbid_unknown_fields=True):
    days: Annotated[list[AnomalyDay], Meta(description="Every day of [from, to), in order.")]
    method: AnomalyMethod
    anomalies: Annotated[int, Meta(ge=0, description="Days flagged `low` or `high`.")]
