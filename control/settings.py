"""Settings of the control-plane role. Built by `ops/` from flags and HEADWATER_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AdminToken:
    """A named admin bearer token; the name (never the token) is what logs and audits show."""

    name: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ControlSettings:
    clickhouse_url: str
    admin_tokens: tuple[AdminToken, ...]
    host: str = "127.0.0.1"
    port: int = 8701
    clickhouse_cluster: str | None = None
    max_body_bytes: int = 1_000_000
    query_max_rows: int = 10_000
    query_timeout_seconds: int = 30
    query_max_memory_bytes: int = 1_000_000_000
    query_max_concurrent: int = 4
    # A ClickHouse server URL whose user runs the query API under each project's reader role.
    query_clickhouse_url: str | None = None
    kv_replicas: int = 1
    # Bounds on a pattern-discovery request's input (docs/patterns.md, "Limits"): more journeys in
    # the range are refused, longer journeys keep their first steps, mining longer is stopped.
    patterns_max_journeys: int = 200_000
    patterns_max_steps: int = 100
    patterns_max_seconds: float = 120.0
    # PEM certificate chain and key: serve HTTPS (HTTP/2 and HTTP/1.1) instead of plain HTTP.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Wrong admin tokens a client address may send in a row before it is slowed down to one a
    # second (core/service/authfailures.py).
    auth_failures_burst: int = 20
    # Keys the idempotency records (control/idempotency.py); default: derived from the admin tokens.
    idempotency_secret: str | None = field(default=None, repr=False)
    # Data-subject deletion jobs (control/subjects.py): waited after each deletion pass beyond the
    # project's batching span, and how many passes may find rows before the job is failed.
    subjects_settle_margin_seconds: float = 15.0
    subjects_max_passes: int = 5

    def __post_init__(self) -> None:
        if not self.admin_tokens:
            raise ValueError("the control plane needs at least one admin token")
        if any(len(t.token) < 16 for t in self.admin_tokens):
            raise ValueError("admin tokens must be at least 16 characters long")
        if self.patterns_max_journeys < 1 or self.patterns_max_steps < 1:
            raise ValueError("the patterns limits must be at least 1")
        if not self.patterns_max_seconds > 0:
            raise ValueError("the patterns time limit must be positive")
        if not self.subjects_settle_margin_seconds >= 0 or self.subjects_max_passes < 2:
            raise ValueError("the deletion jobs need a margin >= 0 and at least 2 passes")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a TLS certificate needs its key, and a key its certificate")
