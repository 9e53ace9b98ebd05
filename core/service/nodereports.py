"""Node reports: every role of every process publishes its readiness (its /readyz answer: checks
and details) every few seconds into the KV bucket HW_NODES, under `<role>.<node>`. The bucket's
TTL removes the report of a node that stopped reporting; the control plane's /v1/health lists
what is there (docs/reliability.md, "Node reports").

This module is the report's format and the bucket; the loop that publishes is wired by ops/.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from .kvbuckets import ensure_bucket

NODES_BUCKET = "HW_NODES"
# A report older than this is gone: a node that died disappears from /v1/health within it.
REPORT_TTL_SECONDS = 30.0
DEFAULT_INTERVAL_SECONDS = 5.0
# The largest report a node publishes (less where the server's max_payload is smaller); an edge's
# refusal log is trimmed to fit (edge/refusals.py).
MAX_REPORT_BYTES = 256 * 1024
# Room a report leaves in a NATS message for the KV headers and the protocol's framing.
MESSAGE_OVERHEAD_BYTES = 1024
_NOT_KEY = re.compile(r"[^A-Za-z0-9_-]+")
MAX_NODE_LENGTH = 100


class NodeReport(msgspec.Struct, forbid_unknown_fields=False):
    """One role of one process, as it answers /readyz, and when it said so. `refusals`: an edge's
    refusal log (edge/refusals.py), None for other roles."""

    role: str
    node: str
    ready: bool
    checks: dict[str, bool]
    details: dict[str, Any]
    reported_at: str
    refusals: dict[str, Any] | None = None


def node_name(hostname: str, pid: int) -> str:
    """`hostname-pid`, made a single KV key token (no dots: the key is `<role>.<node>`)."""
    host = _NOT_KEY.sub("-", hostname).strip("-") or "host"
    return f"{host[: MAX_NODE_LENGTH - 12]}-{pid}"


def report_key(role: str, node: str) -> str:
    return f"{role}.{node}"


def encode_report(report: NodeReport, limit: int = MAX_REPORT_BYTES) -> bytes:
    """The report as JSON; over `limit` bytes, without its details and refusals (said so), so that
    the node's readiness is still reported."""
    encoded = orjson.dumps(msgspec.to_builtins(report), default=str)
    if len(encoded) <= limit:
        return encoded
    trimmed = msgspec.structs.replace(
        report, details={"report_trimmed": f"details over {limit} bytes left out"}, refusals=None
    )
    return orjson.dumps(msgspec.to_builtins(trimmed), default=str)


def decode_report(raw: bytes) -> NodeReport | None:
    """A report as published; None for bytes that are not one (never an error: one bad node must
    not hide the others)."""
    try:
        return msgspec.json.decode(raw, type=NodeReport)
    except msgspec.DecodeError:
        return None


def bucket_config(replicas: int = 1) -> KeyValueConfig:
    # In memory: reports are rewritten every few seconds and worth nothing after a restart.
    return KeyValueConfig(
        bucket=NODES_BUCKET,
        description="headwater node reports: each role's readiness, refreshed every few seconds",
        history=1,
        ttl=REPORT_TTL_SECONDS,
        storage=StorageType.MEMORY,
        replicas=replicas,
    )


async def ensure_nodes_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    return await ensure_bucket(js, bucket_config(replicas))


async def read_reports(js: JetStreamContext, kv: KeyValue) -> list[NodeReport]:
    """Every report in the bucket now, by key. The keys are read from the stream's subjects (a
    watcher's end marker can come early: core/projects/kvsnapshot.py), each value by a direct
    get; a key that expired meanwhile is skipped."""
    info = await js.stream_info(f"KV_{NODES_BUCKET}", subjects_filter=f"$KV.{NODES_BUCKET}.>")
    prefix = f"$KV.{NODES_BUCKET}."
    reports = []
    for subject in sorted(info.state.subjects or {}):
        try:
            entry = await kv.get(subject.removeprefix(prefix))
        except (KeyNotFoundError, KeyDeletedError):
            continue
        report = decode_report(entry.value or b"")
        if report is not None:
            reports.append(report)
    return reports
