"""`headwater import events` end to end: the command in its own process sends files to a real edge,
through JetStream and the consumer into the embedded ClickHouse (tests/test_import_events_formats.py
has the pure conversions).

Stored events are counted both ways the events table allows: `count()` under FINAL (copies of a
messageId collapse) and `uniqExact(message_id)`; every good line stored once means both equal the
number of good lines, and the messageIds are the expected ones."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hw_testing import BIN, cli_env, create_project, eventually, query_rows

from headwater.loaders.events.state import FileProgress, state_path
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=True, control=True, consumer=True)


async def secret_key_of(http: httpx.AsyncClient, stack: Stack, project_id: str, **body: Any) -> str:
    return str((await create_project(http, stack, project_id, **body))["secret_key"])


async def run_import(
    stack: Stack, project_id: str, key: str, *args: str, timeout: float = 120
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *import_command(stack, project_id, key, *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def import_command(stack: Stack, project_id: str, key: str, *args: str) -> list[str]:
    assert stack.edge_url is not None
    return [
        str(BIN / "headwater"),
        "import",
        "events",
        "--project",
        project_id,
        "--write-key",
        key,
        "--edge-url",
        stack.edge_url,
        *args,
    ]


async def drained(stack: Stack) -> None:
    """Every event the edge accepted is in ClickHouse (the consumer acks after the insert)."""
    assert stack.nats is not None
    js = stack.nats.jetstream()

    async def outstanding() -> tuple[int, int]:
        info = await js.consumer_info("HW_EVENTS", "hw-clickhouse")
        return info.num_ack_pending, info.num_pending

    await eventually(outstanding, lambda n: n == (0, 0), timeout=60)


async def stored(http: httpx.AsyncClient, stack: Stack, project_id: str) -> tuple[int, int]:
    """(rows under FINAL, distinct messageIds), once the consumer has written everything."""
    await drained(stack)
    rows = await query_rows(
        http, stack, project_id, "SELECT count(), uniqExact(message_id) FROM events FINAL"
    )
    return int(rows[0][0]), int(rows[0][1])


def jsonl(*lines: Any) -> bytes:
    return b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)


def track(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Imported",
        "userId": f"u-{number % 97}",
        "messageId": f"m-{number}",
        "timestamp": "2021-03-04T05:06:07.089Z",
        "properties": {"n": number},
        **fields,
    }


async def test_good_lines_are_stored_once_with_their_times_and_bad_ones_reported_by_line(
    stack: Stack, http: httpx.AsyncClient, project_id: str, tmp_path: Path
) -> None:
    key = await secret_key_of(http, stack, project_id)
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        jsonl(
            # 1: a time with an offset and a sentAt five seconds later: the original time is kept
            track(1, timestamp="2019-07-04T12:00:00.123+02:00", sentAt="2019-07-04T12:00:05Z"),
            b'{"type": "track",',  # 2
            {"type": "page", "name": "Home", "anonymousId": "a-3", "timestamp": "2020-01-01T00:00:00Z"},  # 3
            b"[1, 2, 3]",  # 4
            b"",  # 5: blank, skipped
            {"event": "No Type", "userId": "u", "timestamp": "2020-01-01T00:00:00Z"},  # 6
            {
                "type": "track",
                "userId": "u",
                "timestamp": "2020-01-01T00:00:00Z",
            },  # 7: the edge: no event name
            {
                "type": "identify",
                "userId": "u-8",
                "traits": {"plan": "pro"},
                "originalTimestamp": "2018-02-03T04:05:06Z",
            },
            track(9, timestamp="last tuesday"),  # 9: the edge: invalid_timestamp
            track(10, properties={"big": "x" * 600_000}),  # 10: makes its batch too large
            track(11),
            track(12),
            # 13-16: a body of 3.6 MB, which the edge refuses before reading it all
            *(track(n, properties={"big": "y" * 900_000}) for n in range(13, 17)),
            track(17),
        )
    )
    errors = tmp_path / "refused.jsonl"
    code, out, err = await run_import(
        stack,
        project_id,
        key,
        str(path),
        "--errors",
        str(errors),
        "--batch-events",
        "4",
        "--batch-bytes",
        "2000000",
    )
    assert code == 0, err
    assert "lines read: 17" in out and "events accepted by the edge: 6" in out, out
    assert "lines refused: 10" in out, out

    refused = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [(r["line"], r["code"], r["field"]) for r in refused] == [
        (2, "malformed_json", None),
        (4, "not_an_object", None),
        (6, "missing_type", "type"),
        (7, "missing_field", "event"),
        (9, "invalid_timestamp", "timestamp"),
        (10, "payload_too_large", None),
        *((n, "payload_too_large", None) for n in range(13, 17)),
    ]
    assert refused[0]["text"] == '{"type": "track",' and refused[0]["file"] == str(path)

    assert await stored(http, stack, project_id) == (6, 6)
    rows = await query_rows(
        http,
        stack,
        project_id,
        "SELECT message_id, type, toString(timestamp), sent_at IS NULL FROM events FINAL ORDER BY timestamp",
    )
    times = {row[0]: (row[1], row[2], row[3]) for row in rows}
    assert times["m-1"] == ("track", "2019-07-04 10:00:00.123", 1)
    assert times["m-11"] == times["m-12"] == ("track", "2021-03-04 05:06:07.089", 1)
    identify = [row for row in rows if row[1] == "identify"]
    assert [row[2] for row in identify] == ["2018-02-03 04:05:06.000"]  # originalTimestamp stood in
    page = [row for row in rows if row[1] == "page"]
    assert page[0][0].startswith("hwi-") and page[0][2] == "2020-01-01 00:00:00.000"


async def test_gzip_segment_archives_and_jitsu_exports_are_read(
    stack: Stack, http: httpx.AsyncClient, project_id: str, tmp_path: Path
) -> None:
    key = await secret_key_of(http, stack, project_id)
    archive = {  # as Segment's S3 archive holds an event
        "anonymousId": "anon-s",
        "channel": "client",
        "context": {"page": {"url": "https://shop.example/pricing", "path": "/pricing"}, "ip": "8.8.8.8"},
        "event": "Plan Chosen",
        "messageId": "seg-1",
        "originalTimestamp": "2024-03-02T10:00:03.120Z",
        "projectId": "src123",
        "properties": {"plan": "pro"},
        "receivedAt": "2024-03-02T10:00:04.500Z",
        "sentAt": "2024-03-02T10:00:03.900Z",
        "timestamp": "2024-03-02T10:00:03.720Z",
        "type": "track",
        "userId": "user-s",
        "version": 2,
    }
    jitsu_event = {
        "type": "page",
        "messageId": "jit-1",
        "anonymousId": "anon-j",
        "timestamp": "2024-05-01T08:00:00.000Z",
        "receivedAt": "2024-05-01T08:00:00.500Z",
        "requestIp": "198.51.100.7",
        "context": {"page": {"url": "https://x.example/docs", "path": "/docs"}},
    }
    bulker_row = {
        "message_id": "jit-2",
        "type": "track",
        "event": "Clicked",
        "user_id": "user-b",
        "timestamp": "2024-05-01T08:00:01.000Z",
        "context_page_url": "https://x.example/a",
        "context_page_path": "/a",
        "button": "buy",
    }
    classic = {
        "eventn_ctx_event_id": "jit-3",
        "event_type": "pageview",
        "utc_time": "2021-06-01T12:00:00.000000Z",
        "user": {"anonymous_id": "anon-c", "email": "c@example.com"},
        "url": "https://blog.example/post",
        "doc_path": "/post",
        "page_title": "A post",
    }
    path = tmp_path / "mixed.jsonl"  # gzip, whatever its name says
    path.write_bytes(gzip.compress(jsonl(archive, jitsu_event, bulker_row, classic)))
    code, out, err = await run_import(stack, project_id, key, str(path))
    assert code == 0, err
    assert "events accepted by the edge: 4" in out, out
    assert await stored(http, stack, project_id) == (4, 4)
    rows = await query_rows(
        http,
        stack,
        project_id,
        "SELECT message_id, type, event, user_id, anonymous_id, toString(timestamp), page_path, properties"
        " FROM events FINAL ORDER BY message_id",
    )
    assert rows == [
        ["jit-1", "page", "", "", "anon-j", "2024-05-01 08:00:00.000", "/docs", "{}"],
        ["jit-2", "track", "Clicked", "user-b", "", "2024-05-01 08:00:01.000", "/a", '{"button":"buy"}'],
        ["jit-3", "page", "", "", "anon-c", "2021-06-01 12:00:00.000", "/post", "{}"],
        [
            "seg-1",
            "track",
            "Plan Chosen",
            "user-s",
            "anon-s",
            "2024-03-02 10:00:03.720",
            "/pricing",
            '{"plan":"pro"}',
        ],
    ]


async def test_a_rerun_sends_nothing_and_a_restart_stores_nothing_new(
    stack: Stack, http: httpx.AsyncClient, project_id: str, tmp_path: Path
) -> None:
    key = await secret_key_of(http, stack, project_id)
    path = tmp_path / "events.jsonl"
    no_ids = [{**track(n), "messageId": None} for n in range(100, 150)]  # ids derived from content
    path.write_bytes(jsonl(*(track(n) for n in range(100)), *no_ids))
    assert (await run_import(stack, project_id, key, str(path)))[0] == 0
    assert await stored(http, stack, project_id) == (150, 150)

    code, out, _ = await run_import(stack, project_id, key, str(path))
    assert code == 0 and "sent in this run: 0 events" in out, out
    assert "(1 already imported before this run)" in out
    code, out, _ = await run_import(stack, project_id, key, str(path), "--restart")
    assert code == 0 and "sent in this run: 150 events" in out, out
    assert await stored(http, stack, project_id) == (150, 150)


async def test_an_import_killed_midway_resumes_without_losing_or_duplicating(
    stack: Stack, http: httpx.AsyncClient, project_id: str, tmp_path: Path
) -> None:
    # A rate limit slows the edge (the import obeys its 429s), so the kill lands midway.
    limits = {"rate_limits": {"project_events_per_second": 4000, "burst_seconds": 1}}
    key = await secret_key_of(http, stack, project_id, settings=limits)
    total = 20_000
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*(track(n) for n in range(total))))
    progress_file = state_path(path, project_id, None)
    process = await asyncio.create_subprocess_exec(
        *import_command(stack, project_id, key, str(path), "--batch-events", "200"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=cli_env(),
    )

    def saved() -> FileProgress | None:
        if not progress_file.exists():
            return None
        return FileProgress(**json.loads(progress_file.read_text()))

    async def probe() -> FileProgress | None:
        return saved()

    before = await eventually(probe, lambda p: p is not None and p.accepted > 0, timeout=30)
    assert before is not None
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    killed_at = saved()
    assert killed_at is not None and not killed_at.done and killed_at.accepted < total, killed_at

    code, out, err = await run_import(stack, project_id, key, str(path), "--batch-events", "200")
    assert code == 0, err
    assert f"events accepted by the edge: {total:,}" in out, out
    sent_after = int(out.split("sent in this run: ")[1].split(" ")[0].replace(",", ""))
    assert sent_after <= total - killed_at.accepted  # resumed, not started over
    assert await stored(http, stack, project_id) == (total, total)
    rows = await query_rows(http, stack, project_id, "SELECT groupUniqArray(message_id) FROM events")
    assert sorted(rows[0][0]) == sorted(f"m-{n}" for n in range(total))


@pytest.mark.parametrize(
    "size",
    # The 1M run took 31 s here (small events: no user agent or address to enrich); the timeout
    # leaves room for a machine shared with other work.
    [
        20_000,
        pytest.param(
            1_000_000, marks=[pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(1800)], id="1M"
        ),
    ],
)
async def test_a_large_file_with_one_percent_malformed_lines(
    stack: Stack, http: httpx.AsyncClient, project_id: str, tmp_path: Path, size: int
) -> None:
    key = await secret_key_of(http, stack, project_id)
    path = tmp_path / "large.jsonl.gz"
    bad = set(range(7, size, 100))  # 1%
    with gzip.open(path, "wb", compresslevel=1) as file:
        for n in range(size):
            file.write(b'{"type":"track","event":"Imp' if n in bad else orjson.dumps(track(n)))
            file.write(b"\n")
    errors = tmp_path / "refused.jsonl"
    code, out, err = await run_import(
        stack, project_id, key, str(path), "--errors", str(errors), timeout=max(120, size / 700)
    )
    assert code == 0, err
    good = size - len(bad)
    assert f"events accepted by the edge: {good:,}" in out, out
    assert f"malformed_json: {len(bad):,}" in out, out
    with errors.open() as listed:
        assert {json.loads(line)["line"] for line in listed} == {n + 1 for n in bad}
    assert await stored(http, stack, project_id) == (good, good)
    code, out, _ = await run_import(stack, project_id, key, str(path))
    assert code == 0 and "sent in this run: 0 events" in out


async def test_a_key_the_edge_refuses_stops_the_import_with_its_reason(
    stack: Stack, http: httpx.AsyncClient, project_id: str, tmp_path: Path
) -> None:
    created = await create_project(http, stack, project_id)
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(track(1), track(2)))
    for key, code in (("not-a-key", "unknown_key"), (str(created["public_key"]), "origin_not_allowed")):
        exit_code, out, err = await run_import(stack, project_id, key, str(path))
        assert exit_code == 1 and code in err and "run the same command to resume" in err, (out, err)
    progress = state_path(path, project_id, None)
    assert not FileProgress(**json.loads(progress.read_text())).done


# A gzip member whose deflate data starts with a block of the reserved type: the inflater's own error.
_INVALID_DEFLATE_MEMBER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\x07" + bytes(16)


@pytest.mark.parametrize("damage", ["truncated", "checksum", "invalid deflate data"])
async def test_a_damaged_gzip_stops_the_import_with_a_clear_error_after_the_lines_before(
    stack: Stack, http: httpx.AsyncClient, project_id: str, tmp_path: Path, damage: str
) -> None:
    """The lines before the damage are imported and their progress kept; the command says what is
    wrong with the file instead of a traceback."""
    key = await secret_key_of(http, stack, project_id)
    good = gzip.compress(jsonl(*(track(n) for n in range(3000))), compresslevel=1)
    damaged = {
        "truncated": good[: len(good) // 2],
        "checksum": good[:-8] + bytes(4) + good[-4:],
        "invalid deflate data": good + _INVALID_DEFLATE_MEMBER,
    }[damage]
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(damaged)
    exit_code, out, err = await run_import(stack, project_id, key, "--batch-events", "100", str(path))
    assert exit_code == 1 and "Traceback" not in err, (out, err)
    assert "the progress saved so far is kept" in err, err
    progress = FileProgress(**json.loads(state_path(path, project_id, None).read_text()))
    assert not progress.done and progress.lines > 0
