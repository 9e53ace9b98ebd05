"""The import writer: a durable pull consumer on HW_IMPORTS that writes each import batch into
`hw_<project>.import_<stream>` (docs/import.md, "How imports reach ClickHouse").

Messages are written one at a time in stream order, so a table's schema growth, its records and an
ACTIVATE_VERSION after them apply in the order the loader sent them. A batch is inserted with a
de-duplication token made of its stream sequence (a redelivery after a crash between the insert
and the ack is dropped by ClickHouse) and acked only once ClickHouse accepted its rows. Any failure
is retried with backoff while nothing more is fetched (backpressure), the message told in progress
so it is not redelivered meanwhile; nothing is ever dead-lettered: the control plane checked every
value against its column, so a failing insert is about ClickHouse, not the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from clickhouse_connect.driver.client import Client
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from headwater.core.catalog import table_exists
from headwater.core.projects.project import database_name
from headwater.core.service.backoff import Backoff
from headwater.core.service.tasks import cancel_and_wait
from headwater.core.wire.subjects import IMPORTS_STREAM, IMPORTS_SUBJECTS
from headwater.imports.batch import ACTIVATE_VERSION, RECORDS, BatchError, ImportBatch
from headwater.imports.ddl import add_column, create_table, delete_older_versions, qualified
from headwater.imports.names import SEQUENCE_COLUMN, TABLE_VERSION_COLUMN

log = logging.getLogger(__name__)

FETCH_BATCH = 8
FETCH_TIMEOUT_SECONDS = 1.0
ACK_WAIT_SECONDS = 120.0


def project_of(subject: str) -> str:
    """`hw.imports.<project>.<table>` → `<project>`."""
    return subject.split(".")[2]


class ImportTables:
    """The ClickHouse side: tables made and grown from a batch's columns, rows inserted, older
    table versions deleted. Synchronous (run in a thread)."""

    def __init__(self, client: Client, cluster: str | None) -> None:
        self._client = client
        self._cluster = cluster
        self._ready: dict[tuple[str, str], int] = {}  # (database, table) → schema version made

    def write(self, project_id: str, batch: ImportBatch, sequence: int) -> None:
        database = database_name(project_id)
        if batch.kind == RECORDS:
            self._ensure(database, batch)
            if batch.rows:
                columns = [SEQUENCE_COLUMN, TABLE_VERSION_COLUMN, *(c.name for c in batch.columns)]
                token = f"imports:{project_id}:{batch.table}:{sequence}"
                self._client.raw_insert(
                    qualified(database, batch.table), columns, batch.rows_with_sequence(sequence),
                    settings={"insert_deduplication_token": token}, fmt="JSONEachRow",
                )  # fmt: skip
        elif batch.kind == ACTIVATE_VERSION:
            # no table: no rows of any version to remove
            if table_exists(self._client, database, batch.table):
                self._client.command(
                    delete_older_versions(database, batch.table, self._cluster),
                    parameters={"version": batch.table_version},
                )
        else:
            raise BatchError(f"unknown import batch kind {batch.kind!r}")

    def _ensure(self, database: str, batch: ImportBatch) -> None:
        if self._ready.get((database, batch.table), -1) >= batch.schema_version:
            return
        self._client.command(create_table(database, batch.table, batch.columns, batch.key, self._cluster))
        for column in batch.columns:  # a grown schema: the columns the table does not have yet
            self._client.command(add_column(database, batch.table, column, self._cluster))
        self._ready[(database, batch.table)] = batch.schema_version


class ImportWriter:
    def __init__(
        self,
        nats: NatsClient,
        tables: ImportTables,
        durable: str,
        retry_delay_seconds: float = 2.0,
        ack_wait_seconds: float = ACK_WAIT_SECONDS,
    ) -> None:
        """`ack_wait_seconds`: how long JetStream waits before redelivering the batches a dead
        writer held (the consumer's `--ack-wait`); set when the durable is first created."""
        self._nats = nats
        self._ack_wait_seconds = ack_wait_seconds
        self._tables = tables
        self._durable = durable
        self._backoff = Backoff(retry_delay_seconds)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.failure: BaseException | None = None
        self.batches_written = 0
        self.rows_written = 0
        self.retrying_since: float | None = None  # monotonic time since when writes have been failing
        self.last_error: str | None = None

    async def start(self) -> None:
        js = self._nats.jetstream()
        config = ConsumerConfig(
            durable_name=self._durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._ack_wait_seconds,
            max_deliver=-1,  # never given up: a batch is retried until it is stored
            max_ack_pending=FETCH_BATCH * 4,
        )
        subscription = await js.pull_subscribe(
            IMPORTS_SUBJECTS, durable=self._durable, stream=IMPORTS_STREAM, config=config
        )
        self._task = asyncio.create_task(self._run(subscription), name="import-writer")
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()
            log.error("the import writer stopped", exc_info=self.failure)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            await cancel_and_wait(self._task)

    async def _run(self, subscription: object) -> None:
        fetch = subscription.fetch  # type: ignore[attr-defined]
        attempt = 0
        while not self._stopping.is_set():
            try:
                messages: list[Msg] = await fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_SECONDS)
            except (NatsTimeoutError, TimeoutError):
                continue
            except NatsError as exc:  # NATS away: the connection reconnects by itself
                attempt += 1
                log.warning("fetching import batches failed: %r", exc)
                await self._pause(self._backoff.delay(attempt))
                continue
            attempt = 0
            for message in messages:
                if self._stopping.is_set():
                    return  # not acked: redelivered to whoever runs next
                await self._handle(message)

    async def _handle(self, message: Msg) -> None:
        try:
            batch = ImportBatch.decode(message.data)
        except BatchError as exc:  # not written by a control plane: nothing could ever store it
            log.error("dropping message %s on %s: %s", message.metadata.sequence.stream, message.subject, exc)
            await message.term()
            return
        project_id = project_of(message.subject)
        sequence = message.metadata.sequence.stream
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self._tables.write, project_id, batch, sequence)
                break
            except Exception as exc:  # about ClickHouse (unreachable, full, ...): wait it out
                attempt += 1
                self.retrying_since = self.retrying_since or time.monotonic()
                self.last_error = repr(exc)
                log.warning(
                    "writing import batch %s of %s.%s failed (attempt %d): %r",
                    sequence, project_id, batch.table, attempt, exc,
                )  # fmt: skip
                with contextlib.suppress(NatsError, TimeoutError):
                    await message.in_progress()
                if await self._pause(self._backoff.delay(attempt)):
                    return  # stopping: not acked, redelivered later
        self.retrying_since = None
        await message.ack()
        self.batches_written += 1
        self.rows_written += batch.row_count

    async def _pause(self, seconds: float) -> bool:
        """Sleep `seconds` unless stopping; whether it is stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()
