"""`headwater dlq list|show|replay`: inspect and replay the messages consumers dead-lettered.

Messages are read by stream sequence through the JetStream API (`STREAM.MSG.GET`), never through a
consumer: `list` and `show` acknowledge and remove nothing. `replay` republishes a message to the
events stream, waits for JetStream's acknowledgement, and only then deletes it from the DLQ.

A replay never reuses the message's original Nats-Msg-Id: within the stream's duplicate window
JetStream would answer "duplicate" and deliver nothing, and deleting the dead letter then would lose
it. Each replay run publishes under its own id (`dlq-replay-<seq>-<run>`), so what JetStream
acknowledges is a new message that consumers will deliver; ClickHouse keeps one row per messageId
if an event was stored before.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from headwater.core.wire.envelope import EnvelopeError, unpack
from headwater.core.wire.subjects import (
    DLQ_DELIVERIES_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_ORIGINAL_MSG_ID_HEADER,
    DLQ_ORIGINAL_SUBJECT_HEADER,
    DLQ_REPLAYED_FROM_HEADER,
    DLQ_STREAM,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    MSG_ID_HEADER,
    dlq_subject,
    events_subject,
    project_of_subject,
)
from headwater.edge.streams import StreamSettings, ensure_streams

from .natsauth import NatsAuth, NatsTarget
from .options import data_dir_option, nats_auth_options, nats_url_option
from .streams import connected, resolve_nats

T = TypeVar("T")

PUBLISH_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    subject: str
    time: str | None
    headers: dict[str, str]
    data: bytes

    @classmethod
    def from_raw(cls, raw: RawStreamMsg) -> DeadLetter:
        assert raw.seq is not None and raw.subject is not None
        return cls(
            seq=raw.seq,
            subject=raw.subject,
            time=raw.time.isoformat() if raw.time else None,
            headers={str(k): str(v) for k, v in (raw.headers or {}).items()},
            data=raw.data or b"",
        )

    @property
    def project(self) -> str:
        return project_of_subject(self.subject)

    @property
    def error(self) -> str:
        lines = self.headers.get(DLQ_ERROR_HEADER, "").splitlines()
        return lines[0] if lines else ""

    @property
    def deliveries(self) -> int | None:
        raw = self.headers.get(DLQ_DELIVERIES_HEADER)
        return int(raw) if raw and raw.strip().isdigit() else None

    @property
    def target_subject(self) -> str:
        """Where a replay publishes it: the subject it was consumed from."""
        return self.headers.get(DLQ_ORIGINAL_SUBJECT_HEADER) or events_subject(self.project)

    def replay_msg_id(self, run: str) -> str:
        """The Nats-Msg-Id of this message's replay in run `run`: JetStream de-duplicates a retry
        within the run, never the replay against the original publication."""
        return f"dlq-replay-{self.seq}-{run}"

    def replay_headers(self, run: str) -> dict[str, str]:
        headers = {MSG_ID_HEADER: self.replay_msg_id(run), DLQ_REPLAYED_FROM_HEADER: str(self.seq)}
        original = self.headers.get(DLQ_ORIGINAL_MSG_ID_HEADER)
        if original:
            headers[DLQ_ORIGINAL_MSG_ID_HEADER] = original
        return headers

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "project": self.project,
            "subject": self.subject,
            "time": self.time,
            "size": len(self.data),
            "error": self.error,
            "deliveries": self.deliveries,
        }


def _run(nats_url: NatsTarget, name: str, work: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    """Connect (failing within seconds when NATS is unreachable), make sure the streams exist, run
    `work`, close the connection."""

    async def main() -> T:
        async with connected(nats_url, name) as client:
            js = client.jetstream()
            await ensure_streams(js, StreamSettings())
            return await work(js)

    return asyncio.run(main())


async def dead_letters(js: JetStreamContext, subject: str = DLQ_SUBJECTS) -> AsyncIterator[DeadLetter]:
    """Every message of HW_DLQ on `subject` (wildcards allowed), oldest first, read without a consumer."""
    seq = 1
    while True:
        try:
            raw = await js.get_msg(DLQ_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return
        message = DeadLetter.from_raw(raw)
        yield message
        seq = message.seq + 1


async def dead_letter(js: JetStreamContext, seq: int) -> DeadLetter | None:
    try:
        return DeadLetter.from_raw(await js.get_msg(DLQ_STREAM, seq=seq))
    except NotFoundError:
        return None


def _subject(project: str | None) -> str:
    return dlq_subject(project) if project else DLQ_SUBJECTS


@click.group()
def dlq() -> None:
    """Inspect and replay dead-lettered messages (stream HW_DLQ)."""


@dlq.command(name="list")
@nats_url_option
@nats_auth_options
@data_dir_option
@click.option("--project", default=None, help="Only this project's messages.")
@click.option("--limit", default=None, type=click.IntRange(1), help="At most N messages (the oldest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_(
    nats_url: str | None,
    nats_auth: NatsAuth,
    data_dir: str,
    project: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Dead-lettered messages, oldest first. Reads only: nothing is acknowledged or removed."""
    url = resolve_nats(nats_url, data_dir, nats_auth)

    async def collect(js: JetStreamContext) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        async for message in dead_letters(js, _subject(project)):
            found.append(message)
            if limit is not None and len(found) >= limit:
                break
        return found

    messages = _run(url, "headwater-dlq-list", collect)
    if as_json:
        click.echo(json.dumps([m.summary() for m in messages], indent=2))
        return
    if not messages:
        click.echo("no dead-lettered messages")
        return
    click.echo(f"{'seq':>8}  {'project':<20} {'time (UTC)':<19} {'size':>8} {'deliveries':>10}  error")
    for m in messages:
        deliveries = "-" if m.deliveries is None else str(m.deliveries)
        time = m.time[:19].replace("T", " ") if m.time else "-"
        click.echo(f"{m.seq:>8}  {m.project:<20} {time:<19} {len(m.data):>8} {deliveries:>10}  {m.error}")
    click.echo(f"{len(messages)} message(s)")


