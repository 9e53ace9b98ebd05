"""Command-line flags, each also settable as a HEADWATER_* environment variable, and the frozen
settings objects built from them. This is the only place where configuration is read."""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from headwater.control.settings import AdminToken
from headwater.core.migrations.ddl import cluster_name
from headwater.edge.settings import EdgeSettings
from headwater.edge.streams import StreamSettings
from headwater.spool import worker_spool_dir

from .httplimits import HTTPLimits
from .logs import parse_log_levels
from .natsauth import NatsAuth

F = TypeVar("F", bound=Callable[..., Any])

ADMIN_TOKEN_ENV = "HEADWATER_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token
ADMIN_TOKENS_ENV = "HEADWATER_ADMIN_TOKENS"
DEFAULT_TOKEN_NAME = "default"  # noqa: S105 - the name HEADWATER_ADMIN_TOKEN is known by
MIN_TOKEN_LENGTH = 16
# Token names end up in logs and the audit trail, so they are kept to plain identifiers.
TOKEN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


_NO_DEFAULT: Any = object()  # click tells an option without a default from one whose default is None


def option(
    name: str, default: Any = _NO_DEFAULT, kind: Any = None, *, env: str | None = None, **kwargs: Any
) -> Callable[[F], F]:
    """A click option also settable as an environment variable, both shown in --help: HEADWATER_
    and the flag's name in capitals (`--max-age`: HEADWATER_MAX_AGE) unless `env` names another.
    `kind` is click's `type`."""
    if default is not _NO_DEFAULT:
        kwargs["default"] = default
    if kind is not None:
        kwargs["type"] = kind
    envvar = env or "HEADWATER_" + name.removeprefix("--").upper().replace("-", "_")
    return click.option(name, envvar=envvar, show_envvar=True, show_default=True, **kwargs)


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator applying several, listed in the order --help shows them."""

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


data_dir_option = option(
    "--data-dir",
    ".headwater",
    click.Path(file_okay=False, path_type=str),
    help="Where `up` keeps NATS and ClickHouse data, the admin token and the running stack's URLs.",
)
host_option = option("--host", "127.0.0.1", help="Address the HTTP roles listen on.")
# The queries' `include_bots` (funnel, funnels save, paths, patterns).
include_bots_option = click.option(
    "--include-bots",
    is_flag=True,
    help="Count the events of bots and spam too (is_bot: docs/privacy.md), left out by default.",
)
nats_url_option = option(
    "--nats-url", None, help="An existing NATS server (comma-separated URLs for a cluster)."
)
clickhouse_url_option = option(
    "--clickhouse-url",
    None,
    help="http(s)://user:pass@host:8123 for a ClickHouse server, or chdb:///path for the embedded engine.",
)
control_url_option = option(
    "--control-url",
    None,
    help="Control API to talk to; default: the running `headwater up` stack of --data-dir.",
)


def _cluster_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A click callback: a cluster name ClickHouse's configuration can spell (it goes into DDL)."""
    if not value:
        return None
    try:
        return cluster_name(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


on_cluster_option = option(
    "--on-cluster",
    None,
    metavar="NAME",
    env="HEADWATER_CLICKHOUSE_CLUSTER",
    callback=_cluster_name,
    help="ClickHouse cluster to run DDL ON CLUSTER (a replicated ClickHouse); default: a single server.",
)
log_format_option = option(
    "--log-format",
    None,
    click.Choice(["json", "text"]),
    help="json: one JSON object per line (default for `serve`); text: for people (default for `up`).",
)


def _log_levels(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        parse_log_levels(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


log_level_option = option(
    "--log-level",
    "info",
    callback=_log_levels,
    metavar="LEVEL[,ROLE=LEVEL...]",
    help="debug, info, warning or error; per role too: `info,consumer=debug,http=warning` (roles: "
    "edge, spool, control, consumer, nats, http).",
)


_READABLE_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=str)
# --tls-cert and --tls-key: the HTTP roles serve HTTPS (HTTP/2 and HTTP/1.1) with them.
tls_options = options(
    option(
        "--tls-cert",
        None,
        _READABLE_FILE,
        help="PEM certificate chain (the server's first): serve HTTPS, HTTP/2 and HTTP/1.1, instead "
        "of plain HTTP. Needs --tls-key.",
    ),
    option("--tls-key", None, _READABLE_FILE, help="PEM private key (unencrypted) of --tls-cert."),
)


def tls_files(cert: str | None, key: str | None) -> tuple[str, str] | None:
    """The certificate and key, when both are given; loaded here once so that a bad file stops the
    command with its reason before anything starts."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise click.UsageError(
            f"{given} needs {missing} (HEADWATER_TLS_CERT and HEADWATER_TLS_KEY): give both or neither"
        )
    # Imported here: hypercorn and cryptography would slow every command's start by ~80 ms.
    from .tlsserver import TLSError, server_context

    try:
        server_context(cert, key)
    except TLSError as exc:
        raise click.ClickException(str(exc)) from None
    return cert, key


def admin_tokens_from_env(fallback: str | None = None) -> tuple[AdminToken, ...]:
    """The control plane's admin tokens: the named ones of HEADWATER_ADMIN_TOKENS, plus
    HEADWATER_ADMIN_TOKEN (else `fallback`, the token `up` keeps in its data dir) named "default".

    HEADWATER_ADMIN_TOKENS is a comma-separated list of `name:token` pairs, e.g.

        HEADWATER_ADMIN_TOKENS="backoffice:4kq…Zp,ci-deploy:Vb9…e2"

    A name is 1-64 letters, digits, `_`, `-` or `.` and is what the audit trail records as the
    actor; the token is everything after the first `:` (at least 16 characters). Spaces around
    entries are ignored, and so are empty entries. Names and tokens must be unique, and "default"
    is taken when HEADWATER_ADMIN_TOKEN is set. A malformed entry is a click.UsageError naming its
    index (`HEADWATER_ADMIN_TOKENS[1]`, counted from 0), never its text: it may hold a token.
    """
    named = parse_admin_tokens(os.environ.get(ADMIN_TOKENS_ENV, ""))
    single = os.environ.get(ADMIN_TOKEN_ENV) or fallback
    if not single:
        return named
    if any(t.name == DEFAULT_TOKEN_NAME for t in named):
        raise click.UsageError(
            f"{ADMIN_TOKENS_ENV} names a token {DEFAULT_TOKEN_NAME!r}, the name of {ADMIN_TOKEN_ENV} "
            "(or of the token `up` stores): rename it"
        )
    if any(t.token == single for t in named):
        raise click.UsageError(f"{ADMIN_TOKENS_ENV} repeats the {DEFAULT_TOKEN_NAME!r} admin token")
    return (AdminToken(DEFAULT_TOKEN_NAME, single), *named)


def parse_admin_tokens(raw: str) -> tuple[AdminToken, ...]:
    """`name:token,name:token` as documented in `admin_tokens_from_env`."""
    tokens: list[AdminToken] = []
    for index, entry in enumerate(raw.split(",")):
        entry = entry.strip()
        if not entry:
            continue
        where = f"{ADMIN_TOKENS_ENV}[{index}]"
        name, separator, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        if not separator or not TOKEN_NAME_PATTERN.fullmatch(name) or not token:
            raise click.UsageError(
                f"{where} is malformed: expected name:token, the name made of letters, digits, '_', '-', '.'"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise click.UsageError(
                f"{where} ({name!r}): the token must be at least {MIN_TOKEN_LENGTH} characters"
            )
        if any(t.name == name for t in tokens):
            raise click.UsageError(f"{where}: the name {name!r} is used by an earlier entry")
        if any(t.token == token for t in tokens):
            raise click.UsageError(f"{where} ({name!r}): the token is used by an earlier entry")
        tokens.append(AdminToken(name, token))
    return tuple(tokens)


def admin_token_from_env() -> str | None:
    """The token CLI commands send to the control API (HEADWATER_ADMIN_TOKEN)."""
    return os.environ.get(ADMIN_TOKEN_ENV) or None


_EDGE = EdgeSettings()
# The edge's limits and trust settings, shared by `up` and `serve edge`.
edge_options = options(
    option(
        "--trusted-proxies",
        "",
        help="Comma-separated CIDRs whose X-Forwarded-For is believed (your load balancers).",
    ),
    option("--max-body-bytes", 500 * 1024, click.IntRange(1024)),
    option("--max-event-bytes", 32 * 1024, click.IntRange(256)),
    option("--max-batch-events", 2500, click.IntRange(1)),
    option("--max-nesting-depth", 32, click.IntRange(2, 254)),
    option(
        "--publish-timeout",
        _EDGE.publish_timeout_seconds,  # 2 s: then the disk spool
        click.FloatRange(0.05, 120),
        help="Seconds to wait for JetStream's acknowledgement before the envelope goes to the disk "
        "spool (503 with Retry-After when there is none or it is full).",
    ),
    option(
        "--compress-above",
        _EDGE.compress_above_bytes,
        click.IntRange(0),
        help="Envelopes longer than this many bytes (batches) are published LZ4-compressed; "
        "0 never compresses. Consumers read both: upgrade them before the edges.",
    ),
    option(
        "--spool-dir",
        None,
        help="Base directory of the disk spool (a subdirectory per worker); '' disables the spool "
        "[default: <data-dir>/spool for up, .headwater/spool for serve].",
    ),
    option(
        "--spool-max-bytes",
        1 << 30,
        click.IntRange(1 << 20),
        help="Most bytes of envelopes a worker's spool holds; beyond it the edge answers 503.",
    ),
    option(
        "--spool-min-free-bytes",
        _EDGE.spool_min_free_bytes,
        click.IntRange(0),
        help="Free space the spool leaves on its filesystem (or 5% of it, whichever is more): "
        "SQLite on a full disk cannot even delete.",
    ),
    option(
        "--config-cache",
        None,
        help="File holding the last known project configs (keys hashed, mode 0600), so that an "
        "edge starts and spools while NATS is down; '' disables it "
        "[default: projects-cache.json in the spool's base directory].",
    ),
    option(
        "--config-max-age",
        _EDGE.config_max_age_seconds,
        click.FloatRange(1),
        help="Seconds project configs may be served after they were last known current (NATS "
        "unreachable); older, the edge answers 503 rather than trust keys that may be revoked.",
    ),
    option(
        "--shutdown-delay",
        _EDGE.shutdown_delay_seconds,
        click.FloatRange(0, 300),
        help="Seconds an edge keeps serving after SIGTERM while /readyz answers 503 (draining), "
        "so the load balancer takes it out before it stops accepting; longer than the "
        "balancer's health-check interval times its fall count.",
    ),
    option(
        "--rate-limit-edges",
        1,
        click.IntRange(1),
        help="How many edges share each project's rate limits (each enforces 1/N of them).",
    ),
    option(
        "--max-expanded-bytes",
        _EDGE.max_expanded_bytes,
        click.IntRange(1024),
        help="Most bytes one request may expand to once a batch's context is applied to each "
        "of its events without one (413 request_too_expensive).",
    ),
    option(
        "--operator-host",
        "127.0.0.1",
        help="Address of the edge's operator listener (/metrics, detailed /readyz): keep it off "
        "the public network.",
    ),
    option(
        "--operator-port",
        8710,
        click.IntRange(0, 65535),
        help="Port of the edge's operator listener (0: any free).",
    ),
)


def edge_settings(
    host: str,
    port: int,
    default_spool_dir: str,
    reuse_port: bool = False,
    worker: int = 0,
    tls: tuple[str, str] | None = None,
    **flags: Any,
) -> EdgeSettings:
    """EdgeSettings from the flags of `edge_options` (and `tls_files`); a bad combination is a
    usage error."""
    spool_base = flags.pop("spool_dir")
    spool_base = default_spool_dir if spool_base is None else spool_base
    spool_dir = str(worker_spool_dir(spool_base, str(worker))) if spool_base else None
    config_cache = flags.pop("config_cache")
    if config_cache is None:
        config_cache = str(Path(spool_base) / "projects-cache.json") if spool_base else None
    proxies = tuple(p.strip() for p in str(flags.pop("trusted_proxies") or "").split(",") if p.strip())
    for index, cidr in enumerate(proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise click.UsageError(
                f"--trusted-proxies entry {index} ({cidr!r}) is not an address or CIDR"
            ) from None
    try:
        return EdgeSettings(
            host=host,
            port=port,
            reuse_port=reuse_port,
            trusted_proxies=proxies,
            max_body_bytes=flags.pop("max_body_bytes"),
            max_event_bytes=flags.pop("max_event_bytes"),
            max_batch_events=flags.pop("max_batch_events"),
            max_nesting_depth=flags.pop("max_nesting_depth"),
            publish_timeout_seconds=flags.pop("publish_timeout"),
            compress_above_bytes=flags.pop("compress_above"),
            rate_limit_edges=flags.pop("rate_limit_edges"),
            shutdown_delay_seconds=flags.pop("shutdown_delay"),
            spool_dir=spool_dir,
            spool_max_bytes=flags.pop("spool_max_bytes"),
            spool_min_free_bytes=flags.pop("spool_min_free_bytes"),
            config_cache=config_cache or None,
            config_max_age_seconds=flags.pop("config_max_age"),
            tls_cert=tls[0] if tls else None,
            tls_key=tls[1] if tls else None,
            max_expanded_bytes=flags.pop("max_expanded_bytes"),
            operator_host=flags.pop("operator_host"),
            operator_port=flags.pop("operator_port"),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


# -- stream settings: `headwater streams ensure` ------------------------------------------------------

_DURATION_UNITS = {"w": 7 * 24 * 3600, "d": 24 * 3600, "h": 3600, "m": 60, "s": 1}
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
# Decimal and binary units, as `nats stream info` prints sizes; matched case-insensitively.
_BYTE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_BYTE_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
UNLIMITED = -1


def parse_duration(text: str) -> float:
    """Seconds in `7d`, `12h`, `1h30m`, `90s`, `2w`, or a plain number of seconds."""
    text = text.strip().lower()
    if _PLAIN_NUMBER.fullmatch(text):
        return float(text)
    if not text or _DURATION_PART.sub("", text):
        raise ValueError(f"{text!r} is not a duration such as 7d, 12h, 1h30m, 90s")
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest `parse_duration` spelling: 604800 → `7d`, 5400 → `1h30m`, 0 → `0s`."""
    whole, fraction = divmod(seconds, 1)
    parts = []
    remaining = int(whole)
    for unit in "dhm":
        count, remaining = divmod(remaining, _DURATION_UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    if remaining or fraction or not parts:
        parts.append(f"{remaining + fraction:g}s")
    return "".join(parts)


def parse_byte_size(text: str) -> int:
    """Bytes in `50GiB`, `500MB`, `1048576`; `-1` (or `unlimited`) means no limit."""
    text = text.strip()
    if text in ("-1", "unlimited"):
        return UNLIMITED
    match = _BYTE_SIZE.fullmatch(text)
    unit = (match.group(2) or "b").lower() if match else ""
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError(f"{text!r} is not a size such as 50GiB, 500MB, 1048576 or -1 (unlimited)")
    return int(float(match.group(1)) * _BYTE_UNITS[unit])


def format_byte_size(size: int) -> str:
    """The exact `parse_byte_size` spelling in the largest unit that divides it: 50GiB, 500MB, 1234B."""
    if size < 0:
        return "unlimited"
    for unit in ("TiB", "TB", "GiB", "GB", "MiB", "MB", "KiB", "KB"):
        factor = _BYTE_UNITS[unit.lower()]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


class _Parsed(click.ParamType[float]):
    """A click type from a parse function that raises ValueError with a message for people."""

    def __init__(self, name: str, parse: Callable[[str], float]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return value
        try:
            return self._parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Parsed("duration", parse_duration)
BYTE_SIZE = _Parsed("size", parse_byte_size)


_STREAMS = StreamSettings()
# Replication and retention of the streams and KV buckets (`StreamSettings`).
stream_options = options(
    option(
        "--replicas",
        _STREAMS.replicas,
        click.IntRange(1, 5),
        env="HEADWATER_STREAM_REPLICAS",
        help="Copies of every stream and KV bucket: 1 on a single server, 3 on a 3-node cluster.",
    ),
    option(
        "--max-age",
        format_duration(_STREAMS.max_age_seconds),
        DURATION,
        env="HEADWATER_STREAM_MAX_AGE",
        help="How long HW_EVENTS keeps events, the window `replay` can rebuild from (0: no limit).",
    ),
    option(
        "--max-bytes",
        format_byte_size(_STREAMS.max_bytes),
        BYTE_SIZE,
        env="HEADWATER_STREAM_MAX_BYTES",
        help="Most bytes HW_EVENTS and HW_DLQ each keep (e.g. 50GiB; -1: no limit). When full, "
        "JetStream refuses new messages and the edges spool them.",
    ),
    option(
        "--duplicate-window",
        format_duration(_STREAMS.duplicate_window_seconds),
        DURATION,
        env="HEADWATER_STREAM_DUPLICATE_WINDOW",
        help="How long JetStream remembers a Nats-Msg-Id, to drop a republished envelope.",
    ),
    option(
        "--dlq-max-age",
        format_duration(_STREAMS.dlq_max_age_seconds),
        DURATION,
        help="How long HW_DLQ keeps dead-lettered messages (0: no limit).",
    ),
)


def stream_settings(
    replicas: int, max_age: float, max_bytes: int, duplicate_window: float, dlq_max_age: float
) -> StreamSettings:
    """StreamSettings from the flags of `stream_options`; what JetStream would refuse is a usage error."""
    if duplicate_window <= 0:
        raise click.UsageError("--duplicate-window must be longer than 0s")
    for flag, age in (("--max-age", max_age), ("--dlq-max-age", dlq_max_age)):
        if age < 0:
            raise click.UsageError(f"{flag} cannot be negative")
        if 0 < age < duplicate_window:
            raise click.UsageError(f"{flag} ({format_duration(age)}) is shorter than --duplicate-window")
    if max_bytes < UNLIMITED or max_bytes == 0:
        raise click.UsageError("--max-bytes must be a size above 0, or -1 for no limit")
    return StreamSettings(
        replicas=replicas,
        max_age_seconds=max_age,
        max_bytes=max_bytes,
        duplicate_window_seconds=duplicate_window,
        dlq_max_age_seconds=dlq_max_age,
    )


# Limits and ClickHouse user of the control role's query API (docs/query-api.md).
query_options = options(
    option(
        "--query-clickhouse-url",
        None,
        help="A ClickHouse server URL whose user runs the query API, one project role per "
        "query (granted by the control role); default: --clickhouse-url without roles.",
    ),
    option(
        "--query-max-memory",
        1_000_000_000,
        click.IntRange(min=1_000_000),
        help="Bytes of memory one query may use (ClickHouse max_memory_usage).",
    ),
    option(
        "--query-max-concurrent",
        4,
        click.IntRange(min=1),
        help="Queries running at once; more are answered 429.",
    ),
)


# -- HTTP limits of the edge and control servers: `HTTPLimits` --------------------------------------


_HTTP_LIMITS = HTTPLimits()
# Header, head-time and body-time limits of the edge's and the control API's HTTP servers.
http_limit_options = options(
    option(
        "--max-header-bytes",
        _HTTP_LIMITS.max_header_bytes,
        click.IntRange(1024),
        help="Most bytes of a request line and its header fields; more is refused with 431.",
    ),
    option(
        "--max-headers",
        _HTTP_LIMITS.max_headers,
        click.IntRange(8),
        help="Most header fields in a request; more is refused with 431.",
    ),
    option(
        "--header-timeout",
        _HTTP_LIMITS.header_timeout_seconds,
        click.FloatRange(0.1, 600),
        help="Seconds a client has to send a request's head, from connecting (or its first byte "
        "after a keep-alive pause); then 408 and the connection is closed.",
    ),
    option(
        "--body-timeout",
        _HTTP_LIMITS.body_timeout_seconds,
        click.FloatRange(0.1, 3600),
        help="Seconds a client has to send a request's whole body after its head; then 408.",
    ),
    option(
        "--keep-alive-timeout",
        _HTTP_LIMITS.keep_alive_seconds,
        click.IntRange(1, 3600),
        help="Seconds an idle connection is kept open between requests.",
    ),
)


def http_limits(flags: dict[str, Any]) -> HTTPLimits:
    """HTTPLimits from the flags of `http_limit_options`, taken out of `flags`."""
    return HTTPLimits(
        max_header_bytes=flags.pop("max_header_bytes"),
        max_headers=flags.pop("max_headers"),
        header_timeout_seconds=flags.pop("header_timeout"),
        body_timeout_seconds=flags.pop("body_timeout"),
        keep_alive_seconds=flags.pop("keep_alive_timeout"),
    )


_nats_auth_flags = options(
    option("--nats-user", None, help="NATS user (and --nats-password-file)."),
    option("--nats-password", None, help="NATS password; prefer --nats-password-file."),
    option("--nats-password-file", None, _READABLE_FILE, help="File holding the NATS password."),
    option("--nats-creds", None, _READABLE_FILE, help="NATS credentials file (JWT and NKey seed)."),
    option("--nats-tls-ca", None, _READABLE_FILE, help="CA that signed NATS's certificate."),
    option("--nats-tls-cert", None, _READABLE_FILE, help="Client certificate for NATS."),
    option("--nats-tls-key", None, _READABLE_FILE, help="Key of --nats-tls-cert."),
)


def nats_auth_options(command: F) -> F:
    """--nats-user, --nats-password(-file), --nats-creds and --nats-tls-*: how a role or command
    authenticates to NATS (ops/natsauth.py). The command receives them as one `nats_auth`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _NATS_AUTH_PARAMS}
        if values["nats_password_file"] is not None:
            with open(values["nats_password_file"], encoding="utf-8") as file:
                values["nats_password"] = file.read().strip()
        if values["nats_password"] is not None and values["nats_user"] is None:
            raise click.UsageError("--nats-password needs --nats-user")
        kwargs["nats_auth"] = NatsAuth(
            user=values["nats_user"],
            password=values["nats_password"],
            creds_file=values["nats_creds"],
            tls_ca=values["nats_tls_ca"],
            tls_cert=values["nats_tls_cert"],
            tls_key=values["nats_tls_key"],
        )
        return command(*args, **kwargs)

    return _nats_auth_flags(wrapper)  # type: ignore[return-value]


_NATS_AUTH_PARAMS = (
    "nats_user",
    "nats_password",
    "nats_password_file",
    "nats_creds",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
)


def idempotency_secret_from_env() -> str | None:
    """HEADWATER_IDEMPOTENCY_SECRET: keys the control plane's idempotency records (the same on
    every control replica); without it, one is derived from the admin tokens."""
    return os.environ.get("HEADWATER_IDEMPOTENCY_SECRET") or None


def when_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """A click callback: an ISO-8601 time or a duration back from now (30m, 12h, 7d)."""
    if value is None:
        return None
    # Imported here: the consumers' replay module pulls in nats, ClickHouse and the enrichment
    # (~0.6 s), which every command taking options from this module would pay for at start.
    from headwater.consumers.replay import parse_when

    try:
        return parse_when(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use ISO-8601 (2026-11-28T07:00:00Z) or 30m / 12h / 7d"
        ) from None


# The events a query reads when --from and --to are not given: the last 30 days.
DEFAULT_RANGE = timedelta(days=30)
range_options = options(
    click.option(
        "--from",
        "start",
        callback=when_option,
        help="Events from this time (ISO-8601, or 30m/12h/7d ago); default: 30 days before --to.",
    ),
    click.option("--to", "end", callback=when_option, help="Events before this time; default: now."),
)


def time_range(start: datetime | None, end: datetime | None) -> dict[str, str]:
    """range_options' `from` and `to` as the API takes them: by default the 30 days before now."""
    until = end or datetime.now(UTC)
    since = start or until - DEFAULT_RANGE
    return {"from": since.isoformat(), "to": until.isoformat()}
