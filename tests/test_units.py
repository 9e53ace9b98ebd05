"""Pure logic, no services: origins, keys, admin auth, envelope, rows, TSV output."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import click
import lz4.frame
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from headwater.consumers.enrich import ENRICHMENT_COLUMN_TYPES, Enricher
from headwater.consumers.rows import COLUMNS, DERIVED_COLUMNS, RAW_COLUMNS, envelope_rows
from headwater.consumers.wire import decode_envelope
from headwater.control.auth import authenticate_admin
from headwater.control.settings import AdminToken, ControlSettings
from headwater.core.migrations import m0001_events, m0002_enrichment, m0005_bot_reason
from headwater.core.migrations.ddl import replacing_engine
from headwater.core.projects.keys import ApiKey, key_digest
from headwater.core.projects.origins import OriginPolicy, normalise_origin, normalise_origins
from headwater.core.projects.settings import ProjectSettings
from headwater.core.service.errors import APIError
from headwater.core.wire import envelope as envelope_module
from headwater.core.wire.envelope import LZ4_FRAME_MAGIC, Envelope, EnvelopeError, pack, unpack
from headwater.core.wire.timestamps import utc_timestamp
from headwater.edge.errors import IngestError
from headwater.edge.ingest import IngestRequest, extract_write_key
from headwater.edge.settings import EdgeSettings
from headwater.ops.options import edge_options, edge_settings
from headwater.ops.query import tsv_field
from headwater.ops.runtime import StackSettings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443/", "https://app.example.com"),
        ("http://localhost:8700", "http://localhost:8700"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_origins_are_normalised(raw: str, expected: str) -> None:
    assert normalise_origin(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "example.com",
        "ftp://example.com",
        "https://example.com/path",
        "https://u:p@example.com",
        "https://",
    ],
)
def test_invalid_origins_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        normalise_origin(raw)


def test_invalid_origin_is_reported_with_its_index() -> None:
    with pytest.raises(APIError) as error:
        normalise_origins(["https://ok.example", "https://ok.example", "nope"], allow_any=False)
    assert error.value.field == "allowed_origins[2]"
    assert normalise_origins(["https://a.example", "https://A.example/"], allow_any=False) == (
        "https://a.example",
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("https://*.com", "two labels"),
        ("https://a.*.example.com", "first label"),
        ("https://*example.com", "first label"),
        ("*", "allow_any_origin"),
    ],
)
def test_bad_wildcards_and_unconfirmed_any_origin_are_refused(entry: str, message: str) -> None:
    with pytest.raises(APIError, match=message):
        normalise_origins([entry], allow_any=False)


def test_origin_policy_matches_exact_wildcard_and_any() -> None:
    allowed = normalise_origins(
        ["https://app.example.com", "https://*.Example.org", "http://*.dev.test:8080"], False
    )
    policy = OriginPolicy.compile(allowed)
    for origin in (
        "https://app.example.com",
        "https://APP.example.com:443",
        "https://a.example.org",
        "https://a.b.example.org",
        "http://x.dev.test:8080",
    ):
        assert policy.allows(origin), origin
    for origin in (
        None,
        "",
        "null",
        "http://app.example.com",
        "https://example.org",
        "https://evilexample.org",
        "https://a.example.org:8443",
        "http://x.dev.test",
        "https://app.example.com.evil.net",
    ):
        assert not policy.allows(origin), origin
    anything = OriginPolicy.compile(normalise_origins(["*"], allow_any=True))
    assert anything.allows("https://whatever.example")
    assert not anything.allows("null")


def test_secret_keys_are_kept_only_as_digests() -> None:
    record, key = ApiKey.issue("secret", "2026-01-01T00:00:00Z")
    assert record.kind == "secret" and key.startswith("hwsk_")
    assert record.value is None
    assert record.digest == key_digest(key)
    assert key not in str(record.to_dict())
    assert ApiKey.from_dict(record.to_dict()) == record
    public, public_key = ApiKey.issue("public", "2026-01-01T00:00:00Z")
    assert public.value == public_key
    assert public.kind == "public" and public_key.startswith("hwpk_")
    assert len({ApiKey.issue("public", "t")[1] for _ in range(50)}) == 50


def test_admin_authentication() -> None:
    tokens = (AdminToken("old", "a" * 32), AdminToken("new", "b" * 32))
    assert authenticate_admin("Bearer " + "b" * 32, tokens).name == "new"
    assert authenticate_admin("bearer " + "a" * 32, tokens).name == "old"
    for header, status in ((None, 401), ("", 401), ("Basic abc", 401), ("Bearer " + "c" * 32, 403)):
        with pytest.raises(APIError) as error:
            authenticate_admin(header, tokens)
        assert error.value.status == status
    assert "a" * 32 not in repr(tokens[0])


def test_control_settings_refuse_weak_or_missing_tokens() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ControlSettings(clickhouse_url="chdb:///x", admin_tokens=())
    with pytest.raises(ValueError, match="16 characters"):
        ControlSettings(clickhouse_url="chdb:///x", admin_tokens=(AdminToken("t", "short"),))


def facts(**overrides: str | None) -> IngestRequest:
    return IngestRequest("track", b"", **overrides)  # type: ignore[arg-type]


def test_write_key_sources_in_order() -> None:
    basic = "Basic " + base64.b64encode(b"hwpk_basic:").decode()
    assert extract_write_key(facts(authorization=basic, write_key_header="hwpk_h"), "b") == "hwpk_basic"
    assert extract_write_key(facts(write_key_header="hwpk_h"), "b") == "hwpk_h"
    assert extract_write_key(facts(), "hwpk_b") == "hwpk_b"
    with pytest.raises(IngestError) as error:
        extract_write_key(facts(), None)
    assert (error.value.status, error.value.code) == (401, "missing_key")
    with pytest.raises(IngestError) as error:
        extract_write_key(facts(authorization="Basic !!!"), None)
    assert error.value.code == "invalid_authorization"


def test_envelope_round_trip() -> None:
    envelope = Envelope(
        "demo", "r1", "2026-11-28T10:00:00.000Z", [{"type": "track"}], "secret", "1.2.3.4", "ua", None
    )
    assert Envelope.decode(envelope.encode()) == envelope
    batch = Envelope("demo", "r2", "t", [{"type": "track"}], sent_at="s", context={"locale": "de"})
    assert Envelope.decode(batch.encode()) == batch


def batch_envelope(events: int) -> Envelope:
    return Envelope(
        "demo",
        "r1",
        "2026-11-28T10:00:00.000Z",
        [
            {"type": "track", "event": f"Event {i}", "anonymousId": "a1", "messageId": f"m{i}"}
            for i in range(events)
        ],
        "secret",
    )


def test_envelopes_longer_than_the_threshold_travel_lz4_framed() -> None:
    small, large = batch_envelope(1).encode(), batch_envelope(100).encode()
    assert len(small) < 4096 < len(large)
    assert pack(small) == small  # a single event: JSON as it is
    packed = pack(large)
    assert packed.startswith(LZ4_FRAME_MAGIC) and len(packed) < len(large) / 3
    assert pack(large, compress_above=0) == large  # compression off
    assert pack(large, compress_above=len(large)) == large
    assert unpack(packed) == large and unpack(large) == large
    assert Envelope.decode(packed) == batch_envelope(100)
    assert decode_envelope(packed).events[99].messageId == "m99"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (LZ4_FRAME_MAGIC + b"garbage!" * 4, "not a readable LZ4 frame"),
        (lz4.frame.compress(b'{"v": 2}' * 1000)[:40], "truncated"),
    ],
)
def test_an_unreadable_lz4_frame_is_poison(frame: bytes, reason: str) -> None:
    for decode in (Envelope.decode, decode_envelope):
        with pytest.raises(EnvelopeError, match=reason):
            decode(frame)


def test_frames_inflate_in_steps_whatever_size_they_declare() -> None:
    data = batch_envelope(4000).encode()  # several times the 64 KB step
    assert len(data) > 4 * (64 << 10)
    assert unpack(lz4.frame.compress(data)) == data  # the size declared: one step
    assert unpack(lz4.frame.compress(data, store_size=False)) == data  # none declared: 64 KB steps


def test_a_frame_that_inflates_past_the_limit_is_poison(monkeypatch: pytest.MonkeyPatch) -> None:
    packed = pack(batch_envelope(100).encode())
    monkeypatch.setattr(envelope_module, "MAX_ENVELOPE_BYTES", 4096)
    with pytest.raises(EnvelopeError, match="inflates past 4096 bytes"):
        decode_envelope(packed)
    undeclared = lz4.frame.compress(batch_envelope(100).encode(), store_size=False)
    with pytest.raises(EnvelopeError, match="inflates past 4096 bytes"):
        decode_envelope(undeclared)


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not an envelope"),
        (b'{"v": 4}', "unsupported envelope version 4"),
        (b'{"v": 99, "events": []}', "unsupported envelope version 99"),
        (b'{"v": 1, "project": "p"}', "missing required field"),
        (b'{"v": 1, "project": "p", "request_id": "r", "received_at": "t", "events": [1]}', "events"),
        (
            b'{"v": 1, "project": "p", "request_id": "r", "received_at": "t", "events": [], "key_kind": "x"}',
            "key kind",
        ),
    ],
)
@pytest.mark.parametrize("decode", [Envelope.decode, decode_envelope], ids=["tools", "consumers"])
def test_readers_refuse_what_is_not_an_envelope(poison: bytes, reason: str, decode: Any) -> None:
    """One definition of an envelope (core/wire/envelope.py): tools and consumers refuse alike."""
    with pytest.raises(EnvelopeError, match=reason):
        decode(poison)


def test_rows_follow_the_table_columns() -> None:
    ddl = m0001_events.statements("hw_x", None)[0]
    for column in RAW_COLUMNS:
        assert f"\n            {column} " in ddl
    # Migrations 2 and 5 add exactly the derived columns, in order, with the types enrichment declares.
    derived = m0002_enrichment.COLUMNS + m0005_bot_reason.COLUMNS
    assert [name for name, _ in derived] == list(DERIVED_COLUMNS)
    assert all(ENRICHMENT_COLUMN_TYPES[name] == kind for name, kind in derived)
    envelope = Envelope(
        "demo",
        "r1",
        "2026-11-28T10:00:00.000Z",
        [
            {
                "type": "track",
                "messageId": "m",
                "event": "E",
                "userId": 42,
                "timestamp": "2026-11-28T11:00:00+01:00",
            }
        ],
        ip="203.0.113.77",
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    )
    [row] = envelope_rows(decode_envelope(envelope.encode()), Enricher(None))
    values = dict(zip(COLUMNS, row, strict=True))
    assert values["timestamp"] == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert values["user_id"] == "42"
    assert values["properties"] == "{}"
    assert values["sent_at"] is None
    assert values["ip"] == "203.0.113.0"  # truncated by default
    assert (values["browser"], values["os"], values["device_type"]) == ("Mobile Safari", "iOS", "mobile")
    assert utc_timestamp("garbage") is None


def test_rows_correct_clock_skew_in_version_2_envelopes_only() -> None:
    """Version 2: the client's timestamp, corrected with the batch's sentAt (or the event's own).
    Version 1 (still in streams written before): the edge had corrected it already."""
    received = "2026-11-28T10:00:00.000Z"
    device_ahead = [
        {
            "type": "track",
            "messageId": "a",
            "event": "E",
            "anonymousId": "x",
            "timestamp": "2026-11-28T10:59:00Z",
        },
        {
            "type": "track",
            "messageId": "b",
            "event": "E",
            "anonymousId": "x",
            "timestamp": "2026-11-28T10:58:00Z",
            "sentAt": "2026-11-28T10:59:30Z",
        },
        {
            "type": "track",
            "messageId": "c",
            "event": "E",
            "anonymousId": "x",
            "timestamp": "2026-11-28T13:00:00Z",
        },
    ]
    v2 = Envelope("demo", "r", received, device_ahead, sent_at="2026-11-28T11:00:00Z")
    rows = [
        dict(zip(COLUMNS, row, strict=True))
        for row in envelope_rows(decode_envelope(v2.encode()), Enricher(None))
    ]
    assert [r["timestamp"] for r in rows] == [
        datetime(2026, 11, 28, 9, 59, tzinfo=UTC),
        datetime(2026, 11, 28, 9, 58, 30, tzinfo=UTC),
        # Two hours past its sentAt: corrected, it would lie in the future; arrival time instead.
        datetime(2026, 11, 28, 10, tzinfo=UTC),
    ]
    assert [r["sent_at"] for r in rows] == [
        datetime(2026, 11, 28, 11, tzinfo=UTC),
        datetime(2026, 11, 28, 10, 59, 30, tzinfo=UTC),
        datetime(2026, 11, 28, 11, tzinfo=UTC),
    ]
    corrected = [{**event, "sentAt": "2026-11-28T11:00:00Z"} for event in device_ahead[:1]]
    v1 = Envelope("demo", "r", received, corrected, v=1)
    [row] = envelope_rows(decode_envelope(v1.encode()), Enricher(None))
    assert row[COLUMNS.index("timestamp")] == datetime(2026, 11, 28, 10, 59, tzinfo=UTC)  # as stored


def test_anonymisation_rules_apply_to_rows() -> None:
    event = {
        "type": "track",
        "messageId": "m",
        "event": "E",
        "userId": "u",
        "properties": {"email": "a@example.com", "plan": "pro"},
        "context": {"ip": "198.51.100.23", "locale": "de"},
    }
    envelope = Envelope("demo", "r1", "2026-11-28T10:00:00.000Z", [event], "secret", "10.0.0.1")
    rules = ProjectSettings().merged({"anonymisation": {"ip": "drop", "redact_properties": ["email"]}})
    [row] = envelope_rows(decode_envelope(envelope.encode()), Enricher(None), rules)
    values = dict(zip(COLUMNS, row, strict=True))
    assert values["ip"] == ""
    assert values["properties"] == '{"plan":"pro"}'
    assert "198.51.100.23" not in values["context"]  # the full address is not kept in context either
    keep = ProjectSettings().merged({"anonymisation": {"ip": "keep"}})
    [row] = envelope_rows(decode_envelope(envelope.encode()), Enricher(None), keep)
    assert dict(zip(COLUMNS, row, strict=True))["ip"] == "198.51.100.23"  # a secret sender's context.ip


def test_tsv_fields_are_escaped_like_clickhouse() -> None:
    assert tsv_field(None) == "\\N"
    assert tsv_field("a\tb\nc\\") == "a\\tb\\nc\\\\"
    assert tsv_field(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02 03:04:05"
    assert tsv_field(7) == "7"


def test_json_logs_carry_role_and_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    from headwater.core.service.logcontext import request_id
    from headwater.ops.logs import configure_logging

    configure_logging("info", "json", "edge")
    token = request_id.set("req-123")
    try:
        logging.getLogger("headwater.test").warning("publish failed")
    finally:
        request_id.reset(token)
        configure_logging("warning", "text", "tests")
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["role"] == "edge"
    assert record["request_id"] == "req-123"
    assert record["level"] == "WARNING"
    assert record["message"] == "publish failed"
    assert record["logger"] == "headwater.test"


def test_assigned_message_ids_are_distinct_version_4_uuids_also_after_a_fork() -> None:
    import os
    import uuid

    from headwater.edge.ids import next_request_id
    from headwater.edge.validation import validate_event

    def assigned() -> str:
        event = validate_event({"type": "track", "event": "E", "anonymousId": "a"}, "track", 32_000, 0, 10)
        return str(event["messageId"])

    ids = [assigned() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert {uuid.UUID(i).version for i in ids} == {4}
    assert all(str(uuid.UUID(i)) == i for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a forked worker must not repeat its parent's ids
        os.write(write, f"{assigned()} {next_request_id()}".encode())
        os._exit(0)
    os.waitpid(child, 0)
    os.close(write)
    from_child, request_from_child = os.read(read, 100).decode().split()
    os.close(read)
    assert from_child not in ids and from_child[:23] != ids[0][:23]
    request_ids = {next_request_id() for _ in range(1000)}
    assert len(request_ids) == 1000 and all(len(r) == 32 and int(r, 16) >= 0 for r in request_ids)
    assert request_from_child[:20] != next_request_id()[:20]


def test_log_levels_per_role() -> None:
    import logging

    from headwater.ops.logs import _Context, configure_logging, parse_log_levels

    assert parse_log_levels("warning") == ("warning", {})
    assert parse_log_levels("info, consumer=DEBUG,http=error") == (
        "info",
        {"consumer": "debug", "http": "error"},
    )
    for bad in ("loud", "edge=loud", "kitchen=debug"):
        with pytest.raises(ValueError, match="unknown"):
            parse_log_levels(bad)
    try:
        configure_logging("warning,consumer=debug", "json", "up")
        assert logging.getLogger().level == logging.WARNING
        assert logging.getLogger("headwater.consumers").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("headwater.consumers.runner").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("headwater.edge.asgi").isEnabledFor(logging.INFO)
    finally:
        logging.getLogger("headwater.consumers").setLevel(logging.NOTSET)
        configure_logging("info")
    # In `up` (every role in one process) each record is named after its role.
    context = _Context("up")
    for logger, role in (("headwater.edge.asgi", "edge"), ("headwater.consumers.pull", "consumer"),
                         ("headwater.core.projects.registry", "core"), ("uvicorn.error", "http"),
                         ("headwater.ops.runtime", "up")):  # fmt: skip
        record = logging.LogRecord(logger, logging.INFO, __file__, 1, "m", None, None)
        context.filter(record)
        assert record.role == role


def test_migrations_on_a_cluster_create_replicated_tables() -> None:
    single, clustered = m0001_events.statements("hw_p", None)[0], m0001_events.statements("hw_p", "main")[0]
    assert "ENGINE = ReplacingMergeTree(copy_rank)\n" in single
    assert "non_replicated_deduplication_window" in single
    assert "ON CLUSTER `main`" in clustered
    path = "'/clickhouse/tables/{shard}/{database}/{table}'"
    assert f"ReplicatedReplacingMergeTree({path}, '{{replica}}', copy_rank)" in clustered
    # Migration 7's new table of an old database: a Keeper path of its own beside the old one's.
    assert replacing_engine("main", "copy_rank", table_path="events_7") == (
        f"ReplicatedReplacingMergeTree({path.replace('{table}', 'events_7')}, '{{replica}}', copy_rank)"
    )
    assert "SETTINGS replicated_deduplication_window = 1000" in clustered


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
json_values = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)


@given(properties=json_objects | json_values, traits=json_objects, context=json_objects, redact=st.booleans())
def test_json_columns_hold_what_the_event_held(
    properties: object, traits: object, context: object, redact: bool
) -> None:
    """properties/traits/context are stored from the envelope's raw JSON: they must read back as the
    event's values ({} for an empty or false one), minus redacted names, with context.ip never the
    full address."""
    import orjson

    event = {
        "type": "track",
        "messageId": "m",
        "properties": properties,
        "traits": traits,
        "context": context,
    }
    envelope = Envelope("demo", "r", "2026-11-28T10:00:00.000Z", [event], "secret", "10.0.0.1")
    names = ("a", "b") if redact else ()
    rules = ProjectSettings().merged({"anonymisation": {"ip": "drop", "redact_properties": list(names)}})
    [row] = envelope_rows(decode_envelope(envelope.encode()), Enricher(None), rules)
    values = dict(zip(COLUMNS, row, strict=True))

    def expected(value: object) -> object:
        if isinstance(value, dict) and names:
            value = {k: v for k, v in value.items() if k not in names}
        return value if value else {}

    assert orjson.loads(values["properties"]) == expected(properties)
    assert orjson.loads(values["traits"]) == expected(traits)
    stored_context = orjson.loads(values["context"])
    if isinstance(context, dict) and "ip" in context:
        assert stored_context == {**context, "ip": ""}  # the rule (drop) applies inside context too
    else:
        assert stored_context == expected(context) if context else stored_context == {}


async def test_cancel_and_wait_outlasts_a_swallowed_cancellation() -> None:
    """A loop that loses one cancellation (as asyncio.wait_for can on Python 3.11) still ends."""
    import asyncio

    from headwater.core.service.tasks import cancel_and_wait

    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # carry on, as if the cancellation never came

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled() and swallowed == 1

    async def failing() -> None:
        raise RuntimeError("broken")

    broken = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="broken"):
        await cancel_and_wait(broken)


def test_compress_above_flag_and_variable_reach_the_edge_settings() -> None:
    settings: list[EdgeSettings] = []

    @click.command()
    @edge_options
    def probe(**flags: Any) -> None:
        settings.append(edge_settings("127.0.0.1", 0, "", **flags))

    runner = CliRunner()
    assert runner.invoke(probe, [], env={}).exit_code == 0
    assert runner.invoke(probe, ["--compress-above", "0"], env={}).exit_code == 0
    assert runner.invoke(probe, [], env={"HEADWATER_COMPRESS_ABOVE": "65536"}).exit_code == 0
    assert [s.compress_above_bytes for s in settings] == [4096, 0, 65536]
    refused = runner.invoke(probe, ["--compress-above", "-1"], env={})
    assert refused.exit_code == 2 and "--compress-above" in refused.output


def test_serve_consumer_takes_its_workers_and_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from headwater.ops import serve as serve_module

    started: list[StackSettings] = []
    monkeypatch.setattr(serve_module, "run_role", lambda _role, settings: started.append(settings))
    monkeypatch.setattr(serve_module, "configure_logging", lambda *_args: None)
    base = ["consumer", "--nats-url", "nats://127.0.0.1:4222", "--clickhouse-url", "chdb:///tmp/x"]
    runner = CliRunner()
    assert runner.invoke(serve_module.serve, base).exit_code == 0
    assert (
        runner.invoke(
            serve_module.serve, [*base, "--consumer-workers", "0", "--max-batch-rows", "1000"]
        ).exit_code
        == 0
    )
    defaults, chosen = (settings.consumer for settings in started)
    assert defaults is not None and chosen is not None
    assert defaults.workers is None and defaults.worker_count() >= 1 and defaults.max_batch_rows == 50_000
    assert chosen.workers == 0 and chosen.worker_count() == 0 and chosen.max_batch_rows == 1000
    refused = runner.invoke(serve_module.serve, [*base, "--consumer-workers", "-1"])
    assert refused.exit_code == 2 and "--consumer-workers" in refused.output
