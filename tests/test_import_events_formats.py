"""The pure half of `headwater import events`: lines → Segment events (Segment, Segment's archives,
Jitsu's three shapes), derived messageIds, files read from an offset (gzip by its magic bytes), and
the progress file. The path through the edge is tests/test_import_events.py."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from headwater.loaders.events.formats import to_segment
from headwater.loaders.events.lines import MAX_LINE_BYTES, derived_message_id, read_line
from headwater.loaders.events.refusal import LineRefused
from headwater.loaders.events.source import read_lines
from headwater.loaders.events.state import FileProgress, StateFile

# An event as Segment's S3 archive holds it (its fields, abridged values).
SEGMENT_ARCHIVED = {
    "anonymousId": "a-1",
    "channel": "client",
    "context": {"ip": "203.0.113.9", "page": {"url": "https://shop.example/pricing", "path": "/pricing"}},
    "event": "Plan Chosen",
    "integrations": {},
    "messageId": "ajs-next-1f2e",
    "originalTimestamp": "2024-03-02T10:00:03.120Z",
    "projectId": "src123",
    "properties": {"plan": "pro"},
    "receivedAt": "2024-03-02T10:00:04.500Z",
    "sentAt": "2024-03-02T10:00:03.900Z",
    "timestamp": "2024-03-02T10:00:03.720Z",
    "type": "track",
    "userId": "u-1",
    "version": 2,
    "writeKey": "wk",
}


def test_a_segment_archive_event_keeps_its_time_and_loses_what_the_edge_does_not_store() -> None:
    event = to_segment(dict(SEGMENT_ARCHIVED), "auto")
    assert event["timestamp"] == "2024-03-02T10:00:03.720Z"  # Segment's own, skew-corrected
    for dropped in ("sentAt", "receivedAt", "projectId", "writeKey"):
        assert dropped not in event
    assert event["originalTimestamp"] == "2024-03-02T10:00:03.120Z"
    assert event["messageId"] == "ajs-next-1f2e" and event["properties"] == {"plan": "pro"}


@pytest.mark.parametrize(
    ("present", "used"),
    [
        (
            {"originalTimestamp": "2024-01-01T00:00:01Z", "receivedAt": "2024-01-01T00:00:02Z"},
            "2024-01-01T00:00:01Z",
        ),
        ({"receivedAt": "2024-01-01T00:00:02Z", "sentAt": "2024-01-01T00:00:03Z"}, "2024-01-01T00:00:02Z"),
        ({"sentAt": "2024-01-01T00:00:03Z"}, "2024-01-01T00:00:03Z"),
    ],
)
def test_without_a_timestamp_the_next_time_stands_in(present: dict[str, str], used: str) -> None:
    event = to_segment({"type": "track", "event": "x", "userId": "u", **present}, "segment")
    assert event["timestamp"] == used and "sentAt" not in event


def test_an_event_without_any_time_or_type_is_refused_with_the_field() -> None:
    with pytest.raises(LineRefused) as no_time:
        to_segment({"type": "track", "event": "x", "userId": "u"}, "segment")
    assert (no_time.value.code, no_time.value.field) == ("missing_timestamp", "timestamp")
    with pytest.raises(LineRefused) as no_type:
        to_segment({"event": "x", "userId": "u", "timestamp": "2024-01-01T00:00:00Z"}, "segment")
    assert (no_type.value.code, no_type.value.field) == ("missing_type", "type")


def test_jitsu_event_json_gives_its_request_ip_as_the_context_ip() -> None:
    jitsu = {
        "type": "page",
        "messageId": "m1",
        "anonymousId": "a",
        "timestamp": "2024-05-01T08:00:00.000Z",
        "receivedAt": "2024-05-01T08:00:00.500Z",
        "requestIp": "198.51.100.7",
        "context": {"page": {"url": "https://x.example/"}},
        "writeKey": "k:s",
    }
    event = to_segment(jitsu, "jitsu")
    assert event["context"] == {"page": {"url": "https://x.example/"}, "ip": "198.51.100.7"}
    assert "requestIp" not in event and "writeKey" not in event and "receivedAt" not in event


def test_a_jitsu_bulker_row_is_unflattened() -> None:
    row = {
        "message_id": "m2",
        "type": "track",
        "event": "Clicked",
        "user_id": "u-2",
        "anonymous_id": "a-2",
        "timestamp": "2024-05-01T08:00:01.000Z",
        "received_at": "2024-05-01T08:00:02.000Z",
        "sent_at": "2024-05-01T08:00:01.500Z",
        "context_ip": "192.0.2.1",
        "context_user_agent": "Mozilla/5.0",
        "context_page_url": "https://x.example/a?b=1",
        "context_page_path": "/a",
        "context_campaign_source": "news",
        "context_library_name": "@jitsu/js",
        "context_traits_email": "u2@example.com",
        "button": "buy",
        "_timestamp": "2024-05-01T08:00:03.000Z",
    }
    assert to_segment(row, "auto") == {
        "messageId": "m2",
        "type": "track",
        "event": "Clicked",
        "userId": "u-2",
        "anonymousId": "a-2",
        "timestamp": "2024-05-01T08:00:01.000Z",
        "context": {
            "ip": "192.0.2.1",
            "userAgent": "Mozilla/5.0",
            "page": {"url": "https://x.example/a?b=1", "path": "/a"},
            "campaign": {"source": "news"},
            "library": {"name": "@jitsu/js"},
            "traits": {"email": "u2@example.com"},
        },
        "properties": {"button": "buy"},
    }


def test_a_jitsu_bulker_identify_row_has_its_traits_back() -> None:
    row = {
        "message_id": "m3",
        "type": "identify",
        "user_id": "u-3",
        "timestamp": "2024-05-01T08:00:01Z",
        "context_traits_email": "u3@example.com",
        "context_traits_plan": "pro",
    }
    event = to_segment(row, "jitsu")
    assert event["traits"] == {"email": "u3@example.com", "plan": "pro"}
    assert "context" not in event


def test_a_jitsu_classic_event_is_mapped() -> None:
    classic = {
        "eventn_ctx_event_id": "c1",
        "event_type": "pageview",
        "utc_time": "2021-06-01T12:00:00.000000Z",
        "_timestamp": "2021-06-01T12:00:01.000000Z",
        "user": {"anonymous_id": "anon-c", "id": "user-c", "email": "c@example.com"},
        "source_ip": "203.0.113.4",
        "user_agent": "Mozilla/5.0 (X11)",
        "url": "https://blog.example/post?x=1",
        "doc_path": "/post",
        "doc_search": "?x=1",
        "doc_host": "blog.example",
        "page_title": "A post",
        "referer": "https://search.example/",
        "user_language": "en-GB",
        "utm": {"source": "mail", "campaign": "spring"},
        "vp_size": "1280x720",
        "api_key": "js.x",
        "src": "jitsu",
    }
    assert to_segment(classic, "auto") == {
        "type": "page",
        "messageId": "c1",
        "userId": "user-c",
        "anonymousId": "anon-c",
        "timestamp": "2021-06-01T12:00:00.000000Z",
        "context": {
            "page": {
                "url": "https://blog.example/post?x=1",
                "path": "/post",
                "search": "?x=1",
                "title": "A post",
                "referrer": "https://search.example/",
            },
            "campaign": {"source": "mail", "name": "spring"},
            "ip": "203.0.113.4",
            "userAgent": "Mozilla/5.0 (X11)",
            "locale": "en-GB",
            "jitsu": {"doc_host": "blog.example", "vp_size": "1280x720"},
            "traits": {"email": "c@example.com"},
        },
    }


def test_a_flattened_jitsu_classic_track_keeps_its_properties() -> None:
    classic = {
        "eventn_ctx_event_id": "c2",
        "event_type": "signup",
        "utc_time": "2021-06-01T12:00:00Z",
        "user_id": "user-d",
        "user_anonymous_id": "anon-d",
        "plan": "free",
    }
    event = to_segment(classic, "jitsu")
    assert (event["type"], event["event"], event["userId"], event["anonymousId"]) == (
        "track",
        "signup",
        "user-d",
        "anon-d",
    )
    assert event["properties"] == {"plan": "free"}


def test_segment_format_reads_jitsu_keys_as_a_segment_event_would() -> None:
    with pytest.raises(LineRefused) as refused:
        to_segment({"event_type": "pageview", "utc_time": "2021-06-01T12:00:00Z"}, "segment")
    assert refused.value.code == "missing_type"


def test_lines_are_refused_with_a_reason() -> None:
    for line, code in [
        (b'{"type": "track",', "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"event": "x", "timestamp": "2024-01-01T00:00:00Z"}', "missing_type"),
        (b"x" * (MAX_LINE_BYTES + 1), "line_too_long"),
    ]:
        with pytest.raises(LineRefused) as refused:
            read_line(line, "auto")
        assert refused.value.code == code


def test_an_event_without_a_message_id_gets_one_from_its_content() -> None:
    line = b'{"type":"track","event":"x","userId":"u","timestamp":"2024-01-01","properties":{"a":1}}'
    same_content = b'{"properties":{"a":1},"timestamp":"2024-01-01","userId":"u","type":"track",'
    same_content += b'"event":"x"}'
    first, again = orjson.loads(read_line(line, "auto")), orjson.loads(read_line(same_content, "auto"))
    assert first["messageId"] == again["messageId"]
    assert first["messageId"].startswith("hwi-") and len(first["messageId"]) == 44
    other = orjson.loads(read_line(line.replace(b'"a":1', b'"a":3'), "auto"))
    assert other["messageId"] != first["messageId"]
    assert derived_message_id({**first, "messageId": "ignored"}) == first["messageId"]


@pytest.mark.parametrize("compressed", [False, True])
def test_lines_resume_from_an_offset_with_their_numbers(tmp_path: Path, compressed: bool) -> None:
    content = b'{"n":1}\n\n{"n":2}\r\n{"n":3}\n{"n":4}'  # a blank line counts; no newline at the end
    path = tmp_path / "events.data"  # told gzip by its bytes, not its name
    path.write_bytes(gzip.compress(content) if compressed else content)
    lines = list(read_lines(path))
    assert [(line.number, line.text) for line in lines] == [
        (1, b'{"n":1}'),
        (3, b'{"n":2}'),
        (4, b'{"n":3}'),
        (5, b'{"n":4}'),
    ]
    assert lines[-1].end == len(content)
    resumed = list(read_lines(path, lines[1].end, lines[1].number))
    assert [(line.number, line.text) for line in resumed] == [(4, b'{"n":3}'), (5, b'{"n":4}')]


def test_an_overlong_line_is_cut_and_the_next_one_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"x" * (3 * MAX_LINE_BYTES) + b'\n{"n":2}\n')
    lines = list(read_lines(path))
    assert len(lines[0].text) == MAX_LINE_BYTES + 1
    assert (lines[1].number, lines[1].text, lines[1].end) == (2, b'{"n":2}', path.stat().st_size)


def test_progress_belongs_to_one_file_and_project(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(path, FileProgress(project="shop", fingerprint="f1", offset=120, lines=7))
    state.save()
    assert StateFile.load(path, "shop", "f1").progress.offset == 120
    assert StateFile.load(path, "blog", "f1").progress.offset == 0  # another project: from the start
    assert StateFile.load(path, "shop", "f2").progress.offset == 0  # another file at that path
    path.write_text("{not json")
    assert StateFile.load(path, "shop", "f1").progress.offset == 0