@dlq.command()
@nats_url_option
@nats_auth_options
@data_dir_option
@click.argument("seq", type=click.IntRange(1))
@click.option(
    "--raw",
    is_flag=True,
    help="Print only the body, byte for byte as stored (a batch: an LZ4 frame, `lz4 -d`).",
)
def show(nats_url: str | None, nats_auth: NatsAuth, data_dir: str, seq: int, raw: bool) -> None:
    """One dead-lettered message by stream sequence: its headers and body."""
    url = resolve_nats(nats_url, data_dir, nats_auth)
    message = _run(url, "headwater-dlq-show", lambda js: dead_letter(js, seq))
    if message is None:
        raise click.ClickException(f"no message {seq} in {DLQ_STREAM}")
    if raw:
        sys.stdout.buffer.write(message.data)
        sys.stdout.buffer.flush()
        return
    click.echo(f"seq:     {message.seq}")
    click.echo(f"subject: {message.subject}")
    click.echo(f"time:    {message.time or '-'}")
    click.echo(f"size:    {len(message.data)} bytes")
    click.echo("headers:")
    for name, value in message.headers.items():
        click.echo(f"  {name}: {value}")
    try:
        body = unpack(message.data)
    except EnvelopeError as exc:
        body = message.data
        click.echo(f"body ({exc}; shown as stored):")
    else:
        click.echo("body (LZ4-compressed on the stream):" if body is not message.data else "body:")
    try:
        click.echo(json.dumps(json.loads(body), indent=2, ensure_ascii=False))
    except (ValueError, UnicodeDecodeError):
        click.echo(body.decode("utf-8", errors="backslashreplace"))


async def _replay_one(js: JetStreamContext, message: DeadLetter, run: str) -> None:
    """Republish under this run's id, await the ack, then delete from the DLQ.

    A "duplicate" ack can only mean this run published it already (a retry), so it is on the stream
    either way and the dead letter may go."""
    await js.publish(
        message.target_subject,
        message.data,
        timeout=PUBLISH_TIMEOUT_SECONDS,
        stream=EVENTS_STREAM,
        headers=message.replay_headers(run),
    )
    await js.delete_msg(DLQ_STREAM, message.seq)


@dlq.command()
@nats_url_option
@nats_auth_options
@data_dir_option
@click.option("--project", default=None, help="Replay this project's messages.")
@click.option("--seq", "seqs", multiple=True, type=click.IntRange(1), help="Replay this message; repeatable.")
@click.option("--dry-run", is_flag=True, help="List what would be replayed; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def replay(
    nats_url: str | None,
    nats_auth: NatsAuth,
    data_dir: str,
    project: str | None,
    seqs: tuple[int, ...],
    dry_run: bool,
    yes: bool,
) -> None:
    """Republish dead-lettered messages to their events subject, then remove them from the DLQ.

    Without --project or --seq, every dead-lettered message is replayed. Each is published under a
    new Nats-Msg-Id of this run (its original id kept in the Hw-Original-Msg-Id header), so
    JetStream delivers it even within its duplicate window; ClickHouse keeps one row per messageId.
    A message is deleted from the DLQ only after JetStream acknowledged its republication.
    """
    url = resolve_nats(nats_url, data_dir, nats_auth)
    run = str(time.time_ns())
    if project and seqs:
        raise click.UsageError("--project and --seq are mutually exclusive")

    async def work(js: JetStreamContext) -> tuple[int, int, int]:
        selected: list[DeadLetter] = []
        missing = 0
        if seqs:
            for seq in dict.fromkeys(seqs):
                message = await dead_letter(js, seq)
                if message is None:
                    click.echo(f"{seq}: not in {DLQ_STREAM}", err=True)
                    missing += 1
                else:
                    selected.append(message)
        else:
            selected = [m async for m in dead_letters(js, _subject(project))]
        if dry_run:
            for m in selected:
                click.echo(
                    f"{m.seq}: would replay to {m.target_subject} as {MSG_ID_HEADER} {m.replay_msg_id(run)}"
                )
            click.echo(f"{len(selected)} message(s) would be replayed (dry run)")
            return 0, 0, missing
        if not selected:
            click.echo("nothing to replay")
            return 0, 0, missing
        if not yes:
            # In a thread: the loop keeps answering the server's pings while the operator reads.
            question = f"replay {len(selected)} message(s) and remove them from {DLQ_STREAM}?"
            await asyncio.to_thread(click.confirm, question, abort=True)
        replayed = 0
        failures: list[str] = []
        with click.progressbar(selected, label="replaying", show_pos=True, file=sys.stderr) as bar:
            for message in bar:
                try:
                    await _replay_one(js, message, run)
                    replayed += 1
                except Exception as exc:  # one bad message must not stop the others; reported below
                    failures.append(f"{message.seq}: {type(exc).__name__}: {exc}")
        for failure in failures:
            click.echo(f"failed {failure}", err=True)
        click.echo(f"replayed {replayed} message(s) to {EVENTS_STREAM}, {len(failures)} failed")
        return replayed, len(failures), missing

    _, failed, missing = _run(url, "headwater-dlq-replay", work)
    if failed or missing:
        raise click.exceptions.Exit(1)
