"""What a worker does with a group of messages (consumers/processing.py): one Native block per
project, one outcome per message, bad messages refused alone. The consume loop around it, with real
NATS and ClickHouse and in worker processes, is in test_consumer.py and test_consumer_processes.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hw_testing import track_event

from headwater.consumers import processing
from headwater.consumers.blocks import encode_rows
from headwater.consumers.enrich import Enricher
from headwater.consumers.processing import Decoded, Refused, process
from headwater.consumers.rows import Row, envelope_rows
from headwater.consumers.wire import decode_envelope
from headwater.core.projects.project import utc_now_iso
from headwater.core.wire.envelope import Envelope, pack
from headwater.core.wire.subjects import events_subject


def message(project: str, *message_ids: str, **envelope: Any) -> tuple[str, bytes]:
    events = [{**track_event(messageId=m), "type": "track"} for m in message_ids]
    return events_subject(project), pack(Envelope(project, "r", utc_now_iso(), events, **envelope).encode())


def test_a_group_becomes_one_block_per_project_and_an_outcome_per_message() -> None:
    enricher = Enricher(None)
    group = [
        message("shop", "s1", "s2"),
        message("docs", "d1"),
        (events_subject("shop"), b"{not json"),
        (events_subject("docs"), message("shop", "elsewhere")[1]),  # an envelope on another's subject
        message("shop", *(f"big{i}" for i in range(200))),  # LZ4-framed
    ]
    processed = process(enricher, group, {})
    outcomes = processed.outcomes
    assert [type(o) for o in outcomes] == [Decoded, Decoded, Refused, Refused, Decoded]
    assert isinstance(outcomes[2], Refused) and "not JSON" in outcomes[2].error
    assert isinstance(outcomes[3], Refused) and "'shop' on hw.events.docs" in outcomes[3].error
    assert [(o.project, o.rows) for o in outcomes if isinstance(o, Decoded)] == [
        ("shop", 2), ("docs", 1), ("shop", 200)
    ]  # fmt: skip
    # Each project's block holds its messages' rows in order, as encoded in one go.
    shop_rows = [
        row for _, data in (group[0], group[4]) for row in envelope_rows(decode_envelope(data), enricher)
    ]
    assert processed.blocks["shop"] == encode_rows(shop_rows)
    assert set(processed.blocks) == {"shop", "docs"}


def test_a_message_whose_rows_cannot_be_encoded_is_refused_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def encode_unless_bad(rows: Sequence[Row]) -> bytes:
        if any(row[0] == "bad" for row in rows):
            raise ValueError("a value its column cannot hold (injected)")
        return encode_rows(rows)

    monkeypatch.setattr(processing, "encode_rows", encode_unless_bad)
    enricher = Enricher(None)
    group = [message("shop", "g1"), message("shop", "bad", "g2"), message("shop", "g3")]
    processed = process(enricher, group, {})
    assert [type(o) for o in processed.outcomes] == [Decoded, Refused, Decoded]
    refused = processed.outcomes[1]
    assert isinstance(refused, Refused) and "cannot be stored" in refused.error
    good = [row for i in (0, 2) for row in envelope_rows(decode_envelope(group[i][1]), enricher)]
    # the good messages' blocks, one each, concatenated (Native blocks concatenate)
    assert processed.blocks["shop"] == encode_rows(good[:1]) + encode_rows(good[1:])


def test_a_projects_rows_are_encoded_in_parts_as_they_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processing, "ENCODE_ROWS", 3)
    enricher = Enricher(None)
    group = [message("shop", "a1", "a2"), message("shop", "b1", "b2"), message("shop", "c1")]
    processed = process(enricher, group, {})
    rows = [envelope_rows(decode_envelope(data), enricher) for _, data in group]
    # the first two messages reach 3 rows: one block; the third is the rest
    assert processed.blocks["shop"] == encode_rows(rows[0] + rows[1]) + encode_rows(rows[2])
