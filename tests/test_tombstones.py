"""Data-subject tombstones: which events they match (pure), the digest ClickHouse computes for a
deletion equals ours, and the consumers' processing leaves the matching events out (inline and in
worker processes)."""

from __future__ import annotations

from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from headwater.consumers.processing import Decoded, Processor
from headwater.control.subjects import person_condition
from headwater.core.projects.project import utc_now_iso
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import events_subject
from headwater.privacy.tombstones import (
    Tombstones,
    digest_sql,
    subject_digest,
    tombstone_digest,
)


def tombstones(project_id: str, *ids: tuple[Any, str]) -> Tombstones:
    return Tombstones(project_id, frozenset(tombstone_digest(project_id, kind, value) for kind, value in ids))


def test_an_event_matches_by_its_user_id_or_its_anonymous_id_of_the_same_kind_and_project() -> None:
    deleted = tombstones("shop", ("user_id", "u1"), ("anonymous_id", "a1"))
    assert deleted.matches("u1", "")
    assert deleted.matches("", "a1")
    assert deleted.matches("someone", "a1") and deleted.matches("u1", "other")
    assert not deleted.matches("a1", "")  # an anonymous id's tombstone does not match a user id
    assert not deleted.matches("", "u1")
    assert not deleted.matches("", "") and not deleted.matches("u2", "a2")
    assert not tombstones("blog", ("user_id", "u1")).matches("", "") and not Tombstones(
        "blog", frozenset({tombstone_digest("shop", "user_id", "u1")})
    ).matches("u1", "")  # another project's tombstone


def test_rows_are_kept_or_counted_out() -> None:
    deleted = tombstones("shop", ("user_id", "u1"))
    rows = [("m1", "a1", "u1"), ("m2", "a2", ""), ("m3", "a3", "u3")]
    assert deleted.without_matches(rows, 2, 1) == ([rows[1], rows[2]], 1)


def test_the_subject_digest_holds_no_id_and_ignores_order() -> None:
    digest = subject_digest("shop", "u1", ["a2", "a1", "a1"])
    assert digest == subject_digest("shop", "u1", ["a1", "a2"])
    assert digest != subject_digest("shop", None, ["a1", "a2"]) != subject_digest("blog", "u1", ["a1", "a2"])
    assert len(digest) == 64 and "u1" not in digest


@pytest.mark.services
def test_clickhouse_computes_the_same_digests_and_the_condition_finds_the_rows(
    clickhouse: Client, project_id: str
) -> None:
    values = ["u1", "ünïcödé", "with'quote", "a\\b"]
    digest = digest_sql("project", "user_id", "value")
    sql = f"SELECT {digest} FROM (SELECT arrayJoin({{values:Array(String)}}) AS value)"
    computed = [
        row[0] for row in clickhouse.query(sql, parameters={"project": "shop", "values": values}).result_rows
    ]
    assert computed == [tombstone_digest("shop", "user_id", v).hex() for v in values]

    database = f"hw_{project_id}"
    clickhouse.command(
        f"INSERT INTO {database}.events (message_id, anonymous_id, user_id, received_at) VALUES "
        "('m1', 'a1', ''), ('m2', 'a2', 'u1'), ('m3', 'a3', 'u3')".replace("')", "', now64(3))")
    )
    digests = [
        tombstone_digest(project_id, "anonymous_id", "a1").hex(),
        tombstone_digest(project_id, "user_id", "u1").hex(),
    ]
    condition = person_condition({"user_id", "anonymous_id"})
    found = clickhouse.query(
        f"SELECT message_id FROM {database}.events WHERE {condition} ORDER BY message_id",
        parameters={"project": project_id, "digests": digests},
    ).result_rows
    assert [row[0] for row in found] == ["m1", "m2"]


@pytest.mark.services
async def test_processing_leaves_out_the_events_of_deleted_people(processor: Processor) -> None:
    events = [
        {"type": "track", "event": "A", "messageId": "m1", "userId": "u1"},
        {"type": "track", "event": "B", "messageId": "m2", "anonymousId": "a2"},
        {"type": "track", "event": "C", "messageId": "m3", "anonymousId": "a3"},
    ]
    data = Envelope("shop", "r1", utc_now_iso(), events).encode()
    deleted = {
        "shop": frozenset(
            {tombstone_digest("shop", "user_id", "u1"), tombstone_digest("shop", "anonymous_id", "a3")}
        )
    }
    processed = await processor.process([(events_subject("shop"), data)], {}, deleted)
    [outcome] = processed.outcomes
    assert isinstance(outcome, Decoded) and (outcome.rows, outcome.suppressed) == (1, 2)
    untouched = await processor.process([(events_subject("shop"), data)], {})
    assert untouched.outcomes[0] == Decoded("shop", 3, outcome.received_at)
