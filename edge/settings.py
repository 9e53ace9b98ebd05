"""Settings of the edge role. Built by `ops/` from flags and HEADWATER_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from headwater.core.wire.envelope import DEFAULT_COMPRESS_ABOVE


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    host: str = "127.0.0.1"
    port: int = 8700
    # Several edge processes on one port (SO_REUSEPORT): the kernel spreads connections over them.
    reuse_port: bool = False
    max_body_bytes: int = 500 * 1024
    max_event_bytes: int = 32 * 1024
    max_batch_events: int = 2500
    max_nesting_depth: int = 32
    publish_timeout_seconds: float = 2.0
    # Envelopes longer than this are published LZ4-compressed (core/wire/envelope.py); 0: never.
    compress_above_bytes: int = DEFAULT_COMPRESS_ABOVE
    retry_after_seconds: int = 5
    # Peers whose X-Forwarded-For is believed (CIDRs, e.g. the load balancers).
    trusted_proxies: tuple[str, ...] = ()
    # Each edge enforces 1/N of a project's rate limits (see docs/ingest-api.md).
    rate_limit_edges: int = 1
    max_ip_buckets: int = 100_000
    cors_max_age_seconds: int = 600
    # After SIGTERM: seconds to keep serving while /readyz answers 503 ("draining"), so that a
    # load balancer takes the edge out of rotation before it stops accepting connections.
    shutdown_delay_seconds: float = 0.0
    # This process's own spool directory (see docs/spool.md); None: no spool, 503 when JetStream
    # cannot acknowledge.
    spool_dir: str | None = None
    spool_max_bytes: int = 1 << 30
    # The spool refuses appends that would leave less free space on its filesystem (or 5% of it).
    spool_min_free_bytes: int = 256 << 20
    # The last known project configs on disk, so that the edge starts while NATS is unreachable
    # (docs/spool.md); None: no cache, the edge waits for NATS at start. Older than the max age,
    # they are not served (503).
    config_cache: str | None = None
    config_max_age_seconds: float = 24 * 3600.0
    # PEM certificate chain and key: serve HTTPS (HTTP/2 and HTTP/1.1) instead of plain HTTP.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Most bytes one request may expand to once consumers apply a batch's context to each event
    # without its own (the body plus the context once per such event).
    max_expanded_bytes: int = 8 << 20
    # The operator listener: /metrics and the detailed /readyz, kept off the public ingest port
    # (they name projects, volumes and spool paths). None: not served; 0: any free port.
    operator_host: str = "127.0.0.1"
    operator_port: int | None = None

    def __post_init__(self) -> None:
        if self.shutdown_delay_seconds < 0:
            raise ValueError("shutdown_delay_seconds cannot be negative")
        if self.compress_above_bytes < 0:
            raise ValueError("compress_above_bytes cannot be negative")
        if self.rate_limit_edges < 1:
            raise ValueError("rate_limit_edges must be at least 1")
        if self.max_event_bytes > self.max_body_bytes:
            raise ValueError("max_event_bytes cannot exceed max_body_bytes")
        if not 2 <= self.max_nesting_depth <= 254:
            raise ValueError("max_nesting_depth must be between 2 and 254 (a body may nest 256 levels)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a TLS certificate needs its key, and a key its certificate")
